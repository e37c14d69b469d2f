"""Benchmark ``rams detect`` end to end against bare model inference and against SAHI slicing.

Prints one table. Every row runs in a fresh subprocess, so that its peak RSS is its own:

* ``bare``: :class:`rams.detector.predict.Predictor` on in-memory batches of random tiles of the size and
  batch ``rams detect`` uses (the ceiling, in model input pixels per second);
* ``rams detect``: the whole pipeline (reading, resampling, masks, inference, seams, coverage, GeoPackage)
  on synthetic RGBA mosaics at the model GSD: a small one (the SAHI comparison), ``--gpx`` gigapixels and
  ``--scale`` times that (peak RSS must not grow with the mosaic);
* ``sahi``: SAHI's ``get_sliced_prediction`` slicing the small mosaic with the same model, tile size and
  overlap (installed with ``pip install -e '.[bench]'``).

Units. *Mosaic Mpx* is the orthomosaic's area at the model GSD (width x height of the analysis grid, what a
user waits for); *tile Mpx* is what the model was fed (overlap counted again, empty tiles skipped); *imaged
Mpx* is the analysed (valid) part of the mosaic. "% of bare" is mosaic Mpx/s end to end over bare tile Mpx/s.
Library imports (torch, torchvision, geopandas, SAHI) happen before the clock starts in every row.
``--dense-from runs/eval-scenes`` tiles the mosaics from rendered scenes instead (targets, confusers, ragged
alpha), so that detections, seam merging and their writing are timed too (random texture gives none).

    python scripts/bench_detect.py --threads 2 --gpx 1 --scale 4 --sahi-mpx 50
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rss_mb() -> float:
    from bench_read import peak_rss_mb

    return peak_rss_mb()


def bare(model: str, threads: int, batch: int, repeats: int, tile: int) -> dict[str, float]:
    import numpy as np
    import torch

    from rams.detector.bundle import load_bundle
    from rams.detector.predict import Predictor

    torch.set_num_threads(threads)
    bundle = load_bundle(model)
    card = bundle.card
    pred = Predictor(bundle, device="cpu", threads=threads)
    t = tile
    rng = np.random.default_rng(0)
    x = rng.random((batch, len(card.bands), t, t), dtype=np.float32)
    valid = np.ones((batch, t, t), bool)
    thr = card.thresholds()  # the default operating point, per class, as rams detect applies it
    pred.predict(x, valid, thr)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        pred.predict(x, valid, thr)
    dt = time.perf_counter() - t0
    mpx = repeats * batch * t * t / 1e6
    return {"seconds": dt, "mpx": mpx, "mpx_s": mpx / dt, "rss_mb": _rss_mb()}


def _grid_mpx(ortho: str, gsd: float) -> float:
    from rams.raster import open_raster, target_grid

    with open_raster(ortho) as src:
        g = target_grid(src, gsd)
    return g.width * g.height / 1e6


def rams_detect(model: str, ortho: str, threads: int, batch: int | None, workers: int | None, tile: int | None
                ) -> dict[str, float]:
    import tempfile

    import geopandas  # noqa: F401  (imports outside the clock, as in the SAHI row)
    import torch

    import rams.detector.predict  # noqa: F401
    from rams.detect import DetectConfig, run_detect
    from rams.detector.bundle import load_bundle
    from rams.layers import read_metadata

    torch.set_num_threads(threads)
    gsd = load_bundle(model).card.gsd_m
    cfg = DetectConfig(model=model, threads=threads, batch_size=batch, workers=workers, tile_size_px=tile)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        s = run_detect(Path(ortho), Path(d) / "r.gpkg", cfg)
        dt = time.perf_counter() - t0
        tile_px = int(read_metadata(Path(d) / "r.gpkg")["tile_size_px"])
    return {"seconds": dt, "tile_px": tile_px, "tile_mpx": s.mpx, "mosaic_mpx": _grid_mpx(ortho, gsd),
            "imaged_mpx": s.analysed_ha * 1e4 / gsd**2 / 1e6, "rss_mb": _rss_mb(), "detections": s.detections,
            "tiles": s.tiles_total}


def sahi_run(model: str, ortho: str, threads: int, tile: int) -> dict[str, float]:
    import numpy as np
    import rasterio
    import torch
    from sahi.models.base import DetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.prediction import ObjectPrediction
    from sahi.slicing import get_slice_bboxes

    from rams.detector.bundle import load_bundle
    from rams.detector.predict import Predictor

    torch.set_num_threads(threads)
    bundle = load_bundle(model)
    card = bundle.card

    class RamsForSahi(DetectionModel):  # type: ignore[misc]
        def load_model(self) -> None:
            self.set_model(Predictor(bundle, device="cpu", threads=threads))

        def set_model(self, model: object, **kwargs: object) -> None:
            self.model = model
            self.category_mapping = {str(i): c for i, c in enumerate(card.classes)}

        def perform_inference(self, image: np.ndarray) -> None:
            x = image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
            self._original_predictions = self.model.predict(x, None, thresholds)  # as rams detect: per class

        def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list: list | None = None, full_shape_list: list | None = None
        ) -> None:
            shift = (shift_amount_list or [[0, 0]])[0]
            if shift and isinstance(shift[0], list):
                shift = shift[0]
            full = full_shape_list[0] if full_shape_list else None
            if full and isinstance(full[0], list):
                full = full[0]
            det = self._original_predictions[0]
            preds = []
            for box, score, lab in zip(det.boxes_xyxy_px.tolist(), det.scores.tolist(), det.labels.tolist(),
                                       strict=True):
                preds.append(ObjectPrediction(bbox=box, category_id=int(lab), category_name=card.classes[lab],
                                              score=float(score), shift_amount=shift, full_shape=full))
            self._object_prediction_list_per_image = [preds]

    thresholds = card.thresholds()
    thr = min(thresholds.values())
    t0 = time.perf_counter()
    with rasterio.open(ortho) as src:  # SAHI works on a whole in-memory image
        img = np.ascontiguousarray(src.read([1, 2, 3]).transpose(1, 2, 0))
    m = RamsForSahi(confidence_threshold=thr, device="cpu", load_at_init=True)
    t = tile
    ov = card.overlap_px / t
    res = get_sliced_prediction(img, m, slice_height=t, slice_width=t, overlap_height_ratio=ov,
                                overlap_width_ratio=ov, perform_standard_pred=False, verbose=0)
    dt = time.perf_counter() - t0
    n_slices = len(get_slice_bboxes(img.shape[0], img.shape[1], t, t, False, ov, ov))
    mpx = img.shape[0] * img.shape[1] / 1e6
    return {"seconds": dt, "tile_mpx": n_slices * t * t / 1e6, "mosaic_mpx": mpx, "imaged_mpx": float("nan"),
            "rss_mb": _rss_mb(), "detections": len(res.object_prediction_list)}


def _sub(args: list[str]) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=args[args.index("--threads") + 1])
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env)
    line = out.stdout.strip().splitlines()[-1]
    print(line, file=sys.stderr, flush=True)  # each row as it comes (a long run may be cut short)
    return json.loads(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="tiles per batch (default: rams detect's)")
    ap.add_argument("--tile-size", type=int, default=None,
                    help="tile px (default: rams detect's; the bare row uses its size for big mosaics)")
    ap.add_argument("--workers", type=int, default=None, help="reader threads (default: rams detect's)")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--gpx", type=float, default=1.0)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--sahi-mpx", type=float, default=100.0, help="size of the side-by-side mosaic (Mpx)")
    ap.add_argument("--no-sahi", action="store_true")
    ap.add_argument("--source-ratio", type=int, default=1,
                    help="write the mosaics at 1/K of the model GSD (2: 0.5 cm drone imagery for the 1 cm default "
                         "model, read through the 2x2 block mean); same ground, K^2 the source pixels. SAHI is "
                         "skipped then (it would run the model at the source GSD)")
    ap.add_argument("--full-footprint", action="store_true",
                    help="mosaics imaged everywhere (default: an irregular footprint, ~64 %% imaged)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole sequence (bare, mosaics, SAHI) this many times and summarise the pairs: "
                         "each mosaic's %% of bare uses the bare row of its own round")
    ap.add_argument("--dense-from", type=Path, default=None,
                    help="build the mosaics by tiling the rendered scenes in this folder (*/ortho.tif at the model "
                         "GSD, e.g. runs/eval-scenes from scripts/eval_model.py): real targets and confusers, so "
                         "detections, seam merging and writing them are in the timing (the random-texture mosaics "
                         "give none); their own alpha sets the footprint")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rams-bench-detect"))
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--ortho", help=argparse.SUPPRESS)
    a = ap.parse_args()
    from rams.detect import BATCH_PIXELS, LARGE_TILE_PX
    from rams.detector.bundle import load_bundle

    card = load_bundle(a.model).card
    # bare: the largest tile rams detect picks by default (1024 px tiles, picked for wide mosaics, run at the same
    # speed per pixel since the allocator fix: docs/benchmarks.md); SAHI: the tiles rams detect used
    tile = a.tile_size or max(LARGE_TILE_PX, card.tile_size_px)
    batch = a.batch or max(1, BATCH_PIXELS // (tile * tile))
    if a.mode == "bare":
        print(json.dumps(bare(a.model, a.threads, batch, a.repeats, tile)))
        return
    if a.mode == "detect":
        print(json.dumps(rams_detect(a.model, a.ortho, a.threads, a.batch, a.workers, a.tile_size)))
        return
    if a.mode == "sahi":
        print(json.dumps(sahi_run(a.model, a.ortho, a.threads, tile)))
        return

    gsd = card.gsd_m
    a.workdir.mkdir(parents=True, exist_ok=True)
    common = ["--model", a.model, "--threads", str(a.threads)]
    if a.batch:
        common += ["--batch", str(a.batch)]
    if a.tile_size:
        common += ["--tile-size", str(a.tile_size)]
    rounds: list[list[tuple[str, str, dict[str, float]]]] = []
    sizes = [("side-by-side", a.sahi_mpx / 1e3), ("large", a.gpx), ("large x scale", a.gpx * a.scale)]
    for rnd in range(a.rounds):
        rows = one_round(a, common, sizes, gsd)
        rounds.append(rows)
        print_table(a, rows, tile, batch, card, gsd, f" (round {rnd + 1} of {a.rounds})" if a.rounds > 1 else "")
    if a.rounds > 1:
        print_summary(rounds)


def one_round(a: argparse.Namespace, common: list[str], sizes: list[tuple[str, float]], gsd: float
              ) -> list[tuple[str, str, dict[str, float]]]:  # fmt: skip
    """Bare inference, then each mosaic (and SAHI on the small one), each in a fresh process."""
    from bench_read import write_mosaic

    rows: list[tuple[str, str, dict[str, float]]] = []
    b = _sub(["--mode", "bare", "--repeats", str(a.repeats), *common])
    rows.append(("bare inference", "-", {**b, "tile_mpx": b["mpx"], "mosaic_mpx": float("nan"),
                                         "imaged_mpx": float("nan")}))
    print("bare done", file=sys.stderr, flush=True)
    for name, gpx in sizes:
        if gpx <= 0:
            continue
        side = int(math.sqrt(gpx * 1e9))
        k = a.source_ratio
        src_tag = f"_src{k}" if k != 1 else ""
        if a.dense_from is not None:
            path = a.workdir / f"detect_dense_{side}.tif"
            if not path.exists():
                write_dense_mosaic(path, side, a.dense_from, gsd)
        else:
            path = a.workdir / f"detect_{'full_' if a.full_footprint else ''}{side}{src_tag}.tif"
            if not path.exists():
                write_mosaic(path, side * k, True, gsd / k, full=a.full_footprint)
        label = f"{side}x{side} ({side * side / 1e9:.2f} Gpx)"
        if k != 1:
            label += f" from {side * k}x{side * k} at {gsd * 100 / k:g} cm"
        if a.dense_from is not None:
            label += ", tiled scenes"
        wk = [] if a.workers is None else ["--workers", str(a.workers)]
        r = _sub(["--mode", "detect", "--ortho", str(path), *wk, *common])
        rows.append((f"rams detect ({r['tile_px']} px tiles)", label, r))
        print(f"detect {label} done", file=sys.stderr, flush=True)
        if name == "side-by-side" and not a.no_sahi and a.source_ratio == 1:
            same_tile = ["--tile-size", str(r["tile_px"])] if not a.tile_size else []  # the tiles rams used
            rows.append(("SAHI sliced", label, _sub(["--mode", "sahi", "--ortho", str(path), *common, *same_tile])))
            print("sahi done", file=sys.stderr, flush=True)
    return rows


def write_dense_mosaic(path: Path, side: int, scenes: Path, gsd: float) -> None:
    """A ``side`` x ``side`` mosaic tiled with the scene orthomosaics in ``scenes`` (those at ``gsd``), in turn."""
    import rasterio
    from rasterio.windows import Window

    orthos = []
    for p in sorted(scenes.glob("*/ortho.tif")):
        with rasterio.open(p) as src:
            if abs(src.res[0] - gsd) < 1e-9 and src.count == 4:
                orthos.append(p)
    if not orthos:
        raise SystemExit(f"no RGBA scene at {gsd} m/px under {scenes}/*/ortho.tif; render some first "
                         "(python scripts/eval_model.py --model default --seeds 8001-8024 --calibrate balanced=10)")
    with rasterio.open(orthos[0]) as s0:
        profile, interp, step_r, step_c = s0.profile, s0.colorinterp, s0.height, s0.width
    profile.update(width=side, height=side, tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                   BIGTIFF="IF_SAFER")  # fmt: skip
    tmp = path.with_name(path.stem + ".part.tif")
    k = 0
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.colorinterp = interp
        for r0 in range(0, side, step_r):
            for c0 in range(0, side, step_c):
                with rasterio.open(orthos[k % len(orthos)]) as src:
                    h, w = min(src.height, side - r0), min(src.width, side - c0)
                    dst.write(src.read(window=Window(0, 0, w, h)), window=Window(c0, r0, w, h))
                k += 1
    os.replace(tmp, path)
    print(f"wrote {path}: {k} tiles from {len(orthos)} scenes", file=sys.stderr, flush=True)


def print_table(a: argparse.Namespace, rows: list[tuple[str, str, dict[str, float]]], tile: int, batch: int,
                card: Any, gsd: float, title: str) -> None:  # fmt: skip
    base = rows[0][2]["mpx_s"]
    print(f"\nmodel {a.model}{title}, {a.threads} threads, bare: tiles {tile} px, batch {batch}; rams detect: "
          f"tile size {a.tile_size or 'default'}, batch {a.batch or 'default'} (SAHI: the same tiles); "
          f"overlap {card.overlap_px} px; "
          f"reader threads {'by core count' if a.workers is None else a.workers}; "
          f"Mpx at the model GSD ({gsd * 100:g} cm/px); "
          f"% of bare = mosaic Mpx/s over bare tile Mpx/s\n")
    print("| run | mosaic | seconds | mosaic Mpx | mosaic Mpx/s | % of bare | tile Mpx | tile Mpx/s "
          "| imaged Mpx/s | peak RSS MB | detections |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def f(v: float, fmt: str) -> str:
        return "-" if math.isnan(v) else format(v, fmt)

    for run, label, r in rows:
        dt = r["seconds"]
        mos = r["mosaic_mpx"] / dt
        print(f"| {run} | {label} | {dt:.1f} | {f(r['mosaic_mpx'], '.0f')} | {f(mos, '.2f')} | "
              f"{f(100 * mos / base, '.0f')}{'' if math.isnan(mos) else ' %'} | {r['tile_mpx']:.0f} | "
              f"{r['tile_mpx'] / dt:.2f} | {f(r['imaged_mpx'] / dt, '.2f')} | {r['rss_mb']:.0f} | "
              f"{int(r.get('detections', 0))} |")


def print_summary(rounds: list[list[tuple[str, str, dict[str, float]]]]) -> None:
    """Per mosaic: median and range of % of bare over the rounds (each against its own round's bare row); rams
    against SAHI: rounds won on time, median time ratio, peak memory."""
    import statistics

    print(f"\nsummary of {len(rounds)} rounds (each ratio uses the bare row of its own round)\n")
    print("| row | mosaic | median s | median % of bare (min-max) | median tile % of bare | peak RSS MB (max) |")
    print("|---|---|---|---|---|---|")
    keys = [(run, label) for run, label, _ in rounds[0][1:]]
    for run, label in keys:
        pct, tpct, secs, rss = [], [], [], []
        for rows in rounds:
            base = rows[0][2]["mpx_s"]
            r = next(r for ru, la, r in rows if (ru, la) == (run, label))
            pct.append(100 * r["mosaic_mpx"] / r["seconds"] / base)
            tpct.append(100 * r["tile_mpx"] / r["seconds"] / base)
            secs.append(r["seconds"])
            rss.append(r["rss_mb"])
        print(f"| {run} | {label} | {statistics.median(secs):.1f} | {statistics.median(pct):.0f} % "
              f"({min(pct):.0f}-{max(pct):.0f}) | {statistics.median(tpct):.0f} % | {max(rss):.0f} |")
    pairs = []
    for rows in rounds:
        sahi = [(la, r) for ru, la, r in rows if ru == "SAHI sliced"]
        for la, rs in sahi:
            rr = next(r for ru, lab, r in rows if lab == la and ru.startswith("rams detect"))
            pairs.append((rr["seconds"], rs["seconds"], rr["rss_mb"], rs["rss_mb"]))
    if pairs:
        wins = sum(1 for r, s, _, _ in pairs if r < s)
        ratio = statistics.median(r / s for r, s, _, _ in pairs)
        print(f"\nrams detect vs SAHI (same mosaic, same round): faster in {wins} of {len(pairs)} rounds, median "
              f"time ratio {ratio:.2f} (rams / SAHI); peak RSS rams {max(p[2] for p in pairs):.0f} MB max vs SAHI "
              f"{min(p[3] for p in pairs):.0f} MB min")


if __name__ == "__main__":
    main()
