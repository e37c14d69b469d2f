"""Model bundles: ``weights.safetensors`` + ``model.json`` (the model card), saved, hash-checked and loaded.

A bundle is a folder. The card says everything a run needs to use the weights correctly and everything a
reviewer needs to trust them: architecture and parameters, classes (in label order) with physical sizes,
input bands and normalisation, working GSD and the GSD range it serves, tile size and overlap, score
thresholds per operating point, the data, command, config and seed that trained it, held-out metrics, and
the SHA-256 of the weights.

Loading never unpickles: weights are safetensors (tensors only), read once into memory, hashed, and only
then parsed. A hash mismatch, a missing file or an invalid card is a :class:`~rams.errors.ModelError` with a
one-line message. Shipped models live in ``models/<name>/`` at the repository root (or in the folder named
by the ``RAMS_MODELS_DIR`` environment variable).

This module is the I/O boundary for model files (as :mod:`rams.raster` is for rasters).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from rams import __version__
from rams.classes import CLASS_NAMES, get_class
from rams.errors import ModelError
from rams.outputs import atomic_path

log = logging.getLogger(__name__)

CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
#: Environment variable naming the folder that holds shipped models (default: ``<repo>/models``).
MODELS_DIR_ENV = "RAMS_MODELS_DIR"
#: The model ``rams detect`` uses when none is named.
DEFAULT_MODEL = "default"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalisation(_Strict):
    """How pixel values reach the network.

    The reader maps raw values to [0, 1] with ``value_range`` (None: the fixed default per dtype, see
    :data:`rams.raster.DEFAULT_VALUE_RANGE`); the predictor then applies ``(x - mean) / std`` per band.
    Invalid pixels are set to the band mean first (they reach the network as 0).
    """

    value_range: tuple[float, float] | None = None
    mean: list[float]
    std: list[float]

    @field_validator("std")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("std values must be > 0")
        return v


class Decoding(_Strict):
    """How heatmap peaks become detections (see :mod:`rams.detector.predict`)."""

    peak_kernel: int = 3
    """Max-pool window for peak extraction (odd, in output cells)."""
    max_per_tile: int = 1000
    """Most peaks kept per tile before NMS."""
    nms_iou: float = Field(default=0.5, gt=0.0, le=1.0)
    """IoU above which the weaker of two overlapping boxes is dropped."""
    class_agnostic_nms: bool = True
    """Suppress across classes too (one physical object, one label), not only within a class."""


class TrainingInfo(_Strict):
    """Provenance: what made the weights."""

    data: list[str]
    """Training sources in words (e.g. 'synthetic chips, seeds 0..', 'thermal-landmines zones 1,2,4,7')."""
    command: str
    """The exact command line."""
    config: dict[str, Any]
    """The resolved training config."""
    seed: int
    duration: str
    """Wall time in words, e.g. '8 min 02 s'."""
    duration_s: float
    device: str
    steps: int = 0
    notes: list[str] = Field(default_factory=list)
    """Attributions and caveats (data licences, known weaknesses)."""
    init_weights: dict[str, str] | None = None
    """The bundle training started from (path, name, version, weights_sha256); None: random initialisation."""


def _sha256_hex(v: str) -> str:
    if len(v) != 64 or any(ch not in "0123456789abcdef" for ch in v):
        raise ValueError("weights_sha256 must be 64 lowercase hex digits")
    return v


class Companion(_Strict):
    """Thresholds set for this model and one other run **together** (``rams detect --model A --model B``).

    Two models over one mosaic report the union of their detections, so their false alarms add up: each at its
    own ``balanced`` point, a 0.5 cm specialist beside the default gave 32-38 false alarms per hectare, not 10. A
    companion record holds per operating point one threshold per class *for each of the two models*, chosen
    together so that the union stays within the point's false-alarm rate (``scripts/calibrate_pair.py``), and
    the recall of the union measured at them (``metrics``, read by the detector gate). It applies only to the
    other model with exactly these weights (``weights_sha256``)."""

    weights_sha256: str
    """The other model's weights; another version of it does not get these thresholds."""
    thresholds: dict[str, dict[str, dict[str, float]]]
    """Operating point -> model name (this card's name and the other's) -> class -> score threshold."""
    default_operating_point: str | None = None
    """The point the pair runs at when none is asked for (None: this card's default). It may differ from each
    model's own: a pair run to find what one model misses can be meant for a looser false-alarm rate."""
    metrics: dict[str, Any] = Field(default_factory=dict)
    """How the thresholds were set (``operating_point_calibration``) and the union's measured recall
    (``synthetic_scenes`` or ``held_out_flights``, as in :attr:`ModelCard.metrics`)."""

    @field_validator("weights_sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        return _sha256_hex(v)


class ModelCard(_Strict):
    """Everything about a model that is not its weights (``model.json``)."""

    name: str
    version: str
    description: str = ""
    architecture: str
    params: dict[str, Any]
    """Architecture hyper-parameters (:class:`rams.detector.model.ArchParams`)."""
    classes: list[str]
    """Detector classes in label-index order (names from :data:`rams.classes.CLASS_NAMES`)."""
    class_sizes_m: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Largest (length, width) in metres per class (from :mod:`rams.classes`; filled in when empty)."""
    bands: list[str]
    """Input bands in order, e.g. ['red', 'green', 'blue'] or ['gray']."""
    normalisation: Normalisation
    gsd_m: float = Field(gt=0)
    """Working GSD: imagery is resampled to this before the network sees it."""
    gsd_range_m: tuple[float, float]
    """Source-imagery GSD range the model serves (finer is averaged down, coarser is refused by GSD checks)."""
    tile_size_px: int = Field(ge=32)
    overlap_px: int = Field(ge=0)
    output_stride: int = 4
    decoding: Decoding = Field(default_factory=Decoding)
    operating_points: dict[str, float]
    """Name -> heatmap-peak score threshold (e.g. 'balanced': the threshold at <= 10 FP/ha on held-out data)."""
    class_thresholds: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per-class thresholds of an operating point (name -> class -> threshold), measured on held-out data: the
    false-alarm budget of the point spread over the classes where it buys the most recall. A class not listed
    uses the point's threshold in ``operating_points``."""
    default_operating_point: str
    training: TrainingInfo
    metrics: dict[str, Any] = Field(default_factory=dict)
    """Held-out metrics (how they were measured is part of the entry)."""
    companions: dict[str, Companion] = Field(default_factory=dict)
    """Other model's card name -> thresholds for running both together (:class:`Companion`)."""
    untrained_classes: list[str] = Field(default_factory=list)
    """Classes whose outputs were never trained (``scripts/grow_bundle.py --add-classes`` adds them with a fresh
    init): such a bundle is a training start (``init_weights``), and ``rams detect`` refuses it, since it would
    report nothing of those classes wherever they lie."""
    weights_sha256: str
    created: str
    rams_version: str

    @model_serializer(mode="wrap")
    def _drop_empty_companions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a card without companions dumps as before they existed: same model.json, same card hashes in batch keys
        data = handler(self)
        if isinstance(data, dict):
            for key in ("companions", "untrained_classes"):
                if not data.get(key):
                    data.pop(key, None)
        return data  # type: ignore[no-any-return]

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in CLASS_NAMES]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; known: {', '.join(CLASS_NAMES)}")
        if len(set(v)) != len(v) or not v:
            raise ValueError("classes must be a non-empty list without repeats")
        return v

    @field_validator("weights_sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        return _sha256_hex(v)

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        nb = len(self.bands)
        if nb == 0:
            raise ValueError("bands must name at least one band")
        stray = [c for c in self.untrained_classes if c not in self.classes]
        if stray:
            raise ValueError(f"untrained_classes {stray} are not among the card's classes")
        if len(self.normalisation.mean) != nb or len(self.normalisation.std) != nb:
            raise ValueError(f"normalisation mean/std need {nb} values (one per band)")
        lo, hi = self.gsd_range_m
        if not 0 < lo <= hi:
            raise ValueError("gsd_range_m must be (min, max) with 0 < min <= max")
        if self.overlap_px >= self.tile_size_px // 2:
            raise ValueError("overlap_px must be < tile_size_px / 2")
        largest = max_object_px(self.classes, self.gsd_m)
        if self.overlap_px <= largest:
            raise ValueError(
                f"overlap_px {self.overlap_px} must exceed the largest object ({largest:.0f} px at "
                f"{self.gsd_m} m/px) so that every object lies whole in some tile"
            )
        if self.tile_size_px % 16:
            raise ValueError("tile_size_px must be a multiple of 16")
        if self.default_operating_point not in self.operating_points:
            raise ValueError(
                f"default_operating_point {self.default_operating_point!r} is not one of "
                f"{sorted(self.operating_points)}"
            )
        for name, thr in self.operating_points.items():
            if not 0.0 < thr < 1.0:
                raise ValueError(f"operating point {name!r}: threshold {thr} must be in (0, 1)")
        for name, per_class in self.class_thresholds.items():
            if name not in self.operating_points:
                raise ValueError(
                    f"class_thresholds for {name!r}, which is not an operating point ({sorted(self.operating_points)})"
                )
            unknown = [c for c in per_class if c not in self.classes]
            if unknown:
                raise ValueError(f"class_thresholds[{name!r}]: {unknown} are not classes of this model")
            for c, thr in per_class.items():
                if not 0.0 < thr < 1.0:
                    raise ValueError(f"class_thresholds[{name!r}][{c!r}]: threshold {thr} must be in (0, 1)")
        for other, comp in self.companions.items():
            if other == self.name:
                raise ValueError(f"companions: {other!r} is this model itself")
            if comp.default_operating_point is not None and comp.default_operating_point not in comp.thresholds:
                raise ValueError(f"companions[{other!r}].default_operating_point {comp.default_operating_point!r} has "
                                 f"no thresholds ({sorted(comp.thresholds)})")
            for point, by_model in comp.thresholds.items():
                if point not in self.operating_points:
                    raise ValueError(f"companions[{other!r}].thresholds: {point!r} is not an operating point "
                                     f"({sorted(self.operating_points)})")
                if set(by_model) != {self.name, other}:
                    raise ValueError(f"companions[{other!r}].thresholds[{point!r}] must give thresholds for "
                                     f"{self.name!r} and {other!r}, not {sorted(by_model)}")
                unknown = [c for c in by_model[self.name] if c not in self.classes]
                if unknown:
                    raise ValueError(f"companions[{other!r}].thresholds[{point!r}]: {unknown} are not classes of "
                                     "this model")
                for model, per_class in by_model.items():
                    for c, thr in per_class.items():
                        if not 0.0 < thr < 1.0:
                            raise ValueError(f"companions[{other!r}].thresholds[{point!r}][{model!r}][{c!r}]: "
                                             f"threshold {thr} must be in (0, 1)")
        return self

    @property
    def default_threshold(self) -> float:
        """Score threshold of the default operating point (its per-class thresholds: :meth:`thresholds`)."""
        return self.operating_points[self.default_operating_point]

    def thresholds(self, operating_point: str | None = None) -> dict[str, float]:
        """Score threshold of every class (card order) at an operating point (default: the card's default)."""
        name = operating_point or self.default_operating_point
        base = self.operating_points[name]
        per_class = self.class_thresholds.get(name, {})
        return {c: float(per_class.get(c, base)) for c in self.classes}


def max_object_px(classes: list[str] | tuple[str, ...], gsd_m: float) -> float:
    """Longest object of these classes in pixels at ``gsd_m`` (long side; a tile must hold it whole)."""
    return max(get_class(c).max_length_m for c in classes) / gsd_m


def class_sizes(classes: list[str] | tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Largest (length_m, width_m) per class, for the card."""
    out = {}
    for c in classes:
        models = get_class(c).models
        out[c] = (max(m.length_m for m in models), max(m.width_m for m in models))
    return out


@dataclass(frozen=True)
class ModelBundle:
    """A loaded bundle: its validated card, its weights (CPU tensors) and where it came from."""

    card: ModelCard
    state_dict: dict[str, torch.Tensor]
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.card.name

    def build_model(self) -> torch.nn.Module:
        """The network with these weights loaded, in eval mode, on CPU."""
        from rams.detector.model import ARCHITECTURE, build_model

        if self.card.architecture != ARCHITECTURE:
            raise ModelError(
                f"model {self.card.name} has architecture {self.card.architecture!r}, which this rams "
                f"({__version__}) cannot build (it builds {ARCHITECTURE!r}); upgrade rams or use another model"
            )
        try:
            model = build_model(len(self.card.bands), len(self.card.classes), self.card.params)
        except ValidationError as err:
            raise ModelError(
                f"model {self.card.name}: invalid architecture params ({_one_line(err)}); re-export the bundle"
            ) from err
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise ModelError(
                f"model {self.card.name}: weights do not fit the architecture in its card "
                f"({' '.join(x.strip() for x in first[:2])}); the bundle is inconsistent, re-export it"
            ) from err
        model.eval()
        return model


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<card>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def repo_root() -> Path:
    """The source tree holding the installed ``rams`` package (editable installs: the repository)."""
    import rams

    return Path(rams.__file__).resolve().parent.parent


def models_dir() -> Path:
    """Folder of shipped models: ``$RAMS_MODELS_DIR`` or ``<repo>/models``."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env) if env else repo_root() / "models"


def list_model_names() -> list[str]:
    """Names of the bundle folders in :func:`models_dir` (folders holding a ``model.json``)."""
    d = models_dir()
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / CARD_FILE).is_file())


def resolve_bundle_path(name_or_path: str | Path) -> Path:
    """A bundle folder from a model name (folder under :func:`models_dir`) or a path to a bundle folder."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    text = str(name_or_path)
    is_name = isinstance(name_or_path, str) and "/" not in text and os.sep not in text
    if is_name and (models_dir() / text).is_dir():
        return models_dir() / text
    if p.is_file() and p.name in (CARD_FILE, WEIGHTS_FILE):
        return p.parent
    known = ", ".join(list_model_names()) or "none"
    where = models_dir()
    raise ModelError(
        f"model {text!r} not found: it is neither a bundle folder nor a model in {where} (known: {known}); "
        f"give a folder holding {CARD_FILE} and {WEIGHTS_FILE}, or one of the known names"
    )


def rams_version() -> str:
    """The installed rams version, or the source tree's (pyproject.toml) when rams runs uninstalled (GPU boxes)."""
    if "+unknown" not in __version__:
        return __version__
    try:
        import tomllib

        return str(tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]["version"]) + "+src"
    except (OSError, KeyError, ValueError):
        return __version__


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_card(folder: Path) -> ModelCard:
    """Parse and validate ``model.json`` of a bundle folder (no weights read)."""
    card_path = Path(folder) / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"{folder} has no {CARD_FILE}; a model bundle needs {CARD_FILE} and {WEIGHTS_FILE}")
    try:
        raw = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{card_path} is not valid JSON ({err}); restore the bundle or re-export it") from err
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as err:
        raise ModelError(f"{card_path} is not a valid model card: {_one_line(err)}; fix or re-export it") from err


def load_bundle(name_or_path: str | Path) -> ModelBundle:
    """Load a model bundle, checking the weights' SHA-256 against the card. Never unpickles.

    Args:
        name_or_path: a shipped model name (folder under :func:`models_dir`) or a bundle folder path.

    Raises:
        ModelError: unknown name, missing file, invalid card, hash mismatch, or unreadable weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    folder = resolve_bundle_path(name_or_path)
    card = read_card(folder)
    wpath = folder / WEIGHTS_FILE
    if not wpath.is_file():
        raise ModelError(f"{folder} has no {WEIGHTS_FILE}; restore the bundle (card and weights belong together)")
    data = wpath.read_bytes()
    digest = sha256_bytes(data)
    if digest != card.weights_sha256:
        raise ModelError(
            f"{wpath} fails its SHA-256 check (file {digest[:12]}..., card {card.weights_sha256[:12]}...): the "
            "weights are corrupt or were changed; restore the original bundle"
        )
    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise ModelError(f"{wpath} is not a readable safetensors file ({err}); restore the bundle") from err
    bundle = ModelBundle(card=card, state_dict=state, path=folder)
    log.debug("loaded model %s %s from %s (sha256 %s)", card.name, card.version, folder, digest[:12])
    return bundle


def save_bundle(
    dest: Path,
    card_fields: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    overwrite: bool = False,
) -> ModelBundle:
    """Write a bundle folder atomically: weights, their SHA-256, and the validated card.

    ``card_fields`` are every :class:`ModelCard` field except ``weights_sha256`` (computed here) and,
    optionally, ``created``, ``rams_version`` and ``class_sizes_m`` (filled in when absent).
    """
    from safetensors.torch import save as st_save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    # one metadata entry only: safetensors writes a multi-key metadata map in varying order (bytes, hence
    # the SHA-256, would differ between saves of the same weights)
    data = st_save(tensors, metadata={"format": "pt"})
    fields = dict(card_fields)
    fields["weights_sha256"] = sha256_bytes(data)
    fields.setdefault("created", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    fields.setdefault("rams_version", rams_version())
    if not fields.get("class_sizes_m"):
        fields["class_sizes_m"] = class_sizes(fields.get("classes", []))
    try:
        card = ModelCard.model_validate(fields)
    except ValidationError as err:
        raise ModelError(f"cannot write model bundle {dest}: invalid card: {_one_line(err)}") from err
    with atomic_path(Path(dest), overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        (tmp / WEIGHTS_FILE).write_bytes(data)
        (tmp / CARD_FILE).write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    return ModelBundle(card=card, state_dict=tensors, path=Path(dest))


def update_card_metrics(
    folder: Path,
    key: str,
    value: dict[str, Any],
    operating_points: dict[str, float] | None = None,
    class_thresholds: dict[str, dict[str, float]] | None = None,
) -> ModelCard:
    """Set ``metrics[key]`` in a bundle's card (atomically; the weights and their hash are untouched).

    Used to record held-out evaluations made after training (e.g. ``scripts/eval_model.py``), and, with
    ``operating_points`` / ``class_thresholds``, thresholds re-calibrated on held-out data (the record of how goes
    in ``metrics[key]``). The per-class thresholds given replace those of the same operating points.
    """
    folder = Path(folder)
    card = read_card(folder)
    metrics = dict(card.metrics)
    metrics[key] = value
    changes: dict[str, Any] = {"metrics": metrics}
    if operating_points is not None:
        changes["operating_points"] = {**card.operating_points, **operating_points}
    if class_thresholds is not None:
        changes["class_thresholds"] = {**card.class_thresholds, **class_thresholds}
    return _rewrite_card(folder, {**card.model_dump(mode="json"), **changes})


def update_card_companion(
    folder: Path,
    other: str,
    weights_sha256: str,
    thresholds: dict[str, dict[str, dict[str, float]]] | None = None,
    metrics: dict[str, Any] | None = None,
    default_operating_point: str | None = None,
) -> ModelCard:
    """Set the thresholds for running this bundle beside model ``other`` (whose weights hash is
    ``weights_sha256``), and/or merge ``metrics`` into that record, and/or set the pair's default point
    (atomically; weights untouched). New thresholds, or other weights of ``other``, start the record afresh (old
    metrics belonged to old thresholds)."""
    folder = Path(folder)
    card = read_card(folder)
    companions: dict[str, Any] = {k: v.model_dump(mode="json") for k, v in card.companions.items()}
    old = card.companions.get(other)
    keep = old is not None and old.weights_sha256 == weights_sha256 and thresholds is None
    companions[other] = {
        "weights_sha256": weights_sha256,
        "thresholds": old.thresholds if keep and old is not None else (thresholds or {}),
        "metrics": {**(old.metrics if keep and old is not None else {}), **(metrics or {})},
        "default_operating_point": default_operating_point or (old.default_operating_point if keep and old else None),
    }
    return _rewrite_card(folder, {**card.model_dump(mode="json"), "companions": companions})


def _rewrite_card(folder: Path, data: dict[str, Any]) -> ModelCard:
    """Validate ``data`` as a card and write it as the bundle's ``model.json`` (atomically)."""
    try:
        new = ModelCard.model_validate(data)
    except ValidationError as err:
        raise ModelError(f"cannot update {folder / CARD_FILE}: {_one_line(err)}") from err
    tmp = folder / f".{CARD_FILE}.tmp"
    tmp.write_text(json.dumps(new.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, folder / CARD_FILE)
    return new


def make_test_bundle(
    dest: Path,
    bands: tuple[str, ...] = ("red", "green", "blue"),
    classes: tuple[str, ...] = CLASS_NAMES,
    seed: int = 0,
    gsd_m: float = 0.01,
    tile_size_px: int = 256,
    threshold: float = 0.3,
) -> ModelBundle:
    """A tiny, randomly initialised bundle for plumbing tests (detections are meaningless).

    Deterministic in ``seed``. Its heatmap bias is raised so that some peaks pass ``threshold``.
    """
    from rams.detector.model import ARCHITECTURE, ArchParams, build_model

    params = ArchParams(widths=(8, 8, 16, 16), depths=(0, 1, 1), neck_width=16, head_width=8)
    torch.manual_seed(seed)
    model = build_model(len(bands), len(classes), params)
    with torch.no_grad():
        assert model.head_hm.bias is not None
        model.head_hm.weight.normal_(std=0.5)
        model.head_hm.bias.fill_(-1.0)
    largest = max_object_px(list(classes), gsd_m)
    overlap = int(math.ceil(largest)) + 8
    if overlap >= tile_size_px // 2:
        tile_size_px = int(math.ceil((2 * overlap + 16) / 16) * 16)
    card = {
        "name": dest.name,
        "version": "0.0.0-test",
        "description": "randomly initialised test bundle: for plumbing tests only, detects nothing real",
        "architecture": ARCHITECTURE,
        "params": params.model_dump(mode="json"),
        "classes": list(classes),
        "bands": list(bands),
        "normalisation": {"value_range": None, "mean": [0.5] * len(bands), "std": [0.25] * len(bands)},
        "gsd_m": gsd_m,
        "gsd_range_m": (gsd_m * 0.5, gsd_m * 1.2),
        "tile_size_px": tile_size_px,
        "overlap_px": overlap,
        "operating_points": {"balanced": threshold},
        "default_operating_point": "balanced",
        "training": {
            "data": ["none (random initialisation)"],
            "command": "rams.detector.bundle.make_test_bundle",
            "config": {},
            "seed": seed,
            "duration": "0 s",
            "duration_s": 0.0,
            "device": "cpu",
        },
        "metrics": {},
    }
    return save_bundle(dest, card, model.state_dict(), overwrite=True)
