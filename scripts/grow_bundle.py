#!/usr/bin/env python
"""Grow a model bundle by residual blocks or classes, to fine-tune a larger network from it.

Copies every tensor of MODEL into the same network with more residual blocks per stage (``--depths``) and/or more
classes (``--add-classes``). A new block's last BatchNorm starts at zero, so it returns its input (its input is a
ReLU output, >= 0); a new class gets its own heatmap channel, freshly initialised as a new network's (weights drawn
with a fixed seed, bias at the heatmap prior), appended after the bundle's classes. The old classes' outputs, the
box size and the offset are what MODEL computes, to float rounding (checked on random input before writing: a
difference over 1e-4 writes nothing). Train it with
``init_weights: OUT`` and the grown ``model.depths`` / ``classes`` in the config. The grown card keeps no
thresholds, metrics or pair record of the old model (they do not describe the new one).

    python scripts/grow_bundle.py --model default --depths 1,2,2 --out runs/s4plus-init
    python scripts/grow_bundle.py --model scatterable-05cm --add-classes pmn,ozm72 --out runs/spec5-init
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from rams.classes import CLASS_NAMES
from rams.detector.bundle import class_sizes, load_bundle, save_bundle
from rams.detector.model import ArchParams, build_model


def grow(
    bundle: Any, depths: tuple[int, int, int] | None = None, add_classes: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, torch.Tensor], float]:
    """(card, weights, max abs difference of the old outputs on random input) of the grown bundle."""
    card = bundle.card
    old = ArchParams.model_validate(card.params)
    depths = tuple(old.depths) if depths is None else depths  # type: ignore[assignment]
    assert depths is not None
    for name in add_classes:
        if name not in CLASS_NAMES:
            raise SystemExit(f"error: --add-classes: unknown class {name!r}; known: {', '.join(CLASS_NAMES)}")
        if name in card.classes:
            raise SystemExit(f"error: --add-classes: {name} is already a class of {card.name}; name new classes only")
    if len(set(add_classes)) != len(add_classes):
        raise SystemExit("error: --add-classes names a class twice")
    if not add_classes and tuple(depths) == tuple(old.depths):
        raise SystemExit("error: nothing to grow; give --depths with more blocks or --add-classes")
    if any(n < o for n, o in zip(depths, old.depths, strict=True)):
        raise SystemExit(f"error: --depths {depths} removes blocks of {tuple(old.depths)}; only growing is supported")
    params = old.model_copy(update={"depths": tuple(depths)})
    if params.block != "basic":
        raise SystemExit("error: only 'basic' blocks can be grown as the identity")
    classes = list(card.classes) + list(add_classes)
    k_old = len(card.classes)
    torch.manual_seed(0)
    model = build_model(len(card.bands), len(classes), params)
    state = model.state_dict()
    for k, v in bundle.state_dict.items():
        if state[k].shape == v.shape:
            state[k] = v.clone()
        else:  # the heatmap head: the old classes' channels first, the new ones keep their fresh init
            assert k.startswith("head_hm.") and state[k].shape[0] == len(classes), k
            state[k][:k_old] = v
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
        b["heatmap"] = b["heatmap"][:, :k_old]
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    new_card = json.loads(card.model_dump_json())
    new_card["params"] = params.model_dump(mode="json")
    new_card["version"] = f"{card.version}+grown"
    what = []
    if tuple(depths) != tuple(old.depths):
        what.append(f"to depths {list(depths)} (new blocks start as identity)")
    if add_classes:
        what.append(f"by the classes {', '.join(add_classes)} (new heatmap channels, fresh init)")
        new_card["classes"] = classes
        new_card["class_sizes_m"] = {k: list(v) for k, v in class_sizes(classes).items()}
        # thresholds, metrics and a pair record describe the old model only: the grown one starts without them
        new_card.pop("class_thresholds", None)
        new_card.pop("companions", None)
        new_card["metrics"] = {}
        # a training start: rams detect refuses it until a training run has learned these classes
        new_card["untrained_classes"] = [*card.untrained_classes, *add_classes]
    new_card["description"] = f"{card.description} Grown {' and '.join(what)}."
    new_card.pop("weights_sha256", None)
    return new_card, {k: v.detach().clone() for k, v in model.state_dict().items()}, diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--depths", help="residual blocks at strides 4, 8, 16, e.g. 1,2,2 (default: the bundle's)")
    ap.add_argument("--add-classes", default="", help="classes to add, comma-separated, e.g. pmn,ozm72")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    depths = None
    if args.depths:
        depths = tuple(int(v) for v in args.depths.split(","))
        if len(depths) != 3:
            print("error: --depths needs three numbers (strides 4, 8, 16)", file=sys.stderr)
            return 10
    add = tuple(c.strip() for c in args.add_classes.split(",") if c.strip())
    card, weights, diff = grow(load_bundle(args.model), depths, add)  # type: ignore[arg-type]
    if diff > 1e-4:
        print(f"error: the grown network differs from the original by {diff:.2e}; not written", file=sys.stderr)
        return 1
    save_bundle(args.out, card, weights, overwrite=args.overwrite)
    print(
        f"grown bundle written to {args.out} (depths {card['params']['depths']}, classes {', '.join(card['classes'])}; "
        f"max difference of the old outputs {diff:.1e})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
