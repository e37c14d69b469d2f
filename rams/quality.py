"""Coverage quality: was each piece of ground imaged well enough to see the smallest target asked for?

Drone imagery is non-technical-survey evidence, and "nothing seen" supports cancellation only where the
ground was imaged well enough for that threat (``shared/DOMAIN.md``). This module measures, per sub-cell of a
few metres, what the detector would see at the model GSD and classes the cell:

* ``adequate``: every check passes;
* ``inadequate:<reason>``: imaged, but not well enough. Reasons, in the order they are tested:
  ``partial`` (too few valid pixels in the cell to judge), ``gsd`` (achieved GSD too coarse for the smallest
  requested class), ``exposure`` (too many black or saturated pixels), ``blur`` (re-blur index too high),
  ``vegetation`` (RGB only: too much green cover, which hides surface items);
* ``not_imaged``: no valid pixel (alpha/nodata, outside the footprint, or outside the raster but inside the AOI).

Metrics (all measured on valid pixels only, on a grey image at the analysis GSD):

* ``blur_idx``: the Crete-Roffet re-blur index (Crete et al., SPIE 6492, 2007; the measure behind
  ``skimage.measure.blur_effect``): 0 sharp ... 1 fully blurred. Gradients of the image are compared with the
  gradients of a copy blurred by an ``blur_filter_px`` box filter; a sharp image loses much gradient energy,
  an already-blurred one little. It is a ratio, so brightness and contrast cancel out, and in
  ``scripts/sweep_quality.py`` it stays monotonic in blur when sensor noise is added after the blur, where
  band-ratio measures (Laplacian / detail variance) turn back up and call a heavily blurred noisy image sharp.
* ``lap_var``: variance of the Laplacian divided by the squared mean grey value (the classic focus measure,
  normalised for brightness). Reported for comparison; it depends strongly on the ground texture (smooth sand
  reads "blurred"), so it does not drive the class.
* ``dark_frac`` / ``sat_frac``: fraction of pixels at or below ``dark_level`` (grey) or with any band at or
  above ``saturated_level``.
* ``veg_frac``: fraction of pixels whose excess-green index ``2g - r - b`` on chromatic coordinates
  (Woebbecke et al. 1995) exceeds ``vegetation_exg_min``.

A cell is judged as a whole, so small defects inside an otherwise adequate cell would be diluted (a shadow on
20 % of it, a blurred flight line across half of it). They are carved out of it as their own
``inadequate:<reason>`` pieces: 0.5 m blocks that are mostly black/saturated or green, and ground a sliding-window
blur map flags (see ``patch_block_m`` and ``blur_block_px``).

Thresholds are provisional defaults (see ``docs/decisions.md``); ``scripts/sweep_quality.py`` prints the metrics
over blur and darkening sweeps so that they can be tied to detector recall once a model exists.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from rasterio.windows import Window
from scipy import ndimage as ndi

from rams.classes import CLASS_NAMES, smallest_length_m
from rams.config import ReadConfig, StrictModel
from rams.errors import AOIError, BandError, InputError
from rams.ingest import MIN_TARGET_PX
from rams.raster import (
    Grid,
    OrthoReader,
    cache_cap_mb,
    damaged_reads,
    gsd_of,
    open_raster,
    reading_notes,
    source_value_range,
    target_grid,
)
from rams.tiling import make_tiles, stripe_cols_for, stripe_order, stripe_span_px

if TYPE_CHECKING:
    import geopandas as gpd
    from rasterio.io import DatasetReader
    from shapely.geometry.base import BaseGeometry

log = logging.getLogger(__name__)

ADEQUATE = "adequate"
NOT_IMAGED = "not_imaged"
#: Inadequacy reasons in the order they are tested; the class names the first that fails.
REASONS: tuple[str, ...] = ("partial", "gsd", "exposure", "blur", "vegetation")

RGB_NAMES = ("red", "green", "blue")


#: Per-class re-blur limits and mean-grey floors measured with the shipped default model (docs/decisions.md,
#: "Limits per threat class"); filled from ``scripts/sweep_quality_recall.py --scenes-dir``.
#: Blur, measured with v1.1.1 on 24 scenes and checked on 12 others: pmn / shell 0.45, tm62 0.55 (capped at
#: ``blur_max``), mon 0.40 moved to 0.35 by the check; mortar lost recall from the first blur step and the classes
#: the model barely finds at 1 cm (pfm1, pom2, ozm72, submunition) cannot show a limit: the strictest measured one.
#: (The same rule on v1.2.0 read 0.25 for mon and mortar, below what *sharp* ploughed ground reads: not adopted,
#: docs/decisions.md.) Mean-grey floors, measured with v1.2.0 (the shipped default) the same way: mon / shell 0.15,
#: pmn / mortar 0.20, tm62 0.04; the unmeasurable classes take the strictest.
CLASS_BLUR_MAX: dict[str, float] = {
    "pfm1": 0.35, "pom2": 0.35, "pmn": 0.45, "ozm72": 0.35, "mon": 0.35, "tm62": 0.45, "submunition": 0.35,
    "mortar": 0.35, "shell": 0.45,
}  # fmt: skip
CLASS_MIN_GREY: dict[str, float] = {
    "pfm1": 0.20, "pom2": 0.20, "pmn": 0.20, "ozm72": 0.20, "mon": 0.15, "tm62": 0.04, "submunition": 0.20,
    "mortar": 0.20, "shell": 0.15,
}  # fmt: skip


class QualityConfig(StrictModel):
    """Thresholds of the coverage-quality check. Defaults: see ``docs/decisions.md`` for the reasoning."""

    classes: list[str] | None = None
    """Target classes the imagery must resolve (None: all classes, i.e. the smallest item, POM-2 at 6.3 cm)."""
    min_target_px: float = MIN_TARGET_PX
    """Fewest pixels along the smallest target's long side (same rule as ``rams info``)."""
    analysis_gsd_m: float | None = None
    """GSD the imagery is judged at: the model GSD (None: the mosaic's native GSD)."""
    cell_size_m: float = 2.5
    """Largest side of a quality cell; each tile core is split into cells no larger than this."""
    tile_size_px: int = 1024
    """Read window (pixels at the analysis GSD); memory is bounded by it."""
    blur_max: float = 0.45
    """Highest re-blur index still adequate (sharp ground textures measure 0.23-0.33; see the sweep)."""
    blur_filter_px: int = 11
    """Box-filter length of the re-blur (pixels); 11 as in Crete et al. and scikit-image."""
    dark_level: float = 0.06
    """Grey value (0-1) at or below which a pixel counts as black (5/255 in 8-bit)."""
    saturated_level: float = 0.99
    """Value (0-1) at or above which a band counts as saturated (253/255 in 8-bit)."""
    exposure_max_fraction: float = 0.25
    """Largest fraction of black or of saturated pixels still adequate."""
    vegetation_exg_min: float = 0.10
    """Excess-green index above which an RGB pixel counts as vegetation."""
    vegetation_max_fraction: float | None = 0.5
    """Largest vegetation-cover fraction still adequate (None: no vegetation check)."""
    class_blur_max: dict[str, float] = Field(default_factory=lambda: dict(CLASS_BLUR_MAX))
    """Per threat class, the highest re-blur index at which the shipped detector still finds that class as well
    as on sharp imagery (``scripts/sweep_quality_recall.py --scenes-dir``; docs/decisions.md). A run judges with
    the smallest of ``blur_max`` and the limits of its threat classes (:meth:`blur_limit`). A preset that names
    some classes changes only those (1.0 switches a class's own limit off)."""
    class_min_grey: dict[str, float] = Field(default_factory=lambda: dict(CLASS_MIN_GREY))
    """Per threat class, the darkest mean grey (0-1) of a cell at which the shipped detector still finds that
    class as well as at normal exposure (same sweep). RGB cells darker on average than the largest floor of the
    threat classes (:meth:`grey_floor`) are ``inadequate:exposure`` (not thermal or other bands: their grey level
    is not an exposure); blocks of ``patch_block_m`` mostly below it are carved out of adequate cells. A preset
    that names some classes changes only those (0.0: no floor for that class). A few dark pixels
    (``dark_level``) are another matter: under-exposed ground keeps most of its pixels above 5/255 long after
    the detector stops seeing small items in it."""
    min_valid_fraction: float = 0.25
    """Cells with a smaller valid fraction are ``inadequate:partial`` (too few pixels to judge)."""
    patch_block_m: float | None = 0.5
    """Side of the blocks in which black, saturated or vegetated patches are carved out of otherwise adequate
    cells (None: off). Without it a shadow covering up to ``exposure_max_fraction`` of a cell would read
    adequate, and a mine could lie in it unseen."""
    patch_min_fraction: float = 0.5
    """A block is carved out when more than this fraction of its valid pixels is black/saturated/vegetated."""
    blur_block_px: int | None = 128
    """Window (analysis pixels) of the local blur map that finds blurred ground inside otherwise adequate cells,
    which is carved out (None: off). In a cell half sharp, half blurred the sharp half dominates the gradient
    energy and the cell reads sharp. 128 px is the smallest window on which sharp ground textures stay clearly
    below ``blur_max`` (``scripts/sweep_quality.py --blocks``)."""
    read: ReadConfig = Field(default_factory=ReadConfig)
    """Band selection, value range and resampling for reading the mosaic."""

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            unknown = [c for c in v if c not in CLASS_NAMES]
            if unknown:
                raise ValueError(f"unknown class(es) {unknown}; known: {', '.join(CLASS_NAMES)}")
            if not v:
                raise ValueError("classes must not be empty; leave it out to mean all classes")
        return v

    @field_validator("class_blur_max", "class_min_grey")
    @classmethod
    def _class_limits(cls, v: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        unknown = [c for c in v if c not in CLASS_NAMES]
        if unknown:
            raise ValueError(f"unknown class(es) {unknown}; known: {', '.join(CLASS_NAMES)}")
        bad = {c: x for c, x in v.items() if not 0.0 <= x <= 1.0}
        if bad:
            raise ValueError(f"limits must lie in 0-1, got {bad}")
        # a preset naming some classes changes those and keeps the measured limits of the others: tightening one
        # class must never drop another's limit (1.0 blur / 0.0 grey switch a class's own limit off)
        return {**(CLASS_BLUR_MAX if info.field_name == "class_blur_max" else CLASS_MIN_GREY), **v}

    @field_validator("cell_size_m", "min_target_px")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("tile_size_px")
    @classmethod
    def _tile(cls, v: int) -> int:
        if v < 64:
            raise ValueError("must be >= 64")
        return v

    @field_validator("blur_filter_px")
    @classmethod
    def _filter(cls, v: int) -> int:
        if v < 3:
            raise ValueError("must be >= 3")
        return v

    def smallest_target_m(self) -> float:
        return smallest_length_m(self.classes)

    def threat_classes(self) -> tuple[str, ...]:
        """The classes the imagery is judged for (all classes when ``classes`` is unset)."""
        return tuple(self.classes) if self.classes else CLASS_NAMES

    def blur_limit(self) -> float:
        """Highest re-blur index still adequate for every threat class."""
        return min([self.blur_max, *(self.class_blur_max[c] for c in self.threat_classes() if c in
                                     self.class_blur_max)])  # fmt: skip

    def grey_floor(self) -> float:
        """Darkest mean grey still adequate for every threat class (0: no floor)."""
        return max([0.0, *(self.class_min_grey[c] for c in self.threat_classes() if c in self.class_min_grey)])


@dataclass(frozen=True)
class QualityMetrics:
    """What was measured on one cell (NaN where it could not be measured, e.g. no valid pixel)."""

    gsd_m: float
    target_px: float
    valid_fraction: float
    n_valid_px: int
    blur_index: float
    lap_var_norm: float
    dark_fraction: float
    saturated_fraction: float
    vegetation_fraction: float | None
    mean_grey: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grey_image(image: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Grey image (rows, cols): luminance for RGB (ITU-R 709 weights, as scikit-image), else the band mean."""
    names = list(bands)
    if all(n in names for n in RGB_NAMES):
        r, g, b = (image[names.index(n)] for n in RGB_NAMES)
        return (0.2125 * r + 0.7154 * g + 0.0721 * b).astype(np.float32)
    return image.mean(axis=0, dtype=np.float32)


@dataclass
class _PixelMaps:
    """Per-pixel quantities of one tile, reduced per cell by :func:`_reduce`."""

    valid: np.ndarray
    grey: np.ndarray
    blur_sharp: list[np.ndarray]  # |gradient| along each axis (zero where not measurable)
    blur_loss: list[np.ndarray]  # max(0, |gradient| - |gradient of re-blurred|)
    blur_ok: list[np.ndarray]
    lap: np.ndarray
    lap_ok: np.ndarray
    dark: np.ndarray
    saturated: np.ndarray
    vegetation: np.ndarray | None
    dim: np.ndarray | None = None  # valid pixels darker than the threat classes' grey floor (None: no floor)
    blurred: np.ndarray | None = None  # local blur map: window index > blur_max, dilated (see _local_blur)


def _pixel_maps(
    image: np.ndarray, valid: np.ndarray, bands: Sequence[str], cfg: QualityConfig, local_blur: bool = True
) -> _PixelMaps:
    if image.ndim != 3:
        raise BandError(f"image must be (bands, rows, cols), got shape {image.shape}")
    if image.shape[0] != len(bands):
        raise BandError(f"image has {image.shape[0]} bands but {len(bands)} band names were given")
    valid = np.asarray(valid, dtype=bool)
    grey = grey_image(image, bands)
    vf = valid.astype(np.float32)
    h = int(cfg.blur_filter_px)
    sharp, loss, oks = [], [], []
    for ax in (0, 1):
        # A pixel is measurable when its Sobel neighbourhood of the re-blurred image is all valid.
        size = (h + 2, 3) if ax == 0 else (3, h + 2)
        ok = ndi.uniform_filter(vf, size=size, mode="constant", cval=0.0) > 1.0 - 1e-4
        reblur = ndi.uniform_filter1d(grey, h, axis=ax, mode="nearest")
        s = np.abs(ndi.sobel(grey, axis=ax, mode="nearest"))
        b = np.abs(ndi.sobel(reblur, axis=ax, mode="nearest"))
        sharp.append(np.where(ok, s, 0.0).astype(np.float32))
        loss.append(np.where(ok, np.maximum(0.0, s - b), 0.0).astype(np.float32))
        oks.append(ok)
    lap_ok = ndi.uniform_filter(vf, size=3, mode="constant", cval=0.0) > 1.0 - 1e-4
    lap = ndi.laplace(grey, mode="nearest")
    dark = valid & (grey <= cfg.dark_level)
    saturated = valid & (image.max(axis=0) >= cfg.saturated_level)
    veg = None
    names = list(bands)
    if all(n in names for n in RGB_NAMES):
        r, g, b = (image[names.index(n)].astype(np.float32) for n in RGB_NAMES)
        total = r + g + b
        bright = total > 3 * cfg.dark_level
        with np.errstate(invalid="ignore", divide="ignore"):
            exg = np.where(bright, (2 * g - r - b) / np.where(bright, total, 1.0), 0.0)
        veg = valid & bright & (exg > cfg.vegetation_exg_min)
    floor = cfg.grey_floor()
    dim = valid & (grey < floor) if floor > 0 and veg is not None else None  # RGB only, as in failed_checks
    maps = _PixelMaps(valid, grey, sharp, loss, oks, lap, lap_ok, dark, saturated, veg, dim)
    if local_blur and cfg.blur_block_px:
        maps.blurred = _local_blur(maps, cfg.blur_block_px, cfg.blur_limit())
    return maps


def _local_blur(maps: _PixelMaps, window_px: int, blur_max: float) -> np.ndarray:
    """Pixels near blurred ground: the re-blur index over a sliding ``window_px`` window, thresholded, dilated.

    In a window that straddles sharp and blurred ground the sharp part dominates the gradient energy, so the
    window reads blurred only when 65-85 % of it is blurred, depending on the texture (docs/decisions.md);
    dilating the flagged pixels by half a window carries the flag back out to the edge of the blurred ground
    (and a little past it, on the safe side). Black and saturated pixels take no part: exposure covers them.
    """
    usable = ~(maps.dark | maps.saturated)
    # Window sums on a grid 4x coarser (sums of 4 x 4 pixel blocks): 16x less work, and the result is
    # quantised to patch blocks (0.5 m) later anyway.
    f = 4 if window_px >= 32 else 1
    h, w = maps.valid.shape
    hb, wb = math.ceil(h / f), math.ceil(w / f)

    def block_sum(a: np.ndarray) -> np.ndarray:
        padded = np.pad(a.astype(np.float32), ((0, hb * f - h), (0, wb * f - w)))
        return padded.reshape(hb, f, wb, f).sum(axis=(1, 3))

    win = max(1, round(window_px / f))
    index = np.zeros((hb, wb), dtype=np.float32)
    measured = np.zeros((hb, wb), dtype=bool)
    for ax in (0, 1):
        ok = maps.blur_ok[ax] & usable
        n = ndi.uniform_filter(block_sum(ok), win, mode="constant") / (f * f)
        s = ndi.uniform_filter(block_sum(np.where(ok, maps.blur_sharp[ax], 0.0)), win, mode="constant")
        loss = ndi.uniform_filter(block_sum(np.where(ok, maps.blur_loss[ax], 0.0)), win, mode="constant")
        enough = n >= 0.25
        with np.errstate(invalid="ignore", divide="ignore"):
            ax_index = np.where(s > 1e-9 * np.maximum(n, 1e-6), 1.0 - loss / np.where(s > 0, s, 1.0), 1.0)
        index = np.where(enough, np.maximum(index, ax_index), index)
        measured |= enough
    flagged = measured & (index > blur_max)
    if not flagged.any():
        return np.zeros((h, w), dtype=bool)
    flagged = ndi.maximum_filter(flagged, size=win + 1, mode="constant")
    full = np.repeat(np.repeat(flagged, f, axis=0), f, axis=1)[:h, :w]
    return full & maps.valid


def _reduce(maps: _PixelMaps, sl: tuple[slice, slice], gsd_m: float, cfg: QualityConfig) -> QualityMetrics:
    valid = maps.valid[sl]
    n_total = valid.size
    n_valid = int(valid.sum())
    target_px = cfg.smallest_target_m() / gsd_m
    nan = float("nan")
    if n_valid == 0:
        return QualityMetrics(gsd_m, target_px, 0.0, 0, nan, nan, nan, nan,
                              None if maps.vegetation is None else nan, nan)
    grey = maps.grey[sl][valid]
    mean_grey = float(grey.mean())
    blur = []
    for ax in (0, 1):
        n_ok = int(maps.blur_ok[ax][sl].sum())
        if n_ok == 0:
            continue
        m1 = float(maps.blur_sharp[ax][sl].sum(dtype=np.float64))
        m2 = float(maps.blur_loss[ax][sl].sum(dtype=np.float64))
        # A flat cell (no gradient at all) shows nothing: maximal blur, as scikit-image's epsilon gives.
        blur.append(1.0 if m1 <= 1e-9 * n_ok else abs(m1 - m2) / m1)
    blur_index = max(blur) if blur else nan
    lap_ok = maps.lap_ok[sl]
    if lap_ok.any():
        lap_var = float(maps.lap[sl][lap_ok].var(dtype=np.float64)) / max(mean_grey**2, (1.0 / 255) ** 2)
    else:
        lap_var = nan
    veg = None if maps.vegetation is None else float(maps.vegetation[sl].sum()) / n_valid
    return QualityMetrics(
        gsd_m=gsd_m,
        target_px=target_px,
        valid_fraction=n_valid / n_total,
        n_valid_px=n_valid,
        blur_index=float(blur_index),
        lap_var_norm=lap_var,
        dark_fraction=float(maps.dark[sl].sum()) / n_valid,
        saturated_fraction=float(maps.saturated[sl].sum()) / n_valid,
        vegetation_fraction=veg,
        mean_grey=mean_grey,
    )


def assess_cells(
    image: np.ndarray,
    valid: np.ndarray,
    gsd_m: float,
    bands: Sequence[str],
    cfg: QualityConfig,
    cells: Sequence[tuple[slice, slice]],
) -> list[QualityMetrics]:
    """Quality metrics of several cells of one tile (pixel maps are computed once for the whole tile).

    Args:
        image: float32 (bands, rows, cols) in [0, 1], as :class:`rams.raster.TileData` holds it.
        valid: bool (rows, cols) validity mask.
        gsd_m: ground sample distance the image effectively has (the coarser of native and analysis GSD).
        bands: band names (``red``, ``green``, ``blue`` enable the RGB luminance and vegetation checks).
        cfg: thresholds.
        cells: (row slice, col slice) of each cell in the image. Pixels around a cell (the tile overlap)
            are used as context for the filters, so cells at a tile's inner edge are measured as well as
            any other.
    """
    maps = _pixel_maps(image, valid, bands, cfg, local_blur=False)
    return [_reduce(maps, sl, gsd_m, cfg) for sl in cells]


def assess_tile(
    image: np.ndarray, valid: np.ndarray, gsd_m: float, bands: Sequence[str], cfg: QualityConfig
) -> QualityMetrics:
    """Quality metrics of one whole image (one cell). See :func:`assess_cells` for the arguments."""
    return assess_cells(image, valid, gsd_m, bands, cfg, [(slice(None), slice(None))])[0]


def failed_checks(m: QualityMetrics, cfg: QualityConfig) -> list[str]:
    """Every inadequacy reason that applies to a measured cell, in :data:`REASONS` order."""
    if m.n_valid_px == 0:
        return []
    out = []
    if m.valid_fraction < cfg.min_valid_fraction:
        out.append("partial")
    if m.target_px < cfg.min_target_px:
        out.append("gsd")
    if (
        m.dark_fraction > cfg.exposure_max_fraction
        or m.saturated_fraction > cfg.exposure_max_fraction
        # RGB only (vegetation_fraction is measured on RGB alone): the floors were measured on RGB imagery,
        # and a thermal band's grey level is a temperature, not an exposure
        or (m.vegetation_fraction is not None and m.mean_grey < cfg.grey_floor())
    ):
        out.append("exposure")
    if not (m.blur_index <= cfg.blur_limit()):  # NaN (unmeasurable) is not adequate
        out.append("blur")
    if (
        cfg.vegetation_max_fraction is not None
        and m.vegetation_fraction is not None
        and m.vegetation_fraction > cfg.vegetation_max_fraction
    ):
        out.append("vegetation")
    return out


def classify(m: QualityMetrics, cfg: QualityConfig) -> str:
    """``adequate``, ``inadequate:<first failing reason>`` or ``not_imaged`` (no valid pixel)."""
    if m.n_valid_px == 0:
        return NOT_IMAGED
    failed = failed_checks(m, cfg)
    return f"inadequate:{failed[0]}" if failed else ADEQUATE


# ---------------------------------------------------------------------------------------------------------
# Over a whole orthomosaic


@dataclass
class QualityResult:
    """The ``coverage_quality`` layer of one orthomosaic and what it adds up to."""

    layer: gpd.GeoDataFrame | None
    """Polygons in the grid CRS, one per cell (classed part) plus dissolved ``not_imaged`` parts; None when the
    layer was streamed to a ``sink`` instead of held (see :func:`assess_dataset`)."""
    native_gsd_m: float
    analysis_gsd_m: float
    smallest_target_m: float
    band_names: tuple[str, ...]
    tiles: int
    cells: int
    """Quality cells assessed (the layer also holds carved-out patches and not-imaged parts)."""
    area_m2_by_class: dict[str, float]
    """Area of the layer's polygons per ``quality`` value (summed chunk by chunk as the layer is made)."""
    rows: int
    """Rows of the layer."""
    crs: Any
    """CRS of the layer (the analysis grid's)."""
    warnings: list[str] = field(default_factory=list)
    """What the judgement rests on that the user should know (e.g. pixel values read dimmer than they are)."""
    blur_limit: float = 0.45
    """Re-blur index limit applied (:meth:`QualityConfig.blur_limit` for the threat classes)."""
    grey_floor: float = 0.0
    """Mean-grey floor applied (:meth:`QualityConfig.grey_floor`; 0: none)."""

    def area_by_class_m2(self) -> dict[str, float]:
        return dict(sorted(self.area_m2_by_class.items()))

    def require_layer(self) -> gpd.GeoDataFrame:
        """The layer held in memory (an error if it was streamed to a sink)."""
        if self.layer is None:
            raise RuntimeError("this coverage quality layer was streamed to a file; read it from there")
        return self.layer

    def summary(self) -> dict[str, Any]:
        by_class = self.area_by_class_m2()
        total = sum(by_class.values())
        adequate = by_class.get(ADEQUATE, 0.0)
        not_imaged = by_class.get(NOT_IMAGED, 0.0)
        return {
            "native_gsd_m": self.native_gsd_m,
            "analysis_gsd_m": self.analysis_gsd_m,
            "smallest_target_m": self.smallest_target_m,
            "blur_limit": self.blur_limit,
            "grey_floor": self.grey_floor,
            "bands": list(self.band_names),
            "tiles": self.tiles,
            "cells": self.cells,
            "area_m2_by_class": by_class,
            "total_m2": total,
            "adequate_m2": adequate,
            "inadequate_m2": total - adequate - not_imaged,
            "not_imaged_m2": not_imaged,
            "warnings": list(self.warnings),
        }


COLUMNS = [
    "cell_id", "tile_id", "quality", "reasons", "gsd_m", "target_px", "valid_frac", "blur_idx", "lap_var",
    "dark_frac", "sat_frac", "veg_frac", "mean_grey", "area_m2",
]


def quality_bands(src: DatasetReader, override: Sequence[int] | None = None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Bands to judge: R, G, B by colour interpretation when present, else every non-alpha band."""
    names = [ci.name for ci in src.colorinterp]
    if override:
        bad = [b for b in override if b < 1 or b > src.count]
        if bad:
            raise BandError(f"bands {bad} out of range: {src.name} has bands 1..{src.count}")
        picked = tuple(int(b) for b in override)
        if len(picked) == 3 and all(names[b - 1] in ("undefined", "gray") for b in picked):
            return picked, RGB_NAMES
        return picked, tuple(names[b - 1] for b in picked)
    by_name = {n: i for i, n in enumerate(names, start=1)}
    if all(n in by_name for n in RGB_NAMES):
        return tuple(by_name[n] for n in RGB_NAMES), RGB_NAMES
    image = tuple(i for i, n in enumerate(names, start=1) if n != "alpha")
    if not image:
        raise BandError(f"{src.name} has no image band (only alpha); give a real orthomosaic")
    return image, tuple(names[i - 1] for i in image)


def _core_cells(tile_core: Window, tile_window: Window, cell_px: int) -> list[tuple[Window, tuple[slice, slice]]]:
    """Split a tile core into near-equal cells no larger than ``cell_px``: (grid window, tile-local slices)."""
    out = []
    r0, c0 = int(tile_core.row_off), int(tile_core.col_off)
    h, w = int(tile_core.height), int(tile_core.width)
    nr, nc = max(1, math.ceil(h / cell_px)), max(1, math.ceil(w / cell_px))
    rb = [r0 + round(i * h / nr) for i in range(nr + 1)]
    cb = [c0 + round(j * w / nc) for j in range(nc + 1)]
    wr, wc = int(tile_window.row_off), int(tile_window.col_off)
    for i in range(nr):
        for j in range(nc):
            win = Window(cb[j], rb[i], cb[j + 1] - cb[j], rb[i + 1] - rb[i])
            sl = (slice(rb[i] - wr, rb[i + 1] - wr), slice(cb[j] - wc, cb[j + 1] - wc))
            out.append((win, sl))
    return out


def _to_map(geom_px: BaseGeometry, grid: Grid) -> BaseGeometry:
    """Grid pixel coordinates (col, row) to map coordinates.

    Every cell edge is computed from its integer pixel coordinate by this one function, so neighbouring
    cells share bit-identical edges and their union has no slivers.
    """
    from shapely.affinity import affine_transform

    t = grid.transform
    return affine_transform(geom_px, [t.a, t.b, t.d, t.e, t.c, t.f])


def _cell_box_px(win: Window) -> BaseGeometry:
    from shapely import box

    r0, c0 = int(win.row_off), int(win.col_off)
    return box(c0, r0, c0 + int(win.width), r0 + int(win.height))


def _valid_polygon_px(valid: np.ndarray, win: Window) -> BaseGeometry:
    """Exact union of the valid pixels of a cell's mask, in grid pixel coordinates."""
    from affine import Affine
    from rasterio import features
    from shapely import union_all
    from shapely.geometry import shape

    mask = valid.astype(np.uint8)
    shift = Affine.translation(int(win.col_off), int(win.row_off))
    polys = [shape(g) for g, v in features.shapes(mask, mask=valid, transform=shift) if v == 1]
    return union_all(polys)


def _block_mask(bad: np.ndarray, valid: np.ndarray, block_px: int, min_fraction: float) -> np.ndarray:
    """Pixels of the blocks (``block_px`` square, from the array's corner) where ``bad`` exceeds the fraction."""
    h, w = bad.shape
    nr, nc = math.ceil(h / block_px), math.ceil(w / block_px)
    pad = ((0, nr * block_px - h), (0, nc * block_px - w))
    b = np.pad(bad & valid, pad).reshape(nr, block_px, nc, block_px).sum(axis=(1, 3))
    v = np.pad(valid, pad).reshape(nr, block_px, nc, block_px).sum(axis=(1, 3))
    blocks = (v > 0) & (b > min_fraction * v)
    return np.repeat(np.repeat(blocks, block_px, axis=0), block_px, axis=1)[:h, :w] & valid


def _patches(
    maps: _PixelMaps, sl: tuple[slice, slice], win: Window, cfg: QualityConfig, gsd_m: float
) -> list[tuple[str, BaseGeometry, dict[str, Any]]]:
    """Black/saturated, blurred, then vegetated blocks of an adequate cell: (reason, polygon in grid px, metrics)."""
    valid = maps.valid[sl]
    out = []
    taken = np.zeros_like(valid)
    block_px = max(2, round(cfg.patch_block_m / gsd_m)) if cfg.patch_block_m else 0
    checks: list[tuple[str, np.ndarray]] = []
    if block_px:
        bad = maps.dark[sl] | maps.saturated[sl]
        checks.append(("exposure", _block_mask(bad if maps.dim is None else bad | maps.dim[sl], valid, block_px,
                                               cfg.patch_min_fraction)))
    if maps.blurred is not None:
        # any blurred pixel flags its block: the blurred region is widened, never narrowed
        checks.append(("blur", _block_mask(maps.blurred[sl], valid, max(block_px, 1), 0.0)))
    if block_px and maps.vegetation is not None and cfg.vegetation_max_fraction is not None:
        checks.append(("vegetation", _block_mask(maps.vegetation[sl], valid, block_px, cfg.patch_min_fraction)))
    for reason, flagged in checks:
        mask = flagged & ~taken
        if not mask.any():
            continue
        taken |= mask
        n = int(mask.sum())
        stats: dict[str, Any] = {"valid_frac": 1.0}
        if reason == "exposure":
            stats["dark_frac"] = float((maps.dark[sl] & mask).sum()) / n
            stats["mean_grey"] = float(maps.grey[sl][mask].mean())
            stats["sat_frac"] = float((maps.saturated[sl] & mask).sum()) / n
        elif reason == "vegetation":
            assert maps.vegetation is not None
            stats["veg_frac"] = float((maps.vegetation[sl] & mask).sum()) / n
        out.append((reason, _valid_polygon_px(mask, win), stats))
    return out


#: GDAL block cache (MB) that one row of tiles of a stripe may need (as ``rams.detect.STRIPE_CACHE_MB``).
STRIPE_CACHE_MB = 256
#: Rows of the coverage quality layer per chunk handed to a sink (a few MB of polygons and attributes).
CHUNK_ROWS = 10_000


def quality_workers() -> int:
    """Threads that filter tiles for the quality pass: ``RAMS_QUALITY_WORKERS`` if set, else the usable cores
    (at most 4: the main thread also reads and judges cells)."""
    env = os.environ.get("RAMS_QUALITY_WORKERS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise InputError(f"RAMS_QUALITY_WORKERS={env!r} is not a whole number; set it to 1 or more") from None
        if n < 1:
            raise InputError(f"RAMS_QUALITY_WORKERS={n} must be 1 or more")
        return n
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def assess_dataset(
    src: DatasetReader,
    cfg: QualityConfig,
    aoi: gpd.GeoDataFrame | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    sink: Callable[[gpd.GeoDataFrame], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> QualityResult:
    """Coverage quality of an open orthomosaic, streamed tile by tile (memory bounded by the tile size).

    Args:
        src: open dataset (see :func:`rams.raster.open_raster`).
        cfg: thresholds and reading options.
        aoi: optional area of interest (any CRS). Cells are clipped to it, and AOI ground outside the
            imagery is reported ``not_imaged``. Without an AOI, the raster's extent is the frame.
        progress: called as ``progress(done, total)`` after each tile.
        workers: threads that filter tiles (default :func:`quality_workers`); the result does not depend on it.
        sink: if given, receives the layer in chunks, in layer order (cells in tile order, then the
            ``not_imaged`` parts), and the result holds no layer: memory then stays bounded whatever the mosaic
            size (``rams quality`` appends the chunks to its GeoPackage).
        chunk_rows: a chunk leaves after the tile whose cells bring it to this many rows.

    Returns:
        A :class:`QualityResult` whose layer partitions the frame (AOI or raster extent) into classed cells
        and ``not_imaged`` parts (the concatenated chunks are the same layer, row for row).
    """
    import geopandas as gpd
    import pandas as pd
    from shapely import box, make_valid, union_all
    from shapely.geometry import MultiPolygon, Polygon

    grid: Grid = target_grid(src, cfg.analysis_gsd_m)
    native = gsd_of(src)
    gsd_eff = max(native, grid.gsd_m)
    bands, band_names = quality_bands(src, cfg.read.bands)
    vr = source_value_range(src, bands[0], cfg.read.value_range)
    warnings: list[str] = []
    # exposure is judged on values scaled by the value range: dim (undeclared 10-12 bit) data reads as dark ground
    warnings.extend(reading_notes(src, bands, vr, range_given=cfg.read.value_range is not None))
    grid_box = _to_map(box(0, 0, grid.width, grid.height), grid)
    aoi_geom = None
    if aoi is not None:
        if aoi.crs is None:
            raise AOIError("the AOI layer has no CRS; assign one in QGIS and save again")
        aoi_geom = make_valid(union_all(aoi.to_crs(grid.crs).geometry.values))
        if aoi_geom.is_empty or not aoi_geom.intersects(grid_box):
            raise AOIError(
                "the AOI does not overlap the orthomosaic; check that the AOI and the mosaic cover the same place"
            )
    # Context each side of a tile core: the filters' reach, plus the local blur window and its dilation.
    halo = cfg.blur_filter_px // 2 + 2 + (cfg.blur_block_px or 0)
    tile_px = max(cfg.tile_size_px, 4 * halo + 8)
    overlap_px = 2 * halo + 2
    # down vertical stripes, as rams detect: the block cache then holds a stripe's row of blocks, not the mosaic's
    cols = stripe_cols_for(src, grid.gsd_m, grid, tile_px, overlap_px, STRIPE_CACHE_MB)
    tiles = stripe_order(make_tiles(grid, tile_px, overlap_px, aoi=aoi_geom), cols)
    cell_px = max(8, round(cfg.cell_size_m / grid.gsd_m))
    smallest = cfg.smallest_target_m()
    rows: list[dict[str, Any]] = []
    geoms: list[Any] = []
    gaps: list[Any] = []
    n_cells = 0
    frames: list[gpd.GeoDataFrame] = []
    areas: dict[str, float] = {}
    n_rows = 0
    not_imaged_acc: Any = None  # union of the gaps flushed so far

    def emit(chunk: gpd.GeoDataFrame) -> None:
        nonlocal n_rows
        if chunk.empty:
            return
        n_rows += len(chunk)
        for k, v in chunk["area_m2"].groupby(chunk["quality"]).sum().items():
            areas[str(k)] = areas.get(str(k), 0.0) + float(v)
        if sink is not None:
            sink(chunk)
        else:
            frames.append(chunk)

    def flush() -> None:
        nonlocal rows, geoms, gaps, not_imaged_acc
        emit(_layer_chunk(rows, geoms, aoi_geom, grid.crs))
        rows, geoms = [], []
        if gaps:
            parts = [g for g in gaps if not g.is_empty]
            if not_imaged_acc is not None:
                parts.append(not_imaged_acc)
            not_imaged_acc = union_all(parts) if parts else None
            gaps = []
    log.info(
        "coverage quality: %d tiles (stripes of %d tile columns), cells of %d px (%.2f m) at %.2f cm/px "
        "(native %.2f cm/px)",
        len(tiles), cols, cell_px, cell_px * grid.gsd_m, grid.gsd_m * 100, native * 100,
    )
    def maps_of(data: Any) -> _PixelMaps | None:
        return _pixel_maps(data.image, data.valid, band_names, cfg) if data.valid.any() else None

    workers = workers if workers is not None and workers >= 1 else quality_workers()
    with (
        OrthoReader(src, grid, bands, vr, cfg.read.resampling, cache_cap_mb(cfg.read),
                    row_cols=stripe_span_px(grid, cols, tile_px, overlap_px),
                    skip_damaged=cfg.read.skip_damaged) as reader,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rams-quality") as pool,
    ):
        # Reading stays in this thread (one GDAL handle); the filters of the next tiles run in the pool (SciPy
        # releases the GIL); cells are judged here in tile order, so the layer is the same for any worker count.
        pending: deque[tuple[Any, Any, Future[_PixelMaps | None]]] = deque()
        next_tile = iter(tiles)

        def submit() -> None:
            tile = next(next_tile, None)
            if tile is not None:
                data = reader.read(tile.window)
                pending.append((tile, data, pool.submit(maps_of, data)))

        for _ in range(workers + 1):
            submit()
        n_done = 0
        while pending:
            tile, data, job = pending.popleft()
            submit()
            n_done += 1
            maps = job.result()
            cells = _core_cells(tile.core, tile.window, cell_px)
            if maps is None:
                n_cells += len(cells)
                gaps.extend(_to_map(_cell_box_px(win), grid) for win, _ in cells)
            else:
                for win, sl in cells:
                    n_cells += 1
                    m = _reduce(maps, sl, gsd_eff, cfg)
                    cell_px_box = _cell_box_px(win)
                    if m.n_valid_px == 0:
                        gaps.append(_to_map(cell_px_box, grid))
                        continue
                    if m.valid_fraction >= 1.0:
                        part_px = cell_px_box
                    else:
                        part_px = _valid_polygon_px(data.valid[sl], win)
                        gaps.append(_to_map(cell_px_box.difference(part_px), grid))
                    failed = failed_checks(m, cfg)
                    quality = classify(m, cfg)
                    cell_id = f"{tile.tile_id}_{int(win.row_off)}_{int(win.col_off)}"
                    base = {"tile_id": tile.tile_id, "gsd_m": m.gsd_m, "target_px": m.target_px}
                    if quality == ADEQUATE and (cfg.patch_block_m or cfg.blur_block_px):
                        for reason, patch_px, stats in _patches(maps, sl, win, cfg, grid.gsd_m):
                            part_px = part_px.difference(patch_px)
                            rows.append({**base, "cell_id": f"{cell_id}_{reason}", "quality": f"inadequate:{reason}",
                                         "reasons": reason, **stats})
                            geoms.append(_to_map(patch_px, grid))
                    rows.append(
                        {
                            **base,
                            "cell_id": cell_id,
                            "quality": quality,
                            "reasons": ",".join(failed),
                            "valid_frac": m.valid_fraction,
                            "blur_idx": m.blur_index,
                            "lap_var": m.lap_var_norm,
                            "dark_frac": m.dark_fraction,
                            "sat_frac": m.saturated_fraction,
                            "veg_frac": m.vegetation_fraction,
                            "mean_grey": m.mean_grey,
                        }
                    )
                    geoms.append(_to_map(part_px, grid))
            if progress is not None:
                progress(n_done, len(tiles))
            if len(rows) >= chunk_rows:
                flush()
    flush()
    if reader.damaged:
        lost = union_all([box(c0, r0, c1, r1) for r0, r1, c0, c1 in reader.damaged]).area * grid.gsd_m**2
        note = (f"{lost:.1f} m2 could not be read (damaged blocks, --skip-damaged): classed not_imaged, NOT judged; "
                "copy or export the mosaic again to judge them")
        warnings.append(note)
        log.warning(note)
    # the not-imaged ground: gaps between and inside cells, and AOI ground outside the raster
    gap_parts = []
    if not_imaged_acc is not None:
        gap_parts.append(not_imaged_acc if aoi_geom is None else not_imaged_acc.intersection(aoi_geom))
    if aoi_geom is not None:
        gap_parts.append(aoi_geom.difference(grid_box))
    not_imaged = polygonal(union_all([g for g in gap_parts if not g.is_empty])) if gap_parts else None
    if not_imaged is not None and not not_imaged.is_empty:
        parts = list(not_imaged.geoms) if isinstance(not_imaged, MultiPolygon) else [not_imaged]
        for k, part in enumerate(parts):
            if not isinstance(part, Polygon) or part.area <= 0:
                continue
            rows.append({"cell_id": f"not_imaged_{k}", "tile_id": "", "quality": NOT_IMAGED, "reasons": ""})
            geoms.append(part)
            if len(rows) >= chunk_rows:
                emit(_layer_chunk(rows, geoms, None, grid.crs))
                rows, geoms = [], []
    emit(_layer_chunk(rows, geoms, None, grid.crs))
    layer = None
    if sink is None:
        layer = pd.concat(frames, ignore_index=True) if frames else _layer_chunk([], [], None, grid.crs)
        layer = gpd.GeoDataFrame(layer, geometry="geometry", crs=grid.crs)
    return QualityResult(
        layer=layer,
        native_gsd_m=native,
        analysis_gsd_m=grid.gsd_m,
        smallest_target_m=smallest,
        band_names=band_names,
        tiles=len(tiles),
        cells=n_cells,
        area_m2_by_class=areas,
        rows=n_rows,
        crs=grid.crs,
        warnings=warnings,
        blur_limit=cfg.blur_limit(),
        grey_floor=cfg.grey_floor(),
    )


_NUMERIC = [c for c in COLUMNS if c not in ("cell_id", "tile_id", "quality", "reasons")]


def empty_layer(crs: Any) -> gpd.GeoDataFrame:
    """The ``coverage_quality`` layer's columns with no rows."""
    return _layer_chunk([], [], None, crs)


def _layer_chunk(rows: list[dict[str, Any]], geoms: list[Any], aoi_geom: Any, crs: Any) -> gpd.GeoDataFrame:
    """Rows and grid-CRS polygons -> a piece of the layer: clipped to the AOI, empty pieces dropped, polygonal
    parts only, multi-polygons, ``area_m2``, fixed column order and dtypes (so that chunks append alike)."""
    import geopandas as gpd
    from shapely.geometry import MultiPolygon, Polygon

    if aoi_geom is not None:
        geoms = [g.intersection(aoi_geom) for g in geoms]
    keep = [i for i, g in enumerate(geoms) if not g.is_empty and g.area > 0]
    rows = [rows[i] for i in keep]
    geoms = [polygonal(geoms[i]) for i in keep]
    layer = gpd.GeoDataFrame(rows, columns=COLUMNS[:-1], geometry=geoms, crs=crs)
    layer["area_m2"] = layer.geometry.area
    layer = gpd.GeoDataFrame(layer[[*COLUMNS, "geometry"]], geometry="geometry", crs=crs)
    for col in _NUMERIC:
        layer[col] = layer[col].astype("float64")
    layer["geometry"] = [MultiPolygon([g]) if isinstance(g, Polygon) else g for g in layer.geometry]
    return layer


def polygonal(geom: Any) -> Any:
    """Only the polygonal part of a geometry (intersections can leave lines and points on shared edges)."""
    from shapely.geometry import GeometryCollection, MultiPolygon, Polygon

    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    if isinstance(geom, GeometryCollection):
        polys: list[Polygon] = []
        for g in geom.geoms:
            if isinstance(g, Polygon):
                polys.append(g)
            elif isinstance(g, MultiPolygon):
                polys.extend(g.geoms)
        return MultiPolygon(polys) if polys else Polygon()
    return Polygon()


def assess_ortho(
    path: Path,
    cfg: QualityConfig,
    aoi: gpd.GeoDataFrame | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    sink: Callable[[gpd.GeoDataFrame], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> QualityResult:
    """Open ``path`` (with the checks of :func:`rams.raster.open_raster`) and run :func:`assess_dataset`."""
    with open_raster(path) as src, damaged_reads(path):
        return assess_dataset(src, cfg, aoi=aoi, progress=progress, workers=workers, sink=sink,
                              chunk_rows=chunk_rows)  # fmt: skip


LAYER = "coverage_quality"


def quality_file(
    ortho: Path,
    out: Path,
    cfg: QualityConfig | None = None,
    aoi: Path | None = None,
    aoi_layer: str | None = None,
    add_to: Path | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> QualityResult:
    """``rams quality``: assess ``ortho`` and write the ``coverage_quality`` layer to a new GeoPackage ``out``.

    With ``add_to`` (a result GeoPackage), ``out`` is a copy of it with the layer added, so that one file
    holds the detections and the quality that ``rams reduce`` needs; the input is never modified.
    """
    import datetime as dt
    import shutil

    from rams import __version__
    from rams.config import dump_config
    from rams.errors import OutputError
    from rams.layers import ChunkedLayerWriter, read_layer, write_extras
    from rams.outputs import atomic_path
    from rams.styles import default_styles

    cfg = cfg or QualityConfig()
    if add_to is not None and Path(add_to).resolve() == Path(out).resolve():
        raise OutputError(f"--out {out} is the --add-to input; write to a new file (inputs are never overwritten)")
    aoi_gdf = read_layer(aoi, aoi_layer, what="AOI layer") if aoi is not None else None
    from rams.layers import read_metadata
    from rams.provenance import dataset_bytes, dataset_hash, hashed_in_full, require_same_mosaic

    meta = {}
    if add_to is not None:
        read_layer(add_to, "detections", what="detections layer")  # fail before the long run, not after
        meta = read_metadata(Path(add_to))
    # hashed as the detections' input was (a detect config with full_hash hashed it whole), so that they compare
    full = hashed_in_full(meta["input_hash"]) if meta.get("input_hash") else False
    ortho_hash = dataset_hash(Path(ortho), full=full) if Path(ortho).is_file() else None  # (else: the reader's)
    if add_to is not None:
        require_same_mosaic(meta.get("input_hash"), meta.get("input_path"), ortho_hash, str(ortho),
                            f"--add-to {add_to}")
    # The layer goes to the temporary file chunk by chunk as the cells are judged (memory does not grow with the
    # mosaic); the file appears under ``out`` only when it is complete.
    with atomic_path(Path(out), overwrite=overwrite) as tmp:
        if add_to is not None:
            shutil.copyfile(add_to, tmp)
        writer = ChunkedLayerWriter(tmp, LAYER, new_file=add_to is None)
        res = assess_ortho(ortho, cfg, aoi=aoi_gdf, progress=progress, sink=writer.write, chunk_rows=chunk_rows)
        writer.finish(empty_layer(res.crs))
        st = Path(ortho).stat()
        extras = {
            "quality.time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "quality.rams_version": __version__,
            "quality.ortho": str(ortho),
            "quality.input_hash": ortho_hash or "",
            "quality.input_size_bytes": dataset_bytes(Path(ortho)),
            "quality.ortho_size_bytes": st.st_size,
            "quality.ortho_mtime": dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).isoformat(timespec="seconds"),
            "quality.aoi": f"{aoi}:{aoi_layer or ''}" if aoi is not None else "",
            "quality.config": dump_config(cfg),
            "quality.summary": res.summary(),
        }
        write_extras(tmp, extras, default_styles([LAYER]))
    return res
