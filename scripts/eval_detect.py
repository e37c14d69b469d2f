#!/usr/bin/env python
"""Pooled recall and false alarms of one `rams detect` configuration over rendered scenes, at its operating points.

`scripts/eval_model.py` evaluates *one model* from detections kept down to a score floor (hindsight curves,
calibration). This script evaluates *a detection run as a survey unit would make it*: any `rams detect` options,
including several models in one run (`--model A --model B`, `rams.combine`), each at its card's thresholds. It runs
`rams detect` on every scene, `rams evaluate` against the scene's truth, and pools the counts over the scenes
(recall = items found / items, false alarms per hectare of analysed ground, class-aware and per class, with
Wilson 95 % intervals). Every truth item counts (no size filter, unlike eval_model.py's >= 8 px).

    python scripts/eval_detect.py --scenes-dir runs/small-scenes --seeds 9201-9218 --gsds 0.005 \\
        -- --model default --model runs/small-05cm/bundle

Scenes are the folders `eval_model.py` renders (`SCENES_DIR/s<seed>-<terrain>-<gsd>/` with `ortho.tif` and
`truth.gpkg`); render them with it first. Each run's result is kept beside the scene as `run-NAME.gpkg`
(`--name`, default: a hash of the detect options) and reused unless `--redo`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_cache import parse_seeds  # noqa: E402  (a sibling script module)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = k / n
    d = 1 + z * z / n
    c = p + z * z / (2 * n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((c - h) / d, (c + h) / d)


def pool(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counts of several `rams evaluate --json` reports (one per scene) into pooled rates."""
    area = sum(float(r["area_ha"]) for r in reports)
    tp: Counter[str] = Counter()
    items: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    for r in reports:
        for c, v in r["per_class"].items():
            tp[c] += int(v["tp"])
            items[c] += int(v["n_truth"])
            fp[c] += int(v["fp"])
    ca = {k: sum(int(r["class_aware"][k]) for r in reports) for k in ("tp", "fp", "n_truth")}

    def row(found: int, n: int, false: int) -> dict[str, Any]:
        return {"found": found, "items": n, "recall": found / n if n else None, "recall_ci95": wilson(found, n),
                "false_alarms": false, "fp_per_ha": false / area if area else None}

    return {
        "scenes": len(reports),
        "area_ha": area,
        "class_aware": row(ca["tp"], ca["n_truth"], ca["fp"]),
        "per_class": {c: row(tp[c], items[c], fp[c]) for c in sorted(set(items) | set(fp)) if items[c] or fp[c]},
    }


def _fmt(v: dict[str, Any]) -> str:
    if v["recall"] is None:
        return f"- (0 items) | {v['false_alarms']} ({v['fp_per_ha']:.1f})"
    lo, hi = v["recall_ci95"]
    return (f"{v['recall']:.3f} ({v['found']}/{v['items']}; {lo:.2f}-{hi:.2f}) | {v['false_alarms']} "
            f"({v['fp_per_ha']:.1f})")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    detect_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, detect_args = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes-dir", default="runs/eval-scenes")
    ap.add_argument("--seeds", required=True, help="e.g. 9201-9218 or 9001,9003")
    ap.add_argument("--gsds", default=None, help="only scene folders rendered at these GSDs (metres), e.g. 0.005")
    ap.add_argument("--name", default=None, help="name of the kept results (default: a hash of the detect options)")
    ap.add_argument("--redo", action="store_true", help="detect again even where a result of this name exists")
    ap.add_argument("--rams", default=str(Path(sys.executable).with_name("rams")))
    ap.add_argument("--json", default=None, help="also write the pooled result to this JSON file")
    args = ap.parse_args(argv)
    name = args.name or hashlib.sha256(json.dumps(detect_args).encode()).hexdigest()[:10]
    gsds = None if args.gsds is None else {float(g) for g in args.gsds.split(",")}
    root = Path(args.scenes_dir)
    folders: list[Path] = []
    for seed in parse_seeds(args.seeds):
        found = [f for f in sorted(root.glob(f"s{seed}-*"))
                 if gsds is None or float(f.name.rsplit("-", 1)[1]) in gsds]  # fmt: skip
        if not found:
            print(f"error: no scene for seed {seed} in {root}" + (f" at {args.gsds} m" if gsds else "")
                  + "; render it with scripts/eval_model.py first", file=sys.stderr)  # fmt: skip
            return 2
        folders += found
    reports = []
    for f in folders:
        out = f / f"run-{name}.gpkg"
        if args.redo or not out.exists():
            subprocess.run([args.rams, "-q", "detect", str(f / "ortho.tif"), "--out", str(out), "--overwrite",
                            *detect_args], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        rep = subprocess.run([args.rams, "evaluate", str(out), str(f / "truth.gpkg"), "--json", "--by", "none"],
                             check=True, capture_output=True, text=True)  # fmt: skip
        reports.append(json.loads(rep.stdout))
        print(f"{f.name}: done", file=sys.stderr, flush=True)
    res = pool(reports)
    res["detect_args"] = detect_args
    res["scenes_dir"], res["seeds"], res["name"] = str(root), args.seeds, name
    print(f"`rams detect {' '.join(detect_args)}` on {res['scenes']} scenes, {res['area_ha']:.3f} ha analysed\n")
    print("| class | recall (found/items; 95 %) | false alarms (per ha) |\n|---|---|---|")
    print(f"| all, class-aware | {_fmt(res['class_aware'])} |")
    for c, v in res["per_class"].items():
        print(f"| {c} | {_fmt(v)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
