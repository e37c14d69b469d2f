"""The detector network: shapes, any band count, BN folding, architecture parameter validation."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from rams.detector.model import ArchParams, build_model, count_parameters, fuse_batchnorm

SMALL = ArchParams(widths=(8, 8, 16, 16), depths=(0, 1, 1), neck_width=16, head_width=8)


@pytest.mark.parametrize("bands", [1, 3, 5])
def test_outputs_at_stride_4_for_any_band_count(bands: int) -> None:
    model = build_model(bands, 9, SMALL).eval()
    out = model(torch.zeros(2, bands, 64, 96))
    assert out["heatmap"].shape == (2, 9, 16, 24)
    assert out["size"].shape == (2, 2, 16, 24)
    assert out["offset"].shape == (2, 2, 16, 24)


def test_initial_heatmap_is_the_sparse_prior() -> None:
    model = build_model(3, 2, SMALL).eval()
    with torch.no_grad():
        p = torch.sigmoid(model(torch.rand(1, 3, 64, 64))["heatmap"])
    assert 0.005 < float(p.mean()) < 0.02  # HEATMAP_PRIOR = 0.01: focal loss starts stable


def test_fused_batchnorm_computes_the_same_function() -> None:
    torch.manual_seed(0)
    model = build_model(3, 4, SMALL)
    model.train()
    with torch.no_grad():  # give BN non-trivial running statistics
        for _ in range(3):
            model(torch.rand(4, 3, 64, 64) * 2 + 1)
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_batchnorm(model)
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        got = fused(x)
    assert n_bn == 0
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4)


def test_default_architecture_is_compact() -> None:
    n = count_parameters(build_model(3, 9))
    assert 100_000 < n < 2_000_000  # "a few MB" of float32 weights


def test_arch_params_reject_unknown_keys_and_values() -> None:
    with pytest.raises(ValidationError):
        ArchParams.model_validate({"widths": [8, 8, 16, 16], "wdiths": 3})
    with pytest.raises(ValidationError):
        ArchParams(block="transformer")
    with pytest.raises(ValidationError):
        ArchParams(output_stride=8)
