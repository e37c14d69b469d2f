"""rams.evaluate and ``rams evaluate``: hand-made geometries with exactly known metrics, real GeoPackages."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
from scipy.stats import binomtest
from shapely.geometry import Point, box
from typer.testing import CliRunner

from rams.cli.main import app
from rams.errors import AOIError, ConfigError, VectorInputError
from rams.evaluate import (
    DEFAULT_TOLERANCE_M,
    default_radius_m,
    evaluate,
    match_points,
    score_detections,
    wilson_interval,
)
from rams.evaluate_plot import render_plot
from rams.layers import read_layer, write_gpkg

UTM = "EPSG:32638"
X0, Y0 = 500000.0, 4400000.0


def sq(x: float, y: float, half: float = 0.05) -> Any:
    """Square footprint centred at (X0 + x, Y0 + y)."""
    return box(X0 + x - half, Y0 + y - half, X0 + x + half, Y0 + y + half)


def truth_gdf(items: Sequence[tuple[float, float, str]], crs: str = UTM, **attrs: Any) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"class": [c for _, _, c in items], **attrs}, geometry=[sq(x, y) for x, y, _ in items], crs=crs
    )


def pred_gdf(dets: Sequence[tuple[float, float, str, float]], crs: str = UTM) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"label": [lab for _, _, lab, _ in dets], "score": [s for *_, s in dets]},
        geometry=[sq(x, y, 0.03) for x, y, _, _ in dets],
        crs=crs,
    )


def aoi_ha(x: float = 0.0, y: float = 0.0, side: float = 100.0) -> gpd.GeoDataFrame:
    """A side x side metre square AOI with lower-left at (X0 + x, Y0 + y): 1 ha by default."""
    return gpd.GeoDataFrame(geometry=[box(X0 + x, Y0 + y, X0 + x + side, Y0 + y + side)], crs=UTM)


# Hand case: 3 items; detections .9 TP, .8 FP, .7 TP, .6 FP; the third item is missed.
# PR points (1/3, 1), (1/3, 1/2), (2/3, 2/3), (2/3, 1/2): AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
HAND_TRUTH = [(10, 10, "pmn"), (20, 10, "pmn"), (30, 10, "pmn")]
HAND_PRED = [(10, 10, "pmn", 0.9), (50, 50, "pmn", 0.8), (20, 10, "pmn", 0.7), (60, 60, "pmn", 0.6)]


# ------------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(("k", "n"), [(45, 50), (0, 10), (10, 10), (2, 3), (1, 1)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_interval_known_value_and_empty() -> None:
    # 45 of 50: the example, a recall of 0.9 is 0.786-0.957 at 95 %
    lo, hi = wilson_interval(45, 50)  # type: ignore[misc]
    assert (round(lo, 3), round(hi, 3)) == (0.786, 0.957)
    assert wilson_interval(0, 0) is None


def test_default_radius_is_half_max_length_plus_tolerance() -> None:
    assert default_radius_m("shell") == pytest.approx(0.35 + DEFAULT_TOLERANCE_M)
    assert default_radius_m("pfm1", 0.0) == pytest.approx(0.06)
    with pytest.raises(VectorInputError, match="not a rams class"):
        default_radius_m("sunflower")


# ------------------------------------------------------------------------------------------ arrays


def test_score_detections_hand_case() -> None:
    m = score_detections([0.9, 0.8, 0.7, 0.6], [True, False, True, False], 3, area_m2=1e4, target_recall=0.6)
    assert (m.tp, m.fp, m.fn) == (2, 2, 1)
    assert m.ap == pytest.approx(5 / 9)
    assert m.precision == 0.5 and m.recall == pytest.approx(2 / 3) and m.f1 == pytest.approx(4 / 7)
    assert m.fp_per_ha == 2.0
    r1, r5, r20 = m.at_fp_rates
    assert (r1.point.score_threshold, r1.point.recall, r1.point.fp_per_ha) == (0.7, pytest.approx(2 / 3), 1.0)
    # at 5 FP/ha every detection may be kept, but recall is already 2/3 at 0.7: report the fewer false alarms
    assert (r5.point.score_threshold, r5.point.fp) == (0.7, 1)
    assert m.at_target_recall is not None
    assert (m.at_target_recall.score_threshold, m.at_target_recall.fp_per_ha) == (0.7, 1.0)
    unreachable = score_detections([0.9, 0.8, 0.7, 0.6], [True, False, True, False], 3, 1e4, 0.95)
    assert unreachable.at_target_recall is None


def test_fp_rate_below_first_false_alarm_keeps_nothing() -> None:
    # 2 ha; top detection is a FP -> even the highest threshold has 0.5 FP/ha > 0.25
    m = score_detections([0.9, 0.5], [False, True], 1, area_m2=2e4, fp_rates_per_ha=(0.25, 0.5))
    low, mid = m.at_fp_rates
    assert (low.point.score_threshold, low.point.recall, low.point.tp) == (None, 0.0, 0)
    assert (mid.point.score_threshold, mid.point.recall, mid.point.fp_per_ha) == (0.5, 1.0, 0.5)
    assert m.ap == pytest.approx(0.5)  # recall 1 reached at precision 1/2


def test_ties_enter_together() -> None:
    # two detections at the same score, one TP one FP: one curve point, AP = 1 * 1/2
    m = score_detections([0.5, 0.5], [False, True], 1, area_m2=1e4)
    assert m.curve.score_threshold.tolist() == [0.5]
    assert m.ap == pytest.approx(0.5)


def test_match_points_class_aware_and_footprint_preference() -> None:
    # item 0 at x=0 with a 1 m footprint; item 1 at x=0.8; detection at x=0.45, inside item 0's footprint,
    # nearer item 1's centre: the footprint rule wins.
    fp0 = box(-0.5, -0.5, 0.5, 0.5)
    fp1 = box(0.75, -0.05, 0.85, 0.05)
    m = match_points([[0.45, 0.0]], [0.9], [[0.0, 0.0], [0.8, 0.0]], 0.5, truth_footprints=[fp0, fp1])
    assert m.pred_match.tolist() == [0]
    # class-aware: the detection says class b, only item 1 is b
    m = match_points(
        [[0.45, 0.0]], [0.9], [[0.0, 0.0], [0.8, 0.0]], 0.5,
        pred_labels=["b"], truth_labels=["a", "b"], truth_footprints=[fp0, fp1],
    )
    assert m.pred_match.tolist() == [1] and m.truth_match.tolist() == [-1, 0]


def test_match_points_empty_inputs() -> None:
    m = match_points(np.zeros((0, 2)), [], [[0.0, 0.0]], 1.0)
    assert m.truth_match.tolist() == [-1] and len(m.pred_match) == 0
    m = match_points([[0.0, 0.0]], [0.3], np.zeros((0, 2)), 1.0)
    assert m.pred_match.tolist() == [-1]


# ------------------------------------------------------------------------------------------ evaluate()


def test_evaluate_hand_case() -> None:
    r = evaluate(pred_gdf(HAND_PRED), truth_gdf(HAND_TRUTH), aoi=aoi_ha(), target_recall=0.6)
    assert (r.area_m2, r.area_source, r.crs) == (1e4, "aoi", UTM)
    for m in (r.any_ordnance, r.class_aware, r.per_class["pmn"]):
        assert (m.tp, m.fp, m.fn) == (2, 2, 1)
        assert m.ap == pytest.approx(5 / 9)
        assert [x.point.recall for x in m.at_fp_rates] == pytest.approx([2 / 3] * 3)
        assert m.at_target_recall is not None and m.at_target_recall.score_threshold == 0.7
    lo, hi = r.any_ordnance.recall_ci95  # type: ignore[misc]
    ci = binomtest(2, 3).proportion_ci(method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    assert r.map_macro == pytest.approx(5 / 9)
    assert r.confusion == {"pmn": {"pmn": 2, "(missed)": 1}, "(no item)": {"pmn": 2}}
    assert r.radius_m == {"pmn": pytest.approx(0.0605 + DEFAULT_TOLERANCE_M)}


def test_two_detections_of_one_item_second_is_false_positive() -> None:
    truth = truth_gdf([(10, 10, "pmn")])
    pred = pred_gdf([(10.01, 10, "pmn", 0.6), (10, 10, "pmn", 0.9)])
    r = evaluate(pred, truth, aoi=aoi_ha())
    m = r.any_ordnance
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert m.precision == 0.5 and m.fp_per_ha == 1.0
    # the higher-scored one is the hit: at threshold 0.9 there is no false alarm yet
    assert m.curve.tp.tolist() == [1, 1] and m.curve.fp.tolist() == [0, 1]
    assert m.ap == pytest.approx(1.0)


@pytest.mark.parametrize("flip", [False, True])
def test_equal_scores_nearer_detection_wins_whatever_the_row_order(flip: bool) -> None:
    truth = truth_gdf([(10, 10, "pmn")])
    dets = [(10.04, 10, "pmn", 0.5), (10.0, 10.01, "pmn", 0.5)]
    pred = pred_gdf(dets[::-1] if flip else dets)
    truth_xy = np.array([[X0 + 10, Y0 + 10]])
    pred_xy = np.array([[X0 + d[0], Y0 + d[1]] for d in (dets[::-1] if flip else dets)])
    mt = match_points(pred_xy, [0.5, 0.5], truth_xy, 0.2)
    nearer = 0 if flip else 1
    assert mt.pred_match.tolist()[nearer] == 0 and mt.pred_match.tolist()[1 - nearer] == -1
    r = evaluate(pred, truth, aoi=aoi_ha())
    assert (r.any_ordnance.tp, r.any_ordnance.fp) == (1, 1)
    assert r.any_ordnance.ap == pytest.approx(0.5)  # one threshold: recall 1 at precision 1/2


def test_detections_and_items_outside_aoi_are_ignored() -> None:
    truth = truth_gdf([(10, 10, "tm62"), (150, 10, "tm62")])
    pred = pred_gdf(
        [(10, 10, "tm62", 0.9), (120, 120, "tm62", 0.99), (150, 10, "tm62", 0.8), (5, 5, "tm62", 0.1)]
    )
    r = evaluate(pred, truth, aoi=aoi_ha())
    assert (r.n_truth, r.n_pred, r.n_truth_outside_aoi, r.n_pred_outside_aoi) == (1, 2, 1, 2)
    m = r.any_ordnance
    assert (m.tp, m.fp, m.fn, m.fp_per_ha) == (1, 1, 0, 1.0)
    # without the AOI the far false alarm and the far item count
    r2 = evaluate(pred, truth)
    assert (r2.any_ordnance.tp, r2.any_ordnance.fp) == (2, 2)
    assert r2.area_source == "extent"


def test_aoi_holding_no_items_is_an_error() -> None:
    with pytest.raises(AOIError, match="none of the 1 truth items lies inside the AOI"):
        evaluate(pred_gdf([]), truth_gdf([(500, 500, "pmn")]), aoi=aoi_ha())


def test_class_mismatch_is_found_hazard_but_class_error() -> None:
    truth = truth_gdf([(10, 10, "pfm1"), (20, 20, "pmn")])
    pred = pred_gdf([(10, 10, "pmn", 0.9), (20, 20, "pmn", 0.8)])
    r = evaluate(pred, truth, aoi=aoi_ha())
    assert (r.any_ordnance.tp, r.any_ordnance.fp, r.any_ordnance.fn) == (2, 0, 0)
    assert (r.class_aware.tp, r.class_aware.fp, r.class_aware.fn) == (1, 1, 1)
    pfm1, pmn = r.per_class["pfm1"], r.per_class["pmn"]
    assert (pfm1.n_pred, pfm1.recall, pfm1.precision, pfm1.ap) == (0, 0.0, None, 0.0)
    assert (pmn.tp, pmn.fp, pmn.recall, pmn.precision) == (1, 1, 1.0, 0.5)
    assert r.confusion == {"pfm1": {"pmn": 1}, "pmn": {"pmn": 1}}


def test_prediction_class_without_items_has_no_recall() -> None:
    r = evaluate(pred_gdf([(50, 50, "shell", 0.4)]), truth_gdf([(10, 10, "pmn")]), aoi=aoi_ha())
    shell = r.per_class["shell"]
    assert (shell.n_truth, shell.recall, shell.recall_ci95, shell.ap, shell.fp) == (0, None, None, None, 1)


def test_empty_prediction_layer_is_valid_with_recall_zero() -> None:
    r = evaluate(pred_gdf([]), truth_gdf(HAND_TRUTH), aoi=aoi_ha())
    m = r.any_ordnance
    assert (m.tp, m.fp, m.fn, m.recall, m.precision, m.ap, m.fp_per_ha) == (0, 0, 3, 0.0, None, 0.0, 0.0)
    assert m.at_target_recall is None
    assert [x.point.recall for x in m.at_fp_rates] == [0.0, 0.0, 0.0]
    assert m.recall_ci95 == pytest.approx(wilson_interval(0, 3))


def test_empty_truth_is_an_error() -> None:
    with pytest.raises(VectorInputError, match="truth layer holds no items: nothing to evaluate"):
        evaluate(pred_gdf(HAND_PRED), truth_gdf([]))


def test_radius_matching() -> None:
    truth = truth_gdf([(10, 10, "pfm1")])  # footprint +-0.05 m; default radius 0.06 + 0.10 = 0.16 m
    near = pred_gdf([(10.15, 10, "pfm1", 0.9)])
    far = pred_gdf([(10.2, 10, "pfm1", 0.9)])
    assert evaluate(near, truth, aoi=aoi_ha()).any_ordnance.tp == 1
    assert evaluate(far, truth, aoi=aoi_ha()).any_ordnance.tp == 0
    assert evaluate(far, truth, aoi=aoi_ha(), radius_m=0.25).any_ordnance.tp == 1
    assert evaluate(far, truth, aoi=aoi_ha(), radius_m={"pfm1": 0.21}).any_ordnance.tp == 1
    assert evaluate(far, truth, aoi=aoi_ha(), tolerance_m=0.15).any_ordnance.tp == 1
    # a long footprint holds a centre far beyond a small radius: the footprint rule matches it
    long = gpd.GeoDataFrame(
        {"class": ["shell"]}, geometry=[box(X0 + 9.65, Y0 + 9.94, X0 + 10.35, Y0 + 10.06)], crs=UTM
    )
    assert evaluate(pred_gdf([(10.3, 10, "shell", 0.5)]), long, radius_m=0.05).any_ordnance.tp == 1
    with pytest.raises(ConfigError, match="must be > 0"):
        evaluate(far, truth, radius_m=0.0)


def test_unknown_truth_class_needs_radius() -> None:
    truth = truth_gdf([(10, 10, "sunflower")])
    with pytest.raises(VectorInputError, match="give --radius"):
        evaluate(pred_gdf([]), truth)
    assert evaluate(pred_gdf([(10, 10, "sunflower", 0.5)]), truth, radius_m=0.2).class_aware.tp == 1


def test_crs_mismatch_is_reprojected_with_a_notice(caplog: pytest.LogCaptureFixture) -> None:
    base = evaluate(pred_gdf(HAND_PRED), truth_gdf(HAND_TRUTH), aoi=aoi_ha())
    pred_wgs = pred_gdf(HAND_PRED).to_crs("EPSG:4326")
    with caplog.at_level(logging.WARNING, logger="rams.evaluate"):
        r = evaluate(pred_wgs, truth_gdf(HAND_TRUTH), aoi=aoi_ha())
    assert any("prediction layer is in EPSG:4326; reprojected to EPSG:32638" in n for n in r.notices)
    assert "reprojected to EPSG:32638" in caplog.text
    assert r.crs == UTM
    assert (r.any_ordnance.tp, r.any_ordnance.fp) == (2, 2)
    assert r.any_ordnance.ap == pytest.approx(base.any_ordnance.ap)


def test_geographic_inputs_are_evaluated_in_utm() -> None:
    truth = truth_gdf(HAND_TRUTH).to_crs("EPSG:4326")
    pred = pred_gdf(HAND_PRED).to_crs("EPSG:4326")
    aoi = aoi_ha().to_crs("EPSG:4326")
    r = evaluate(pred, truth, aoi=aoi)
    assert r.crs == UTM
    assert (r.any_ordnance.tp, r.any_ordnance.fp) == (2, 2)
    assert r.area_m2 == pytest.approx(1e4, rel=1e-6)


@pytest.mark.parametrize("mercator", ["EPSG:3857", "EPSG:3395"])
def test_mercator_inputs_are_evaluated_at_ground_scale(mercator: str) -> None:
    """Web and World Mercator metres are 1/cos(lat) ground metres (1.3x at 40 N here): areas, FP/ha and matching
    radii must be the ground's, so these layers are evaluated in UTM too."""
    truth = truth_gdf(HAND_TRUTH).to_crs(mercator)
    pred = pred_gdf(HAND_PRED).to_crs(mercator)
    r = evaluate(pred, truth, aoi=aoi_ha().to_crs(mercator))
    assert r.crs == UTM
    assert (r.any_ordnance.tp, r.any_ordnance.fp) == (2, 2)
    assert r.area_m2 == pytest.approx(1e4, rel=1e-4)  # not 1e4 / cos^2(lat)


def test_point_detections_and_coverage_area() -> None:
    pred = gpd.GeoDataFrame(
        {"label": ["pmn"], "score": [0.7]}, geometry=[Point(X0 + 10.02, Y0 + 10)], crs=UTM
    )
    coverage = gpd.GeoDataFrame(geometry=[box(X0, Y0, X0 + 50, Y0 + 40)], crs=UTM)  # 0.2 ha
    truth = truth_gdf([(10, 10, "pmn"), (70, 70, "pmn")])
    r = evaluate(pred, truth, coverage=coverage)
    assert (r.area_source, r.area_m2, r.n_truth_outside_coverage) == ("coverage", 2000.0, 1)
    assert (r.any_ordnance.tp, r.any_ordnance.fn) == (1, 1)
    r = evaluate(pred, truth, coverage=coverage, aoi=aoi_ha(0, 0, 20))  # AOI 20x20 inside coverage
    assert (r.area_source, r.area_m2) == ("aoi ∩ coverage", 400.0)
    assert evaluate(pred, truth, coverage=coverage, area_m2=123.0).area_m2 == 123.0


def test_breakdowns_by_categorical_and_binned_attributes() -> None:
    items = [(10, 10, "pmn"), (20, 10, "pmn"), (30, 10, "pmn"), (40, 10, "pfm1")]
    truth = truth_gdf(
        items,
        terrain=["grass", "grass", "gravel", "gravel"],
        visible_fraction=[1.0, 0.3, 0.6, 0.1],
        size_px=[12.0, 12.0, 3.0, 40.0],
    )
    pred = pred_gdf([(10, 10, "pmn", 0.9), (30, 10, "pmn", 0.8), (40, 10, "pmn", 0.7)])
    r = evaluate(pred, truth, aoi=aoi_ha(), breakdown_by=("terrain", "visible_fraction", "size_px"))
    terrain = {b.value: (b.n_truth, b.found, b.found_same_class) for b in r.breakdowns["terrain"]}
    assert terrain == {"grass": (2, 1, 1), "gravel": (2, 2, 1)}
    vis = {b.value: (b.n_truth, b.found) for b in r.breakdowns["visible_fraction"]}
    assert vis == {"[0, 0.25)": (1, 1), "[0.25, 0.5)": (1, 0), "[0.5, 0.75)": (1, 1), "[0.75, 1]": (1, 1)}
    size = [(b.value, b.n_truth) for b in r.breakdowns["size_px"]]
    assert size == [("[0, 4)", 1), ("[8, 16)", 2), ("[32, inf)", 1)]
    grass = r.breakdowns["terrain"][0]
    assert grass.recall_ci95 == pytest.approx(wilson_interval(1, 2))
    with pytest.raises(VectorInputError, match=r"no attribute\(s\) \['slope'\]"):
        evaluate(pred, truth, breakdown_by=("slope",))


@pytest.mark.parametrize(
    ("drop", "which", "match"),
    [("score", "pred", "prediction layer lacks column 'score'"),
     ("label", "pred", "prediction layer lacks column 'label'"),
     ("class", "truth", "truth layer lacks column 'class'")],
)
def test_missing_columns_are_clear_errors(drop: str, which: str, match: str) -> None:
    pred, truth = pred_gdf(HAND_PRED), truth_gdf(HAND_TRUTH)
    if which == "pred":
        pred = pred.drop(columns=[drop])
    else:
        truth = truth.drop(columns=[drop])
    with pytest.raises(VectorInputError, match=match):
        evaluate(pred, truth)


def test_non_numeric_scores_are_an_error() -> None:
    pred = pred_gdf(HAND_PRED)
    pred["score"] = ["high", "0.5", "0.2", "0.1"]
    with pytest.raises(VectorInputError, match="1 value\\(s\\) that are not numbers"):
        evaluate(pred, truth_gdf(HAND_TRUTH))


def test_min_score_drops_low_detections() -> None:
    r = evaluate(pred_gdf(HAND_PRED), truth_gdf(HAND_TRUTH), aoi=aoi_ha(), min_score=0.75)
    assert (r.n_pred, r.any_ordnance.tp, r.any_ordnance.fp) == (2, 1, 1)


def test_report_to_dict_is_json_and_plot_is_png() -> None:
    r = evaluate(pred_gdf(HAND_PRED), truth_gdf(HAND_TRUTH, terrain=["a", "b", "a"]), aoi=aoi_ha(),
                 breakdown_by=("terrain",))
    d = json.loads(json.dumps(r.to_dict(include_curves=True)))
    assert d["any_ordnance"]["curve"]["score_threshold"] == [0.9, 0.8, 0.7, 0.6]
    assert d["any_ordnance"]["recall_at_fp_per_ha"][0]["fp_per_ha_limit"] == 1.0
    assert "curve" not in r.to_dict()["any_ordnance"]
    png = render_plot(r)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# ------------------------------------------------------------------------------------------ CLI


runner = CliRunner()


@pytest.fixture
def gpkgs(tmp_path: Path) -> tuple[Path, Path, Path]:
    truth = truth_gdf(HAND_TRUTH, terrain=["grass", "grass", "gravel"], visible_fraction=[1.0, 0.9, 0.2])
    pred = pred_gdf(HAND_PRED)
    cov = gpd.GeoDataFrame(geometry=[box(X0, Y0, X0 + 100, Y0 + 100)], crs=UTM)
    p = write_gpkg(tmp_path / "result.gpkg", {"detections": pred, "coverage": cov})
    t = write_gpkg(tmp_path / "truth.gpkg", {"truth": truth, "confusers": pred_gdf([(1, 1, "x", 0.0)])})
    a = write_gpkg(tmp_path / "aoi.gpkg", {"aoi": aoi_ha(0, 0, 40)})
    return p, t, a


def test_cli_text_report(gpkgs: tuple[Path, Path, Path]) -> None:
    p, t, _ = gpkgs
    res = runner.invoke(app, ["evaluate", str(p), str(t)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "evaluated   1 ha (coverage), CRS EPSG:32638" in out
    any_row = next(line for line in out.splitlines() if line.startswith("any ordnance"))
    assert any_row.split()[2:7] == ["3", "4", "2", "2", "1"]
    assert "0.556" in any_row  # AP 5/9
    assert "recall by terrain:" in out and "recall by visible_fraction:" in out
    assert "not reached" in out  # target recall 0.95 unreachable


def test_cli_class_column_names_where_the_classes_are(gpkgs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A truth layer annotated in QGIS with its classes under another name: --class-column reads it (same report as
    the layer with 'class'); without it, the error names the option."""
    import json

    p, t, _ = gpkgs
    truth = read_layer(t, "truth").rename(columns={"class": "type"})
    t2 = write_gpkg(tmp_path / "typed.gpkg", {"truth": truth})
    ref = json.loads(runner.invoke(app, ["evaluate", str(p), str(t), "--truth-layer", "truth", "--json"]).stdout)
    res = runner.invoke(app, ["evaluate", str(p), str(t2), "--class-column", "type", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["any_ordnance"] == ref["any_ordnance"] and got["class_aware"] == ref["class_aware"]
    res = runner.invoke(app, ["evaluate", str(p), str(t2)])
    assert res.exit_code != 0 and "--class-column" in res.output


def test_cli_json_out_and_plot(gpkgs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    p, t, a = gpkgs
    out, png = tmp_path / "rep.json", tmp_path / "plot.png"
    args = ["evaluate", str(p), f"{t}:truth", "--aoi", str(a), "--json", "--out", str(out),
            "--plot", str(png), "--target-recall", "0.6", "--by", "terrain"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d == json.loads(out.read_text())
    assert (d["area_m2"], d["area_source"]) == (1600.0, "aoi ∩ coverage")
    assert d["any_ordnance"]["tp"] == 2 and d["n_pred_outside_aoi"] == 2
    assert d["any_ordnance"]["at_target_recall"]["score_threshold"] == 0.7
    assert list(d["breakdowns"]) == ["terrain"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    # existing outputs are kept unless --overwrite
    res = runner.invoke(app, args)
    assert res.exit_code == 12 and "already exists; pass --overwrite" in res.stderr
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_cli_layer_option_radius_and_no_coverage(gpkgs: tuple[Path, Path, Path]) -> None:
    p, t, _ = gpkgs
    res = runner.invoke(
        app, ["evaluate", str(p), str(t), "--truth-layer", "truth", "--radius", "pmn=45", "--no-coverage",
              "--area-ha", "2", "--json", "--by", "none"]
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    # at 45 m the 0.8 detection at (50, 50) reaches the item at (30, 10) (44.7 m away)
    assert d["radius_m"] == {"pmn": 45.0} and d["any_ordnance"]["tp"] == 3
    assert (d["area_ha"], d["area_source"], d["breakdowns"]) == (2.0, "given", {})


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.gpkg", "{t}"], 3, "vector file not found: missing.gpkg"),
        (["{p}", "{t}:nolayer"], 13, "has no layer 'nolayer'"),
        (["{p}:coverage", "{t}"], 13, "lacks column(s) ['label', 'score']"),
        (["{p}", "{t}", "--radius", "wide"], 10, "--radius 'wide' is not a radius"),
        (["{p}", "{t}", "--fp-rates", "1,x"], 10, "--fp-rates '1,x' is not a list of numbers"),
        (["{p}", "{t}", "--fp-rates", "0"], 10, "false-alarm rates must be > 0"),
        (["{p}:detections", "{t}", "--pred-layer", "coverage"], 10, "give only one"),
        (["{p}", "{t}", "--aoi", "{t}:confusers"], 8, "none of the 3 truth items lies inside"),
        (["{p}", "{t}", "--by", "slope"], 13, "no attribute(s) ['slope']"),
        (["{p}", "{t}", "--target-recall", "1.5"], 10, "target recall must lie in (0, 1]"),
    ],
)
def test_cli_errors(gpkgs: tuple[Path, Path, Path], args: list[str], code: int, message: str) -> None:
    p, t, _ = gpkgs
    argv = ["evaluate", *(a.format(p=p, t=t) for a in args)]
    res = runner.invoke(app, argv)
    assert res.exit_code == code, res.output
    assert message in res.output


def test_cli_empty_truth_and_empty_predictions(tmp_path: Path) -> None:
    t_empty = write_gpkg(tmp_path / "t0.gpkg", {"truth": truth_gdf([])})
    p_empty = write_gpkg(tmp_path / "p0.gpkg", {"detections": pred_gdf([])})
    t = write_gpkg(tmp_path / "t.gpkg", {"truth": truth_gdf(HAND_TRUTH)})
    res = runner.invoke(app, ["evaluate", str(p_empty), str(t_empty)])
    assert res.exit_code == 13
    assert "truth layer holds no items: nothing to evaluate" in res.stderr
    res = runner.invoke(app, ["evaluate", str(p_empty), str(t), "--json", "--area-ha", "1"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    m = d["any_ordnance"]
    assert (m["recall"], m["fn"], m["precision"], m["ap"]) == (0.0, 3, None, 0.0)


def test_cli_crs_mismatch_notice(tmp_path: Path) -> None:
    p = write_gpkg(tmp_path / "p.gpkg", {"detections": pred_gdf(HAND_PRED).to_crs("EPSG:4326")})
    t = write_gpkg(tmp_path / "t.gpkg", {"truth": truth_gdf(HAND_TRUTH)})
    res = runner.invoke(app, ["evaluate", str(p), str(t), "--json", "--area-ha", "1"])
    assert res.exit_code == 0, res.output
    assert "reprojected to EPSG:32638" in res.stderr
    assert json.loads(res.stdout)["any_ordnance"]["tp"] == 2


def test_feature_without_geometry_is_an_error() -> None:
    truth = truth_gdf(HAND_TRUTH)
    truth.loc[1, "geometry"] = None
    with pytest.raises(VectorInputError, match="truth layer has 1 feature\\(s\\) without geometry"):
        evaluate(pred_gdf(HAND_PRED), truth)


def test_cli_empty_aoi_layer(gpkgs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    p, t, _ = gpkgs
    empty = write_gpkg(tmp_path / "empty_aoi.gpkg", {"aoi": aoi_ha().iloc[0:0]})
    res = runner.invoke(app, ["evaluate", str(p), str(t), "--aoi", str(empty)])
    assert res.exit_code == 8, res.output
    assert "AOI layer in" in res.stderr and "is empty" in res.stderr


def test_a_self_intersecting_aoi_is_repaired_whole() -> None:
    """A bow-tie AOI (crossing edges) is read as both its lobes, as rams detect reads it: its raw area is 0 (the
    lobes cancel), which used to be refused as "no area (points or lines?)"."""
    from shapely.geometry import Polygon

    bow = Polygon([(X0, Y0), (X0 + 100, Y0 + 100), (X0 + 100, Y0), (X0, Y0 + 100)])  # two 2 500 m2 triangles
    assert not bow.is_valid and bow.area == 0
    truth = truth_gdf([(80, 20, "tm62"), (20, 80, "tm62"), (50, 10, "tm62")])  # right lobe, left lobe, bottom gap
    pred = pred_gdf([(80, 20, "tm62", 0.9), (20, 80, "tm62", 0.8)])
    r = evaluate(pred, truth, aoi=gpd.GeoDataFrame(geometry=[bow], crs=UTM))
    assert r.area_m2 == pytest.approx(5000.0) and r.n_truth == 2 and r.any_ordnance.tp == 2
    assert any("were invalid (e.g. self-intersecting) and were repaired" in n for n in r.notices)


def test_truth_labelled_by_item_model_is_read_as_its_class() -> None:
    """Annotators (and rams synth's `model` column) name the item (PMN-2, 120mm mortar); evaluation maps each
    model to its rams class, says so, and gives the class-labelled result."""
    by_class = truth_gdf([(10, 10, "pmn"), (30, 10, "mortar"), (50, 10, "tm62")])
    by_model = truth_gdf([(10, 10, "PMN-2"), (30, 10, "120mm mortar"), (50, 10, "tm62")])
    pred = pred_gdf([(10, 10, "pmn", 0.9), (30, 10, "mortar", 0.8), (50, 10, "pmn", 0.7)])
    a, b = evaluate(pred, by_class, aoi=aoi_ha()), evaluate(pred, by_model, aoi=aoi_ha())
    assert (b.class_aware.tp, b.class_aware.fp) == (a.class_aware.tp, a.class_aware.fp) == (2, 1)
    assert any("PMN-2 -> pmn" in n and "120mm mortar -> mortar" in n for n in b.notices)
    with pytest.raises(VectorInputError, match="'Claymore' is not a rams class"):
        evaluate(pred, truth_gdf([(10, 10, "Claymore")]), aoi=aoi_ha())
