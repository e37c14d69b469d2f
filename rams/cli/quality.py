"""``rams quality``: coverage quality of an orthomosaic (adequate / inadequate:<reason> / not_imaged)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rams.cli import VALUE_RANGE_HELP


def quality(
    ortho: Path = typer.Argument(..., help="Orthomosaic GeoTIFF."),
    out: Path = typer.Option(..., "--out", "-o", help="GeoPackage to write (layer coverage_quality)."),
    aoi: Path | None = typer.Option(None, "--aoi", help="Area of interest (vector file); default: raster extent."),
    aoi_layer: str | None = typer.Option(None, "--aoi-layer", help="Layer of --aoi to use."),
    add_to: Path | None = typer.Option(
        None, "--add-to", help="Result GeoPackage to copy into OUT, so that OUT holds detections and quality."
    ),
    gsd: float | None = typer.Option(None, "--gsd", help="Analysis (model) GSD in metres (default: native)."),
    classes: str | None = typer.Option(
        None, "--classes", help="Comma-separated target classes the imagery must resolve (default: all)."
    ),
    cell_size: float | None = typer.Option(None, "--cell-size", help="Quality cell size in metres."),
    value_range: str | None = typer.Option(None, "--value-range", help=VALUE_RANGE_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="Decisions config YAML (quality section)."),
    skip_damaged: bool = typer.Option(
        False, "--skip-damaged", help="Leave parts GDAL cannot read (damaged blocks) not imaged instead of stopping."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Judge, cell by cell, whether the ground was imaged well enough to see the smallest requested target."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rams.cli.main import stderr, value_range_option
    from rams.config import load_config
    from rams.quality import quality_file
    from rams.sha import DecisionsConfig

    overrides = {
        "quality.analysis_gsd_m": gsd,
        "quality.classes": [c.strip() for c in classes.split(",") if c.strip()] if classes else None,
        "quality.cell_size_m": cell_size,
        "quality.read.skip_damaged": skip_damaged or None,
        "quality.read.value_range": value_range_option(value_range),
    }
    cfg = load_config(DecisionsConfig, config, overrides)
    with Progress(
        TextColumn("quality"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=stderr, transient=True, disable=as_json,
    ) as bar:
        task = bar.add_task("tiles", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        res = quality_file(ortho, out, cfg.quality, aoi=aoi, aoi_layer=aoi_layer, add_to=add_to,
                           overwrite=overwrite, progress=progress)
    s = res.summary()
    if as_json:
        typer.echo(json.dumps({"out": str(out), **s}, indent=2, default=str))
        return
    total = s["total_m2"] or 1.0
    lines = [
        f"judged at {s['analysis_gsd_m'] * 100:.2f} cm/px (native {s['native_gsd_m'] * 100:.2f} cm/px) for targets "
        f"of {s['smallest_target_m'] * 100:.1f} cm; {s['cells']} cells in {s['tiles']} tiles",
        f"limits for the threat classes: re-blur index <= {s['blur_limit']:.2f}"
        + (f", mean grey >= {s['grey_floor']:.2f}" if s["grey_floor"] > 0 else ""),
    ]
    for name, area in sorted(s["area_m2_by_class"].items()):
        lines.append(f"  {name:<24}{area:>14,.1f} m2 {100 * area / total:6.1f} %")
    lines.append(f"written {out} (layer coverage_quality); not imaged or inadequate ground cannot support "
                 "cancellation")
    lines.extend(f"warning  {w}" for w in s["warnings"])
    typer.echo("\n".join(lines))
