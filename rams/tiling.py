"""Tiling: a pure function from a :class:`~rams.raster.Grid` to an ordered list of overlapping tiles.

Every tile has a read ``window`` (what the model sees) and a ``core`` (what it owns). Cores partition the
grid exactly, so every ground point is owned by exactly one tile: a detection is kept only by the tile whose
core holds its centre, which makes merging across seams exact. Tiles are flush with the grid edges (the last
tile in a row or column is shifted back, never padded past the image, unless the image is smaller than one
tile), so no strip of the image is lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the axis helpers are used without GDAL (training on a GPU box: rams.detector.valscenes)
    from affine import Affine
    from rasterio.windows import Window

    from rams.raster import Grid


@dataclass(frozen=True)
class Tile:
    """One tile of a grid. Windows are in grid pixels, (row, col) order as rasterio uses."""

    tile_id: str
    row: int
    col: int
    window: Window
    core: Window
    transform: Affine

    def core_contains(self, row_px: float, col_px: float) -> bool:
        """Whether a point in *tile-local* pixel coordinates lies in this tile's core (half-open)."""
        r = row_px + self.window.row_off
        c = col_px + self.window.col_off
        return bool(
            self.core.row_off <= r < self.core.row_off + self.core.height
            and self.core.col_off <= c < self.core.col_off + self.core.width
        )


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: the fewest tiles with at least ``overlap`` between neighbours,
    spread evenly so that the first starts at 0 and the last ends exactly at ``length``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def axis_core_bounds(length: int, tile: int, starts: list[int]) -> list[tuple[int, int]]:
    """Half-open core [a, b) of each tile along one axis: the midpoint of each overlap is the border."""
    borders = [0]
    for i in range(len(starts) - 1):
        end_i = starts[i] + tile
        borders.append((end_i + starts[i + 1]) // 2)
    borders.append(length)
    return [(borders[i], borders[i + 1]) for i in range(len(starts))]


def make_tiles(
    grid: Grid,
    tile_size_px: int,
    overlap_px: int,
    valid_mask: np.ndarray | None = None,
    valid_mask_transform: Affine | None = None,
    aoi: Any | None = None,
) -> list[Tile]:
    """Tiles covering ``grid`` in row-major order.

    Args:
        grid: the model-GSD grid (see :func:`rams.raster.target_grid`).
        tile_size_px: tile side in grid pixels.
        overlap_px: overlap between neighbouring tiles; must exceed the largest object so that every
            object lies whole inside at least one tile.
        valid_mask: optional coarse boolean validity mask (True = imaged) with ``valid_mask_transform``
            in the grid's CRS; tiles whose core holds no valid cell are skipped.
        aoi: optional shapely geometry in the grid's CRS; tiles whose core misses it are skipped.
    """
    from rasterio.windows import Window

    if overlap_px < 0 or overlap_px >= tile_size_px:
        raise ValueError("overlap_px must be in [0, tile_size_px)")
    rows = axis_starts(grid.height, tile_size_px, overlap_px)
    cols = axis_starts(grid.width, tile_size_px, overlap_px)
    row_cores = axis_core_bounds(grid.height, tile_size_px, rows)
    col_cores = axis_core_bounds(grid.width, tile_size_px, cols)
    prepared = None
    if aoi is not None:
        from shapely import prepared as shp_prepared

        prepared = shp_prepared.prep(aoi)
    tiles: list[Tile] = []
    for i, (r0, (cr0, cr1)) in enumerate(zip(rows, row_cores, strict=True)):
        for j, (c0, (cc0, cc1)) in enumerate(zip(cols, col_cores, strict=True)):
            window = Window(c0, r0, tile_size_px, tile_size_px)
            core = Window(cc0, cr0, cc1 - cc0, cr1 - cr0)
            has_mask = valid_mask is not None and valid_mask_transform is not None
            if has_mask and not _any_valid(grid, core, valid_mask, valid_mask_transform):  # type: ignore[arg-type]
                continue
            if prepared is not None:
                from shapely.geometry import box

                if not prepared.intersects(box(*grid.window_bounds(core))):
                    continue
            tiles.append(
                Tile(
                    tile_id=f"r{i:04d}c{j:04d}",
                    row=i,
                    col=j,
                    window=window,
                    core=core,
                    transform=grid.window_transform(window),
                )
            )
    return tiles


def stripe_order(tiles: list[Tile], cols_per_stripe: int) -> list[Tile]:
    """The same tiles, reordered to run row by row down vertical stripes of ``cols_per_stripe`` tile columns.

    Row-major order over a wide mosaic needs the source blocks of a whole row of tiles kept decoded until the
    next row reuses their overlap, a block cache that grows with the mosaic's width; down stripes it grows with
    the stripe's width only (at the price of decoding the blocks under each stripe border twice)."""
    n = max(1, int(cols_per_stripe))
    return sorted(tiles, key=lambda t: (t.col // n, t.row, t.col))


def stripe_cols_for(src: Any, gsd_m: float, grid: Grid, tile_px: int, overlap_px: int, budget_mb: float) -> int:
    """Tile columns per stripe (:func:`stripe_order`): the most whose row of source blocks fits ``budget_mb`` of
    GDAL block cache (at least one).

    Untiled (strip) files decode whole-width strips whatever the window, so stripes would only decode every strip
    once per stripe: they run row by row across the whole width."""
    from rams.raster import row_cache_mb

    n_cols = len(axis_starts(grid.width, tile_px, overlap_px))
    if src.block_shapes[0][1] >= src.width:
        return n_cols
    step = tile_px - overlap_px
    n = 1
    while n < n_cols and row_cache_mb(src, gsd_m, tile_px, (n + 1) * step + overlap_px) <= budget_mb:
        n += 1
    return n


def stripe_span_px(grid: Grid, cols_per_stripe: int, tile_px: int, overlap_px: int) -> int:
    """Grid columns one row of tiles of a stripe spans (what the readers' block cache is sized for)."""
    return min(grid.width, cols_per_stripe * (tile_px - overlap_px) + overlap_px)


def _any_valid(grid: Grid, core: Window, mask: np.ndarray, mask_t: Affine) -> bool:
    left, bottom, right, top = grid.window_bounds(core)
    inv = ~mask_t
    c0, r0 = inv @ (left, top)
    c1, r1 = inv @ (right, bottom)
    r0i, r1i = max(0, math.floor(min(r0, r1))), min(mask.shape[0], math.ceil(max(r0, r1)))
    c0i, c1i = max(0, math.floor(min(c0, c1))), min(mask.shape[1], math.ceil(max(c0, c1)))
    if r1i <= r0i or c1i <= c0i:
        return False
    return bool(mask[r0i:r1i, c0i:c1i].any())


def count_tiles(grid: Grid, tile_size_px: int, overlap_px: int) -> int:
    """Number of tiles before skipping (cheap: no mask needed)."""
    return len(axis_starts(grid.height, tile_size_px, overlap_px)) * len(
        axis_starts(grid.width, tile_size_px, overlap_px)
    )
