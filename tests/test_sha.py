"""SHA reduction proposals on hand-built scenes with exactly known areas, and `rams reduce` end to end."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from rams.classes import CLASS_NAMES
from rams.cli.main import app
from rams.errors import VectorInputError
from rams.gate import detector_gate
from rams.layers import list_layers, read_layer, read_metadata, write_gpkg
from rams.sha import ReduceConfig, reduce_sha

UTM = "EPSG:32638"
X0, Y0 = 500000.0, 4400000.0
REC = "recommendation, requires NMAA decision"


def B(x0: float, y0: float, x1: float, y1: float):  # noqa: N802 - a box in metres from the origin
    return box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def gdf(rows: list[dict], geoms: list, crs: str = UTM) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(rows, geometry=geoms, crs=crs)


def sha_layer(crs: str = UTM) -> gpd.GeoDataFrame:
    return gdf([{"PolyID": "SHA-7", "village": "Talish"}], [B(0, 0, 100, 100)]).to_crs(crs)


def quality_layer() -> gpd.GeoDataFrame:
    """Adequate 80 x 90 m, blurred 80 x 10 m strip, not-imaged 20 x 100 m strip."""
    return gdf(
        [{"quality": "adequate"}, {"quality": "inadequate:blur"}, {"quality": "not_imaged"}],
        [B(0, 10, 80, 100), B(0, 0, 80, 10), B(80, 0, 100, 100)],
    )


def coverage_layer() -> gpd.GeoDataFrame:
    return gdf([{"source": "ortho"}], [B(0, 0, 80, 100)])


def hazard_layer(*boxes) -> gpd.GeoDataFrame:
    return gdf([{"poly_id": f"HP-{i + 1:04d}"} for i in range(len(boxes))], list(boxes))


def detections_layer(points: list[tuple[float, float]], review: list[str | None] | None = None) -> gpd.GeoDataFrame:
    rows = [
        {"det_id": f"d{i}", "label": "pmn", "score": 0.9, "model": "m", "tile_id": "t", "length_m": 0.12,
         "width_m": 0.12, "lon": 0.0, "lat": 0.0}
        for i in range(len(points))
    ]
    if review is not None:
        for r, v in zip(rows, review, strict=True):
            r["review"] = v
    cols = ["det_id", "label", "score", "model", "tile_id", "length_m", "width_m", "lon", "lat"]
    cols += ["review"] if review is not None else []
    return gpd.GeoDataFrame(rows, columns=cols, geometry=[B(x - 0.06, y - 0.06, x + 0.06, y + 0.06)
                                                          for x, y in points], crs=UTM)


#: The rules other than the edge margin, on exact areas (the margin has its own tests below).
NO_MARGIN = ReduceConfig(edge_margin_m=0)


def areas_by_reason(rem: gpd.GeoDataFrame) -> dict[str, float]:
    return {k: float(v) for k, v in rem.groupby("reason")["area_m2"].sum().items()}


def test_known_areas_partition_and_attributes() -> None:
    res = reduce_sha(sha_layer(), hazard_layer(B(20, 40, 30, 50)), quality_layer(), coverage_layer(),
                     detections_layer([(25, 45)]), cfg=NO_MARGIN)
    row = res.table.iloc[0]
    assert row.sha_id == "SHA-7" and row.PolyID == "SHA-7" and row.village == "Talish"  # ID + attributes kept
    assert row.sha_m2 == pytest.approx(10000) and row.sha_ha == pytest.approx(1.0)
    assert row.adeq_m2 == pytest.approx(7200) and row.adeq_pct == pytest.approx(72)
    assert row.inadeq_m2 == pytest.approx(800) and row.noimg_m2 == pytest.approx(2000)
    assert row.evid_m2 == pytest.approx(100)
    assert row.cancel_m2 == pytest.approx(7100) and row.cancel_pct == pytest.approx(71)
    assert row.remain_m2 == pytest.approx(2900) and row.remain_ha == pytest.approx(0.29)
    assert row.n_items == 1 and row.n_hazpoly == 1 and row.evidence == "direct: 1 item(s)"
    assert row.status == f"partial cancellation proposed - {REC}"
    assert areas_by_reason(res.remaining) == pytest.approx(
        {"evidence": 100, "inadequate imaging": 800, "not imaged": 2000}
    )
    cancel = res.cancellation.geometry.iloc[0]
    assert cancel.area == pytest.approx(7100)
    assert cancel.is_valid and cancel.intersection(B(20, 40, 30, 50)).area == pytest.approx(0, abs=1e-6)
    assert res.cancellation.iloc[0].status == f"proposed for cancellation - {REC}"
    # remaining + cancellation tile the SHA exactly, without overlap
    rem = res.remaining.union_all()
    assert rem.intersection(cancel).area == pytest.approx(0, abs=1e-6)
    assert rem.union(cancel).symmetric_difference(B(0, 0, 100, 100)).area == pytest.approx(0, abs=1e-6)
    assert all(g.is_valid for g in res.remaining.geometry)
    ev = res.remaining[res.remaining.reason == "evidence"].iloc[0]
    assert ev.status == f"evidence: CHA proposed - {REC}"


def test_unimaged_ground_never_proposed_for_cancellation() -> None:
    """The not-imaged strip is absent from the quality layer entirely: it must still stay in the SHA."""
    q = quality_layer().iloc[:2]
    res = reduce_sha(sha_layer(), hazard_layer(), q, coverage_layer(), cfg=NO_MARGIN)
    cancel = res.cancellation.union_all()
    assert cancel.intersection(B(80, 0, 100, 100)).area == pytest.approx(0, abs=1e-6)
    assert cancel.area == pytest.approx(7200)
    assert areas_by_reason(res.remaining)["not imaged"] == pytest.approx(2000)
    assert res.table.iloc[0].evidence == "none seen"


def test_quality_says_adequate_but_detector_did_not_look() -> None:
    cov = gdf([{}], [B(0, 0, 50, 100)])
    res = reduce_sha(sha_layer(), hazard_layer(), quality_layer(), cov, cfg=NO_MARGIN)
    assert res.table.iloc[0].cancel_m2 == pytest.approx(50 * 90)
    assert areas_by_reason(res.remaining)["not analysed"] == pytest.approx(30 * 90)


def test_without_quality_layer_nothing_is_adequate() -> None:
    res = reduce_sha(sha_layer(), hazard_layer(B(20, 40, 30, 50)), None, coverage_layer())
    assert res.cancellation.empty
    row = res.table.iloc[0]
    assert row.cancel_m2 == 0 and row.remain_m2 == pytest.approx(10000) and row.adeq_m2 == 0
    assert row.status == f"no cancellation proposed - {REC}"
    assert areas_by_reason(res.remaining) == pytest.approx({"evidence": 100, "quality not assessed": 9900})
    assert any("no coverage_quality layer" in n for n in res.notes)


def test_without_detector_coverage_nothing_is_proposed_unless_configured() -> None:
    res = reduce_sha(sha_layer(), hazard_layer(), quality_layer(), None)
    assert res.cancellation.empty and res.table.iloc[0].remain_m2 == pytest.approx(10000)
    res2 = reduce_sha(sha_layer(), hazard_layer(), quality_layer(), None,
                      cfg=ReduceConfig(require_detector_coverage=False, edge_margin_m=0))
    assert res2.table.iloc[0].cancel_m2 == pytest.approx(7200)


def test_fully_adequate_sha_is_proposed_for_cancellation() -> None:
    q = gdf([{"quality": "adequate"}], [B(-10, -10, 110, 110)])
    res = reduce_sha(sha_layer(), hazard_layer(), q, gdf([{}], [B(-10, -10, 110, 110)]))
    row = res.table.iloc[0]
    assert row.cancel_pct == pytest.approx(100) and row.status == f"proposed for cancellation - {REC}"
    assert res.remaining.empty


def test_slivers_and_small_pieces_stay_in_the_sha() -> None:
    """Evidence cuts the adequate ground into a 100 x 49.8 m piece, a 0.4 m wide strip and a 4 x 5 m piece."""
    q = gdf([{"quality": "adequate"}], [B(0, 0, 100, 100)])
    ev = hazard_layer(B(0, 49.8, 100, 60), B(0, 60.4, 100, 95), B(4, 95, 100, 100))
    res = reduce_sha(sha_layer(), ev, q, gdf([{}], [B(0, 0, 100, 100)]), cfg=NO_MARGIN)
    assert res.table.iloc[0].cancel_m2 == pytest.approx(100 * 49.8)
    small = areas_by_reason(res.remaining)["below minimum size"]
    assert small == pytest.approx(100 * 0.4 + 4 * 5)
    res_keep = reduce_sha(sha_layer(), ev, q, gdf([{}], [B(0, 0, 100, 100)]),
                          cfg=ReduceConfig(min_cancellation_width_m=0, min_cancellation_area_m2=0, edge_margin_m=0))
    assert res_keep.table.iloc[0].cancel_m2 == pytest.approx(100 * 49.8 + 40 + 20)


def test_simplified_cancellation_only_shrinks() -> None:
    """A staircase of 0.25 m steps (pixel/block edges): the simplified outline has few turning points, inside."""
    cells = [B(i / 4, 0, i / 4 + 0.25, 40 + i / 4) for i in range(240)] + [B(60, 0, 100, 100)]
    q = gdf([{"quality": "adequate"}] * len(cells), cells)
    cov = gdf([{}], [B(0, 0, 100, 100)])
    exact = reduce_sha(sha_layer(), hazard_layer(), q, cov).cancellation.geometry.iloc[0]
    simple = reduce_sha(sha_layer(), hazard_layer(), q, cov,
                        cfg=ReduceConfig(simplify_cancellation_m=0.5)).cancellation.geometry.iloc[0]
    n_exact = sum(len(p.exterior.coords) for p in exact.geoms)
    n_simple = sum(len(p.exterior.coords) for p in simple.geoms)
    assert n_exact > 400 and n_simple < 20
    assert simple.difference(exact).area < 1e-6  # never grows into ground that was not adequate
    assert simple.area > 0.97 * exact.area


def test_geographic_sha_output_in_its_crs_areas_in_metres() -> None:
    res = reduce_sha(sha_layer("EPSG:4326"), hazard_layer(B(20, 40, 30, 50)), quality_layer(), coverage_layer(),
                     cfg=NO_MARGIN)
    assert res.table.crs.to_epsg() == 4326 and res.cancellation.crs.to_epsg() == 4326
    row = res.table.iloc[0]
    assert row.sha_m2 == pytest.approx(10000, rel=1e-3) and row.cancel_m2 == pytest.approx(7100, rel=1e-3)
    back = res.cancellation.to_crs(UTM).geometry.iloc[0]
    assert back.intersection(B(80.5, 0, 100, 100)).area == pytest.approx(0, abs=1e-3)


def test_evidence_outside_shas_is_reported() -> None:
    res = reduce_sha(sha_layer(), hazard_layer(B(200, 0, 210, 10)), quality_layer(), coverage_layer())
    assert res.evidence_outside_sha == ["HP-0001"]
    assert any("outside every SHA" in n and REC in n for n in res.notes)


def test_rejected_detections_not_counted() -> None:
    d = detections_layer([(25, 45), (26, 46)], review=["confirmed", "rejected"])
    res = reduce_sha(sha_layer(), hazard_layer(B(20, 40, 30, 50)), quality_layer(), coverage_layer(), d)
    assert res.table.iloc[0].n_items == 1 and res.table.iloc[0].n_confirm == 1


def test_bad_sha_inputs() -> None:
    dup = gdf([{"sha_id": "A"}, {"sha_id": "A"}], [B(0, 0, 1, 1), B(2, 2, 3, 3)])
    with pytest.raises(VectorInputError, match="not unique"):
        reduce_sha(dup, hazard_layer(), None, None)
    with pytest.raises(VectorInputError, match="no column 'code'"):
        reduce_sha(sha_layer(), hazard_layer(), None, None, cfg=ReduceConfig(sha_id_column="code"))
    lines = gpd.GeoDataFrame({"sha_id": ["A"]}, geometry=[B(0, 0, 1, 1).exterior], crs=UTM)
    with pytest.raises(VectorInputError, match="not polygons"):
        reduce_sha(lines, hazard_layer(), None, None)
    nums = gdf([{"x": 1}, {"x": 2}], [B(0, 0, 10, 10), B(20, 0, 30, 10)])
    assert list(reduce_sha(nums, hazard_layer(), None, None).table.sha_id) == ["SHA-0001", "SHA-0002"]
    # a SHA without an ID would reach IMSMA as "nan"/"None" (two of them as one ID): refused, named from 1
    for blank in (None, float("nan"), " "):
        gaps = gdf([{"sha_id": "A"}, {"sha_id": blank}], [B(0, 0, 10, 10), B(20, 0, 30, 10)])
        with pytest.raises(VectorInputError, match=r"SHA feature\(s\) \[2\] .* have no ID in column 'sha_id'"):
            reduce_sha(gaps, hazard_layer(), None, None)
    # whole numbers in a float column (shapefile numeric IDs) stay whole: "14", not "14.0"
    floats = gdf([{"sha_id": 14.0}, {"sha_id": 15.0}], [B(0, 0, 10, 10), B(20, 0, 30, 10)])
    assert list(reduce_sha(floats, hazard_layer(), None, None).table.sha_id) == ["14", "15"]
    with pytest.raises(VectorInputError, match=r"SHA feature\(s\) \[1\] \(counting from 1"):
        reduce_sha(lines, hazard_layer(), None, None)


# ------------------------------------------------------------------------------------------------ files + CLI

#: rams_metadata of a detection run whose model was validated (recall 0.97 for every class at score 0.5)
VALIDATED = {
    "model_recall": {"score_threshold": 0.5, "per_class": dict.fromkeys(CLASS_NAMES, 0.97), "what": "unit test"},
    "score_threshold": 0.5,
}


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    result = tmp_path / "result.gpkg"
    write_gpkg(
        result,
        {"detections": detections_layer([(25, 45)]), "coverage": coverage_layer(),
         "coverage_quality": quality_layer()},
        metadata={"detect.model": "unit-test", **VALIDATED},
    )
    sha = tmp_path / "sha.gpkg"
    write_gpkg(sha, {"sha": sha_layer()})
    return {"result": result, "sha": sha, "dir": tmp_path}


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_cli_reduce_end_to_end(scene: dict[str, Path]) -> None:
    out = scene["dir"] / "decision.gpkg"
    before = _sha256(scene["result"])
    r = CliRunner().invoke(app, ["reduce", str(scene["result"]), "--sha", str(scene["sha"]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "SHA-7" in r.output and "partial cancellation proposed" in r.output
    assert _sha256(scene["result"]) == before  # the input is never modified
    names = list_layers(out)
    for layer in ("detections", "coverage", "coverage_quality", "hazard_polygons", "sha_reduction",
                  "sha_proposed_remaining", "sha_proposed_cancellation"):
        assert layer in names
    table = read_layer(out, "sha_reduction")
    # evidence is the buffered detection (built from the detections: 0.12 m square + 20 m + 3 m buffer)
    assert table.iloc[0].evid_m2 == pytest.approx(np.pi * 23**2 + 4 * 0.12 * 23 + 0.0144, rel=3e-3)
    assert table.iloc[0].cancel_m2 + table.iloc[0].remain_m2 == pytest.approx(10000)
    meta = read_metadata(out)
    assert meta["detect.model"] == "unit-test" and "reduce.config" in meta
    assert "the NMAA decides" in meta["reduce.disclaimer"] and "reduce.sha_sha256" in meta
    con = sqlite3.connect(out)
    styles = dict(con.execute("SELECT f_table_name, styleQML FROM layer_styles").fetchall())
    con.close()
    assert "244,167,24,128" in styles["sha_reduction"]
    assert "255,0,0,128" in styles["sha_proposed_remaining"] and "255,0,0,128" in styles["hazard_polygons"]


def test_cli_reduce_with_separate_quality_file_and_json(scene: dict[str, Path]) -> None:
    import json

    result = scene["dir"] / "r2.gpkg"
    write_gpkg(result, {"detections": detections_layer([(25, 45)]), "coverage": coverage_layer()}, metadata=VALIDATED)
    q = scene["dir"] / "q.gpkg"
    write_gpkg(q, {"coverage_quality": quality_layer()})
    out = scene["dir"] / "d2.gpkg"
    r = CliRunner().invoke(app, ["reduce", str(result), "--sha", str(scene["sha"]), "--quality", str(q),
                                 "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["per_sha"][0]["sha_id"] == "SHA-7" and data["per_sha"][0]["adeq_m2"] == pytest.approx(7200)
    assert "coverage_quality" in list_layers(out)


def test_cli_reduce_error_paths(scene: dict[str, Path]) -> None:
    runner = CliRunner()
    d = scene["dir"]
    out = str(d / "o.gpkg")
    r = runner.invoke(app, ["reduce", str(d / "missing.gpkg"), "--sha", str(scene["sha"]), "--out", out])
    assert r.exit_code == 3 and "not found" in r.output
    r = runner.invoke(app, ["reduce", str(scene["result"]), "--sha", str(d / "nosha.gpkg"), "--out", out])
    assert r.exit_code == 3 and "nosha.gpkg" in r.output
    r = runner.invoke(app, ["reduce", str(scene["result"]), "--sha", str(scene["sha"]), "--sha-layer", "shas",
                            "--out", out])
    assert r.exit_code == 13 and "no layer 'shas'" in r.output
    r = runner.invoke(app, ["reduce", str(scene["result"]), "--sha", str(scene["sha"]), "--out",
                            str(scene["result"])])
    assert r.exit_code == 12 and "inputs are never overwritten" in r.output
    r = runner.invoke(app, ["reduce", str(scene["result"]), "--sha", str(scene["sha"]), "--id-column", "code",
                            "--out", out])
    assert r.exit_code == 13 and "--id-column" in r.output
    noq = d / "noq.gpkg"
    write_gpkg(noq, {"other": coverage_layer()})
    r = runner.invoke(app, ["reduce", str(scene["result"]), "--sha", str(scene["sha"]), "--quality", str(noq),
                            "--out", out])
    assert r.exit_code == 13 and "coverage_quality" in r.output
    nodet = d / "nodet.gpkg"
    write_gpkg(nodet, {"coverage": coverage_layer()})
    r = runner.invoke(app, ["reduce", str(nodet), "--sha", str(scene["sha"]), "--out", out])
    assert r.exit_code == 13 and "no layer 'detections'" in r.output
    bad_cfg = d / "bad.yaml"
    bad_cfg.write_text("reduce:\n  min_cancelation_area_m2: 3\n")
    r = runner.invoke(app, ["reduce", str(scene["result"]), "--sha", str(scene["sha"]), "--config", str(bad_cfg),
                            "--out", out])
    assert r.exit_code == 10 and "min_cancelation_area_m2" in r.output
    assert not Path(out).exists()


def test_real_mosaic_partly_unimaged_never_cancelled_there(
    make_geotiff: Callable[..., Path], tmp_path: Path
) -> None:
    """rams quality on a real GeoTIFF whose east 10 m are alpha-masked, then rams reduce: no cancellation there."""
    from skimage import data as skdata

    gsd, size = 0.05, 800  # 40 x 40 m
    grass = np.tile(skdata.grass(), (2, 2))[:size, :size].astype(np.float32)
    rgb = np.stack([grass * 0.8 + 30, grass * 0.75 + 25, grass * 0.6 + 20]).clip(0, 255).astype("uint8")
    alpha = np.full((size, size), 255, np.uint8)
    alpha[:, 600:] = 0
    ortho = make_geotiff("scene.tif", height=size, width=size, gsd=gsd, data=rgb, alpha=True, alpha_mask=alpha,
                         origin=(X0, Y0 + 40))
    q = tmp_path / "q.gpkg"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("quality:\n  classes: [shell]\n  cell_size_m: 5\n")
    r = CliRunner().invoke(app, ["quality", str(ortho), "--out", str(q), "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    result = tmp_path / "result.gpkg"
    write_gpkg(result, {"detections": detections_layer([]), "coverage": gdf([{}], [B(0, 0, 30, 40)])},
               metadata=VALIDATED)
    sha = tmp_path / "sha.gpkg"
    write_gpkg(sha, {"sha": gdf([{"sha_id": "S1"}], [B(5, 5, 40, 35)])})  # 35 x 30 m, east 10 m unimaged
    out = tmp_path / "d.gpkg"
    r = CliRunner().invoke(app, ["reduce", str(result), "--sha", str(sha), "--quality", str(q), "--out", str(out)])
    assert r.exit_code == 0, r.output
    cancel = read_layer(out, "sha_proposed_cancellation")
    assert cancel.union_all().intersection(B(30, 0, 40, 40)).area == pytest.approx(0, abs=1e-6)
    # the threat is shells (0.70 m long): a shell lying across the footprint's edge is only partly imaged, so the
    # 0.7 m strip beside the unimaged ground stays too; the SHA's other sides have imagery beyond them: no margin
    assert cancel.iloc[0].area_m2 == pytest.approx((25 - 0.7) * 30, rel=1e-6)
    assert cancel.union_all().intersection(B(29.3, 0, 40, 40)).area == pytest.approx(0, abs=1e-6)
    rem = read_layer(out, "sha_proposed_remaining")
    assert areas_by_reason(rem) == pytest.approx({"not imaged": 10 * 30, "edge margin": 0.7 * 30})


def test_default_config_file_equals_code_defaults() -> None:
    from rams.config import load_config
    from rams.sha import DecisionsConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "decisions-default.yaml"
    assert load_config(DecisionsConfig, path) == DecisionsConfig()


# ------------------------------------------------------------------------------- detector competence gate


def test_detector_gate_reasons() -> None:
    rec = {"score_threshold": 0.6, "per_class": {"pfm1": 0.01, "tm62": 0.96, "pom2": None}}
    assert detector_gate(rec, 0.6, ["tm62"], 0.9) is None  # only anti-tank mines suspected: validated
    why = detector_gate(rec, 0.6, ["tm62", "pfm1"], 0.9)
    assert why is not None and "pfm1 0.01" in why and "tm62" not in why
    why = detector_gate(rec, 0.6, ["pom2"], 0.9)
    assert why is not None and "pom2 not measured" in why
    why = detector_gate(rec, None, None, 0.9)  # no threat list: every class counts
    assert why is not None and "pfm1" in why
    why = detector_gate(rec, 0.7, ["tm62"], 0.9)  # kept fewer detections than the validation did
    assert why is not None and "stricter than the 0.6" in why
    assert detector_gate(rec, 0.5, ["tm62"], 0.9) is None  # a lower threshold only finds more
    assert "no measured recall" in str(detector_gate(None, 0.6, ["tm62"], 0.9))
    assert detector_gate(None, 0.6, ["tm62"], 0.0) is None  # switched off


def test_detector_gate_needs_the_lower_bound_of_recall() -> None:
    """A recall measured on a few items is not enough: the lower end of its 95 % interval must reach the minimum
    (the card's per-class ``recall_ci95`` goes into the run's record)."""
    from rams.gate import model_recall_record

    few = {"synthetic_scenes": {"score_threshold": 0.5, "per_class": {
        "tm62": {"items": 20, "found": 19, "recall": 0.95, "recall_ci95": [0.764, 0.991]},
        "shell": {"items": 400, "found": 392, "recall": 0.98, "recall_ci95": [0.961, 0.990]},
    }}}
    rec = model_recall_record(few)
    assert rec is not None and rec["recall_lower_95"] == {"tm62": 0.764, "shell": 0.961}
    why = detector_gate(rec, 0.5, ["tm62"], 0.9)
    assert why is not None and "tm62 0.95 (95 % lower bound 0.76)" in why
    assert detector_gate(rec, 0.5, ["shell"], 0.9) is None  # 392 of 400: the bound is above 0.9
    assert detector_gate({k: v for k, v in rec.items() if k != "recall_lower_95"}, 0.5, ["tm62"], 0.9) is None


def test_detector_gate_prefers_the_sites_own_flights() -> None:
    """A card evaluated on a site's annotated flights (``held_out_flights``) is judged on those, not on the
    synthetic scenes; the note says which record spoke."""
    from rams.gate import model_recall_record

    synthetic = {"score_threshold": 0.5, "per_class": {"tm62": {"recall": 0.99, "recall_ci95": [0.95, 1.0]}}}
    flights = {"score_threshold": 0.5, "per_class": {"tm62": {"recall": 0.8, "recall_ci95": [0.6, 0.9]}}}
    rec = model_recall_record({"synthetic_scenes": synthetic, "held_out_flights": flights})
    assert rec is not None and rec["source"] == "metrics.held_out_flights"
    why = detector_gate(rec, 0.5, ["tm62"], 0.9)
    assert why is not None and "tm62 0.80" in why and "(metrics.held_out_flights of the model card)" in why
    only_synthetic = model_recall_record({"synthetic_scenes": synthetic})
    assert only_synthetic is not None and detector_gate(only_synthetic, 0.5, ["tm62"], 0.9) is None


def test_detector_gate_with_per_class_thresholds() -> None:
    """Recall measured at per-class thresholds holds for a run only where the run's threshold of each threat
    class is no stricter than the measured one; the result's metadata carries both."""
    import json

    from rams.gate import run_detector_gate

    rec = {"score_threshold": 0.6, "class_thresholds": {"pmn": 0.45, "tm62": 0.63},
           "per_class": {"pmn": 0.95, "tm62": 0.96}}
    assert detector_gate(rec, {"pmn": 0.45, "tm62": 0.63}, None, 0.9) is None  # the card's own point
    assert detector_gate(rec, 0.45, None, 0.9) is None  # --threshold 0.45: looser for both
    why = detector_gate(rec, 0.6, ["pmn", "tm62"], 0.9)  # one threshold for all: stricter for pmn only
    assert why is not None and "0.6, stricter than the 0.45" in why and "(pmn)" in why
    why = detector_gate(rec, {"pmn": 0.5, "tm62": 0.7}, None, 0.9)
    assert why is not None and "pmn 0.5 > 0.45" in why and "tm62 0.7 > 0.63" in why
    assert detector_gate(rec, 0.6, ["tm62"], 0.9) is None  # pmn not suspected here
    meta = {"model_recall": json.dumps(rec), "score_threshold": "0.45",
            "class_thresholds": json.dumps({"pmn": 0.5, "tm62": 0.63})}
    why = run_detector_gate(meta, ["pmn"], 0.9)
    assert why is not None and "stricter" in why  # the per-class record wins over the lowest threshold
    assert run_detector_gate({**meta, "class_thresholds": ""}, ["pmn"], 0.9) is None


def test_unvalidated_detector_never_supports_cancellation() -> None:
    sha, haz, q, cov = sha_layer(), hazard_layer(), quality_layer(), coverage_layer()
    proven = reduce_sha(sha, haz, q, cov, cfg=NO_MARGIN)
    assert proven.table.iloc[0].cancel_m2 > 1000
    res = reduce_sha(sha, haz, q, cov, detector_unproven="model recall below 0.9 for pfm1 0.01", cfg=NO_MARGIN)
    assert res.cancellation.empty and res.table.iloc[0].cancel_m2 == 0
    assert "no cancellation proposed" in res.table.iloc[0].status
    by = areas_by_reason(res.remaining)
    from rams.styles import REMAINING_REASONS

    assert set(by) <= set(REMAINING_REASONS)  # every reason has its own category in the QGIS style
    # the ground that would have been cancelled is kept, with its reason
    assert by["detector not validated"] == pytest.approx(proven.table.iloc[0].cancel_m2, rel=1e-6)
    assert sum(by.values()) == pytest.approx(10000, rel=1e-6)
    assert any("pfm1 0.01" in n for n in res.notes)


def test_cli_reduce_refuses_cancellation_for_an_unvalidated_run(scene: dict[str, Path]) -> None:
    runner = CliRunner()
    weak = scene["dir"] / "weak.gpkg"
    record = {"score_threshold": 0.5, "per_class": {**dict.fromkeys(CLASS_NAMES, 0.97), "pfm1": 0.0}}
    write_gpkg(weak, {"detections": detections_layer([(25, 45)]), "coverage": coverage_layer(),
                      "coverage_quality": quality_layer()},
               metadata={"model_recall": record, "score_threshold": 0.5})  # fmt: skip
    out = scene["dir"] / "weak-decision.gpkg"
    r = runner.invoke(app, ["reduce", str(weak), "--sha", str(scene["sha"]), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "no cancellation proposed" in r.output and "pfm1 0.00" in r.output
    assert read_layer(out, "sha_proposed_cancellation").empty
    assert "pfm1 0.00" in read_metadata(out)["reduce.notes"]
    # an old result without any recorded recall: the same
    bare = scene["dir"] / "bare.gpkg"
    write_gpkg(bare, {"detections": detections_layer([(25, 45)]), "coverage": coverage_layer(),
                      "coverage_quality": quality_layer()})  # fmt: skip
    out2 = scene["dir"] / "bare-decision.gpkg"
    r = runner.invoke(app, ["reduce", str(bare), "--sha", str(scene["sha"]), "--out", str(out2)])
    assert r.exit_code == 0 and read_layer(out2, "sha_proposed_cancellation").empty
    assert "no measured recall" in read_metadata(out2)["reduce.notes"]


def test_edge_margin_keeps_ground_where_an_item_would_be_only_partly_seen() -> None:
    """Adequate, analysed ground within an item's length of unseen ground (not imaged, blurred, outside the
    detector's coverage, or no imagery past the SHA's outline) is not proposed for cancellation: an item across
    that edge is only partly in the imagery. Default: the longest threat item (all classes: a 0.70 m shell)."""
    # the fixtures: adequate 80 x 90 m (x 0-80, y 10-100), blurred below y 10, not imaged east of x 80, nothing
    # imaged outside the SHA (0-100 m): every side of the adequate block is an edge
    res = reduce_sha(sha_layer(), hazard_layer(B(20, 40, 30, 50)), quality_layer(), coverage_layer())
    cancel = res.cancellation.union_all()
    assert cancel.area == pytest.approx((80 - 1.4) * (90 - 1.4) - 100)
    assert cancel.bounds == pytest.approx((X0 + 0.7, Y0 + 10.7, X0 + 79.3, Y0 + 99.3))
    by = areas_by_reason(res.remaining)
    assert by["edge margin"] == pytest.approx(80 * 90 - (80 - 1.4) * (90 - 1.4))
    assert by["not imaged"] == pytest.approx(2000) and by["inadequate imaging"] == pytest.approx(800)
    assert res.table.iloc[0].adeq_m2 == pytest.approx(7200)  # what the imagery shows is still reported whole
    # threats known (the quality step's classes): the longest of them, here PMN (0.121 m)
    pmn = reduce_sha(sha_layer(), hazard_layer(), quality_layer(), coverage_layer(), threat_classes=["pfm1", "pmn"])
    assert pmn.cancellation.union_all().area == pytest.approx((80 - 0.242) * (90 - 0.242))
    # imagery and coverage reaching past the SHA: its outline is no edge; only the inner edges keep a margin
    q = gdf([{"quality": "adequate"}, {"quality": "inadequate:blur"}], [B(-20, 10, 80, 120), B(-20, -20, 80, 10)])
    cov = gdf([{}], [B(-20, -20, 80, 120)])
    wide = reduce_sha(sha_layer(), hazard_layer(), q, cov)
    assert wide.cancellation.union_all().area == pytest.approx((80 - 0.7) * (90 - 0.7))
    assert wide.cancellation.union_all().bounds == pytest.approx((X0, Y0 + 10.7, X0 + 79.3, Y0 + 100))
    # an explicit margin, and 0 to switch it off
    assert reduce_sha(sha_layer(), hazard_layer(), q, cov, cfg=ReduceConfig(edge_margin_m=2.0)).cancellation \
        .union_all().area == pytest.approx(78 * 88)
    assert reduce_sha(sha_layer(), hazard_layer(), q, cov, cfg=NO_MARGIN).cancellation.union_all().area == \
        pytest.approx(80 * 90)
    with pytest.raises(ValueError, match="must be >= 0"):
        ReduceConfig(edge_margin_m=-1)


def test_overlapping_shas_are_named_with_their_overlap() -> None:
    """Two SHAs sharing ground: each assesses it and counts it, so the totals count it twice; the run says which and
    how much (touching SHAs share only an edge: no note)."""
    q = gdf([{"quality": "adequate"}], [B(-10, -10, 110, 110)])
    cov = gdf([{}], [B(-10, -10, 110, 110)])
    shas = gdf([{"sha_id": "A"}, {"sha_id": "B"}, {"sha_id": "C"}], [B(0, 0, 60, 50), B(40, 0, 100, 50),
                                                                      B(0, 50, 100, 100)])
    res = reduce_sha(shas, hazard_layer(), q, cov)
    notes = [n for n in res.notes if n.startswith("SHAs overlap")]
    assert len(notes) == 1 and "A and B (1000 m2)" in notes[0] and " C " not in notes[0]
    assert res.table.cancel_m2.sum() == pytest.approx(10000 + 1000)  # 100 x 100 m, the 1000 m2 overlap twice
    apart = reduce_sha(shas.iloc[[0, 2]], hazard_layer(), q, cov)
    assert not [n for n in apart.notes if n.startswith("SHAs overlap")]


def test_a_layer_in_a_local_crs_is_refused_with_the_fix(tmp_path: Path) -> None:
    """SHA or AOI layers in a local (engineering) CRS ended in an internal PROJ error in reduce and detect."""
    wkt = ('LOCAL_CS["Arbitrary site grid",LOCAL_DATUM["Arbitrary",0],UNIT["metre",1],AXIS["Easting",EAST],'
           'AXIS["Northing",NORTH]]')
    p = tmp_path / "sha.gpkg"
    gpd.GeoDataFrame({"sha_id": ["L1"]}, geometry=[box(0, 0, 10, 10)], crs=wkt).to_file(p)
    with pytest.raises(VectorInputError, match=r"local coordinate system \('Arbitrary site grid'\).*EPSG:4326"):
        read_layer(p, what="SHA layer")
