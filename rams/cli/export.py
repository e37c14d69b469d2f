"""``rams export``: result layers to GeoJSON, KML, IMSMA shapefile zip, IMSMA CSV point lists, FlatGeobuf."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def export(
    gpkg: Path = typer.Argument(..., help="Result or decision GeoPackage."),
    fmt: str = typer.Option(..., "--format", "-f", help="geojson | kml | shp | csv | fgb"),
    out: Path = typer.Option(..., "--out", "-o", help="Output file (one layer, kml, shp) or folder (several)."),
    layer: list[str] | None = typer.Option(None, "--layer", "-l", help="Layer to export (repeat; default: all "
                                           "spatial layers)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Decisions config YAML (export section)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Export layers for GIS, field tablets and IMSMA (WGS84 except FlatGeobuf, which keeps the layer's CRS)."""
    from rams.config import load_config
    from rams.export import export_layers
    from rams.sha import DecisionsConfig

    cfg = load_config(DecisionsConfig, config)
    report = export_layers(gpkg, fmt, out, layer or None, cfg.export, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    layers = ", ".join(f"{k} ({v})" for k, v in report.layers.items())
    typer.echo(f"exported {layers} as {report.format} to {report.out}")
