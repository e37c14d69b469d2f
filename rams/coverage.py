"""Coverage: the ground that was actually analysed, as polygons in map coordinates.

Only valid pixels (not alpha, nodata or masked) inside a tile's core and inside the area of interest count.
Everything else is *not imaged* and must never read as "nothing found".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rasterio import features
from shapely import box, union_all
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
    t = grid.window_transform(c)
    m = sub.astype(np.uint8)
    return [shape(g) for g, v in features.shapes(m, mask=sub, transform=t, connectivity=4) if v == 1]


def dissolve(polys: list[Any], aoi: Any | None = None) -> Any:
    """Union of coverage pieces, clipped to the AOI when given. Returns a (Multi)Polygon (may be empty)."""
    merged = union_all(polys) if polys else box(0, 0, 0, 0).buffer(0)
    if aoi is not None and not merged.is_empty:
        merged = merged.intersection(aoi)
    return merged
