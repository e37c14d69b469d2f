"""What ``rams info`` reports: an orthomosaic's description, its tile count at a model GSD, and a GSD verdict.

A library function returning a typed value; the CLI only renders it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rams.classes import smallest_length_m
from rams.config import TilingConfig
from rams.raster import (
    OrthoInfo,
    check_gsd,
    damaged_reads,
    describe,
    dim_values_note,
    image_bands_of,
    open_raster,
    source_value_range,
    target_grid,
)
from rams.tiling import count_tiles

#: Fewest pixels along its long side at which an object is considered visible to a detector.
MIN_TARGET_PX = 8.0


@dataclass(frozen=True)
class InfoReport:
    """``rams info`` result."""

    ortho: OrthoInfo
    target_gsd_m: float
    grid_height: int
    grid_width: int
    tile_size_px: int
    overlap_px: int
    tiles: int
    smallest_target_m: float
    gsd_verdict: str
    gsd_adequate: bool
    value_note: str | None = None
    """Set when the pixel values use under a quarter of the range they are scaled by (e.g. undeclared 12-bit
    data in uint16): the fix, as ``rams detect`` would warn."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ortho"] = self.ortho.to_dict()
        return d


def inspect_ortho(
    path: Path,
    target_gsd_m: float | None = None,
    tiling: TilingConfig | None = None,
    classes: list[str] | None = None,
    min_target_px: float = MIN_TARGET_PX,
    progress: Callable[[int, int], None] | None = None,
) -> InfoReport:
    """Describe ``path`` and say how a run at ``target_gsd_m`` would tile it and whether its GSD suffices.
    ``progress(done, total)``: the footprint read of a large mosaic without overviews (see
    :func:`rams.raster.valid_footprint`)."""
    tiling = tiling or TilingConfig()
    # overviews shown: info only reads the footprint, where they save a full decode
    with open_raster(path, overviews=True) as src, damaged_reads(path):
        info = describe(src, progress=progress)
        grid = target_grid(src, target_gsd_m)
        bands = image_bands_of(src)
        note = None
        if bands:  # values outside the range they are scaled by, or filling under a quarter of it
            vr = source_value_range(src, bands[0])
            note = dim_values_note(src, bands, vr)
    n = count_tiles(grid, tiling.tile_size_px, tiling.overlap_px)
    smallest = smallest_length_m(classes)
    try:
        verdict = check_gsd(info.gsd_m, smallest, min_target_px, force=False)
        ok = True
    except Exception as err:  # GSDError: report, don't fail, in `info`
        verdict = str(err).split(";")[0]
        ok = False
    return InfoReport(
        ortho=info,
        target_gsd_m=grid.gsd_m,
        grid_height=grid.height,
        grid_width=grid.width,
        tile_size_px=tiling.tile_size_px,
        overlap_px=tiling.overlap_px,
        tiles=n,
        smallest_target_m=smallest,
        gsd_verdict=verdict,
        gsd_adequate=ok,
        value_note=note,
    )
