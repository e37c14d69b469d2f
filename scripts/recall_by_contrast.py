#!/usr/bin/env python
"""Recall per class by how much each item stands out from the ground around it.

Tells "the model misses what it could see" from "the item cannot be seen": for every truth item (>= 8 px) of
the evaluation scenes, the local contrast is the distance between the item's mean colour and the mean colour of
a ring of ground around it (other items masked), in units of that ring's per-band standard deviation. Items are
binned by contrast and counted found or missed at the model's default operating point (per-class thresholds),
class-aware, with the matching of ``rams evaluate`` (``match_points``, default class radii), scene by scene.

Needs the scenes and the model's cached detections that ``scripts/eval_model.py`` leaves beside each scene
(``det-MODEL-HASH8.gpkg``); run that first.

    python scripts/recall_by_contrast.py --model default --seeds 9001-9006,8001-8024 [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy import ndimage as ndi

from rams.detector.bundle import load_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_cache import found_at, parse_seeds, scene_detections  # noqa: E402  (a sibling script module)

BINS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, float("inf"))


def item_contrast(img: np.ndarray, transform: Any, geom: Any, others: np.ndarray, size_px: float) -> float | None:
    """Contrast of one item: |mean inside - mean of a ground ring| / ring std (per band, averaged); None when the
    item or its ring is too small to measure (at the mosaic edge, crowded by other items)."""
    minx, miny, maxx, maxy = geom.bounds
    pad = max(maxx - minx, maxy - miny, 0.1)
    c0, r0 = ~transform @ (minx - pad, maxy + pad)
    c1, r1 = ~transform @ (maxx + pad, miny - pad)
    c0, r0 = int(max(c0, 0)), int(max(r0, 0))
    c1, r1 = min(int(c1) + 1, img.shape[2]), min(int(r1) + 1, img.shape[1])
    if c1 - c0 < 3 or r1 - r0 < 3:
        return None
    wt = window_transform(Window(c0, r0, c1 - c0, r1 - r0), transform)
    inside = rasterize([(geom, 1)], out_shape=(r1 - r0, c1 - c0), transform=wt).astype(bool)
    if inside.sum() < 4:
        return None
    ring = ndi.binary_dilation(inside, iterations=max(3, int(0.3 * size_px)))
    ring &= ~ndi.binary_dilation(inside, iterations=2) & ~others[r0:r1, c0:c1]
    if ring.sum() < 10:
        return None
    sub = img[:, r0:r1, c0:c1]
    diff = sub[:, inside].mean(1) - sub[:, ring].mean(1)
    return float(np.linalg.norm(diff) / (sub[:, ring].std(1).mean() + 1e-3))


def scene_items(folder: Path, det_file: Path, thresholds: dict[str, float], min_px: float, gsd_m: float
                ) -> list[tuple[str, float, bool]]:  # fmt: skip
    """(class, contrast, found) of each measurable item >= ``min_px`` of one scene."""
    truth = gpd.read_file(folder / "truth.gpkg", layer="truth")
    tc = truth["class"].astype(str).to_numpy()
    found, _ = found_at(det_file, truth, thresholds)
    with rasterio.open(folder / "ortho.tif") as src:
        img = src.read([1, 2, 3]).astype(np.float32)
        tr = src.transform
    others = rasterize([(g, 1) for g in truth.geometry], out_shape=img.shape[1:], transform=tr).astype(bool)
    out = []
    for i, (geom, cls, length) in enumerate(zip(truth.geometry, tc, truth["length_m"], strict=True)):
        size_px = float(length) / gsd_m
        if size_px < min_px or cls not in thresholds:
            continue
        k = item_contrast(img, tr, geom, others, float(length) / abs(tr.a))
        if k is not None:
            out.append((cls, k, bool(found[i])))
    return out


def table(items: list[tuple[str, float, bool]]) -> dict[str, list[dict[str, Any]]]:
    """Per class (and all): items and recall in each contrast bin."""
    out: dict[str, list[dict[str, Any]]] = {}
    for cls in [*sorted({c for c, _, _ in items}), "all"]:
        rows = []
        for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
            sel = [f for c, k, f in items if (cls == "all" or c == cls) and lo <= k < hi]
            rows.append({"contrast": [lo, hi], "items": len(sel), "recall": sum(sel) / len(sel) if sel else None})
        out[cls] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenes-dir", default="runs/eval-scenes")
    ap.add_argument("--seeds", default="9001-9006")
    ap.add_argument("--min-px", type=float, default=8.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    bundle = load_bundle(args.model)
    card = bundle.card
    thresholds = card.thresholds()
    root = Path(args.scenes_dir)
    items: list[tuple[str, float, bool]] = []
    scenes = scene_detections(root, parse_seeds(args.seeds), card, args.model)
    if isinstance(scenes, str):
        print(f"error: {scenes}", file=sys.stderr)
        return 3
    for folder, det in scenes:
        items += scene_items(folder, det, thresholds, args.min_px, card.gsd_m)
    res = table(items)
    pairs = zip(BINS[:-1], BINS[1:], strict=True)
    heads = [f"{lo:g}-{hi:g}" if hi != float("inf") else f">= {lo:g}" for lo, hi in pairs]
    print(f"class-aware recall at {card.name} {card.version}'s default point, by local contrast "
          f"(ring std units; items in brackets), {len(items)} items")  # fmt: skip
    print("| class | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(heads))
    for cls, rows in res.items():
        cells = [f"{r['recall']:.2f} ({r['items']})" if r["items"] else "-" for r in rows]
        print(f"| {cls} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"model": card.name, "version": card.version, "seeds": args.seeds,
                                         "bins": res}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
