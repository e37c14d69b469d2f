"""Shared fixtures. ``make_geotiff`` builds small real GeoTIFFs on disk with exactly known geometry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

UTM = "EPSG:32638"  # UTM 38N: Azerbaijan


def write_geotiff(
    path: Path,
    height: int = 100,
    width: int = 120,
    bands: int = 3,
    dtype: str = "uint8",
    crs: str | None = UTM,
    gsd: float = 0.01,
    origin: tuple[float, float] = (500000.0, 4400000.0),
    nodata: float | None = None,
    alpha: bool = False,
    alpha_mask: np.ndarray | None = None,
    tiled: bool = True,
    blocksize: int = 64,
    data: np.ndarray | None = None,
    colorinterp: Sequence[ColorInterp] | None = None,
    transform: Affine | None = None,
    compress: str | None = "deflate",
    bigtiff: bool = False,
    seed: int = 0,
) -> Path:
    """Write a GeoTIFF. ``data`` (bands, h, w) defaults to a deterministic gradient + noise pattern.

    ``alpha=True`` appends an alpha band (255 inside ``alpha_mask``, which defaults to all-valid).
    """
    rng = np.random.default_rng(seed)
    if data is None:
        yy, xx = np.mgrid[0:height, 0:width]
        base = (xx * 2 + yy) % 200 + 20
        data = np.stack([(base + 10 * b + rng.integers(0, 5, base.shape)) for b in range(bands)]).astype(dtype)
    data = np.asarray(data).astype(dtype)
    count = data.shape[0] + (1 if alpha else 0)
    profile: dict[str, Any] = dict(
        driver="GTiff", height=height, width=width, count=count, dtype=dtype,
    )
    if crs is not None:
        profile["crs"] = CRS.from_string(crs)
    if transform is None and crs is not None:
        transform = Affine(gsd, 0, origin[0], 0, -gsd, origin[1])
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if compress:
        profile["compress"] = compress
    if bigtiff:
        profile["BIGTIFF"] = "YES"
    if alpha:
        # ALPHA=YES marks the extra sample as alpha in the TIFF itself (robust across GDAL config states)
        profile["photometric"] = "RGB" if data.shape[0] == 3 else "MINISBLACK"
        profile["alpha"] = "YES"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, indexes=list(range(1, data.shape[0] + 1)))
            if alpha:
                am = np.full((height, width), 255, np.uint8) if alpha_mask is None else alpha_mask
                a = np.where(am > 0, np.iinfo(dtype).max if np.issubdtype(np.dtype(dtype), np.integer) else 1, 0)
                dst.write(a.astype(dtype), count)
            ci = list(colorinterp) if colorinterp is not None else None
            if ci is None:
                if data.shape[0] == 3:
                    ci = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
                elif data.shape[0] == 1:
                    ci = [ColorInterp.gray]
                else:
                    ci = [ColorInterp.undefined] * data.shape[0]
                if alpha:
                    ci.append(ColorInterp.alpha)
            dst.colorinterp = ci
    return path


@pytest.fixture
def make_geotiff(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_geotiff(name="a.tif", **write_geotiff kwargs)`` -> path of a real GeoTIFF."""
    counter = {"n": 0}

    def _make(name: str | None = None, **kwargs: Any) -> Path:
        counter["n"] += 1
        return write_geotiff(tmp_path / (name or f"ortho{counter['n']}.tif"), **kwargs)

    return _make
