"""End to end with the shipped default model: `rams synth` scene -> `rams detect` -> `rams evaluate`.

Floors: on this anti-tank-mine scene (ploughed ground, 14 TM-62/TM-57 among stones, clods and litter) the default
model measured recall 1.00 with 0 FP/ha (v1.0.0; v1.1.0 with 1024 px tiles and v1.1.1 with 1536 px tiles: 14 of 14,
no false alarm). The floors below (recall >= 0.85 any-ordnance, <= 60 FP/ha) leave room for platform float
differences and for small changes of the scene generator, but fail on any broken link of the chain: wrong band
order or scaling, GSD not resampled, georeferencing off by more than a matching radius, tiles lost at seams, or
alpha read as imagery. They are NOT the model's acceptance target (recall >= 0.95 on items >= 8 px at <= 10 FP/ha
for every class), which the shipped model does not reach on small AP mines; that is measured by
scripts/eval_model.py and reported in its card.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from typer.testing import CliRunner

from rams.cli.main import app
from rams.detect import DetectConfig, other_models_hint, run_detect
from rams.evaluate import evaluate
from rams.layers import read_metadata

runner = CliRunner()


@pytest.fixture(scope="module")
def at_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("scene") / "at"
    r = runner.invoke(app, ["synth", str(d), "--seed", "9102", "--size", "12x8", "--gsd", "0.005", "--terrain",
                            "ploughed", "--targets", "at", "--density", "1500"])
    assert r.exit_code == 0, r.output
    return d


def _metrics(pred: Path, truth: Path) -> tuple[float, float, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    p = pyogrio.read_dataframe(pred, layer="detections")
    t = pyogrio.read_dataframe(truth, layer="truth")
    cov = pyogrio.read_dataframe(pred, layer="coverage").geometry.iloc[0]
    rep = evaluate(p, t, area_m2=cov.area)
    m = rep.any_ordnance
    assert m.recall is not None and m.fp_per_ha is not None
    return float(m.recall), float(m.fp_per_ha), p, t


def test_default_model_finds_at_mines(at_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.gpkg"
    r = runner.invoke(app, ["detect", str(at_scene / "ortho.tif"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    recall, fp_ha, dets, truth = _metrics(out, at_scene / "truth.gpkg")
    assert len(truth) >= 10
    assert recall >= 0.85, f"recall {recall:.2f}"
    assert fp_ha <= 60, f"{fp_ha:.1f} FP/ha"


def test_seams_find_each_object_once(at_scene: Path, tmp_path: Path) -> None:
    """Small tiles put many objects on or near seams and corners: each must still be found exactly once."""
    small = tmp_path / "small.gpkg"
    run_detect(at_scene / "ortho.tif", small, DetectConfig(tile_size_px=224, overlap_px=96))
    big = tmp_path / "big.gpkg"
    run_detect(at_scene / "ortho.tif", big, DetectConfig())
    r_small, fp_small, dets, truth = _metrics(small, at_scene / "truth.gpkg")
    r_big, _, _, _ = _metrics(big, at_scene / "truth.gpkg")
    assert r_small >= 0.85 and r_small >= r_big - 0.08
    assert fp_small <= 60
    # no object reported twice: at most one same-label detection centre within 12 cm of any item's centre
    c = np.array([[g.centroid.x, g.centroid.y] for g in dets.geometry])
    for geom in truth.geometry:
        near = np.hypot(c[:, 0] - geom.centroid.x, c[:, 1] - geom.centroid.y) < 0.12
        assert near.sum() <= 1
    # the small-tile run really had seams through the scene
    assert dets.tile_id.nunique() >= 4


def test_1024_px_tiles_find_what_512_px_tiles_find(at_scene: Path, tmp_path: Path) -> None:
    """The default 1024 px tiles give the detections of the card's 512 px tiles.

    The network is fully convolutional, but not shift-invariant near tile edges: an object whose receptive
    field (> 100 px) reaches a tile edge sees zero padding in one tiling and not in the other, and tiles start
    at different phases of the network's stride 16. So the same objects must be found at the same places
    (measured on this scene: centres within 0.5 mm, labels identical), with scores that may differ a little
    (measured: median 4e-5, max 0.053 at threshold 0.3). Tolerances: 2 cm (2 px) in position, 0.1 in score,
    and only detections at least 0.1 above the threshold must have a partner (a score just over the threshold
    in one tiling may fall just under it in the other).
    """
    thr = 0.3
    runs = {}
    for ts in (512, 1024, None):
        out = tmp_path / f"t{ts}.gpkg"
        s = run_detect(at_scene / "ortho.tif", out, DetectConfig(tile_size_px=ts, threshold=thr))
        runs[ts] = pyogrio.read_dataframe(out, layer="detections")
        if ts is not None:
            assert s.tiles_total == {512: 6, 1024: 2}[ts]  # 1200 x 800 px at 1 cm: really different tilings
    assert len(runs[512]) >= 10
    for a_key, b_key in [(512, 1024), (1024, 512), (512, None), (None, 512)]:
        a, b = runs[a_key], runs[b_key]
        ca = np.array([[g.centroid.x, g.centroid.y] for g in a.geometry])
        cb = np.array([[g.centroid.x, g.centroid.y] for g in b.geometry])
        dist = np.hypot(ca[:, None, 0] - cb[None, :, 0], ca[:, None, 1] - cb[None, :, 1])
        j = dist.argmin(axis=1)
        sure = a.score.to_numpy() >= thr + 0.1
        assert sure.any()
        assert (dist.min(axis=1)[sure] < 0.02).all(), f"{a_key} -> {b_key}: a detection was lost or moved"
        assert (a.label.to_numpy()[sure] == b.label.to_numpy()[j[sure]]).all()
        assert np.abs(a.score.to_numpy()[sure] - b.score.to_numpy()[j[sure]]).max() < 0.1


def test_shipped_scatterable_specialist_finds_what_the_default_cannot(tmp_path: Path) -> None:
    """`models/scatterable-05cm` beside the default on a 0.5 cm flight of scatterable mines (sand, seed 9302: 5 PFM-1,
    3 POM-2, 4 submunitions among stones and litter). Measured (v0.1.0 with default v1.1.1): the default alone found
    2 of 12 (POM-2 only; PFM-1 and submunitions are a few pixels at its 1 cm), both together 9 of 12 (PFM-1 3 of 5)
    with no false alarm (each at its own `balanced`, and again at the thresholds set for the pair, `high_recall`,
    since 2026-11-28). Floors: >= 6 of 12 and >= 2 PFM-1 together, <= 60 FP/ha; they fail if the specialist is
    not run, reads the flight at the wrong GSD or bands, or its detections are lost in the combination. Its
    acceptance figures are the card's (`scripts/eval_model.py` on 18 scenes), not these."""
    scene = tmp_path / "scatter"
    r = runner.invoke(app, ["synth", str(scene), "--seed", "9302", "--size", "10x8", "--gsd", "0.005", "--terrain",
                            "sand", "--targets", "scatterable", "--density", "1500"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "both.gpkg"
    r = runner.invoke(app, ["detect", str(scene / "ortho.tif"), "--out", str(out), "--model", "default", "--model",
                            "scatterable-05cm"])
    assert r.exit_code == 0, r.output
    p = pyogrio.read_dataframe(out, layer="detections")
    t = pyogrio.read_dataframe(scene / "truth.gpkg", layer="truth")
    rep = evaluate(p, t, area_m2=pyogrio.read_dataframe(out, layer="coverage").geometry.iloc[0].area)
    assert len(t) == 12
    assert rep.any_ordnance.tp >= 6, rep.any_ordnance
    assert rep.any_ordnance.fp_per_ha is not None and rep.any_ordnance.fp_per_ha <= 60
    assert rep.per_class["pfm1"].tp >= 2
    assert p["model"].str.contains("scatterable-05cm").any()
    assert "hint" not in r.output  # every shipped RGB model that serves 0.5 cm ran
    # at the thresholds set for the two together (the specialist's card: companions.default), and it says so
    assert "thresholds  high_recall, set for default and scatterable-05cm run together (<= 30 false" in r.output
    assert json.loads(read_metadata(out)["joint_thresholds"])["holder"] == "scatterable-05cm"
    # the default alone on this flight says which shipped model it leaves out, and how to add it
    r = runner.invoke(app, ["detect", str(scene / "ortho.tif"), "--out", str(tmp_path / "alone.gpkg")])
    assert r.exit_code == 0, r.output
    hint = [ln for ln in r.output.splitlines() if ln.startswith("hint")]
    assert len(hint) == 1 and "scatterable-05cm (pfm1, pom2, submunition, pmn, ozm72, mon)" in hint[0]
    assert "--model default --model scatterable-05cm" in hint[0]
    # ... and not on flights it does not serve: too coarse for it, or other bands
    rgb = ["red", "green", "blue"]
    assert other_models_hint(0.01, rgb, ["default"]) is None
    assert other_models_hint(0.005, ["gray"], ["thermal-example"]) is None
    assert "default (" in str(other_models_hint(0.005, rgb, ["scatterable-05cm"]))


def test_specialist_finds_the_ap_discs_the_default_misses_at_half_a_centimetre(tmp_path: Path) -> None:
    """Since v0.2.0 the specialist also learns PMN and OZM-72 (11-12 cm discs: 11 px at the default's 1 cm, 22 px at
    0.5 cm). A 0.5 cm flight of laid AP mines (ploughed, seed 9401: 6 PMN, 4 OZM-72 among 29 items). Measured
    (2026-11-28, default v1.2.0): the default alone found PMN 2, OZM-72 0; both together at the pair's thresholds
    PMN 4, OZM-72 3, no false alarm with specialist v0.2.0, and PMN 3, OZM-72 3, one false alarm with v0.3.0.
    Floors: OZM-72 >= 2 and PMN + OZM-72 >= the default's + 3 together, <= 2 false alarms; they fail if the
    specialist's new classes are not run, lost in the combination, or their thresholds are missing from the pair
    record. The acceptance figures are the cards' (36 scenes)."""
    scene = tmp_path / "ap"
    r = runner.invoke(app, ["synth", str(scene), "--seed", "9401", "--size", "16x12", "--gsd", "0.005", "--terrain",
                            "ploughed", "--targets", "ap", "--density", "1500"])
    assert r.exit_code == 0, r.output
    t = pyogrio.read_dataframe(scene / "truth.gpkg", layer="truth")
    assert (t["class"] == "pmn").sum() == 6 and (t["class"] == "ozm72").sum() == 4
    found = {}
    for key, models in (("alone", ["--model", "default"]), ("both", ["--model", "default", "--model",
                                                                      "scatterable-05cm"])):
        out = tmp_path / f"{key}.gpkg"
        r = runner.invoke(app, ["detect", str(scene / "ortho.tif"), "--out", str(out), *models])
        assert r.exit_code == 0, r.output
        p = pyogrio.read_dataframe(out, layer="detections")
        rep = evaluate(p, t, area_m2=pyogrio.read_dataframe(out, layer="coverage").geometry.iloc[0].area)
        found[key] = (rep.per_class["pmn"].tp, rep.per_class["ozm72"].tp, rep.class_aware.fp)
    pmn, ozm, fp = found["both"]
    assert ozm >= 2, found
    assert pmn + ozm >= sum(found["alone"][:2]) + 3, found
    assert fp <= 2, found


def test_batch_of_a_half_centimetre_flight_names_the_specialist(tmp_path: Path) -> None:
    """`rams batch` with the default alone on a 0.5 cm flight ends with the same hint `rams detect` gives."""
    r = runner.invoke(app, ["synth", str(tmp_path / "flights" / "f1"), "--seed", "9303", "--size", "6x5", "--gsd",
                            "0.005", "--terrain", "sand", "--targets", "scatterable", "--density", "1500"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["batch", str(tmp_path / "flights"), "--out", str(tmp_path / "b"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    note = [ln for ln in r.output.splitlines() if "shipped models not in this run" in ln]
    assert len(note) == 1 and note[0].startswith("note")  # one line, unwrapped: the command can be copied
    assert "scatterable-05cm (pfm1, pom2, submunition, pmn, ozm72, mon)" in note[0]
    assert "rams batch ... --model default --model scatterable-05cm" in note[0]
    assert "flights processed now: f1_ortho" in note[0]  # the flight ID (folder and file stem)
