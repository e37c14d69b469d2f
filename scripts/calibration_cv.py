#!/usr/bin/env python
"""How well do operating points calibrated on some scenes hold on others? Split-half cross-validation.

The calibration scenes (``scripts/eval_model.py --calibrate``, seeds 8001-8024 by default) are cut into blocks of
six seeds (one per terrain type, so that every block keeps the terrain and GSD of each seed); for every way of
splitting the blocks in two halves, thresholds are calibrated on one half (single threshold and per-class
thresholds, ``--per-class``) on a scratch copy of the bundle, and evaluated on the other half. Printed as a table:
per split and direction, the class-aware recall, mean per-class recall and FP/ha out of sample, against the
FP/ha limit the thresholds were set for. The shipped bundle is never modified; detections cached beside the scenes
by ``eval_model.py`` are reused (same model name and weights hash).

    python scripts/calibration_cv.py --model default --point balanced=10
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _eval_model(args: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([sys.executable, str(HERE / "eval_model.py"), *args, "--json", f.name], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        return json.loads(Path(f.name).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--first-seed", type=int, default=8001)
    ap.add_argument("--blocks", type=int, default=4, help="blocks of six calibration seeds (default 4: 24 scenes)")
    ap.add_argument("--point", default="balanced=10", help="NAME=FP_PER_HA of the operating point to study")
    ap.add_argument("--scenes-dir", default="runs/eval-scenes")
    ap.add_argument("--update-card", action="store_true",
                    help="record the result in the bundle's card (metrics.operating_point_cross_validation)")
    a = ap.parse_args()
    from rams.detector.bundle import resolve_bundle_path

    name, _, rate = a.point.partition("=")
    blocks = seed_blocks(a.first_seed, a.blocks)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cal_seeds, ev_seeds in split_pairs(blocks):
            bundle = Path(tmp) / "bundle"
            shutil.rmtree(bundle, ignore_errors=True)
            shutil.copytree(resolve_bundle_path(a.model), bundle)
            common = ["--model", str(bundle), "--scenes-dir", a.scenes_dir]
            rec = _eval_model([*common, "--seeds", cal_seeds, "--calibrate", f"{name}={rate}", "--per-class",
                               "--update-card"])  # fmt: skip
            point = rec["points"][name]
            out = {}
            for mode, thr in (("single", point["score_threshold"]), ("per class", point["class_thresholds"])):
                _set_default(bundle, name, thr)
                r = _eval_model([*common, "--seeds", ev_seeds])
                per = [v["recall"] for v in r["per_class"].values() if v["recall"] is not None]
                out[mode] = (r["class_aware"]["recall"], statistics.mean(per), r["class_aware"]["fp_per_ha"],
                             r["area_ha"])  # fmt: skip
            rows.append((cal_seeds, ev_seeds, point, out))
            print(f"calibrated on {cal_seeds}, evaluated on {ev_seeds}: {out}", file=sys.stderr, flush=True)
    print(f"\n{a.model}, operating point {name} (<= {rate} FP/ha set on the calibration half)\n")
    print("| calibrated on | evaluated on | single: recall / mean per class / FP/ha | "
          "per class: recall / mean per class / FP/ha | per-class thresholds |")
    print("|---|---|---|---|---|")
    for cal, ev, point, out in rows:
        s, p = out["single"], out["per class"]
        thr = ", ".join(f"{c} {t:.2f}" for c, t in point["class_thresholds"].items())
        print(f"| {cal} | {ev} | {s[0]:.3f} / {s[1]:.3f} / {s[2]:.1f} | {p[0]:.3f} / {p[1]:.3f} / {p[2]:.1f} "
              f"| {thr} |")
    summary = {}
    for mode in ("single", "per class"):
        fp = [o[mode][2] for *_, o in rows]
        summary[mode] = {
            "class_aware_recall_median": round(statistics.median(o[mode][0] for *_, o in rows), 4),
            "mean_per_class_recall_median": round(statistics.median(o[mode][1] for *_, o in rows), 4),
            "fp_per_ha_out_of_sample": [round(f, 1) for f in fp],
            "over_limit": sum(f > float(rate) for f in fp),
        }
        print(f"\n{mode}: class-aware recall median {statistics.median(o[mode][0] for *_, o in rows):.3f}, mean "
              f"per-class recall median {statistics.median(o[mode][1] for *_, o in rows):.3f}; out-of-sample FP/ha "
              f"{min(fp):.1f}-{max(fp):.1f} (limit {rate}), over the limit in {sum(f > float(rate) for f in fp)} of "
              f"{len(fp)}")
    if a.update_card:
        from rams.detector.bundle import update_card_metrics

        record = {
            "what": (f"split-half cross-validation of the {name} point (<= {rate} FP/ha): thresholds calibrated "
                     f"(scripts/eval_model.py --calibrate --per-class) on half of the calibration scenes (blocks "
                     f"{', '.join(blocks)}), evaluated on the other half, every split both ways "
                     f"(scripts/calibration_cv.py)"),
            "splits": [{"calibrated_on": cal, "evaluated_on": ev,
                        "single": dict(zip(("class_aware_recall", "mean_per_class_recall", "fp_per_ha", "area_ha"),
                                           [round(v, 4) for v in out["single"]], strict=True)),
                        "per_class": dict(zip(("class_aware_recall", "mean_per_class_recall", "fp_per_ha", "area_ha"),
                                              [round(v, 4) for v in out["per class"]], strict=True))}
                       for cal, ev, _, out in rows],  # fmt: skip
            **summary,
        }
        update_card_metrics(resolve_bundle_path(a.model), "operating_point_cross_validation", record)
        print(f"recorded in {resolve_bundle_path(a.model) / 'model.json'} (metrics.operating_point_cross_validation)")


def seed_blocks(first_seed: int, n_blocks: int) -> list[str]:
    """Seed ranges of ``n_blocks`` consecutive blocks of six (one scene per terrain type each)."""
    if n_blocks < 2 or n_blocks % 2:
        raise SystemExit(f"--blocks {n_blocks}: use an even number >= 2 (the blocks are split in halves)")
    return [f"{first_seed + 6 * i}-{first_seed + 6 * i + 5}" for i in range(n_blocks)]


def split_pairs(blocks: list[str]) -> list[tuple[str, str]]:
    """Every split of ``blocks`` into two equal halves, each way round: (calibration seeds, evaluation seeds)."""
    n = len(blocks)
    pairs = []
    for calib in itertools.combinations(range(n), n // 2):
        if 0 not in calib:  # each split once; both directions below
            continue
        test = tuple(i for i in range(n) if i not in calib)
        for cal, ev in ((calib, test), (test, calib)):
            pairs.append((",".join(blocks[i] for i in cal), ",".join(blocks[i] for i in ev)))
    return pairs


def _set_default(bundle: Path, point: str, thresholds: float | dict[str, float]) -> None:
    """Make ``point`` the scratch bundle's default with these thresholds (one for all classes, or per class)."""
    card = json.loads((bundle / "model.json").read_text())
    card["default_operating_point"] = point
    if isinstance(thresholds, dict):
        card["class_thresholds"][point] = thresholds
    else:
        card["operating_points"][point] = thresholds
        card["class_thresholds"][point] = {c: thresholds for c in card["classes"]}
    (bundle / "model.json").write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
