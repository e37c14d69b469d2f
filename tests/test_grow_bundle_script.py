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
