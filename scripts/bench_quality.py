"""Benchmark: `rams quality` on big orthomosaics, layer streamed to the GeoPackage vs held in memory.

Writes (or reuses) the synthetic RGBA bench mosaics of ``scripts/bench_read.py`` (1 cm, deflate, 512 px blocks,
~64 % imaged by default), then runs the coverage-quality pass on each in a fresh subprocess, two ways:

* ``streamed``: :func:`rams.quality.quality_file`, what ``rams quality`` runs: the layer goes to the temporary
  GeoPackage in chunks as the cells are judged;
* ``held``: the layer held in memory until it is written at the end (:func:`rams.quality.assess_ortho`, then one
  write): how ``rams quality`` worked before 2026-11-27 and how ``rams batch`` still works per flight.

Prints a table: mosaic, tiles, cells, layer rows, wall seconds, peak RSS. Memory of ``streamed`` should not grow
with the mosaic; ``held`` grows by the layer.

    python scripts/bench_quality.py --sides 7071,31622 --workdir /tmp/rams-bench-detect
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_read import peak_rss_mb, write_mosaic  # noqa: E402

MODES = ("streamed", "held")


def run_one(mode: str, ortho: Path, out: Path) -> dict[str, float]:
    """One quality pass in this process; returns its numbers."""
    from rams.layers import write_gpkg
    from rams.quality import LAYER, QualityConfig, assess_ortho, quality_file

    cfg = QualityConfig()
    if out.exists():
        out.unlink()
    t0 = time.perf_counter()
    if mode == "streamed":
        res = quality_file(ortho, out, cfg)
    elif mode == "held":
        res = assess_ortho(ortho, cfg)
        write_gpkg(out, {LAYER: res.require_layer()})
    else:
        raise ValueError(f"mode {mode!r}: use one of {MODES}")
    dt = time.perf_counter() - t0
    return {"seconds": dt, "tiles": res.tiles, "cells": res.cells, "rows": res.rows, "rss_mb": peak_rss_mb(),
            "out_mb": out.stat().st_size / 1e6}


def _sub(mode: str, ortho: Path, out: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--mode", mode, "--ortho", str(ortho), "--out", str(out)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
    line = res.stdout.strip().splitlines()[-1]
    print(line, file=sys.stderr, flush=True)  # each row as it comes (a long run may be cut short)
    return dict(json.loads(line))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", default="7071,31622", help="mosaic sides in pixels at 1 cm (comma-separated)")
    ap.add_argument("--modes", default="streamed,held", help=f"comma-separated, of {MODES}")
    ap.add_argument("--full-footprint", action="store_true", help="every pixel imaged (default: ~64 %%)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rams-bench-detect"))
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--ortho", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.mode:
        print(json.dumps(run_one(a.mode, a.ortho, a.out)))
        return
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode(s) {bad}; use {MODES}")
    a.workdir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, int, dict[str, float]]] = []
    for side in (int(s) for s in a.sides.split(",") if s.strip()):
        # the same file names as scripts/bench_detect.py, so that its mosaics are reused
        ortho = a.workdir / (f"detect_full_{side}.tif" if a.full_footprint else f"detect_{side}.tif")
        if not ortho.exists():
            print(f"writing {ortho} ...", file=sys.stderr, flush=True)
            write_mosaic(ortho, side, True, 0.01, full=a.full_footprint)
        for mode in modes:
            rows.append((mode, side, _sub(mode, ortho, a.workdir / f"quality_{mode}_{side}.gpkg")))
    print_table(rows)


def print_table(rows: list[tuple[str, int, dict[str, float]]]) -> None:
    print("| mode | mosaic | tiles | cells | layer rows | seconds | peak RSS MB | GeoPackage MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode, side, r in rows:
        print(f"| {mode} | {side}x{side} ({side * side / 1e9:.2f} Gpx) | {r['tiles']:.0f} | {r['cells']:.0f} | "
              f"{r['rows']:.0f} | {r['seconds']:.1f} | {r['rss_mb']:.0f} | {r['out_mb']:.1f} |")


if __name__ == "__main__":
    main()
