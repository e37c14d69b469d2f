"""Several detectors over one orthomosaic, one result: ``rams detect ORTHO --model A --model B``.

A specialist beside the general model: the default RGB model works at 1 cm and barely finds 12 x 6 px PFM-1; a
small-item model at 0.5 cm finds several times as many on the same flight (``docs/detector.md``). Running both
must give the survey one detection layer, one coverage layer and one honest statement of what the run can find.
``rams detect`` runs each model over the mosaic as it runs one (own tiles, GSD, thresholds, checkpoint), then
:func:`combine_results` joins the per-model results:

* **detections**: every model's detections; where two models report the same class on the same object (centres
  inside each other's footprint or closer than ``merge_distance_m``, the within-model rule of
  :mod:`rams.merge`), one object is kept, the highest-scoring detection's row, and its ``model`` column names
  every model that found it (``default+small-items``). Scores of different models are not on one scale; the kept
  score is that detection's own model's.
* **coverage**: the ground *every* model analysed (intersection). Only there does the absence of a detection
  carry each model's evidence; ground only some models analysed is left out, never claimed.
* **what the run can find** (``model_recall``, read by the detector gate, :mod:`rams.gate`): per class, the
  measured recall of the model that finds that class best (highest lower 95 % bound, else highest recall),
  with that model's thresholds. The union of several models' detections finds at least what each finds, so
  the best model's recall is a lower bound of the run's; nothing is added up. False alarms, by contrast, add up
  over the models.
* **thresholds set together** (:func:`find_joint`): where one card holds a :class:`~rams.detector.bundle.Companion`
  record for the other model (same weights), both models run at the thresholds set *for the pair*
  (``scripts/calibrate_pair.py``: the union's false alarms within the operating point's rate), and the run's
  recall is the union's, measured at those thresholds (``model_thresholds`` in the record: the detector gate
  checks every model's threshold of every class against it).

Pure functions of the per-model GeoPackages written by ``rams detect``; the per-model metadata stays in the
result as ``models`` (a JSON list).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rams.errors import InputError

#: Metadata key of a per-model result that ran at thresholds set together with other models (:func:`find_joint`).
JOINT_KEY = "joint_thresholds"


def find_joint(cards: Sequence[Any], operating_point: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The thresholds set together for these models (two cards, one holding a ``companions`` record for the other
    with the other's exact weights), at ``operating_point`` (None: the record's default point, else the holder's).

    Returns (joint, note): ``joint`` is None where no record applies; then ``note`` says why when a record exists
    but does not fit (other weights, no such point), else None. ``joint`` holds ``models`` (card names), ``point``,
    ``thresholds`` (model name -> class -> threshold), ``record`` (the union's measured recall for the detector
    gate, with ``model_thresholds``; None if not measured) and ``holder`` (the card that holds the record)."""
    from rams.gate import RECALL_KEYS, model_recall_record

    if len(cards) != 2:
        return None, None
    note = None
    for a, b in ((cards[0], cards[1]), (cards[1], cards[0])):
        comp = a.companions.get(b.name)
        if comp is None:
            continue
        if comp.weights_sha256 != b.weights_sha256:
            note = (f"{a.name}'s thresholds for running beside {b.name} were set for other weights of {b.name} "
                    f"({comp.weights_sha256[:12]}..., not {b.weights_sha256[:12]}...); each model runs at its own")
            continue
        point = operating_point or comp.default_operating_point or a.default_operating_point
        if point not in comp.thresholds:
            note = (f"{a.name} has no thresholds set with {b.name} for operating point {point!r} (only "
                    f"{', '.join(sorted(comp.thresholds))}); each model runs at its own")
            continue
        thresholds = {m: {str(c): float(t) for c, t in per.items()} for m, per in comp.thresholds[point].items()}
        # the pair's recall measured at this point (``synthetic_scenes_at_POINT``), else at its default point (the
        # gate then sees whether this point's thresholds are stricter than those)
        at_point = {k: comp.metrics[f"{k}_at_{point}"] for k in RECALL_KEYS if f"{k}_at_{point}" in comp.metrics}
        metrics = at_point or comp.metrics
        record = model_recall_record(metrics)
        if record is not None:
            key = record["source"].removeprefix("metrics.")
            measured = (metrics.get(key) or {}).get("model_thresholds")
            if at_point:
                record["source"] = f"metrics.{key}_at_{point}"
            if not isinstance(measured, Mapping):
                record = None  # a union's recall means nothing without the thresholds it was measured at
            else:
                record["model_thresholds"] = {m: {str(c): float(t) for c, t in per.items()}
                                              for m, per in measured.items()}
                record["source"] = f"companions.{b.name}.{record['source']} in the card of {a.name}: the pair's recall"
        calib = ((comp.metrics.get("operating_point_calibration") or {}).get("points") or {}).get(point) or {}
        # (the same dict for each model's own run: other model first, then the holder)
        return {"models": [b.name, a.name], "holder": a.name, "point": point, "thresholds": thresholds,
                "record": record, "fp_per_ha_limit": calib.get("fp_per_ha_limit")}, None
    return None, note

#: Metadata keys that describe one model's run; the combined result replaces them (see :func:`combine_results`).
PER_MODEL_KEYS = (
    "model_name", "model_version", "weights_sha256", "model_classes", "model_recall", "score_threshold",
    "class_thresholds", "analysis_gsd_m", "gsd_check", "tile_size_px", "overlap_px", "tiles", "resolved_config",
    "detections", "detections_by_class", "analysed_area_m2", "started_utc", "finished_utc", "warnings",
    "model_recall_withheld", "tiles_empty", "checkpoint_key", "damaged_m2", JOINT_KEY,
)


def _class_strength(record: Mapping[str, Any], cls: str) -> tuple[float, float] | None:
    """(lower 95 % bound or recall, recall) of ``cls`` in a recall record; None when not measured."""
    rec = (record.get("per_class") or {}).get(cls)
    if rec is None:
        return None
    lo = (record.get("recall_lower_95") or {}).get(cls)
    return (float(lo) if lo is not None else float(rec), float(rec))


def _measured_threshold(record: Mapping[str, Any], cls: str) -> float | None:
    per = record.get("class_thresholds")
    if isinstance(per, Mapping) and cls in per:
        return float(per[cls])
    t = record.get("score_threshold")
    return None if t is None else float(t)


def combine_recall(
    runs: Sequence[tuple[str, Mapping[str, Any] | None, Mapping[str, float]]],
) -> tuple[dict[str, Any] | None, dict[str, float], dict[str, str]]:
    """The combined run's recall record, its per-class score thresholds and which model answers for each class.

    Args:
        runs: per model, in order: (name, its ``model_recall`` record or None, the thresholds its detections
            were kept at, per class).

    Returns:
        (record, thresholds, chosen): for each class any model detects, the record and thresholds of the model
        with the strongest measured recall for it (ties: the earlier model); a class no model measured takes the
        lowest threshold any model kept it at and no recall. ``record`` is None when no model has a record.
    """
    classes: list[str] = []
    for _, _, thresholds in runs:
        classes += [c for c in thresholds if c not in classes]
    per_class: dict[str, Any] = {}
    lower: dict[str, float] = {}
    measured_at: dict[str, float] = {}
    thresholds_out: dict[str, float] = {}
    chosen: dict[str, str] = {}
    for c in classes:
        best: tuple[tuple[float, float], int] | None = None
        for i, (_, record, thresholds) in enumerate(runs):
            if record is None or c not in thresholds:
                continue
            strength = _class_strength(record, c)
            if strength is not None and (best is None or strength > best[0]):
                best = (strength, i)
        if best is None:
            holders = [(t[c], name) for name, _, t in runs if c in t]
            thresholds_out[c], chosen[c] = min(holders)
            continue
        name, record, thresholds = runs[best[1]]
        assert record is not None
        chosen[c] = name
        thresholds_out[c] = float(thresholds[c])
        per_class[c] = record["per_class"][c]
        lo = (record.get("recall_lower_95") or {}).get(c)
        if lo is not None:
            lower[c] = float(lo)
        at = _measured_threshold(record, c)
        if at is not None:
            measured_at[c] = at
    if not any(r is not None for _, r, _ in runs):
        return None, thresholds_out, chosen
    sources = sorted({f"{name}: {r.get('source', '')}" for name, r, _ in runs if r is not None})
    combined: dict[str, Any] = {
        "per_class": per_class,
        "class_thresholds": measured_at,
        "score_threshold": min(measured_at.values()) if measured_at else None,
        "what": "per class, the measured recall of the model that finds the class best ("
        + ", ".join(f"{c}: {chosen[c]}" for c in per_class)
        + "); the run reports the union of every model's detections, which finds at least that",
        "source": "; ".join(sources),
        "models_by_class": {c: chosen[c] for c in per_class},
    }
    if lower:
        combined["recall_lower_95"] = lower
    return combined, thresholds_out, chosen


def combine_results(
    parts: Sequence[Path],
    out: Path,
    overwrite: bool,
    merge_distance_m: float,
    extra_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Join per-model ``rams detect`` results of one orthomosaic into ``out`` (written atomically).

    Returns the summary ``rams detect`` prints: detections, detections per class, analysed hectares, and the
    combined per-class thresholds.
    """
    import geopandas as gpd
    import pandas as pd
    from shapely import intersection_all

    from rams.layers import read_layer, read_metadata, write_gpkg
    from rams.merge import MapDetection, merge_groups
    from rams.polygons import metric_crs
    from rams.styles import default_styles

    if len(parts) < 2:
        raise ValueError("combine_results needs the results of at least two models")
    metas = [read_metadata(p) for p in parts]
    hashes = {m.get("input_hash") for m in metas}
    if len(hashes) != 1:
        raise InputError(f"the results {', '.join(p.name for p in parts)} come from different orthomosaics; "
                         "combine only runs of several models over the same mosaic")
    names = [m.get("model_name", p.stem) for m, p in zip(metas, parts, strict=True)]
    dets = [read_layer(p, "detections", what="detections layer") for p in parts]
    covs = [read_layer(p, "coverage", what="coverage layer") for p in parts]
    crs = covs[0].crs
    metric = metric_crs(crs, covs[0].geometry)

    # detections: one object per class and place; the highest-scoring row stands for it
    rows = pd.concat([d.assign(_model_i=i) for i, d in enumerate(dets)], ignore_index=True)
    labels = sorted(set(rows["label"].astype(str)))
    geom_m = gpd.GeoSeries(rows.geometry, crs=crs).to_crs(metric)
    map_dets = [
        MapDetection(b[0], b[1], b[2], b[3], float(s), labels.index(str(lab)), str(i))
        for i, (b, s, lab) in enumerate(zip(geom_m.bounds.to_numpy(), rows["score"], rows["label"], strict=True))
    ]
    groups = merge_groups(map_dets, merge_distance_m)
    keep = sorted(groups, key=lambda k: (int(rows["_model_i"].iloc[k]), int(rows["det_id"].iloc[k])))
    found_by = {
        k: "+".join(names[j] for j in sorted({int(rows["_model_i"].iloc[i]) for i in groups[k]})) for k in keep
    }
    merged = rows.iloc[keep].copy()
    merged["model"] = [found_by[k] for k in keep]
    merged["det_id"] = range(1, len(merged) + 1)
    merged = gpd.GeoDataFrame(merged.drop(columns="_model_i"), geometry="geometry", crs=crs)

    # coverage: only the ground every model analysed
    geoms = [g for c in covs for g in c.geometry if g is not None]
    cov_geom = intersection_all(geoms) if len(geoms) == len(covs) else None
    if cov_geom is None or cov_geom.is_empty:
        raise InputError("the models analysed no common ground (their coverage layers do not overlap); "
                         "check their GSD ranges and the AOI")
    area_m2 = float(gpd.GeoSeries([cov_geom], crs=crs).to_crs(metric).area.iloc[0])
    gsds = [float(c["gsd_m"].iloc[0]) for c in covs]
    cov = gpd.GeoDataFrame(
        [{"area_m2": round(area_m2, 3), "area_ha": round(area_m2 / 1e4, 6), "gsd_m": max(gsds),
          "meaning": "ground analysed by every model of the run (" + ", ".join(
              f"{n} at {g * 100:g} cm" for n, g in zip(names, gsds, strict=True))
          + "); outside it at least one model did not look: nothing there is cleared by this run",
          "geometry": cov_geom}],
        geometry="geometry", crs=crs,
    )

    runs = []
    for name, m in zip(names, metas, strict=True):
        record = json.loads(m["model_recall"]) if m.get("model_recall") not in (None, "", "null") else None
        runs.append((name, record, {str(c): float(t) for c, t in json.loads(m["class_thresholds"]).items()}))
    record, thresholds, chosen = combine_recall(runs)
    joints = [_loads(m.get(JOINT_KEY)) for m in metas]
    joint = joints[0] if joints[0] and all(j == joints[0] for j in joints) else None
    model_thresholds = {name: run[2] for name, run in zip(names, runs, strict=True)}
    if joint is not None:
        # the pair's thresholds and the union's recall measured at them replace the best-of-models record
        record = joint.get("record")
        thresholds = {}
        for per in model_thresholds.values():
            for c, t in per.items():
                thresholds[c] = min(t, thresholds.get(c, t))
    by_class = dict(sorted(Counter(merged["label"].astype(str)).items()))
    per_model = [{k: _loads(m.get(k)) for k in PER_MODEL_KEYS if k in m} for m in metas]
    if joint is not None and any(m.get("model_recall_withheld") for m in per_model):
        record = None  # the union's recall was measured with every model inside its GSD range
    metadata: dict[str, Any] = {k: v for k, v in metas[0].items() if k not in PER_MODEL_KEYS}
    warnings = [f"{n}: {w}" for n, m in zip(names, per_model, strict=True) for w in (m.get("warnings") or [])]
    points = ", ".join(f"{n} at {_loads(m.get('operating_point')) or 'its --threshold'}"
                       for n, m in zip(names, metas, strict=True))  # fmt: skip
    if joint is None:
        warnings.append(f"false alarms add up over the {len(names)} models ({points}): expect up to the sum of "
                        "their false-alarm rates, not one model's")  # fmt: skip
    metadata.update({
        "model_name": "+".join(names),
        "model_version": "+".join(str(m.get("model_version", "")) for m in metas),
        "weights_sha256": ",".join(str(m.get("weights_sha256", "")) for m in metas),
        "model_classes": list(thresholds),
        "model_recall": record,
        "class_thresholds": thresholds,
        "score_threshold": min(thresholds.values()),
        "class_models": chosen,
        "model_class_thresholds": model_thresholds,
        JOINT_KEY: joint,
        "analysis_gsd_m": max(gsds),
        "gsd_check": " | ".join(f"{n}: {m.get('gsd_check', '')}" for n, m in zip(names, metas, strict=True)),
        "tile_size_px": json.dumps({n: _loads(m.get("tile_size_px")) for n, m in zip(names, metas, strict=True)}),
        "overlap_px": json.dumps({n: _loads(m.get("overlap_px")) for n, m in zip(names, metas, strict=True)}),
        "tiles": sum(int(m.get("tiles", 0)) for m in metas),
        "models": per_model,
        "started_utc": min(str(m.get("started_utc", "")) for m in metas),
        "finished_utc": max(str(m.get("finished_utc", "")) for m in metas),
        "warnings": sorted(set(warnings), key=warnings.index),
        "detections": len(merged),
        "detections_by_class": by_class,
        "analysed_area_m2": area_m2,
        # a model forced outside its GSD range records no recall and is never chosen for a class; when that is
        # every model, the run says why it can vouch for nothing
        "model_recall_withheld": _withheld(per_model, joint is not None),
        **(extra_metadata or {}),
    })
    write_gpkg(out, {"detections": merged, "coverage": cov}, metadata=metadata, overwrite=overwrite,
               styles=default_styles(["detections", "coverage"]))
    return {"detections": len(merged), "by_class": by_class, "analysed_ha": area_m2 / 1e4,
            "class_thresholds": thresholds, "class_models": chosen, "warnings": metadata["warnings"],
            "joint": joint}


def _withheld(per_model: Sequence[Mapping[str, Any]], joint: bool) -> str | None:
    """Why the combined run can vouch for nothing: every model ran outside the GSD range its recall was measured
    at; with thresholds set together, any one (the union's recall was measured with both in range)."""
    reasons = [str(m["model_recall_withheld"]) for m in per_model if m.get("model_recall_withheld")]
    return "; ".join(reasons) if reasons and (joint or len(reasons) == len(per_model)) else None


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
