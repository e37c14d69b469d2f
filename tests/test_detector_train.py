"""Training: loss falls, checkpoints round-trip bit-exact, resume continues exactly, `rams train` CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from rams.cli.main import app
from rams.detector.bundle import load_bundle
from rams.detector.model import build_model
from rams.detector.predict import Predictor
from rams.detector.train import (
    TrainState,
    _load_into,
    lr_at,
    read_checkpoint,
    save_checkpoint,
    train,
)
from rams.errors import ConfigError, ModelError, OutputError
from tests.detector_helpers import TINY_MODEL, tiny_config, write_toy_yolo


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_yolo(tmp_path_factory.mktemp("data") / "yolo")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_loss_falls_and_the_bundle_finds_the_objects(yolo: Path, tmp_path: Path) -> None:
    cfg = tiny_config(yolo)
    res = train(cfg, tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run" / "log.csv")
    assert [int(r["step"]) for r in rows] == [8, 16, 24]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.6 * losses[0], losses
    steps = _rows(tmp_path / "run" / "steps.csv")
    assert len(steps) == 24
    assert res.bundle_dir is not None and res.stopped == "max_epochs"
    bundle = load_bundle(res.bundle_dir)
    assert bundle.card.classes == ["pmn", "tm62"] and bundle.card.training.steps == 24
    assert "yolo" in bundle.card.training.data[0] and "groups 1" in bundle.card.training.data[0]
    assert bundle.card.metrics["held_out_chips"]["n_items"] > 0
    # the exported model finds a painted object where it is
    img = np.full((1, 3, 96, 96), 0.3, np.float32)
    img[0, :, 40:58, 20:38] = np.array([40, 200, 230], np.float32)[:, None, None] / 255  # tm62-like square
    dets = Predictor(bundle).predict(img, None, 0.05)[0]
    assert len(dets) >= 1
    cx = (dets.boxes_xyxy_px[0, 0] + dets.boxes_xyxy_px[0, 2]) / 2
    cy = (dets.boxes_xyxy_px[0, 1] + dets.boxes_xyxy_px[0, 3]) / 2
    assert abs(cx - 29) < 6 and abs(cy - 49) < 6


def test_checkpoint_round_trips_bit_exact(yolo: Path, tmp_path: Path) -> None:
    cfg = tiny_config(yolo)
    torch.manual_seed(0)
    model = build_model(3, 2, cfg.model)
    ema = build_model(3, 2, cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        loss = sum(v.float().pow(2).mean() for v in model(torch.rand(2, 3, 32, 32)).values())
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    state = TrainState(step=2, best_selection=0.5, best_step=2, history=[{"step": 2, "selection": 0.5}])
    path = save_checkpoint(tmp_path / "ck" / "last", model, ema, opt, state, cfg)
    meta, tensors = read_checkpoint(path)
    model2, ema2 = build_model(3, 2, cfg.model), build_model(3, 2, cfg.model)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    state2 = _load_into(tensors, meta, model2, ema2, opt2)
    assert state2 == state
    for a, b in ((model, model2), (ema, ema2)):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid, st in s1["state"].items():
        for k, v in st.items():
            assert torch.equal(v, s2["state"][pid][k])
    again = save_checkpoint(tmp_path / "ck2" / "last", model2, ema2, opt2, state2, cfg)
    assert again.read_bytes() == path.read_bytes()
    # a damaged checkpoint is refused
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the SHA-256"):
        read_checkpoint(path)


def test_resume_continues_exactly_like_an_uninterrupted_run(yolo: Path, tmp_path: Path) -> None:
    cfg = tiny_config(yolo, steps_per_epoch=3, max_epochs=2)
    train(cfg, tmp_path / "a", progress=False, export=False)
    part = train(cfg, tmp_path / "b", progress=False, export=False, max_steps=3)
    assert part.steps == 3 and part.stopped == "max_steps"
    resumed = train(cfg, tmp_path / "b", resume=tmp_path / "b", progress=False, export=False)
    assert resumed.steps == 6
    a, b = _rows(tmp_path / "a" / "steps.csv"), _rows(tmp_path / "b" / "steps.csv")
    assert [r["step"] for r in b] == ["1", "2", "3", "4", "5", "6"]
    assert a == b  # every step's lr and losses identical, as text of the exact floats
    _, ta = read_checkpoint(tmp_path / "a" / "checkpoints" / "last")
    _, tb = read_checkpoint(tmp_path / "b" / "checkpoints" / "last")
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_resume_refuses_another_config_and_existing_runs(yolo: Path, tmp_path: Path) -> None:
    cfg = tiny_config(yolo, steps_per_epoch=2, max_epochs=1)
    train(cfg, tmp_path / "r", progress=False, export=False)
    other = tiny_config(yolo, steps_per_epoch=2, max_epochs=1, seed=5)
    with pytest.raises(ConfigError, match="different config \\(differs in seed\\)"):
        train(other, tmp_path / "r", resume=tmp_path / "r", progress=False, export=False)
    with pytest.raises(OutputError, match="already holds a training run; pass --resume"):
        train(cfg, tmp_path / "r", progress=False, export=False)


def test_lr_schedule_warms_up_then_decays(yolo: Path) -> None:
    cfg = tiny_config(yolo, steps_per_epoch=10, max_epochs=10)
    lrs = [lr_at(s, cfg) for s in range(cfg.total_steps)]
    assert lrs[0] < lrs[3] == pytest.approx(cfg.optim.lr)
    assert lrs[-1] == pytest.approx(cfg.optim.lr * cfg.optim.min_lr_ratio, rel=0.05)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))


def _write_cfg(path: Path, yolo: Path, **changes: object) -> Path:
    d = tiny_config(yolo, steps_per_epoch=2, max_epochs=1).model_dump(mode="json")
    d.update(changes)
    path.write_text(yaml.safe_dump(d))
    return path


def test_cli_train_and_its_errors(yolo: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    cfg = _write_cfg(tmp_path / "t.yaml", yolo)
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "trained 2 steps" in res.output and "model bundle" in res.output
    assert (out / "bundle" / "model.json").is_file() and (out / "config.yaml").is_file()
    res = runner.invoke(app, ["models", "show", str(out / "bundle")])
    assert res.exit_code == 0 and "0:pmn, 1:tm62" in res.output

    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out)])
    assert res.exit_code == 12 and "already holds a training run" in res.output
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 3 and "config file not found" in res.output
    bad = _write_cfg(tmp_path / "bad.yaml", yolo, batchsize=4)
    res = runner.invoke(app, ["train", "--config", str(bad), "--out", str(tmp_path / "x")])
    assert res.exit_code == 10 and "batchsize: Extra inputs are not permitted" in res.output
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 11 and "checkpoint" in res.output and "not found" in res.output
    res = runner.invoke(app, ["train"])
    assert res.exit_code == 10 and "give --config" in res.output
    # a finished run continued for longer: --resume with --max-epochs (2 more steps of 2 per epoch)
    res = runner.invoke(app, ["train", "--resume", str(out), "--max-epochs", "2"])
    assert res.exit_code == 0, res.output
    assert "trained 4 steps (2.0 epochs)" in res.output
    assert [int(r["step"]) for r in _rows(out / "steps.csv")] == [1, 2, 3, 4]
    assert load_bundle(out / "bundle").card.training.steps == 4
    res = runner.invoke(app, ["train", "--resume", str(out), "--max-epochs", "0"])
    assert res.exit_code == 10 and "--max-epochs 0" in res.output
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "g"), "--device", "cuda"])
    if not torch.cuda.is_available():
        assert res.exit_code == 14 and "CUDA is not available" in res.output


def test_tiny_model_constant_matches_the_helper() -> None:
    # the helper's architecture is what make_test_bundle-sized tests assume: keep them small
    assert sum(p.numel() for p in build_model(3, 2, TINY_MODEL).parameters()) < 50_000


def test_init_weights_starts_from_a_bundle_and_is_recorded(yolo: Path, tmp_path: Path) -> None:
    first = train(tiny_config(yolo, steps_per_epoch=4, max_epochs=1), tmp_path / "s1", progress=False)
    assert first.bundle_dir is not None
    stage1 = load_bundle(first.bundle_dir)
    cfg = tiny_config(yolo, steps_per_epoch=1, max_epochs=1, init_weights=str(first.bundle_dir))
    # (almost) zero learning rate: the stage-2 weights are the stage-1 bundle's (model and EMA both loaded);
    # BatchNorm running statistics still move in the training step, so only learned parameters are compared
    cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": 1e-12, "warmup_steps": 0})})
    res = train(cfg, tmp_path / "s2", progress=False)
    assert res.bundle_dir is not None
    stage2 = load_bundle(res.bundle_dir)
    for k, v in stage1.state_dict.items():
        if "running_" in k or k.endswith("num_batches_tracked"):
            continue
        assert torch.allclose(stage2.state_dict[k], v, atol=1e-6), k
    init = stage2.card.training.init_weights
    assert init is not None and init["weights_sha256"] == stage1.card.weights_sha256
    # a random start differs
    fresh = train(tiny_config(yolo, steps_per_epoch=1, max_epochs=1), tmp_path / "s3", progress=False)
    assert fresh.bundle_dir is not None
    assert load_bundle(fresh.bundle_dir).card.training.init_weights is None
    # another architecture or class list is refused before training
    other = tiny_config(yolo, classes=["pmn"], init_weights=str(first.bundle_dir))
    with pytest.raises(ConfigError, match="differs from this config in classes"):
        train(other, tmp_path / "s4", progress=False)
    with pytest.raises(ModelError):
        train(tiny_config(yolo, init_weights=str(tmp_path / "nope")), tmp_path / "s5", progress=False)
    # a bundle grown by a class (scripts/grow_bundle.py) names it untrained; the card of a run from it does not
    from tests.script_helpers import load_script

    grow = load_script("grow_bundle")
    assert grow.main(["--model", str(first.bundle_dir), "--add-classes", "pfm1", "--out", str(tmp_path / "g")]) == 0
    assert load_bundle(tmp_path / "g").card.untrained_classes == ["pfm1"]
    grown_run = train(tiny_config(yolo, classes=["pmn", "tm62", "pfm1"], steps_per_epoch=1, max_epochs=1,
                                  init_weights=str(tmp_path / "g")), tmp_path / "s6", progress=False)
    assert grown_run.bundle_dir is not None
    assert load_bundle(grown_run.bundle_dir).card.untrained_classes == []
