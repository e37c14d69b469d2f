"""The thresholds ``scripts/calibrate_pair.py`` sets for two models run together: the union of their detections
counted as ``rams.combine`` joins them (the same object found by both is one object), and one threshold per class
and model chosen so that the union's false alarms stay within the budget, on a hand-made layout with a known best
answer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.script_helpers import load_script


@pytest.fixture(scope="module")
def pair() -> Any:
    return load_script("calibrate_pair")


def _pool(pair: Any) -> Any:
    # items: ten PFM-1 along y = 0 (x = 0..9 m), five PMN along y = 50
    txy = np.array([[x, 0.0] for x in range(10)] + [[x, 50.0] for x in range(5)])
    tcls = np.array(["pfm1"] * 10 + ["pmn"] * 5)
    # model A (the general one): every PMN at 0.9, PFM-1 items 0-1 at 0.6, three PFM-1 false alarms at 0.55
    a_xy = [[x, 50.0] for x in range(5)] + [[0.0, 0.0], [1.0, 0.0]] + [[x, 20.0] for x in range(3)]
    a_s = [0.9] * 5 + [0.6, 0.6] + [0.55] * 3
    a_l = ["pmn"] * 5 + ["pfm1"] * 5
    # model B (the specialist): PFM-1 items 0-7 at 0.7 (0 and 1 a centimetre from A's), items 8-9 at 0.45,
    # two false alarms at 0.5
    b_xy = [[x + 0.01, 0.0] for x in range(8)] + [[8.0, 0.0], [9.0, 0.0]] + [[x, 30.0] for x in range(2)]
    b_s = [0.7] * 8 + [0.45, 0.45] + [0.5, 0.5]
    b_l = ["pfm1"] * 12
    half = [np.full((len(a_s), 2), 0.05), np.full((len(b_s), 2), 0.05)]
    return pair.Pooled(["a", "b"], [np.array(a_xy), np.array(b_xy)], [np.array(a_s), np.array(b_s)],
                       [np.array(a_l), np.array(b_l)], half, txy, tcls, np.ones(15, bool), np.full(15, 0.1), 1.0)


def test_the_union_counts_an_object_found_by_both_models_once(pair: Any) -> None:
    pool = _pool(pair)
    assert list(pool.partner) == [0.6, 0.6] + [-1.0] * 10  # B's detections of items 0 and 1 are A's objects
    assert pool.counts("pfm1", (0.05, 0.05)) == (10, 10, 5)  # 10 found, A's 3 + B's 2 false alarms, no double
    assert pool.counts("pfm1", (0.65, 0.05)) == (10, 10, 2)  # A's PFM-1 dropped: B's own detections stand in
    assert pool.counts("pfm1", (0.05, 0.8)) == (10, 2, 3)
    assert pool.counts("pmn", (0.5, 2.0)) == (5, 5, 0)  # a class only A detects (B's threshold 2.0: none)


def test_an_item_found_under_another_label_is_counted_apart(pair: Any) -> None:
    """Class-aware recall misses a PMN that a model reports as PFM-1; the clearance team still walks to it, and the
    table says so in its own column (class-agnostic, one-to-one, as rams.evaluate's any_ordnance)."""
    pool = _pool(pair)
    # A also reports PMN item 4 (at x = 4, y = 50) as PFM-1, at 0.95: one more PFM-1 detection there
    pool = pair.Pooled(pool.names, [np.vstack([pool.xy[0], [[4.0, 50.0]]]), pool.xy[1]],
                       [np.append(pool.score[0], 0.95), pool.score[1]], [np.append(pool.label[0], "pfm1"),
                       pool.label[1]], [np.vstack([pool.half[0], [[0.05, 0.05]]]), pool.half[1]], pool.txy,
                       pool.tcls, pool.counted, pool.radius, pool.area_ha)  # fmt: skip
    t = {"pfm1": (0.9, 0.6), "pmn": (0.95, 2.0)}  # PMN at 0.9 not kept; the PFM-1 label at 0.95 is
    got = pair.union_counts(pool, ["pfm1", "pmn"], t)
    assert got["per_class"]["pmn"]["found"] == 0 and got["per_class"]["pmn"]["fp"] == 0
    assert got["per_class"]["pmn"]["found_any_label"] == 1  # item 4, under the PFM-1 label
    assert got["per_class"]["pfm1"]["found"] == 8 and got["per_class"]["pfm1"]["found_any_label"] == 8
    assert got["per_class"]["pfm1"]["fp"] == 1  # the PFM-1 label on the PMN (B's false alarms at 0.5 < 0.6)
    assert got["class_aware"]["found_any_label"] == 9 and got["class_aware"]["recall_any_label"] == 9 / 15


def test_pair_thresholds_fit_the_budget_and_find_the_most(pair: Any) -> None:
    pool = _pool(pair)
    has = {"pfm1": (True, True), "pmn": (True, False)}
    fixed = {"pfm1": (0.5, 0.5), "pmn": (0.5, 2.0)}
    got = pair.joint_thresholds(pool, ["pfm1", "pmn"], has, 0.0, fixed, None)
    # no false alarm allowed: A's PFM-1 threshold above its false alarms (0.55; its two hits are B's anyway), B's
    # above its own (0.5), PMN as low as the grid goes
    assert got["pmn"] == (0.05, 2.0)
    ta, tb = got["pfm1"]
    assert ta > 0.55 and 0.5 < tb <= 0.7
    assert pool.counts("pfm1", got["pfm1"]) == (10, 8, 0)
    # two false alarms: B down to 0.45 finds items 8 and 9 (its two false alarms come with them); A stays out
    got = pair.joint_thresholds(pool, ["pfm1", "pmn"], has, 2.0, fixed, None)
    assert pool.counts("pfm1", got["pfm1"]) == (10, 10, 2)
    assert got["pfm1"][1] <= 0.45 and got["pfm1"][0] > 0.55
    # a looser point never has a stricter threshold than the cap, for either model
    capped = pair.joint_thresholds(pool, ["pfm1", "pmn"], has, 5.0, fixed, {"pfm1": (0.3, 0.3), "pmn": (0.3, 2.0)})
    assert capped["pfm1"][0] <= 0.3 and capped["pfm1"][1] <= 0.3 and capped["pmn"][0] <= 0.3
    # the union's record at those thresholds
    rows = pair.union_counts(pool, ["pfm1", "pmn"], got)
    assert rows["per_class"]["pfm1"]["found"] == 10 and rows["class_aware"]["fp"] == 2
    assert rows["class_aware"]["items"] == 15 and rows["class_aware"]["fp_per_ha"] == 2.0


def test_recall_floors_keep_every_class_or_say_they_cannot(pair: Any) -> None:
    pool = _pool(pair)
    has = {"pfm1": (True, True), "pmn": (True, False)}
    fixed = {"pfm1": (0.5, 0.5), "pmn": (0.5, 2.0)}
    got = pair.joint_thresholds(pool, ["pfm1", "pmn"], has, 2.0, fixed, None, {"pfm1": 10, "pmn": 5})
    assert pool.counts("pfm1", got["pfm1"])[1] == 10 and pool.counts("pmn", got["pmn"])[1] == 5
    with pytest.raises(SystemExit, match="with every class at its floor"):
        pair.joint_thresholds(pool, ["pfm1", "pmn"], has, 0.0, fixed, None, {"pfm1": 10})
    with pytest.raises(SystemExit, match="cannot find its floor of 11 items"):
        pair.joint_thresholds(pool, ["pfm1", "pmn"], has, 5.0, fixed, None, {"pfm1": 11})


def measured_items(root) -> int:
    """Truth items of the rendered scenes that count: >= 8 px at the finer model's 0.5 cm, of a class either detects."""
    import geopandas as gpd

    n = 0
    for scene in sorted(root.iterdir()):
        t = gpd.read_file(scene / "truth.gpkg", layer="truth")
        n += int((t["length_m"] / 0.005 >= 8).sum())
    return n


def test_calibrate_then_measure_a_pair_on_rendered_scenes(pair: Any, tmp_path) -> None:
    """The script end to end on real files: two rendered scenes, each model's cached detections (as
    scripts/eval_model.py leaves them), thresholds into the card, the pair's recall measured at them, and
    rams.combine finding both."""
    import json

    from typer.testing import CliRunner

    from rams.cli.main import app
    from rams.combine import find_joint
    from rams.detect import DetectConfig, run_detect
    from rams.detector.bundle import make_test_bundle, read_card
    from tests.script_helpers import SCRIPTS

    runner = CliRunner()
    a, b = tmp_path / "tiny-a", tmp_path / "tiny-b"
    make_test_bundle(a, tile_size_px=256, threshold=0.3)
    make_test_bundle(b, classes=("pfm1", "pom2", "submunition"), seed=1, gsd_m=0.005, tile_size_px=256,
                     threshold=0.3)
    sys_path = str(SCRIPTS)
    import sys

    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    from scene_cache import detections_name

    root = tmp_path / "scenes"
    for seed, terrain in ((8901, "sand"), (8902, "gravel")):
        scene = root / f"s{seed}-{terrain}-0.005"
        r = runner.invoke(app, ["synth", str(scene), "--seed", str(seed), "--size", "5x4", "--gsd", "0.005",
                                "--terrain", terrain, "--density", "3000"])
        assert r.exit_code == 0, r.output
        for m in (a, b):
            run_detect(scene / "ortho.tif", scene / detections_name(read_card(m)),
                       DetectConfig(model=str(m), threshold=0.05, force=True, threads=1))
    base = ["--model", str(b), "--beside", str(a), "--scenes-dir", str(root), "--seeds", "8901-8902"]
    assert pair.main([*base, "--calibrate", "balanced=1000000", "--pair-default", "balanced", "--update-card",
                      "--json", str(tmp_path / "cal.json")]) == 0
    card = read_card(b)
    comp = card.companions["tiny-a"]
    assert comp.weights_sha256 == read_card(a).weights_sha256 and comp.default_operating_point == "balanced"
    assert set(comp.thresholds["balanced"]) == {"tiny-a", "tiny-b"}
    assert set(comp.thresholds["balanced"]["tiny-b"]) == {"pfm1", "pom2", "submunition"}
    cal = json.loads((tmp_path / "cal.json").read_text())
    assert "rams synth scenes (5 x 4 m at 0.5 cm, mixed targets" in cal["what"]
    assert cal["points"]["balanced"]["class_aware"]["items"] == measured_items(root)
    assert pair.main([*base, "--update-card"]) == 0
    measured = read_card(b).companions["tiny-a"].metrics["synthetic_scenes"]
    assert measured["model_thresholds"] == comp.thresholds["balanced"]
    assert measured["class_aware"]["items"] > 0
    joint, note = find_joint([read_card(a), read_card(b)], None)
    assert note is None and joint is not None and joint["point"] == "balanced"
    assert joint["record"]["model_thresholds"] == comp.thresholds["balanced"]
    # without thresholds beside these weights, measuring is refused with what to run first
    c = tmp_path / "tiny-c"
    make_test_bundle(c, classes=("pfm1",), seed=2, gsd_m=0.005, tile_size_px=256, threshold=0.3)
    with pytest.raises(SystemExit, match="run with --calibrate on calibration scenes first"):
        pair.main(["--model", str(c), "--beside", str(a), "--scenes-dir", str(root), "--seeds", "8901"])
