"""Raster ingestion on real GeoTIFFs: description, band selection, masks, scaling, resampling, warping."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from rams.config import ReadConfig
from rams.errors import (
    BandError,
    CorruptRasterError,
    GeoreferenceError,
    GSDError,
    InputNotFoundError,
    NotARasterError,
)
from rams.raster import (
    check_gsd,
    coarse_valid_mask,
    describe,
    make_reader,
    open_raster,
    select_bands,
    target_grid,
    value_range_for,
)
from rams.tiling import make_tiles

RGB = ["red", "green", "blue"]


def test_describe_rgba_alpha_footprint(make_geotiff) -> None:
    am = np.zeros((100, 120), np.uint8)
    am[:, :60] = 255  # left half imaged
    p = make_geotiff(alpha=True, alpha_mask=am)
    with open_raster(p) as src:
        info = describe(src)
    assert (info.height, info.width, info.count) == (100, 120, 4)
    assert info.band_names == ("red", "green", "blue", "alpha")
    assert info.mask_kind == "alpha" and info.alpha_band == 4
    assert info.gsd_m == pytest.approx(0.01)
    assert info.crs == "EPSG:32638" and not info.crs_is_geographic
    assert info.is_tiled and info.block_shape == (64, 64)
    assert info.valid_fraction == pytest.approx(0.5)
    assert info.footprint_area_m2 == pytest.approx(0.6 * 1.0)


def test_describe_untiled_nodata(make_geotiff) -> None:
    p = make_geotiff(tiled=False, nodata=0, bands=3)
    with open_raster(p) as src:
        info = describe(src, footprint=False)
    assert not info.is_tiled
    assert info.mask_kind == "nodata" and info.nodata == 0


def test_band_selection_by_colour_interpretation(make_geotiff) -> None:
    bgr = make_geotiff(colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red])
    with open_raster(bgr) as src:
        assert select_bands(src, RGB) == (3, 2, 1)
    rgba = make_geotiff(alpha=True)
    with open_raster(rgba) as src:
        assert select_bands(src, RGB) == (1, 2, 3)
        assert select_bands(src, ["gray"], override=[2]) == (2,)
        with pytest.raises(BandError, match="alpha"):
            select_bands(src, RGB, override=[1, 2, 4])
    gray = make_geotiff(bands=1)
    with open_raster(gray) as src:
        assert select_bands(src, ["gray"]) == (1,)
        with pytest.raises(BandError, match="needs 3"):
            select_bands(src, RGB)
    ms = make_geotiff(bands=5)
    with open_raster(ms) as src:
        with pytest.raises(BandError, match="--bands"):
            select_bands(src, RGB)
        assert select_bands(src, RGB, override=[3, 2, 1]) == (3, 2, 1)


def test_value_ranges_fixed_per_dtype() -> None:
    assert value_range_for("uint8") == (0.0, 255.0)
    assert value_range_for("uint16") == (0.0, 65535.0)
    assert value_range_for("float32", (20.0, 40.0)) == (20.0, 40.0)
    with pytest.raises(BandError, match="value range"):
        value_range_for("int32")


def test_read_native_scaling_and_alpha_mask(make_geotiff) -> None:
    data = np.zeros((3, 100, 120), np.uint8)
    data[0] = 255
    data[1] = 51
    am = np.full((100, 120), 255, np.uint8)
    am[:, 100:] = 0
    p = make_geotiff(data=data, alpha=True, alpha_mask=am)
    with open_raster(p) as src:
        reader = make_reader(src, RGB, None, ReadConfig())
        grid = reader.grid
        assert (grid.height, grid.width) == (100, 120)
        td = reader.read(Window(80, 0, 64, 64))  # runs past the right edge (col 120)
    assert td.image.shape == (3, 64, 64) and td.image.dtype == np.float32
    # valid: cols 80..99 only; alpha never becomes image content
    assert td.valid[:, :20].all() and not td.valid[:, 20:].any()
    np.testing.assert_allclose(td.image[0, :, :20], 1.0)
    np.testing.assert_allclose(td.image[1, :, :20], 0.2, atol=1e-6)
    assert (td.image[:, :, 20:] == 0).all()


def test_uint16_fixed_scaling_tiles_agree(make_geotiff) -> None:
    data = np.full((1, 64, 64), 6553, np.uint16)
    data[:, :, 32:] = 65535
    p = make_geotiff(height=64, width=64, bands=1, dtype="uint16", data=data)
    with open_raster(p) as src:
        reader = make_reader(src, ["gray"], None, ReadConfig())
        left = reader.read(Window(0, 0, 32, 64)).image
        right = reader.read(Window(32, 0, 32, 64)).image
    # no per-tile stretch: a uniform tile keeps its absolute level
    np.testing.assert_allclose(left, 6553 / 65535, rtol=1e-6)
    np.testing.assert_allclose(right, 1.0)


def test_resample_to_coarser_model_gsd(make_geotiff) -> None:
    # 0.5 cm mosaic read at 1 cm: a 40x40 px bright square (20 x 20 cm) becomes 20x20 px
    data = np.full((3, 200, 200), 20, np.uint8)  # dark ground, not 0 (0 in every band is a collar: not imaged)
    data[:, 60:100, 80:120] = 200
    p = make_geotiff(height=200, width=200, gsd=0.005, data=data)
    with open_raster(p) as src:
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        assert reader.grid.gsd_m == pytest.approx(0.01)
        assert (reader.grid.height, reader.grid.width) == (100, 100)
        td = reader.read(Window(0, 0, 100, 100))
    bright = td.image[0] > 0.5
    rows, cols = np.nonzero(bright)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (30, 49, 40, 59)
    assert td.valid.all()


def _reference_block_mean_read(path: Path, k: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The block-mean read written the plain way (k^2 strided sums, mean as float32, then scale, clip, mask)."""
    with rasterio.open(path) as src:
        raw = src.read()
    data, alpha = raw[:3], raw[3]
    b, h, w = data.shape[0], data.shape[1] // k, data.shape[2] // k
    acc = np.zeros((b, h, w), np.int64)
    valid = np.ones((h, w), bool)
    for i in range(k):
        for j in range(k):
            acc += data[:, i::k, j::k]
            valid &= alpha[i::k, j::k] > 0
    mean = acc.astype(np.float32)
    mean *= np.float32(1.0 / (k * k))
    img = mean.copy()
    if lo != 0.0:
        img -= np.float32(lo)
    img *= np.float32(1.0 / (hi - lo))
    np.clip(img, 0.0, 1.0, out=img)
    img *= valid
    return img, valid


@pytest.mark.parametrize(
    "dtype,k,value_range",
    [("uint8", 2, None), ("uint8", 4, None), ("uint8", 3, None), ("uint16", 2, None), ("uint16", 2, (0.0, 4095.0)),
     ("uint16", 2, (100.0, 4095.0))],
)
def test_block_mean_read_is_bitwise_the_plain_computation(
    make_geotiff, dtype: str, k: int, value_range: tuple[float, float] | None
) -> None:
    """The fast block-mean path (row sums, then column sums, the 1/k^2 folded into the scaling pass where that is
    exact) gives the plain strided-mean computation bit for bit, for 8- and 16-bit data, power-of-two and other
    ratios, full and partial value ranges, with a partly transparent alpha."""
    rng = np.random.default_rng(3)
    top = 255 if dtype == "uint8" else 6000
    n = 24 * k
    data = rng.integers(0, top + 1, (3, n, n)).astype(dtype)
    am = np.full((n, n), 255, np.uint8)
    am[5:9, 7:30] = 0
    p = make_geotiff(height=n, width=n, gsd=0.01 / k, data=data, dtype=dtype, alpha=True, alpha_mask=am)
    cfg = ReadConfig(value_range=value_range) if value_range else ReadConfig()
    with open_raster(p) as src:
        reader = make_reader(src, RGB, 0.01, cfg)
        assert reader._factor == k
        td = reader.read(Window(0, 0, 24, 24))
        lo, hi = reader.lo, reader.hi
    want_img, want_valid = _reference_block_mean_read(p, k, lo, hi)
    np.testing.assert_array_equal(td.valid, want_valid)
    assert td.image.dtype == np.float32 and np.array_equal(td.image, want_img)
    assert not td.valid.all() and td.valid.any()


def test_resampled_mask_is_conservative(make_geotiff) -> None:
    am = np.zeros((200, 200), np.uint8)
    am[:, :101] = 255  # 101 valid columns at 0.5 cm -> at 1 cm the 51st column is half valid
    p = make_geotiff(height=200, width=200, gsd=0.005, alpha=True, alpha_mask=am)
    with open_raster(p) as src:
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        td = reader.read(Window(0, 0, 100, 100))
    assert td.valid[:, :50].all() and not td.valid[:, 50:].any()


def test_epsg4326_warped_to_utm(make_geotiff) -> None:
    # ~1 cm pixels near Baku (lat 40.4): 1e-7 deg lat ~ 1.1 cm
    from affine import Affine

    lon0, lat0 = 49.8, 40.4
    t = Affine(1.2e-7, 0, lon0, 0, -0.9e-7, lat0)
    am = np.full((100, 120), 255, np.uint8)
    am[:50] = 0
    p = make_geotiff(crs="EPSG:4326", transform=t, alpha=True, alpha_mask=am)
    with open_raster(p) as src:
        info = describe(src, footprint=False)
        assert info.crs_is_geographic
        assert info.gsd_m == pytest.approx(0.0101, abs=0.0005)
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        grid = reader.grid
        assert grid.crs.to_epsg() == 32639  # UTM 39N at 49.8 E
        assert grid.gsd_m == pytest.approx(0.01)
        tiles = make_tiles(grid, 64, 8)
        valid_total = 0
        for tile in tiles:
            td = reader.read(tile.window)
            c = tile.core
            r0, c0 = int(c.row_off - tile.window.row_off), int(c.col_off - tile.window.col_off)
            valid_total += int(td.valid[r0 : r0 + int(c.height), c0 : c0 + int(c.width)].sum())
            assert not (td.image[:, ~td.valid] != 0).any()
        reader.close()
    # half the frame is imaged: ~ 50 x 120 source px of ~1.0 x 1.0 cm -> ~0.6 m2 -> ~6000 px at 1 cm
    area_src = 50 * 120 * 1.2e-7 * 0.9e-7 * (111320 * math.cos(math.radians(40.4))) * 111000
    assert valid_total == pytest.approx(area_src / 1e-4, rel=0.08)


def test_coarse_valid_mask_skips_unimaged_tiles(make_geotiff) -> None:
    am = np.zeros((256, 256), np.uint8)
    am[:60, :60] = 255  # inside the core of the first tile only (cores split at 96 and 160)
    p = make_geotiff(height=256, width=256, alpha=True, alpha_mask=am)
    with open_raster(p) as src:
        grid = target_grid(src)
        mask, mt = coarse_valid_mask(src, grid, max_px=64)
    tiles = make_tiles(grid, 128, 16, valid_mask=mask, valid_mask_transform=mt)
    assert [t.tile_id for t in tiles] == ["r0000c0000"]


def test_strip_and_bigtiff_read(make_geotiff) -> None:
    p = make_geotiff(height=300, width=200, tiled=False, bigtiff=True)
    with rasterio.open(p) as src:
        assert src.block_shapes[0][1] == 200  # strips span the width
    with open_raster(p) as src:
        reader = make_reader(src, RGB, None, ReadConfig())
        td = reader.read(Window(50, 100, 64, 64))
        with rasterio.open(p) as raw:
            expect = raw.read([1, 2, 3], window=Window(50, 100, 64, 64)).astype(np.float32) / 255
    np.testing.assert_allclose(td.image, expect)


# ---- bad input: each a specific error ------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="not found"):
        open_raster(tmp_path / "nope.tif")


def test_not_a_raster(tmp_path: Path) -> None:
    p = tmp_path / "notes.tif"
    p.write_text("this is not a tiff")
    with pytest.raises(NotARasterError, match="not a raster"):
        open_raster(p)


def test_truncated_geotiff(make_geotiff) -> None:
    p = make_geotiff(height=512, width=512, compress="deflate", seed=3)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptRasterError, match="truncated or"):
        open_raster(p)


def test_no_crs(make_geotiff) -> None:
    p = make_geotiff(crs=None)
    with pytest.raises(GeoreferenceError, match="coordinate reference system"):
        open_raster(p)


def test_ground_control_points_only(tmp_path: Path) -> None:
    """Georeferenced by GCPs (a raw, unwarped export): refused with the warp that fixes it, not 'no CRS'."""
    import warnings

    from rasterio.control import GroundControlPoint as GCP

    p = tmp_path / "gcps.tif"
    gcps = [GCP(0, 0, 500000, 4400000), GCP(0, 64, 500000.64, 4400000), GCP(64, 0, 500000, 4399999.36),
            GCP(64, 64, 500000.64, 4399999.36)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(p, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", gcps=gcps,
                           crs="EPSG:32638") as dst:
            dst.write(np.full((3, 64, 64), 90, np.uint8))
    with pytest.raises(GeoreferenceError, match="4 ground control points only.*gdalwarp"):
        open_raster(p)


def test_no_geotransform(make_geotiff) -> None:
    import warnings

    p = make_geotiff()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(p, "r+") as dst:
            from affine import Affine

            dst.transform = Affine.identity()
    with pytest.raises(GeoreferenceError, match="geotransform"):
        open_raster(p)


def test_gsd_verdict() -> None:
    assert "adequate" in check_gsd(0.01, 0.12, 8)
    with pytest.raises(GSDError, match="too coarse for targets under 12 cm"):
        check_gsd(0.028, 0.12, 8)
    assert "too coarse" in check_gsd(0.028, 0.12, 8, force=True)


def test_reader_gives_gdal_a_real_block_cache(make_geotiff) -> None:
    """GDAL_CACHEMAX reaches GDAL in bytes: the cache a reader asks for must be megabytes, not bytes (a cache of
    256 bytes made every overlapping window decode its blocks again, 5x slower)."""
    from rasterio.windows import Window

    from rams.raster import MIN_CACHE_MB, STRIP_CACHE_CAP_MB, OrthoReader, gdal_cache_bytes, open_raster, target_grid

    if gdal_cache_bytes() is None:
        pytest.skip("rasterio's GDAL library not found (system GDAL build)")
    path = make_geotiff(height=300, width=400, gsd=0.01, blocksize=64)
    with open_raster(path) as src:
        reader = OrthoReader(src, target_grid(src, 0.01), (1, 2, 3), (0.0, 255.0))
        reader.read(Window(0, 0, 256, 256))
        got = gdal_cache_bytes()
    assert got is not None and MIN_CACHE_MB * 2**20 <= got <= STRIP_CACHE_CAP_MB * 2**20


def _collar_rgb(h: int, w: int, imaged_cols: int) -> np.ndarray:
    """Ground (never 0 in all bands; some pixels 0 in one or two bands) with a black collar right of
    ``imaged_cols``, as an export without a mask writes it."""
    rng = np.random.default_rng(1)
    data = rng.integers(1, 250, (3, h, w)).astype(np.uint8)
    data[0, ::7, ::5] = 0  # 0 in one band only: still imaged ground
    data[:2, 3::11, 2::9] = 0  # 0 in two bands: still imaged
    data[:, :, imaged_cols:] = 0
    return data


@pytest.mark.parametrize("gsd", [0.01, 0.005, 0.007])  # read 1:1, by the 2x2 block mean, resampled (1/0.7)
def test_unmasked_rgb_black_collar_is_not_imaged(make_geotiff, gsd: float) -> None:
    from rams.raster import ZERO_COLLAR

    n = round(1.2 / gsd)  # 1.2 m square; the right third is collar
    p = make_geotiff(height=n, width=n, gsd=gsd, data=_collar_rgb(n, n, 2 * n // 3))
    with open_raster(p) as src:
        info = describe(src)
        assert info.mask_kind == ZERO_COLLAR
        assert info.valid_fraction == pytest.approx(2 / 3, abs=0.02)
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        td = reader.read(Window(0, 0, reader.grid.width, reader.grid.height))
        m, _ = coarse_valid_mask(src, reader.grid)
    cols = td.valid.any(axis=0)
    edge = 80  # the collar starts 0.8 m in, at grid column 80
    # at 0.7 cm the file (171 px, 1.197 m) ends inside the grid's last row (1.19-1.20 m): partly beyond the file,
    # that row is not wholly imaged
    rows = reader.grid.height - (1 if n * gsd < reader.grid.height * 0.01 - 1e-9 else 0)
    assert rows == (119 if gsd == 0.007 else 120)
    assert td.valid[:rows, : edge - 1].all()  # ground, including pixels 0 in one or two bands
    assert not td.valid[rows:].any()
    assert not td.valid[:, edge + 1 :].any()  # the collar
    assert cols.sum() == pytest.approx(edge, abs=1)
    assert not (td.image[:, ~td.valid] != 0).any()
    assert m.mean() == pytest.approx(2 / 3, abs=0.03)


def test_zeros_stay_data_where_the_file_says_how_to_mask(make_geotiff) -> None:
    """Where a file declares a mask (alpha, nodata), black pixels inside the field stay data; only when the mask calls
    a black edge window imaged are black pixels not imaged (collar_beyond_mask). A single-band mosaic (thermal: 0 can
    be a reading) keeps its zeros, edges included."""
    inside = _collar_rgb(100, 120, 120)
    inside[:, 40:60, 40:70] = 0  # a black patch away from the edges
    edges = _collar_rgb(100, 120, 80)
    am = np.full((100, 120), 255, np.uint8)
    grey = make_geotiff(bands=1, data=edges[:1], colorinterp=[ColorInterp.gray])
    with open_raster(grey) as src:
        assert describe(src, footprint=False).mask_kind == "none"
        assert make_reader(src, ["gray"], 0.01, ReadConfig()).read(Window(0, 0, 120, 100)).valid.all()
    for kind, extra in (("alpha", {"alpha": True, "alpha_mask": am}), ("nodata", {"nodata": 7})):
        with open_raster(make_geotiff(data=inside, **extra)) as src:
            assert describe(src, footprint=False).mask_kind == kind
            assert make_reader(src, RGB, 0.01, ReadConfig()).read(Window(0, 0, 120, 100)).valid.all(), kind
        with open_raster(make_geotiff(data=edges, **extra)) as src:
            assert describe(src, footprint=False).mask_kind.startswith(f"{kind}; but its edges are black")
            valid = make_reader(src, RGB, 0.01, ReadConfig()).read(Window(0, 0, 120, 100)).valid
            assert valid[:, :79].all() and not valid[:, 81:].any(), kind


def test_epsg4326_black_collar_is_not_imaged(make_geotiff) -> None:
    from affine import Affine

    t = Affine(1.2e-7, 0, 49.8, 0, -0.9e-7, 40.4)
    data = _collar_rgb(100, 120, 120)
    data[:, :50] = 0  # the top half is collar
    p = make_geotiff(crs="EPSG:4326", transform=t, data=data)
    with open_raster(p) as src:
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        g = reader.grid
        td = reader.read(Window(0, 0, g.width, g.height))
        reader.close()
    area_src = 50 * 120 * 1.2e-7 * 0.9e-7 * (111320 * math.cos(math.radians(40.4))) * 111000
    assert td.valid.sum() == pytest.approx(area_src / 1e-4, rel=0.08)


def test_projected_crs_in_feet_is_read_in_metres(make_geotiff) -> None:
    """A State Plane mosaic in US survey feet: the grid steps in metres (through a warp to UTM), so a 1 cm model
    sees objects at their size, and areas are square metres, not square feet."""
    from affine import Affine

    ft = 0.01 / 0.3048006096  # 1 cm in US survey feet
    p = make_geotiff(height=200, width=200, crs="EPSG:2263", transform=Affine(ft, 0, 1_000_000, 0, -ft, 200_000))
    with open_raster(p) as src:
        info = describe(src)
        assert info.gsd_m == pytest.approx(0.01, rel=1e-6)
        assert not info.crs_is_metric and not info.crs_is_geographic
        assert info.footprint_area_m2 == pytest.approx(4.0, rel=0.01)  # 2 x 2 m, not 4 ft^2 read as m^2
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        g = reader.grid
        assert g.crs.to_epsg() == 32618 and g.gsd_m == pytest.approx(0.01)
        assert 200 <= g.width <= 206 and 200 <= g.height <= 206  # 2 m across, the zone's grid slightly turned
        td = reader.read(Window(0, 0, g.width, g.height))
        reader.close()
    assert td.valid.sum() == pytest.approx(200 * 200, rel=0.03)


def _uint16_rgb(path: Path, top: int, **profile: object) -> Path:
    from rasterio.transform import from_origin

    data = np.random.default_rng(3).integers(100, top, (3, 300, 300)).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint16",
                       crs="EPSG:32638", transform=from_origin(500000, 4400000, 0.01, 0.01), **profile) as dst:
        dst.write(data)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return path


def test_declared_bit_depth_sets_the_value_range(tmp_path: Path) -> None:
    """12-bit camera values in a uint16 file that says so (NBITS=12) are scaled by 0-4095, not 0-65535."""
    from rams.raster import dim_values_note, nbits_of

    p = _uint16_rgb(tmp_path / "n12.tif", 4000, nbits=12)
    with open_raster(p) as src:
        assert nbits_of(src, 1) == 12
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        assert (reader.lo, reader.hi) == (0.0, 4095.0)
        assert reader.read(Window(0, 0, 300, 300)).image.max() == pytest.approx(3999 / 4095, abs=1e-3)
        assert dim_values_note(src, (1, 2, 3), (0.0, 4095.0)) is None
        # an explicit range still wins
        assert make_reader(src, RGB, 0.01, ReadConfig(value_range=(0, 65535))).hi == 65535.0


def test_dim_uint16_values_are_named_with_the_fix(tmp_path: Path) -> None:
    from rams.raster import dim_values_note

    dim = _uint16_rgb(tmp_path / "dim.tif", 4000)
    full = _uint16_rgb(tmp_path / "full.tif", 65000)
    with open_raster(dim) as src:
        note = dim_values_note(src, (1, 2, 3), (0.0, 65535.0))
    assert note is not None and "read.value_range: [0, 4095]" in note and "nearly black" in note
    with open_raster(full) as src:
        assert dim_values_note(src, (1, 2, 3), (0.0, 65535.0)) is None


def test_web_mercator_is_read_at_ground_scale(make_geotiff) -> None:
    """Web Mercator (EPSG:3857, the default of web map tools) stretches ground by 1/cos(lat): 1.49x at 48 N. A
    mosaic of 1 cm ground pixels is 1.49 Mercator cm per pixel; rams must see 1 cm, and read it on a UTM grid."""
    from affine import Affine
    from pyproj import Transformer

    from rams.raster import keeps_own_grid

    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(30.5, 48.0)
    px = 0.01 / math.cos(math.radians(48.0))
    p = make_geotiff(height=200, width=200, crs="EPSG:3857", transform=Affine(px, 0, x, 0, -px, y))
    with open_raster(p) as src:
        assert not keeps_own_grid(src)
        info = describe(src)
        assert info.gsd_m == pytest.approx(0.01, rel=0.01)
        assert info.footprint_area_m2 == pytest.approx(4.0, rel=0.02)  # 2 x 2 m of ground, not 8.9 m2 of map
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        g = reader.grid
        assert g.crs.to_epsg() == 32636 and 200 <= g.width <= 210
        td = reader.read(Window(0, 0, g.width, g.height))
        reader.close()
    assert td.valid.sum() == pytest.approx(200 * 200, rel=0.03)
    utm = make_geotiff(height=50, width=50)  # UTM: map metres are ground metres, its own grid is kept
    with open_raster(utm) as src:
        assert keeps_own_grid(src) and target_grid(src).crs == src.crs


def test_palette_image_is_refused_with_the_expand_fix(tmp_path: Path) -> None:
    from rasterio.transform import from_origin

    p = tmp_path / "pal.tif"
    with rasterio.open(p, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32638",
                       transform=from_origin(500000, 4400000, 0.01, 0.01), photometric="palette") as dst:
        dst.write(np.full((1, 64, 64), 7, np.uint8))
        dst.write_colormap(1, {i: (i, 255 - i, i // 2, 255) for i in range(256)})
    with open_raster(p) as src, pytest.raises(BandError, match="palette.*gdal_translate -expand rgba"):
        select_bands(src, RGB)


@pytest.mark.parametrize("crs,dtype,opaque", [(None, "uint8", 255), ("EPSG:4326", "uint8", 255),
                                              (None, "uint16", 65535), (None, "uint16", 255)])
def test_alpha_of_a_five_band_file_is_the_mask_on_every_read_path(make_geotiff, crs: str | None, dtype: str,
                                                                   opaque: int) -> None:
    """GDAL turns alpha into the dataset mask only for 2- and 4-band files: in RGB + NIR + alpha (5 bands) its
    dataset_mask() calls every pixel valid. rams reads that alpha itself: the unimaged third is not imaged at 1:1,
    in the 2x2 block mean, resampled (1.3 cm), warped (EPSG:4326), in the footprint and in the coarse mask; in
    uint16 files both for an opaque 65535 and for writers that put 0/255 into the alpha (was: not imaged at all
    on the resampled paths, imaged at 1:1)."""
    from rams.raster import coarse_valid_mask, target_grid, valid_footprint

    am = np.full((300, 300), 255, np.uint8)
    am[:, 200:] = 0
    ci = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined, ColorInterp.alpha]
    kw: dict[str, Any] = {}
    if crs is not None:
        from affine import Affine

        kw = {"crs": crs, "transform": Affine(1e-7, 0, 45.0, 0, -1e-7, 40.0)}  # ~0.9 x 1.1 cm at 40 N
    p = make_geotiff(height=300, width=300, bands=4, alpha=True, alpha_mask=am, colorinterp=ci, dtype=dtype, **kw)
    with rasterio.open(p, "r+") as dst:
        dst.write(np.where(am > 0, opaque, 0).astype(dtype), 5)
    with open_raster(p) as src:
        assert int(src.read(5).max()) == opaque
        assert src.count == 5 and float(src.dataset_mask().mean()) == 255.0  # GDAL's own mask: all valid
        fp, frac = valid_footprint(src)
        assert frac == pytest.approx(2 / 3, abs=0.02)
        for gsd in (0.01, 0.013, 0.02):
            reader = make_reader(src, RGB, gsd, ReadConfig())
            g = reader.grid
            td = reader.read(Window(0, 0, g.width, g.height))
            reader.close()
            assert td.valid.mean() == pytest.approx(2 / 3, abs=0.03), (gsd, reader._factor)
            assert not td.image[:, ~td.valid].any()  # invalid pixels never carry image content
        m, _ = coarse_valid_mask(src, target_grid(src, 0.01))
        assert m.mean() == pytest.approx(2 / 3, abs=0.03)


def test_an_unlabelled_last_band_of_0_and_255_is_read_as_the_mask(make_geotiff) -> None:
    """Tools that drop colour interpretations leave RGBA as red, green, blue, undefined: that band holds only 0 and
    255. Read as the mask, the (here white) collar is not imaged on every path, and info/detect/quality say so;
    a real fourth band (continuous values, e.g. NIR) is left alone."""
    from rams.raster import coarse_valid_mask, describe, target_grid, undeclared_alpha_note, valid_footprint

    am = np.full((300, 300), 255, np.uint8)
    am[:, 200:] = 0
    rgb = np.random.default_rng(5).integers(40, 200, (3, 300, 300)).astype(np.uint8)
    rgb[:, am == 0] = 255  # a white collar: not caught by the black-collar rule
    ci = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]

    def write(data: np.ndarray) -> Path:  # MINISBLACK: GTiff would otherwise keep a 4th band of RGB as alpha
        path = make_geotiff(height=300, width=300)
        with rasterio.open(path) as ref:
            prof = {**ref.profile, "count": 4, "photometric": "MINISBLACK"}
        with rasterio.open(path, "w", **prof) as dst:
            dst.write(data)
            dst.colorinterp = ci
        with rasterio.open(path) as back:
            assert list(back.colorinterp) == ci
        return path

    p = write(np.concatenate([rgb, am[None]]))
    with open_raster(p) as src:
        info = describe(src)
        assert info.mask_kind.startswith("alpha (band 4, not declared") and info.alpha_band == 4
        assert valid_footprint(src)[1] == pytest.approx(2 / 3, abs=0.02)
        note = undeclared_alpha_note(src)
        assert note is not None and "gdal_edit.py -colorinterp_4 alpha" in note
        for gsd in (0.01, 0.013, 0.02):
            reader = make_reader(src, RGB, gsd, ReadConfig())
            td = reader.read(Window(0, 0, reader.grid.width, reader.grid.height))
            assert td.valid.mean() == pytest.approx(2 / 3, abs=0.03), gsd
        m, _ = coarse_valid_mask(src, target_grid(src, 0.01))
        assert m.mean() == pytest.approx(2 / 3, abs=0.03)
    nir = np.random.default_rng(6).integers(0, 256, (1, 300, 300)).astype(np.uint8)
    q = write(np.concatenate([rgb, nir]))
    with open_raster(q) as src:
        assert undeclared_alpha_note(src) is None and not describe(src).mask_kind.startswith("alpha")


def _white_collar(data: np.ndarray, imaged_cols: int, white: int = 255) -> np.ndarray:
    """``data`` with the columns right of ``imaged_cols`` white in every band, as some exports fill what they did
    not image, and saturated specks inside the field (glare): white in every band, or in two bands only."""
    out = data.copy()
    out[:, :, imaged_cols:] = white
    out[:, 10:12, 10:12] = white  # glare: white in every band
    out[:2, 30:32, 30:32] = white  # white in two bands only: imaged
    return out


@pytest.mark.parametrize("gsd", [0.01, 0.005, 0.007])  # read 1:1, by the 2x2 block mean, resampled (1/0.7)
def test_unmasked_rgb_white_collar_is_not_imaged(make_geotiff, gsd: float) -> None:
    """A mosaic without a mask whose edges are white: white in every band is not imaged on every read path (a
    white collar counted as imaged would be claimed analysed), and rams says so with the fix."""
    from rams.raster import WHITE_COLLAR, coarse_valid_mask, target_grid, valid_footprint, white_collar_note

    n = round(1.2 / gsd)  # 1.2 m square; the right third is collar
    data = _white_collar(_collar_rgb(n, n, n), 2 * n // 3)
    p = make_geotiff(height=n, width=n, gsd=gsd, data=data)
    with open_raster(p) as src:
        info = describe(src)
        assert info.mask_kind == WHITE_COLLAR
        assert info.valid_fraction == pytest.approx(2 / 3, abs=0.02)
        assert valid_footprint(src)[1] == pytest.approx(2 / 3, abs=0.02)
        note = white_collar_note(src)
        assert note is not None and 'gdalwarp -srcnodata "255 255 255" -dstalpha' in note
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        td = reader.read(Window(0, 0, reader.grid.width, reader.grid.height))
        m, _ = coarse_valid_mask(src, target_grid(src, 0.01))
    edge = 80  # the collar starts 0.8 m in, at grid column 80
    assert not td.valid[:, edge + 1 :].any()  # the collar
    rows = 119 if gsd == 0.007 else 120  # at 0.7 cm the file ends inside the last grid row (see the black collar)
    assert td.valid[:, : edge - 1].sum() == pytest.approx(rows * (edge - 1) - (4 if gsd == 0.01 else 0), abs=2)
    if gsd == 0.01:  # 1:1: the 2 x 2 px of glare are not imaged, the specks white in two bands are
        assert not td.valid[10:12, 10:12].any() and td.valid[30:32, 30:32].all()
    assert not (td.image[:, ~td.valid] != 0).any()
    assert m.mean() == pytest.approx(2 / 3, abs=0.03)


def test_white_collar_in_epsg4326_uint16_and_nbits(make_geotiff) -> None:
    """The same rule through a warp (EPSG:4326), for uint16 (white 65535) and a declared 12-bit depth (4095)."""
    from affine import Affine

    from rams.raster import WHITE_COLLAR, nbits_of, white_collar_note

    t = Affine(1.2e-7, 0, 49.8, 0, -0.9e-7, 40.4)
    data = _white_collar(_collar_rgb(100, 120, 120), 60)
    p = make_geotiff(crs="EPSG:4326", transform=t, data=data)
    with open_raster(p) as src:
        assert describe(src, footprint=False).mask_kind == WHITE_COLLAR
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        td = reader.read(Window(0, 0, reader.grid.width, reader.grid.height))
        reader.close()
        m, _ = coarse_valid_mask(src, reader.grid)
    area_src = 100 * 60 * 1.2e-7 * 0.9e-7 * (111320 * math.cos(math.radians(40.4))) * 111000  # left half, m2
    assert td.valid.sum() == pytest.approx(area_src / 1e-4, rel=0.08)
    assert m.mean() == pytest.approx(td.valid.mean(), abs=0.05)

    wide = _white_collar(_collar_rgb(100, 120, 120).astype(np.uint16) * 200, 80, white=65535)
    q = make_geotiff(data=wide, dtype="uint16")
    with open_raster(q) as src:
        assert describe(src).valid_fraction == pytest.approx(2 / 3, abs=0.02)
        assert "65535 in every band" in (white_collar_note(src) or "")
    twelve = _white_collar(_collar_rgb(100, 120, 120).astype(np.uint16) * 16, 80, white=4095)
    r = q.with_name("n12.tif")
    with rasterio.open(q) as ref:
        prof = {**ref.profile, "nbits": 12}
    with rasterio.open(r, "w", **prof) as dst:
        dst.write(twelve)
    with open_raster(r) as src:
        assert nbits_of(src, 1) == 12
        assert describe(src).valid_fraction == pytest.approx(2 / 3, abs=0.02)
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        assert reader.read(Window(0, 0, 120, 100)).valid.mean() == pytest.approx(2 / 3 - 4 / 12000, abs=0.01)


def test_white_stays_data_without_white_edges_or_with_a_declared_mask(make_geotiff) -> None:
    """Glare inside a field whose edges are imagery is image data (only the black-collar rule applies), with or
    without a declared mask; white edges that a declared alpha or nodata calls imaged are not (collar_beyond_mask:
    saturated white in every band shows nothing either way)."""
    from rams.raster import collar_beyond_mask_note, white_collar_note

    inside = _collar_rgb(100, 120, 120)
    inside[:, 40:60, 40:70] = 255  # a large saturated patch, away from the edges
    am = np.full((100, 120), 255, np.uint8)
    for path, kind in ((make_geotiff(data=inside), ZERO_COLLAR_KIND),
                       (make_geotiff(data=inside, alpha=True, alpha_mask=am), "alpha"),
                       (make_geotiff(data=inside, nodata=7), "nodata")):
        with open_raster(path) as src:
            assert describe(src, footprint=False).mask_kind == kind
            assert white_collar_note(src) is None and collar_beyond_mask_note(src) is None
            reader = make_reader(src, RGB, 0.01, ReadConfig())
            assert reader.read(Window(0, 0, 120, 100)).valid.all(), kind
    data = _white_collar(_collar_rgb(100, 120, 120), 80)
    for kind, extra in (("alpha", {"alpha": True, "alpha_mask": am}), ("nodata", {"nodata": 7})):
        with open_raster(make_geotiff(data=data, **extra)) as src:
            assert describe(src, footprint=False).mask_kind.startswith(f"{kind}; but its edges are white")
            note = collar_beyond_mask_note(src)
            assert note is not None and "white in every band" in note
            valid = make_reader(src, RGB, 0.01, ReadConfig()).read(Window(0, 0, 120, 100)).valid
            assert valid[:, :79].sum() >= 100 * 79 - 4 and not valid[:, 81:].any(), kind


ZERO_COLLAR_KIND = "none declared: 0 in every band = not imaged"


def test_footprint_of_a_large_mosaic_without_overviews_is_read_in_strips_with_progress(
        make_geotiff, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without overviews every block is decoded (a minute per 4 Gpx here): a large mosaic is read in 32 strips with
    progress, and the footprint is the one-read footprint (within a strip-edge rounding)."""
    import rams.raster as raster_mod

    am = np.zeros((2000, 1500), np.uint8)
    am[100:1900, 200:1000] = 255
    am[1200:1500, 1000:1400] = 255
    p = make_geotiff(height=2000, width=1500, bands=3, alpha=True, alpha_mask=am, blocksize=256)
    with open_raster(p) as src:
        one, frac_one = raster_mod.valid_footprint(src, max_px=512)
        monkeypatch.setattr(raster_mod, "FOOTPRINT_STRIP_PX", 1000)
        calls: list[tuple[int, int]] = []
        strips, frac = raster_mod.valid_footprint(src, max_px=512, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(k, 32) for k in range(1, 33)]
    assert frac == pytest.approx(frac_one, abs=0.005) and frac == pytest.approx(am.astype(bool).mean(), abs=0.01)
    assert strips.symmetric_difference(one).area / one.area < 0.01


@pytest.mark.parametrize("fill,nodata", [(0, None), (255, None), (0, 0)])
def test_jpeg_ringing_at_a_collar_is_not_imaged(tmp_path: Path, fill: int, nodata: int | None) -> None:
    """JPEG rings next to the footprint's edge: collar pixels of 1-30 there counted as imaged ground (1.7 m2 on a
    20 x 20 m scene), also where nodata=0 is declared (GDAL masks the exact value only). In JPEG-compressed files the
    collar rules, and a declared nodata of 0, take values within 16 of 0 / of white in every band as collar."""
    from rasterio.transform import from_origin
    from skimage import data as skdata

    from rams.raster import JPEG_COLLAR_TOLERANCE, _collar_spec

    g = skdata.grass()[:512, :512].astype(np.float32)  # real grass texture, coloured as dry ground
    data = np.stack([g * 0.8 + 30, g * 0.75 + 25, g * 0.6 + 20]).clip(0, 255).astype(np.uint8)
    data[:, :, 300:] = fill  # the collar right of column 300, cut mid-block: JPEG rings there
    p = tmp_path / "j.tif"
    with rasterio.open(p, "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8", crs="EPSG:32638",
                       transform=from_origin(500000, 4400000, 0.01, 0.01), tiled=True, blockxsize=256,
                       blockysize=256, compress="jpeg", photometric="YCBCR", jpeg_quality=75, nodata=nodata) as dst:
        dst.write(data)
    with open_raster(p) as src:
        raw = src.read()
        spec = _collar_spec(src)
        assert spec is not None and spec[2] == JPEG_COLLAR_TOLERANCE
        ringing = int(((raw != fill).any(axis=0) & (np.arange(512) >= 300)[None, :]).sum())
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        td = reader.read(Window(0, 0, 512, 512))
    assert ringing > 1000  # the JPEG (quality 75) did ring into the collar
    assert td.valid[:, 300:].sum() < 0.05 * ringing  # (8 of 255 left 15-30 %; 0: all of it)
    assert not td.valid[:, 304:].any()  # what is left lies within 4 px of the edge
    assert td.valid[:, :300].mean() > 0.9999  # imagery stays imaged (one near-black JPEG speck, (14, 2, 0), is not:
    # ground that dark in every band shows nothing, the safe side)


def _disc_mosaic(make_geotiff: Any, name: str, mask: str, n: int = 606, gsd: float = 0.0033) -> Path:
    """A random-texture mosaic (n x n px) imaged in a disc; the rest marked by ``mask``: alpha, nodata or msk."""
    rng = np.random.default_rng(5)
    data = rng.integers(20, 236, (3, n, n)).astype(np.uint8)
    yy, xx = np.mgrid[0:n, 0:n]
    am = np.where((yy - n // 2) ** 2 + (xx - n // 2 + 20) ** 2 < (n * 0.41) ** 2, 255, 0).astype(np.uint8)
    if mask == "alpha":
        return make_geotiff(name, height=n, width=n, gsd=gsd, data=data, alpha=True, alpha_mask=am)
    if mask == "nodata":
        data[:, am == 0] = 0
        return make_geotiff(name, height=n, width=n, gsd=gsd, data=data, nodata=0)
    p = make_geotiff(name, height=n, width=n, gsd=gsd, data=data)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(p, "r+") as dst:
        dst.write_mask(am)
    return p


@pytest.mark.parametrize("mask", ["alpha", "nodata", "msk"])
def test_overviews_never_feed_an_analysis_read(make_geotiff, tmp_path: Path, mask: str) -> None:
    """A 0.33 cm mosaic read at 1 cm (GDAL's resampled path) gives the same pixels and footprint whether or not the
    file has overviews. GDAL serves a shrinking read from the nearest overview (here 3x, built with nearest), for
    the data and, even on a handle opened without overviews, for the mask band."""
    import shutil

    from rasterio.enums import Resampling

    plain = _disc_mosaic(make_geotiff, "plain.tif", mask)
    ovr = tmp_path / "with_overviews.tif"
    shutil.copy(plain, ovr)
    with rasterio.open(ovr, "r+") as dst:
        dst.build_overviews([2, 3, 4], Resampling.nearest)
    with rasterio.open(ovr) as src:
        assert src.overviews(1) == [2, 3, 4]
    reads = []
    for p in (plain, ovr):
        with open_raster(p) as src:
            reader = make_reader(src, RGB, 0.01, ReadConfig())
            assert reader.grid.width == 200
            reads.append(reader.read(Window(0, 0, 200, 200)))
    assert 0.4 < reads[0].valid.mean() < 0.6
    assert np.array_equal(reads[0].valid, reads[1].valid)
    assert np.array_equal(reads[0].image, reads[1].image)
    # every pixel judged valid has only valid source pixels under it (the mask is judged at full resolution)
    with rasterio.open(plain) as src:
        full = src.dataset_mask() == 255
        inv = ~src.transform
    g = reader.grid.transform
    rows, cols = np.nonzero(reads[0].valid)
    for r, c in zip(rows[::97], cols[::97], strict=True):
        x0, y0 = inv @ (g @ (c, r))
        x1, y1 = inv @ (g @ (c + 1, r + 1))
        under = full[math.floor(y0 + 1e-9) : math.ceil(y1 - 1e-9), math.floor(x0 + 1e-9) : math.ceil(x1 - 1e-9)]
        assert under.size >= 9 and under.all()


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_values_that_do_not_fit_their_scaling_are_refused_with_the_range(make_geotiff, dtype: str) -> None:
    """0-255 RGB stored as float32 (scaled by 0-1: clipped white) or int16 (-32768-32767: a flat grey) showed the
    model nothing while the run claimed the ground analysed; now refused with the range that fits."""
    from rams.raster import value_range_check

    rng = np.random.default_rng(2)
    data = rng.integers(1, 256, (3, 300, 300)).astype(dtype)
    p = make_geotiff(height=300, width=300, data=data, dtype=dtype)
    with open_raster(p) as src:
        vr = value_range_for(dtype)
        with pytest.raises(BandError, match=r"--value-range 0,255.*gdal_translate" if dtype == "float32"
                           else r"flat grey.*--value-range 0,255"):
            value_range_check(src, (1, 2, 3), vr, range_given=False)
        assert value_range_check(src, (1, 2, 3), (0.0, 255.0), range_given=True) is None
        reader = make_reader(src, RGB, 0.01, ReadConfig(value_range=(0, 255)))
        img = reader.read(Window(0, 0, 300, 300)).image
    assert img.min() >= 0.0 and img.max() == 1.0 and 0.4 < img.mean() < 0.6


def test_float_mosaic_in_0_1_passes_and_a_few_hot_pixels_are_tolerated(make_geotiff) -> None:
    from rams.raster import value_range_check

    rng = np.random.default_rng(4)
    data = rng.random((3, 300, 300)).astype("float32")
    data[:, ::50, ::50] = 1.7  # specular glints above 1: 0.04 % of the pixels
    p = make_geotiff(height=300, width=300, data=data, dtype="float32")
    with open_raster(p) as src:
        assert value_range_check(src, (1, 2, 3), (0.0, 1.0), range_given=False) is None


def test_local_engineering_crs_is_refused_with_the_fix(make_geotiff) -> None:
    """An export in "local coordinates" (no GNSS, no ground control) ended in an internal PROJ error."""
    from rasterio.crs import CRS

    p = make_geotiff()
    wkt = ('LOCAL_CS["Arbitrary site grid",LOCAL_DATUM["Arbitrary",0],UNIT["metre",1],AXIS["Easting",EAST],'
           'AXIS["Northing",NORTH]]')
    with rasterio.open(p, "r+") as dst:
        dst.crs = CRS.from_wkt(wkt)
    with pytest.raises(GeoreferenceError, match=r"local coordinate system \('Arbitrary site grid'\).*UTM zone"):
        open_raster(p)
    # a compound CRS (UTM + a vertical datum) is a projected CRS and reads as before
    with rasterio.open(p, "r+") as dst:
        dst.crs = CRS.from_string("EPSG:32638+5773")
    with open_raster(p) as src:
        assert describe(src).gsd_m == pytest.approx(0.01)


def test_a_south_up_mosaic_reads_as_its_north_up_twin(make_geotiff) -> None:
    """A grid stored bottom row first (positive y step): `rams info` read it, but the analysis grid came out one row
    high ("no imaged pixels"), because rasterio's bounds put its top under its bottom."""
    from affine import Affine

    am = np.zeros((120, 100), np.uint8)
    am[10:110, 5:90] = 255
    north = make_geotiff("north.tif", height=120, width=100, alpha=True, alpha_mask=am)
    with rasterio.open(north) as src:
        data, t = src.read(), src.transform
    south = make_geotiff("south.tif", height=120, width=100, data=data[:3, ::-1], alpha=True, alpha_mask=am[::-1],
                         transform=Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * 120))
    reads = []
    for p in (north, south):
        with open_raster(p) as src:
            reader = make_reader(src, RGB, 0.01, ReadConfig())
            assert (reader.grid.height, reader.grid.width) == (120, 100)
            assert reader.grid.transform == Affine(0.01, 0, t.c, 0, -0.01, t.f)
            reads.append(reader.read(Window(0, 0, 100, 120)))
    north_valid, south_valid = reads[0].valid, reads[1].valid
    assert north_valid.sum() == 100 * 85 and south_valid[north_valid].all()
    # (the south-up file is read through GDAL's warper, whose own mask counted one more row here: the exact rule
    # on top of it, OrthoReader._warped_valid, gives the north-up file's mask)
    assert (south_valid == north_valid).all()
    both = north_valid & south_valid
    assert np.allclose(reads[0].image[:, both], reads[1].image[:, both], atol=1e-6)


def test_nan_pixels_of_a_float_mosaic_are_not_imaged_in_the_footprint_too(make_geotiff) -> None:
    """Float imagery with NaN where nothing was imaged and no nodata declared: the reader always left NaN out, but
    `rams info`'s footprint counted it as imaged (100 %)."""
    data = np.random.default_rng(1).random((3, 200, 200)).astype("float32")
    data[:, :, 120:] = np.nan  # 40 % not imaged
    p = make_geotiff(height=200, width=200, data=data, dtype="float32")
    with open_raster(p) as src:
        assert describe(src).valid_fraction == pytest.approx(0.6, abs=0.02)
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        assert reader.read(Window(0, 0, 200, 200)).valid.mean() == pytest.approx(0.6)


@pytest.mark.parametrize("gsd", [0.01, 0.005, 0.007])  # read 1:1, by the 2x2 block mean, resampled
def test_a_black_collar_the_alpha_calls_imaged_is_not_imaged(make_geotiff, gsd: float) -> None:
    """An RGBA mosaic whose alpha is opaque everywhere (gdalwarp -dstalpha without -srcnodata) over a black collar:
    read as 100 % imaged, the collar analysed as ground; now black in every band is not imaged, with a warning."""
    from rams.raster import collar_beyond_mask_note, reading_notes

    n = round(1.2 / gsd)
    p = make_geotiff(height=n, width=n, gsd=gsd, data=_collar_rgb(n, n, 2 * n // 3), alpha=True)
    with open_raster(p) as src:
        info = describe(src)
        assert info.mask_kind.startswith("alpha; but its edges are black")
        assert info.valid_fraction == pytest.approx(2 / 3, abs=0.02)
        note = collar_beyond_mask_note(src)
        assert note is not None and 'gdalwarp -srcnodata "0 0 0" -dstalpha' in note
        assert note in reading_notes(src, (1, 2, 3), (0.0, 255.0), range_given=False)
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        td = reader.read(Window(0, 0, reader.grid.width, reader.grid.height))
    rows = 119 if gsd == 0.007 else 120  # (see the black collar test: the file ends inside the last row at 0.7 cm)
    assert td.valid[:rows, :79].all() and not td.valid[:, 81:].any()
    # the same ground with a correct alpha: nothing changes, no warning
    am = np.zeros((n, n), np.uint8)
    am[:, : 2 * n // 3] = 255
    q = make_geotiff(height=n, width=n, gsd=gsd, data=_collar_rgb(n, n, 2 * n // 3), alpha=True, alpha_mask=am)
    with open_raster(q) as src:
        assert describe(src).mask_kind == "alpha" and collar_beyond_mask_note(src) is None
        reader = make_reader(src, RGB, 0.01, ReadConfig())
        assert np.array_equal(reader.read(Window(0, 0, reader.grid.width, reader.grid.height)).valid, td.valid)


@pytest.mark.parametrize("kind", ["rotated", "geographic", "south-up"])
@pytest.mark.parametrize("gsd", [0.01, 0.014])
def test_a_warped_read_never_calls_a_pixel_imaged_that_is_partly_not(make_geotiff, gsd: float, kind: str) -> None:
    """Mosaics read through GDAL's warper (rotated 30 degrees in the geotransform, EPSG:4326, stored south-up) with a
    round footprint and a hole: an output pixel is imaged only if every source pixel under its footprint (partly
    covered ones too) is, computed here independently from the pixel footprints (shapely). GDAL's own mask called
    pixels imaged that are partly not: 266 beyond the rule's 2 638 (rotated, 1 cm), 252 beyond 2 730
    (EPSG:4326), 157 beyond 1 352 (south-up at 1.4 cm), at the footprint's edge and the hole's."""
    import math

    from affine import Affine
    from rasterio.warp import transform as warp_points
    from shapely.geometry import Polygon, box

    h = w = 70
    am = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    am[(xx - 35) ** 2 + (yy - 35) ** 2 < 30**2] = 255  # a round footprint ...
    am[30:34, 40:43] = 0  # ... with a small hole
    a = math.radians(30)
    t, crs = {
        "rotated": (Affine(0.01 * math.cos(a), -0.01 * math.sin(a), 500000.0, -0.01 * math.sin(a),
                           -0.01 * math.cos(a), 4400000.0), "EPSG:32638"),
        "geographic": (Affine(1.2e-7, 0, 45.0, 0, -0.9e-7, 39.7), "EPSG:4326"),
        "south-up": (Affine(0.01, 0, 500000.0, 0, 0.01, 4399999.3), "EPSG:32638"),
    }[kind]
    p = make_geotiff(height=h, width=w, alpha=True, alpha_mask=am, transform=t, crs=crs)
    with open_raster(p) as src:
        reader = make_reader(src, RGB, gsd, ReadConfig())
        g = reader.grid
        got = reader.read(Window(0, 0, g.width, g.height)).valid
    inv = ~t
    expect = np.zeros_like(got)
    for r in range(g.height):
        for c in range(g.width):
            pts = [g.transform @ (c + dc, r + dr) for dc, dr in ((0, 0), (1, 0), (1, 1), (0, 1))]
            xs, ys = warp_points(g.crs, crs, [q[0] for q in pts], [q[1] for q in pts])
            foot = Polygon([inv @ (x, y) for x, y in zip(xs, ys, strict=True)])
            c0, r0, c1, r1 = foot.bounds
            ok = True
            for sr in range(math.floor(r0), math.ceil(r1)):
                for sc in range(math.floor(c0), math.ceil(c1)):
                    if foot.intersection(box(sc, sr, sc + 1, sr + 1)).area > 1e-6:
                        ok = ok and 0 <= sr < h and 0 <= sc < w and bool(am[sr, sc])
            expect[r, c] = ok
    assert expect.sum() > 0.2 * expect.size
    assert not (got & ~expect).any(), f"{(got & ~expect).sum()} pixels called imaged that are partly not"
    # hardly any imaged pixel lost (a rotated footprint is bounded by its box: a conservative edge)
    assert (expect & ~got).sum() <= (0.015 if kind == "rotated" else 0.0) * expect.sum()
