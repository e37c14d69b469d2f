"""Benchmark: ``rams batch`` throughput on a local Dask cluster with 1, 2, ... worker processes.

Writes (once, cached in ``--workdir``) a few synthetic flights with ``rams.synth``, then runs the same batch
into a fresh output folder per worker count and prints a table:

* ``mosaic Mpx``: native pixels of the orthomosaics (what a survey team has);
* ``wall s``: the whole command: cluster start, planning, detection, coverage quality, GeoPackages, survey;
* ``work s``: from the cluster being up to the last flight written (cluster start and survey excluded);
* ``Mpx/s``: mosaic Mpx per wall second and per work second; ``speedup``: work-time ratio to 1 worker.

A single-process ``rams detect`` pass over the same flights (detection only, no quality) is the baseline.
The load average is printed too: on a shared machine, other processes take cores from the workers.

    python scripts/bench_batch.py --workdir /tmp/rams-bench-batch --workers 1,2
    python scripts/bench_batch.py --model default        # the trained model in models/

Without ``--model`` it uses ``models/default`` when present, else random weights in the default architecture
(same compute per pixel, no meaningful detections).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path


def make_flights(workdir: Path, n: int, size_m: float, gsd_m: float) -> list[Path]:
    from rams.synth.scene import SynthConfig
    from rams.synth.writer import write_scene

    folder = workdir / f"flights-{n}x{size_m:g}m-{gsd_m:g}"
    orthos = []
    for i in range(n):
        dest = folder / f"flight{i:02d}"
        if not (dest / "ortho.tif").exists():
            t0 = time.perf_counter()
            write_scene(SynthConfig(seed=100 + i, width_m=size_m, height_m=size_m, gsd_m=gsd_m,
                                    origin_e=500000.0 + i * size_m * 0.9), dest, overwrite=True)
            print(f"wrote {dest} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        (dest / "truth.gpkg").unlink(missing_ok=True)  # only orthomosaics in the flights folder
        orthos.append(dest / "ortho.tif")
    return orthos


def default_arch_bundle(dest: Path) -> Path:
    """Random weights in the default detector's architecture, tile and overlap (configs/train-default*.yaml):
    the compute of the real model, no meaningful detections (the untrained heatmap stays near its 1 % prior)."""
    import torch

    from rams.classes import CLASS_NAMES
    from rams.detector.bundle import save_bundle
    from rams.detector.model import ARCHITECTURE, ArchParams, build_model

    params = ArchParams()
    torch.manual_seed(0)
    model = build_model(3, len(CLASS_NAMES), params)
    card = {
        "name": "random-default-arch", "version": "0.0.0-bench",
        "description": "random weights, default architecture: for throughput benchmarks only",
        "architecture": ARCHITECTURE, "params": params.model_dump(mode="json"), "classes": list(CLASS_NAMES),
        "bands": ["red", "green", "blue"],
        "normalisation": {"value_range": None, "mean": [0.5] * 3, "std": [0.25] * 3},
        "gsd_m": 0.01, "gsd_range_m": (0.005, 0.012), "tile_size_px": 512, "overlap_px": 96,
        "operating_points": {"balanced": 0.3}, "default_operating_point": "balanced",
        "training": {"data": ["none (random initialisation)"], "command": "scripts/bench_batch.py", "config": {},
                     "seed": 0, "duration": "0 s", "duration_s": 0.0, "device": "cpu"},
        "metrics": {},
    }
    save_bundle(dest, card, model.state_dict(), overwrite=True)
    return dest


def pick_model(name: str | None, workdir: Path) -> tuple[str, str]:
    from rams.detector.bundle import load_bundle
    from rams.errors import ModelError

    if name is not None:
        return name, load_bundle(name).card.name
    try:
        card = load_bundle("default").card
        return "default", card.name
    except ModelError:
        path = default_arch_bundle(workdir / "random-default-arch")
        return str(path), ("randomly initialised bundle in the default architecture, 512 px tiles "
                           "(no trained model in models/ yet)")


def native_mpx(orthos: list[Path]) -> float:
    import rasterio

    total = 0.0
    for p in orthos:
        with rasterio.open(p) as src:
            total += src.width * src.height / 1e6
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rams-bench-batch"))
    ap.add_argument("--flights", type=int, default=4)
    ap.add_argument("--size-m", type=float, default=15.0, help="flight side in metres")
    ap.add_argument("--gsd", type=float, default=0.0075, help="flight GSD in metres")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--model", default=None, help="model name or bundle (default: models/default, else tiny)")
    ap.add_argument("--threshold", type=float, default=None, help="score threshold (default: the model's)")
    ap.add_argument("--tiles-per-task", type=int, default=16)
    ap.add_argument("--no-baseline", action="store_true", help="skip the single-process rams detect pass")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from rams.batch.run import BatchConfig, BatchProgress, run_batch
    from rams.detect import DetectConfig, run_detect

    args.workdir.mkdir(parents=True, exist_ok=True)
    orthos = make_flights(args.workdir, args.flights, args.size_m, args.gsd)
    model, model_desc = pick_model(args.model, args.workdir)
    threshold = args.threshold
    mpx = native_mpx(orthos)
    rows: list[tuple[str, str, float, float, int | None]] = []
    load0 = os.getloadavg()[0]
    if not args.no_baseline:
        cfg = DetectConfig(model=model, threshold=threshold)
        t0 = time.perf_counter()
        for i, o in enumerate(orthos):
            run_detect(o, args.workdir / f"baseline-{i}.gpkg", cfg, overwrite=True)
        dt = time.perf_counter() - t0
        rows.append(("rams detect, 1 process", "-", dt, dt, None))
    for n in [int(w) for w in args.workers.split(",")]:
        out = args.workdir / f"out-{n}w"
        shutil.rmtree(out, ignore_errors=True)
        cfg_b = BatchConfig(detect=DetectConfig(model=model, threshold=threshold), tiles_per_task=args.tiles_per_task)
        marks: dict[str, float] = {}

        def progress(p: BatchProgress, marks: dict[str, float] = marks) -> None:
            now = time.perf_counter()
            marks.setdefault("ready", now)
            if p.flights_finished == p.flights_total:
                marks.setdefault("last", now)

        t0 = time.perf_counter()
        summary = run_batch(orthos[0].parent.parent, out, cfg_b, workers=n, progress=progress)
        wall = time.perf_counter() - t0
        if summary.failed:
            raise SystemExit(f"batch with {n} workers had failures: {[f.error for f in summary.failed]}")
        work = marks.get("last", t0 + wall) - marks.get("ready", t0)
        rows.append(("rams batch, local cluster", str(n), wall, work, n))
    load1 = os.getloadavg()[0]
    base_work = next((r[3] for r in rows if r[4] == 1), None)
    print(f"flights: {len(orthos)} synthetic, {args.size_m:g} x {args.size_m:g} m at {args.gsd * 100:g} cm "
          f"({mpx:.1f} mosaic Mpx in all); model: {model_desc}; cores: {os.cpu_count()}; "
          f"load average before/after: {load0:.1f}/{load1:.1f}")
    head = f"{'mode':<28}{'workers':>8}{'mosaic Mpx':>12}{'wall s':>9}{'work s':>9}{'Mpx/s wall':>12}" \
           f"{'Mpx/s work':>12}{'speedup':>9}"
    print(head)
    print("-" * len(head))
    for mode, w, wall, work, nw in rows:
        speed = f"{base_work / work:.2f}" if base_work and nw else ""
        print(f"{mode:<28}{w:>8}{mpx:>12.1f}{wall:>9.1f}{work:>9.1f}{mpx / wall:>12.2f}{mpx / work:>12.2f}{speed:>9}")


if __name__ == "__main__":
    main()
