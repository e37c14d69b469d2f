"""Plot of an :class:`rams.evaluate.EvalReport`: recall against false positives per hectare, and PR.

Rendered with matplotlib's Agg canvas (no pyplot, no display, no global backend state) to PNG bytes; the
caller writes them (atomically) where it wants.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from rams.evaluate import DetectionMetrics, EvalReport


def _fp_recall_xy(m: DetectionMetrics) -> tuple[list[float], list[float]] | None:
    c = m.curve
    if c.fp_per_ha is None or m.n_truth == 0:
        return None
    return [0.0, *c.fp_per_ha.tolist()], [0.0, *c.recall.tolist()]


def _pr_xy(m: DetectionMetrics) -> tuple[list[float], list[float]] | None:
    """Precision envelope (what AP integrates) as steps: area under the curve drawn equals AP."""
    c = m.curve
    if m.n_truth == 0 or len(c.recall) == 0:
        return None
    envelope = np.maximum.accumulate(c.precision[::-1])[::-1]
    return [0.0, *c.recall.tolist()], [float(envelope[0]), *envelope.tolist()]


def render_plot(report: EvalReport, title: str | None = None, per_class: bool = True) -> bytes:
    """PNG bytes: left, recall vs FP/ha (symlog x, reported FP-rate limits dotted); right, precision-recall.

    Bold: any ordnance (class-agnostic); dashed: class-aware pooled; thin: each class with items.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_fp, ax_pr = fig.subplots(1, 2)
    series: list[tuple[str, DetectionMetrics, dict[str, Any]]] = [
        (f"any ordnance (AP {_fmt(report.any_ordnance.ap)})", report.any_ordnance, {"lw": 2.4, "color": "k"}),
        (f"class-aware (AP {_fmt(report.class_aware.ap)})", report.class_aware,
         {"lw": 1.8, "color": "0.4", "ls": "--"}),
    ]
    if per_class:
        series += [
            (f"{name} (n={m.n_truth}, AP {_fmt(m.ap)})", m, {"lw": 1.0})
            for name, m in report.per_class.items()
            if m.n_truth
        ]
    for k, (label, m, style) in enumerate(series):
        style.setdefault("color", f"C{k % 10}")
        fr = _fp_recall_xy(m)
        if fr is not None:
            ax_fp.step(fr[0], fr[1], where="post", label=label, **style)
        pr = _pr_xy(m)
        if pr is not None:
            ax_pr.step(pr[0], pr[1], where="pre", label=label, **style)
            ax_pr.plot(m.curve.recall, m.curve.precision, ".", color=style["color"], ms=3)
    if report.area_m2 is not None:
        for rate in (r.fp_per_ha_limit for r in report.any_ordnance.at_fp_rates):
            ax_fp.axvline(rate, color="tab:red", ls=":", lw=0.8)
        ax_fp.set_xscale("symlog", linthresh=1.0)
        ax_fp.set_xlabel(f"false positives per hectare ({report.area_ha:.3g} ha, {report.area_source})")
    else:
        ax_fp.text(0.5, 0.5, "evaluated area unknown: no FP/ha", ha="center", transform=ax_fp.transAxes)
        ax_fp.set_xlabel("false positives per hectare")
    ax_fp.set_ylabel("recall")
    ax_fp.set_ylim(0, 1.02)
    ax_fp.grid(alpha=0.3)
    ax_fp.set_title("recall vs false alarms")
    ax_pr.set_xlabel("recall")
    ax_pr.set_ylabel("precision")
    ax_pr.set_xlim(0, 1.02)
    ax_pr.set_ylim(0, 1.02)
    ax_pr.grid(alpha=0.3)
    ax_pr.set_title("precision-recall (envelope; dots: thresholds)")
    ax_fp.legend(loc="lower right", fontsize=7)
    fig.suptitle(
        title
        or f"{report.n_truth} items, {report.n_pred} detections; recall {_fmt(report.any_ordnance.recall)} "
        f"(any ordnance), {_fmt(report.class_aware.recall)} (class-aware)",
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
