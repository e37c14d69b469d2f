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
