"""Sweep image degradations and print the coverage-quality metrics per step (threshold calibration).

Blurs (Gaussian sigma in pixels at the analysis GSD, with and without sensor noise added after the blur),
darkens and over-exposes ground textures step by step and prints, per step, what ``rams.quality`` measures and
how it classes the result. A target proxy shows what the blur does to the smallest target: a disc of
``min_target_px`` (8 px) painted into the texture, and the share of its contrast that survives.

The detector does not exist yet, so the thresholds (``blur_max`` 0.45, ``exposure_max_fraction`` 0.25) are set
where the sweep shows the metric leaving the range of sharp, well-exposed ground. Once a model exists, connect
the same degradation steps to recall (``rams evaluate`` on degraded synthetic scenes) and move the thresholds
to where recall drops.

Usage:
    .venv/bin/python scripts/sweep_quality.py                   # scikit-image textures
    .venv/bin/python scripts/sweep_quality.py --ortho X.tif     # a 512 px window of a real orthomosaic
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import data as skdata

from rams.config import ReadConfig
from rams.quality import QualityConfig, assess_tile, classify

SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
GAINS_DARK = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02)
GAINS_BRIGHT = (1.0, 1.25, 1.5, 2.0, 3.0)


def quantise(img: np.ndarray) -> np.ndarray:
    """Back to 8-bit levels, as an orthomosaic stores them."""
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.float32) / 255.0


def textures(ortho: Path | None) -> dict[str, np.ndarray]:
    """Grey textures in [0, 1], 512 x 512: scikit-image's real grass, gravel and brick photos, or an ortho."""
    if ortho is not None:
        from rasterio.windows import Window

        from rams.raster import make_reader, open_raster

        with open_raster(ortho) as src, make_reader(src, ("red", "green", "blue"), None, ReadConfig()) as r:
            w = Window(max(0, r.grid.width // 2 - 256), max(0, r.grid.height // 2 - 256), 512, 512)
            t = r.read(w)
            grey = 0.2125 * t.image[0] + 0.7154 * t.image[1] + 0.0721 * t.image[2]
            return {ortho.name: grey.astype(np.float32)}
    return {name: getattr(skdata, name)().astype(np.float32) / 255.0 for name in ("grass", "gravel", "brick")}


def target_contrast(sigma: float, diameter_px: float) -> float:
    """Share of a painted disc's contrast left after a Gaussian blur (1 = intact)."""
    yy, xx = np.mgrid[-32:33, -32:33]
    disc = ((xx**2 + yy**2) <= (diameter_px / 2) ** 2).astype(np.float32)
    blurred = ndi.gaussian_filter(disc, sigma) if sigma > 0 else disc
    return float(blurred[32, 32])


def row(name: str, step: str, img: np.ndarray, cfg: QualityConfig, extra: str = "") -> str:
    m = assess_tile(img[None], np.ones(img.shape, bool), 0.01, ("gray",), cfg)
    return (
        f"| {name} | {step} | {m.blur_index:.3f} | {m.lap_var_norm:.4f} | {m.dark_fraction:.2f} | "
        f"{m.saturated_fraction:.2f} | {extra} | {classify(m, cfg)} |"
    )


def block_spread(tex: dict[str, np.ndarray], noise: float) -> None:
    """Blur index over blocks: a block size is usable when sharp ground stays clearly below blur_max."""
    from rams.quality import assess_cells

    cfg = QualityConfig(classes=["tm62"])
    rng = np.random.default_rng(0)
    print(f"blur index over blocks (p5 / median / p95 / max), noise {noise:g} DN; blur_max {cfg.blur_max}\n")
    print("| texture | sigma px | 32 px | 64 px | 128 px |\n|---|---|---|---|---|")
    for name, g in tex.items():
        for s in (0.0, 1.0, 1.5, 2.0, 3.0):
            b = ndi.gaussian_filter(g, s) if s else g
            b = quantise(b + rng.normal(0, noise / 255.0, b.shape))
            cols = []
            for bs in (32, 64, 128):
                cells = [(slice(r, r + bs), slice(c, c + bs)) for r in range(0, b.shape[0] - bs + 1, bs)
                         for c in range(0, b.shape[1] - bs + 1, bs)]
                v = np.array([m.blur_index for m in assess_cells(b[None], np.ones(b.shape, bool), 0.01, ("gray",),
                                                                  cfg, cells)])
                cols.append(f"{np.percentile(v, 5):.2f} / {np.median(v):.2f} / {np.percentile(v, 95):.2f} / "
                            f"{v.max():.2f}")
            print(f"| {name} | {s:g} | " + " | ".join(cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ortho", type=Path, default=None, help="Use a 512 px window of this orthomosaic (RGB).")
    ap.add_argument("--noise", type=float, default=1.5, help="Sensor noise (8-bit DN) added after the blur.")
    ap.add_argument("--blocks", action="store_true",
                    help="Spread of the blur index over blocks of 32/64/128 px (chooses blur_block_px).")
    args = ap.parse_args()
    if args.blocks:
        block_spread(textures(args.ortho), args.noise)
        return
    cfg = QualityConfig(classes=["tm62"])  # GSD check passes at 1 cm: only image quality is measured
    rng = np.random.default_rng(0)
    header = (
        "| texture | step | blur_idx | lap_var | dark_frac | sat_frac | target | class |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    def blurred(g: np.ndarray, sigma: float, noise_dn: float = 0.0) -> np.ndarray:
        b = ndi.gaussian_filter(g, sigma) if sigma else g
        if noise_dn:
            b = b + rng.normal(0, noise_dn / 255.0, b.shape)
        return quantise(b)

    def exposed(g: np.ndarray, gain: float) -> np.ndarray:
        return quantise(g * gain)

    steps: list[tuple[str, Callable[[np.ndarray], np.ndarray], str]] = []
    for s in SIGMAS:
        steps.append((f"blur sigma {s:g} px", partial(blurred, sigma=s),
                      f"{target_contrast(s, cfg.min_target_px):.2f}"))
    for s in SIGMAS:
        steps.append((f"blur sigma {s:g} px + noise {args.noise:g} DN", partial(blurred, sigma=s, noise_dn=args.noise),
                      f"{target_contrast(s, cfg.min_target_px):.2f}"))
    for k in (*GAINS_DARK, *GAINS_BRIGHT[1:]):
        steps.append((f"exposure x{k:g}", partial(exposed, gain=k), ""))
    print(f"thresholds: blur_max {cfg.blur_max}, exposure_max_fraction {cfg.exposure_max_fraction}, "
          f"dark_level {cfg.dark_level}, saturated_level {cfg.saturated_level}")
    print(f"target: contrast left at the centre of a {cfg.min_target_px:g} px disc after the blur\n")
    print(header)
    for name, grey in textures(args.ortho).items():
        for step, fn, extra in steps:
            print(row(name, step, fn(grey), cfg, extra))


if __name__ == "__main__":
    main()
