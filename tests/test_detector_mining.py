"""Hard-example mining (`python -m rams.detector.mining`), mined synthetic sources, and `validation.keep: last`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from rams.cli.main import app
from rams.detector.bundle import load_bundle, make_test_bundle
from rams.detector.datasets import SourceContext, SyntheticSource, SyntheticSourceConfig
from rams.detector.loss import encode_targets, focal_loss
from rams.detector.mining import ChipLosses, chip_losses, main, mine, select_hard
from rams.detector.predict import normalise
from rams.detector.train import read_checkpoint, train
from rams.errors import ConfigError, InputNotFoundError, OutputError
from tests.detector_helpers import tiny_config, write_toy_yolo

CLASSES = ["pmn", "tm62", "pfm1"]
SAMPLER = {"positive_fraction": 0.6, "hard_negative_fraction": 0.3, "max_targets": 3}


def _config(tmp_path: Path, **source: object) -> Path:
    src = {"kind": "synthetic", "seed": 5, "pool_size": 10, "cache_dir": str(tmp_path / "cache"), "sampler": SAMPLER}
    src.update(source)
    cfg = {"name": "mine-test", "classes": CLASSES, "chip_size_px": 64, "sources": [src]}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("models") / "miner"
    make_test_bundle(dest, classes=tuple(CLASSES), seed=3)
    return dest


def test_select_hard_keeps_the_worst_of_each_list() -> None:
    losses = ChipLosses(
        indices=np.arange(8),
        pos_loss=np.array([0.0, 5.0, 1.0, 0.0, 3.0, 0.0, 4.0, 2.0]),
        neg_loss=np.array([0.9, 0.1, 0.2, 0.8, 0.1, 0.3, 0.1, 0.1]),
        n_objects=np.array([0, 2, 1, 0, 1, 0, 3, 1]),
    )
    got = select_hard(losses, 0.4)
    # 5 chips with objects -> 2 by centre loss (1, 6); 8 chips -> 3 by background loss (0, 3, 5)
    assert got["indices"] == [0, 1, 3, 5, 6]
    assert got["missed_positives"]["chips"] == 2 and got["missed_positives"]["of_chips_with_objects"] == 5
    assert got["false_alarms"]["chips"] == 3 and got["false_alarms"]["min_loss"] == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="share"):
        select_hard(losses, 0.0)


def test_chip_losses_add_up_to_the_training_focal_loss(tmp_path: Path, bundle_dir: Path) -> None:
    ctx = SourceContext(tuple(CLASSES), ("red", "green", "blue"), 0.01, 64)
    src = SyntheticSource(SyntheticSourceConfig(seed=5, pool_size=10, cache_dir=None, sampler=SAMPLER), ctx)
    model = load_bundle(bundle_dir).build_model()
    got = chip_losses(model, src, [0, 3, 7], len(CLASSES), [0.5] * 3, [0.25] * 3, batch_size=2)
    assert got.indices.tolist() == [0, 3, 7]
    for k, j in enumerate([0, 3, 7]):
        s = src.sample_chip(j)
        t = encode_targets(s, len(CLASSES), 4)
        x = normalise(torch.from_numpy(s.image[None]), torch.from_numpy(s.valid[None]), torch.full((3,), 0.5),
                      torch.full((3,), 0.25))  # fmt: skip
        with torch.inference_mode():
            logits = model(x)["heatmap"]
        want = focal_loss(logits, torch.from_numpy(t["heatmap"][None]), torch.from_numpy(t["ignore"][None, None]))
        assert got.pos_loss[k] + got.neg_loss[k] == pytest.approx(float(want), rel=1e-4)
        assert got.n_objects[k] == int(t["reg_mask"].sum())


def test_mined_file_drives_the_source_and_is_checked(tmp_path: Path, bundle_dir: Path) -> None:
    cfg = _config(tmp_path)
    out = tmp_path / "mined" / "hard.json"
    rc = main(["--config", str(cfg), "--model", str(bundle_dir), "--out", str(out), "--keep", "0.3"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["candidates"] == 10 and doc["model"]["name"] == "miner"
    assert doc["indices"] == sorted(set(doc["indices"])) and all(0 <= i < 10 for i in doc["indices"])
    assert 3 <= len(doc["indices"]) <= 6  # 3 by background loss, up to 3 more by centre loss
    assert not list(out.parent.glob(".*tmp"))
    # the source draws only the mined chips, the same chips as the plain pool
    ctx = SourceContext(tuple(CLASSES), ("red", "green", "blue"), 0.01, 64)
    base = {"seed": 5, "pool_size": 10, "cache_dir": str(tmp_path / "cache"), "sampler": SAMPLER}
    plain = SyntheticSource(SyntheticSourceConfig(**base), ctx)
    hard = SyntheticSource(SyntheticSourceConfig(**base, hard_examples=str(out)), ctx)
    assert {hard.chip_index(i) for i in range(40)} == set(doc["indices"])
    s = hard.sample(np.random.default_rng(0), 1)
    assert np.array_equal(s.image, plain.sample_chip(doc["indices"][1]).image)
    assert "mined hard chips" in hard.describe()
    # another sampler, a missing file, chips outside the pool, an existing output
    with pytest.raises(ConfigError, match="mined from other chips"):
        SyntheticSource(SyntheticSourceConfig(**{**base, "seed": 6}, hard_examples=str(out)), ctx)
    with pytest.raises(InputNotFoundError, match="mine it first"):
        SyntheticSource(SyntheticSourceConfig(**base, hard_examples=str(tmp_path / "none.json")), ctx)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**doc, "indices": [3, 12]}))
    with pytest.raises(ConfigError, match="outside this source's pool of 10"):
        SyntheticSource(SyntheticSourceConfig(**base, hard_examples=str(bad)), ctx)
    with pytest.raises(OutputError, match="exists"):
        mine(cfg, str(bundle_dir), out)
    # the same through `rams mine`: an existing file is a one-line error (exit 12) unless --overwrite
    args = ["mine", "--config", str(cfg), "--model", str(bundle_dir), "--out", str(out), "--keep", "0.3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 12 and "pass --overwrite" in res.output
    res = CliRunner().invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert f"hard chips of 10 written to {out}" in res.output.replace("\n", "")
    assert json.loads(out.read_text())["indices"] == doc["indices"]  # deterministic


def test_mining_refuses_what_it_cannot_mine(tmp_path: Path, bundle_dir: Path) -> None:
    out = tmp_path / "x.json"
    with pytest.raises(ConfigError, match="no pool_size"):
        mine(_config(tmp_path, pool_size=None), str(bundle_dir), out)
    with pytest.raises(ConfigError, match="--keep 1.5 must be a share"):
        mine(_config(tmp_path), str(bundle_dir), out, keep=1.5)
    with pytest.raises(ConfigError, match="more than the source's pool"):
        mine(_config(tmp_path), str(bundle_dir), out, candidates=11)
    with pytest.raises(ConfigError, match="numbered from 0"):
        mine(_config(tmp_path), str(bundle_dir), out, source_index=1)
    other = tmp_path / "other"
    make_test_bundle(other, classes=("pmn", "tm62"))
    with pytest.raises(ConfigError, match="differs from the config in classes"):
        mine(_config(tmp_path), str(other), out)
    yolo = write_toy_yolo(tmp_path / "yolo", n_per_zone=2)
    path = tmp_path / "yolo.yaml"
    path.write_text(yaml.safe_dump({"name": "y", "classes": CLASSES, "chip_size_px": 64, "sources": [
        {"kind": "yolo", "path": str(yolo), "class_map": {0: "pmn", 1: "tm62"}}]}))  # fmt: skip
    with pytest.raises(ConfigError, match="mining works on synthetic sources"):
        mine(path, str(bundle_dir), out)
    assert main(["--config", str(path), "--model", str(bundle_dir), "--out", str(out)]) == 10
    assert not out.exists()


def test_validation_keep_last_exports_the_final_epoch(tmp_path: Path) -> None:
    yolo = write_toy_yolo(tmp_path / "yolo")
    cfg = tiny_config(yolo)
    cfg = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"keep": "last", "patience": 1})})
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.stopped == "max_epochs" and res.best_step == 24  # no early stopping, the last epoch kept
    meta, tensors = read_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    bundle = load_bundle(res.bundle_dir)  # type: ignore[arg-type]
    for k, v in bundle.state_dict.items():
        assert torch.equal(v, tensors[f"ema.{k}"]), k
    assert bundle.card.metrics["held_out_chips"]["what"].startswith("last epoch (step 24)")
