"""scripts/score_separation.py: object-centre scores against the background score tail, per class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from rams.detector.bundle import make_test_bundle
from rams.detector.datasets import SourceContext, SyntheticSource, SyntheticSourceConfig
from rams.detector.loss import encode_targets
from tests.detector_helpers import write_toy_yolo
from tests.script_helpers import load_script

CLASSES = ["pmn", "tm62"]
SAMPLER = {"positive_fraction": 1.0, "hard_negative_fraction": 0.0, "max_targets": 4}


def test_separation_counts_every_centre_and_background_cell(tmp_path: Path) -> None:
    mod = load_script("score_separation")
    make_test_bundle(tmp_path / "m", classes=tuple(CLASSES))
    src = {"kind": "synthetic", "seed": 4, "pool_size": 6, "cache_dir": None, "sampler": SAMPLER}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "s", "classes": CLASSES, "chip_size_px": 64, "sources": [src]}))
    out = tmp_path / "s.json"
    assert mod.main(["--config", str(cfg), "--model", str(tmp_path / "m"), "--chips", "6",
                     "--cells-per-ha", "1e5,1e6", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["classes"]
    # the same chips, counted independently
    source = SyntheticSource(SyntheticSourceConfig(**src), SourceContext(tuple(CLASSES), ("red", "green", "blue"),
                                                                          0.01, 64))  # fmt: skip
    targets = [encode_targets(source.sample_chip(j), 2, 4) for j in range(6)]
    for c, name in enumerate(CLASSES):
        assert res[name]["centres"] == sum(int((t["heatmap"][c] == 1.0).sum()) for t in targets)
    far = sum(int(((t["heatmap"].max(0) < 0.01) & (t["ignore"] > 0)).sum()) for t in targets)
    assert res["pmn"]["background_cells"] == far > 0
    r = res["pmn"]
    assert 0 <= r["background_q99.9"] <= r["background_q99.99"] <= 1
    if r["centres"]:
        assert 0 <= r["centre_median"] <= 1 and 0 <= r["share_above_q99.99"] <= 1
    assert np.isfinite(res["tm62"]["background_q99.99"])
    # area-normalised thresholds: R cells per hectare of background ground lie above the threshold at R
    assert r["background_ha"] == far * 0.04**2 / 1e4
    lo, hi = r["background_at_100000_per_ha"], r["background_at_1e+06_per_ha"]
    assert lo is not None and hi is not None and lo >= hi
    if r["centres"]:
        assert 0 <= r["share_above_100000_per_ha"] <= r["share_above_1e+06_per_ha"] <= 1
    # a chip dataset is not a synthetic source
    yolo = write_toy_yolo(tmp_path / "yolo", n_per_zone=2)
    ycfg = tmp_path / "y.yaml"
    ycfg.write_text(yaml.safe_dump({"name": "y", "classes": CLASSES, "chip_size_px": 64, "sources": [
        {"kind": "yolo", "path": str(yolo), "class_map": {0: "pmn", 1: "tm62"}}]}))  # fmt: skip
    assert mod.main(["--config", str(ycfg), "--model", str(tmp_path / "m")]) == 10
