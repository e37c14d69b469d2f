"""Benchmark rams synth: training chips per second on one core, and writing a big mosaic (Mpx/s, peak RSS).

Prints tables. Run single-threaded for the chip rate (the script sets the thread variables itself):

    .venv/bin/python scripts/bench_synth.py chips [--n 300] [--size 256]
    .venv/bin/python scripts/bench_synth.py mosaic [--gpx 1.0] [--gsd 0.005] [--workdir /tmp/rams-bench-synth]

Chip rates are given per wall second and per CPU second of this process (the latter is what one free core
would give on a shared machine). The mosaic run writes a real GeoTIFF (deleted afterwards unless --keep) and
reports peak resident memory (ru_maxrss) so that bounded memory can be checked against the mosaic size.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def _machine() -> str:
    try:
        import psutil

        cores = f"{psutil.cpu_count(logical=False)} cores / {psutil.cpu_count()} threads"
        load = "load avg " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except Exception:  # pragma: no cover
        cores, load = "?", "?"
    return f"{platform.processor() or platform.machine()}, {cores}, {load}, Python {platform.python_version()}"


def bench_chips(n: int, size: int, pool: int) -> None:
    from rams.synth.chips import ChipSampler

    print(f"machine: {_machine()}")
    print(f"chips {size}x{size} px, one thread, ground_pool={pool}")
    print(f"{'mix':<22}{'chips':>7}{'warm-up s':>11}{'chips/s wall':>14}{'chips/s cpu':>13}{'boxes/chip':>12}")
    mixes = {
        "default (60/25/15)": {},
        "positives only": {"positive_fraction": 1.0, "hard_negative_fraction": 0.0},
        "hard negatives only": {"positive_fraction": 0.0, "hard_negative_fraction": 1.0},
    }
    for name, kw in mixes.items():
        s = ChipSampler(seed=0, chip_size_px=size, ground_pool=pool, **kw)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        # warm-up: build every ground plate of the pool once (a one-off cost per worker)
        for i in range(max(pool, 1) * 3):
            s.sample(100000 + i)
        warm = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        boxes = 0
        for i in range(n):
            boxes += len(s.sample(i).labels)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{name:<22}{n:>7}{warm:>11.1f}{n / wall:>14.1f}{n / cpu:>13.1f}{boxes / n:>12.2f}")
    if pool:
        s = ChipSampler(seed=0, chip_size_px=size, ground_pool=0)
        t0, c0 = time.perf_counter(), time.process_time()
        m = max(n // 5, 10)
        for i in range(m):
            s.sample(i)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{'no pool (ground/chip)':<22}{m:>7}{0.0:>11.1f}{m / wall:>14.1f}{m / cpu:>13.1f}{'':>12}")


def bench_mosaic(gpx: float, gsd: float, workdir: Path, keep: bool, terrain: str, workers: int) -> None:
    from rams.synth.scene import SynthConfig
    from rams.synth.writer import write_scene

    side_px = math.sqrt(gpx * 1e9 / 1.5)
    width_m, height_m = round(1.5 * side_px * gsd, 2), round(side_px * gsd, 2)
    cfg = SynthConfig(seed=1, width_m=width_m, height_m=height_m, gsd_m=gsd, terrain=terrain, bands="rgba")
    out = workdir / "scene"
    if out.exists():
        shutil.rmtree(out)
    print(f"machine: {_machine()}")
    print(f"mosaic {cfg.width_px} x {cfg.height_px} px = {cfg.width_px * cfg.height_px / 1e9:.3f} Gpx "
          f"({width_m} x {height_m} m at {gsd * 100:.2f} cm/px, {terrain}, rgba, tiled deflate), {workers} process(es)")
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 60 or done == total:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  rows {done}/{total}  peak RSS {rss:.0f} MB", flush=True)
            last[0] = now

    t0, c0 = time.perf_counter(), time.process_time()
    res = write_scene(cfg, out, progress=progress, workers=workers)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    mpx = res.width_px * res.height_px / 1e6
    size = (out / "ortho.tif").stat().st_size / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    if workers > 1:
        cpu += kids.ru_utime + kids.ru_stime
        print(f"peak RSS of the largest worker process: {kids.ru_maxrss / 1024:.0f} MB; cpu s below: main process "
              "and workers together")
    print(f"{'Mpx':>9}{'wall s':>9}{'cpu s':>9}{'Mpx/s wall':>12}{'Mpx/s cpu':>11}{'peak RSS MB':>13}{'GB on disk':>12}"
          f"{'targets':>9}{'confusers':>11}")
    print(f"{mpx:>9.0f}{wall:>9.0f}{cpu:>9.0f}{mpx / wall:>12.2f}{mpx / cpu:>11.2f}{rss:>13.0f}{size:>12.2f}"
          f"{res.n_targets:>9}{res.n_confusers:>11}")
    if not keep:
        shutil.rmtree(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("chips")
    c.add_argument("--n", type=int, default=300)
    c.add_argument("--size", type=int, default=256)
    c.add_argument("--pool", type=int, default=48)
    m = sub.add_parser("mosaic")
    m.add_argument("--gpx", type=float, default=1.0)
    m.add_argument("--gsd", type=float, default=0.005)
    m.add_argument("--terrain", default="mixed")
    m.add_argument("--workdir", type=Path, default=Path("/tmp/rams-bench-synth"))
    m.add_argument("--keep", action="store_true")
    m.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    if args.what == "chips":
        bench_chips(args.n, args.size, args.pool)
    else:
        bench_mosaic(args.gpx, args.gsd, args.workdir, args.keep, args.terrain, args.workers)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
