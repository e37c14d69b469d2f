"""``rams synth``: write a synthetic survey scene (ortho.tif, truth.gpkg, scene.json) with exact truth."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _parse_size(text: str) -> tuple[float, float]:
    from rams.errors import ConfigError

    parts = text.lower().replace(" ", "").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        w, h = float(parts[0]), float(parts[1])
    except ValueError as err:
        raise ConfigError(
            f"--size {text!r} is not WIDTHxHEIGHT in metres; write e.g. --size 60x40 (60 m east-west, 40 m north-south)"
        ) from err
    if not (w > 0 and h > 0):
        raise ConfigError(f"--size {text!r} must have positive width and height in metres, e.g. 60x40")
    return w, h


def synth(
    out_dir: Path = typer.Argument(..., help="Folder to create with ortho.tif, truth.gpkg and scene.json."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed: the same seed gives identical files."),
    size: str | None = typer.Option(
        None, "--size", help="Scene extent in METRES as WIDTHxHEIGHT (west-east x north-south), e.g. 60x40."
    ),
    gsd: float | None = typer.Option(None, "--gsd", help="Ground sample distance in metres per pixel, e.g. 0.005."),
    terrain: str | None = typer.Option(
        None, "--terrain", help="ploughed, dry_grass, crop, gravel, sand or mixed (default mixed); stubble: a "
        "terrain never drawn for training (to evaluate on unseen ground)."
    ),
    targets: str | None = typer.Option(
        None, "--targets", help="Target preset: mixed, ap, at, scatterable, uxo, pfm1 or none (default mixed)."
    ),
    density: float | None = typer.Option(None, "--density", help="Targets per hectare (default 120; 0 with none)."),
    clutter: float | None = typer.Option(None, "--clutter", help="Multiplier on confuser densities (default 1)."),
    bands: str | None = typer.Option(None, "--bands", help="rgba (default), rgb (nodata 0) or thermal (uint8)."),
    untiled: bool = typer.Option(False, "--untiled", help="Write strips instead of 512 px tiles."),
    bigtiff: bool = typer.Option(False, "--bigtiff", help="Force BigTIFF (default: only when needed)."),
    full_footprint: bool = typer.Option(
        False, "--full-footprint", help="Valid everywhere (default: irregular footprint with alpha/nodata around it)."
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes rendering blocks (output is identical)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="SynthConfig YAML preset (flags override it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Make a synthetic orthomosaic of a (partly) mined field with exact ground truth.

    Targets are painted at true physical size for the GSD, with one sun, shadows, wear, burial and vegetation
    occlusion, among confusers (stones, litter, cans, bottles, leaves, weeds, clods, shadows), through
    simulated camera and mosaic effects. For training chips without files, use rams.synth.chips.ChipSampler.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rams.cli.main import stderr
    from rams.config import load_config
    from rams.synth.scene import SynthConfig
    from rams.synth.writer import write_scene

    width_m, height_m = _parse_size(size) if size is not None else (None, None)
    overrides = {
        "seed": seed,
        "width_m": width_m,
        "height_m": height_m,
        "gsd_m": gsd,
        "terrain": terrain,
        "targets": targets,
        "target_density_per_ha": density,
        "clutter": clutter,
        "bands": bands,
        "tiled": False if untiled else None,
        "bigtiff": True if bigtiff else None,
        "footprint": "full" if full_footprint else None,
    }
    cfg = load_config(SynthConfig, config, overrides)
    with Progress(
        TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeRemainingColumn(),
        console=stderr, transient=True, disable=as_json,
    ) as bar:
        task = bar.add_task("rows", total=cfg.height_px)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        res = write_scene(cfg, out_dir, overwrite=overwrite, progress=progress, workers=workers)
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=2))
        return
    typer.echo(
        f"wrote {res.out_dir}: ortho.tif {res.width_px} x {res.height_px} px ({res.megapixels:.1f} Mpx, "
        f"{cfg.gsd_m * 100:.2f} cm/px, {cfg.bands}, {res.valid_fraction * 100:.1f} % imaged), "
        f"truth.gpkg {res.n_targets} targets / {res.n_confusers} confusers, scene.json; {res.seconds:.1f} s"
    )
