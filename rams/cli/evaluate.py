"""``rams evaluate``: detections against truth in map units (recall, FP/ha, AP, Wilson intervals)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rams.errors import ConfigError, VectorInputError

if TYPE_CHECKING:
    from rams.evaluate import DetectionMetrics, EvalReport

DEFAULT_BREAKDOWN = ("terrain", "visible_fraction", "size_px")


def _split_layer(spec: str) -> tuple[Path, str | None]:
    """``path.gpkg:layer`` -> (path, layer); a path that exists as given is never split."""
    path = Path(spec)
    if path.exists() or ":" not in spec:
        return path, None
    head, _, tail = spec.rpartition(":")
    if head and tail and "/" not in tail and "\\" not in tail:
        return Path(head), tail
    return path, None


def _resolve(spec: str, option_layer: str | None, default_layer: str, option: str) -> tuple[Path, str | None]:
    from rams.layers import list_layers

    path, layer = _split_layer(spec)
    if layer is not None and option_layer is not None and layer != option_layer:
        raise ConfigError(f"{spec} names layer {layer!r} but {option} says {option_layer!r}; give only one")
    layer = layer or option_layer
    if layer is None and default_layer in list_layers(path):
        layer = default_layer
    return path, layer


def _parse_radius(text: str | None) -> float | dict[str, float] | None:
    if text is None:
        return None
    try:
        if "=" not in text:
            return float(text)
        out: dict[str, float] = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            out[name.strip()] = float(value)
        return out
    except ValueError as err:
        raise ConfigError(
            f"--radius {text!r} is not a radius: give metres (0.3) or per class (pfm1=0.16,shell=0.45)"
        ) from err


def _parse_rates(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise ConfigError(f"--fp-rates {text!r} is not a list of numbers (e.g. 1,5,20)") from err


def evaluate(
    pred: str = typer.Argument(
        ...,
        metavar="PRED",
        help="Detections (layer 'detections' by default; PATH:LAYER or --pred-layer picks another).",
    ),
    truth: str = typer.Argument(
        ...,
        metavar="TRUTH",
        help="Truth items (layer 'truth' by default; PATH:LAYER or --truth-layer picks another).",
    ),
    pred_layer: str | None = typer.Option(None, "--pred-layer", help="Layer of PRED holding the detections."),
    truth_layer: str | None = typer.Option(None, "--truth-layer", help="Layer of TRUTH holding the items."),
    class_column: str = typer.Option(
        "class", "--class-column",
        help="Column of TRUTH naming each item's class (a rams class, or an item model such as PMN-2).",
    ),
    aoi: str | None = typer.Option(
        None, "--aoi", help="Area of interest polygons (PATH or PATH:LAYER): everything outside is ignored."
    ),
    radius: str | None = typer.Option(
        None,
        "--radius",
        help="Matching radius in metres from the item centre: one value, or per class 'pfm1=0.2,shell=0.5' "
        "(default: half the class's largest item length + --tolerance).",
    ),
    tolerance: float = typer.Option(0.10, "--tolerance", help="Metres added to default radii."),
    area_ha: float | None = typer.Option(
        None, "--area-ha", help="Evaluated area in hectares for FP/ha (default: AOI, coverage layer, extent)."
    ),
    no_coverage: bool = typer.Option(
        False, "--no-coverage", help="Ignore the 'coverage' layer of PRED when sizing the evaluated area."
    ),
    target_recall: float = typer.Option(
        0.95, "--target-recall", help="Report the highest score threshold reaching this recall."
    ),
    fp_rates: str = typer.Option(
        "1,5,20", "--fp-rates", help="False alarms per hectare at which to report the best recall."
    ),
    by: str | None = typer.Option(
        None,
        "--by",
        help="Truth attributes to break recall down by, comma-separated "
        f"(default: those of {','.join(DEFAULT_BREAKDOWN)} present; 'none' for no breakdown).",
    ),
    min_score: float | None = typer.Option(None, "--min-score", help="Ignore detections scoring below this."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the text table."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON report to this file."),
    errors: Path | None = typer.Option(
        None, "--errors", help="Also write a GeoPackage of the false alarms and missed items (class-aware) to review "
        "in GIS; its false_alarms layer can be the negatives of an ortho training source."
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write a PNG: recall vs FP/ha, and precision-recall."
    ),
    curves: bool = typer.Option(False, "--curves", help="Include the full curves in the JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --out / --plot / --errors files."),
) -> None:
    """Match PRED detections to TRUTH items in metres; report recall, FP/ha, AP and operating points."""
    from rams.errors import AOIError
    from rams.evaluate import evaluate as run_evaluate
    from rams.evaluate_plot import render_plot
    from rams.layers import list_layers, read_layer
    from rams.outputs import atomic_path, check_output

    for dest in (out, plot, errors):
        if dest is not None:
            check_output(dest, overwrite)
    radius_m = _parse_radius(radius)
    rates = _parse_rates(fp_rates)

    pred_path, p_layer = _resolve(pred, pred_layer, "detections", "--pred-layer")
    truth_path, t_layer = _resolve(truth, truth_layer, "truth", "--truth-layer")
    pred_gdf = read_layer(pred_path, p_layer, required_columns=("label", "score"), what="prediction layer")
    try:
        truth_gdf = read_layer(truth_path, t_layer, required_columns=(class_column,), what="truth layer")
    except VectorInputError as err:
        if "lacks column" not in str(err):
            raise
        raise VectorInputError(f"{err}, or name the column that holds the classes with --class-column") from err
    if class_column != "class":  # the column the items are labelled in, under the name evaluation reads
        truth_gdf = truth_gdf.drop(columns=[c for c in ("class",) if c in truth_gdf.columns])
        truth_gdf = truth_gdf.rename(columns={class_column: "class"})
    coverage = None
    if not no_coverage and area_ha is None and "coverage" in list_layers(pred_path) and p_layer != "coverage":
        coverage = read_layer(pred_path, "coverage", what="coverage layer")
    aoi_gdf = None
    if aoi is not None:
        aoi_path, aoi_layer = _split_layer(aoi)
        aoi_gdf = read_layer(aoi_path, aoi_layer, what="AOI layer")
        if len(aoi_gdf) == 0:
            raise AOIError(f"AOI layer in {aoi_path} is empty; give a layer with at least one polygon")
    if by is None:
        breakdown = tuple(a for a in DEFAULT_BREAKDOWN if a in truth_gdf.columns)
    elif by.strip().lower() == "none":
        breakdown = ()
    else:
        breakdown = tuple(a.strip() for a in by.split(",") if a.strip())

    report = run_evaluate(
        pred_gdf,
        truth_gdf,
        area_m2=None if area_ha is None else area_ha * 1e4,
        aoi=aoi_gdf,
        coverage=coverage,
        radius_m=radius_m,
        tolerance_m=tolerance,
        target_recall=target_recall,
        fp_rates_per_ha=rates,
        breakdown_by=breakdown,
        min_score=min_score,
    )
    payload = report.to_dict(include_curves=curves)
    payload["inputs"] = {
        "pred": str(pred_path), "pred_layer": p_layer, "truth": str(truth_path), "truth_layer": t_layer,
        "aoi": aoi,
    }
    text = json.dumps(payload, indent=2, default=str)
    if out is not None:
        with atomic_path(out, overwrite=overwrite) as tmp:
            tmp.write_text(text + "\n")
    if errors is not None:
        from rams.layers import write_gpkg

        write_gpkg(
            errors, {"false_alarms": report.false_alarms, "missed": report.missed},
            metadata={"what": "rams evaluate errors: class-aware false alarms and missed items",
                      "pred": str(pred_path), "truth": str(truth_path),
                      "min_score": "" if min_score is None else str(min_score)},
            overwrite=overwrite,
        )  # fmt: skip
    if plot is not None:
        png = render_plot(report, title=f"{pred_path.name} vs {truth_path.name}")
        with atomic_path(plot, overwrite=overwrite) as tmp:
            tmp.write_bytes(png)
    typer.echo(text if as_json else render_text(report))
    if errors is not None and not as_json:
        typer.echo(f"errors: {len(report.false_alarms)} false alarms and {len(report.missed)} missed items in {errors}")


# ------------------------------------------------------------------------------------------ rendering


def _f(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _row(name: str, m: DetectionMetrics) -> list[str]:
    ci = "" if m.recall_ci95 is None else f" [{m.recall_ci95[0]:.2f}-{m.recall_ci95[1]:.2f}]"
    cells = [
        name, str(m.n_truth), str(m.n_pred), str(m.tp), str(m.fp), str(m.fn),
        _f(m.recall) + ci, _f(m.precision), _f(m.f1), _f(m.ap), _f(m.fp_per_ha, 2),
    ]
    cells += [_f(r.point.recall) for r in m.at_fp_rates]
    return cells


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = zip(r, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    return [line(r).rstrip() for r in [header, *rows]]


def _op_line(name: str, m: DetectionMetrics) -> str:
    p = m.at_target_recall
    if p is None:
        return f"  {name}: not reached (recall {_f(m.recall)} with every detection kept)"
    fph = "" if p.fp_per_ha is None else f", {p.fp_per_ha:.2f} FP/ha"
    return (
        f"  {name}: score >= {p.score_threshold:.4g} gives recall {_f(p.recall)}, precision {_f(p.precision)}"
        f"{fph} ({p.tp} TP, {p.fp} FP)"
    )


def render_text(report: EvalReport) -> str:
    """The human-readable report printed by default."""
    area = "unknown" if report.area_ha is None else f"{report.area_ha:.4g} ha"
    lines = [
        f"evaluated   {area} ({report.area_source}), CRS {report.crs}",
        f"inputs      {report.n_truth} items, {report.n_pred} detections"
        + (
            f" ({report.n_truth_outside_aoi} items and {report.n_pred_outside_aoi} detections outside "
            "the AOI ignored)"
            if report.n_truth_outside_aoi or report.n_pred_outside_aoi
            else ""
        )
        + (f"; min score {report.min_score:g}" if report.min_score is not None else ""),
        "matching    centre in footprint or within radius of item centre, greedy by score, one detection "
        "per item (duplicates are FP); radius "
        + ", ".join(f"{k} {v:.3g} m" for k, v in report.radius_m.items()),
        "",
    ]
    rate_heads = [f"R@{r.fp_per_ha_limit:g}/ha" for r in report.any_ordnance.at_fp_rates]
    header = ["", "items", "dets", "TP", "FP", "FN", "recall [95% CI]", "prec", "F1", "AP", "FP/ha"]
    header += rate_heads
    rows = [_row("any ordnance", report.any_ordnance), _row("class-aware", report.class_aware)]
    rows += [_row(f"  {name}", m) for name, m in report.per_class.items()]
    lines += _table(header, rows)
    if report.map_macro is not None:
        lines.append(f"mean per-class AP (class-aware): {report.map_macro:.3f}")
    lines += [
        "",
        f"highest threshold reaching recall {report.any_ordnance.target_recall:g}:",
        _op_line("any ordnance", report.any_ordnance),
        _op_line("class-aware", report.class_aware),
    ]
    seen = {lab for row in report.confusion.values() for lab in row} - {"(missed)"}
    labels = [c for c in report.per_class if c in seen] + sorted(seen - set(report.per_class)) + ["(missed)"]
    if len(report.confusion) > 1 or len(labels) > 2:
        lines += ["", "truth class (rows) x detected label (columns), any-ordnance matching:"]
        crow = [[t, *(str(row.get(lab, 0)) for lab in labels)] for t, row in report.confusion.items()]
        lines += _table(["", *labels], crow)
    for attr, brows in report.breakdowns.items():
        lines += ["", f"recall by {attr}:"]
        lines += _table(
            ["", "items", "found", "recall [95% CI]", "same class"],
            [
                [
                    f"  {r.value}", str(r.n_truth), str(r.found),
                    f"{r.recall:.3f} [{r.recall_ci95[0]:.2f}-{r.recall_ci95[1]:.2f}]",
                    f"{r.recall_same_class:.3f}",
                ]
                for r in brows
            ],
        )
    return "\n".join(lines)
