"""Benchmark rams.evaluate: time match_points and evaluate() on synthetic scenes of growing size.

Items are pmn-sized discs scattered over a square field at 200 items/ha (a dense scatterable-mine field);
detections are 80 % of the items, jittered by 3 cm (sd), plus uniform false alarms at ``--fp-per-ha``.
The first row includes importing scipy. Prints a table; asserts nothing.

    .venv/bin/python scripts/bench_evaluate.py [--sizes 1000,10000,50000]
"""

from __future__ import annotations

import argparse
import time

import geopandas as gpd
import numpy as np
import shapely

from rams.evaluate import evaluate, match_points


def scene(n_items: int, fp_per_ha: float, seed: int = 0) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, float]:
    rng = np.random.default_rng(seed)
    area_ha = n_items / 200.0  # 200 items per ha: a dense scatterable field
    side = float(np.sqrt(area_ha * 1e4))
    x0, y0 = 500000.0, 4400000.0
    txy = rng.uniform(0, side, (n_items, 2)) + (x0, y0)
    truth = gpd.GeoDataFrame(
        {"class": "pmn", "terrain": rng.choice(["grass", "gravel", "sand"], n_items),
         "visible_fraction": rng.uniform(0, 1, n_items)},
        geometry=shapely.buffer(shapely.points(txy), 0.06, quad_segs=4),
        crs="EPSG:32638",
    )
    hit = rng.random(n_items) < 0.8
    dxy = txy[hit] + rng.normal(0, 0.03, (int(hit.sum()), 2))
    n_fp = int(fp_per_ha * area_ha)
    fxy = rng.uniform(0, side, (n_fp, 2)) + (x0, y0)
    pxy = np.concatenate([dxy, fxy])
    scores = np.concatenate([rng.beta(5, 2, len(dxy)), rng.beta(2, 5, n_fp)])
    pred = gpd.GeoDataFrame(
        {"label": "pmn", "score": scores},
        geometry=shapely.buffer(shapely.points(pxy), 0.05, quad_segs=2),
        crs="EPSG:32638",
    )
    return pred, truth, area_ha * 1e4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--fp-per-ha", type=float, default=200.0)
    args = ap.parse_args()
    print(f"{'items':>7} {'dets':>7} {'match_points s':>15} {'evaluate s':>11} {'recall':>7} {'AP':>6} "
          f"{'FP/ha':>7}")
    for n in (int(v) for v in args.sizes.split(",")):
        pred, truth, area = scene(n, args.fp_per_ha)
        pxy = shapely.get_coordinates(pred.geometry.centroid)
        txy = shapely.get_coordinates(truth.geometry.centroid)
        t0 = time.perf_counter()
        match_points(pxy, pred["score"].to_numpy(), txy, 0.16, truth_footprints=truth.geometry.to_numpy())
        t_match = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = evaluate(pred, truth, area_m2=area, breakdown_by=("terrain", "visible_fraction"))
        t_eval = time.perf_counter() - t0
        m = r.any_ordnance
        print(f"{n:>7} {len(pred):>7} {t_match:>15.3f} {t_eval:>11.3f} {m.recall:>7.3f} {m.ap:>6.3f} "
              f"{m.fp_per_ha:>7.1f}")


if __name__ == "__main__":
    main()
