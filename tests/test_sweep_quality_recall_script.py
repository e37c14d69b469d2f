"""``scripts/sweep_quality_recall.py --scenes-dir``: the per-class limits that ``rams.quality`` ships are read from
its tables, so the table logic is checked on a hand-made record set with a known answer, and one real scene is
swept (rendered, degraded, detected, measured) to check what each record holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.script_helpers import load_script


@pytest.fixture(scope="module")
def sweep() -> Any:
    return load_script("sweep_quality_recall")


def _records(n: int, sharp_found: int, found: dict[float, int], blur: dict[float, float]) -> list[dict[str, Any]]:
    """``n`` PMN items in one scene; at each blur sigma the first ``found[sigma]`` of them are found, and every
    item's cell reads ``blur[sigma]``; the sharp image (sigma 0) reads 0.22 and finds ``sharp_found``."""
    recs: list[dict[str, Any]] = []
    for sigma, idx in [(0.0, 0.22), *blur.items()]:
        k = sharp_found if sigma == 0.0 else found[sigma]
        for i in range(n):
            recs.append({"scene": "s1", "item": i, "class": "pmn", "kind": "blur", "step": sigma, "blur": idx,
                         "dark": 0.0, "grey": 0.4, "found": i < k})  # fmt: skip
        recs.append({"scene": "s1", "kind": "blur", "step": sigma, "false_alarms": 1, "area_ha": 0.1,
                     "median_blur": idx, "median_dark": 0.0})  # fmt: skip
    return recs


def test_limit_is_the_last_bin_within_the_drop(sweep: Any) -> None:
    # 100 PMN, 60 found sharp (cells 0.22); each blur step moves every cell one 0.05 bin up
    blur = {1.0: 0.27, 2.0: 0.32, 3.0: 0.37, 4.0: 0.42, 5.0: 0.47}
    recs = _records(100, 60, {1.0: 60, 2.0: 59, 3.0: 58, 4.0: 57, 5.0: 40}, blur)
    res = sweep.class_tables(recs, min_n=40, max_drop=0.05)
    lim = res["limits"]["pmn"]
    assert lim["blur_max"] == pytest.approx(0.45) and "0.45-0.50 loses 0.20" in lim["blur_why"]
    bins = {tuple(r["bin"]): r for r in res["per_blur"]["pmn"]}
    assert bins[(0.4, 0.45)]["drop"] == pytest.approx(0.03) and bins[(0.4, 0.45)]["item_steps"] == 100
    assert res["per_step"][0]["pmn"] == {"items": 100, "found": 60} and res["per_step"][0]["fp_per_ha"] == 10.0
    assert sweep.class_tables(recs, min_n=40, max_drop=0.025)["limits"]["pmn"]["blur_max"] == pytest.approx(0.40)
    # a thin bin past the last counted one ends the search: no claim beyond the data
    thin = _records(100, 60, {1.0: 60, 2.0: 59, 3.0: 58, 4.0: 57}, {k: v for k, v in blur.items() if k < 5})
    thin += [{**r, "item": r["item"] + 1000} for r in _records(10, 6, {5.0: 0}, {5.0: 0.47})
             if "item" in r and r["step"] == 5.0]  # fmt: skip
    lim = sweep.class_tables(thin, min_n=40, max_drop=0.05)["limits"]["pmn"]
    assert lim["blur_max"] == pytest.approx(0.45) and "has 10 item-steps" in lim["blur_why"]
    # a class found too rarely on sharp imagery shows no limit
    rare = sweep.class_tables(_records(100, 10, {1.0: 0}, {1.0: 0.27}), 40, 0.05)["limits"]["pmn"]
    assert rare["blur_max"] is None and "not measurable" in rare["blur_why"]


def test_one_real_scene_is_swept_at_the_model_gsd(sweep: Any, tmp_path: Path) -> None:
    from rams.synth.scene import SynthConfig
    from rams.synth.writer import write_scene

    scene = tmp_path / "scenes" / "s7801-ploughed-0.01"
    write_scene(SynthConfig(seed=7801, width_m=8.0, height_m=8.0, gsd_m=0.01, terrain="ploughed",
                            target_density_per_ha=2000.0), scene)  # fmt: skip
    recs = sweep.sweep_scene(scene, "default", None, [("blur", 0.0), ("blur", 2.0), ("gain", 0.3)], tmp_path,
                             8.0, 2.5)  # fmt: skip
    items = [r for r in recs if "item" in r]
    steps = {(r["kind"], r["step"]): r for r in recs if "item" not in r}
    assert set(steps) == {("blur", 0.0), ("blur", 2.0), ("gain", 0.3)}
    n = len(items) // 3
    assert n > 0 and len(items) == 3 * n
    assert steps[("blur", 2.0)]["median_blur"] > steps[("blur", 0.0)]["median_blur"] + 0.1
    sharp = np.array([r["grey"] for r in items if r["step"] == 0.0])
    dark = np.array([r["grey"] for r in items if r["kind"] == "gain"])
    assert np.allclose(dark, 0.3 * sharp, atol=0.01)  # the gain on the image the model reads
    assert all(np.isfinite(r["blur"]) and r["class"] != "pom2" for r in items)  # 6 px POM-2: left out at 1 cm
