"""Tiling: exact tile counts, windows, transforms and core ownership (every pixel owned exactly once)."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from rams.raster import Grid
from rams.tiling import axis_core_bounds, axis_starts, count_tiles, make_tiles

GSD = 0.01
ORIGIN = (500000.0, 4400000.0)


def grid(h: int, w: int) -> Grid:
    return Grid(CRS.from_epsg(32638), Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1]), h, w)


def ownership(tiles, h: int, w: int) -> np.ndarray:
    owned = np.zeros((h, w), np.int32)
    for t in tiles:
        c = t.core
        owned[int(c.row_off) : int(c.row_off + c.height), int(c.col_off) : int(c.col_off + c.width)] += 1
    return owned


def test_axis_starts_flush_with_edge() -> None:
    assert axis_starts(1000, 256, 32) == [0, 186, 372, 558, 744]
    assert axis_starts(256, 256, 32) == [0]
    assert axis_starts(100, 256, 32) == [0]
    assert axis_starts(480, 256, 32) == [0, 224]
    assert axis_starts(481, 256, 32) == [0, 112, 225]
    for length in range(257, 2000, 37):  # overlap never falls below the requested one
        st = axis_starts(length, 256, 32)
        assert all(b - a <= 224 for a, b in zip(st, st[1:], strict=False))
        assert st[0] == 0 and st[-1] + 256 == length


def test_axis_cores_partition() -> None:
    starts = axis_starts(1000, 256, 32)
    cores = axis_core_bounds(1000, 256, starts)
    assert cores[0][0] == 0 and cores[-1][1] == 1000
    for (_, a1), (b0, _) in zip(cores, cores[1:], strict=False):
        assert a1 == b0
    # each core lies inside its tile window
    for s, (a, b) in zip(starts, cores, strict=True):
        assert s <= a < b <= s + 256
    assert cores == [(0, 221), (221, 407), (407, 593), (593, 779), (779, 1000)]


@pytest.mark.parametrize("h,w", [(1000, 700), (256, 256), (100, 50), (513, 1025)])
def test_cores_own_every_pixel_exactly_once(h: int, w: int) -> None:
    tiles = make_tiles(grid(h, w), 256, 32)
    assert len(tiles) == count_tiles(grid(h, w), 256, 32)
    np.testing.assert_array_equal(ownership(tiles, h, w), np.ones((h, w), np.int32))
    for t in tiles:  # windows never start outside the grid
        assert t.window.row_off >= 0 and t.window.col_off >= 0


def test_tile_count_ids_windows_transforms() -> None:
    g = grid(1000, 700)
    tiles = make_tiles(g, 256, 32)
    assert len(tiles) == 5 * 3
    t = tiles[4]  # row-major: row 1, col 1
    assert (t.row, t.col, t.tile_id) == (1, 1, "r0001c0001")
    assert (t.window.row_off, t.window.col_off, t.window.height, t.window.width) == (186, 222, 256, 256)
    assert t.transform == Affine(GSD, 0, ORIGIN[0] + 222 * GSD, 0, -GSD, ORIGIN[1] - 186 * GSD)
    last = tiles[-1]
    assert (last.window.row_off, last.window.col_off) == (744, 444)  # flush with the bottom-right edge
    assert last.window.row_off + 256 == 1000 and last.window.col_off + 256 == 700


def test_core_contains_is_tile_local() -> None:
    tiles = make_tiles(grid(1000, 700), 256, 32)
    t = tiles[4]
    # core rows 221..407 and cols 239..461 in the grid -> local rows 35..221, cols 17..239
    assert t.core_contains(35, 17)
    assert not t.core_contains(34.9, 100)
    assert not t.core_contains(221, 100)
    assert not t.core_contains(100, 239)


def test_small_image_single_padded_tile() -> None:
    tiles = make_tiles(grid(100, 50), 256, 32)
    assert len(tiles) == 1
    assert (tiles[0].core.height, tiles[0].core.width) == (100, 50)
    assert tiles[0].window.height == 256


def test_valid_mask_skips_empty_tiles() -> None:
    g = grid(1000, 700)
    # coarse mask at 10x coarser resolution: only the top-left 2 x 2 m (200 x 200 px) valid
    mask = np.zeros((100, 70), bool)
    mask[:20, :20] = True
    mt = g.transform @ Affine.scale(10)
    tiles = make_tiles(g, 256, 32, valid_mask=mask, valid_mask_transform=mt)
    assert [t.tile_id for t in tiles] == ["r0000c0000"]


def test_aoi_limits_tiles() -> None:
    g = grid(1000, 700)
    left, top = ORIGIN[0], ORIGIN[1]
    aoi = box(left + 6.0, top - 9.9, left + 6.9, top - 7.0)  # rows 700-990, cols 600-690
    tiles = make_tiles(g, 256, 32, aoi=aoi)
    assert {t.tile_id for t in tiles} == {"r0003c0002", "r0004c0002"}


def test_bad_overlap() -> None:
    with pytest.raises(ValueError):
        make_tiles(grid(100, 100), 64, 64)
