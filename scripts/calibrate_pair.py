#!/usr/bin/env python
"""Thresholds for two models run together (``rams detect --model A --model B``), and the recall of the pair.

Two models over one mosaic report the union of their detections, so their false alarms add up: the default and the
0.5 cm specialist, each at its own ``balanced`` point (<= 10 FP/ha alone), gave ~32 false alarms per hectare together
(``docs/detector.md``). This script sets, per operating point, one threshold per class **for each model** so that the
union stays within the point's false-alarm rate, and measures the union's recall at them. ``rams detect`` and
``rams batch`` use them whenever the two models run together (``companions`` in the card of ``--model``; only for
``--beside`` with exactly these weights: :func:`rams.combine.find_joint`).

    # detections of each model on the scenes first (renders them, caches det-MODEL-HASH8.gpkg beside each)
    python scripts/eval_model.py --model default --scenes-dir runs/mixed05 --seeds 8301-8318 --gsds 0.005 --size 30x30
    python scripts/eval_model.py --model scatterable-05cm --scenes-dir runs/mixed05 --seeds 8301-8318 --gsds 0.005 \\
        --size 30x30
    # thresholds, set on calibration scenes
    python scripts/calibrate_pair.py --model scatterable-05cm --beside default --scenes-dir runs/mixed05 \\
        --seeds 8301-8318 --calibrate precise=2,balanced=10,high_recall=30 --update-card
    # the pair's recall at its default point, on other scenes (what the detector gate reads)
    python scripts/calibrate_pair.py --model scatterable-05cm --beside default --scenes-dir runs/mixed05 \\
        --seeds 9301-9312 --update-card

How the union is counted, per class: the detections of each model at or above its threshold; a detection of the
second model whose centre lies within 3 cm of, or inside the footprint of, a kept same-class detection of the first
is the same object (as :mod:`rams.combine` merges them); the rest are matched to the items with
:func:`rams.evaluate.match_points` (class-aware, default radii), as ``scripts/eval_model.py`` does. Items count when
they span at least ``--min-px`` pixels at the finer model's GSD. Per operating point an exact knapsack picks one
(threshold of A, threshold of B) per class, maximising the mean per-class recall with the class-aware false positives
of all classes together within the rate (a looser point never has a stricter threshold than a tighter one, for either
model). Thresholds in 0.02 steps where both models detect a class, 0.01 where one does. The measured table also
gives, per class, the items found **under any label** (class-agnostic one-to-one matching of all kept detections, as
the ``any_ordnance`` metric of :mod:`rams.evaluate`): an item reported under another class's name is a class-aware
miss, but still a place the clearance team is sent to.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_cache import parse_seeds, scene_detections  # noqa: E402  (a sibling script module)

#: Same-class detections of the two models closer than this (metres) are one object (rams.merge.MERGE_DISTANCE_M).
MERGE_M = 0.03
MIN_FALSE_ALARMS = 10


class Pooled:
    """Detections of both models and the truth items of all scenes, side by side in one metric frame."""

    def __init__(self, names: list[str], xy: list[np.ndarray], score: list[np.ndarray], label: list[np.ndarray],
                 half: list[np.ndarray], txy: np.ndarray, tcls: np.ndarray, counted: np.ndarray, radius: np.ndarray,
                 area_ha: float) -> None:  # fmt: skip
        self.names, self.xy, self.score, self.label, self.half = names, xy, score, label, half
        self.txy, self.tcls, self.counted, self.radius, self.area_ha = txy, tcls, counted, radius, area_ha
        self.partner = self._partners()
        self._by_class: dict[str, Any] = {}
        self.max_fp: int | None = None
        """Pairs whose kept detections outnumber the items by more than this are not matched (they cannot fit
        any budget): :meth:`counts` returns ``fp = max_fp + 1`` for them."""

    def _partners(self) -> np.ndarray:
        """For each detection of the second model, the highest score of a first-model detection of the same class
        that is the same object (within ``MERGE_M``, or either centre inside the other's footprint); -1: none."""
        from scipy.spatial import cKDTree

        out = np.full(len(self.score[1]), -1.0)
        if not len(self.score[0]) or not len(self.score[1]):
            return out
        tree = cKDTree(self.xy[0])
        reach = float(max(self.half[0].max(), self.half[1].max(), MERGE_M))
        for j, cands in enumerate(tree.query_ball_point(self.xy[1], r=reach)):
            for i in cands:
                if self.label[0][i] != self.label[1][j]:
                    continue
                d = np.abs(self.xy[0][i] - self.xy[1][j])
                if np.hypot(*d) < MERGE_M or (d <= self.half[0][i]).all() or (d <= self.half[1][j]).all():
                    out[j] = max(out[j], float(self.score[0][i]))
        return out

    def kept(self, cls: str, t: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Centres and scores of the union's detections labelled ``cls`` at thresholds ``t`` (a second-model
        detection that a kept first-model one of the same class already reports is dropped, as rams.merge does)."""
        if cls not in self._by_class:
            a, b, tm = self.label[0] == cls, self.label[1] == cls, self.tcls == cls
            self._by_class[cls] = (self.xy[0][a], self.score[0][a], self.xy[1][b], self.score[1][b],
                                   self.partner[b], self.txy[tm], self.radius[tm], self.counted[tm])
        xa, sa, xb, sb, pb = self._by_class[cls][:5]
        ka = sa >= t[0]
        kb = (sb >= t[1]) & ~(pb >= t[0])
        return np.concatenate([xa[ka], xb[kb]]), np.concatenate([sa[ka], sb[kb]])

    def found_any_label(self, t: dict[str, tuple[float, float]]) -> dict[str, int]:
        """Per truth class, counted items that some kept detection of any label finds (class-agnostic one-to-one
        matching, as the any_ordnance metric of rams.evaluate): a 9N235 reported as MON is still a found hazard."""
        from rams.evaluate import match_points

        parts = [self.kept(c, tc) for c, tc in t.items()]
        xy = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 2))
        s = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
        m = match_points(xy, s, self.txy, self.radius)
        hit = np.zeros(len(self.txy), bool)
        hit[m.pred_match[m.pred_match >= 0]] = True
        return {c: int((hit & self.counted & (self.tcls == c)).sum()) for c in t}

    def counts(self, cls: str, t: tuple[float, float]) -> tuple[int, int, int]:
        """(counted items of ``cls``, found, false positives) of the union at thresholds ``t`` (one per model; 2.0:
        the model does not detect this class)."""
        from rams.evaluate import match_points

        xy, s = self.kept(cls, t)
        _, _, _, _, _, txy, radius, counted = self._by_class[cls]
        if self.max_fp is not None and len(s) - len(txy) > self.max_fp:
            return int(counted.sum()), 0, self.max_fp + 1
        m = match_points(xy, s, txy, radius)
        hit = m.pred_match >= 0
        left_out = hit & ~counted[np.maximum(m.pred_match, 0)] if len(counted) else np.zeros(len(hit), bool)
        return int(counted.sum()), int((hit & ~left_out).sum()), int((~hit).sum())


def load_pooled(root: Path, seeds: list[int], cards: list[Any], models: list[str], min_px: float) -> Pooled:
    import geopandas as gpd

    from rams.classes import get_class
    from rams.evaluate import default_radius_m

    per_model = []
    for card, model in zip(cards, models, strict=True):
        found = scene_detections(root, seeds, card, model)
        if isinstance(found, str):
            sys.exit(f"error: {found}")
        per_model.append(found)
    xy: list[list[np.ndarray]] = [[], []]
    score: list[list[np.ndarray]] = [[], []]
    label: list[list[np.ndarray]] = [[], []]
    half: list[list[np.ndarray]] = [[], []]
    txy, tcls, tlen = [], [], []
    area_m2 = 0.0
    for i in range(len(seeds)):
        folder = per_model[0][i][0]
        truth = gpd.read_file(folder / "truth.gpkg", layer="truth")
        metric = truth.estimate_utm_crs() if not (truth.crs and truth.crs.is_projected) else truth.crs
        truth = truth.to_crs(metric)
        off = i * 1e6  # scenes side by side in one frame
        areas = []
        for k in range(2):
            det_path = per_model[k][i][1]
            dets = gpd.read_file(det_path, layer="detections").to_crs(metric)
            areas.append(float(gpd.read_file(det_path, layer="coverage").to_crs(metric).area.sum()))
            c = dets.geometry.centroid
            xy[k].append(np.stack([c.x.to_numpy() + off, c.y.to_numpy()], axis=1) if len(dets) else np.zeros((0, 2)))
            score[k].append(dets["score"].to_numpy(float))
            label[k].append(dets["label"].astype(str).to_numpy())
            b = dets.geometry.bounds.to_numpy() if len(dets) else np.zeros((0, 4))
            half[k].append(np.stack([(b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2], axis=1))
        area_m2 += min(areas)  # the union's ground: where both looked
        c = truth.geometry.centroid
        txy.append(np.stack([c.x.to_numpy() + off, c.y.to_numpy()], axis=1))
        tcls.append(truth["class"].astype(str).to_numpy())
        tlen.append(truth["length_m"].to_numpy(float) if "length_m" in truth.columns
                    else np.array([get_class(x).max_length_m for x in truth["class"].astype(str)]))  # fmt: skip
        print(f"scene {folder.name}: {len(truth)} items; detections {len(score[0][-1])} / {len(score[1][-1])}",
              flush=True)
    classes = set(cards[0].classes) | set(cards[1].classes)
    tc = np.concatenate(tcls)
    gsd = min(c.gsd_m for c in cards)
    counted = (np.concatenate(tlen) / gsd >= min_px) & np.isin(tc, sorted(classes))
    return Pooled(
        [c.name for c in cards], [np.concatenate(v) for v in xy], [np.concatenate(v) for v in score],
        [np.concatenate(v) for v in label], [np.concatenate(v) if v else np.zeros((0, 2)) for v in half],
        np.concatenate(txy), tc, counted, np.array([default_radius_m(x) for x in tc]), area_m2 / 1e4,
    )


def scene_recipe(root: Path, seeds: list[int]) -> str:
    """'rams synth scenes (30 x 30 m at 0.5 cm, mixed targets, 600 per ha; terrains ...)' from the scenes'
    ``scene.json`` (annotated flights: their folder)."""
    configs = []
    for seed in seeds:
        folder = sorted(root.glob(f"s{seed}-*"))[0]
        meta = folder / "scene.json"
        if not meta.exists():
            return f"flights in {root}"
        configs.append(json.loads(meta.read_text())["config"])
    c = configs[0]
    terrains = ",".join(dict.fromkeys(str(x["terrain"]) for x in configs))
    return (f"rams synth scenes ({c['width_m']:g} x {c['height_m']:g} m at {c['gsd_m'] * 100:g} cm, {c['targets']} "
            f"targets, {c['target_density_per_ha']:g} per ha; terrains {terrains}) in {root}")


def _grid(step: float) -> list[float]:
    n = int(round(0.90 / step))
    return [round(0.05 + step * i, 2) for i in range(n + 1)]


def class_options(pool: Pooled, cls: str, has: tuple[bool, bool], cap: tuple[float, float] | None
                  ) -> tuple[int, list[tuple[int, int, tuple[float, float]]]]:  # fmt: skip
    """(counted items, [(found, fp, (threshold A, threshold B))]): for each (found, fp) reachable the lowest
    thresholds (sum, then A's), keeping only options not beaten by another with as few false positives."""
    step = 0.02 if all(has) else 0.01
    grids = [(_grid(step) if h else [2.0]) for h in has]
    seen: dict[tuple[int, int], tuple[float, float]] = {}
    n = 0
    for ta in grids[0]:
        if cap and has[0] and ta > cap[0] + 1e-9:
            break
        for tb in grids[1]:
            if cap and has[1] and tb > cap[1] + 1e-9:
                break
            n, found, fp = pool.counts(cls, (ta, tb))
            key = (found, fp)
            if key not in seen or (ta + tb, ta) < (sum(seen[key]), seen[key][0]):
                seen[key] = (ta, tb)
    opts = sorted(((f, fp, t) for (f, fp), t in seen.items()), key=lambda o: (o[1], -o[0]))
    front: list[tuple[int, int, tuple[float, float]]] = []
    for o in opts:  # fewer false positives first: keep an option only if it finds more than every cheaper one
        if not front or o[0] > front[-1][0]:
            front.append(o)
    return n, front


def joint_thresholds(pool: Pooled, classes: list[str], has: dict[str, tuple[bool, bool]], fp_budget: float,
                     fixed: dict[str, tuple[float, float]], cap: dict[str, tuple[float, float]] | None,
                     floors: dict[str, int] | None = None) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Per class (threshold A, threshold B) maximising the mean per-class recall of the union with at most
    ``fp_budget`` class-aware false positives in all. Classes without counted items keep ``fixed`` (their false
    positives are charged first). ``floors``: per class, the fewest items the union must find (e.g. what each model
    finds at its own operating point), so that no class pays for another; exits where they cannot all be met."""
    budget = int(np.floor(fp_budget + 1e-9))
    out: dict[str, tuple[float, float]] = {}
    options: dict[str, list[tuple[float, int, tuple[float, float]]]] = {}
    for c in classes:
        n, front = class_options(pool, c, has[c], cap.get(c) if cap else None)
        if n == 0:
            t = fixed[c] if not cap else (min(fixed[c][0], cap[c][0]), min(fixed[c][1], cap[c][1]))
            out[c] = t
            budget -= pool.counts(c, t)[2]
            continue
        if floors and c in floors:
            front = [o for o in front if o[0] >= floors[c]]
            if not front:
                sys.exit(f"error: class {c} cannot find its floor of {floors[c]} items within the thresholds allowed")
        options[c] = [(found / n, fp, t) for found, fp, t in front]
    best: dict[int, tuple[float, dict[str, tuple[float, float]]]] = {0: (0.0, {})}
    for c, opts in options.items():
        nxt: dict[int, tuple[float, dict[str, tuple[float, float]]]] = {}
        for used, (value, chosen) in best.items():
            for rec, fp, t in opts:
                u = used + fp
                if u > max(budget, 0):
                    continue
                v = value + rec
                if u not in nxt or v > nxt[u][0] + 1e-12:
                    nxt[u] = (v, {**chosen, c: t})
        if not nxt:
            sys.exit(f"error: no thresholds of class {c} fit the false-alarm budget"
                     + (" with every class at its floor" if floors else "") + "; use more scenes or a looser rate")
        best = nxt
    _, (_, chosen) = max(best.items(), key=lambda kv: (round(kv[1][0], 9), -kv[0]))
    out.update(chosen)
    return {c: out[c] for c in classes}


def union_counts(pool: Pooled, classes: list[str], t: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Per class and in all (class-aware): items, found, recall with its Wilson 95 % interval, FP, FP/ha."""
    from rams.evaluate import wilson_interval

    def row(n: int, found: int, fp: int) -> dict[str, Any]:
        ci = wilson_interval(found, n)
        return {"items": n, "found": found, "recall": found / n if n else None,
                "recall_ci95": list(ci) if ci else None, "fp": fp, "fp_per_ha": fp / pool.area_ha}  # fmt: skip

    per = {c: row(*pool.counts(c, t[c])) for c in classes}
    total = row(sum(r["items"] for r in per.values()), sum(r["found"] for r in per.values()),
                sum(r["fp"] for r in per.values()))
    anyl = pool.found_any_label({c: t[c] for c in classes})
    for c, r in per.items():  # found under any label: still flagged for the clearance team, under a wrong name
        r["found_any_label"] = anyl[c]
        r["recall_any_label"] = anyl[c] / r["items"] if r["items"] else None
    total["found_any_label"] = sum(anyl.values())
    total["recall_any_label"] = total["found_any_label"] / total["items"] if total["items"] else None
    return {"per_class": per, "class_aware": total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the bundle whose card holds the pair's record")
    ap.add_argument("--beside", required=True, help="the other model of the pair (e.g. default)")
    ap.add_argument("--scenes-dir", required=True)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--min-px", type=float, default=8.0)
    ap.add_argument("--calibrate", default=None, metavar="NAME=FP_PER_HA,...",
                    help="set these operating points (names of --model's card) on these scenes")
    ap.add_argument("--operating-point", default=None, help="without --calibrate: the point to evaluate "
                    "(default: the pair's default point); recorded as synthetic_scenes (what the detector gate "
                    "reads) for the pair's default point, synthetic_scenes_at_POINT for another")  # fmt: skip
    ap.add_argument("--floor", action="append", default=[], metavar="POINT=OWN_POINT",
                    help="with --calibrate: at the pair's POINT, every class must find at least what the two models "
                         "find each at its own OWN_POINT on these scenes (e.g. high_recall=balanced: no class pays "
                         "for another)")
    ap.add_argument("--pair-default", default=None, metavar="POINT",
                    help="with --calibrate: the point the pair runs at when none is asked for (default: --model's "
                         "default point)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--update-card", action="store_true")
    args = ap.parse_args(argv)

    from rams.detector.bundle import read_card, resolve_bundle_path, update_card_companion

    folder = resolve_bundle_path(args.model)
    cards = [read_card(resolve_bundle_path(args.beside)), read_card(folder)]  # A = beside, B = --model
    holder, other = cards[1], cards[0]
    if holder.name == other.name:
        sys.exit("error: --model and --beside are the same model")
    comp = holder.companions.get(other.name)
    if not args.calibrate:  # measuring needs thresholds set beside exactly these weights: say so before any work
        if comp is None or comp.weights_sha256 != other.weights_sha256:
            sys.exit(f"error: {holder.name}'s card has no thresholds set beside these weights of {other.name}; run "
                     "with --calibrate on calibration scenes first")
        pair_default = comp.default_operating_point or holder.default_operating_point
        point = args.operating_point or pair_default
        if point not in comp.thresholds:
            sys.exit(f"error: no thresholds beside {other.name} for {point!r} (only {sorted(comp.thresholds)})")
    seeds = parse_seeds(args.seeds)
    pool = load_pooled(Path(args.scenes_dir), seeds, cards, [args.beside, args.model], args.min_px)
    classes = [c for c in holder.classes] + [c for c in other.classes if c not in holder.classes]
    has = {c: (c in other.classes, c in holder.classes) for c in classes}
    where = (f"{len(seeds)} {scene_recipe(Path(args.scenes_dir), seeds)} (seeds {args.seeds}), {pool.area_ha:.3f} ha "
             f"where both models looked; items >= {args.min_px:g} px at {min(c.gsd_m for c in cards)} m")  # fmt: skip

    def as_models(t: dict[str, tuple[float, float]]) -> dict[str, dict[str, float]]:
        return {other.name: {c: v[0] for c, v in t.items() if has[c][0]},
                holder.name: {c: v[1] for c, v in t.items() if has[c][1]}}

    def own_point(point: str) -> dict[str, tuple[float, float]]:
        ta = other.thresholds(point if point in other.operating_points else None)
        tb = holder.thresholds(point if point in holder.operating_points else None)
        return {c: (ta.get(c, 2.0), tb.get(c, 2.0)) for c in classes}

    t0 = time.time()
    if args.calibrate:
        rates = {k.strip(): float(v) for k, _, v in (p.partition("=") for p in args.calibrate.split(","))}
        unknown = sorted(set(rates) - set(holder.operating_points))
        if unknown:
            sys.exit(f"error: {unknown} are not operating points of {holder.name} ({sorted(holder.operating_points)})")
        points: dict[str, Any] = {}
        cap: dict[str, tuple[float, float]] | None = None
        pool.max_fp = int(np.floor(max(rates.values()) * pool.area_ha))
        floor_of = dict(f.split("=", 1) for f in args.floor)
        unknown = sorted(set(floor_of) - set(rates))
        if unknown:
            sys.exit(f"error: --floor for {unknown}, which are not calibrated here ({sorted(rates)})")
        for name, rate in sorted(rates.items(), key=lambda kv: kv[1]):
            floors = None
            if name in floor_of:
                own = union_counts(pool, classes, own_point(floor_of[name]))["per_class"]
                floors = {c: int(r["found"]) for c, r in own.items() if r["items"]}
            t = joint_thresholds(pool, classes, has, rate * pool.area_ha, own_point(name), cap, floors)
            cap = t
            pool.max_fp = None  # exact counts for the record
            points[name] = {"fp_per_ha_limit": rate, "thresholds": as_models(t), **union_counts(pool, classes, t),
                            **({"floors": {"each_at_its_own": floor_of[name], "found": floors}} if floors else {}),
                            "each_at_its_own_point": union_counts(pool, classes, own_point(name))["class_aware"]}
            u, own = points[name]["class_aware"], points[name]["each_at_its_own_point"]
            pool.max_fp = int(np.floor(max(rates.values()) * pool.area_ha))
            print(f"{name} (<= {rate:g} FP/ha): together {u['recall']:.3f} at {u['fp_per_ha']:.1f} FP/ha; each at "
                  f"its own point {own['recall']:.3f} at {own['fp_per_ha']:.1f} FP/ha")  # fmt: skip
            for m, per in points[name]["thresholds"].items():
                print(f"  {m}: " + ", ".join(f"{c} {v:.2f}" for c, v in per.items()))
        record = {
            "what": f"thresholds of {other.name} and {holder.name} set together on {where}: per operating point one "
                    "threshold per class and model, maximising the mean per-class recall of the union with the "
                    "class-aware false positives of all classes within the rate (scripts/calibrate_pair.py)"
                    + "".join(f"; at {p} every class finds at least what the two models find each at its own {o}"
                              for p, o in floor_of.items()),
            "points": points,
            "notes": [f"{n} ({r:g} FP/ha) rests on {r * pool.area_ha:.1f} false alarms: noisy thresholds"
                      for n, r in rates.items() if r * pool.area_ha < MIN_FALSE_ALARMS],
            "calibrated": time.strftime("%Y-%m-%d"),
            "duration_s": round(time.time() - t0, 1),
        }
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=2))
        if args.update_card:
            if args.pair_default is not None and args.pair_default not in points:
                sys.exit(f"error: --pair-default {args.pair_default!r} is not one of the calibrated points")
            update_card_companion(folder, other.name, other.weights_sha256,
                                  thresholds={n: p["thresholds"] for n, p in points.items()},
                                  metrics={"operating_point_calibration": record},
                                  default_operating_point=args.pair_default)  # fmt: skip
            print(f"thresholds beside {other.name} written to {folder / 'model.json'}")
        return 0

    assert comp is not None
    set_t = comp.thresholds[point]
    t = {c: (set_t[other.name].get(c, 2.0), set_t[holder.name].get(c, 2.0)) for c in classes}
    together = union_counts(pool, classes, t)
    alone = union_counts(pool, classes, own_point(point))
    lowest = {c: min(v for v in t[c] if v <= 1.0) for c in classes}
    result = {
        "what": f"{other.name} and {holder.name} together at their {point!r} thresholds set together, on {where} "
                "never used to set them; the union of both models' detections (scripts/calibrate_pair.py)",
        "area_ha": round(pool.area_ha, 4),
        "operating_point": point,
        "model_thresholds": {m: dict(v) for m, v in set_t.items()},
        "class_thresholds": lowest,
        "score_threshold": min(lowest.values()),
        **together,
        "each_at_its_own_point": alone,
        "evaluated": time.strftime("%Y-%m-%d"),
        "duration_s": round(time.time() - t0, 1),
    }
    print(f"\n{result['what']}")
    print("| class | items | together: found | recall | 95 % CI | FP/ha | under any label | each at its own point: "
          "recall | FP/ha |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for c in [*classes, "class_aware"]:
        r = together["per_class"][c] if c in classes else together[c]
        a = alone["per_class"][c] if c in classes else alone[c]
        rec = "-" if r["recall"] is None else f"{r['recall']:.3f}"
        ci = "-" if not r["recall_ci95"] else f"{r['recall_ci95'][0]:.2f}-{r['recall_ci95'][1]:.2f}"
        arec = "-" if a["recall"] is None else f"{a['recall']:.3f}"
        anyl = "-" if r["recall_any_label"] is None else f"{r['found_any_label']} ({r['recall_any_label']:.3f})"
        print(f"| {c} | {r['items']} | {r['found']} | {rec} | {ci} | {r['fp_per_ha']:.1f} | {anyl} | {arec} | "
              f"{a['fp_per_ha']:.1f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.update_card:
        key = "synthetic_scenes" if point == pair_default else f"synthetic_scenes_at_{point}"
        update_card_companion(folder, other.name, other.weights_sha256, metrics={key: result})
        print(f"recorded in {folder / 'model.json'} (companions.{other.name}.metrics.{key})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
