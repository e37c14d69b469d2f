#!/usr/bin/env python
"""Experiment (not a feature): horizontal-flip test-time augmentation of a bundle, for `eval_model.py` to score.

Runs ``rams detect``'s pipeline with the network wrapped so that every batch also goes through mirrored, and the
two outputs are averaged back in the original frame (heatmap logits and log-sizes averaged; the x offset of a
mirrored cell is ``1 - offset``). The detections are written where ``scripts/eval_model.py`` caches them for a
bundle of another name, so calibration and evaluation then run unchanged on that scratch bundle:

    cp -r models/default /tmp/tta && python - <<< 'import json,pathlib; p=pathlib.Path("/tmp/tta/model.json"); \
c=json.loads(p.read_text()); c["name"]="default-tta"; p.write_text(json.dumps(c))'
    python scripts/tta_experiment.py /tmp/tta runs/eval-scenes/s80* runs/eval-scenes/s900*
    python scripts/eval_model.py --model /tmp/tta --seeds 8001-8024 --calibrate precise=2,balanced=10,\
high_recall=30 --per-class --update-card
    python scripts/eval_model.py --model /tmp/tta

Costs twice the model time. Result (2026-11-27): docs/detector.md, "What limits the model now".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

import rams.detect as detect_mod
from rams.detector.bundle import load_bundle


class FlipTTA(torch.nn.Module):
    """The network on a batch and on its mirror image, averaged in the original frame."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        o = self.model(torch.cat([x, torch.flip(x, dims=[3])]))
        back = {k: torch.flip(v[n:], dims=[3]) for k, v in o.items()}
        off = torch.stack([(o["offset"][:n, 0] + 1 - back["offset"][:, 0]) / 2,
                           (o["offset"][:n, 1] + back["offset"][:, 1]) / 2], 1)  # fmt: skip
        return {"heatmap": (o["heatmap"][:n] + back["heatmap"]) / 2, "size": (o["size"][:n] + back["size"]) / 2,
                "offset": off}  # fmt: skip


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: tta_experiment.py SCRATCH_BUNDLE SCENE_DIR...")
    bundle = Path(sys.argv[1])
    card = load_bundle(str(bundle)).card
    plain = detect_mod.make_predictor

    def with_tta(plan: Any) -> Any:
        p = plain(plan)
        p.model = FlipTTA(p.model)
        return p

    detect_mod.make_predictor = with_tta
    for d in map(Path, sys.argv[2:]):
        out = d / f"det-{card.name}-{card.weights_sha256[:8]}.gpkg"
        if not out.exists():
            cfg = detect_mod.DetectConfig(model=str(bundle), threshold=0.05, force=True)
            detect_mod.run_detect(d / "ortho.tif", out, cfg, overwrite=True)
            print("done", d.name, flush=True)


if __name__ == "__main__":
    main()
