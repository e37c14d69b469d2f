"""Tie the coverage-quality thresholds to detector recall: degrade a synthetic scene step by step, measure both.

For each degradation step (Gaussian blur of sigma px at the model GSD; darkening by a gain), the scene's
orthomosaic is degraded, ``rams detect`` runs with the shipped default model, detections are matched to the
truth (``rams.evaluate``, any-ordnance recall at the default operating point), and ``rams.quality`` measures
the same image (median re-blur index and dark fraction over cells, and the share of cells it classes as
adequate). The table shows where recall drops and what the quality metric reads there, which is where
``blur_max`` / ``exposure_max_fraction`` belong (``configs/decisions-default.yaml``).

The scene is anti-tank mines on ploughed ground (the classes the default model finds reliably; a model that
misses small AP mines on sharp imagery cannot show where blur starts to hide them).

    .venv/bin/python scripts/sweep_quality_recall.py --workdir /tmp/rams-sweep
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
GAINS = (0.5, 0.3, 0.2, 0.15, 0.1, 0.05)


def degrade(src_path: Path, dst_path: Path, sigma_model_px: float, gain: float, model_gsd: float) -> None:
    import rasterio
    from scipy import ndimage as ndi

    with rasterio.open(src_path) as src:
        profile = src.profile
        data = src.read()
        ratio = model_gsd / src.res[0]
        ci = src.colorinterp
    rgb = data[:3].astype(np.float32)
    if sigma_model_px > 0:
        s = sigma_model_px * ratio
        rgb = np.stack([ndi.gaussian_filter(b, s) for b in rgb])
    rgb *= gain
    data[:3] = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
        dst.colorinterp = ci


def measure(ortho: Path, truth: Path, out: Path, classes: str) -> dict[str, float]:
    import pyogrio

    from rams.config import ReadConfig
    from rams.detect import run_detect
    from rams.evaluate import evaluate
    from rams.quality import QualityConfig, assess_cells, classify
    from rams.raster import make_reader, open_raster
    from rams.tiling import make_tiles

    s = run_detect(ortho, out, overwrite=True)
    pred = pyogrio.read_dataframe(out, layer="detections")
    t = pyogrio.read_dataframe(truth, layer="truth")
    rep = evaluate(pred, t, area_m2=s.analysed_ha * 1e4)
    qcfg = QualityConfig(classes=classes.split(","), analysis_gsd_m=0.01)
    blur, dark, adequate, n = [], [], 0, 0
    with open_raster(ortho) as src, make_reader(src, ("red", "green", "blue"), 0.01, ReadConfig()) as r:
        for tile in make_tiles(r.grid, 250, 0):
            td = r.read(tile.window)
            if td.valid.mean() < 0.9:
                continue
            m = assess_cells(td.image, td.valid, 0.01, ("red", "green", "blue"), qcfg,
                             [(slice(None), slice(None))])[0]
            blur.append(m.blur_index)
            dark.append(m.dark_fraction)
            adequate += classify(m, qcfg) == "adequate"
            n += 1
    am = rep.any_ordnance
    return {"recall": float(am.recall or 0.0), "fp_ha": float(am.fp_per_ha or 0.0), "items": float(am.n_truth),
            "blur": float(np.median(blur)), "dark": float(np.median(dark)), "adequate": adequate / max(n, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rams-sweep"))
    ap.add_argument("--classes", default="tm62", help="threat classes the quality check is asked about")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    scene = a.workdir / "scene"
    if not (scene / "ortho.tif").exists():
        subprocess.run([sys.executable, "-m", "rams.cli.main", "synth", str(scene), "--seed", "9203", "--size",
                        "24x12", "--gsd", "0.005", "--terrain", "ploughed", "--targets", "at", "--density", "1200",
                        "--full-footprint", "--overwrite"], check=True, capture_output=True)
    rows = []
    for kind, values in (("blur sigma px", SIGMAS), ("gain", GAINS)):
        for v in values:
            deg = a.workdir / "deg.tif"
            degrade(scene / "ortho.tif", deg, v if kind.startswith("blur") else 0.0,
                    v if kind == "gain" else 1.0, 0.01)
            r = measure(deg, scene / "truth.gpkg", a.workdir / "d.gpkg", a.classes)
            rows.append((kind, v, r))
            print(f"{kind} {v}: {r}", file=sys.stderr, flush=True)
    print("\n| degradation | step | recall (any ordnance) | FP/ha | median re-blur index | median dark fraction "
          "| cells adequate |")
    print("|---|---|---|---|---|---|---|")
    for kind, v, r in rows:
        print(f"| {kind} | {v:g} | {r['recall']:.2f} ({int(r['items'])} items) | {r['fp_ha']:.0f} | "
              f"{r['blur']:.3f} | {r['dark']:.3f} | {100 * r['adequate']:.0f} % |")


if __name__ == "__main__":
    main()
