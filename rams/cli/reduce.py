"""``rams reduce``: SHA reduction proposals from a result GeoPackage and a layer of SHAs."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def reduce(
    result: Path = typer.Argument(..., help="Result GeoPackage (detections, coverage; optionally hazard_polygons, "
                                   "coverage_quality)."),
    sha: Path = typer.Option(..., "--sha", help="Vector file with the SHA polygons (GeoPackage, shapefile...)."),
    out: Path = typer.Option(..., "--out", "-o", help="New GeoPackage: a copy of RESULT plus the proposal layers."),
    sha_layer: str | None = typer.Option(None, "--sha-layer", help="Layer of --sha holding the SHAs."),
    id_column: str | None = typer.Option(None, "--id-column", help="SHA attribute with the SHA ID."),
    quality: Path | None = typer.Option(
        None, "--quality", help="GeoPackage from rams quality (layer coverage_quality), if not in RESULT."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="Decisions config YAML (see configs/)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Propose, per SHA, the area to keep and the area that may be proposed for cancellation.

    Cancellation is proposed only where the ground was imaged adequately, analysed by the detector and free
    of evidence. Every figure is a recommendation for the national mine action authority.
    """
    from rams.config import load_config
    from rams.sha import DecisionsConfig, reduce_files

    cfg = load_config(DecisionsConfig, config, {"reduce.sha_id_column": id_column})
    res = reduce_files(result, sha, out, cfg, sha_layer=sha_layer, quality_path=quality, overwrite=overwrite)
    summary = res.summary()
    if as_json:
        typer.echo(json.dumps({"out": str(out), **summary}, indent=2, default=str))
        return
    header = f"{'SHA':<14}{'area ha':>9}{'adequate %':>12}{'evidence m2':>13}{'cancel ha':>11}{'cancel %':>10}" \
             f"{'remain ha':>11}  status"
    lines = [header, "-" * len(header)]
    for row in summary["per_sha"]:
        lines.append(
            f"{str(row['sha_id'])[:13]:<14}{row['sha_ha']:>9.3f}{row['adeq_pct']:>12.1f}{row['evid_m2']:>13.0f}"
            f"{row['cancel_ha']:>11.3f}{row['cancel_pct']:>10.1f}{row['remain_ha']:>11.3f}  {row['status']}"
        )
        if row["note"]:
            lines.append(f"{'':14}{row['note']}")
    for note in summary["notes"]:
        lines.append(f"note: {note}")
    lines.append(f"written {out} (layers sha_reduction, sha_proposed_remaining, sha_proposed_cancellation)")
    typer.echo("\n".join(lines))
