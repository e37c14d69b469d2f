"""Coverage: the ground that was actually analysed, as polygons in map coordinates.

Only valid pixels (not alpha, nodata or masked) inside a tile's core and inside the area of interest count.
Everything else is *not imaged* and must never read as "nothing found".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from affine import Affine
from rasterio import features
from shapely import box, set_precision, union_all
from shapely.geometry import shape

from rams.raster import Grid
from rams.tiling import Tile


def core_coverage(tile: Tile, valid: np.ndarray, grid: Grid) -> list[Any]:
    """Polygons of the valid pixels in a tile's core (``valid`` is the tile's full-window mask)."""
    c = tile.core
    r0 = int(c.row_off - tile.window.row_off)
    c0 = int(c.col_off - tile.window.col_off)
    sub = valid[r0 : r0 + int(c.height), c0 : c0 + int(c.width)]
    if not sub.any():
        return []
    if sub.all():
        return [box(*grid.window_bounds(c))]
    return _polygons(sub, grid.window_transform(c))


#: Side of the blocks a partly valid core is split into (only blocks that are partly valid are polygonised).
BLOCK_PX = 256


def _polygons(sub: np.ndarray, t: Any) -> list[Any]:
    """Exact polygons of the True pixels of ``sub`` (pixel corners through transform ``t``).

    Polygonising costs time per pixel, and a partly valid core is mostly all-valid or all-invalid: so the
    core is cut into ``BLOCK_PX`` blocks, runs of all-valid blocks along a block row become one rectangle and
    only the mixed blocks are polygonised. The pieces tile the same pixels (their union, :func:`dissolve`, is
    the same region).
    """
    h, w = sub.shape
    out: list[Any] = []
    for r0 in range(0, h, BLOCK_PX):
        r1 = min(r0 + BLOCK_PX, h)
        run0: int | None = None
        for c0 in [*range(0, w, BLOCK_PX), w]:  # the last step (c0 == w) closes an open run
            c1 = min(c0 + BLOCK_PX, w)
            blk = sub[r0:r1, c0:c1] if c0 < w else None
            full = blk is not None and bool(blk.all())
            if full and run0 is None:
                run0 = c0
            if not full and run0 is not None:  # close the run of all-valid blocks
                x0, y0 = t * (run0, r0)
                x1, y1 = t * (c0, r1)
                out.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
                run0 = None
            if blk is None or full or not blk.any():
                continue
            bt = t * Affine.translation(c0, r0)
            m = blk.astype(np.uint8)
            out.extend(shape(g) for g, v in features.shapes(m, mask=blk, transform=bt, connectivity=4) if v == 1)
    return out


def dissolve(polys: list[Any], aoi: Any | None = None, grid_size: float | None = None) -> Any:
    """Union of coverage pieces, clipped to the AOI when given. Returns a (Multi)Polygon (may be empty).

    ``grid_size`` (e.g. a ten-thousandth of a pixel) snaps the pieces' corners first: corners shared by pieces of
    neighbouring tiles or blocks come out of different affine products and differ in the last bits, and unsnapped
    they leave hairline gaps that split the analysed ground (and every layer cut from it) into touching parts.
    """
    if grid_size:
        polys = list(set_precision(polys, grid_size))
    merged = union_all(polys) if polys else box(0, 0, 0, 0).buffer(0)
    if aoi is not None and not merged.is_empty:
        merged = merged.intersection(aoi)
    return merged
