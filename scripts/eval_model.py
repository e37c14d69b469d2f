#!/usr/bin/env python
"""Evaluate a model bundle on synthetic scenes never used in training: ``rams synth`` -> ``rams detect`` -> match.

For each scene (seed, terrain, GSD), ``rams synth`` writes ``ortho.tif`` + ``truth.gpkg`` (kept and reused when
present), ``rams detect`` writes detections down to a low score (so every operating point can be read off), and
detections are matched to the truth items with :func:`rams.evaluate.match_points` in metres, with each class's
default radius: the matching ``rams evaluate`` uses. All scenes are pooled (each keeps its own map frame).

Items shorter than ``--min-px`` pixels *at the model's working GSD* are left out (detections on them count
neither as hits nor as false alarms). Reported, at the card's default operating point: per class, items, found,
recall (Wilson 95 %), false positives and FP/ha; pooled class-aware and any-ordnance recall; the best recall at
``--fp-per-ha``; and the same for items at least half visible. ``--update-card`` writes the result into the
card's ``metrics`` (the weights and their hash are untouched).

``--calibrate precise=2,balanced=10,high_recall=30`` instead sets operating points: for each named false-alarm
rate, the lowest score threshold whose class-aware false positives per hectare on these scenes stay within it
(the threshold that gives the most recall for that budget). The training run sets thresholds on its held-out
*chips* (0.4 ha, cut around targets and crowded with look-alike confusers); whole scenes with a field's density of
targets and clutter, over a larger area, measure false alarms per hectare the way a survey meets them. Calibration
scenes must never be the evaluation scenes (seeds 9001-9006 are refused): calibrate on 8001-8012, then evaluate.

    .venv/bin/python scripts/eval_model.py --model default --seeds 8001-8012 \\
        --calibrate precise=2,balanced=10,high_recall=30 --update-card
    .venv/bin/python scripts/eval_model.py --model default --update-card

``--flights DIR ...`` uses a site's own annotated flights instead of synthetic scenes: each folder holds
``ortho.tif`` and ``truth.gpkg`` (layer ``truth``: points or polygons with a ``class`` column, any CRS, as
annotated in QGIS; ``length_m`` / ``visible_fraction`` optional). Calibrate on some flights and evaluate on
others, on a copy of the bundle (``cp -r models/default models/site``), e.g.

    .venv/bin/python scripts/eval_model.py --model models/site --flights flights/a flights/b \
        --calibrate precise=2,balanced=10,high_recall=30 --per-class --update-card
    .venv/bin/python scripts/eval_model.py --model models/site --flights flights/c --update-card

``--per-class`` sets one threshold per class within each rate (an exact knapsack, :func:`per_class_thresholds`) that
maximises the mean per-class recall; ``--objective maximin`` first raises the lowest class as far as the rate allows
(for a model run alone on ground where every class matters, e.g. a specialist without the default beside it).

Detections are cached beside each scene (``det-MODEL-HASH8.gpkg``, written down to ``--score-floor``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_cache import detections_name, parse_seeds  # noqa: E402  (a sibling script module)

TERRAINS = ("ploughed", "dry_grass", "crop", "gravel", "sand", "mixed")
TEST_SEEDS = (9001, 9002, 9003, 9004, 9005, 9006)  # the evaluation scenes: never used to calibrate


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")


def scene_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    seeds = parse_seeds(args.seeds)
    terrains = args.terrains.split(",")
    gsds = [float(g) for g in args.gsds.split(",")]
    return [
        {"seed": s, "terrain": terrains[i % len(terrains)], "gsd_m": gsds[i % len(gsds)]} for i, s in enumerate(seeds)
    ]


def scenes_words(args: argparse.Namespace, n: int, model_gsd: float | None, calibration: bool = False) -> str:
    """What the scenes were, for the card's record."""
    if args.flights:
        return f"{n} annotated flight(s) ({', '.join(args.flights)})"
    kind = "calibration scenes" if calibration else "scenes never used in training"
    gsd = f" resampled to the model's {model_gsd} m" if model_gsd else ""
    return (f"{n} rams synth {kind} (seeds {args.seeds}; terrains {args.terrains}; scene GSDs {args.gsds} m{gsd}; "
            f"{args.size} m, {args.density:g} targets/ha)")


def _cached_detections_current(det: Path, ortho: Path, model: str, score_floor: float) -> bool:
    """Whether cached detections were made with the tiling ``rams detect`` picks now (tile size and overlap change
    scores near tile borders; the cache name only holds the model and its weights hash)."""
    from rams.detect import DetectConfig, plan_detect
    from rams.layers import read_metadata

    meta = read_metadata(det)
    plan = plan_detect(ortho, DetectConfig(model=model, threshold=score_floor, force=True))
    return (str(meta.get("tile_size_px")), str(meta.get("overlap_px"))) == (str(plan.tile_px), str(plan.overlap_px))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenes-dir", default="runs/eval-scenes")
    ap.add_argument("--flights", nargs="+", default=None, metavar="DIR",
                    help="annotated flights instead of synthetic scenes: folders with ortho.tif and truth.gpkg "
                         "(layer 'truth', points or polygons with a 'class' column; optional length_m, "
                         "visible_fraction), e.g. to calibrate thresholds on a site's own flights")
    ap.add_argument("--seeds", default="9001,9002,9003,9004,9005,9006")
    ap.add_argument("--terrains", default=",".join(TERRAINS))
    ap.add_argument("--gsds", default="0.01,0.0075", help="scene GSDs in metres, used in turn")
    ap.add_argument("--size", default="40x40", help="scene extent in metres (WIDTHxHEIGHT)")
    ap.add_argument("--density", type=float, default=600.0, help="targets per hectare")
    ap.add_argument("--min-px", type=float, default=8.0)
    ap.add_argument("--fp-per-ha", type=float, default=10.0)
    ap.add_argument("--score-floor", type=float, default=0.05)
    ap.add_argument("--rams", default=str(Path(sys.executable).with_name("rams")))
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    ap.add_argument("--update-card", action="store_true", help="record the result in the bundle's card")
    ap.add_argument("--card-key", default=None,
                    help="metrics key of the card to record under (default: held_out_flights with --flights, else "
                         "synthetic_scenes; the detector gate reads the first of those two present; e.g. "
                         "synthetic_scenes_unseen_terrain for a held-out terrain)")
    ap.add_argument("--per-class", action="store_true",
                    help="with --calibrate: also set per-class thresholds within each rate (see per_class_thresholds)")
    ap.add_argument("--objective", choices=("mean", "maximin"), default="mean",
                    help="with --per-class: maximise the mean per-class recall (default), or first the lowest class's "
                         "recall and then the mean (maximin: no class is given up for the others)")
    ap.add_argument("--calibrate", default=None, metavar="NAME=FP_PER_HA,...",
                    help="set these operating points from these scenes (with --update-card: write them to the card)")
    args = ap.parse_args()
    if args.card_key is None:
        args.card_key = "held_out_flights" if args.flights else "synthetic_scenes"
    rates: dict[str, float] = {}
    if args.calibrate:
        for part in args.calibrate.split(","):
            name, _, val = part.partition("=")
            try:
                rates[name.strip()] = float(val)
            except ValueError:
                sys.exit(f"--calibrate {args.calibrate!r}: give NAME=FP_PER_HA pairs, e.g. balanced=10")
        overlap = [] if args.flights else sorted(set(parse_seeds(args.seeds)) & set(TEST_SEEDS))
        if overlap:
            sys.exit(f"--calibrate on evaluation seeds {overlap}: calibrate on other seeds (e.g. 8001-8012)")

    import geopandas as gpd

    from rams.detector.bundle import load_bundle, resolve_bundle_path, update_card_metrics
    from rams.evaluate import default_radius_m, match_points, wilson_interval

    bundle = load_bundle(args.model)
    card = bundle.card
    t0 = card.default_threshold
    # the default operating point as rams detect applies it: per class when the card has per-class thresholds
    t_default: float | dict[str, float] = (
        card.thresholds() if card.default_operating_point in card.class_thresholds else t0
    )
    from rams.classes import CLASS_NAMES, get_class

    if args.flights:
        scenes = [{"flight": str(Path(f))} for f in args.flights]
        folders = [Path(f) for f in args.flights]
        for f in folders:
            missing = [n for n in ("ortho.tif", "truth.gpkg") if not (f / n).exists()]
            if missing:
                sys.exit(f"--flights {f}: missing {', '.join(missing)} (a folder with ortho.tif and truth.gpkg, "
                         "layer 'truth' with a 'class' column)")
    else:
        scenes = scene_specs(args)
        root = Path(args.scenes_dir)
        folders = [root / f"s{sc['seed']}-{sc['terrain']}-{sc['gsd_m']:g}" for sc in scenes]
    px_xy, px_s, px_l, tx_xy, tx_c, tx_len, tx_vis = [], [], [], [], [], [], []
    area_m2 = 0.0
    t_start = time.time()
    for i, (sc, d) in enumerate(zip(scenes, folders, strict=True)):
        if not (d / "truth.gpkg").exists():
            _run([args.rams, "-q", "synth", str(d), "--seed", str(sc["seed"]), "--size", args.size,
                  "--gsd", str(sc["gsd_m"]), "--terrain", sc["terrain"], "--density", str(args.density),
                  "--overwrite"])  # fmt: skip
        det = d / detections_name(card)
        if det.exists() and not _cached_detections_current(det, d / "ortho.tif", args.model, args.score_floor):
            print(f"scene {d.name}: cached detections were made with other tiles; detecting again", flush=True)
            det.unlink()
        if not det.exists():
            _run([args.rams, "-q", "detect", str(d / "ortho.tif"), "--model", str(resolve_bundle_path(args.model)),
                  "--out", str(det), "--threshold", str(args.score_floor), "--force", "--overwrite"])  # fmt: skip
        truth = gpd.read_file(d / "truth.gpkg", layer="truth")
        dets = gpd.read_file(det, layer="detections")
        cov = gpd.read_file(det, layer="coverage")
        unknown = sorted(set(truth["class"].astype(str)) - set(CLASS_NAMES))
        if unknown:
            sys.exit(f"{d / 'truth.gpkg'}: unknown class(es) {unknown}; use rams class names "
                     f"({', '.join(CLASS_NAMES)})")
        # match in metres: the result's CRS when projected (rams synth: UTM), else the truth's UTM zone
        metric = cov.crs if cov.crs is not None and cov.crs.is_projected else truth.estimate_utm_crs()
        truth = truth.to_crs(metric)
        area_m2 += float(cov.to_crs(metric).area.sum())
        off = i * 1e6  # scenes side by side in one frame
        if len(dets):
            dets = dets.to_crs(metric)
            c = dets.geometry.centroid
            px_xy.append(np.stack([c.x.to_numpy() + off, c.y.to_numpy()], axis=1))
            px_s.append(dets["score"].to_numpy(float))
            px_l.append(dets["label"].astype(str).to_numpy())
        c = truth.geometry.centroid
        tx_xy.append(np.stack([c.x.to_numpy() + off, c.y.to_numpy()], axis=1))
        tx_c.append(truth["class"].astype(str).to_numpy())
        # annotated flights may lack these: an item counts at its class's largest size, fully visible
        tx_len.append(truth["length_m"].to_numpy(float) if "length_m" in truth.columns
                      else np.array([get_class(c).max_length_m for c in truth["class"].astype(str)]))  # fmt: skip
        tx_vis.append(truth["visible_fraction"].to_numpy(float) if "visible_fraction" in truth.columns
                      else np.ones(len(truth)))  # fmt: skip
        print(f"scene {d.name}: {len(truth)} items, {len(dets)} detections >= {args.score_floor}", flush=True)

    pxy = np.concatenate(px_xy) if px_xy else np.zeros((0, 2))
    ps = np.concatenate(px_s) if px_s else np.zeros(0)
    pl = np.concatenate(px_l) if px_l else np.zeros(0, dtype=object)
    txy, tc = np.concatenate(tx_xy), np.concatenate(tx_c)
    tlen, tvis = np.concatenate(tx_len), np.concatenate(tx_vis)
    radius = np.array([default_radius_m(c) for c in tc])
    keep = (tlen / card.gsd_m >= args.min_px) & np.isin(tc, list(card.classes))  # other classes: left out
    area_ha = area_m2 / 1e4

    def counts(class_aware: bool, items: np.ndarray, thr: float | dict[str, float], cls: str | None = None
               ) -> dict[str, Any]:  # fmt: skip
        """TP / FP / recall at score >= thr (one threshold, or one per detection class); ``items`` marks the items
        that count (others are left out)."""
        if isinstance(thr, dict):
            pm = ps >= np.array([thr.get(str(label), card.default_threshold) for label in pl], dtype=float)
        else:
            pm = ps >= thr
        if cls is not None:
            pm &= pl == cls
        tm = np.ones(len(tc), bool) if cls is None else tc == cls
        m = match_points(pxy[pm], ps[pm], txy[tm], radius[tm], pred_labels=pl[pm] if class_aware else None,
                         truth_labels=tc[tm] if class_aware else None)  # fmt: skip
        counted = items[tm]
        hit = m.pred_match >= 0
        left_out = hit & ~counted[np.maximum(m.pred_match, 0)] if len(counted) else np.zeros(len(hit), bool)
        tp = int((hit & ~left_out).sum())
        fp = int((~hit).sum())
        n = int(counted.sum())
        ci = wilson_interval(tp, n)
        return {"items": n, "found": tp, "recall": tp / n if n else None,
                "recall_ci95": list(ci) if ci else None, "fp": fp, "fp_per_ha": fp / area_ha}  # fmt: skip

    def best_at_rate(class_aware: bool, items: np.ndarray, cls: str | None = None) -> dict[str, Any]:
        """Best recall with false alarms within ``--fp-per-ha`` over single thresholds (in hindsight); with ``cls``,
        that class's items and detections only (its own false alarms against the whole budget)."""
        best: dict[str, Any] = {"score_threshold": None, **counts(class_aware, items, float("inf"), cls)}
        if best["recall"] is None:  # no items
            return best
        for thr in np.unique(ps if cls is None else ps[pl == cls])[::-1]:
            r = counts(class_aware, items, float(thr), cls)
            if r["fp_per_ha"] > args.fp_per_ha:
                break
            if r["recall"] is not None and r["recall"] > best["recall"]:
                best = {"score_threshold": float(thr), **r}
        return best

    if rates:
        calibrate(args, rates, counts, ps, keep, area_ha, scenes, tc)
        return

    visible = keep & (tvis >= 0.5)
    result: dict[str, Any] = {
        "what": (
            f"{scenes_words(args, len(scenes), card.gsd_m)}; items >= {args.min_px:g} px long at {card.gsd_m} m; "
            "matching rams.evaluate.match_points with default class radii"
        ),
        "area_ha": round(area_ha, 4),
        "default_operating_point": card.default_operating_point,
        "score_threshold": card.default_threshold,
        **({"class_thresholds": t_default} if isinstance(t_default, dict) else {}),
        "per_class": {c: counts(True, keep, t_default, c) for c in card.classes},
        "class_aware": counts(True, keep, t_default),
        "any_ordnance": counts(False, keep, t_default),
        "visible_at_least_half": {
            "class_aware": counts(True, visible, t_default),
            "per_class": {c: counts(True, visible, t_default, c) for c in card.classes},
        },
        f"best_recall_at_{args.fp_per_ha:g}_fp_per_ha": {
            "class_aware": best_at_rate(True, keep),
            "any_ordnance": best_at_rate(False, keep),
            "per_class": {c: best_at_rate(True, keep, c) for c in card.classes},
        },
        "evaluated": time.strftime("%Y-%m-%d"),
        "duration_s": round(time.time() - t_start, 1),
    }
    print(f"\n{result['what']}\narea {area_ha:.3f} ha; default operating point "
          f"{card.default_operating_point} (score >= {t_default})")  # fmt: skip
    print(f"| {'class':<12} | items | found | recall | 95 % CI     | FP  | FP/ha | recall (visible >= 0.5) |")
    print(f"|{'-' * 14}|------:|------:|-------:|-------------|----:|------:|------------------------:|")
    rows = [*card.classes, "class_aware", "any_ordnance"]
    for c in rows:
        r = result["per_class"][c] if c in card.classes else result[c]
        v = (result["visible_at_least_half"]["per_class"].get(c) if c in card.classes
             else result["visible_at_least_half"]["class_aware"] if c == "class_aware" else None)  # fmt: skip
        rec = "-" if r["recall"] is None else f"{r['recall']:.3f}"
        ci = "-" if not r["recall_ci95"] else f"{r['recall_ci95'][0]:.2f}-{r['recall_ci95'][1]:.2f}"
        vis = "-" if not v or v["recall"] is None else f"{v['recall']:.3f} ({v['items']})"
        print(f"| {c:<12} | {r['items']:5d} | {r['found']:5d} | {rec:>6} | {ci:<11} | {r['fp']:3d} | "
              f"{r['fp_per_ha']:5.1f} | {vis:>23} |")  # fmt: skip
    b = result[f"best_recall_at_{args.fp_per_ha:g}_fp_per_ha"]
    for k in ("class_aware", "any_ordnance"):
        rb, tb = b[k].get("recall"), b[k].get("score_threshold")
        print(f"best {k} recall at <= {args.fp_per_ha:g} FP/ha: {rb} (threshold {tb})")
    print(f"per class, best recall with the class's own false alarms <= {args.fp_per_ha:g} FP/ha (hindsight): "
          + ", ".join(f"{c} {r['recall']:.3f}" for c, r in b["per_class"].items() if r["items"]))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.update_card:
        update_card_metrics(resolve_bundle_path(args.model), args.card_key, result)
        print(f"recorded in {resolve_bundle_path(args.model) / 'model.json'} (metrics.{args.card_key})")


def calibrate(
    args: argparse.Namespace, rates: dict[str, float], counts: Any, ps: np.ndarray, keep: np.ndarray,
    area_ha: float, scenes: list[dict[str, Any]], truth_classes: np.ndarray,
) -> None:  # fmt: skip
    """Print (and with ``--update-card`` write) each rate's operating point: the lowest single threshold within
    the false-alarm rate and, with ``--per-class``, per-class thresholds within the same rate."""
    from rams.detector.bundle import read_card, resolve_bundle_path, update_card_metrics

    folder = resolve_bundle_path(args.model)
    card = read_card(folder)
    scores = np.unique(ps)[::-1]
    points: dict[str, dict[str, Any]] = {}
    cap: dict[str, float] | None = None  # a looser point never drops a detection that a stricter one keeps
    for name, rate in sorted(rates.items(), key=lambda kv: kv[1]):
        best: dict[str, Any] | None = None
        for thr in scores:  # falling thresholds: false positives only grow
            r = counts(True, keep, float(thr))
            if r["fp_per_ha"] > rate:
                break
            best = {"score_threshold": round(float(thr), 6), "fp_per_ha_limit": rate, **r}
        if best is None:
            sys.exit(f"no threshold keeps {name} within {rate} FP/ha on these scenes; use more scenes")
        if args.per_class:
            per_class = per_class_thresholds(card.classes, counts, keep, truth_classes, rate * area_ha,
                                             best["score_threshold"], cap, args.objective)  # fmt: skip
            cap = per_class
            best["class_thresholds"] = per_class
            best["with_class_thresholds"] = {
                **counts(True, keep, per_class),
                "per_class": {c: counts(True, keep, per_class, c) for c in card.classes},
            }
        points[name] = best
    ops = {k: v["score_threshold"] for k, v in points.items()}
    class_ops = {k: v["class_thresholds"] for k, v in points.items() if "class_thresholds" in v}
    how = (
        "lowest score threshold whose class-aware false positives per hectare stay within each rate"
        if not args.per_class else
        "per rate, the lowest single score threshold within it and per-class thresholds (0.01 steps, the lowest of "
        "equal effect) that maximise " + (
            "the mean per-class recall" if args.objective == "mean" else
            "first the lowest per-class recall, then the mean per-class recall (maximin)"
        ) + " with the class-aware false positives of all classes "
        "together within it (classes without counted items keep the single threshold)"
    )  # fmt: skip
    record = {
        "what": (
            f"operating points set on {scenes_words(args, len(scenes), None, calibration=True)} ({area_ha:.3f} ha): "
            f"{how}; items >= {args.min_px:g} px; replaces the thresholds set on the training run's held-out chips"
        ),
        "previous_operating_points": dict(card.operating_points),
        "previous_class_thresholds": dict(card.class_thresholds),
        "points": points,
        "calibrated": time.strftime("%Y-%m-%d"),
    }
    notes = thin_budget_notes(rates, area_ha)
    if notes:
        record["notes"] = notes
    print(f"calibration on {area_ha:.3f} ha ({len(scenes)} scenes):")
    print("| operating point | FP/ha limit | threshold (was) | FP/ha | recall (class-aware) "
          "| per class: FP/ha | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, p in points.items():
        pc = p.get("with_class_thresholds")
        extra = f"{pc['fp_per_ha']:.1f} | {pc['recall']:.3f}" if pc else "- | -"
        print(f"| {name} | {p['fp_per_ha_limit']:g} | {p['score_threshold']:.4f} ({card.operating_points.get(name)}) "
              f"| {p['fp_per_ha']:.1f} | {p['recall']:.3f} | {extra} |")  # fmt: skip
    for name, per in class_ops.items():
        print(f"{name} per class: " + ", ".join(f"{c} {t:.2f}" for c, t in per.items()))
    for line in notes:
        print(f"warning: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))
    if args.update_card:
        # without --per-class, the re-set points drop any per-class thresholds (they belonged to the old ones)
        update_card_metrics(folder, "operating_point_calibration", record, operating_points=ops,
                            class_thresholds=class_ops if args.per_class else {k: {} for k in ops})  # fmt: skip
        print(f"operating points {ops} written to {folder / 'model.json'}")


#: A threshold set where the budget allows fewer false alarms than this is noisy: a count of n false alarms varies
#: by about +-2 sqrt(n) from one set of scenes to the next (Poisson), i.e. by +-60 % at n = 10.
MIN_FALSE_ALARMS = 10


def thin_budget_notes(rates: dict[str, float], area_ha: float, min_false_alarms: int = MIN_FALSE_ALARMS) -> list[str]:
    """One line per operating point whose false-alarm budget on ``area_ha`` is fewer than ``min_false_alarms``
    false alarms: its threshold rests on a handful of events (measured: a PFM-1 threshold of 0.77 set on 0.5 ha
    of scenes against 0.64 that works on 1.5 ha, docs/detector.md "More pixels per small item")."""
    out = []
    for name, rate in sorted(rates.items(), key=lambda kv: kv[1]):
        allowed = rate * area_ha
        if allowed < min_false_alarms:
            out.append(f"{name} ({rate:g} FP/ha) rests on {allowed:.1f} false alarms in {area_ha:.2f} ha: its "
                       f"thresholds are noisy; calibrate on at least {min_false_alarms / rate:.1f} ha of scenes or "
                       f"flights")  # fmt: skip
    return out


def per_class_thresholds(
    classes: list[str], counts: Any, keep: np.ndarray, truth_classes: np.ndarray, fp_budget: float, single: float,
    cap: dict[str, float] | None = None, objective: str = "mean",
) -> dict[str, float]:  # fmt: skip
    """Per-class thresholds maximising the mean per-class recall with at most ``fp_budget`` false positives.

    ``objective="maximin"``: first the highest recall that *every* class reaches within the budget, then the
    highest mean among the settings that keep it (the mean alone may buy a few points of mean recall by dropping
    one class to almost nothing, which a survey of that class's ground pays for).

    Each class's (true positives, false positives) is read at thresholds 0.05-0.95 in 0.01 steps (class-aware
    matching: a detection labelled c counts only against items of class c); for equal counts the lowest
    threshold is kept (the most sensitive setting at the same measured cost). An exact knapsack over the
    classes then picks one threshold per class. Classes without counted items keep ``single`` and their false
    positives at it are charged to the budget first. ``cap`` (the next stricter operating point's thresholds)
    bounds each class's threshold from above, so a looser point keeps every detection a stricter one keeps.
    """
    grid = [round(0.05 + 0.01 * i, 2) for i in range(91)]
    budget = int(np.floor(fp_budget + 1e-9))
    out: dict[str, float] = {}
    options: dict[str, list[tuple[float, int, float]]] = {}  # class -> [(recall, fp, threshold)]
    for c in classes:
        n = int((keep & (truth_classes == c)).sum())
        top = cap[c] if cap else 1.0
        if n == 0:  # nothing to find here: the single threshold (or the stricter point's, if lower)
            top = min(single, top)
            out[c] = top
            budget -= int(counts(True, keep, top, c)["fp"])
            continue
        seen: dict[tuple[int, int], float] = {}
        for t in grid:
            if t > top + 1e-9:
                break
            r = counts(True, keep, t, c)
            seen.setdefault((int(r["found"]), int(r["fp"])), t)
        options[c] = [(found / n, fp, t) for (found, fp), t in seen.items()]
    if budget < 0:
        budget = 0
    if objective == "maximin":
        # the highest floor every class reaches within the budget (the cheapest option of each class at or above
        # it must fit together), then the mean-maximising choice among the options at or above that floor
        floors = sorted({rec for opts in options.values() for rec, _, _ in opts}, reverse=True)
        for floor in floors:
            cheapest = [min((fp for rec, fp, _ in opts if rec >= floor - 1e-12), default=None)
                        for opts in options.values()]
            if all(v is not None for v in cheapest) and sum(v for v in cheapest if v is not None) <= budget:
                options = {c: [o for o in opts if o[0] >= floor - 1e-12] for c, opts in options.items()}
                break
    elif objective != "mean":
        raise ValueError(f"objective {objective!r}: use 'mean' or 'maximin'")
    best: dict[int, tuple[float, dict[str, float]]] = {0: (0.0, {})}
    for c, opts in options.items():
        nxt: dict[int, tuple[float, dict[str, float]]] = {}
        for used, (value, chosen) in best.items():
            for rec, fp, t in opts:
                u = used + fp
                if u > budget:
                    continue
                v = value + rec
                if u not in nxt or v > nxt[u][0] + 1e-12:
                    nxt[u] = (v, {**chosen, c: t})
        if not nxt:
            sys.exit(f"no threshold of class {c} fits the false-alarm budget; use more scenes")
        best = nxt
    _, (value, chosen) = max(best.items(), key=lambda kv: (round(kv[1][0], 9), -kv[0]))  # most recall, fewest FP
    out.update(chosen)
    return {c: out[c] for c in classes}


if __name__ == "__main__":
    main()
