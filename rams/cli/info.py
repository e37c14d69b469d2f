"""``rams info``: describe an orthomosaic and what a run on it would do."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def info(
    ortho: Path = typer.Argument(..., help="Orthomosaic GeoTIFF."),
    gsd: float | None = typer.Option(None, "--gsd", help="Target GSD in metres for tiling (default: native)."),
    tile_size: int = typer.Option(512, "--tile-size", help="Tile size in pixels at the target GSD."),
    overlap: int = typer.Option(64, "--overlap", help="Tile overlap in pixels at the target GSD."),
    classes: str | None = typer.Option(
        None, "--classes", help="Comma-separated target classes for the GSD verdict (default: all)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Describe ORTHO: size, bands, CRS, GSD, footprint, masks, tiling, and a GSD verdict for the targets."""
    from rams.config import TilingConfig
    from rams.ingest import inspect_ortho

    tiling = TilingConfig(tile_size_px=tile_size, overlap_px=overlap)
    cls = [c.strip() for c in classes.split(",")] if classes else None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = Console(stderr=True)
    with Progress(TextColumn("footprint (no overviews: every block is read)"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=True,
                  disable=as_json or not err.is_terminal) as bar:  # fmt: skip
        task = bar.add_task("footprint", total=None)
        report = inspect_ortho(ortho, gsd, tiling, cls,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    o = report.ortho
    lines = [
        f"file        {o.path} ({o.file_size_bytes / 1e6:.1f} MB, {o.driver}, "
        f"{'tiled ' + 'x'.join(map(str, o.block_shape)) if o.is_tiled else 'untiled (strips)'}, "
        f"compression {o.compression or 'none'})",
        f"size        {o.height} rows x {o.width} cols ({o.width * o.height / 1e6:.1f} Mpx), "
        f"{o.count} bands {', '.join(o.band_names)}, {o.dtype}",
        f"crs         {_crs_words(o.crs)}"
        + (" (geographic: read through a warp to UTM)" if o.crs_is_geographic
           else "" if o.crs_is_metric
           else " (not in ground metres, e.g. feet or Web Mercator: read through a warp to UTM)"),
        f"gsd         {o.gsd_m * 100:.2f} cm/px" + _not_square(o.pixel_sides_m),
        f"mask        {o.mask_kind}" + (f" (nodata={o.nodata})" if o.nodata is not None else ""),
        f"overviews   {', '.join(map(str, o.overviews)) or 'none'}" + _overview_hint(o),
    ]
    if o.valid_fraction is not None:
        lines.append(
            f"footprint   {(o.footprint_area_m2 or 0) / 1e4:.3f} ha imaged "
            f"({o.valid_fraction * 100:.1f} % of the extent)"
        )
    lines += [
        f"tiling      {report.tiles} tiles of {report.tile_size_px} px (overlap {report.overlap_px} px) "
        f"at {report.target_gsd_m * 100:.2f} cm/px on a {report.grid_height} x {report.grid_width} grid "
        "(as set by --tile-size/--overlap; rams detect picks its own from the model and records it in its output)",
        f"verdict     {report.gsd_verdict}",
    ]
    if report.value_note:
        lines.append(f"values      {report.value_note}")
    typer.echo("\n".join(lines))


def _crs_words(crs: str) -> str:
    """An EPSG code as it is; a long WKT (e.g. a compound CRS with a vertical datum) by its name."""
    if len(crs) <= 60:
        return crs
    from pyproj import CRS

    try:
        return CRS.from_user_input(crs).name
    except Exception:  # pragma: no cover - unreadable WKT: show its start
        return crs[:60] + "..."


def _not_square(sides: tuple[float, float] | None) -> str:
    """Words for pixels that are not square (sides differing by over 1 %): the coarser side is the GSD."""
    if sides is None or abs(sides[0] - sides[1]) <= 0.01 * max(sides):
        return ""
    return (f" (pixels not square: {sides[0] * 100:.2f} cm across x {sides[1] * 100:.2f} cm down; the coarser "
            "side is what the imagery resolves)")


def _overview_hint(o: object) -> str:
    """For a large mosaic without overviews: what building them buys."""
    from rams.raster import FOOTPRINT_STRIP_PX

    width, height, overviews = getattr(o, "width", 0), getattr(o, "height", 0), getattr(o, "overviews", ())
    if overviews or width * height <= FOOTPRINT_STRIP_PX:
        return ""
    name = Path(str(getattr(o, "path", "FILE"))).name
    return (f" (the footprint below took a read of every block; `gdaladdo -ro -r average {name} 2 4 8 16 32 64` "
            "makes it, and panning in QGIS, fast; -ro writes them beside the file, which stays the same input for "
            "--resume and for pairing results)")
