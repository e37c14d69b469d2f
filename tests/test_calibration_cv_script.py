"""``scripts/calibration_cv.py``: the split-half design (every block calibrates and evaluates equally often, never
both at once) and the scratch bundle it evaluates (a card the bundle loader still accepts, with the point's
thresholds set as asked)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rams.detector.bundle import load_bundle, resolve_bundle_path
from tests.script_helpers import load_script


@pytest.fixture(scope="module")
def cv() -> Any:
    return load_script("calibration_cv")


def test_seed_blocks_are_six_consecutive_seeds(cv: Any) -> None:
    assert cv.seed_blocks(8001, 4) == ["8001-8006", "8007-8012", "8013-8018", "8019-8024"]
    with pytest.raises(SystemExit, match="even number"):
        cv.seed_blocks(8001, 3)


@pytest.mark.parametrize("n_blocks", [2, 4, 6])
def test_every_split_once_each_way_round(cv: Any, n_blocks: int) -> None:
    blocks = cv.seed_blocks(100, n_blocks)
    pairs = cv.split_pairs(blocks)
    half = n_blocks // 2
    n_splits = {2: 1, 4: 3, 6: 10}[n_blocks]  # C(n, n/2) / 2
    assert len(pairs) == 2 * n_splits
    assert len(set(pairs)) == len(pairs)
    cal_count: Counter[str] = Counter()
    for cal, ev in pairs:
        c, e = cal.split(","), ev.split(",")
        assert len(c) == len(e) == half
        assert not set(c) & set(e)  # never calibrated and evaluated on the same scenes
        assert sorted(c + e) == sorted(blocks)
        assert (ev, cal) in pairs  # the same split the other way round
        cal_count.update(c)
    assert set(cal_count.values()) == {n_splits}  # each block calibrates in half of the runs


def test_scratch_bundle_gets_the_thresholds_and_still_loads(cv: Any, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(resolve_bundle_path("default"), bundle)
    cv._set_default(bundle, "precise", 0.77)
    card = json.loads((bundle / "model.json").read_text())
    assert card["default_operating_point"] == "precise"
    assert card["operating_points"]["precise"] == 0.77
    assert set(card["class_thresholds"]["precise"].values()) == {0.77}
    per = {c: round(0.5 + 0.01 * i, 2) for i, c in enumerate(card["classes"])}
    cv._set_default(bundle, "precise", per)
    card = json.loads((bundle / "model.json").read_text())
    assert card["class_thresholds"]["precise"] == per
    assert load_bundle(bundle).card.default_operating_point == "precise"
