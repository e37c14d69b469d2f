"""Detection metrics in map units: how many items were missed, how many false alarms per hectare.

IoU-based mAP is the wrong yardstick for targets 6-30 pixels across; survey needs "which items did we find"
and "how many false alarms must a person review per hectare". This module answers that.

Two layers:

* :func:`match_points` and :func:`score_detections` work on plain arrays (centres, scores, labels, item
  centres, radii, optional footprints). The detector's validation loop calls them directly, so training and
  ``rams evaluate`` use one implementation of the metric.
* :func:`evaluate` takes GeoDataFrames (a ``detections`` layer and a ``truth`` layer), brings them to a metric
  CRS, applies the AOI, picks the evaluated area, calls the array functions for a class-agnostic ("any
  ordnance") and a class-aware matching, and returns an :class:`EvalReport`.

Matching rule (see ``docs/evaluate.md``): detections are processed by descending score; ties go to the
detection whose best candidate is better (centre inside a footprint first, then nearer the item centre), then
to the lower row index. A detection matches the best still-unmatched item whose footprint holds its centre or
whose centre lies within the item's radius. Each item is matched at most once; a second detection of an item
is a false positive (duplicates cost reviewer time).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from rams.classes import CLASS_NAMES, get_class
from rams.errors import AOIError, ConfigError, InputError, VectorInputError

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)

#: Added to half an item class's largest length to give its default matching radius (m). Covers detector
#: localisation error (a few pixels at 1-2 cm GSD) and small georeferencing error between truth and mosaic.
DEFAULT_TOLERANCE_M = 0.10
DEFAULT_FP_RATES_PER_HA: tuple[float, ...] = (1.0, 5.0, 20.0)
DEFAULT_TARGET_RECALL = 0.95
#: Two-sided 95 % normal quantile used by the Wilson score interval.
Z95 = 1.959963984540054
#: Fixed bin edges for known numeric truth attributes (left-closed, the last bin also holds its right edge).
DEFAULT_BINS: dict[str, tuple[float, ...]] = {
    "visible_fraction": (0.0, 0.25, 0.5, 0.75, 1.0),
    "size_px": (0.0, 4.0, 8.0, 16.0, 32.0, math.inf),
}
#: Numeric attributes with at most this many distinct values are broken down value by value.
MAX_CATEGORIES_NUMERIC = 8
MISSING = "(missing)"
PRED_LABEL_COLUMN = "label"
PRED_SCORE_COLUMN = "score"
TRUTH_CLASS_COLUMN = "class"


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Matching:
    """Result of :func:`match_points`.

    Attributes:
        pred_match: (N,) int64, index of the truth item each detection matched, -1 for a false positive.
        truth_match: (M,) int64, index of the detection that found each item, -1 for a missed item.
        order: (N,) int64, the order in which detections were processed (descending score, tie-breaks).
    """

    pred_match: np.ndarray
    truth_match: np.ndarray
    order: np.ndarray

    @property
    def is_tp(self) -> np.ndarray:
        """(N,) bool: the detection matched an item."""
        return self.pred_match >= 0


@dataclass(frozen=True)
class Curve:
    """Cumulative counts at each distinct score threshold, highest first (kept: ``score >= threshold``)."""

    score_threshold: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    recall: np.ndarray  # NaN-free only when n_truth > 0 (else empty)
    precision: np.ndarray
    fp_per_ha: np.ndarray | None  # None when the evaluated area is unknown

    def to_dict(self) -> dict[str, Any]:
        return {
            "score_threshold": self.score_threshold.tolist(),
            "tp": self.tp.tolist(),
            "fp": self.fp.tolist(),
            "recall": self.recall.tolist(),
            "precision": self.precision.tolist(),
            "fp_per_ha": None if self.fp_per_ha is None else self.fp_per_ha.tolist(),
        }


@dataclass(frozen=True)
class OperatingPoint:
    """Counts when only detections with ``score >= score_threshold`` are kept (None: none kept)."""

    score_threshold: float | None
    tp: int
    fp: int
    recall: float | None
    precision: float | None
    fp_per_ha: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score_threshold": self.score_threshold,
            "tp": self.tp,
            "fp": self.fp,
            "recall": self.recall,
            "precision": self.precision,
            "fp_per_ha": self.fp_per_ha,
        }


@dataclass(frozen=True)
class RateRecall:
    """Best recall reachable with false positives at or below ``fp_per_ha_limit``, at the highest score
    threshold that reaches it (the fewest false alarms for that recall)."""

    fp_per_ha_limit: float
    point: OperatingPoint

    def to_dict(self) -> dict[str, Any]:
        return {"fp_per_ha_limit": self.fp_per_ha_limit, **self.point.to_dict()}


@dataclass(frozen=True)
class DetectionMetrics:
    """Detection metrics for one set of detections against one set of items (all detections kept).

    ``recall`` is None without items, ``precision`` None without detections. ``ap`` is the area under the
    precision-recall curve with the precision envelope (all-point interpolation, as VOC 2010+ and COCO).
    """

    n_truth: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    recall: float | None
    recall_ci95: tuple[float, float] | None
    precision: float | None
    f1: float | None
    ap: float | None
    fp_per_ha: float | None
    at_fp_rates: tuple[RateRecall, ...]
    target_recall: float
    at_target_recall: OperatingPoint | None
    curve: Curve = field(repr=False)

    def to_dict(self, include_curve: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "n_truth": self.n_truth,
            "n_pred": self.n_pred,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "recall": self.recall,
            "recall_ci95": None if self.recall_ci95 is None else list(self.recall_ci95),
            "precision": self.precision,
            "f1": self.f1,
            "ap": self.ap,
            "fp_per_ha": self.fp_per_ha,
            "recall_at_fp_per_ha": [r.to_dict() for r in self.at_fp_rates],
            "target_recall": self.target_recall,
            "at_target_recall": None if self.at_target_recall is None else self.at_target_recall.to_dict(),
        }
        if include_curve:
            d["curve"] = self.curve.to_dict()
        return d


@dataclass(frozen=True)
class BreakdownRow:
    """Recall of the items sharing one value (or bin) of a truth attribute.

    ``found`` counts items found by any detection (any ordnance); ``found_same_class`` those found by a
    detection of their own class (class-aware matching).
    """

    value: str
    n_truth: int
    found: int
    recall: float
    recall_ci95: tuple[float, float]
    found_same_class: int
    recall_same_class: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "n_truth": self.n_truth,
            "found": self.found,
            "recall": self.recall,
            "recall_ci95": list(self.recall_ci95),
            "found_same_class": self.found_same_class,
            "recall_same_class": self.recall_same_class,
        }


@dataclass(frozen=True)
class EvalReport:
    """What ``rams evaluate`` reports.

    Attributes:
        any_ordnance: class-agnostic matching: a mine reported with the wrong class is still a found hazard.
        class_aware: a detection only matches an item of its own class (pooled over classes).
        per_class: class-aware metrics of each class seen in the truth or the detections.
        map_macro: mean of per-class AP over classes with items.
        confusion: truth class -> detection label -> count, from the any-ordnance matching; label
            ``"(missed)"`` for items nobody found; truth class ``"(no item)"`` for false positives.
    """

    crs: str
    area_m2: float | None
    area_source: str
    n_pred: int
    n_truth: int
    n_pred_outside_aoi: int
    n_truth_outside_aoi: int
    n_truth_outside_coverage: int | None
    min_score: float | None
    radius_m: dict[str, float]
    any_ordnance: DetectionMetrics
    class_aware: DetectionMetrics
    per_class: dict[str, DetectionMetrics]
    map_macro: float | None
    confusion: dict[str, dict[str, int]]
    breakdowns: dict[str, tuple[BreakdownRow, ...]]
    notices: tuple[str, ...] = ()
    false_alarms: Any = None
    """GeoDataFrame of the detections no item of their class accounts for (class-aware false positives), in the
    evaluation CRS: ``label``, ``score``, ``error`` ("no_item": no item of any class there; "wrong_class": it
    sits on an item of another class, ``item_class``; "duplicate": the item was already found by a
    higher-scoring detection). For review in GIS, and as hard negatives of a training ``ortho`` source."""
    missed: Any = None
    """GeoDataFrame of the items no detection of their class found, in the evaluation CRS: ``class``,
    ``error`` ("not_detected", or "other_class": found only under ``detected_as``, ``score``)."""

    @property
    def area_ha(self) -> float | None:
        return None if self.area_m2 is None else self.area_m2 / 1e4

    def to_dict(self, include_curves: bool = False) -> dict[str, Any]:
        return {
            "crs": self.crs,
            "area_m2": self.area_m2,
            "area_ha": self.area_ha,
            "area_source": self.area_source,
            "n_pred": self.n_pred,
            "n_truth": self.n_truth,
            "n_pred_outside_aoi": self.n_pred_outside_aoi,
            "n_truth_outside_aoi": self.n_truth_outside_aoi,
            "n_truth_outside_coverage": self.n_truth_outside_coverage,
            "min_score": self.min_score,
            "radius_m": self.radius_m,
            "any_ordnance": self.any_ordnance.to_dict(include_curves),
            "class_aware": self.class_aware.to_dict(include_curves),
            "per_class": {k: v.to_dict(include_curves) for k, v in self.per_class.items()},
            "map_macro": self.map_macro,
            "confusion": self.confusion,
            "breakdowns": {k: [r.to_dict() for r in rows] for k, rows in self.breakdowns.items()},
            "notices": list(self.notices),
        }


# ------------------------------------------------------------------------------------------ statistics


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion (None when ``n`` is 0).

    With 50 items a recall of 0.9 is 0.79-0.96, not 0.9: report the interval, not only the point.
    """
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise InputError(f"successes must lie in [0, n]; got {successes} of {n}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _classes_of_models(values: np.ndarray, notices: list[str]) -> np.ndarray:
    """Truth labelled by item model (``PMN-2``, ``120mm mortar``: what an annotator sees, and what ``rams synth``
    writes in its ``model`` column) -> the rams class of each model, with a notice; other values unchanged."""
    from rams.classes import class_of_model

    out = values.copy()
    mapped: dict[str, str] = {}
    for i, v in enumerate(values.tolist()):
        if v in CLASS_NAMES:
            continue
        try:
            out[i] = mapped.setdefault(v, class_of_model(v))
        except KeyError:
            continue
    if mapped:
        msg = "truth classes given as item models were read as their rams classes: " + ", ".join(
            f"{m} -> {c}" for m, c in sorted(mapped.items()))
        log.warning(msg)
        notices.append(msg)
    return out


def default_radius_m(class_name: str, tolerance_m: float = DEFAULT_TOLERANCE_M) -> float:
    """Default matching radius of a class: half its largest item's length plus ``tolerance_m``.

    A centre within this distance of the item's centre lies on (or just off) the item for any orientation.

    Raises:
        VectorInputError: the class is not a rams class (then give radii explicitly).
    """
    try:
        cls = get_class(class_name)
    except KeyError as err:
        raise VectorInputError(
            f"truth class {class_name!r} is not a rams class (known: {', '.join(CLASS_NAMES)}), so it has no "
            "default matching radius; fix the truth 'class' values or give --radius"
        ) from err
    return 0.5 * cls.max_length_m + tolerance_m


# -------------------------------------------------------------------------------------------- matching


def _as_xy(a: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{what} must have shape (n, 2); got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{what} holds NaN or infinite coordinates; drop or fix those rows")
    return arr


def match_points(
    pred_xy: ArrayLike,
    pred_scores: ArrayLike,
    truth_xy: ArrayLike,
    truth_radius: float | ArrayLike,
    *,
    pred_labels: Sequence[Any] | np.ndarray | None = None,
    truth_labels: Sequence[Any] | np.ndarray | None = None,
    truth_footprints: Sequence[Any] | np.ndarray | None = None,
) -> Matching:
    """Greedy one-to-one matching of detections to items, by descending score.

    Works in any consistent unit (map metres for ``rams evaluate``; pixels are fine for a validation loop).

    Args:
        pred_xy: (N, 2) detection centres (x, y).
        pred_scores: (N,) detection scores.
        truth_xy: (M, 2) item centres.
        truth_radius: one radius, or (M,) radii. A detection can match an item when its centre lies within
            the item's radius of the item's centre (radius 0: footprint rule only), or inside (or on the edge
            of) the item's footprint when ``truth_footprints`` is given.
        pred_labels: (N,) detection classes; with ``truth_labels``, matching is class-aware.
        truth_labels: (M,) item classes.
        truth_footprints: (M,) shapely geometries (None entries allowed), in the same units as the centres.

    Returns:
        :class:`Matching`. Processing order: score descending; among equal scores, the detection whose best
        candidate is inside a footprint, then nearer its item centre, then the lower index, goes first.
        Each detection takes its best unmatched candidate (inside a footprint first, then nearest centre,
        then lowest item index). Detections of an already matched item are false positives.
    """
    pxy = _as_xy(pred_xy, "pred_xy")
    txy = _as_xy(truth_xy, "truth_xy")
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    n, m = len(pxy), len(txy)
    if len(scores) != n:
        raise InputError(f"pred_scores has {len(scores)} values for {n} detections")
    if not np.isfinite(scores).all():
        raise InputError("pred_scores holds NaN or infinite values; fix the detection scores")
    radius = np.broadcast_to(np.asarray(truth_radius, dtype=np.float64), (m,)).copy() if m else np.zeros(0)
    if (radius < 0).any() or not np.isfinite(radius).all():
        raise InputError("truth radii must be finite and >= 0")
    class_aware = pred_labels is not None and truth_labels is not None
    if class_aware:
        plab = np.asarray(pred_labels, dtype=object).reshape(-1)
        tlab = np.asarray(truth_labels, dtype=object).reshape(-1)
        if len(plab) != n or len(tlab) != m:
            raise InputError(f"labels do not fit: {len(plab)} for {n} detections, {len(tlab)} for {m} items")

    pair_p: list[np.ndarray] = []
    pair_t: list[np.ndarray] = []
    pair_in: list[np.ndarray] = []
    if n and m:
        from scipy.spatial import cKDTree

        rmax = float(radius.max())
        if rmax > 0:
            sdm = cKDTree(pxy).sparse_distance_matrix(cKDTree(txy), rmax, output_type="ndarray")
            i, j, v = sdm["i"].astype(np.int64), sdm["j"].astype(np.int64), sdm["v"]
            keep = (v <= radius[j]) & (radius[j] > 0)
            pair_p.append(i[keep])
            pair_t.append(j[keep])
            pair_in.append(np.zeros(int(keep.sum()), bool))
        if truth_footprints is not None:
            import shapely

            fps = np.asarray(truth_footprints, dtype=object).reshape(-1)
            if len(fps) != m:
                raise InputError(f"truth_footprints has {len(fps)} geometries for {m} items")
            tree = shapely.STRtree(fps)
            qi, qt = tree.query(shapely.points(pxy), predicate="intersects")
            pair_p.append(qi.astype(np.int64))
            pair_t.append(qt.astype(np.int64))
            pair_in.append(np.ones(len(qi), bool))

    if pair_p:
        cp = np.concatenate(pair_p)
        ct = np.concatenate(pair_t)
        cin = np.concatenate(pair_in)
    else:
        cp = ct = np.zeros(0, np.int64)
        cin = np.zeros(0, bool)
    if class_aware and len(cp):
        same = plab[cp] == tlab[ct]
        cp, ct, cin = cp[same], ct[same], cin[same]
    # one row per (detection, item), keeping "inside" when both rules hit
    if len(cp):
        o = np.lexsort((~cin, ct, cp))
        cp, ct, cin = cp[o], ct[o], cin[o]
        first = np.r_[True, (cp[1:] != cp[:-1]) | (ct[1:] != ct[:-1])]
        cp, ct, cin = cp[first], ct[first], cin[first]
    cd = np.hypot(*(pxy[cp] - txy[ct]).T) if len(cp) else np.zeros(0)
    # candidates of each detection, best first: inside a footprint, then nearer centre, then lower index
    o = np.lexsort((ct, cd, ~cin, cp))
    cp, ct, cin, cd = cp[o], ct[o], cin[o], cd[o]
    starts = np.searchsorted(cp, np.arange(n), side="left")
    ends = np.searchsorted(cp, np.arange(n), side="right")

    best_out = np.ones(n, np.int8)
    best_d = np.full(n, np.inf)
    has = starts < ends
    best_out[has] = (~cin[starts[has]]).astype(np.int8)
    best_d[has] = cd[starts[has]]
    order = np.lexsort((np.arange(n), best_d, best_out, -scores)).astype(np.int64)

    pred_match = np.full(n, -1, np.int64)
    truth_match = np.full(m, -1, np.int64)
    cand_t = ct.tolist()
    s_list, e_list = starts.tolist(), ends.tolist()
    tm = truth_match  # local alias for the hot loop
    for i in order.tolist():
        for k in range(s_list[i], e_list[i]):
            t = cand_t[k]
            if tm[t] < 0:
                tm[t] = i
                pred_match[i] = t
                break
    return Matching(pred_match=pred_match, truth_match=truth_match, order=order)


# ------------------------------------------------------------------------------------------ scoring


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def score_detections(
    scores: ArrayLike,
    is_tp: ArrayLike,
    n_truth: int,
    area_m2: float | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    fp_rates_per_ha: Sequence[float] = DEFAULT_FP_RATES_PER_HA,
) -> DetectionMetrics:
    """Metrics of matched detections: counts, recall (Wilson 95 %), precision, F1, AP, FP/ha, operating points

    Thresholds are the distinct scores; all detections with equal scores enter together, so results do not
    depend on the order of ties. Because matching is greedy by descending score, the detections kept at any
    threshold are matched exactly as if the lower-scored ones did not exist.

    Args:
        scores: (N,) detection scores.
        is_tp: (N,) bool, from :attr:`Matching.is_tp`.
        n_truth: number of items.
        area_m2: evaluated area (for FP/ha); None leaves FP/ha and FP-rate recalls out.
        target_recall: recall for which the highest reaching threshold is reported.
        fp_rates_per_ha: false-alarm rates at which the best reachable recall is reported.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    tp_flag = np.asarray(is_tp, dtype=bool).reshape(-1)
    if len(s) != len(tp_flag):
        raise InputError(f"{len(s)} scores but {len(tp_flag)} match flags")
    if not 0 < target_recall <= 1:
        raise ConfigError(f"target recall must lie in (0, 1]; got {target_recall}")
    if area_m2 is not None and not area_m2 > 0:
        raise InputError(f"evaluated area must be > 0 m²; got {area_m2}")
    area_ha = None if area_m2 is None else area_m2 / 1e4
    n_pred = len(s)

    order = np.argsort(-s, kind="stable")
    ss = s[order]
    ctp = np.cumsum(tp_flag[order])
    cfp = np.cumsum(~tp_flag[order])
    last = np.r_[ss[1:] != ss[:-1], True] if n_pred else np.zeros(0, bool)
    thr, ctp_g, cfp_g = ss[last], ctp[last].astype(np.int64), cfp[last].astype(np.int64)
    recall_c = ctp_g / n_truth if n_truth else np.zeros(0)
    prec_c = ctp_g / np.maximum(ctp_g + cfp_g, 1)
    fph_c = None if area_ha is None else cfp_g / area_ha
    curve = Curve(thr, ctp_g, cfp_g, recall_c, prec_c, fph_c)

    tp = int(ctp_g[-1]) if n_pred else 0
    fp = n_pred - tp
    fn = n_truth - tp
    if fn < 0:
        raise InputError(f"{tp} true positives for {n_truth} items: a match flag is wrong")
    recall = _ratio(tp, n_truth)
    precision = _ratio(tp, n_pred)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)

    ap: float | None = None
    if n_truth:
        if n_pred:
            envelope = np.maximum.accumulate(prec_c[::-1])[::-1]
            steps = np.diff(np.r_[0.0, recall_c])
            ap = float(np.sum(steps * envelope))
        else:
            ap = 0.0

    def point(k: int | None) -> OperatingPoint:
        if k is None:
            return OperatingPoint(None, 0, 0, 0.0 if n_truth else None, None, 0.0 if area_ha else None)
        t, f = int(ctp_g[k]), int(cfp_g[k])
        fph = None if area_ha is None else f / area_ha
        return OperatingPoint(float(thr[k]), t, f, _ratio(t, n_truth), _ratio(t, t + f), fph)

    rates: list[RateRecall] = []
    if area_ha is not None:
        for rate in fp_rates_per_ha:
            ok = np.flatnonzero(cfp_g / area_ha <= rate + 1e-12)
            if not len(ok):
                rates.append(RateRecall(float(rate), point(None)))
                continue
            # FP and TP grow as the threshold falls: the lowest allowed threshold has the best recall; report
            # the highest threshold that already reaches it (fewest false alarms for that recall)
            best_k = int(np.argmax(ctp_g >= ctp_g[ok[-1]]))
            rates.append(RateRecall(float(rate), point(best_k)))

    at_target: OperatingPoint | None = None
    if n_truth and n_pred:
        reach = np.flatnonzero(ctp_g >= target_recall * n_truth - 1e-9)
        if len(reach):
            at_target = point(int(reach[0]))

    return DetectionMetrics(
        n_truth=n_truth,
        n_pred=n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        recall=recall,
        recall_ci95=wilson_interval(tp, n_truth),
        precision=precision,
        f1=f1,
        ap=ap,
        fp_per_ha=None if area_ha is None else fp / area_ha,
        at_fp_rates=tuple(rates),
        target_recall=target_recall,
        at_target_recall=at_target,
        curve=curve,
    )


# ------------------------------------------------------------------------------------------ geo inputs


def _is_metric(crs: Any, bounds: Any = None) -> bool:
    """Projected in metres, and (given the data's ``bounds``) true to scale there: not Web Mercator, whose
    metres are 1/cos(latitude) ground metres (FP/ha and matching radii would be off by that)."""
    from rams.crs import is_ground_metric

    return crs is not None and is_ground_metric(crs, bounds)


def _check_geometries(gdf: Any, what: str) -> None:
    bad = gdf.geometry.isna() | gdf.geometry.is_empty
    if bad.any():
        rows = [int(i) for i in np.flatnonzero(bad.to_numpy())[:5]]
        raise VectorInputError(
            f"{what} has {int(bad.sum())} feature(s) without geometry (rows {rows}...); remove or fix them"
        )


def _to_geoseries(obj: Any, default_crs: Any, what: str) -> Any:
    """AOI / coverage as a GeoSeries: GeoDataFrame, GeoSeries, or a shapely geometry in ``default_crs``."""
    import geopandas as gpd

    if isinstance(obj, gpd.GeoDataFrame):
        gs = obj.geometry
    elif isinstance(obj, gpd.GeoSeries):
        gs = obj
    else:
        gs = gpd.GeoSeries([obj], crs=default_crs)
    gs = gs[~(gs.isna() | gs.is_empty)]
    if len(gs) and gs.crs is None:
        raise VectorInputError(f"{what} has no CRS; assign one in QGIS and save again")
    return gs


def _reproject(obj: Any, crs: Any, what: str, notices: list[str]) -> Any:
    if obj is None or len(obj) == 0 or obj.crs is None or obj.crs == crs:
        return obj
    msg = f"{what} is in {obj.crs.to_string()}; reprojected to {crs.to_string()} for evaluation in metres"
    log.warning(msg)
    notices.append(msg)
    return obj.to_crs(crs)


def _metric_crs(truth: Any, pred: Any) -> Any:
    if _is_metric(truth.crs, truth.total_bounds if len(truth) else None):
        return truth.crs
    if len(pred) and _is_metric(pred.crs, pred.total_bounds):
        return pred.crs
    return truth.estimate_utm_crs()


def _centres_xy(gs: Any) -> np.ndarray:
    import shapely

    if len(gs) == 0:
        return np.zeros((0, 2))
    geoms = gs.to_numpy()
    pts = np.where(shapely.get_type_id(geoms) == 0, geoms, shapely.centroid(geoms))
    return np.asarray(shapely.get_coordinates(pts), dtype=np.float64).reshape(-1, 2)


def _radii(
    classes: np.ndarray, radius_m: float | Mapping[str, float] | None, tolerance_m: float
) -> tuple[np.ndarray, dict[str, float]]:
    if isinstance(radius_m, Mapping) or radius_m is None:
        given = dict(radius_m or {})
        for k, v in given.items():
            if not v > 0:
                raise ConfigError(f"radius for class {k!r} must be > 0 metres; got {v}")
        if tolerance_m < 0:
            raise ConfigError(f"tolerance must be >= 0 metres; got {tolerance_m}")
        per = {}
        for c in np.unique(classes):
            per[str(c)] = float(given[c]) if c in given else default_radius_m(str(c), tolerance_m)
    else:
        if not float(radius_m) > 0:
            raise ConfigError(f"--radius must be > 0 metres; got {radius_m}")
        per = {str(c): float(radius_m) for c in np.unique(classes)}
    return np.array([per[str(c)] for c in classes], dtype=np.float64), per


def _bins_for(values: Any, name: str, bins: Mapping[str, Sequence[float]]) -> tuple[list[str], list[str]]:
    """(label per item, ordered labels) for a breakdown attribute."""
    import pandas as pd

    s = pd.Series(values).reset_index(drop=True)
    missing = s.isna()
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    edges: list[float] | None = None
    if name in bins:
        edges = [float(e) for e in bins[name]]
        if not numeric:
            raise ConfigError(f"bins given for truth attribute {name!r}, but its values are not numbers")
    elif numeric and s[~missing].nunique() > MAX_CATEGORIES_NUMERIC:
        edges = sorted(set(np.quantile(s[~missing].to_numpy(dtype=float), [0, 0.25, 0.5, 0.75, 1]).tolist()))
    if edges is None:
        def fmt(v: Any) -> str:
            return f"{v:g}" if isinstance(v, float | np.floating) else str(v)

        labels = [MISSING if miss else fmt(v) for v, miss in zip(s, missing, strict=True)]
        present = s[~missing].unique().tolist()
        try:
            present = sorted(present)
        except TypeError:
            present = sorted(present, key=str)
        order = [fmt(v) for v in present] + ([MISSING] if missing.any() else [])
        return labels, list(dict.fromkeys(order))
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ConfigError(f"bins for {name!r} must be at least two increasing edges; got {edges}")
    names = [
        f"[{a:g}, {b:g}]" if k == len(edges) - 2 and math.isfinite(b) else f"[{a:g}, {b:g})"
        for k, (a, b) in enumerate(zip(edges, edges[1:], strict=False))
    ]
    vals = s.to_numpy(dtype=float, na_value=np.nan)
    idx = np.searchsorted(np.asarray(edges), vals, side="right") - 1
    last_edge = edges[-1]
    idx = np.where(vals == last_edge, len(edges) - 2, idx)
    labels = []
    for v, k in zip(vals, idx, strict=True):
        if np.isnan(v):
            labels.append(MISSING)
        elif 0 <= k < len(names):
            labels.append(names[k])
        else:
            labels.append(f"outside [{edges[0]:g}, {last_edge:g}]")
    order = names + sorted({lb for lb in labels if lb not in names and lb != MISSING})
    if missing.any():
        order.append(MISSING)
    return labels, order


def _class_order(names: set[str]) -> list[str]:
    known = [c for c in CLASS_NAMES if c in names]
    return known + sorted(names - set(known))


def evaluate(
    pred: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    *,
    area_m2: float | None = None,
    aoi: Any = None,
    coverage: Any = None,
    radius_m: float | Mapping[str, float] | None = None,
    tolerance_m: float = DEFAULT_TOLERANCE_M,
    target_recall: float = DEFAULT_TARGET_RECALL,
    fp_rates_per_ha: Sequence[float] = DEFAULT_FP_RATES_PER_HA,
    breakdown_by: Sequence[str] = (),
    bins: Mapping[str, Sequence[float]] | None = None,
    min_score: float | None = None,
) -> EvalReport:
    """Evaluate detections against truth items in map units.

    Args:
        pred: GeoDataFrame of detections with ``label`` and ``score`` (polygons: the centroid is the centre;
            points). May be empty (recall 0).
        truth: GeoDataFrame of items with ``class`` and polygon footprints (points allowed: radius only).
        area_m2: evaluated area in m² for FP/ha; overrides the AOI / coverage / extent below.
        aoi: GeoDataFrame / GeoSeries, or a shapely geometry in the truth's CRS. Detections whose centre and
            items whose centroid lie outside are ignored.
        coverage: ground the detector analysed (the prediction GeoPackage's ``coverage`` layer), same types.
        radius_m: one radius for all classes, or per class (others default), or None: per-class default
            ``0.5 * max_length_m + tolerance_m`` (:func:`default_radius_m`).
        tolerance_m: added to half the class length for default radii.
        target_recall: report the highest threshold reaching this recall, with its FP/ha.
        fp_rates_per_ha: report the best recall at these false-alarm rates.
        breakdown_by: truth attributes to break recall down by (numeric ones binned, see ``DEFAULT_BINS``).
        bins: bin edges per attribute, overriding ``DEFAULT_BINS`` and quartiles.
        min_score: drop detections scoring below this first.

    Evaluated area, first that applies: ``area_m2``; AOI ∩ coverage; AOI; coverage; the bounding box of all
    kept items and detections (logged as a warning: FP/ha over a bounding box is a rough figure).

    Raises:
        VectorInputError: a column is missing, a geometry or CRS is missing, scores are not numbers, or the
            truth holds no items.
        AOIError: the AOI is empty or holds none of the items.
        ConfigError: a radius, rate, target recall or bin is invalid.
    """
    import pandas as pd
    import shapely

    notices: list[str] = []
    for col, df, what in (
        (PRED_LABEL_COLUMN, pred, "prediction layer"),
        (PRED_SCORE_COLUMN, pred, "prediction layer"),
        (TRUTH_CLASS_COLUMN, truth, "truth layer"),
    ):
        if col not in df.columns:
            raise VectorInputError(
                f"{what} lacks column {col!r} (has {[c for c in df.columns if c != 'geometry']}); "
                "give the layer written by rams detect / rams synth or add the column"
            )
    if len(truth) == 0:
        raise VectorInputError(
            "truth layer holds no items: nothing to evaluate; give a truth layer with items"
        )
    for rate in fp_rates_per_ha:
        if not rate > 0:
            raise ConfigError(f"false-alarm rates must be > 0 per ha; got {rate}")
    missing_attrs = [a for a in breakdown_by if a not in truth.columns]
    if missing_attrs:
        raise VectorInputError(
            f"truth layer has no attribute(s) {missing_attrs} to break down by "
            f"(has {[c for c in truth.columns if c != 'geometry']}); choose others with --by"
        )
    _check_geometries(truth, "truth layer")
    _check_geometries(pred, "prediction layer")
    if truth.crs is None:
        raise VectorInputError("truth layer has no CRS; assign one in QGIS and save again")
    if len(pred) and pred.crs is None:
        raise VectorInputError("prediction layer has no CRS; assign one in QGIS and save again")
    scores_raw = pd.to_numeric(pred[PRED_SCORE_COLUMN], errors="coerce")
    if scores_raw.isna().any():
        raise VectorInputError(
            f"prediction column 'score' holds {int(scores_raw.isna().sum())} value(s) that are not numbers; "
            "fix the scores"
        )
    if truth[TRUTH_CLASS_COLUMN].isna().any():
        raise VectorInputError("truth column 'class' is empty for some items; give every item a class")

    input_crs = truth.crs  # a bare shapely AOI / coverage is taken to be in this CRS
    crs = _metric_crs(truth, pred)
    if crs != truth.crs:
        msg = f"truth layer is in {truth.crs.to_string()}; evaluating in {crs.to_string()} (metres)"
        log.info(msg)
        notices.append(msg)
        truth = truth.to_crs(crs)
    pred = _reproject(pred, crs, "prediction layer", notices)
    truth = _reproject(truth, crs, "truth layer", notices)

    aoi_geom = None
    if aoi is not None:
        aoi_gs = _reproject(_to_geoseries(aoi, input_crs, "AOI"), crs, "AOI", notices)
        if len(aoi_gs) == 0:
            raise AOIError("the AOI holds no geometry; give a polygon layer with --aoi")
        from rams.sha import polygonal

        aoi_parts = [g for g in aoi_gs.to_numpy() if g is not None and not g.is_empty]
        n_bad = sum(1 for g in aoi_parts if not g.is_valid)
        # repaired whole (a bow-tie outline's lobes cancel in its raw area), as rams detect and rams quality read it
        aoi_geom = polygonal(shapely.union_all([shapely.make_valid(g) for g in aoi_parts]))
        if n_bad:
            msg = (f"{n_bad} AOI polygon(s) were invalid (e.g. self-intersecting) and were repaired (shapely "
                   "make_valid); check the outline in QGIS (Vector > Geometry Tools > Check Validity)")
            log.warning(msg)
            notices.append(msg)
        if aoi_geom.area <= 0:
            raise AOIError("the AOI has no area (points or lines?); give a polygon layer with --aoi")
    cov_geom = None
    if coverage is not None:
        cov_gs = _reproject(_to_geoseries(coverage, input_crs, "coverage"), crs, "coverage layer", notices)
        if len(cov_gs):
            cov_geom = shapely.union_all(cov_gs.to_numpy())
        if cov_geom is None or cov_geom.area <= 0:
            log.warning("coverage layer is empty; the evaluated area falls back to the AOI or the extent")
            cov_geom = None

    pred = pred.reset_index(drop=True)
    truth = truth.reset_index(drop=True)
    pred_xy = _centres_xy(pred.geometry)
    truth_xy = _centres_xy(truth.geometry)
    pred_scores = scores_raw.to_numpy(dtype=np.float64)

    keep_p = np.ones(len(pred), bool)
    keep_t = np.ones(len(truth), bool)
    if aoi_geom is not None:
        shapely.prepare(aoi_geom)
        if len(pred):
            keep_p = shapely.covers(aoi_geom, shapely.points(pred_xy))
        keep_t = shapely.covers(aoi_geom, shapely.points(truth_xy))
    n_pred_out, n_truth_out = int((~keep_p).sum()), int((~keep_t).sum())
    if not keep_t.any():
        raise AOIError(
            f"none of the {len(truth)} truth items lies inside the AOI; check that the AOI and truth layers "
            "cover the same ground"
        )
    if min_score is not None:
        keep_p &= pred_scores >= min_score
    pred, pred_xy, pred_scores = pred[keep_p].reset_index(drop=True), pred_xy[keep_p], pred_scores[keep_p]
    truth, truth_xy = truth[keep_t].reset_index(drop=True), truth_xy[keep_t]
    pred_labels = np.array([str(v) for v in pred[PRED_LABEL_COLUMN]], dtype=object)
    truth_classes = np.array([str(v) for v in truth[TRUTH_CLASS_COLUMN]], dtype=object)
    truth_classes = _classes_of_models(truth_classes, notices)

    n_truth_out_cov: int | None = None
    if cov_geom is not None:
        shapely.prepare(cov_geom)
        n_truth_out_cov = int((~shapely.covers(cov_geom, shapely.points(truth_xy))).sum())
        if n_truth_out_cov:
            msg = (
                f"{n_truth_out_cov} truth item(s) lie outside the coverage layer (ground not analysed); "
                "they count as missed"
            )
            log.warning(msg)
            notices.append(msg)

    if area_m2 is not None:
        if not area_m2 > 0:
            raise ConfigError(f"evaluated area must be > 0; got {area_m2} m²")
        area, area_source = float(area_m2), "given"
    elif aoi_geom is not None and cov_geom is not None:
        area, area_source = float(aoi_geom.intersection(cov_geom).area), "aoi ∩ coverage"
    elif aoi_geom is not None:
        area, area_source = float(aoi_geom.area), "aoi"
    elif cov_geom is not None:
        area, area_source = float(cov_geom.area), "coverage"
    else:
        geoms = np.concatenate([truth.geometry.to_numpy(), pred.geometry.to_numpy()])
        x0, y0, x1, y1 = shapely.total_bounds(geoms)
        area, area_source = float((x1 - x0) * (y1 - y0)), "extent"
        msg = (
            "no AOI or coverage given: FP/ha uses the bounding box of items and detections "
            f"({area / 1e4:.4g} ha); give --aoi or --area-ha for a sound rate"
        )
        log.warning(msg)
        notices.append(msg)
    area_opt: float | None = area
    if not area > 0:
        log.warning("evaluated area is zero (%s); FP/ha is not reported", area_source)
        area_opt = None

    radii, radius_by_class = _radii(truth_classes, radius_m, tolerance_m)
    footprints = truth.geometry.to_numpy()

    agnostic = match_points(pred_xy, pred_scores, truth_xy, radii, truth_footprints=footprints)
    aware = match_points(
        pred_xy, pred_scores, truth_xy, radii,
        pred_labels=pred_labels, truth_labels=truth_classes, truth_footprints=footprints,
    )

    def score(mask_p: np.ndarray, is_tp: np.ndarray, n_t: int) -> DetectionMetrics:
        return score_detections(
            pred_scores[mask_p], is_tp[mask_p], n_t, area_opt, target_recall, fp_rates_per_ha
        )

    all_p = np.ones(len(pred), bool)
    any_ord = score(all_p, agnostic.is_tp, len(truth))
    cls_aware = score(all_p, aware.is_tp, len(truth))
    per_class: dict[str, DetectionMetrics] = {}
    for c in _class_order(set(pred_labels.tolist()) | set(truth_classes.tolist())):
        per_class[c] = score(pred_labels == c, aware.is_tp, int((truth_classes == c).sum()))
    aps = [v.ap for v in per_class.values() if v.n_truth and v.ap is not None]
    map_macro = float(np.mean(aps)) if aps else None

    confusion: dict[str, dict[str, int]] = {c: {} for c in _class_order(set(truth_classes.tolist()))}
    for j, c in enumerate(truth_classes.tolist()):
        i = int(agnostic.truth_match[j])
        lab = "(missed)" if i < 0 else str(pred_labels[i])
        row = confusion.setdefault(c, {})
        row[lab] = row.get(lab, 0) + 1
    for i in np.flatnonzero(~agnostic.is_tp).tolist():
        row = confusion.setdefault("(no item)", {})
        lab = str(pred_labels[i])
        row[lab] = row.get(lab, 0) + 1

    found = agnostic.truth_match >= 0
    found_cls = aware.truth_match >= 0
    breakdowns: dict[str, tuple[BreakdownRow, ...]] = {}
    for attr in breakdown_by:
        labels, order = _bins_for(truth[attr], attr, {**DEFAULT_BINS, **(bins or {})})
        lab_arr = np.asarray(labels, dtype=object)
        rows = []
        for value in order:
            sel = lab_arr == value
            n_t = int(sel.sum())
            if n_t == 0:
                continue
            k, kc = int(found[sel].sum()), int(found_cls[sel].sum())
            ci = wilson_interval(k, n_t)
            assert ci is not None
            rows.append(BreakdownRow(value, n_t, k, k / n_t, ci, kc, kc / n_t))
        breakdowns[attr] = tuple(rows)

    near = _near_any_item(pred_xy[~agnostic.is_tp], truth_xy, radii, footprints)
    false_alarms, missed = _error_layers(
        pred, truth, pred_labels, pred_scores, truth_classes, agnostic, aware, near, crs
    )
    return EvalReport(
        crs=crs.to_string(),
        area_m2=area_opt,
        area_source=area_source,
        n_pred=len(pred),
        n_truth=len(truth),
        n_pred_outside_aoi=n_pred_out,
        n_truth_outside_aoi=n_truth_out,
        n_truth_outside_coverage=n_truth_out_cov,
        min_score=min_score,
        radius_m=radius_by_class,
        any_ordnance=any_ord,
        class_aware=cls_aware,
        per_class=per_class,
        map_macro=map_macro,
        confusion=confusion,
        breakdowns=breakdowns,
        notices=tuple(notices),
        false_alarms=false_alarms,
        missed=missed,
    )


def _error_layers(
    pred: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    pred_labels: np.ndarray,
    pred_scores: np.ndarray,
    truth_classes: np.ndarray,
    agnostic: Matching,
    aware: Matching,
    near_item: np.ndarray,
    crs: Any,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The class-aware false alarms and missed items of a matching, as layers (see :class:`EvalReport`).

    ``near_item``: for each detection that no item took in the any-ordnance matching (in order), whether it
    lies on an item all the same (which another, higher-scoring detection found first: a duplicate)."""
    import geopandas as gpd

    near_of = dict(zip(np.flatnonzero(~agnostic.is_tp).tolist(), near_item.tolist(), strict=True))
    fa = np.flatnonzero(~aware.is_tp)
    kinds, item_cls = [], []
    for i in fa.tolist():
        j = int(agnostic.pred_match[i])
        if j < 0:
            kinds.append("duplicate" if near_of[i] else "no_item")
            item_cls.append("")
        else:
            kinds.append("wrong_class" if truth_classes[j] != pred_labels[i] else "duplicate")
            item_cls.append(str(truth_classes[j]))
    false_alarms = gpd.GeoDataFrame(
        {"label": [str(pred_labels[i]) for i in fa.tolist()], "score": pred_scores[fa].astype(float),
         "error": kinds, "item_class": item_cls},
        geometry=pred.geometry.to_numpy()[fa] if len(fa) else [], crs=crs,
    )  # fmt: skip
    miss = np.flatnonzero(aware.truth_match < 0)
    err, det_as, det_score = [], [], []
    for j in miss.tolist():
        i = int(agnostic.truth_match[j])
        err.append("not_detected" if i < 0 else "other_class")
        det_as.append("" if i < 0 else str(pred_labels[i]))
        det_score.append(float("nan") if i < 0 else float(pred_scores[i]))
    missed = gpd.GeoDataFrame(
        {"class": [str(truth_classes[j]) for j in miss.tolist()], "error": err, "detected_as": det_as,
         "score": np.asarray(det_score, float)},
        geometry=truth.geometry.to_numpy()[miss] if len(miss) else [], crs=crs,
    )  # fmt: skip
    return false_alarms, missed


def _near_any_item(points_xy: np.ndarray, truth_xy: np.ndarray, radii: np.ndarray, footprints: np.ndarray
                   ) -> np.ndarray:  # fmt: skip
    """(N,) bool: each point lies within its radius of an item centre or inside an item footprint (the matching
    rule of :func:`match_points`, without the one-to-one assignment)."""
    import shapely

    out = np.zeros(len(points_xy), bool)
    if not len(points_xy) or not len(truth_xy):
        return out
    pts = shapely.points(points_xy)
    tree = shapely.STRtree(shapely.points(truth_xy))
    p_idx, t_idx = tree.query(pts, predicate="dwithin", distance=float(np.max(radii)))
    d = np.hypot(*(points_xy[p_idx] - truth_xy[t_idx]).T)
    out[p_idx[d <= radii[t_idx]]] = True
    polys = np.array([g if g is not None and g.geom_type in ("Polygon", "MultiPolygon") else None
                      for g in footprints], dtype=object)  # fmt: skip
    has = np.array([g is not None for g in polys])
    if has.any():
        ftree = shapely.STRtree(polys[has])
        p_idx, _ = ftree.query(pts, predicate="intersects")
        out[p_idx] = True
    return out
