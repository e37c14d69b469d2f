#!/usr/bin/env python
"""Grow a model bundle by residual blocks that start as the identity, to fine-tune a deeper network from it.

Copies every tensor of MODEL into the same network with more residual blocks per stage (``--depths``); the new
blocks' last BatchNorm starts at zero, so a new block returns its input (its input is a ReLU output, >= 0) and the
grown network computes exactly what MODEL computes (checked on random input before writing). Train it with
``init_weights: OUT`` and the grown ``model.depths`` in the config.

    python scripts/grow_bundle.py --model default --depths 1,2,2 --out runs/s4plus-init
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from rams.detector.bundle import load_bundle, save_bundle
from rams.detector.model import ArchParams, build_model


def grow(bundle: Any, depths: tuple[int, int, int]) -> tuple[dict[str, Any], dict[str, torch.Tensor], float]:
    """(card, weights, max abs output difference on random input) of the grown bundle."""
    card = bundle.card
    old = ArchParams.model_validate(card.params)
    if any(n < o for n, o in zip(depths, old.depths, strict=True)):
        raise SystemExit(f"error: --depths {depths} removes blocks of {tuple(old.depths)}; only growing is supported")
    params = old.model_copy(update={"depths": tuple(depths)})
    if params.block != "basic":
        raise SystemExit("error: only 'basic' blocks can be grown as the identity")
    torch.manual_seed(0)
    model = build_model(len(card.bands), len(card.classes), params)
    state = model.state_dict()
    for k, v in bundle.state_dict.items():
        state[k] = v.clone()
    grown = {k for k in state if k not in bundle.state_dict}
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
        for name, m in model.named_modules():
            if name.endswith("conv2") and f"{name}.1.weight" in grown:
                bn = m[1]
                bn.weight.zero_()
                bn.bias.zero_()
    model.eval()
    ref = bundle.build_model().eval()
    x = torch.randn(2, len(card.bands), 128, 128)
    with torch.inference_mode():
        a, b = ref(x), model(x)
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    new_card = json.loads(card.model_dump_json())
    new_card["params"] = params.model_dump(mode="json")
    new_card["version"] = f"{card.version}+grown"
    new_card["description"] = f"{card.description} Grown to depths {list(depths)} (new blocks start as identity)."
    new_card.pop("weights_sha256", None)
    return new_card, {k: v.detach().clone() for k, v in model.state_dict().items()}, diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--depths", required=True, help="residual blocks at strides 4, 8, 16, e.g. 1,2,2")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    depths = tuple(int(v) for v in args.depths.split(","))
    if len(depths) != 3:
        print("error: --depths needs three numbers (strides 4, 8, 16)", file=sys.stderr)
        return 10
    card, weights, diff = grow(load_bundle(args.model), depths)  # type: ignore[arg-type]
    if diff > 1e-4:
        print(f"error: the grown network differs from the original by {diff:.2e}; not written", file=sys.stderr)
        return 1
    save_bundle(args.out, card, weights, overwrite=args.overwrite)
    print(f"grown bundle written to {args.out} (depths {list(depths)}; max output difference {diff:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
