#!/usr/bin/env python
"""What a model's false alarms on rendered scenes fire on: another item, a confuser (by kind), or bare ground.

Tells which hard negatives cost the false-alarm budget. For every scene, the model's cached detections are cut at
its default operating point (per-class thresholds; ``--threshold CLASS=X`` overrides a class, e.g. to look at the
score band where a class's own centres sit) and scored with ``rams.evaluate`` against the scene's truth, within
the detection run's coverage. Each class-aware false alarm is then put under one source: ``wrong_class`` (on an
item of another class), ``duplicate`` (on an item already found), or, for one on no item, the kind of the smallest
confuser of the scene's ``confusers`` layer within ``--near`` metres of its centre, else ``ground`` (terrain
texture: nothing placed there).

Needs the scenes and cached detections that ``scripts/eval_model.py`` leaves (``det-MODEL-HASH8.gpkg``).

    python scripts/false_alarm_sources.py --model default --seeds 9001-9006,8001-8024 [--threshold pfm1=0.2]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

from rams.detector.bundle import load_bundle
from rams.evaluate import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_cache import parse_seeds, scene_detections  # noqa: E402  (a sibling script module)


def scene_sources(folder: Path, det_file: Path, thresholds: dict[str, float], near_m: float
                  ) -> tuple[list[tuple[str, str]], float]:  # fmt: skip
    """(label, source) of each class-aware false alarm of one scene, and the evaluated area in m²."""
    truth = gpd.read_file(folder / "truth.gpkg", layer="truth")
    confusers = gpd.read_file(folder / "truth.gpkg", layer="confusers")
    dets = gpd.read_file(det_file, layer="detections")
    coverage = gpd.read_file(det_file, layer="coverage")
    keep = dets["score"].to_numpy(float) >= np.array([thresholds.get(str(lab), 1.0) for lab in dets["label"]])
    report = evaluate(dets[keep], truth, coverage=coverage)
    fa = report.false_alarms
    out: list[tuple[str, str]] = []
    if fa is None or fa.empty:
        return out, report.area_m2
    fa = fa.to_crs(confusers.crs)
    areas = confusers.geometry.area.to_numpy()
    for label, error, centre in zip(fa["label"], fa["error"], fa.geometry.centroid, strict=True):
        if error != "no_item":
            out.append((str(label), str(error)))
            continue
        close = np.nonzero(confusers.geometry.distance(centre).to_numpy() <= near_m)[0]
        kind = str(confusers["kind"].iloc[close[np.argmin(areas[close])]]) if len(close) else "ground"
        out.append((str(label), kind))
    return out, report.area_m2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenes-dir", default="runs/eval-scenes")
    ap.add_argument("--seeds", default="9001-9006")
    ap.add_argument("--threshold", action="append", default=[], metavar="CLASS=X",
                    help="override one class's threshold (repeatable)")
    ap.add_argument("--near", type=float, default=0.03, help="metres from a false alarm's centre to a confuser")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    card = load_bundle(args.model).card
    thresholds = card.thresholds()
    for item in args.threshold:
        cls, _, value = item.partition("=")
        if cls not in thresholds or not value:
            print(f"error: --threshold {item}: use CLASS=X with a class of the model ({', '.join(thresholds)})",
                  file=sys.stderr)  # fmt: skip
            return 2
        thresholds[cls] = float(value)
    scenes = scene_detections(Path(args.scenes_dir), parse_seeds(args.seeds), card, args.model)
    if isinstance(scenes, str):
        print(f"error: {scenes}", file=sys.stderr)
        return 3
    pairs: list[tuple[str, str]] = []
    area_m2 = 0.0
    for folder, det in scenes:
        got, area = scene_sources(folder, det, thresholds, args.near)
        pairs += got
        area_m2 += area
    counts = Counter(pairs)
    labels = sorted({lab for lab, _ in pairs})
    sources = sorted({src for _, src in pairs}, key=lambda s: -sum(n for (_, x), n in counts.items() if x == s))
    ha = area_m2 / 1e4
    print(f"{card.name} {card.version}: {len(pairs)} class-aware false alarms on {len(scenes)} scenes "
          f"({ha:.2f} ha, {len(pairs) / max(ha, 1e-9):.1f} FP/ha), by what lies under them")  # fmt: skip
    print("| label | " + " | ".join(sources) + " | all |")
    print("|---|" + "---:|" * (len(sources) + 1))
    for lab in [*labels, "all"]:
        row = [sum(n for (la, s), n in counts.items() if s == src and lab in (la, "all")) for src in sources]
        print(f"| {lab} | " + " | ".join(str(n) for n in row) + f" | {sum(row)} |")
    if args.json:
        table: dict[str, Any] = {lab: {s: n for (la, s), n in counts.items() if la == lab} for lab in labels}
        args.json.write_text(json.dumps({"model": card.name, "version": card.version, "seeds": args.seeds,
                                         "thresholds": thresholds, "area_ha": ha,
                                         "false_alarms": table}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
