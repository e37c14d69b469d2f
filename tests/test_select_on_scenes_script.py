"""``scripts/select_on_scenes.py``: bundles ranked on whole scenes with the training run's own validate()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rams.detector.bundle import load_bundle
from rams.detector.datasets import SourceContext
from rams.detector.train import TrainConfig, build_val_set, validate
from tests.script_helpers import load_script


@pytest.fixture(scope="module")
def script() -> Any:
    return load_script("select_on_scenes")


def test_scene_specs_cycle_terrains(script: Any) -> None:
    specs = script.scene_specs([1, 2, 3], ["crop", "sand"], (10.0, 12.0), "ap", 300.0)
    assert [s["terrain"] for s in specs] == ["crop", "sand", "crop"]
    assert specs[2] == {"seed": 3, "terrain": "crop", "size_m": (10.0, 12.0), "targets": "ap", "density_per_ha": 300.0}


def test_ranks_bundles_with_the_numbers_a_training_run_would_record(
    script: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    rc = script.main(["--model", "default", "--model", "default", "--seeds", "8301,8302", "--size", "12x12",
                      "--threads", "2", "--json", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    steps = load_bundle("default").card.training.steps  # the table names each bundle's training steps
    assert "2 scenes (seeds 8301,8302" in text and text.count(f"| default | {steps} |") == 2
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["class_aware"] == rows[1]["class_aware"]  # same bundle, same scenes: same numbers
    assert rows[0]["n_items"] > 0 and 0.005 < rows[0]["area_ha"] < 0.0288
    # the same numbers as validate() on a training config that lists these scenes
    card = load_bundle("default").card
    cfg = TrainConfig.model_validate(card.training.config)
    vd = {**cfg.validation.model_dump(mode="json"), "sources": [], "chip_size_px": 512,
          "scenes": script.scene_specs([8301, 8302], list(script.TERRAINS), (12.0, 12.0), "mixed", 600.0)}  # fmt: skip
    cfg = TrainConfig.model_validate({**cfg.model_dump(mode="json"), "validation": vd})
    val = build_val_set(cfg, SourceContext(cfg.class_names, tuple(cfg.bands), cfg.gsd_m, 512), 0)
    m = validate(load_bundle("default").build_model().eval(), val, cfg, torch.device("cpu"))
    assert rows[0]["class_aware"]["recall"] == pytest.approx(m["class_aware"]["recall"])
    assert rows[0]["n_items"] == m["n_items"]
