"""Orthomosaic ingestion: open, describe and stream-read GeoTIFFs for a model, in bounded memory.

This is one of the two I/O boundaries of rams (with :mod:`rams.export` / :mod:`rams.layers`): only here are
raster paths opened. Everything downstream takes a :class:`Grid`, windows and arrays.

Reading rules (what the open tools in this field get wrong):

* alpha, nodata and internal masks become a *validity mask*, never image content; a mosaic of three or more
  integer bands that declares none of them has its pixels 0 in every band taken as not imaged (the black collar
  an export leaves around the footprint when it writes no mask; :data:`ZERO_COLLAR`), never as imaged ground;
  where such a file's edges are white (the maximum in every band), white pixels are not imaged either
  (:data:`WHITE_COLLAR`, with a warning);
* values are scaled to [0, 1] with a fixed range per dtype (never a per-tile stretch: tiles must agree), or the
  bit depth the file declares (``NBITS=12`` in a uint16 file: 0-4095); ``rams detect`` warns when sampled values
  use under a quarter of the range (undeclared 12-bit data would reach the model nearly black);
* imagery is resampled on read to the model's GSD, so objects have the physical size the model learnt;
* geographic (EPSG:4326) mosaics are warped on read to the local UTM zone, so pixels are square metres;
* strip (untiled) GeoTIFF and BigTIFF are read window by window with a capped GDAL block cache.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.env
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from rams.config import ReadConfig
from rams.crs import MAX_SCALE_ERROR, is_ground_metric, point_scales
from rams.errors import (
    BandError,
    CorruptRasterError,
    GeoreferenceError,
    GSDError,
    InputNotFoundError,
    NotARasterError,
)

log = logging.getLogger(__name__)

#: Default value range mapped to [0, 1] for each dtype. Fixed, so every tile is scaled alike.
DEFAULT_VALUE_RANGE: dict[str, tuple[float, float]] = {
    "uint8": (0.0, 255.0),
    "uint16": (0.0, 65535.0),
    "int16": (-32768.0, 32767.0),
    "float32": (0.0, 1.0),
    "float64": (0.0, 1.0),
}

#: Most block cache a reader takes on its own (an explicit ``read.gdal_cache_mb`` overrides it).
STRIP_CACHE_CAP_MB = 640


#: Colour-interpretation names as rams spells band names in model cards.
_CI_NAMES = {
    ColorInterp.red: "red",
    ColorInterp.green: "green",
    ColorInterp.blue: "blue",
    ColorInterp.gray: "gray",
    ColorInterp.alpha: "alpha",
    ColorInterp.undefined: "undefined",
}


def _ci_name(ci: ColorInterp) -> str:
    return _CI_NAMES.get(ci, ci.name)


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid in a metric CRS: the frame tiles, detections and coverage are computed in.

    ``transform`` maps (col, row) pixel corners to map coordinates; ``gsd_m`` is the pixel size in metres.
    """

    crs: CRS
    transform: Affine
    height: int
    width: int

    @property
    def gsd_m(self) -> float:
        return float(self.transform.a)

    @property
    def bounds_map(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in map units."""
        left, top = self.transform.c, self.transform.f
        return (left, top + self.height * self.transform.e, left + self.width * self.transform.a, top)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a window of this grid."""
        t = self.transform
        left = t.c + window.col_off * t.a
        top = t.f + window.row_off * t.e
        return (left, top + window.height * t.e, left + window.width * t.a, top)

    def window_transform(self, window: Window) -> Affine:
        return self.transform @ Affine.translation(window.col_off, window.row_off)


@dataclass(frozen=True)
class OrthoInfo:
    """Everything rams needs to know about an orthomosaic before reading it."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtype: str
    band_names: tuple[str, ...]
    crs: str
    crs_is_geographic: bool
    crs_is_metric: bool
    """Projected in metres: read on its own grid; otherwise (degrees, feet) through a warp to UTM."""
    transform: tuple[float, ...]
    bounds: tuple[float, float, float, float]
    gsd_m: float
    """The coarser side of a pixel on the ground (:func:`gsd_of`)."""
    mask_kind: str
    nodata: float | None
    alpha_band: int | None
    is_tiled: bool
    block_shape: tuple[int, int]
    overviews: tuple[int, ...]
    compression: str | None
    file_size_bytes: int
    footprint_area_m2: float | None = None
    valid_fraction: float | None = None
    footprint_wkt: str | None = field(default=None, repr=False)
    pixel_sides_m: tuple[float, float] | None = None
    """Ground size of a pixel's x and y sides (:func:`pixel_sides_m`)."""

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["gigapixels"] = self.width * self.height / 1e9
        return d


#: GDAL open options of every handle that reads pixels for analysis: no overviews (see :func:`open_raster`).
NO_OVERVIEWS = {"OVERVIEW_LEVEL": "NONE"}


def open_raster(path: str | os.PathLike[str], num_threads: int | None = None, overviews: bool = False
                ) -> DatasetReader:
    """Open a raster for reading, turning GDAL failures into one-line rams errors.

    Checks that the file exists, that GDAL can read it, that every file it is made of exists (a VRT's sources),
    that it is georeferenced, and that its first and last blocks decode (catches truncated downloads and copies
    cheaply). ``num_threads`` > 1 lets GDAL decode the compressed blocks of one read on that many threads
    (GeoTIFF ``NUM_THREADS``): use it only where nothing else computes meanwhile (measured on 2 cores: 1.6x
    faster reads).

    **Overviews are hidden unless** ``overviews=True`` **(only for quick looks: ``rams info``'s footprint, a
    training source's coarse mask).** GDAL serves a read that shrinks the image from the overview nearest in
    scale, when the file has one: a 0.33 cm mosaic read at 1 cm came from its 3x overview, so the model and the
    quality pass saw pixels made by whatever resampling and compression built the overviews (``gdaladdo``'s
    default is nearest) instead of the mean of the real pixels, and the same mosaic gave other results once
    overviews were added (measured: values differing by up to 0.8 of the range; ``tests/test_raster.py``).
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"orthomosaic not found: {p} (check the path)")
    if p.is_dir():
        raise NotARasterError(f"{p} is a folder, not a raster; give the GeoTIFF file itself")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            opts = {"NUM_THREADS": str(num_threads)} if num_threads and num_threads > 1 else {}
            if not overviews:
                opts.update(NO_OVERVIEWS)
            src = rasterio.open(p, **opts)
    except RasterioIOError as err:
        msg = str(err)
        if "not recognized" in msg.lower() or "not a supported" in msg.lower():
            raise NotARasterError(
                f"{p} is not a raster GDAL can read; give a GeoTIFF orthomosaic"
            ) from err
        raise CorruptRasterError(
            f"{p} cannot be opened ({msg.splitlines()[0]}); the file may be truncated or damaged, re-export it"
        ) from err
    _ensure_gdal_cache()
    try:
        check_member_files(src)
        check_georeference(src)
        _probe_blocks(src)
    except Exception:
        src.close()
        raise
    return src


def member_files(path: str | os.PathLike[str]) -> list[Path]:
    """The local files a dataset is made of besides its own: GDAL's file list (a VRT's sources, an external
    ``.msk`` mask, a ``.aux.xml``) without overviews (``.ovr``: never read for analysis) or ``/vsi`` paths.

    Asked of a handle that shows overviews: the ``OVERVIEW_LEVEL=NONE`` handles of :func:`open_raster` list only
    the dataset's own file."""
    own = Path(path).resolve()
    with rasterio.open(path) as src:
        files = list(src.files or [])
    out: list[Path] = []
    for f in files:
        if str(f).startswith("/vsi") or str(f).lower().endswith((".ovr", ".ovr.aux.xml")):
            continue
        p = Path(f)  # (GDAL gives member paths as it opens them: absolute, or relative to the working folder)
        if p.resolve() != own and p not in out:
            out.append(p)
    return out


def check_member_files(src: DatasetReader) -> None:
    """Refuse a dataset (a VRT of an orthomosaic delivered in blocks) whose source files are not all there:
    GDAL opens it and fails only when a read reaches the missing part, hours into a run."""
    if src.driver != "VRT" and len(src.files or []) <= 1:
        return  # (a plain file: its sidecars, if any, are GDAL's business)
    missing = [p for p in member_files(src.name) if not p.exists()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputNotFoundError(
            f"{src.name} is made of files that are missing: {missing[0]}{more}; restore them, or build the VRT "
            "again from the files you have (gdalbuildvrt)"
        )


def gdal_error_text(err: BaseException) -> str:
    """GDAL's own words for a failed read: rasterio raises "Read failed. See previous exception for details." and
    chains the causes (which band, which block, which decoder); this joins the informative ones, deepest last,
    e.g. "ortho.tif, band 4: IReadBlock failed at X offset 1, Y offset 1 ... ZIPDecode:Decoding error at scanline
    512"."""
    parts: list[str] = []
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).splitlines()[0].strip() if str(e).strip() else ""
        if text and "see previous exception" not in text.lower() and not any(text in p for p in parts):
            parts.append(text)
        e = e.__cause__ or e.__context__
    return "; ".join(parts) or type(err).__name__


@contextmanager
def damaged_reads(name: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a GDAL read failure inside the block (a block of ``name`` that does not decode: a bad copy, a
    truncated export) into the one-line :class:`CorruptRasterError` of a damaged file."""
    try:
        yield
    except RasterioIOError as err:
        raise CorruptRasterError(
            f"{name}: GDAL cannot read part of it ({gdal_error_text(err)}); the file is damaged or truncated: copy or "
            "export it again"
        ) from err


def _no_geotransform(t: Affine) -> bool:
    """No pixel-to-map mapping: GDAL's default identity, or the all-zero one that ``OVERVIEW_LEVEL=NONE``
    handles report for such files."""
    return t == Affine.identity() or t.determinant == 0


def check_georeference(src: DatasetReader) -> None:
    """Raise GeoreferenceError unless the dataset has a CRS and a real geotransform."""
    name = src.name
    if _no_geotransform(src.transform) and src.gcps[0]:
        raise GeoreferenceError(
            f"{name} is georeferenced by {len(src.gcps[0])} ground control points only, not by a map grid; warp "
            f"it onto one first, e.g. gdalwarp -r bilinear -co TILED=YES {Path(name).name} warped.tif"
        )
    if src.crs is None:
        raise GeoreferenceError(
            f"{name} has no coordinate reference system; export the orthomosaic as a GeoTIFF with its CRS "
            "(e.g. the UTM zone) or assign one with gdal_edit.py -a_srs"
        )
    if not (src.crs.is_projected or src.crs.is_geographic):
        crs_name = ProjCRS.from_wkt(src.crs.to_wkt()).name if src.crs.to_wkt() else "unnamed"
        raise GeoreferenceError(
            f"{name} is in a local coordinate system ('{crs_name}') that is not tied to the earth: detections could "
            "not be placed on a map or found in the field; export the orthomosaic georeferenced (GNSS or ground "
            "control points) in a projected CRS such as its UTM zone"
        )
    if _no_geotransform(src.transform):
        raise GeoreferenceError(
            f"{name} has no geotransform (pixel-to-map mapping); export a georeferenced GeoTIFF"
        )


def _probe_blocks(src: DatasetReader) -> None:
    """Decode the first and last block: truncated files fail here instead of hours into a run."""
    bh, bw = src.block_shapes[0]
    last_row = max(0, src.height - min(bh, src.height))
    last_col = max(0, src.width - min(bw, src.width))
    try:
        for row, col in ((0, 0), (last_row, last_col)):
            src.read(1, window=Window(col, row, min(bw, src.width), min(bh, src.height)))
    except RasterioIOError as err:
        raise CorruptRasterError(
            f"{src.name} is truncated or corrupt (GDAL: {gdal_error_text(err)}); copy or export it again"
        ) from err


def gsd_of(src: DatasetReader) -> float:
    """Ground sample distance in metres, also for geographic CRSs: the *coarser* of the pixel's two sides.

    Orthomosaic pixels are square; where they are not (0.6 x 1.4 cm), the coarser side is what the imagery
    resolves: the mean (1.0 cm) would pass a 1 cm model's GSD check and let ``rams quality`` judge 6 cm items
    resolvable while they span 4 px along the other axis. See :func:`pixel_sides_m`."""
    return max(pixel_sides_m(src))


def pixel_sides_m(src: DatasetReader) -> tuple[float, float]:
    """The ground size in metres of a pixel's x and y sides (geographic CRSs by geodesic distance at the centre;
    projected ones corrected for scale where map units are not ground units, e.g. Web Mercator).

    A VRT counts at its coarsest source where that is coarser than its grid (a VRT over flights of 0.8 and 1.2 cm
    built at 1 cm: the 1.2 cm ground is only resampled onto the finer grid, it resolves no more)."""
    sides = _grid_sides_m(src)
    if src.driver == "VRT":
        coarsest = _vrt_source_sides_m(src.name)
        if coarsest is not None and max(coarsest) > max(sides) * 1.02:
            if src.name not in _vrt_warned:
                _vrt_warned.add(src.name)
                log.warning("%s: some of its source files are coarser (%.2f x %.2f cm pixels) than its grid (%.2f x "
                            "%.2f cm): the mosaic is judged at their resolution", src.name, coarsest[0] * 100,
                            coarsest[1] * 100, sides[0] * 100, sides[1] * 100)  # fmt: skip
            sides = (max(sides[0], coarsest[0]), max(sides[1], coarsest[1]))
    return sides


_vrt_sides_cache: dict[tuple[str, int], tuple[float, float] | None] = {}
_vrt_warned: set[str] = set()


def _vrt_source_sides_m(name: str) -> tuple[float, float] | None:
    """The coarsest pixel sides among a VRT's source rasters (None if none opens)."""
    key = (str(Path(name).resolve()), _mtime_ns(name))
    if key not in _vrt_sides_cache:
        worst: tuple[float, float] | None = None
        for p in member_files(name):
            if p.name.lower().endswith((".aux.xml", ".msk")) or not p.exists():
                continue
            try:
                with rasterio.open(p) as m:
                    if m.crs is None:
                        continue
                    sx, sy = _grid_sides_m(m)
            except (RasterioIOError, ValueError):
                continue
            worst = (sx, sy) if worst is None else (max(worst[0], sx), max(worst[1], sy))
        _vrt_sides_cache[key] = worst
    return _vrt_sides_cache[key]


def _grid_sides_m(src: DatasetReader) -> tuple[float, float]:
    """:func:`pixel_sides_m` of the dataset's own grid."""
    t = src.transform
    if src.crs is not None and src.crs.is_geographic:
        left, bottom, right, top = map_envelope(src)
        lon = (left + right) / 2
        lat = (bottom + top) / 2
        geod = Geod(ellps="WGS84")
        _, _, dx = geod.inv(lon, lat, lon + abs(t.a), lat)
        _, _, dy = geod.inv(lon, lat, lon, lat + abs(t.e))
        return float(dx), float(dy)
    unit = metres_per_unit(src.crs) if src.crs is not None else 1.0
    sx, sy = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    if src.crs is not None and src.crs.is_projected:
        h, k = point_scales(src.crs, map_envelope(src))
        if max(abs(h - 1), abs(k - 1)) > MAX_SCALE_ERROR:  # map units are not ground units here (Web Mercator)
            return float(sx / k * unit), float(sy / h * unit)
    return float(sx * unit), float(sy * unit)


def metres_per_unit(crs: CRS) -> float:
    """Metres per linear unit of a projected CRS (1 for metres, 0.3048006 for US survey feet)."""
    try:
        return float(ProjCRS.from_wkt(crs.to_wkt()).axis_info[0].unit_conversion_factor)
    except Exception:  # pragma: no cover - exotic CRS without axis info
        return 1.0


#: Mask kind of a mosaic with no alpha, nodata or internal mask, of three or more integer bands: its pixels 0 in
#: every band are not imaged. Orthomosaic exports without a mask fill the ground they did not image with black;
#: counting that collar as imaged would claim it was analysed. Real ground is never exactly 0 in every band (a
#: black shadow that is, is excluded: conservative). Single-band and float mosaics (thermal: 0 can be a reading)
#: are left as declared; to keep zeros as data, give the file an alpha band or a nodata value.
ZERO_COLLAR = "none declared: 0 in every band = not imaged"

#: Mask kind of such a mosaic (no mask declared, three or more integer bands) whose edges are white: a window at a
#: corner or the middle of a side is the maximum value in every band, pixel for pixel (:func:`white_edges`). Some
#: exports fill the ground they did not image with white instead of black; counted as imaged, that collar would be
#: claimed analysed ("nothing found" where nothing was seen). Then pixels 0 *or* the maximum in every band are not
#: imaged, on every read path. The cost is on the safe side: saturated pixels inside the footprint (glare on
#: water, metal, white plastic) show nothing in any band, are read as not imaged and reach the model as 0.
#: :func:`white_collar_note` says so in ``rams detect`` / ``rams quality``; declaring a mask (alpha, nodata or an
#: internal mask) overrides the rule.
WHITE_COLLAR = "none declared: 0 or white (the maximum) in every band = not imaged (white edges found)"

#: Side (grid pixels) of the pieces a window that GDAL cannot read is read again in, with ``skip_damaged``: a
#: damaged 512 px source block then costs the pieces that touch it, not the whole tile.
DAMAGED_PIECE_PX = 128

#: Mask kinds where the pixel values themselves say "not imaged" (no mask declared).
COLLAR_KINDS = (ZERO_COLLAR, WHITE_COLLAR)


def _mask_kind(src: DatasetReader) -> tuple[str, int | None]:
    alpha = _declared_alpha(src)
    if alpha is not None:
        return "alpha", alpha
    if src.nodata is not None:
        return "nodata", None
    from rasterio.enums import MaskFlags

    flags = src.mask_flag_enums[0]
    if MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags:
        return "internal mask", None
    if (band := undeclared_alpha_band(src)) is not None:
        return "alpha", band
    if src.count >= 3 and np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
        return (WHITE_COLLAR if white_edges(src) else ZERO_COLLAR), None
    return "none", None


def white_value(src: DatasetReader) -> int:
    """The white of an integer mosaic: ``2**NBITS - 1`` where the file declares a bit depth, else the type's
    maximum (255 for uint8)."""
    n = nbits_of(src, 1)
    return int(2**n - 1) if n is not None else int(np.iinfo(np.dtype(src.dtypes[0])).max)


def _spread_windows(src: DatasetReader, n: int = 4, size: int = 256) -> list[Window]:
    """``n`` x ``n`` windows of at most ``size`` px spread over the file: bounded reading whatever its size or tiling
    (the samples of :func:`alpha_opaque`, :func:`undeclared_alpha_band` and :func:`value_range_check`)."""
    h, w = min(size, src.height), min(size, src.width)
    return [Window(int((src.width - w) * (j + 0.5) / n), int((src.height - h) * (i + 0.5) / n), w, h)
            for i in range(n) for j in range(n)]


def _edge_windows(src: DatasetReader, size: int = 16) -> list[Window]:
    """``size`` px windows at the four corners and the middles of the four sides, where a collar shows."""
    h, w = min(size, src.height), min(size, src.width)
    return [Window(int((src.width - w) * fc), int((src.height - h) * fr), w, h)
            for fr in (0.0, 0.5, 1.0) for fc in (0.0, 0.5, 1.0) if not fr == fc == 0.5]


def _read_sample(src: DatasetReader, indexes: Any, win: Window) -> np.ndarray | None:
    """``src.read(indexes, window=win)`` for a planning-time sample; None where GDAL cannot read the window (a
    damaged block: the run reports it, or skips it with ``--skip-damaged``, where it reads it)."""
    try:
        return np.asarray(src.read(indexes, window=win))
    except RasterioIOError:
        return None


def white_edges(src: DatasetReader, size: int = 16) -> bool:
    """True if a window of ``size`` px at a corner or the middle of a side of the file is white (the maximum,
    :func:`white_value`) in every band, pixel for pixel: the mark of a white collar. Reads 8 small windows;
    the answer is cached per file."""
    key = (src.name, src.count, src.width, src.height, _mtime_ns(src.name))
    if key not in _white_cache:
        near = white_value(src) - _jpeg_tolerance(src)
        samples = (_read_sample(src, None, win) for win in _edge_windows(src, size))
        _white_cache[key] = any(d is not None and bool((d >= near).all()) for d in samples)
    return _white_cache[key]


_white_cache: dict[tuple[Any, ...], bool] = {}


def reading_notes(src: DatasetReader, bands: Sequence[int], value_range: tuple[float, float],
                  range_given: bool) -> list[str]:
    """The warnings every command that reads a mosaic for analysis gives (``rams detect``, ``rams quality``): dim
    values (unless a value range was given or the file declares its bit depth; values outside the range are refused:
    :func:`value_range_check`), an alpha band read without its
    label, a white collar read as not imaged. Each is also logged."""
    notes = [
        value_range_check(src, bands, value_range, range_given),
        undeclared_alpha_note(src),
        white_collar_note(src),
        collar_beyond_mask_note(src),
    ]
    for note in notes:
        if note:
            log.warning(note)
    return [n for n in notes if n]


def white_collar_note(src: DatasetReader) -> str | None:
    """A one-line warning when :func:`white_edges` made white pixels read as not imaged, else None."""
    if _mask_kind(src)[0] != WHITE_COLLAR:
        return None
    white = white_value(src)
    nd = " ".join([str(white)] * src.count)
    return (f"no mask is declared and the mosaic's edges are white ({white} in every band): pixels {white} in every "
            f"band are read as not imaged, like a black collar (saturated glare inside the field too); declare the "
            f"mask to confirm (gdalwarp -srcnodata \"{nd}\" -dstalpha IN.tif OUT.tif), or give the file an alpha "
            f"band or nodata value to keep white as image data")


def undeclared_alpha_band(src: DatasetReader) -> int | None:
    """The last band, if it is an alpha mask that lost its label: no alpha, nodata or mask is declared, the file
    has a labelled band (red, green, blue or grey) and an extra last band of colour interpretation ``undefined``
    whose values (in 16 windows spread over the file) are only 0 and opaque (255 for 8 bits, the type's maximum
    otherwise), opaque present. Such a band (left by tools that drop colour interpretations, e.g. a band stack
    or a raster calculator) marks the imaged area; read as image data it would be ignored, and a white or noisy
    collar would count as imaged ground. Read as the mask, its 0 is "not imaged" (the conservative side)."""
    if src.count < 2 or not np.issubdtype(np.dtype(src.dtypes[-1]), np.integer):
        return None
    ci = list(src.colorinterp)
    labelled = {ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.gray}
    if ci[-1] != ColorInterp.undefined or not any(c in labelled for c in ci[:-1]):
        return None
    key = (src.name, src.count, src.width, src.height, _mtime_ns(src.name))
    if key not in _undeclared_cache:
        values: set[int] = set()
        for win in _spread_windows(src):
            d = _read_sample(src, src.count, win)
            if d is not None:
                values.update(np.unique(d).tolist())
        opaque = 255 if np.dtype(src.dtypes[-1]) == np.uint8 else int(np.iinfo(np.dtype(src.dtypes[-1])).max)
        _undeclared_cache[key] = bool(opaque in values and values <= {0, opaque})
    return src.count if _undeclared_cache[key] else None


_undeclared_cache: dict[tuple[Any, ...], bool] = {}


def undeclared_alpha_note(src: DatasetReader) -> str | None:
    """A one-line warning when :func:`undeclared_alpha_band` reads an unlabelled band as the mask, else None."""
    band = undeclared_alpha_band(src) if _declared_alpha(src) is None else None
    if band is None:
        return None
    return (f"band {band} is not declared as alpha but holds only 0 and opaque values: it is read as the mask (0 = "
            f"not imaged); declare it to confirm (gdal_edit.py -colorinterp_{band} alpha FILE), or, if it is image "
            f"data, label it (gdal_edit.py -colorinterp_{band} gray FILE)")


def _declared_alpha(src: DatasetReader) -> int | None:
    alpha = None
    for i, ci in enumerate(src.colorinterp, start=1):
        if ci == ColorInterp.alpha:
            alpha = i
    return alpha


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _unused_alpha(src: DatasetReader) -> tuple[int, float] | None:
    """(1-based index, opaque value) of an alpha band that GDAL does not turn into the dataset mask, else None.

    GDAL uses an alpha band as the mask of 2- and 4-band files only (grey + alpha, RGBA); in a file of 5 or more
    bands (RGB + NIR + alpha, multispectral + alpha) ``dataset_mask()`` says every pixel is valid, and the unimaged
    collar would be analysed as ground. Such an alpha band is read explicitly (:func:`_read_valid`); its opaque
    value is :func:`alpha_opaque`."""
    from rasterio.enums import MaskFlags

    kind, alpha = _mask_kind(src)
    if kind != "alpha" or alpha is None or MaskFlags.alpha in src.mask_flag_enums[0]:
        return None
    return alpha, alpha_opaque(src, alpha)


def alpha_opaque(src: DatasetReader, band: int) -> float:
    """The value that means "fully imaged" in alpha band ``band``: 255 for 8-bit, 1 for float, the type's maximum
    for wider integers unless the band never exceeds 255 (16 sampled windows): some writers put 0/255 into a
    uint16 alpha, and taken as 255/65535 that would make the whole mosaic "not imaged" on resampled reads while the
    1:1 read (alpha > 0) and the footprint call it imaged."""
    dtype = np.dtype(src.dtypes[band - 1])
    if dtype == np.uint8:
        return 255.0
    if not np.issubdtype(dtype, np.integer):
        return 1.0
    key = (src.name, band, src.width, src.height, _mtime_ns(src.name))
    if key not in _opaque_cache:
        top = 0
        for win in _spread_windows(src):
            d = _read_sample(src, band, win)
            if d is not None:
                top = max(top, int(d.max()))
        _opaque_cache[key] = 255.0 if 0 < top <= 255 else float(np.iinfo(dtype).max)
    return _opaque_cache[key]


_opaque_cache: dict[tuple[Any, ...], float] = {}


def _read_valid(ds: Any, alpha: tuple[int, float] | None, all_valid: bool, **read_kw: Any) -> np.ndarray:
    """Validity of a read (``window``, ``out_shape``, ``resampling`` as for ``read``): from the dataset mask, or from
    the alpha band GDAL ignores, ``alpha`` = (band, opaque value) (see :func:`_unused_alpha`). ``all_valid``: only
    pixels whose whole footprint is valid (the mask averages to opaque); else pixels with any valid part."""
    if alpha is not None:
        a = ds.read(alpha[0], **read_kw)
        return np.asarray(a >= alpha[1] if all_valid else a > 0)
    m = ds.dataset_mask(**read_kw)
    return np.asarray(m == 255 if all_valid else m > 0)


def _resampled_valid(ds: Any, alpha: tuple[int, float] | None, bounds: tuple[float, float, float, float],
                     shape: tuple[int, int]) -> np.ndarray:
    """Validity of a resampled read: ``bounds`` = (col0, row0, col1, row1) in source pixels (fractional, may
    reach past the source) onto ``shape`` output pixels. True where every source pixel under the output pixel
    (partly covered ones included) is valid; source pixels outside the file are not.

    ``alpha`` = (band, opaque value) of the alpha band, if the file has one: it is read resampled as a plain band
    (``average >= opaque``), which honours the handle's ``OVERVIEW_LEVEL=NONE``. Otherwise (nodata, ``.msk``,
    internal masks) the mask is read at full resolution and judged here: GDAL serves a shrinking read of a *mask
    band* from the mask's overviews even on an ``OVERVIEW_LEVEL=NONE`` handle (GDAL 3.10, measured: a 0.33 cm
    mosaic with nearest overviews, read at 1 cm, lost 125 of 199 000 valid pixels and gained others), so the
    footprint would follow whatever built the overviews."""
    col0, row0, col1, row1 = bounds
    h, w = shape
    if alpha is not None:
        c0, r0 = max(0.0, col0), max(0.0, row0)
        c1, r1 = min(float(ds.width), col1), min(float(ds.height), row1)
        win = Window(c0, r0, max(c1 - c0, 1e-6), max(r1 - r0, 1e-6))
        valid = _read_valid(ds, alpha, True, window=win, out_shape=shape, resampling=Resampling.average)
        # output pixels that reach past the file are not wholly imaged (GDAL stretched the clipped window over them)
        beyond_r = (row0 + (row1 - row0) / h * np.arange(1, h + 1) > ds.height + 1e-9) | (
            row0 + (row1 - row0) / h * np.arange(h) < -1e-9)
        beyond_c = (col0 + (col1 - col0) / w * np.arange(1, w + 1) > ds.width + 1e-9) | (
            col0 + (col1 - col0) / w * np.arange(w) < -1e-9)
        valid[beyond_r] = False
        valid[:, beyond_c] = False
        return valid
    lo_c, lo_r = math.floor(col0 + 1e-9), math.floor(row0 + 1e-9)
    hi_c, hi_r = max(lo_c + 1, math.ceil(col1 - 1e-9)), max(lo_r + 1, math.ceil(row1 - 1e-9))
    rc0, rr0 = max(0, lo_c), max(0, lo_r)
    rc1, rr1 = min(ds.width, hi_c), min(ds.height, hi_r)
    inside = (rc0, rr0, rc1, rr1) == (lo_c, lo_r, hi_c, hi_r)
    m = ds.dataset_mask(window=Window(rc0, rr0, rc1 - rc0, rr1 - rr0)) if rc1 > rc0 and rr1 > rr0 else None
    if inside and m is not None and bool((m == 255).all()):
        return np.ones(shape, bool)  # (most tiles: wholly imaged)
    invalid = np.ones((hi_r - lo_r, hi_c - lo_c), bool)
    if m is not None:
        invalid[rr0 - lo_r : rr1 - lo_r, rc0 - lo_c : rc1 - lo_c] = m != 255

    def spans(origin: float, end: float, n: int, lo: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        edges = origin + (end - origin) / n * np.arange(n + 1)
        start = np.clip(np.floor(edges[:-1] + 1e-9).astype(np.int64) - lo, 0, size - 1)
        stop = np.clip(np.ceil(edges[1:] - 1e-9).astype(np.int64) - lo, 1, size)
        return start, np.maximum(stop, start + 1)

    rs, re = spans(row0, row1, h, lo_r, invalid.shape[0])
    cs, ce = spans(col0, col1, w, lo_c, invalid.shape[1])
    # invalid pixels per output row's source rows (cumulative sums down the columns), then per output pixel's
    # source columns along those rows: none means wholly valid
    down = np.zeros((invalid.shape[0] + 1, invalid.shape[1]), np.int32)
    np.cumsum(invalid, axis=0, dtype=np.int32, out=down[1:])
    per_row = (down[re] - down[rs]) > 0
    across = np.zeros((h, invalid.shape[1] + 1), np.int32)
    np.cumsum(per_row, axis=1, dtype=np.int32, out=across[:, 1:])
    return np.asarray(across[:, ce] == across[:, cs])


def _not_all_zero(data: np.ndarray) -> np.ndarray:
    """Pixels of ``(bands, rows, cols)`` data that are not 0 in every band."""
    return np.asarray((data != 0).any(axis=0))


#: Tolerance (on 0-255) of the collar rules in JPEG-compressed files: JPEG (and its 2 x 2 chroma subsampling) rings
#: at the footprint's edge, leaving collar pixels of 1-30 next to the imagery. Measured: a q90 JPEG-YCbCr copy of a
#: 20 x 20 m scene counted 1.7 m2 of black collar as imaged (0.4 % of the extent); on real grass texture cut by a
#: collar, q75 and q90, black and white: ~2 000 ringing pixels, of which 0-64 stay "imaged" at 16 (all within 3 px of
#: the edge; 110-591 at 8), while every truly imaged pixel stays imaged. Ground that dark (or that bright, for a
#: white collar) in every band shows nothing, so reading it as not imaged is the safe side.
JPEG_COLLAR_TOLERANCE = 16


#: How pixel values say "not imaged" in a file: (black: 0 in every band, white value or None, tolerance).
CollarSpec = tuple[bool, int | None, int]


#: Compressions that may change pixel values (JPEG, WebP, JPEG 2000, LERC with a max error): each rings or drifts at
#: the footprint's edge, so the collar rules allow :data:`JPEG_COLLAR_TOLERANCE` there.
LOSSY_COMPRESSIONS = ("jpeg", "webp", "jpeg2000", "jxl", "lerc")


def _is_jpeg(src: DatasetReader) -> bool:
    """Whether the file's compression may change pixel values (:data:`LOSSY_COMPRESSIONS`)."""
    comp = src.compression.value.lower() if src.compression is not None else ""
    return any(comp.startswith(c) for c in LOSSY_COMPRESSIONS)


def _jpeg_tolerance(src: DatasetReader) -> int:
    return round(JPEG_COLLAR_TOLERANCE * white_value(src) / 255) if _is_jpeg(src) else 0


def _collar_spec(src: DatasetReader) -> CollarSpec | None:
    """The value rule of a file's validity, where its values say "not imaged" (None where they do not):
    :data:`ZERO_COLLAR` black, :data:`WHITE_COLLAR` black and white, each with the JPEG tolerance in JPEG files;
    and a lossy-compressed file of three or more bands whose declared nodata is 0 (or white): GDAL masks only the
    exact value, which JPEG ringing next to the imagery does not keep (measured: 1.7 m2 of a 20 x 20 m scene's
    collar read as imaged), so the tolerance applies around it too."""
    kind = _mask_kind(src)[0]
    if kind == ZERO_COLLAR:
        return True, None, _jpeg_tolerance(src)
    if kind == WHITE_COLLAR:
        return True, white_value(src), _jpeg_tolerance(src)
    if kind == "nodata" and _is_jpeg(src) and src.nodata is not None and src.count >= 3:  # (not thermal: there
        # a low value is a reading)
        if src.nodata == 0:
            return True, None, _jpeg_tolerance(src)
        if src.nodata == white_value(src):
            return False, white_value(src), _jpeg_tolerance(src)
    if kind in ("alpha", "nodata", "internal mask"):
        return collar_beyond_mask(src)
    return None


def collar_beyond_mask(src: DatasetReader, size: int = 16) -> CollarSpec | None:
    """A black (or white) collar that the file's declared mask calls imaged: a ``size`` px window at a corner or
    the middle of a side that is 0 (or white) in every image band while the mask says every pixel there is valid.

    Some conversions write an alpha band that is opaque everywhere (``gdalwarp -dstalpha`` of an RGB mosaic
    without ``-srcnodata``; an image editor's export): an RGBA scene with a 31 % black collar and such an alpha read
    as 100 % imaged, the collar analysed as ground where nothing could be found. Where this is seen, pixels 0 (or
    white) in every band are not imaged as in an unmasked file (:data:`ZERO_COLLAR`), with a warning
    (:func:`collar_beyond_mask_note`). Integer files of three or more image bands only; the answer is cached."""
    key = (src.name, src.count, src.width, src.height, _mtime_ns(src.name))
    if key in _beyond_cache:
        return _beyond_cache[key]
    found: CollarSpec | None = None
    bands = list(image_bands_of(src))
    if len(bands) >= 3 and np.issubdtype(np.dtype(src.dtypes[bands[0] - 1]), np.integer):
        tol, white = _jpeg_tolerance(src), white_value(src)
        alpha = _unused_alpha(src)
        for win in _edge_windows(src, size):
            data = _read_sample(src, bands, win)
            if data is None:
                continue
            try:
                if not _read_valid(src, alpha, True, window=win).all():
                    continue  # the mask already marks (part of) this window not imaged
            except RasterioIOError:
                continue
            if bool((data <= tol).all()):
                found = (True, None, tol)
            elif bool((data >= white - tol).all()):
                found = (False, white, tol)
            if found is not None:
                break
    _beyond_cache[key] = found
    return found


_beyond_cache: dict[tuple[Any, ...], CollarSpec | None] = {}


def _beyond_words(src: DatasetReader, kind: str) -> str:
    spec = collar_beyond_mask(src) if kind in ("alpha", "nodata", "internal mask") else None
    if spec is None:
        return ""
    return "; but its edges are black in every band: 0 in every band = not imaged too" if spec[0] else (
        "; but its edges are white in every band: white in every band = not imaged too")


def collar_beyond_mask_note(src: DatasetReader) -> str | None:
    """A one-line warning when :func:`collar_beyond_mask` found a collar the declared mask misses, else None."""
    kind = _mask_kind(src)[0]
    spec = collar_beyond_mask(src) if kind in ("alpha", "nodata", "internal mask") else None
    if spec is None:
        return None
    colour, value = ("black", "0") if spec[0] else ("white", str(spec[1]))
    nd = " ".join([value] * len(image_bands_of(src)))
    return (f"the file's {kind} says its edges are imaged, but they are {colour} in every band: pixels {colour} in "
            f"every band are read as not imaged too (also any inside the field); fix the mask to be sure, e.g. "
            f"gdalwarp -srcnodata \"{nd}\" -dstalpha with the image bands only")


def _not_collar(data: np.ndarray, collar: CollarSpec | None) -> np.ndarray:
    """Pixels of ``(bands, rows, cols)`` data that are not collar by ``collar`` (:func:`_collar_spec`; None: all of
    them): not 0 in every band (black rule) and not white in every band (white rule), or, with a tolerance (JPEG),
    not within it of 0 / of white in every band. Values are compared as read (an average-resampled pixel is 0 or
    white only if every source pixel under it is)."""
    if collar is None:
        return np.ones(data.shape[1:], bool)
    black, white, tol = collar
    ok = np.ones(data.shape[1:], bool)
    if black:
        ok &= _not_all_zero(data) if tol == 0 else np.asarray((data > tol).any(axis=0))
    if white is not None:
        ok &= (data != white).any(axis=0) if tol == 0 else (data < white - tol).any(axis=0)
    return ok


def describe(src: DatasetReader, footprint: bool = True, footprint_max_px: int = 1024,
             progress: Callable[[int, int], None] | None = None) -> OrthoInfo:
    """Describe an open orthomosaic. ``footprint`` reads a decimated validity mask (cheap with overviews; see
    :func:`valid_footprint` for ``progress``)."""
    kind, alpha = _mask_kind(src)
    bh, bw = src.block_shapes[0]
    is_tiled = bool(src.profile.get("tiled", False)) or (bw < src.width and bh < src.height)
    comp = src.compression.value if src.compression is not None else None
    try:
        size = os.path.getsize(src.name)
    except OSError:
        size = 0
    info: dict[str, Any] = dict(
        path=str(src.name),
        driver=src.driver,
        width=src.width,
        height=src.height,
        count=src.count,
        dtype=src.dtypes[0],
        band_names=tuple(_ci_name(ci) for ci in src.colorinterp),
        crs=src.crs.to_string() if src.crs else "",
        crs_is_geographic=bool(src.crs and src.crs.is_geographic),
        crs_is_metric=bool(src.crs and keeps_own_grid(src)),
        transform=tuple(src.transform)[:6],
        bounds=map_envelope(src),
        gsd_m=gsd_of(src),
        pixel_sides_m=pixel_sides_m(src),
        mask_kind=(f"alpha (band {alpha}, not declared: read as the mask, only 0 and opaque values)"
                   if kind == "alpha" and alpha is not None and _declared_alpha(src) is None else kind)
        + _beyond_words(src, kind),
        nodata=src.nodata,
        alpha_band=alpha,
        is_tiled=is_tiled,
        block_shape=(bh, bw),
        overviews=tuple(src.overviews(1)),
        compression=comp,
        file_size_bytes=size,
    )
    if footprint:
        geom, frac = valid_footprint(src, max_px=footprint_max_px, progress=progress)
        info["valid_fraction"] = frac
        if geom is not None:
            info["footprint_wkt"] = geom.wkt
            info["footprint_area_m2"] = _area_m2(geom, src.crs)
        else:
            info["footprint_area_m2"] = 0.0
    return OrthoInfo(**info)


def _area_m2(geom: Any, crs: CRS) -> float:
    if crs.is_geographic:
        geod = Geod(ellps="WGS84")
        return float(abs(geod.geometry_area_perimeter(geom)[0]))
    h, k = point_scales(crs, tuple(geom.bounds))
    scale = h * k if max(abs(h - 1), abs(k - 1)) > MAX_SCALE_ERROR else 1.0  # map area / ground area
    return float(geom.area) * metres_per_unit(crs) ** 2 / scale


#: Mosaics larger than this (pixels) without overviews have their footprint read in strips, with progress.
FOOTPRINT_STRIP_PX = 256_000_000


def valid_footprint(src: DatasetReader, max_px: int = 1024,
                    progress: Callable[[int, int], None] | None = None) -> tuple[Any, float]:
    """Valid-data footprint (shapely geometry in the raster CRS) from a decimated mask, and valid fraction.

    With overviews GDAL reads them (fast). Without, every block is decoded (about a minute per 4 Gpx of RGBA deflate
    on our 2-core VM), so a large mosaic is read in 32 strips and ``progress(done, total)`` is called after each."""
    from rasterio import features
    from shapely.geometry import shape
    from shapely.ops import unary_union

    scale = max(1.0, max(src.width, src.height) / max_px)
    h, w = max(1, round(src.height / scale)), max(1, round(src.width / scale))
    collar = _mask_kind(src)[0] in COLLAR_KINDS
    spec, alpha = _collar_spec(src), _unused_alpha(src)
    is_float = np.issubdtype(np.dtype(src.dtypes[0]), np.floating)
    img = list(image_bands_of(src)) or list(range(1, src.count + 1))  # (collar rules look at the image bands)

    def decimated(win: Window | None, rows: int) -> np.ndarray:
        m = None if collar else _read_valid(src, alpha, False, out_shape=(rows, w), window=win,
                                             resampling=Resampling.average)  # fmt: skip
        if spec is not None:  # decimated by averaging: a cell is 0 only if all under it is 0
            data = src.read(img, out_shape=(len(img), rows, w), window=win, resampling=Resampling.average)
            m = _not_collar(data, spec) if m is None else m & _not_collar(data, spec)
        if is_float:  # NaN (or inf) pixels are not imaged, as the reader has it, declared as nodata or not
            data = src.read(img, out_shape=(len(img), rows, w), window=win, resampling=Resampling.average)
            finite = np.isfinite(data).all(axis=0)
            m = finite if m is None else m & finite
        assert m is not None
        return m

    if src.width * src.height > FOOTPRINT_STRIP_PX and not src.overviews(1) and h >= 32:
        cuts = [round(i * h / 32) for i in range(33)]
        parts = []
        for k in range(32):
            r0, r1 = round(cuts[k] * src.height / h), round(cuts[k + 1] * src.height / h)
            parts.append(decimated(Window(0, r0, src.width, r1 - r0), cuts[k + 1] - cuts[k]))
            if progress is not None:
                progress(k + 1, 32)
        valid = np.concatenate(parts).astype(np.uint8)
    else:
        valid = decimated(None, h).astype(np.uint8)
    t = src.transform @ Affine.scale(src.width / w, src.height / h)
    polys = [shape(g) for g, v in features.shapes(valid, mask=valid.astype(bool), transform=t) if v == 1]
    frac = float(valid.mean())
    if not polys:
        return None, 0.0
    return unary_union(polys), frac


def coarse_valid_mask(src: DatasetReader, grid: Grid, max_px: int = 2048) -> tuple[np.ndarray, Affine]:
    """A coarse validity mask in the grid's CRS (True where any source pixel under a cell is valid).

    Used to skip tiles that hold no imagery. Decimated reads use overviews when the file has them.
    """
    scale = max(1.0, max(grid.width, grid.height) / max_px)
    h, w = max(1, math.ceil(grid.height / scale)), max(1, math.ceil(grid.width / scale))
    t = grid.transform @ Affine.scale(grid.width / w, grid.height / h)
    zero = _mask_kind(src)[0] in COLLAR_KINDS
    spec = _collar_spec(src)
    img = list(image_bands_of(src)) or list(range(1, src.count + 1))
    if needs_warp(src):
        with WarpedVRT(
            src, crs=grid.crs, transform=t, width=w, height=h, resampling=Resampling.nearest,
            add_alpha=_mask_kind(src)[0] in ("none", *COLLAR_KINDS),
        ) as vrt:
            m = _read_valid(vrt, _unused_alpha(src), False)
            if spec is not None:
                m &= _not_collar(vrt.read(img), spec)
    else:
        t = src.transform @ Affine.scale(src.width / w, src.height / h)
        if zero:
            return _not_collar(src.read(img, out_shape=(len(img), h, w), resampling=Resampling.average), spec), t
        m = _read_valid(src, _unused_alpha(src), False, out_shape=(h, w), resampling=Resampling.average)
        if spec is not None:
            m &= _not_collar(src.read(img, out_shape=(len(img), h, w), resampling=Resampling.average), spec)
    return m, t


def utm_crs_for(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone CRS containing a point."""
    infos = query_utm_crs_info(
        datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat)
    )
    if not infos:  # pragma: no cover - polar regions
        raise GeoreferenceError(f"no UTM zone for lon={lon:.4f} lat={lat:.4f}; reproject the mosaic first")
    return CRS.from_epsg(int(infos[0].code))


def keeps_own_grid(src: DatasetReader) -> bool:
    """Whether the mosaic's CRS can be the analysis grid's: projected in metres, and metres on the map are metres
    on the ground there (point scale within :data:`MAX_SCALE_ERROR`; not Web Mercator away from the equator)."""
    return src.crs is not None and is_ground_metric(src.crs, map_envelope(src))


def map_envelope(src: DatasetReader) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the raster's four corners in its CRS, ordered as the names say, whatever way the
    grid runs (``src.bounds`` puts a south-up grid's top edge under its bottom one)."""
    t = src.transform
    xs, ys = zip(*(t @ (c, r) for c, r in ((0, 0), (src.width, 0), (0, src.height), (src.width, src.height))),
                 strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def needs_warp(src: DatasetReader) -> bool:
    """Geographic CRS, a projected CRS not in metres (e.g. US State Plane feet) or not true to scale (Web
    Mercator), or a rotated/sheared geotransform: read through a warp to a metric north-up grid."""
    t = src.transform
    return bool(not keeps_own_grid(src) or t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0)


def target_grid(src: DatasetReader, gsd_m: float | None = None) -> Grid:
    """The metric north-up grid at ``gsd_m`` (native GSD when None) covering the whole raster.

    Mosaics projected in metres keep their CRS and top-left corner; geographic ones, and projected ones in other
    units (feet) or not true to scale (Web Mercator), move to their local UTM zone, so that a grid step of
    ``gsd_m`` is ``gsd_m`` metres on the ground.
    """
    gsd = float(gsd_m) if gsd_m else gsd_of(src)
    envelope = map_envelope(src)
    if not needs_warp(src):
        left, bottom, right, top = envelope
        width = max(1, math.ceil((right - left) / gsd - 1e-6))
        height = max(1, math.ceil((top - bottom) / gsd - 1e-6))
        return Grid(src.crs, Affine(gsd, 0.0, left, 0.0, -gsd, top), height, width)
    from rasterio.warp import transform_bounds

    dst_crs = src.crs
    if not keeps_own_grid(src):
        left, bottom, right, top = transform_bounds(src.crs, "EPSG:4326", *envelope, densify_pts=21)
        dst_crs = utm_crs_for((left + right) / 2, (bottom + top) / 2)
    left, bottom, right, top = transform_bounds(src.crs, dst_crs, *envelope, densify_pts=21)
    width = max(1, math.ceil((right - left) / gsd - 1e-6))
    height = max(1, math.ceil((top - bottom) / gsd - 1e-6))
    return Grid(dst_crs, Affine(gsd, 0.0, left, 0.0, -gsd, top), height, width)


def image_bands_of(src: DatasetReader) -> tuple[int, ...]:
    """The 1-based bands of a mosaic that hold image values (every band but alpha)."""
    return tuple(i for i, ci in enumerate(src.colorinterp, start=1) if ci != ColorInterp.alpha)


def select_bands(
    src: DatasetReader, wanted: Sequence[str], override: Sequence[int] | None = None
) -> tuple[int, ...]:
    """1-based band indexes that give the model's bands (e.g. ``["red", "green", "blue"]``).

    Chooses by colour interpretation (so RGBA, BGR and ARGB files work); alpha is never an image band.
    ``override`` (e.g. ``--bands 3,2,1``) wins. Raises BandError with the fix when nothing fits.
    """
    names = [_ci_name(ci) for ci in src.colorinterp]
    alpha = {i for i, n in enumerate(names, start=1) if n == "alpha"}
    image_bands = [i for i in range(1, src.count + 1) if i not in alpha]
    n_wanted = len(wanted)
    if override:
        bad = [b for b in override if b < 1 or b > src.count]
        if bad:
            raise BandError(f"--bands {bad} out of range: {src.name} has bands 1..{src.count}")
        if len(override) != n_wanted:
            raise BandError(
                f"--bands gives {len(override)} bands but the model needs {n_wanted} ({', '.join(wanted)})"
            )
        if alpha & set(override):
            raise BandError(f"--bands includes the alpha band {sorted(alpha)}; alpha is a mask, not imagery")
        return tuple(override)
    by_name = {n: i for i, n in enumerate(names, start=1) if n not in ("undefined", "alpha")}
    if all(w in by_name for w in wanted):
        return tuple(by_name[w] for w in wanted)
    if n_wanted == 1 and len(image_bands) == 1:
        return (image_bands[0],)
    if len(image_bands) == n_wanted and all(names[i - 1] in ("undefined", "gray") for i in image_bands):
        log.warning(
            "%s has no colour interpretation; assuming bands %s are %s (use --bands to change)",
            src.name,
            image_bands,
            ", ".join(wanted),
        )
        return tuple(image_bands)
    have = f"{src.name} has {src.count} bands ({', '.join(names)}) but the model needs {n_wanted} ({', '.join(wanted)})"
    if len(image_bands) >= n_wanted:
        hint = image_bands[:n_wanted]
        raise BandError(f"{have}; pick bands with --bands, e.g. --bands {','.join(map(str, hint))}")
    if "palette" in names and n_wanted >= 3:
        raise BandError(f"{have}: a palette (indexed-colour) image; expand it to RGB first, e.g. gdal_translate "
                        f"-expand rgba {Path(src.name).name} rgb.tif")
    raise BandError(f"{have}; use a model trained for this sensor (see `rams models list`)")


def value_range_for(dtype: str, override: tuple[float, float] | None = None) -> tuple[float, float]:
    """Fixed (min, max) mapped to [0, 1]; BandError for dtypes without a default and no override."""
    if override is not None:
        lo, hi = override
        if not hi > lo:
            raise BandError(f"value range {override} is empty; give max > min")
        return (float(lo), float(hi))
    if dtype not in DEFAULT_VALUE_RANGE:
        raise BandError(
            f"dtype {dtype} is not supported without an explicit value range; set read.value_range "
            "in the config (e.g. [0, 4095] for 12-bit data) or convert to uint8/uint16/float32"
        )
    return DEFAULT_VALUE_RANGE[dtype]


def nbits_of(src: DatasetReader, band: int) -> int | None:
    """The bit depth a GeoTIFF declares for an unsigned integer band narrower than its dtype (TIFF ``NBITS``, e.g.
    12 for a 12-bit camera's values stored as uint16); None when it declares none or the full width."""
    try:
        text = src.tags(band, ns="IMAGE_STRUCTURE").get("NBITS")
        n = int(text) if text else 0
    except (ValueError, TypeError, RasterioIOError):
        return None
    dtype = np.dtype(src.dtypes[band - 1])
    if not np.issubdtype(dtype, np.unsignedinteger) or not 0 < n < dtype.itemsize * 8:
        return None
    return n


def source_value_range(src: DatasetReader, band: int, override: tuple[float, float] | None = None
                       ) -> tuple[float, float]:
    """:func:`value_range_for` the band's dtype; without an override, narrowed to the bit depth the file declares
    (``NBITS=12`` in a uint16 file: 0-4095), so declared 12-bit imagery is not read as nearly black."""
    if override is None:
        n = nbits_of(src, band)
        if n is not None:
            return (0.0, float(2**n - 1))
    return value_range_for(src.dtypes[band - 1], override)


def _sample_values(src: DatasetReader, bands: Sequence[int], grid_n: int = 4, size: int = 256) -> np.ndarray:
    """Pixel values of ``bands`` at imaged pixels of ``grid_n`` x ``grid_n`` windows of ``size`` px spread over the
    file (cheap on any mosaic size), all bands in one flat array."""
    vals = []
    spec = _collar_spec(src)
    for win in _spread_windows(src, grid_n, size):
        data = _read_sample(src, list(bands), win)
        if data is None:
            continue
        try:
            ok = _read_valid(src, _unused_alpha(src), True, window=win)
        except RasterioIOError:
            continue
        ok &= _not_collar(data, (True, None, 0)) & _not_collar(data, spec)
        vals.append(data[:, ok].ravel())
    return np.concatenate(vals) if vals else np.empty(0)


#: Share of the scaling range that sampled pixel values fill below which a run is refused (12-bit values in
#: uint16 without ``NBITS``: 1/16; 0-255 in int16: 1/256), and below which it is warned about.
DIM_REFUSE, DIM_WARN = 1 / 8, 1 / 4
#: Share of sampled pixel values outside the scaling range above which a run is refused (the model would see
#: that much of the image clipped to black or white).
CLIPPED_REFUSE = 0.05


def _range_advice(values: np.ndarray) -> tuple[float, float]:
    """A value range that fits ``values``: the integer ranges cameras write (0-255, 0-4095, ..., 0-65535) when
    the values are non-negative whole numbers within one, else their 0.1-99.9th percentiles."""
    top = float(np.percentile(values, 99.9))
    if float(values.min()) >= 0 and np.all(np.mod(values[:10000], 1) == 0):
        for bits in (8, 10, 12, 14, 16):
            if top <= 2**bits - 1:
                return 0.0, float(2**bits - 1)
    lo, hi = (float(v) for v in np.percentile(values, [0.1, 99.9]))
    return lo, hi if hi > lo else lo + 1.0


def value_range_check(src: DatasetReader, bands: Sequence[int], value_range: tuple[float, float],
                      range_given: bool) -> str | None:
    """Refuse (:class:`BandError`) a mosaic whose pixel values do not fit the range they are scaled by, or return
    a warning when they fill under a quarter of it; None when they fit.

    Values outside the range are clipped to black or white: an RGB mosaic stored as float32 with 0-255 values read
    as a white image, and as int16 as a flat grey one, and ``rams detect`` found nothing on either while its
    coverage layer said the ground was analysed (measured: 0 detections against 17 on the same scene in uint8).
    Refused when more than :data:`CLIPPED_REFUSE` of a sample of imaged pixels lies outside, with the range that
    fits. Integer values filling under :data:`DIM_REFUSE` of the range (12-bit values in uint16 without ``NBITS``,
    0-255 in int16) are refused too, under :data:`DIM_WARN` warned about, unless a range was given or a bit depth
    declared. The same sample of 16 small windows as ``rams info`` reads.
    """
    lo, hi = value_range
    dtype = np.dtype(src.dtypes[bands[0] - 1])
    if np.issubdtype(dtype, np.integer) and (lo, hi) == (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)) \
            and (dtype.itemsize == 1 or (range_given or nbits_of(src, bands[0]) is not None)):
        return None  # the type's own range: nothing can lie outside it, and no dim warning is due
    v = _sample_values(src, bands)
    if v.size < 100:
        return None
    above, below = float(np.mean(v > hi)), float(np.mean(v < lo))
    if above + below > CLIPPED_REFUSE:
        a, b = _range_advice(v.astype(np.float64))
        way = "white" if above >= below else "black"
        raise BandError(
            f"{src.name}: {100 * (above + below):.0f} % of sampled pixel values lie outside the {lo:g}-{hi:g} range "
            f"{dtype} imagery is scaled by (they run from {float(v.min()):g} to {float(v.max()):g}), so the model "
            f"would see them clipped to {way} and find nothing there; give the range the values use, --value-range "
            f"{a:g},{b:g} (read.value_range: [{a:g}, {b:g}] in a preset), or convert the file to uint8 "
            f"(gdal_translate -ot Byte -scale {a:g} {b:g} 0 255)"
        )
    if range_given or nbits_of(src, bands[0]) is not None:
        return None
    if not np.issubdtype(dtype, np.integer) or dtype.itemsize < 2:
        return None
    bottom, top = (float(x) for x in np.percentile(v, [0.1, 99.9]))
    used = (max(top, 0.0) - min(bottom, 0.0)) / (hi - lo)
    if used >= DIM_WARN:
        return None
    a, b = _range_advice(v.astype(np.float64))
    if lo < 0:
        f0, f1 = (bottom - lo) / (hi - lo), (top - lo) / (hi - lo)
        look = f"a flat grey image (all within {f0:.2f}-{f1:.2f} of the scale)"
    else:
        look = "a nearly black image"
    bits = round(math.log2(b + 1)) if a == 0 and b > 0 else None
    fix = f"give the range the values use: --value-range {a:g},{b:g} (read.value_range: [{a:g}, {b:g}] in a preset)"
    if bits and lo >= 0:
        fix += f", or write NBITS={bits} into the file if the camera writes {bits}-bit values"
    text = (f"pixel values reach only {top:.0f} (99.9th percentile of a sample) of the {lo:g}-{hi:g} range "
            f"{dtype} imagery is scaled by: the model sees {look}")
    if used < DIM_REFUSE:
        raise BandError(f"{src.name}: {text} and would find next to nothing there; {fix}")
    return f"{text} and finds little; {fix}"


def dim_values_note(src: DatasetReader, bands: Sequence[int], value_range: tuple[float, float]) -> str | None:
    """What :func:`value_range_check` says about the file as a note for ``rams info`` (which refuses nothing): the
    refusal a run would give, the dim warning, or None."""
    try:
        return value_range_check(src, bands, value_range, range_given=False)
    except BandError as err:
        return f"a run would stop: {err}"


@dataclass
class TileData:
    """One tile read for a model: ``image`` float32 (bands, rows, cols) in [0, 1]; ``valid`` bool mask."""

    image: np.ndarray
    valid: np.ndarray


class OrthoReader:
    """Reads windows of a :class:`Grid` from an open mosaic, resampled, band-selected, scaled and masked.

    Memory is bounded by the window size (and the capped GDAL cache), never by the mosaic size.
    Not thread-safe: use one reader (one open dataset) per thread.
    """

    def __init__(
        self,
        src: DatasetReader,
        grid: Grid,
        bands: Sequence[int],
        value_range: tuple[float, float],
        resampling: str = "average",
        gdal_cache_mb: int = STRIP_CACHE_CAP_MB,
        row_cols: int | None = None,
        skip_damaged: bool = False,
    ) -> None:
        self.src = src
        self.source = src
        """The handle the reader was given (the caller closes it; :attr:`src` may become the reader's own)."""
        self.skip_damaged = skip_damaged
        """On a window GDAL cannot read (a block that does not decode), read it again in pieces of
        :data:`DAMAGED_PIECE_PX` and leave the pieces that fail not imaged (invalid, zero), instead of raising
        :class:`CorruptRasterError`. Those pieces are recorded in :attr:`damaged`."""
        self.damaged: list[tuple[int, int, int, int]] = []
        """Grid windows (row0, row1, col0, col1; half-open) left unread as damaged (``skip_damaged``)."""
        self.row_cols = row_cols
        """Grid columns one row of tiles spans (a stripe, see :func:`rams.tiling.stripe_order`); None: the grid's
        width. The block cache is sized to that row."""
        self.grid = grid
        self.bands = tuple(bands)
        self.lo, self.hi = value_range
        try:
            self.resampling = Resampling[resampling]
        except KeyError as err:
            raise BandError(f"unknown resampling {resampling!r}; use one of nearest, bilinear, average") from err
        dtype = np.dtype(src.dtypes[self.bands[0] - 1])
        self._is_float = not np.issubdtype(dtype, np.integer)
        full = (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)) if not self._is_float else None
        self._needs_clip = full is None or (self.lo, self.hi) != full
        self._cache_cap_mb = int(gdal_cache_mb)
        _ensure_gdal_cache()
        self._cache_checked = False
        self._mask_kind, self._alpha = _mask_kind(src)
        self._unused_alpha = _unused_alpha(src)
        # the alpha band, GDAL's mask or not, for resampled reads (see _resampled_valid)
        self._alpha_band = (self._unused_alpha or ((self._alpha, alpha_opaque(src, self._alpha))
                                                   if self._mask_kind == "alpha" and self._alpha is not None else None))
        self._collar = _collar_spec(src)
        self._vrt: WarpedVRT | None = None
        # Integer ratio between model and mosaic GSD (0.5 cm -> 1 cm: 2): use the exact, fast block mean.
        self._factor: int | None = None
        if not needs_warp(src) and self.resampling == Resampling.average:
            ratio_x = grid.gsd_m / src.transform.a
            ratio_y = grid.gsd_m / -src.transform.e
            k = round(ratio_x)
            if k >= 1 and abs(ratio_x - k) < 1e-6 * k and abs(ratio_y - k) < 1e-6 * k:
                self._factor = k
        self._own_src: DatasetReader | None = None  # a handle this reader opened itself (see _reopen_plain)
        self._open_vrt()

    def _open_vrt(self) -> None:
        if needs_warp(self.src):
            self._vrt = WarpedVRT(
                self.src,
                crs=self.grid.crs,
                transform=self.grid.transform,
                width=self.grid.width,
                height=self.grid.height,
                resampling=self.resampling,
                add_alpha=self._mask_kind in ("none", *COLLAR_KINDS),
            )

    def _reopen_plain(self) -> None:
        """Read on from a fresh single-threaded handle of the same file (``skip_damaged``, after a failed read).

        Measured with GDAL 3.10 (rasterio's): after a block fails to decode on a handle opened with
        ``NUM_THREADS`` > 1, reading it again on that handle *succeeds* and returns made-up pixels (valid alpha
        included), which would be analysed as imagery; a single-threaded handle fails on it every time. The
        caller's handle is left open (the caller closes it); this one is closed by :meth:`close`."""
        if self._own_src is not None:
            return
        if self._vrt is not None:
            self._vrt.close()
            self._vrt = None
        self._own_src = rasterio.open(self.src.name, **NO_OVERVIEWS)
        self.src = self._own_src
        self._open_vrt()

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
            self._vrt = None
        if self._own_src is not None:
            self._own_src.close()

    def __enter__(self) -> OrthoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, window: Window) -> TileData:
        """Read a grid window (may extend past the grid edge: the outside is zero and invalid)."""
        h, w = int(window.height), int(window.width)
        image = np.empty((len(self.bands), h, w), np.float32)
        valid = np.empty((h, w), bool)
        self.read_into(window, image, valid)
        return TileData(image, valid)

    def read_into(self, window: Window, image: np.ndarray, valid: np.ndarray) -> list[tuple[int, int, int, int]]:
        """:meth:`read` into caller-owned arrays (e.g. one slot of a batch): ``image`` float32
        ``(bands, rows, cols)`` and ``valid`` bool ``(rows, cols)``, both overwritten entirely.

        The raw pixels are converted and scaled in one pass straight into ``image`` (no intermediate float
        copy, no copy into a batch afterwards); the result is bit-identical to the cast-then-scale order.
        Returns the grid windows of this read left unread as damaged (``skip_damaged``; normally empty).
        """
        h, w = int(window.height), int(window.width)
        if image.shape != (len(self.bands), h, w) or image.dtype != np.float32 or valid.shape != (h, w):
            raise ValueError(f"read_into: arrays {image.shape}/{valid.shape} do not fit window {h}x{w}")
        r0, c0 = int(window.row_off), int(window.col_off)
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, self.grid.height), min(c0 + w, self.grid.width)
        damaged: list[tuple[int, int, int, int]] = []
        if rr1 <= rr0 or cc1 <= cc0:
            image.fill(0.0)
            valid.fill(False)
            return damaged
        inner = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        if not self._cache_checked:
            self._size_cache(h)
        try:
            data, mask, div = self._read_inner(inner)
        except RasterioIOError as err:
            if not self.skip_damaged:
                raise CorruptRasterError(
                    f"{self.src.name}: cannot read grid rows {rr0}-{rr1}, columns {cc0}-{cc1} (GDAL: "
                    f"{gdal_error_text(err)}); the file is damaged or truncated: copy or export it again, or pass "
                    "--skip-damaged to leave the unreadable parts not analysed (rams detect: with --resume, the tiles "
                    "already done are kept)"
                ) from err
            self._reopen_plain()
            data, mask, div, damaged = self._read_in_pieces(inner)
            self.damaged.extend(damaged)
        if not mask.any():  # nothing imaged here (e.g. outside the footprint): no scaling to do
            image.fill(0.0)
            valid.fill(False)
            return damaged
        if (rr0, cc0, rr1, cc1) == (r0, c0, r0 + h, c0 + w):
            img, val = image, valid
        else:  # the part past the grid edge is zero and invalid
            image.fill(0.0)
            valid.fill(False)
            sl = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            img, val = image[:, sl[0], sl[1]], valid[sl]
        scale = np.float32(1.0 / (self.hi - self.lo))
        if div != 1 and (self.lo != 0.0 or div & (div - 1)):  # block sums -> block means first (as float32)
            data = np.multiply(data, np.float32(1.0 / div), dtype=np.float32)
            div = 1
        if self.lo == 0.0 and data.dtype.kind in "ui" and (data.dtype.itemsize <= 2 or div > 1):
            # exact int -> float32, then one rounding. For block sums of k x k = 2^n pixels, dividing the scale by
            # 2^n is exact, so this single pass equals the mean-then-scale order bit for bit (tested).
            np.multiply(data, scale * np.float32(1.0 / div), out=img, casting="unsafe")
        elif data.dtype == np.float32 and self.lo == 0.0:
            np.multiply(data, scale, out=img, casting="unsafe")  # the same rounding as copy, then scale
        else:
            np.copyto(img, data, casting="unsafe")
            if self.lo != 0.0:
                img -= np.float32(self.lo)
            img *= scale
        if self._needs_clip:
            np.clip(img, 0.0, 1.0, out=img)
        if self._is_float:
            finite = np.isfinite(img).all(axis=0)
            mask = mask & finite
            img[:, ~finite] = 0.0
        if not mask.all():
            img *= mask  # invalid pixels are 0, never image content
        val[...] = mask
        return damaged

    def _read_in_pieces(self, inner: Window) -> tuple[np.ndarray, np.ndarray, int, list[tuple[int, int, int, int]]]:
        """:meth:`_read_inner` of ``inner`` piece by piece (:data:`DAMAGED_PIECE_PX`): pieces GDAL cannot read stay
        zero and invalid. Returns (values as float32, valid, 1, the damaged pieces as grid windows)."""
        r0, c0, h, w = int(inner.row_off), int(inner.col_off), int(inner.height), int(inner.width)
        data = np.zeros((len(self.bands), h, w), np.float32)
        valid = np.zeros((h, w), bool)
        damaged: list[tuple[int, int, int, int]] = []
        p = DAMAGED_PIECE_PX
        # pieces on the grid's own multiples of p: a source block at 1:1 or at 2 x 2 (0.5 cm) is whole pieces
        rows = sorted({0, *range(-(-r0 // p) * p - r0, h, p)})
        cols = sorted({0, *range(-(-c0 // p) * p - c0, w, p)})
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                hh = (rows[i + 1] if i + 1 < len(rows) else h) - r
                ww = (cols[j + 1] if j + 1 < len(cols) else w) - c
                try:
                    d, m, div = self._read_inner(Window(c0 + c, r0 + r, ww, hh))
                except RasterioIOError:
                    damaged.append((r0 + r, r0 + r + hh, c0 + c, c0 + c + ww))
                    continue
                data[:, r : r + hh, c : c + ww] = d if div == 1 else np.multiply(d, np.float32(1.0 / div))
                valid[r : r + hh, c : c + ww] = m
        log.warning("%s: %d piece(s) of %d px could not be read (damaged blocks): not analysed", self.src.name,
                    len(damaged), p)  # fmt: skip
        return data, valid, 1, damaged

    def _read_inner(self, inner: Window) -> tuple[np.ndarray, np.ndarray, int]:
        """(data, valid, divisor): pixel values are ``data / divisor`` (block sums of the fast path, else 1)."""
        out_shape = (len(self.bands), int(inner.height), int(inner.width))
        if self._vrt is not None:
            data = self._vrt.read(self.bands, window=inner)
            # GDAL's warper may call an output pixel valid where some source pixels under it were not (measured:
            # 0.08 % of the imaged area of a 0.7 cm south-up mosaic, at footprint edges and 1-2 px holes; a whole
            # extra row along the edge of a 1:1 south-up file), so the exact rule is applied on top of its mask
            valid = _read_valid(self._vrt, self._unused_alpha, True, window=inner)
            valid &= self._warped_valid(inner)
            if self._collar is not None:
                valid &= _not_collar(data, self._collar)
            return data, valid, 1
        # Projected north-up: map the grid window to a (fractional) source window and resample on read.
        src_t = self.src.transform
        left, bottom, right, top = self.grid.window_bounds(inner)
        col0 = (left - src_t.c) / src_t.a
        col1 = (right - src_t.c) / src_t.a
        row0 = (top - src_t.f) / src_t.e
        row1 = (bottom - src_t.f) / src_t.e
        k = self._factor
        if k is not None:
            c0, r0 = round(col0), round(row0)
            c1, r1 = c0 + int(inner.width) * k, r0 + int(inner.height) * k
            if c1 <= self.src.width and r1 <= self.src.height:
                return self._read_block_mean(Window(c0, r0, c1 - c0, r1 - r0), k)
        exact = (col0, row0, col1, row1)
        col0, row0 = max(0.0, col0), max(0.0, row0)
        col1, row1 = min(float(self.src.width), col1), min(float(self.src.height), row1)
        src_win = Window(col0, row0, max(col1 - col0, 1e-6), max(row1 - row0, 1e-6))
        data = self.src.read(self.bands, window=src_win, out_shape=out_shape, resampling=self.resampling)
        # A resampled pixel is valid only if every source pixel under it was valid.
        valid = _resampled_valid(self.src, self._alpha_band, exact, out_shape[1:])
        if self._collar is not None:  # resampled: a pixel is 0 where all under it is (edge pixels stay)
            valid &= _not_collar(data, self._collar)
        return data, valid, 1

    def _warped_valid(self, inner: Window) -> np.ndarray:
        """Validity of a warped read by the whole-footprint rule, without GDAL's warper: True only where every
        source pixel under the output pixel's footprint (partly covered ones included) is valid; source pixels
        outside the file are not.

        GDAL's warper (its mask, and its ``average``/``min`` resampling of a mask alike) judges an output pixel by a
        box of source pixels that ignores rotation: on a mosaic rotated 30 degrees it called 48 pixels imaged of
        which up to 22 % lay on unimaged ground (tested). Here each output pixel's centre is mapped to source pixel
        coordinates (exactly on a lattice every 32 px, bilinear in between: the warp is smooth at tile scale) and
        the footprint is bounded by the box centre +- half the sum of the local Jacobian's absolute entries (the
        bounding box of the mapped pixel square; the footprint itself when the grids are axis-aligned, e.g. a
        south-up file); the box must hold no invalid source pixel (a summed-area table of the full-resolution
        source mask over the window's footprint)."""
        from rasterio.warp import transform as warp_points
        from scipy.ndimage import map_coordinates

        src = self.src
        h, w = int(inner.height), int(inner.width)
        gt = self.grid.window_transform(inner)
        step = 32
        lc = np.unique(np.r_[np.arange(0, w + 1, step), w]).astype(np.float64)
        lr = np.unique(np.r_[np.arange(0, h + 1, step), h]).astype(np.float64)
        cc, rr = np.meshgrid(lc, lr)
        xs, ys = gt.c + gt.a * cc + gt.b * rr, gt.f + gt.d * cc + gt.e * rr
        if src.crs != self.grid.crs:
            tx, ty = warp_points(self.grid.crs, src.crs, xs.ravel().tolist(), ys.ravel().tolist())
            xs, ys = np.asarray(tx).reshape(cc.shape), np.asarray(ty).reshape(cc.shape)
        inv = ~src.transform
        sc = inv.a * xs + inv.b * ys + inv.c  # source column / row of each lattice point (pixel corners there)
        sr = inv.d * xs + inv.e * ys + inv.f
        # local Jacobian (source px per output px), bounded over the tile
        dcol = [np.abs(np.diff(v, axis=1)) / np.diff(lc)[None, :] for v in (sc, sr)]
        drow = [np.abs(np.diff(v, axis=0)) / np.diff(lr)[:, None] for v in (sc, sr)]
        hx = 0.5 * (dcol[0].max() + drow[0].max()) if dcol[0].size and drow[0].size else 0.5
        hy = 0.5 * (dcol[1].max() + drow[1].max()) if dcol[1].size and drow[1].size else 0.5
        # the source window under the tile (the lattice spans every footprint: centres are its convex combinations)
        margin = int(np.ceil(max(hx, hy))) + 2
        c0 = int(np.floor(sc.min() - hx)) - margin
        r0 = int(np.floor(sr.min() - hy)) - margin
        c1 = int(np.ceil(sc.max() + hx)) + margin
        r1 = int(np.ceil(sr.max() + hy)) + margin
        cc0, rr0 = max(c0, 0), max(r0, 0)
        cc1, rr1 = min(c1, src.width), min(r1, src.height)
        if cc1 <= cc0 or rr1 <= rr0:
            return np.zeros((h, w), bool)
        bad = np.ones((r1 - r0, c1 - c0), np.int32)  # beyond the file: not imaged
        bad[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = ~_read_valid(
            src, self._unused_alpha or self._alpha_band, True, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
        if not bad.any():  # all imaged under the tile (the inside of a mosaic): nothing to judge pixel by pixel
            return np.ones((h, w), bool)
        table = np.zeros((bad.shape[0] + 1, bad.shape[1] + 1), np.int32)  # (counts fit: < 2**31 source pixels)
        table[1:, 1:] = bad.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
        del bad
        # centres of the output pixels in lattice index units, then bilinear from the lattice; in bands of rows, so
        # that the per-pixel arrays stay small (a 1536 px tile whole would take ~150 MB per reader thread)
        ci = np.interp(np.arange(w) + 0.5, lc, np.arange(len(lc)))
        ri = np.interp(np.arange(h) + 0.5, lr, np.arange(len(lr)))
        eps = 1e-6
        hh, ww = table.shape[0] - 1, table.shape[1] - 1
        out = np.empty((h, w), bool)
        for a in range(0, h, 128):
            gr, gc = np.meshgrid(ri[a : a + 128], ci, indexing="ij")
            cx = map_coordinates(sc, [gr, gc], order=1)
            cy = map_coordinates(sr, [gr, gc], order=1)
            # source pixels k with [k, k + 1) meeting the open box (centre - half, centre + half), window-relative
            x0 = np.clip(np.floor(cx - hx + eps).astype(np.int64) - c0, 0, ww)
            x1 = np.clip(np.ceil(cx + hx - eps).astype(np.int64) - c0, 0, ww)
            y0 = np.clip(np.floor(cy - hy + eps).astype(np.int64) - r0, 0, hh)
            y1 = np.clip(np.ceil(cy + hy - eps).astype(np.int64) - r0, 0, hh)
            out[a : a + 128] = (table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]) == 0
        return out

    def _size_cache(self, window_rows: int) -> None:
        """Size GDAL's block cache to the source blocks one row of tiles touches (capped).

        Tiles are read row by row and overlap, so each block is needed by several windows: by the 2-4 tiles
        around it in its tile row and by the next tile row. If the cache holds every block of the block rows
        under one window (whole-width strips on untiled files), each block is decoded once; if it is even a
        little smaller, LRU eviction throws out exactly the blocks needed next and every window decodes its
        blocks again (measured: 5x slower reads). Grows the cache to that size (at most the cap), never
        shrinks it (other readers in the process may need more).
        """
        self._cache_checked = True
        need_mb = row_cache_mb(self.src, self.grid.gsd_m, window_rows, self.row_cols)
        mb = min(need_mb, max(self._cache_cap_mb, MIN_CACHE_MB))
        if need_mb > mb:
            log.info("a row of tiles needs a %d MB GDAL block cache, capped at %d MB (read.gdal_cache_mb): "
                     "blocks are decoded more than once", need_mb, mb)
        if mb > _cache_now["mb"]:
            log.debug("GDAL block cache raised to %d MB", mb)
            _ensure_gdal_cache(mb)

    def _read_block_mean(self, src_win: Window, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Fast path for an integer GSD ratio ``k``: native read, then k x k block sums in numpy.

        Returns ``(sums, valid, k * k)`` for integer data (the caller divides while scaling, in the same pass),
        ``(means, valid, 1)`` for float data. Alpha is read in the same call (one decode per block); a target
        pixel is valid only if all its k x k source pixels are valid.
        """
        idx = list(self.bands) + ([self._alpha] if self._alpha is not None else [])
        raw = self.src.read(idx, window=src_win)
        nb = len(self.bands)
        data = raw[:nb]
        if self._alpha is not None:
            valid_src = raw[nb] > 0
            if self._collar is not None:  # a collar the alpha band misses (collar_beyond_mask)
                valid_src &= _not_collar(data, self._collar)
        elif self._mask_kind == "nodata" and self.src.nodata is not None:
            valid_src = ~(data == self.src.nodata).all(axis=0)
            if self._collar is not None:  # JPEG: ringing around the nodata value
                valid_src &= _not_collar(data, self._collar)
        elif self._mask_kind in COLLAR_KINDS:
            valid_src = _not_collar(data, self._collar)
        elif self._mask_kind == "none":
            valid_src = None
        else:
            valid_src = _read_valid(self.src, self._unused_alpha, True, window=src_win)
            if self._collar is not None:
                valid_src &= _not_collar(data, self._collar)
        if k == 1:
            valid = np.ones(data.shape[1:], bool) if valid_src is None else valid_src
            return data, valid, 1
        if np.issubdtype(data.dtype, np.integer) and _int_max(data.dtype) * k * k < 2**24:  # sums exact in float32
            return (*_block_sums(data, valid_src, k), k * k)
        b, h, w = data.shape
        hh, ww = h // k, w // k
        # Strided slice sums are far faster than a reshape-and-reduce over two axes.
        acc_dtype = np.uint32 if np.issubdtype(data.dtype, np.integer) else np.float64
        acc = np.zeros((b, hh, ww), acc_dtype)
        valid = np.ones((hh, ww), bool)
        for i in range(k):
            for j in range(k):
                acc += data[:, i::k, j::k]
                if valid_src is not None:
                    valid &= valid_src[i::k, j::k]
        mean = acc.astype(np.float32)
        mean *= 1.0 / (k * k)
        return mean, valid, 1


def _int_max(dtype: np.dtype[Any]) -> int:
    info = np.iinfo(dtype)
    return int(max(abs(info.min), info.max))


def _block_sums(data: np.ndarray, valid_src: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k x k block sums of integer ``(bands, h, w)`` data (h, w multiples of k) and the all-valid block mask.

    Rows are summed first (contiguous runs of memory, vectorised), then columns of the half-size result: three
    times faster than summing the k^2 strided views (measured: 21 vs 68 ms for a 1536 px tile of 3 bands from
    0.5 cm). The sum type is the narrowest that cannot overflow (uint16 for 8-bit data up to k = 16)."""
    top = _int_max(data.dtype) * k * k
    signed = np.iinfo(data.dtype).min < 0
    acc_type = next(t for t in ((np.int16, np.int32, np.int64) if signed else (np.uint16, np.uint32, np.uint64))
                    if np.iinfo(t).max >= top)
    rows = np.add(data[:, 0::k, :], data[:, 1::k, :], dtype=acc_type)
    for i in range(2, k):
        rows += data[:, i::k, :]
    acc = np.add(rows[:, :, 0::k], rows[:, :, 1::k])
    for j in range(2, k):
        acc += rows[:, :, j::k]
    h, w = acc.shape[1:]
    if valid_src is None:
        return acc, np.ones((h, w), bool)
    vr = np.logical_and(valid_src[0::k, :], valid_src[1::k, :])
    for i in range(2, k):
        vr &= valid_src[i::k, :]
    valid = np.logical_and(vr[:, 0::k], vr[:, 1::k])
    for j in range(2, k):
        valid &= vr[:, j::k]
    return acc, valid


def row_cache_mb(src: DatasetReader, gsd_m: float, window_rows: int, row_cols: int | None = None) -> int:
    """MB of GDAL block cache that holds every source block under one row of ``window_rows``-row tiles read at
    ``gsd_m`` (the blocks the next row of tiles needs again; see ``OrthoReader._size_cache``), the row spanning
    ``row_cols`` grid columns (default: the whole width)."""
    bh, bw = src.block_shapes[0]
    ratio = max(1.0, gsd_m / min(pixel_sides_m(src))) if not src.crs.is_geographic else 1.0
    rows = (math.ceil(max(window_rows * ratio - 1, 0) / bh) + 1) * bh  # block rows an unaligned window touches
    cols = src.width
    if row_cols is not None:
        cols = min(cols, (math.ceil(max(row_cols * ratio - 1, 0) / bw) + 1) * bw)
    itemsize = np.dtype(src.dtypes[0]).itemsize
    return math.ceil(rows * cols * src.count * itemsize * 1.1 / 2**20)


def cache_cap_mb(cfg: ReadConfig) -> int:
    """Block cache cap for readers of a read config: ``gdal_cache_mb`` if the config sets it, else
    ``STRIP_CACHE_CAP_MB`` (a reader takes only what one row of tiles needs, see ``OrthoReader._size_cache``)."""
    return cfg.gdal_cache_mb if "gdal_cache_mb" in cfg.model_fields_set else STRIP_CACHE_CAP_MB


#: GDAL block cache set when a raster is opened (the coarse mask pass needs little; readers grow it to what a row
#: of tiles needs, see :meth:`OrthoReader._size_cache`). GDAL's own default is 5 % of RAM (1.2 GB on a 24 GB
#: laptop), which a long run over a big mosaic fills completely.
DEFAULT_CACHE_MB = 64
#: Floor of a reader's cache size.
MIN_CACHE_MB = 16
_cache_now = {"mb": 0}


def _ensure_gdal_cache(mb: int | None = None) -> None:
    """Set GDAL's process-wide block cache (MB). Set as a global GDAL option, never inside a ``rasterio.Env``
    block: leaving such a block deletes the option and GDAL falls back to its 5 %-of-RAM default.

    The value is given to GDAL in **bytes**: rasterio passes an integer ``GDAL_CACHEMAX`` to GDAL's cache
    setter as a byte count, so ``256`` means 256 bytes, i.e. no cache at all (every overlapping window then
    decodes its blocks again). :func:`gdal_cache_bytes` reads back what GDAL uses.
    """
    mb = int(mb if mb is not None else (_cache_now["mb"] or DEFAULT_CACHE_MB))
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", mb * 2**20)
    _cache_now["mb"] = mb


def gdal_cache_bytes() -> int | None:
    """The block cache size GDAL actually uses (``GDALGetCacheMax64``), or None where the GDAL library that
    rasterio loaded cannot be found (e.g. a system GDAL build)."""
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(rasterio.__file__), os.pardir, "rasterio.libs", "libgdal*"))
    if not libs:
        return None
    fn = ctypes.CDLL(libs[0]).GDALGetCacheMax64
    fn.restype = ctypes.c_int64
    return int(fn())


def check_gsd(gsd_m: float, min_target_length_m: float, min_pixels: float, force: bool = False) -> str:
    """Verdict on whether imagery at ``gsd_m`` can show targets of ``min_target_length_m``.

    Returns a one-line verdict. Raises GSDError when too coarse, unless ``force`` (then logs a warning).
    """
    px = min_target_length_m / gsd_m
    verdict_ok = px >= min_pixels
    text = (
        f"{gsd_m * 100:.2f} cm/px: targets of {min_target_length_m * 100:.0f} cm span {px:.1f} px "
        f"({'adequate' if verdict_ok else 'too coarse'}; need >= {min_pixels:g} px)"
    )
    if not verdict_ok:
        msg = (
            f"{gsd_m * 100:.2f} cm/px is too coarse for targets under {min_target_length_m * 100:.0f} cm "
            f"({px:.1f} px < {min_pixels:g} px); fly lower or with a longer lens, or pass --force to proceed "
            "(absence of detections will then not support cancellation)"
        )
        if not force:
            raise GSDError(msg)
        log.warning(msg)
    return text


def make_reader(src: DatasetReader, wanted_bands: Sequence[str], gsd_m: float | None, cfg: ReadConfig) -> OrthoReader:
    """Convenience: grid + band selection + value range + reader, from a read config."""
    grid = target_grid(src, gsd_m)
    bands = select_bands(src, wanted_bands, cfg.bands)
    vr = source_value_range(src, bands[0], cfg.value_range)
    return OrthoReader(src, grid, bands, vr, cfg.resampling, cache_cap_mb(cfg))
