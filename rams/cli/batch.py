"""``rams batch``: many flights, resumable, on this machine or a Dask cluster, into one survey GeoPackage."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def batch(
    flights: Path = typer.Argument(..., help="Folder of orthomosaics, or a manifest (.csv/.yaml: orthomosaic, "
                                   "flight_id, date, operator, sensor)."),
    out: Path = typer.Option(..., "--out", "-o", help="Batch folder: flights/*.gpkg, survey.gpkg, status. "
                             "Rerunning on it resumes."),
    sha: Path | None = typer.Option(None, "--sha", help="SHA polygons: add SHA reduction proposals."),
    sha_layer: str | None = typer.Option(None, "--sha-layer", help="Layer of --sha holding the SHAs."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Batch config YAML (keys detect, decisions, "
                                       "fuse, tiles_per_task; see docs/batch.md)."),
    model: list[str] | None = typer.Option(
        None, "--model", "-m",
        help="Model name under models/ or bundle path; repeat it to run several models into one result per flight "
        "(e.g. --model default --model scatterable-05cm for 0.5 cm flights).",
    ),
    threshold: float | None = typer.Option(None, "--threshold", help="Score threshold (overrides the "
                                           "operating point)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. "
                                         "tcp://10.0.0.5:8786 (default: a local cluster)."),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="Local worker processes "
                                       "(default: half the cores)."),
    connect_timeout: float = typer.Option(30.0, "--connect-timeout", min=0.1, help="Seconds to try reaching "
                                          "--scheduler."),
    skip_damaged: bool = typer.Option(
        False, "--skip-damaged",
        help="Leave parts of a mosaic GDAL cannot read (damaged blocks) not analysed, with a warning, instead of "
        "failing that flight.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Process every flight (detect, coverage quality, hazard polygons, SHA proposals) and merge them into a
    survey. Finished flights are skipped on a rerun, changed ones redone, failed ones retried; a failed flight
    does not stop the others (exit code 15 reports it)."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rams.batch.run import BatchConfig, BatchProgress, run_batch
    from rams.config import load_config

    cfg = load_config(BatchConfig, config, {
        "detect.model": model[0] if model else None,
        "detect.extra_models": model[1:] if model else None,  # --model given: exactly the models named
        "detect.threshold": threshold,
        "detect.read.skip_damaged": skip_damaged or None, "decisions.quality.read.skip_damaged": skip_damaged or None,
    })
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    ) as bar:
        t_flights = bar.add_task("flights", total=None, note="")
        t_tiles = bar.add_task("tiles  ", total=None, note="")
        t0 = time.perf_counter()

        def progress(p: BatchProgress) -> None:
            dt = max(time.perf_counter() - t0, 1e-6)
            failed = f"{p.flights_failed} failed" if p.flights_failed else ""
            bar.update(t_flights, completed=p.flights_finished, total=p.flights_total, note=failed)
            bar.update(t_tiles, completed=p.tiles_done, total=p.tiles_total or None,
                       note=f"{p.mpx / dt:.1f} Mpx/s")

        summary = run_batch(flights, out, cfg, sha=sha, sha_layer=sha_layer, scheduler=scheduler, workers=workers,
                            progress=progress, connect_timeout_s=connect_timeout)
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        _print_summary(summary)
    summary.raise_for_failures()


def _print_summary(summary: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from rams.batch.run import BatchSummary

    assert isinstance(summary, BatchSummary)
    table = Table(title=f"rams batch: {summary.out_dir}", title_justify="left")
    for col, justify in (("flight", "left"), ("state", "left"), ("hectares", "right"), ("detections", "right"),
                         ("tiles", "right"), ("time s", "right"), ("Mpx/s", "right"), ("note", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for f in summary.flights:
        rate = f"{f.mpx / f.seconds:.2f}" if f.state == "done" and f.seconds > 0 else ""
        note = f.error if f.state == "failed" else f.reason
        table.add_row(f.flight_id, f.state, f"{f.analysed_ha:.3f}", str(f.detections), str(f.tiles),
                      f"{f.seconds:.1f}" if f.state != "skipped" else "", rate, note or "")
    done = [f for f in summary.flights if f.state in ("done", "skipped")]
    table.add_section()
    counts = {s: sum(f.state == s for f in summary.flights) for s in ("done", "skipped", "failed")}
    table.add_row(
        f"{len(summary.flights)} flights",
        ", ".join(f"{n} {s}" for s, n in counts.items() if n),
        f"{sum(f.analysed_ha for f in done):.3f}", str(sum(f.detections for f in done)), "",
        f"{summary.seconds:.1f}", f"{summary.mpx / summary.seconds:.2f}" if summary.seconds > 0 else "", "",
    )
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # files and pipes: no wrapping of the table
    out.print(table)
    s = summary.survey_summary
    if summary.survey:
        state = "written" if summary.survey_rebuilt else "up to date"
        out.print(
            f"survey  {summary.survey} ({state}): {s.get('detections', 0)} objects from {s.get('sightings', 0)} "
            f"sightings ({s.get('seen_more_than_once', 0)} seen by several flights), "
            f"{s.get('analysed_ha', 0.0):.3f} ha analysed, "
            f"{s.get('hazard_polygons', {}).get('polygons', 0)} hazard polygon(s)",
            markup=False, highlight=False,
        )
        if "reduce" in s:
            r = s["reduce"]
            out.print(f"SHA     {r['shas']} SHA(s): {r['cancel_m2'] / 1e4:.3f} ha proposed for cancellation, "
                      f"{r['remain_m2'] / 1e4:.3f} ha remaining (recommendations for the authority)",
                      markup=False, highlight=False)
    for note in summary.notes:
        out.print(f"note    {note}", markup=False, highlight=False, soft_wrap=True)  # one line: copyable commands
    out.print(f"cluster {summary.cluster}" + (f" ({summary.workers} workers)" if summary.workers else ""),
              markup=False, highlight=False)
