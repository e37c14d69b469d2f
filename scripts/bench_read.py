"""Benchmark: stream every tile of a >= 1 gigapixel RGBA orthomosaic at a target GSD, in bounded memory.

Writes synthetic RGBA mosaics (irregular alpha footprint; tiled and untiled/strip variants; a base size and
one ``--scale`` times bigger), then reads each in a fresh subprocess through the same path ``rams detect``
uses (target grid, coarse validity mask, tiles, ``OrthoReader``) and prints a table of throughput and peak
RSS. Peak RSS must stay under 1 GB and must not grow with mosaic size.

    python scripts/bench_read.py --gpx 1 --scale 4 --workdir /tmp/rams-bench
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork/exec, so a child
    would report its parent's peak (here: the mosaic writer's) if that was higher."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_mosaic(path: Path, side: int, tiled: bool, gsd: float, full: bool = False) -> float:
    """Write a side x side RGBA uint8 GeoTIFF block by block; returns seconds taken.

    ``full``: every pixel imaged (alpha 255 everywhere) instead of the irregular footprint (~64 % imaged)."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    profile = dict(
        driver="GTiff", width=side, height=side, count=4, dtype="uint8", crs=CRS.from_epsg(32638),
        transform=Affine(gsd, 0, 500000.0, 0, -gsd, 4400000.0), compress="deflate", zlevel=1,
        photometric="RGB", alpha="YES", BIGTIFF="YES",
    )
    if tiled:
        profile.update(tiled=True, blockxsize=512, blockysize=512)
    chunk = 512 if tiled else 256
    t0 = time.perf_counter()
    cy = cx = side / 2
    ry, rx = side * 0.48, side * 0.42
    with rasterio.open(path, "w", **profile) as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        cols = np.arange(side, dtype=np.float32)
        # texture noise so that compression and decoding cost what they cost on real imagery
        noise = np.random.default_rng(0).integers(0, 24, size=(3, chunk + 7, side + 7), dtype=np.uint8)
        for r0 in range(0, side, chunk):
            h = min(chunk, side - r0)
            rows = np.arange(r0, r0 + h, dtype=np.float32)[:, None]
            # irregular (wobbly ellipse) footprint, as real orthomosaics have
            wob = 1 + 0.06 * np.sin(cols[None, :] / side * 17) + 0.04 * np.cos(rows / side * 11)
            inside = ((rows - cy) / ry) ** 2 + ((cols[None, :] - cx) / rx) ** 2 <= wob
            if full:
                inside = np.ones((h, side), bool)
            base = ((rows + cols[None, :]) % 97).astype(np.uint8)
            block = np.empty((4, h, side), np.uint8)
            sh = (r0 // chunk) % 7
            block[:3] = base + noise[:, sh : sh + h, sh : sh + side]
            block[0] += 60
            block[1] += 80
            block[2] += 40
            block[3] = np.where(inside, 255, 0)
            block[:3, ~inside] = 0
            dst.write(block, window=Window(0, r0, side, h))
    return time.perf_counter() - t0


def stream(path: str, target_gsd: float, tile: int, overlap: int) -> dict[str, float]:
    """Read every tile at the target GSD (run in a subprocess so that peak RSS is this run's alone)."""
    from rams.config import ReadConfig
    from rams.raster import coarse_valid_mask, make_reader, open_raster
    from rams.tiling import make_tiles

    t0 = time.perf_counter()
    with open_raster(path) as src:
        src_px = src.width * src.height
        reader = make_reader(src, ["red", "green", "blue"], target_gsd, ReadConfig())
        mask, mt = coarse_valid_mask(src, reader.grid)
        t_mask = time.perf_counter() - t0
        tiles = make_tiles(reader.grid, tile, overlap, valid_mask=mask, valid_mask_transform=mt)
        valid_px = 0
        for t in tiles:
            td = reader.read(t.window)
            valid_px += int(td.valid.sum())
        reader.close()
        grid_px = reader.grid.width * reader.grid.height
    dt = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    return {
        "tiles": len(tiles),
        "seconds": dt,
        "mask_seconds": t_mask,
        "src_mpx_s": src_px / dt / 1e6,
        "grid_mpx_s": len(tiles) * tile * tile / dt / 1e6,
        "valid_fraction": valid_px / grid_px,
        "peak_rss_mb": rss_mb,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpx", type=float, default=1.0, help="base mosaic size in gigapixels")
    ap.add_argument("--scale", type=float, default=4.0, help="second mosaic is this many times bigger")
    ap.add_argument("--gsd", type=float, default=0.005, help="mosaic GSD (m)")
    ap.add_argument("--target-gsd", type=float, default=0.01, help="model GSD read at (m)")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=96)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rams-bench-read"))
    ap.add_argument("--variants", default="tiled,untiled")
    ap.add_argument("--big-variants", default=None, help="variants for the scaled mosaic (default: --variants)")
    ap.add_argument("--keep", action="store_true", help="keep the mosaics")
    ap.add_argument("--_stream", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._stream:
        print(json.dumps(stream(a._stream, a.target_gsd, a.tile, a.overlap)))
        return
    a.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for gpx, variants in ((a.gpx, a.variants), (a.gpx * a.scale, a.big_variants or a.variants)):
        if gpx <= 0:  # --scale 0: only the base size
            continue
        side = int(math.sqrt(gpx * 1e9))
        for variant in variants.split(","):
            path = a.workdir / f"bench_{side}_{variant}.tif"
            wt = float("nan")
            if not path.exists():
                wt = write_mosaic(path, side, variant == "tiled", a.gsd)
            out = subprocess.run(
                [sys.executable, __file__, "--_stream", str(path), "--target-gsd", str(a.target_gsd),
                 "--tile", str(a.tile), "--overlap", str(a.overlap)],
                check=True, capture_output=True, text=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r.update(variant=variant, gpx=side * side / 1e9, size_gb=path.stat().st_size / 1e9, write_s=wt)
            rows.append(r)
            print(f"done {variant} {side}x{side}", file=sys.stderr, flush=True)
            if not a.keep:
                path.unlink()
    print(f"\nread at {a.target_gsd * 100:g} cm/px from a {a.gsd * 100:g} cm/px RGBA mosaic; "
          f"tiles {a.tile} px, overlap {a.overlap} px\n")
    hdr = "| variant | gigapixels | file GB | write s | tiles | read s | source Mpx/s | tile Mpx/s | peak RSS MB |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for r in rows:
        print(f"| {r['variant']} | {r['gpx']:.2f} | {r['size_gb']:.2f} | {r['write_s']:.0f} | {r['tiles']} | "
              f"{r['seconds']:.1f} | {r['src_mpx_s']:.1f} | {r['grid_mpx_s']:.1f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
