"""``scripts/eval_detect.py``: pooled recall and false alarms of a `rams detect` configuration over scenes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyogrio
import pytest

from tests.script_helpers import load_script


@pytest.fixture(scope="module")
def script() -> Any:
    return load_script("eval_detect")


def _report(area: float, per_class: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    pc = {c: {"tp": tp, "n_truth": n, "fp": fp} for c, (tp, n, fp) in per_class.items()}
    ca = {k: sum(v[k] for v in pc.values()) for k in ("tp", "n_truth", "fp")}
    return {"area_ha": area, "per_class": pc, "class_aware": ca}


def test_pool_sums_counts_not_rates(script: Any) -> None:
    got = script.pool([
        _report(0.1, {"pfm1": (1, 10, 0), "pmn": (0, 0, 2)}),
        _report(0.3, {"pfm1": (9, 10, 4), "tm62": (3, 4, 0)}),
    ])
    assert got["scenes"] == 2 and got["area_ha"] == pytest.approx(0.4)
    assert got["per_class"]["pfm1"]["recall"] == pytest.approx(0.5)  # 10/20, not the mean of 0.1 and 0.9
    assert got["per_class"]["pfm1"]["fp_per_ha"] == pytest.approx(10.0)
    assert got["per_class"]["pmn"]["recall"] is None and got["per_class"]["pmn"]["false_alarms"] == 2
    assert got["class_aware"]["found"] == 13 and got["class_aware"]["items"] == 24
    lo, hi = got["class_aware"]["recall_ci95"]
    assert lo < 13 / 24 < hi


def test_runs_detect_and_evaluate_on_rendered_scenes(script: Any, tmp_path: Path) -> None:
    from rams.detector.bundle import make_test_bundle

    model = tmp_path / "tiny"
    make_test_bundle(model, tile_size_px=256, threshold=0.3)
    rams = str(Path(sys.executable).with_name("rams"))
    scenes = tmp_path / "scenes"
    for seed, terrain in ((9991, "ploughed"), (9992, "sand")):
        subprocess.run([rams, "-q", "synth", str(scenes / f"s{seed}-{terrain}-0.01"), "--seed", str(seed), "--size",
                        "4x4", "--gsd", "0.01", "--terrain", terrain, "--density", "2000"], check=True)
    out = tmp_path / "pooled.json"
    args = ["--scenes-dir", str(scenes), "--seeds", "9991-9992", "--gsds", "0.01", "--name", "t", "--json", str(out),
            "--", "--model", str(model), "--tile-size", "256"]
    assert script.main(args) == 0
    res = json.loads(out.read_text())
    assert res["scenes"] == 2 and res["detect_args"] == ["--model", str(model), "--tile-size", "256"]
    runs = sorted(scenes.glob("*/run-t.gpkg"))
    assert len(runs) == 2
    area = sum(pyogrio.read_dataframe(r, layer="coverage").geometry.area.sum() for r in runs) / 1e4
    assert res["area_ha"] == pytest.approx(area, rel=1e-6)
    truth = sum(len(pyogrio.read_dataframe(s / "truth.gpkg", layer="truth")) for s in sorted(scenes.iterdir()))
    assert res["class_aware"]["items"] == truth > 0
    dets = sum(len(pyogrio.read_dataframe(r, layer="detections")) for r in runs)
    assert res["class_aware"]["found"] + res["class_aware"]["false_alarms"] <= dets
    # kept results are reused
    stamp = runs[0].stat().st_mtime_ns
    assert script.main(args) == 0
    assert runs[0].stat().st_mtime_ns == stamp
    # a seed without a scene: a one-line error naming what to run
    assert script.main(["--scenes-dir", str(scenes), "--seeds", "9993", "--", "--model", str(model)]) == 2
