#!/usr/bin/env python
"""Per class: how a model scores object centres against the tail of its scores on background, on training chips.

A detector reports ~10 false alarms per hectare only if its threshold sits above all but a few of the ~6 million
stride-4 background cells of a hectare at 1 cm. This script runs a model (eval mode, no augmentation) on chips of
a training config's synthetic source and prints, per class: the median of the class's heatmap maximum in the
3 x 3 cells around each object centre, the 99.9th and 99.99th percentiles of the class's heatmap over background
cells (away from every object, not ignored), and the share of centres above the 99.99th percentile. A class whose
centre median sits at or below the background tail cannot be found at a low false-alarm rate by any threshold.

    python scripts/score_separation.py --config configs/train-default-stage3.yaml --model default --chips 1600
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rams.detector.bundle import load_bundle
from rams.detector.datasets import SourceContext, SyntheticSource, SyntheticSourceConfig
from rams.detector.loss import encode_targets
from rams.detector.predict import normalise
from rams.detector.train import load_train_config


def separation(model: torch.nn.Module, source: SyntheticSource, n_chips: int, classes: tuple[str, ...],
               mean: list[float], std: list[float], batch: int = 32, gsd_m: float = 0.01,
               cells_per_ha: tuple[float, ...] = ()) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Centre scores and background quantiles per class (see the module doc)."""
    k = len(classes)
    centres: list[list[float]] = [[] for _ in range(k)]
    background: list[np.ndarray] = []
    m, s = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    model.eval()
    with torch.inference_mode():
        for b0 in range(0, n_chips, batch):
            samples = [source.sample_chip(j) for j in range(b0, min(b0 + batch, n_chips))]
            targets = [encode_targets(x, k, 4) for x in samples]
            x = torch.from_numpy(np.stack([a.image for a in samples]))
            v = torch.from_numpy(np.stack([a.valid for a in samples]))
            p = torch.sigmoid(model(normalise(x, v, m, s))["heatmap"].float()).numpy()
            for i, t in enumerate(targets):
                hm = t["heatmap"]
                for c in range(k):
                    for r, q in zip(*np.nonzero(hm[c] == 1.0), strict=True):
                        centres[c].append(float(p[i, c, max(r - 1, 0) : r + 2, max(q - 1, 0) : q + 2].max()))
                far = (hm.max(0) < 0.01) & (t["ignore"] > 0) & (t["reg_mask"] == 0)
                background.append(p[i][:, far])
    bg = np.concatenate(background, axis=1) if background else np.zeros((k, 0))
    bg_ha = bg.shape[1] * (4 * gsd_m) ** 2 / 1e4  # ground of the background cells (stride 4)
    out: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(classes):
        cen = np.asarray(centres[c])
        q3, q4 = (float(v) for v in np.quantile(bg[c], [0.999, 0.9999])) if bg.shape[1] else (None, None)
        out[name] = {
            "centres": int(len(cen)),
            "centre_median": float(np.median(cen)) if len(cen) else None,
            "background_q99.9": q3,
            "background_q99.99": q4,
            "share_above_q99.99": float((cen > q4).mean()) if len(cen) and q4 is not None else None,
            "background_cells": int(bg.shape[1]),
            "background_ha": bg_ha,
        }
        for rate in cells_per_ha:
            n_above = int(rate * bg_ha)  # cells allowed above the threshold on this much ground
            t = float(np.sort(bg[c])[-n_above - 1]) if bg.shape[1] > n_above else None
            out[name][f"background_at_{rate:g}_per_ha"] = t
            out[name][f"share_above_{rate:g}_per_ha"] = float((cen > t).mean()) if len(cen) and t is not None else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--source", type=int, default=0)
    ap.add_argument("--chips", type=int, default=1600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cells-per-ha", default="100,1000",
                    help="background cells per hectare allowed above a threshold (comma-separated rates)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_train_config(args.config)
    scfg = cfg.sources[args.source]
    if not isinstance(scfg, SyntheticSourceConfig):
        print(f"error: source {args.source} is a {scfg.kind} source; use a synthetic one", file=sys.stderr)
        return 10
    bundle = load_bundle(args.model)
    if list(bundle.card.classes) != list(cfg.class_names):
        print(f"error: model {bundle.card.name} has other classes than the config", file=sys.stderr)
        return 10
    ctx = SourceContext(cfg.class_names, tuple(cfg.bands), cfg.gsd_m, cfg.chip_size_px)
    source = SyntheticSource(scfg.model_copy(update={"hard_examples": None}), ctx)
    rates = tuple(float(x) for x in args.cells_per_ha.split(",") if x.strip())
    res = separation(bundle.build_model(), source, args.chips, cfg.class_names, cfg.norm_mean, cfg.norm_std,
                     gsd_m=cfg.gsd_m, cells_per_ha=rates)  # fmt: skip
    cells = next(iter(res.values()))["background_cells"]
    print(f"{bundle.card.name} {bundle.card.version} on {args.chips} chips of {args.config} source {args.source} "
          f"({cells} background cells)")  # fmt: skip
    keys = ["centre_median", "background_q99.9", "background_q99.99", "share_above_q99.99"]
    head = ["centre median", "background q99.9", "background q99.99", "centres above q99.99"]
    for rate in rates:
        keys += [f"background_at_{rate:g}_per_ha", f"share_above_{rate:g}_per_ha"]
        head += [f"background at {rate:g} cells/ha", "centres above it"]
    print(f"({next(iter(res.values()))['background_ha']:.3f} ha of background at {cfg.gsd_m * 100:g} cm/px)")
    print("| class | centres | " + " | ".join(head) + " |")
    print("|---|---:|" + "---:|" * len(head))
    for name, r in res.items():
        f = [f"{r[x]:.2f}" if r[x] is not None else "-" for x in keys]
        print(f"| {name} | {r['centres']} | " + " | ".join(f) + " |")
    if args.json:
        args.json.write_text(json.dumps({"model": bundle.card.name, "version": bundle.card.version,
                                         "chips": args.chips, "classes": res}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
