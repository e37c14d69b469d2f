"""Is a CRS's map metre a ground metre here? Shared by raster reading, evaluation and the decision layers.

pyproj only (no GDAL): :mod:`rams.evaluate` runs inside training on bare GPU boxes.
"""

from __future__ import annotations

import functools
import math
from typing import Any

#: Largest departure of a projected CRS's point scale from 1, at the data's centre, for its map units to be taken
#: as ground units. Web Mercator (EPSG:3857, the default of web map tools) stretches ground by 1/cos(latitude):
#: 1.49x at 48 degrees; national grids and UTM stay within a few parts per ten thousand.
MAX_SCALE_ERROR = 0.01


def point_scales(crs: Any, bounds: tuple[float, ...] | Any) -> tuple[float, float]:
    """(meridional, parallel) point scale of a projected CRS at the centre of ``bounds`` (x0, y0, x1, y1 in that
    CRS); (1, 1) where map units are ground units or the CRS cannot be evaluated."""
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    if not c.is_projected:
        return (1.0, 1.0)
    x0, y0, x1, y1 = (float(b) for b in bounds)
    return _point_scales(c.to_wkt(), (x0 + x1) / 2, (y0 + y1) / 2)


@functools.lru_cache(maxsize=128)
def _point_scales(wkt: str, x: float, y: float) -> tuple[float, float]:
    from pyproj import CRS, Proj, Transformer

    try:
        c = CRS.from_wkt(wkt)
        lon, lat = Transformer.from_crs(c, "EPSG:4326", always_xy=True).transform(x, y)
        f = Proj(c).get_factors(lon, lat)
        h, k = float(f.meridional_scale), float(f.parallel_scale)
    except Exception:  # pragma: no cover - a CRS pyproj cannot evaluate: take map units at face value
        return (1.0, 1.0)
    if not (math.isfinite(h) and math.isfinite(k)) or h <= 0 or k <= 0:  # pragma: no cover
        return (1.0, 1.0)
    return (h, k)


def true_to_scale(crs: Any, bounds: tuple[float, ...] | Any) -> bool:
    """Whether map units are ground units (within :data:`MAX_SCALE_ERROR`) at the centre of ``bounds``."""
    h, k = point_scales(crs, bounds)
    return max(abs(h - 1), abs(k - 1)) <= MAX_SCALE_ERROR


def is_ground_metric(crs: Any, bounds: tuple[float, ...] | Any | None) -> bool:
    """A projected CRS in metres that is true to scale at ``bounds`` (None: unknown, units checked only)."""
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    if not c.is_projected:
        return False
    try:
        unit = float(c.axis_info[0].unit_conversion_factor)
    except (IndexError, AttributeError):  # pragma: no cover
        return False
    if abs(unit - 1.0) > 1e-9:
        return False
    return bounds is None or true_to_scale(c, bounds)
