"""``rams polygons``: candidate hazard polygons from the detections of a result GeoPackage."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def polygons(
    result: Path = typer.Argument(..., help="Result GeoPackage of rams detect (layer 'detections')."),
    out: Path = typer.Option(..., "--out", "-o", help="New GeoPackage: a copy of RESULT plus 'hazard_polygons'."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Decisions config YAML (see configs/)."),
    georef_error: float | None = typer.Option(
        None, "--georef-error", help="Georeferencing error of the mosaic in metres, added to every buffer."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Cluster detections per class into buffered candidate hazard polygons (one detection is evidence too)."""
    from rams.config import load_config
    from rams.polygons import polygons_file, summarise
    from rams.sha import DecisionsConfig

    cfg = load_config(DecisionsConfig, config, {"polygons.georef_error_m": georef_error})
    layer = polygons_file(result, out, cfg.polygons, overwrite=overwrite)
    s = summarise(layer)
    if as_json:
        typer.echo(json.dumps({"out": str(out), **s}, indent=2))
        return
    typer.echo(
        f"{s['polygons']} candidate hazard polygon(s) from {s['items']} detection(s), "
        f"{s['area_m2'] / 1e4:.3f} ha ({', '.join(f'{k}: {v}' for k, v in s['by_status'].items()) or 'none'})"
    )
    for _, row in layer.iterrows():
        typer.echo(
            f"  {row.poly_id}  {row.evidence_status:9s}  {row.n_items:3d} item(s) [{row.classes}]  "
            f"max score {row.score_max:.2f}  {row.area_m2:,.0f} m2"
        )
    typer.echo(f"written {out} (layer hazard_polygons); candidates are recommendations for human review")
