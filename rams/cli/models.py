"""``rams models list`` / ``rams models show NAME``: the shipped model bundles and their cards."""

from __future__ import annotations

import json
from typing import Any

import typer

app = typer.Typer(help="List shipped detector models and show their model cards.", no_args_is_help=True)


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the models in models/ (or $RAMS_MODELS_DIR): name, version, bands, GSD, classes, hash check."""
    from rams.detector.bundle import list_model_names, load_bundle, models_dir
    from rams.errors import ModelError

    rows: list[dict[str, Any]] = []
    for name in list_model_names():
        try:
            card = load_bundle(name).card
            rows.append(
                {
                    "name": name,
                    "version": card.version,
                    "bands": card.bands,
                    "gsd_m": card.gsd_m,
                    "gsd_range_m": list(card.gsd_range_m),
                    "classes": card.classes,
                    "status": (f"training start: {', '.join(card.untrained_classes)} untrained"
                               if card.untrained_classes else "ok"),
                }
            )
        except ModelError as err:
            rows.append({"name": name, "status": f"broken: {err}"})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no models in {models_dir()}")
        return
    for r in rows:
        if r["status"] != "ok":
            typer.echo(f"{r['name']:<20} {r['status']}")
            continue
        lo, hi = r["gsd_range_m"]
        typer.echo(
            f"{r['name']:<20} v{r['version']:<8} {'/'.join(r['bands']):<16} "
            f"{r['gsd_m'] * 100:.2f} cm/px (serves {lo * 100:.3g}-{hi * 100:.3g} cm)  "
            f"{len(r['classes'])} classes: {', '.join(r['classes'])}  [sha256 ok]"
        )


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Model name (folder in models/) or path to a bundle folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole card as JSON."),
) -> None:
    """Show a model's card: classes, bands, GSD, tiling, operating points, training and held-out metrics."""
    from rams.detector.bundle import load_bundle

    bundle = load_bundle(name)
    card = bundle.card
    if as_json:
        typer.echo(json.dumps(card.model_dump(mode="json"), indent=2))
        return
    n_params = sum(int(t.numel()) for t in bundle.state_dict.values())
    lo, hi = card.gsd_range_m
    t = card.training
    lines = [
        f"name          {card.name} v{card.version}",
        f"description   {card.description}",
        f"architecture  {card.architecture} ({n_params} weights) {json.dumps(card.params)}",
        "classes       " + ", ".join(f"{i}:{c}" for i, c in enumerate(card.classes)),
        *(
            [f"untrained     {', '.join(card.untrained_classes)}: a training start (scripts/grow_bundle.py), not a "
             "model to run; rams detect refuses it"]
            if card.untrained_classes else []
        ),  # fmt: skip
        f"bands         {', '.join(card.bands)} (mean {card.normalisation.mean}, std {card.normalisation.std})",
        f"gsd           works at {card.gsd_m * 100:.2f} cm/px, serves {lo * 100:.2f}-{hi * 100:.2f} cm imagery",
        f"tiling        {card.tile_size_px} px tiles, {card.overlap_px} px overlap",
        "operating     "
        + ", ".join(
            f"{k}={v:.3f}{' (default)' if k == card.default_operating_point else ''}"
            for k, v in card.operating_points.items()
        )
        + ("; per class below (what rams detect applies)" if card.class_thresholds else ""),
        *(
            f"              {k} by class: " + ", ".join(f"{c} {t:.3f}" for c, t in card.thresholds(k).items())
            for k in card.class_thresholds
        ),
        f"training      {t.command}",
        f"              data: {'; '.join(t.data)}",
        f"              seed {t.seed}, {t.steps} steps, {t.duration} on {t.device}",
        f"weights       sha256 {card.weights_sha256} (verified)",
        f"created       {card.created} by rams {card.rams_version}",
    ]
    for note in t.notes:
        lines.append(f"note          {note}")
    for key, value in card.metrics.items():
        lines.extend(_metric_lines(key, value))
    for other, comp in card.companions.items():
        point = comp.default_operating_point or card.default_operating_point
        lines.append(f"beside        {other} (weights {comp.weights_sha256[:12]}...): thresholds set for both together "
                     f"(rams detect --model {other} --model {card.name}; default point {point})")  # fmt: skip
        for point, by_model in comp.thresholds.items():
            for model, per in by_model.items():
                lines.append(f"              {point}, {model}: " + ", ".join(f"{c} {t:.2f}" for c, t in per.items()))
        for key, value in comp.metrics.items():
            lines.extend(f"  {line}" for line in _metric_lines(key, value))
    typer.echo("\n".join(lines))


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _metric_lines(key: str, value: Any) -> list[str]:
    """A metrics entry in a few readable lines (``--json`` shows everything)."""
    if not isinstance(value, dict):
        return [f"metric        {key}: {json.dumps(value)}"]
    out = [f"metric        {key}: {value.get('what', '')}".rstrip()]
    for agg in ("class_aware", "any_ordnance"):
        a = value.get(agg)
        if isinstance(a, dict):
            fp = a.get("fp_per_ha")
            out.append(
                f"                {agg}: recall {_fmt(a.get('recall'))} at {_fmt(fp, '.1f')} FP/ha"
                + (f" (threshold {_fmt(a.get('score_threshold'))})" if a.get("score_threshold") is not None else "")
            )
    per_class = value.get("per_class")
    if isinstance(per_class, dict):
        for name, r in per_class.items():
            if isinstance(r, dict):
                found = r.get("found", r.get("tp"))
                items = r.get("items", r.get("n_items"))
                out.append(
                    f"                {name:<12} recall {_fmt(r.get('recall'))} ({found}/{items}), "
                    f"{_fmt(r.get('fp_per_ha'), '.1f')} FP/ha"
                )
    return out
