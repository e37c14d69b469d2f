"""The detector competence gate: may a detector's silence support cancelling ground?

Absence of detections is evidence only from a detector that is known to find the suspected threats. ``rams
detect`` records its model's measured per-class recall (the card's ``metrics.held_out_flights`` if the model was
evaluated on a site's own annotated flights, else ``metrics.synthetic_scenes``; with the lower ends of the 95 %
intervals) and the score thresholds it kept detections at in the result's ``rams_metadata``; ``rams reduce`` and
``rams batch`` call :func:`run_detector_gate` and propose no cancellation unless, for every threat class, that
recall reaches the configured minimum (the lower end of its 95 % interval, where recorded) and the run's
threshold for the class is no stricter than the one the recall was measured at (a stricter threshold keeps fewer
detections, so the measured recall no longer holds).

Pure Python on purpose (JSON and YAML only): ``rams detect`` writes the record without importing the decision
machinery, and the decision steps read it without importing torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

#: Thresholds closer than this count as equal (they are stored as decimal text).
_EPS = 1e-9


#: Card ``metrics`` keys whose evaluation the gate uses, first found wins: a site's own annotated flights held
#: out from calibration (``scripts/eval_model.py --flights``) are closer evidence than synthetic scenes.
RECALL_KEYS: tuple[str, ...] = ("held_out_flights", "synthetic_scenes")


def model_recall_record(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a detection run records about its model's measured recall (from the card's ``metrics``, the first of
    :data:`RECALL_KEYS` present): the recall per class with the lower ends of its 95 % intervals, and the
    threshold(s) it was measured at (``class_thresholds`` when the evaluation used per-class thresholds)."""
    key = next((k for k in RECALL_KEYS if isinstance(metrics.get(k), Mapping)), None)
    scenes = metrics.get(key) if key else None
    if not isinstance(scenes, Mapping) or not isinstance(scenes.get("per_class"), Mapping):
        return None
    record: dict[str, Any] = {
        "score_threshold": scenes.get("score_threshold"),
        "per_class": {str(c): (v or {}).get("recall") for c, v in scenes["per_class"].items()},
        "what": scenes.get("what", ""),
        "source": f"metrics.{key}",
    }
    lower = {str(c): (v or {}).get("recall_ci95") for c, v in scenes["per_class"].items()}
    lower = {c: float(ci[0]) for c, ci in lower.items() if isinstance(ci, (list, tuple)) and len(ci) == 2}
    if lower:
        record["recall_lower_95"] = lower
    if isinstance(scenes.get("class_thresholds"), Mapping):
        record["class_thresholds"] = {str(c): float(t) for c, t in scenes["class_thresholds"].items()}
    return record


def _threshold_of(cls: str, thresholds: float | Mapping[str, float] | None, fallback: Any = None) -> float | None:
    if isinstance(thresholds, Mapping):
        value = thresholds.get(cls, fallback)
    else:
        value = thresholds if thresholds is not None else fallback
    return None if value is None else float(value)


def detector_gate(
    record: Mapping[str, Any] | None,
    run_threshold: float | Mapping[str, float] | None,
    threat_classes: Sequence[str] | None,
    min_recall: float,
    run_model_thresholds: Mapping[str, Mapping[str, float]] | None = None,
) -> str | None:
    """Why the detector's silence cannot support cancellation, or None when its measured recall suffices.

    Args:
        record: :func:`model_recall_record` of the run's model (None: nothing measured).
        run_threshold: score threshold the detections were kept at: one for all classes or one per class.
        threat_classes: classes suspected in the SHAs (None: every class the record lists).
        min_recall: required recall per class (0: no check).
        run_model_thresholds: for a run of several models, each model's per-class thresholds; checked against
            the record's ``model_thresholds`` (the recall of models run together, measured at each model's
            thresholds: :func:`rams.combine.find_joint`).
    """
    if min_recall <= 0:
        return None
    if not record or not record.get("per_class"):
        return "the detection run records no measured recall of its model, so its silence is no evidence"
    per_class: Mapping[str, Any] = record["per_class"]
    classes = list(threat_classes) if threat_classes else list(per_class)
    measured = record.get("class_thresholds")
    stricter = []
    for c in classes:
        run_c = _threshold_of(c, run_threshold)
        at_c = _threshold_of(c, measured or record.get("score_threshold"), record.get("score_threshold"))
        if run_c is not None and at_c is not None and run_c > at_c + _EPS:
            stricter.append((c, run_c, at_c))
    measured_models = record.get("model_thresholds")
    if isinstance(measured_models, Mapping):
        if not run_model_thresholds:
            return "the measured recall is that of several models run together, but the run records no thresholds " \
                "per model, so its silence is no evidence"
        for model, at in measured_models.items():
            run_m = run_model_thresholds.get(model)
            if run_m is None:
                return f"the measured recall includes model {model}, which this run did not use"
            for c in classes:
                run_c, at_c = _threshold_of(c, run_m), _threshold_of(c, at)
                if run_c is not None and at_c is not None and run_c > at_c + _EPS:
                    stricter.append((f"{c} ({model})", run_c, at_c))
    if stricter:
        if len({(r, a) for _, r, a in stricter}) == 1:
            _, r, a = stricter[0]
            return (
                f"detections were kept at score >= {r:g}, stricter than the {a:g} at which the model's recall was "
                f"measured ({', '.join(c for c, _, _ in stricter)})"
            )
        words = ", ".join(f"{c} {r:g} > {a:g}" for c, r, a in stricter)
        return f"detections were kept at stricter score thresholds than the model's recall was measured at: {words}"
    # A recall measured on few items proves little: where the record has it, the lower end of the 95 % interval
    # must reach the minimum, not just the point estimate (0.95 found on 20 items is 0.76-0.99).
    lower: Mapping[str, Any] = record.get("recall_lower_95") or {}
    weak = []
    for c in classes:
        rec = per_class.get(c)
        lo = lower.get(c)
        if rec is None:
            weak.append(f"{c} not measured")
        elif lo is not None and float(lo) < min_recall:
            weak.append(f"{c} {float(rec):.2f} (95 % lower bound {float(lo):.2f})")
        elif lo is None and float(rec) < min_recall:
            weak.append(f"{c} {float(rec):.2f}")
    if weak:
        where = record.get("source") or "held-out scenes"
        where = where if record.get("model_thresholds") else f"{where} of the model card"
        return f"model recall below {min_recall:g} for {', '.join(weak)} ({where})"
    return None


def threat_classes_of(meta: Mapping[str, str], fallback: Sequence[str] | None) -> list[str] | None:
    """The threat classes a quality assessment used (its recorded config), else ``fallback``."""
    import yaml

    text = meta.get("quality.config")
    if text:
        try:
            classes = (yaml.safe_load(text) or {}).get("classes")
        except (yaml.YAMLError, AttributeError):
            classes = None
        if classes:
            return [str(c) for c in classes]
    return list(fallback) if fallback else None


def run_detector_gate(meta: Mapping[str, str], threat_classes: Sequence[str] | None, min_recall: float) -> str | None:
    """:func:`detector_gate` for a detection result's ``rams_metadata`` (keys ``model_recall``,
    ``class_thresholds``, ``score_threshold``; ``model_recall_withheld``, set when the model ran outside the GSD
    range it was measured at, refuses with its reason)."""
    withheld = meta.get("model_recall_withheld")
    if min_recall > 0 and withheld not in (None, "", "null"):
        return f"{withheld}: its measured recall does not apply, so its silence is no evidence"
    record = None
    if meta.get("model_recall"):
        try:
            record = json.loads(meta["model_recall"])
        except ValueError:
            record = None
    thr: float | Mapping[str, float] | None = None
    per_class_text = meta.get("class_thresholds")
    if per_class_text not in (None, "", "null"):
        try:
            loaded = json.loads(str(per_class_text))
            if isinstance(loaded, Mapping):
                thr = {str(c): float(t) for c, t in loaded.items()}
        except (ValueError, TypeError):
            thr = None
    if thr is None:
        thr_text = meta.get("score_threshold")
        try:
            thr = float(thr_text) if thr_text not in (None, "", "null") else None
        except ValueError:
            thr = None
    per_model: dict[str, dict[str, float]] | None = None
    if meta.get("model_class_thresholds") not in (None, "", "null"):
        try:
            loaded = json.loads(str(meta["model_class_thresholds"]))
            per_model = {str(m): {str(c): float(t) for c, t in v.items()} for m, v in loaded.items()}
        except (ValueError, TypeError, AttributeError):
            per_model = None
    return detector_gate(record, thr, threat_classes, min_recall, per_model)
