"""``rams detect``: one command from an orthomosaic to a GeoPackage of candidate detections."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from rams.cli import VALUE_RANGE_HELP


def detect(
    ortho: Path = typer.Argument(
        ..., help="Orthomosaic GeoTIFF (RGB/RGBA, any size; EPSG:4326 and feet CRSs are warped to UTM)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Result GeoPackage (.gpkg) to write."),
    model: list[str] | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model name under models/ or bundle path; repeat it to run several models into one result "
        "(e.g. a small-item model beside the default).",
    ),
    aoi: Path | None = typer.Option(None, "--aoi", help="Area of interest polygons (e.g. the SHAs)."),
    aoi_layer: str | None = typer.Option(None, "--aoi-layer", help="Layer of the AOI file to use."),
    operating_point: str | None = typer.Option(
        None, "--operating-point", help="Named threshold from the model card (see `rams models show`)."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Score threshold (overrides the operating point)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Tiles per model batch (default: ~1 Mpx)."),
    tile_size: int | None = typer.Option(
        None,
        "--tile-size",
        help="Tile size in px at the model GSD (default: 1536, or the mosaic's shorter side if smaller).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Reader threads decoding tiles ahead (0: none; default: by core count)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda."),
    bands: str | None = typer.Option(None, "--bands", help="1-based band indices to use, e.g. 3,2,1 for BGR."),
    value_range: str | None = typer.Option(None, "--value-range", help=VALUE_RANGE_HELP),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML preset (see configs/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    force: bool = typer.Option(False, "--force", help="Proceed although the GSD is too coarse (recorded)."),
    skip_damaged: bool = typer.Option(
        False, "--skip-damaged",
        help="Leave parts GDAL cannot read (damaged blocks) not analysed, with a warning, instead of stopping.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Detect surface mines and ERW in ORTHO and write georeferenced candidates for human review."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from rams.cli.main import value_range_option
    from rams.config import load_config
    from rams.detect import DetectConfig, run_detect

    overrides = {
        "model": model[0] if model else None,
        "extra_models": model[1:] if model else None,  # --model given: exactly the models named
        "operating_point": operating_point,
        "threshold": threshold,
        "batch_size": batch_size,
        "tile_size_px": tile_size,
        "workers": workers,
        "device": device,
        "force": force or None,
        "read.bands": [int(b) for b in bands.split(",")] if bands else None,
        "read.value_range": value_range_option(value_range),
        "read.skip_damaged": skip_damaged or None,
    }
    cfg = load_config(DetectConfig, config, overrides)
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tiles"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    ) as bar:
        task = bar.add_task("detect", total=None, rate="")
        import time

        t0 = time.perf_counter()

        def progress(done: int, total: int, mpx: float) -> None:
            dt = max(time.perf_counter() - t0, 1e-6)
            bar.update(task, completed=done, total=total, rate=f"{mpx / dt:.1f} Mpx/s")

        def on_model(name: str, i: int, n: int) -> None:
            bar.update(task, description=f"detect, model {i}/{n} {name}")

        summary = run_detect(
            ortho, out, cfg, aoi, aoi_layer, resume=resume, overwrite=overwrite, progress=progress, on_model=on_model
        )
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
        return
    by_class = ", ".join(f"{k} {v}" for k, v in summary.detections_by_class.items()) or "none"
    lines = [
        f"tiles       {summary.tiles_total} ({summary.tiles_resumed} from checkpoint, {summary.tiles_empty} without "
        "imagery)",
        f"analysed    {summary.analysed_ha:.3f} ha at the model GSD (layer 'coverage'; outside it: not analysed)"
        if not summary.models
        else f"analysed    {summary.analysed_ha:.3f} ha by every model (layer 'coverage'; outside it: not analysed)",
        f"detections  {summary.detections} at {_threshold_words(summary.class_thresholds, summary.threshold)} "
        f"({by_class}): candidates for review",
        *([f"thresholds  {summary.joint}"] if summary.joint else []),
        f"speed       {summary.mpx:.0f} Mpx in {summary.seconds:.1f} s ({summary.mpx_per_s:.1f} Mpx/s)",
        f"output      {summary.output}",
    ]
    lines += [f"warning     {w}" for w in summary.warnings]
    lines += [f"hint        {h}" for h in summary.hints]
    typer.echo("\n".join(lines))


def _threshold_words(per_class: dict[str, float], lowest: float) -> str:
    """'score >= 0.6' or, for per-class thresholds, 'score >= 0.45-0.68 by class'."""
    values = sorted(set(per_class.values())) or [lowest]
    if len(values) == 1:
        return f"score >= {values[0]:g}"
    return f"score >= {values[0]:g}-{values[-1]:g} by class"
