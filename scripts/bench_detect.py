"""Benchmark ``rams detect`` end to end against bare model inference and against SAHI slicing.

Prints one table. Every row runs in a fresh subprocess, so that its peak RSS is its own:

* ``bare``: :class:`rams.detector.predict.Predictor` on in-memory batches of tiles (the ceiling);
* ``rams detect``: the whole pipeline (reading, resampling, masks, inference, seams, coverage, GeoPackage)
  on synthetic RGBA mosaics at the model GSD: a small one (the SAHI comparison), ``--gpx`` gigapixels and
  ``--scale`` times that (peak RSS must not grow with the mosaic);
* ``sahi``: SAHI's ``get_sliced_prediction`` slicing the small mosaic with the same model and tile size
  (installed with ``pip install -e '.[bench]'``).

    python scripts/bench_detect.py --threads 2 --gpx 1 --scale 4 --sahi-mpx 100
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

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rss_mb() -> float:
    from bench_read import peak_rss_mb

    return peak_rss_mb()


def bare(model: str, threads: int, batch: int, repeats: int) -> dict[str, float]:
    import numpy as np
    import torch

    from rams.detector.bundle import load_bundle
    from rams.detector.predict import Predictor

    torch.set_num_threads(threads)
    bundle = load_bundle(model)
    card = bundle.card
    pred = Predictor(bundle, device="cpu", threads=threads)
    t = card.tile_size_px
    rng = np.random.default_rng(0)
    x = rng.random((batch, len(card.bands), t, t), dtype=np.float32)
    valid = np.ones((batch, t, t), bool)
    thr = float(card.operating_points[card.default_operating_point])
    pred.predict(x, valid, thr)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        pred.predict(x, valid, thr)
    dt = time.perf_counter() - t0
    mpx = repeats * batch * t * t / 1e6
    return {"seconds": dt, "mpx": mpx, "mpx_s": mpx / dt, "rss_mb": _rss_mb()}


def rams_detect(model: str, ortho: str, threads: int, batch: int, workers: int) -> dict[str, float]:
    import tempfile

    import torch

    from rams.detect import DetectConfig, run_detect

    torch.set_num_threads(threads)
    cfg = DetectConfig(model=model, threads=threads, batch_size=batch, workers=workers)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        s = run_detect(Path(ortho), Path(d) / "r.gpkg", cfg)
        dt = time.perf_counter() - t0
    return {"seconds": dt, "mpx": s.mpx, "mpx_s": s.mpx / dt, "rss_mb": _rss_mb(), "detections": s.detections,
            "tiles": s.tiles_total}


def sahi_run(model: str, ortho: str, threads: int) -> dict[str, float]:
    import numpy as np
    import rasterio
    import torch
    from sahi.models.base import DetectionModel
    from sahi.predict import get_sliced_prediction
    from sahi.prediction import ObjectPrediction

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
            self._original_predictions = self.model.predict(x, None, self.confidence_threshold)

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

    thr = float(card.operating_points[card.default_operating_point])
    t0 = time.perf_counter()
    with rasterio.open(ortho) as src:  # SAHI works on a whole in-memory image
        img = np.ascontiguousarray(src.read([1, 2, 3]).transpose(1, 2, 0))
    m = RamsForSahi(confidence_threshold=thr, device="cpu", load_at_init=True)
    t = card.tile_size_px
    ov = card.overlap_px / t
    res = get_sliced_prediction(img, m, slice_height=t, slice_width=t, overlap_height_ratio=ov,
                                overlap_width_ratio=ov, perform_standard_pred=False, verbose=0)
    dt = time.perf_counter() - t0
    mpx = img.shape[0] * img.shape[1] / 1e6
    return {"seconds": dt, "mpx": mpx, "mpx_s": mpx / dt, "rss_mb": _rss_mb(),
            "detections": len(res.object_prediction_list)}


def _sub(args: list[str]) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=args[args.index("--threads") + 1])
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--gpx", type=float, default=1.0)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--sahi-mpx", type=float, default=100.0, help="size of the side-by-side mosaic (Mpx)")
    ap.add_argument("--no-sahi", action="store_true")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rams-bench-detect"))
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--ortho", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode == "bare":
        print(json.dumps(bare(a.model, a.threads, a.batch, a.repeats)))
        return
    if a.mode == "detect":
        print(json.dumps(rams_detect(a.model, a.ortho, a.threads, a.batch, a.workers)))
        return
    if a.mode == "sahi":
        print(json.dumps(sahi_run(a.model, a.ortho, a.threads)))
        return

    from bench_read import write_mosaic

    from rams.detector.bundle import load_bundle

    gsd = load_bundle(a.model).card.gsd_m
    a.workdir.mkdir(parents=True, exist_ok=True)
    common = ["--model", a.model, "--threads", str(a.threads), "--batch", str(a.batch)]
    rows: list[tuple[str, str, dict[str, float]]] = []
    rows.append(("bare inference", "-", _sub(["--mode", "bare", "--repeats", str(a.repeats), *common])))
    print("bare done", file=sys.stderr, flush=True)
    sizes = [("side-by-side", a.sahi_mpx / 1e3), ("large", a.gpx), ("large x scale", a.gpx * a.scale)]
    for name, gpx in sizes:
        if gpx <= 0:
            continue
        side = int(math.sqrt(gpx * 1e9))
        path = a.workdir / f"detect_{side}.tif"
        if not path.exists():
            write_mosaic(path, side, True, gsd)
        label = f"{side}x{side} ({side * side / 1e9:.2f} Gpx)"
        r = _sub(["--mode", "detect", "--ortho", str(path), "--workers", str(a.workers), *common])
        rows.append(("rams detect", label, r))
        print(f"detect {label} done", file=sys.stderr, flush=True)
        if name == "side-by-side" and not a.no_sahi:
            rows.append(("SAHI sliced", label, _sub(["--mode", "sahi", "--ortho", str(path), *common])))
            print("sahi done", file=sys.stderr, flush=True)
    base = rows[0][2]["mpx_s"]
    print(f"\nmodel {a.model}, {a.threads} threads, batch {a.batch}, reader threads {a.workers}; "
          f"Mpx counted at the model GSD ({gsd * 100:g} cm/px)\n")
    print("| run | mosaic | seconds | Mpx | Mpx/s | % of bare | peak RSS MB | detections |")
    print("|---|---|---|---|---|---|---|---|")
    for run, label, r in rows:
        print(f"| {run} | {label} | {r['seconds']:.1f} | {r['mpx']:.0f} | {r['mpx_s']:.2f} | "
              f"{100 * r['mpx_s'] / base:.0f} % | {r['rss_mb']:.0f} | {int(r.get('detections', 0))} |")


if __name__ == "__main__":
    main()
