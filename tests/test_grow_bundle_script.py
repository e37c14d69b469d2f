"""scripts/grow_bundle.py: a deeper network that starts out computing exactly what the bundle computes."""

from __future__ import annotations

from pathlib import Path

import torch

from rams.detector.bundle import load_bundle, make_test_bundle
from tests.script_helpers import load_script


def test_grown_bundle_computes_the_same_and_trains_its_new_blocks(tmp_path: Path) -> None:
    mod = load_script("grow_bundle")
    make_test_bundle(tmp_path / "small", classes=("pmn", "tm62"), seed=4)
    assert mod.main(["--model", str(tmp_path / "small"), "--depths", "1,1,2", "--out", str(tmp_path / "big")]) == 0
    small, big = load_bundle(tmp_path / "small"), load_bundle(tmp_path / "big")
    assert big.card.params["depths"] == [1, 1, 2] and big.card.version == "0.0.0-test+grown"
    assert len(big.state_dict) > len(small.state_dict)
    for k, v in small.state_dict.items():
        assert torch.equal(big.state_dict[k], v), k
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        a, b = small.build_model()(x), big.build_model()(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the new blocks are real parameters: a gradient step moves them and then the outputs differ
    model = big.build_model().train()
    new = [p for n, p in model.named_parameters() if n.startswith("s4.1.") or n.startswith("s16.2.")]
    assert new
    loss = model(x)["heatmap"].sigmoid().sum()
    loss.backward()  # type: ignore[no-untyped-call]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in new)
    assert mod.main(["--model", str(tmp_path / "small"), "--depths", "1,1", "--out", str(tmp_path / "x")]) == 10


def test_added_classes_keep_the_old_outputs_and_start_fresh(tmp_path: Path) -> None:
    import math

    import pytest

    from rams.detector.model import HEATMAP_PRIOR

    mod = load_script("grow_bundle")
    make_test_bundle(tmp_path / "small", classes=("pfm1", "pom2"), seed=5)
    args = ["--model", str(tmp_path / "small"), "--add-classes", "pmn,ozm72", "--out", str(tmp_path / "big")]
    assert mod.main(args) == 0
    small, big = load_bundle(tmp_path / "small"), load_bundle(tmp_path / "big")
    assert list(big.card.classes) == ["pfm1", "pom2", "pmn", "ozm72"]
    assert big.card.class_sizes_m["pmn"] == (0.121, 0.121) and big.card.class_sizes_m["ozm72"] == (0.108, 0.108)
    assert big.card.params == small.card.params  # same network, only the heatmap head is wider
    assert not big.card.class_thresholds and not big.card.metrics and not big.card.companions
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        a, b = small.build_model()(x), big.build_model()(x)
    assert b["heatmap"].shape[1] == 4
    # same weights; a wider output convolution may take another kernel path, so equal to float rounding
    assert torch.allclose(a["heatmap"], b["heatmap"][:, :2], rtol=0, atol=1e-5)
    assert torch.allclose(a["size"], b["size"], rtol=0, atol=1e-5)
    assert torch.allclose(a["offset"], b["offset"], rtol=0, atol=1e-5)
    assert float((b["heatmap"][:, 2:] - b["heatmap"][:, :2]).abs().max()) > 1e-3  # the new channels are not copies
    bias = big.state_dict["head_hm.bias"]
    assert torch.allclose(bias[2:], torch.full((2,), -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR)))
    assert not torch.equal(big.state_dict["head_hm.weight"][2], big.state_dict["head_hm.weight"][3])
    # classes already there, unknown or repeated, or nothing to grow: refused before anything is written
    for bad in (["--add-classes", "pom2"], ["--add-classes", "pmnx"], ["--add-classes", "pmn,pmn"], []):
        with pytest.raises(SystemExit, match="error"):
            mod.main(["--model", str(tmp_path / "small"), *bad, "--out", str(tmp_path / "x")])
        assert not (tmp_path / "x").exists()


def test_a_bundle_with_untrained_classes_is_refused_by_detect_until_trained(make_geotiff, tmp_path: Path) -> None:
    """The grown bundle's new classes give near-zero scores everywhere: run as a model it would report none of
    them wherever they lie. Its card names them; `rams detect` refuses it (exit 11, nothing written), `rams models`
    says what it is, and a training run from it writes a card without them."""
    import json

    from typer.testing import CliRunner

    from rams.cli.main import app
    from rams.detector.bundle import read_card

    mod = load_script("grow_bundle")
    make_test_bundle(tmp_path / "small", classes=("pfm1", "pom2"), seed=5, tile_size_px=256, threshold=0.3)
    assert read_card(tmp_path / "small").untrained_classes == []
    assert "untrained_classes" not in json.loads((tmp_path / "small" / "model.json").read_text())
    args = ["--model", str(tmp_path / "small"), "--add-classes", "pmn", "--out", str(tmp_path / "big")]
    assert mod.main(args) == 0
    assert read_card(tmp_path / "big").untrained_classes == ["pmn"]
    runner = CliRunner()
    ortho = make_geotiff(height=300, width=300, gsd=0.005)
    out = tmp_path / "out.gpkg"
    r = runner.invoke(app, ["detect", str(ortho), "--out", str(out), "--model", str(tmp_path / "big")])
    assert r.exit_code == 11, r.output
    assert "classes pmn were never trained" in r.output and "train it first" in r.output
    assert not out.exists()
    r = runner.invoke(app, ["detect", str(ortho), "--out", str(out), "--model", str(tmp_path / "small")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "show", str(tmp_path / "big")])
    assert r.exit_code == 0 and "untrained     pmn: a training start" in r.output, r.output
