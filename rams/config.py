"""Validated configuration: pydantic models with ``extra="forbid"`` so that typos fail loudly.

Defaults live in code; presets are YAML files in ``configs/``; explicit CLI flags are applied last.
Each command writes its resolved config next to its outputs (:func:`dump_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rams.errors import ConfigError, InputNotFoundError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ReadConfig(StrictModel):
    """How to read an orthomosaic for a model."""

    bands: list[int] | None = None
    """1-based band indices to use, overriding colour interpretation (e.g. [3, 2, 1] for BGR files)."""
    value_range: tuple[float, float] | None = None
    """Fixed (min, max) mapped to [0, 1]. Default by dtype: uint8 0-255, uint16 0-65535, float 0-1."""
    resampling: str = "average"
    """GDAL resampling used when the mosaic GSD differs from the model GSD."""
    skip_damaged: bool = False
    """A part of the mosaic GDAL cannot read (a block that does not decode: a bad copy, a truncated export) stops
    the run with a one-line error (default). True: such parts are left not imaged (outside the coverage, named in
    a warning with their area) and the run goes on (``--skip-damaged``)."""
    gdal_cache_mb: int = Field(default=256, ge=1)
    """Upper bound of the GDAL block cache (MB) when set explicitly. Readers size the cache to the source blocks
    one row of tiles touches, so that every block is decoded once (1024 px tiles of a mosaic 31 600 px wide at
    1 cm need about 200 MB); left unset, that may go up to ``rams.raster.STRIP_CACHE_CAP_MB`` (640 MB), set,
    never above it (a low bound trades speed for memory). See ``rams.raster.cache_cap_mb``."""


class TilingConfig(StrictModel):
    """Tile grid at the model GSD."""

    tile_size_px: int = 512
    overlap_px: int = 64

    def model_post_init(self, __context: Any) -> None:
        if self.tile_size_px < 16:
            raise ValueError("tile_size_px must be >= 16")
        if not 0 <= self.overlap_px < self.tile_size_px // 2:
            raise ValueError("overlap_px must be >= 0 and < tile_size_px / 2")


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def load_config(model: type[M], path: Path | None = None, overrides: dict[str, Any] | None = None) -> M:
    """Build config ``model`` from defaults, then a YAML preset, then explicit overrides (None values skipped).

    Raises:
        InputNotFoundError: the YAML file does not exist.
        ConfigError: the YAML is malformed or a value/key is invalid.
    """
    data: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise InputNotFoundError(f"config file not found: {path} (check the path given to --config)")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}; fix the syntax") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of option: value at the top level")
        data.update(loaded)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}: {_format_validation_error(err)}") from err


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value


def dump_config(cfg: BaseModel) -> str:
    """Resolved config as YAML text (written next to outputs so that a run can be reproduced)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
