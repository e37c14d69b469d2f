"""Quicklook PNGs of synthetic scenes, one per terrain, with the truth outlined (docs/quicklooks/).

Each scene is written by the real path (``rams.synth.writer.write_scene``: GeoTIFF + truth.gpkg), read back
with rasterio, and drawn as: a native-GSD crop around the densest group of targets, truth footprints
outlined in red (offset outward so the object stays visible), and a strip of 4x zooms of single targets.

    .venv/bin/python scripts/quicklooks.py [--out docs/quicklooks] [--gsd 0.005] [--terrains ploughed,sand]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.windows import Window

from rams.layers import read_layer
from rams.synth.scene import SynthConfig
from rams.synth.terrain import TERRAINS
from rams.synth.writer import write_scene

WIDTH = 800
CROP_H = 450
ZOOM = 4
ZOOM_TILE = 200


def _crop_window(px: np.ndarray, width: int, height: int) -> tuple[int, int]:
    """Top-left (row, col) of a WIDTH x CROP_H window holding the most target centres."""
    best, best_rc = -1, (0, 0)
    for cy, cx in px:
        r0 = int(np.clip(cy - CROP_H / 2, 0, max(height - CROP_H, 0)))
        c0 = int(np.clip(cx - WIDTH / 2, 0, max(width - WIDTH, 0)))
        n = int(((px[:, 0] >= r0 + 10) & (px[:, 0] < r0 + CROP_H - 10) & (px[:, 1] >= c0 + 10)
                 & (px[:, 1] < c0 + WIDTH - 10)).sum())
        if n > best:
            best, best_rc = n, (r0, c0)
    return best_rc


def quicklook(terrain: str, out_png: Path, gsd: float, seed: int) -> str:
    cfg = SynthConfig(seed=seed, width_m=14.0, height_m=9.0, gsd_m=gsd, terrain=terrain,
                      target_density_per_ha=900.0, bands="rgba")
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = Path(tmp) / "scene"
        write_scene(cfg, scene_dir)
        truth = read_layer(scene_dir / "truth.gpkg", "truth")
        with rasterio.open(scene_dir / "ortho.tif") as src:
            inv = ~src.transform
            cents = np.asarray([inv * (g.centroid.x, g.centroid.y) for g in truth.geometry])  # (col, row)
            px = cents[:, ::-1] if len(cents) else np.zeros((0, 2))
            r0, c0 = _crop_window(px, src.width, src.height)
            img = src.read([1, 2, 3], window=Window(c0, r0, WIDTH, CROP_H), boundless=True)
            main = Image.fromarray(np.moveaxis(img, 0, -1))
            draw = ImageDraw.Draw(main)
            zooms: list[Image.Image] = []
            for (_, t), geom in zip(truth.iterrows(), truth.geometry, strict=True):
                ring = [inv * xy for xy in geom.exterior.coords]
                xs = [p[0] - c0 for p in ring]
                ys = [p[1] - r0 for p in ring]
                if max(xs) < 0 or min(xs) > WIDTH or max(ys) < 0 or min(ys) > CROP_H:
                    continue
                draw.rectangle([min(xs) - 3, min(ys) - 3, max(xs) + 3, max(ys) + 3], outline=(255, 40, 40))
                draw.text((max(xs) + 4, min(ys) - 4), f"{t['model']}", fill=(255, 230, 60))
                if len(zooms) < WIDTH // ZOOM_TILE:
                    cx, cy = float(np.mean(xs)) + c0, float(np.mean(ys)) + r0
                    half = ZOOM_TILE // (2 * ZOOM)
                    z = src.read([1, 2, 3], window=Window(int(cx) - half, int(cy) - half, 2 * half, 2 * half),
                                 boundless=True)
                    zi = Image.fromarray(np.moveaxis(z, 0, -1)).resize((ZOOM_TILE, ZOOM_TILE), Image.Resampling.NEAREST)
                    ImageDraw.Draw(zi).text((4, 4), f"{t['model']} vis {t['visible_fraction']:.2f}",
                                            fill=(255, 230, 60))
                    zooms.append(zi)
    sheet = Image.new("RGB", (WIDTH, CROP_H + ZOOM_TILE + 24), (20, 20, 20))
    sheet.paste(main, (0, 0))
    for k, z in enumerate(zooms):
        sheet.paste(z, (k * ZOOM_TILE, CROP_H))
    ImageDraw.Draw(sheet).text(
        (6, CROP_H + ZOOM_TILE + 6),
        f"rams synth: terrain {terrain}, seed {seed}, {gsd * 100:.1f} cm/px; crop {WIDTH}x{CROP_H} px at native GSD; "
        f"zooms x{ZOOM}",
        fill=(230, 230, 230),
    )
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, optimize=True)
    return f"{terrain}: {len(truth)} targets -> {out_png}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/quicklooks"))
    ap.add_argument("--gsd", type=float, default=0.005)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--terrains", default=",".join(TERRAINS))
    args = ap.parse_args()
    for terrain in args.terrains.split(","):
        print(quicklook(terrain, args.out / f"{terrain}.png", args.gsd, args.seed))


if __name__ == "__main__":
    main()
