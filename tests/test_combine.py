"""Several models over one orthomosaic into one result (`rams detect --model A --model B`, rams.combine).

Real GeoTIFFs and real (tiny, randomly initialised) bundles: the detections are meaningless, what is tested is
how the per-model results join: every detection kept once, the coverage where every model looked, the per-class
recall record the detector gate reads, resume, and the errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from typer.testing import CliRunner

from rams.cli.main import app
from rams.combine import combine_recall
from rams.detect import DetectConfig, models_dir_of, run_detect
from rams.errors import EXIT_CODES, GSDError, InputError
from rams.gate import run_detector_gate
from rams.layers import read_metadata

runner = CliRunner()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two different tiny bundles: 'tiny-a' at 1 cm, all classes; 'tiny-b' at 0.5 cm, the small classes."""
    from rams.detector.bundle import make_test_bundle

    root = tmp_path_factory.mktemp("models")
    make_test_bundle(root / "tiny-a", tile_size_px=256, threshold=0.3)
    make_test_bundle(root / "tiny-b", classes=("pfm1", "pom2", "submunition"), seed=1, gsd_m=0.005,
                     tile_size_px=256, threshold=0.3)
    return root / "tiny-a", root / "tiny-b"


def _recall(model: Path, per_class: dict[str, tuple[float, float]], threshold: float = 0.3) -> None:
    """Give a bundle a measured recall (per class: recall, lower 95 % bound) at ``threshold``."""
    from rams.detector.bundle import update_card_metrics

    update_card_metrics(model, "synthetic_scenes", {
        "what": "test", "score_threshold": threshold,
        "per_class": {c: {"recall": r, "recall_ci95": [lo, 1.0]} for c, (r, lo) in per_class.items()},
    })


def _ortho(make_geotiff) -> Path:
    am = np.zeros((900, 1000), np.uint8)
    am[:, :700] = 255  # the right 1.5 m not imaged
    return make_geotiff(height=900, width=1000, gsd=0.005, alpha=True, alpha_mask=am, seed=5)


def _cfg(models: list[Path], **kw: object) -> DetectConfig:
    return DetectConfig(model=str(models[0]), extra_models=[str(m) for m in models[1:]], batch_size=2, threads=1,
                        tile_size_px=256, **kw)  # type: ignore[arg-type]


def _dets(path: Path) -> gpd.GeoDataFrame:
    return pyogrio.read_dataframe(path, layer="detections")


def test_a_model_run_twice_under_two_names_gives_each_detection_once(make_geotiff, bundles, tmp_path) -> None:
    """The same weights under two names see exactly the same objects: the combined layer is the single run's,
    row for row, and every row names both models."""
    a = bundles[0]
    twin = tmp_path / "twin"
    shutil.copytree(a, twin)
    card = json.loads((twin / "model.json").read_text())
    card["name"] = "twin"
    (twin / "model.json").write_text(json.dumps(card))
    ortho = _ortho(make_geotiff)
    single, both = tmp_path / "single.gpkg", tmp_path / "both.gpkg"
    run_detect(ortho, single, _cfg([a]))
    s = run_detect(ortho, both, _cfg([a, twin]))
    one, two = _dets(single), _dets(both)
    assert len(one) > 0 and s.detections == len(two) == len(one)
    assert set(two["model"]) == {"tiny-a+twin"}
    cols = ["det_id", "label", "score", "tile_id", "length_m", "width_m", "lon", "lat"]
    assert one[cols].equals(two[cols])
    assert one.geometry.equals(two.geometry)
    c1 = pyogrio.read_dataframe(single, layer="coverage").geometry.iloc[0]
    c2 = pyogrio.read_dataframe(both, layer="coverage").geometry.iloc[0]
    assert c2.symmetric_difference(c1).area < 1e-9
    assert not models_dir_of(both).exists()
    assert (tmp_path / "both.config.yaml").exists()


def test_two_models_join_detections_coverage_and_recall(make_geotiff, bundles, tmp_path) -> None:
    a0, b0 = bundles
    a, b = tmp_path / "tiny-a", tmp_path / "tiny-b"
    shutil.copytree(a0, a)
    shutil.copytree(b0, b)
    # tiny-a finds PMN well and PFM-1 badly; tiny-b, the small-item model, finds PFM-1 better
    _recall(a, {"pfm1": (0.10, 0.05), "pmn": (0.96, 0.95), "pom2": (0.5, 0.4), "submunition": (0.2, 0.1)})
    _recall(b, {"pfm1": (0.90, 0.85), "pom2": (0.3, 0.2), "submunition": (0.2, 0.1)})
    ortho = _ortho(make_geotiff)
    ra, rb, out = tmp_path / "a.gpkg", tmp_path / "b.gpkg", tmp_path / "ab.gpkg"
    run_detect(ortho, ra, _cfg([a]))
    run_detect(ortho, rb, _cfg([b]))
    s = run_detect(ortho, out, _cfg([a, b]))
    da, db, dab = _dets(ra), _dets(rb), _dets(out)
    assert len(da) > 0 and len(db) > 0
    # every detection of either model is in the result, or merged into a same-class one at the same place
    assert len(dab) <= len(da) + len(db)
    assert set(dab["model"]) <= {"tiny-a", "tiny-b", "tiny-a+tiny-b"}
    for src, name in ((da, "tiny-a"), (db, "tiny-b")):
        mine = dab[dab["model"].str.contains(name, regex=False)]
        assert len(mine) <= len(src)
        for _, row in src.iterrows():
            # the same detection, or the same-class one it was merged into (rams.merge's rule)
            same = dab[(dab["label"] == row["label"]) & (dab["score"] >= row["score"] - 1e-6)]
            c = row.geometry.centroid
            near = (same.geometry.centroid.distance(c) < 0.03) | same.geometry.buffer(1e-9).covers(c)
            near |= same.geometry.centroid.within(row.geometry.buffer(1e-9))
            assert near.any(), (name, row["det_id"])
    assert list(dab["det_id"]) == list(range(1, len(dab) + 1))
    assert s.detections == len(dab) and s.model == "tiny-a+tiny-b"
    # coverage: where both looked (here the same imaged ground, resampled on a 1 cm and a 0.5 cm grid)
    cov = pyogrio.read_dataframe(out, layer="coverage")
    ca = pyogrio.read_dataframe(ra, layer="coverage").geometry.iloc[0]
    cb = pyogrio.read_dataframe(rb, layer="coverage").geometry.iloc[0]
    assert cov.geometry.iloc[0].symmetric_difference(ca.intersection(cb)).area < 1e-6
    assert cov["gsd_m"].iloc[0] == pytest.approx(0.01)
    # what the run can find: per class the better model's record, with its thresholds
    meta = read_metadata(out)
    record = json.loads(meta["model_recall"])
    assert record["per_class"] == {"pfm1": 0.90, "pmn": 0.96, "pom2": 0.5, "submunition": 0.2}
    assert record["recall_lower_95"]["pfm1"] == 0.85
    assert record["models_by_class"]["pfm1"] == "tiny-b" and record["models_by_class"]["pmn"] == "tiny-a"
    assert json.loads(meta["class_models"])["mon"] == "tiny-a"  # measured by neither: the model that looks for it
    models = json.loads(meta["models"])
    assert [m["model_name"] for m in models] == ["tiny-a", "tiny-b"]
    assert meta["model_name"] == "tiny-a+tiny-b"
    # each model's warnings, named: the small classes are too small for tiny-a at 1 cm, not for tiny-b at 0.5 cm
    assert any(w.startswith("tiny-a: ") and "span under" in w for w in json.loads(meta["warnings"]))
    assert not any(w.startswith("tiny-b: ") for w in json.loads(meta["warnings"]))
    assert any(w.startswith("false alarms add up over the 2 models (tiny-a at ") for w in json.loads(meta["warnings"]))
    # the gate: PFM-1 and PMN are found well enough only because each has its own model
    assert run_detector_gate(meta, ["pfm1", "pmn"], 0.8) is None
    assert run_detector_gate(read_metadata(ra), ["pfm1", "pmn"], 0.8) is not None
    assert "pom2" in (run_detector_gate(meta, ["pfm1", "pom2"], 0.8) or "")


def test_combine_recall_keeps_each_models_thresholds() -> None:
    a = {"per_class": {"pfm1": 0.1, "pmn": 0.9}, "score_threshold": 0.5, "source": "metrics.synthetic_scenes"}
    b = {"per_class": {"pfm1": 0.6}, "class_thresholds": {"pfm1": 0.2}, "recall_lower_95": {"pfm1": 0.5},
         "source": "metrics.held_out_flights"}
    record, thresholds, chosen = combine_recall([
        ("a", a, {"pfm1": 0.5, "pmn": 0.55}), ("b", b, {"pfm1": 0.25, "pom2": 0.4}),
    ])
    assert record is not None
    assert chosen == {"pfm1": "b", "pmn": "a", "pom2": "b"}
    assert thresholds == {"pfm1": 0.25, "pmn": 0.55, "pom2": 0.4}
    assert record["per_class"] == {"pfm1": 0.6, "pmn": 0.9}
    assert record["class_thresholds"] == {"pfm1": 0.2, "pmn": 0.5}
    assert record["recall_lower_95"] == {"pfm1": 0.5}
    # no record at all: thresholds still combine, nothing is claimed
    none, thr, _ = combine_recall([("a", None, {"pfm1": 0.5}), ("b", None, {"pfm1": 0.3})])
    assert none is None and thr == {"pfm1": 0.3}


def test_interrupted_two_model_run_resumes_to_the_same_result(make_geotiff, bundles, tmp_path) -> None:
    ortho = _ortho(make_geotiff)
    ref, out = tmp_path / "ref.gpkg", tmp_path / "r.gpkg"
    run_detect(ortho, ref, _cfg(list(bundles)))
    first_tiles = run_detect(ortho, tmp_path / "a.gpkg", _cfg([bundles[0]])).tiles_total
    calls = {"n": 0}

    def stop_in_second_model(done: int, total: int, mpx: float) -> None:
        calls["n"] += 1
        if done > first_tiles + 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_detect(ortho, out, _cfg(list(bundles)), progress=stop_in_second_model)
    assert not out.exists()
    parts = models_dir_of(out)
    done_part = parts / "0-tiny-a.gpkg"
    assert done_part.exists()
    s = run_detect(ortho, out, _cfg(list(bundles)), resume=True)
    # the finished model's result is kept whole (all its tiles count as resumed), the second resumes its checkpoint
    assert s.tiles_resumed > first_tiles
    assert s.tiles_processed == s.tiles_total - s.tiles_resumed
    a, b = _dets(ref), _dets(out)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert not parts.exists()


def test_a_finished_models_result_is_not_kept_when_its_recall_was_remeasured(make_geotiff, bundles,
                                                                            tmp_path) -> None:
    """Resuming keeps a finished model's result only if it would record the same measured recall now: the detector
    gate reads it, and a card re-measured between the interruption and the resume must not leave the old figure."""
    a, b = tmp_path / "tiny-a", tmp_path / "tiny-b"
    shutil.copytree(bundles[0], a)
    shutil.copytree(bundles[1], b)
    _recall(a, {"pmn": (0.5, 0.4)})
    ortho = _ortho(make_geotiff)
    out = tmp_path / "r.gpkg"
    first_tiles = run_detect(ortho, tmp_path / "a.gpkg", _cfg([a])).tiles_total

    def stop_in_second_model(done: int, total: int, mpx: float) -> None:
        if done > first_tiles + 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_detect(ortho, out, _cfg([a, b]), progress=stop_in_second_model)
    _recall(a, {"pmn": (0.97, 0.95)})  # re-measured meanwhile
    s = run_detect(ortho, out, _cfg([a, b]), resume=True)
    assert s.tiles_resumed < first_tiles  # model a ran again (its tile checkpoint was already folded into its result)
    assert json.loads(read_metadata(out)["model_recall"])["per_class"]["pmn"] == 0.97


def test_several_model_errors(make_geotiff, bundles, tmp_path) -> None:
    ortho = _ortho(make_geotiff)
    with pytest.raises(InputError, match="named twice"):
        run_detect(ortho, tmp_path / "x.gpkg", _cfg([bundles[0], bundles[0]]))
    # a model that cannot run on this mosaic fails before any model runs (here: too coarse for tiny-b)
    coarse = make_geotiff(height=300, width=300, gsd=0.012, alpha=False, seed=2)
    r = runner.invoke(app, ["detect", str(coarse), "--out", str(tmp_path / "c.gpkg"), "--model", str(bundles[0]),
                            "--model", str(bundles[1]), "--tile-size", "256"])
    assert r.exit_code == EXIT_CODES[GSDError], r.output
    assert "too coarse for model tiny-b" in r.output
    assert not (tmp_path / "c.gpkg").exists() and not models_dir_of(tmp_path / "c.gpkg").exists()
    # rams batch refuses the same before any flight runs (no batch folder written)
    import shutil

    from rams.batch.run import BatchConfig, run_batch

    flights = tmp_path / "flights"
    flights.mkdir()
    shutil.copy(ortho, flights / "f1.tif")
    with pytest.raises(InputError, match="named twice"):
        run_batch(flights, tmp_path / "batch-out", cfg=BatchConfig(detect=_cfg([bundles[0], bundles[0]])))
    twin = tmp_path / "twin" / "tiny-a"  # another folder, the same card name
    shutil.copytree(bundles[0], twin)
    with pytest.raises(InputError, match="both called 'tiny-a'"):
        run_batch(flights, tmp_path / "batch-out", cfg=BatchConfig(detect=_cfg([bundles[0], twin])))
    assert not (tmp_path / "batch-out").exists()


def test_cli_runs_several_models(make_geotiff, bundles, tmp_path) -> None:
    ortho = _ortho(make_geotiff)
    out = tmp_path / "cli.gpkg"
    r = runner.invoke(app, ["detect", str(ortho), "--out", str(out), "--model", str(bundles[0]), "--model",
                            str(bundles[1]), "--tile-size", "256", "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert "by every model" in r.output and "output" in r.output
    assert read_metadata(out)["model_name"] == "tiny-a+tiny-b"


def test_results_of_different_mosaics_are_not_combined(make_geotiff, bundles, tmp_path) -> None:
    from rams.combine import combine_results

    one = _ortho(make_geotiff)
    other = make_geotiff(height=600, width=600, gsd=0.005, alpha=False, seed=9)
    ra, rb = tmp_path / "a.gpkg", tmp_path / "b.gpkg"
    run_detect(one, ra, _cfg([bundles[0]]))
    run_detect(other, rb, _cfg([bundles[1]]))
    with pytest.raises(InputError, match="different orthomosaics"):
        combine_results([ra, rb], tmp_path / "ab.gpkg", overwrite=False, merge_distance_m=0.03)
    assert not (tmp_path / "ab.gpkg").exists()


def test_a_model_forced_off_its_gsd_range_answers_for_no_class(make_geotiff, bundles, tmp_path) -> None:
    a, b = tmp_path / "tiny-a", tmp_path / "tiny-b"
    shutil.copytree(bundles[0], a)
    shutil.copytree(bundles[1], b)
    _recall(a, {"pfm1": (0.10, 0.05), "pmn": (0.96, 0.95)})
    _recall(b, {"pfm1": (0.90, 0.85)})
    # 1.2 cm: served by tiny-a (0.5-1.2 cm), too coarse for tiny-b (0.25-0.6 cm), which runs only with --force
    mosaic = make_geotiff(height=400, width=400, gsd=0.012, alpha=False, seed=4)
    out = tmp_path / "ab.gpkg"
    run_detect(mosaic, out, _cfg([a, b], force=True))
    meta = read_metadata(out)
    record = json.loads(meta["model_recall"])
    assert record["per_class"] == {"pfm1": 0.10, "pmn": 0.96}  # tiny-b's better PFM-1 figure does not apply here
    assert set(record["models_by_class"].values()) == {"tiny-a"}
    assert meta["model_recall_withheld"] == "null"
    models = json.loads(meta["models"])
    assert models[0]["model_recall_withheld"] is None and "(--force)" in models[1]["model_recall_withheld"]
    assert "pfm1 0.10" in (run_detector_gate(meta, ["pfm1"], 0.8) or "")
    # both forced (3 cm): the run vouches for nothing and says why
    both = tmp_path / "both.gpkg"
    run_detect(make_geotiff(height=200, width=200, gsd=0.03, alpha=False, seed=4), both, _cfg([a, b], force=True))
    why = run_detector_gate(read_metadata(both), ["pmn"], 0.5) or ""
    assert "model tiny-a ran on 3.00 cm/px" in why and "model tiny-b ran on 3.00 cm/px" in why


def test_json_summary_names_the_models(make_geotiff, bundles, tmp_path) -> None:
    ortho = _ortho(make_geotiff)
    r = runner.invoke(app, ["detect", str(ortho), "--out", str(tmp_path / "j.gpkg"), "--model", str(bundles[0]),
                            "--model", str(bundles[1]), "--tile-size", "256", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output[r.output.index("{"):])
    assert s["models"] == ["tiny-a", "tiny-b"] and s["model"] == "tiny-a+tiny-b"
    assert set(s["class_thresholds"]) >= {"pfm1", "pmn", "pom2"}


def test_each_model_is_announced_as_it_starts(make_geotiff, bundles, tmp_path) -> None:
    seen: list[tuple[str, int, int]] = []
    totals: set[int] = set()
    run_detect(_ortho(make_geotiff), tmp_path / "m.gpkg", _cfg(list(bundles)),
               progress=lambda done, total, mpx: totals.add(total), on_model=lambda *a: seen.append(a))
    assert seen == [("tiny-a", 1, 2), ("tiny-b", 2, 2)]
    assert len(totals) == 1  # one tile count over both models


def _pair_record(holder: Path, other: Path, point_thresholds: dict[str, dict[str, dict[str, float]]],
                 measured: dict[str, tuple[float, float]] | None = None) -> None:
    """Give ``holder`` thresholds set together with ``other`` (and the pair's measured recall at 'balanced')."""
    from rams.detector.bundle import read_card, update_card_companion

    o = read_card(other)
    metrics = None
    if measured is not None:
        mt = point_thresholds["balanced"]
        metrics = {"synthetic_scenes": {
            "what": "test pair", "model_thresholds": mt,
            "per_class": {c: {"recall": r, "recall_ci95": [lo, 1.0]} for c, (r, lo) in measured.items()},
        }}
    update_card_companion(holder, o.name, o.weights_sha256, thresholds=point_thresholds)
    if metrics:
        update_card_companion(holder, o.name, o.weights_sha256, metrics=metrics)


def test_thresholds_set_for_the_pair_replace_each_models_own(make_geotiff, bundles, tmp_path) -> None:
    """A card holding thresholds set together with the other model (same weights): both models run at them, the
    result records each model's thresholds and the pair's measured recall, and the detector gate checks every
    model's threshold of every class against the ones that recall was measured at."""
    a0, b0 = bundles
    a, b = tmp_path / "tiny-a", tmp_path / "tiny-b"
    shutil.copytree(a0, a)
    shutil.copytree(b0, b)
    _recall(a, {"pfm1": (0.10, 0.05), "pmn": (0.96, 0.95)})
    _recall(b, {"pfm1": (0.50, 0.45)})
    from rams.detector.bundle import update_card_metrics

    update_card_metrics(b, "note", {}, operating_points={"precise": 0.5})
    together = {"tiny-a": {"pfm1": 0.45, "pmn": 0.35}, "tiny-b": {"pfm1": 0.4, "submunition": 0.42}}
    _pair_record(b, a, {"balanced": together, "precise": {"tiny-a": {"pmn": 0.6}, "tiny-b": {"pfm1": 0.6}}},
                 measured={"pfm1": (0.93, 0.9), "pmn": (0.97, 0.95), "pom2": (0.5, 0.4)})
    ortho = _ortho(make_geotiff)
    out = tmp_path / "ab.gpkg"
    s = run_detect(ortho, out, _cfg([a, b]))
    meta = read_metadata(out)
    per_model = json.loads(meta["model_class_thresholds"])
    assert per_model["tiny-a"]["pfm1"] == 0.45 and per_model["tiny-a"]["pmn"] == 0.35
    assert per_model["tiny-a"]["mon"] == 0.3  # not set for the pair: the model's own operating point
    assert per_model["tiny-b"] == {"pfm1": 0.4, "pom2": 0.3, "submunition": 0.42}
    assert s.class_thresholds["pfm1"] == 0.4  # the lowest score any model keeps a PFM-1 at
    models = {m["model_name"]: m for m in json.loads(meta["models"])}
    assert models["tiny-a"]["class_thresholds"]["pmn"] == 0.35
    record = json.loads(meta["model_recall"])
    assert record["per_class"] == {"pfm1": 0.93, "pmn": 0.97, "pom2": 0.5}
    assert record["model_thresholds"] == together
    assert "companions.tiny-a.metrics.synthetic_scenes in the card of tiny-b: the pair's recall" in record["source"]
    assert json.loads(meta["joint_thresholds"])["point"] == "balanced"
    assert not any("false alarms add up" in w for w in json.loads(meta["warnings"]))
    # the gate: the pair's recall, at the pair's thresholds
    assert run_detector_gate(meta, ["pfm1", "pmn"], 0.85) is None
    why = run_detector_gate(meta, ["pfm1", "pom2"], 0.85) or ""
    assert "pom2 0.50 (95 % lower bound 0.40) (companions.tiny-a.metrics.synthetic_scenes in the card of tiny-b: " \
        "the pair's recall)" in why
    stricter = dict(meta, model_class_thresholds=json.dumps({**per_model, "tiny-b": {"pfm1": 0.5}}))
    why = run_detector_gate(stricter, ["pfm1"], 0.85) or ""
    assert "score >= 0.5, stricter than the 0.4" in why and "(pfm1 (tiny-b))" in why
    dropped = dict(meta, model_class_thresholds=json.dumps({"tiny-a": per_model["tiny-a"]}))
    assert "tiny-b, which this run did not use" in (run_detector_gate(dropped, ["pfm1"], 0.85) or "")
    # another operating point of the pair: its thresholds; no recall measured there for a stricter setting
    p = tmp_path / "precise.gpkg"
    run_detect(ortho, p, _cfg([a, b], operating_point="precise"))
    pm = read_metadata(p)
    assert json.loads(pm["model_class_thresholds"])["tiny-b"]["pfm1"] == 0.6
    assert "stricter" in (run_detector_gate(pm, ["pfm1"], 0.85) or "")
    # ... until the pair is measured there too: then that record is the run's
    from rams.detector.bundle import read_card, update_card_companion

    precise = {"tiny-a": {"pmn": 0.6}, "tiny-b": {"pfm1": 0.6}}
    update_card_companion(b, "tiny-a", read_card(a).weights_sha256, metrics={"synthetic_scenes_at_precise": {
        "what": "test pair, precise", "model_thresholds": precise,
        "per_class": {"pfm1": {"recall": 0.91, "recall_ci95": [0.88, 1.0]}}}})
    run_detect(ortho, p, _cfg([a, b], operating_point="precise"), overwrite=True)
    pm = read_metadata(p)
    rec = json.loads(pm["model_recall"])
    assert rec["per_class"] == {"pfm1": 0.91} and "synthetic_scenes_at_precise in the card of tiny-b" in rec["source"]
    assert run_detector_gate(pm, ["pfm1"], 0.85) is None
    assert "pmn not measured" in (run_detector_gate(pm, ["pfm1", "pmn"], 0.85) or "")
    # --threshold: one threshold for every class of every model, each model's own record, the false alarms add up
    t = tmp_path / "t.gpkg"
    run_detect(ortho, t, _cfg([a, b], threshold=0.3))
    tm = read_metadata(t)
    assert "joint_thresholds" not in tm or tm["joint_thresholds"] in (None, "", "null")
    assert any("false alarms add up" in w for w in json.loads(tm["warnings"]))
    assert "model_thresholds" not in json.loads(tm["model_recall"])


def test_pair_thresholds_need_the_other_models_exact_weights(make_geotiff, bundles, tmp_path) -> None:
    """Thresholds set beside one version of a model do not carry over to another: each runs at its own, with a
    warning naming why; an operating point the pair has no thresholds for does the same."""
    from rams.combine import find_joint
    from rams.detector.bundle import read_card, update_card_companion

    a0, b0 = bundles
    a, b = tmp_path / "tiny-a", tmp_path / "tiny-b"
    shutil.copytree(a0, a)
    shutil.copytree(b0, b)
    update_card_companion(b, "tiny-a", "0" * 64, thresholds={"balanced": {"tiny-a": {"pmn": 0.4},
                                                                         "tiny-b": {"pfm1": 0.4}}})
    ca, cb = read_card(a), read_card(b)
    joint, note = find_joint([ca, cb], None)
    assert joint is None and note is not None and "other weights of tiny-a" in note
    out = tmp_path / "ab.gpkg"
    run_detect(_ortho(make_geotiff), out, _cfg([a, b]))
    meta = read_metadata(out)
    assert json.loads(meta["model_class_thresholds"])["tiny-a"]["pmn"] == 0.3
    warnings = json.loads(meta["warnings"])
    assert any("other weights of tiny-a" in w for w in warnings)
    assert any("false alarms add up" in w for w in warnings)
    update_card_companion(b, "tiny-a", ca.weights_sha256, thresholds={"balanced": {"tiny-a": {"pmn": 0.4},
                                                                                  "tiny-b": {"pfm1": 0.4}}})
    cb = read_card(b)
    joint, note = find_joint([cb, ca], None)
    assert joint is not None and note is None and joint["holder"] == "tiny-b"
    assert joint["thresholds"]["tiny-a"] == {"pmn": 0.4} and joint["record"] is None  # no recall measured yet
    res = runner.invoke(app, ["models", "show", str(b)])
    assert res.exit_code == 0, res.output
    assert "beside        tiny-a (weights" in res.output and "balanced, tiny-a: pmn 0.40" in res.output
    joint, note = find_joint([ca, cb], "high_recall")
    assert joint is None and "no thresholds set with tiny-a for operating point 'high_recall'" in (note or "")
    assert find_joint([ca], None) == (None, None)


def test_card_companions_are_validated_and_absent_ones_leave_the_card_as_it_was(bundles, tmp_path) -> None:
    from rams.detector.bundle import ModelCard, read_card
    from rams.errors import ModelError

    b = tmp_path / "tiny-b"
    shutil.copytree(bundles[1], b)
    text = (b / "model.json").read_text()
    card = read_card(b)
    assert "companions" not in card.model_dump(mode="json")
    assert json.dumps(card.model_dump(mode="json"), indent=2) + "\n" == text
    base = card.model_dump(mode="json")
    good = {"weights_sha256": "a" * 64, "thresholds": {"balanced": {"tiny-b": {"pfm1": 0.4}, "x": {"pmn": 0.5}}}}
    assert ModelCard.model_validate({**base, "companions": {"x": good}}).companions["x"].thresholds
    bad = [
        ({**good, "thresholds": {"balanced": {"tiny-b": {"pfm1": 0.4}}}}, "must give thresholds for"),
        ({**good, "thresholds": {"nope": good["thresholds"]["balanced"]}}, "is not an operating point"),
        ({**good, "thresholds": {"balanced": {"tiny-b": {"pmn": 0.4}, "x": {}}}}, "are not classes of this model"),
        ({**good, "thresholds": {"balanced": {"tiny-b": {"pfm1": 1.4}, "x": {}}}}, "must be in (0, 1)"),
        ({**good, "weights_sha256": "xyz"}, "64 lowercase hex"),
    ]
    for comp, words in bad:
        (b / "model.json").write_text(json.dumps({**base, "companions": {"x": comp}}))
        with pytest.raises(ModelError, match=words.replace("(", r"\(").replace(")", r"\)")):
            read_card(b)
