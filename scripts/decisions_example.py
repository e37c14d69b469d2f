"""Worked example for docs/decisions.md: a synthetic SHA scene from orthomosaic to reduction proposal.

Builds a 150 x 100 m RGBA orthomosaic at 3 cm/px from scikit-image's real grass texture (coloured as dry
ground) with the defects survey flights have: a corner the flight missed (alpha = 0), a motion-blurred flight
line, a deep shadow and a green, overgrown patch. A SHA polygon lies partly outside the imaged ground.
Detections are *placed by hand* (no detector is involved: this example shows the decision steps only): a row
of three TM-62 AT mines, one 122 mm shell, and one mortar bomb outside the SHA. At 3 cm/px the quality check
is run for those classes; asked for small AP mines (PMN, 12 cm = 4 px) it classes every cell
``inadequate:gsd`` and proposes nothing (``--pmn`` shows that).

Then it runs the library behind ``rams quality`` and ``rams reduce``, prints the table of areas (markdown), and
draws the before/after picture.

Usage:
    .venv/bin/python scripts/decisions_example.py [--out out/decisions-example] [--png docs/decisions_example.png]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.features import rasterize
from scipy import ndimage as ndi
from shapely.geometry import Point, Polygon, box
from skimage import data as skdata

from rams.classes import CLASS_NAMES
from rams.layers import read_layer, write_gpkg
from rams.quality import QualityConfig, quality_file
from rams.raster import open_raster, valid_footprint
from rams.sha import DecisionsConfig, reduce_files
from rams.styles import CANCEL_GREEN, CHA_RED, NOT_IMAGED_GREY, SHA_ORANGE

UTM = "EPSG:32638"
X0, Y0 = 500000.0, 4400000.0
GSD = 0.03
W_M, H_M = 150.0, 100.0
W, H = round(W_M / GSD), round(H_M / GSD)

SHA = Polygon([(8, 10), (112, 4), (142, 38), (136, 92), (52, 95), (6, 66)])
MISSED = Polygon([(118, 55), (150, 42), (150, 100), (104, 100)])  # the flight missed the NE corner
BLUR_X = (22.0, 34.0)  # motion-blurred flight line (m)
SHADOW = Polygon([(60, 4), (98, 4), (98, 16), (60, 16)])
BUSH = Point(82, 66).buffer(9)
DETECTIONS = [("tm62", 44, 34, 0.91), ("tm62", 50, 38, 0.84), ("tm62", 56, 42, 0.62), ("shell", 100, 72, 0.77),
              ("mortar", 146, 6, 0.58)]
SIZE_M = {"tm62": 0.32, "shell": 0.56, "mortar": 0.33}
CLASSES = ["tm62", "shell", "mortar"]  # 3 cm/px resolves these (TM-62: 10.7 px), not small AP mines (PMN: 4 px)


def to_px(geom: Polygon) -> Polygon:
    """Scene metres (origin bottom-left) to map coordinates."""
    from shapely.affinity import translate

    return translate(geom, X0, Y0)


def make_ortho(path: Path) -> None:
    grass = skdata.grass().astype(np.float32)
    reps = (H // grass.shape[0] + 1, W // grass.shape[1] + 1)
    g = np.tile(grass, reps)[:H, :W]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    light = 0.85 + 0.15 * np.sin(xx / 900.0) * np.cos(yy / 700.0)  # gentle large-scale variation
    g = g * light
    rgb = np.stack([g * 0.80 + 30, g * 0.74 + 26, g * 0.58 + 18])
    t = Affine(GSD, 0, X0, 0, -GSD, Y0 + H_M)
    c0, c1 = round(BLUR_X[0] / GSD), round(BLUR_X[1] / GSD)
    rgb[:, :, c0:c1] = ndi.gaussian_filter(rgb[:, :, c0:c1], (0, 3.0, 3.0))
    shadow = rasterize([to_px(SHADOW)], out_shape=(H, W), transform=t).astype(bool)
    rgb[:, shadow] *= 0.03
    bush = rasterize([to_px(BUSH)], out_shape=(H, W), transform=t).astype(bool)
    rgb[0, bush] *= 0.45
    rgb[1, bush] = rgb[1, bush] * 0.9 + 20
    rgb[2, bush] *= 0.35
    alpha = np.where(rasterize([to_px(MISSED)], out_shape=(H, W), transform=t).astype(bool), 0, 255)
    profile = dict(driver="GTiff", height=H, width=W, count=4, dtype="uint8", crs=UTM, transform=t, tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", photometric="RGB", alpha="YES")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.clip(rgb, 0, 255).astype("uint8"), [1, 2, 3])
        dst.write(alpha.astype("uint8"), 4)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


def make_result(ortho: Path, path: Path) -> None:
    """A result GeoPackage as rams detect would write it, with hand-placed detections."""
    rows, geoms = [], []
    for i, (label, x, y, score) in enumerate(DETECTIONS, start=1):
        s = SIZE_M[label] / 2
        geoms.append(box(X0 + x - s, Y0 + y - s, X0 + x + s, Y0 + y + s))
        rows.append({"det_id": f"det-{i:06d}", "label": label, "score": score, "model": "hand-placed (example)",
                     "tile_id": "", "length_m": SIZE_M[label], "width_m": SIZE_M[label]})
    dets = gpd.GeoDataFrame(rows, geometry=geoms, crs=UTM)
    ll = dets.geometry.centroid.to_crs("EPSG:4326")
    dets["lon"], dets["lat"] = ll.x, ll.y
    with open_raster(ortho) as src:
        footprint, _ = valid_footprint(src, max_px=2048)
    coverage = gpd.GeoDataFrame({"source": [ortho.name]}, geometry=[footprint], crs=UTM)
    # hand-placed detections stand in for a detector validated on every class (rams.sha.detector_gate); a real
    # run records its model's measured recall instead, and an unvalidated one gets no cancellation at all
    validated = {"score_threshold": 0.5, "per_class": dict.fromkeys(CLASS_NAMES, 1.0), "what": "hand-placed"}
    write_gpkg(path, {"detections": dets, "coverage": coverage},
               metadata={"detect.model": "hand-placed", "score_threshold": 0.5, "model_recall": validated},
               overwrite=True)


def draw(ortho: Path, decision: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    with open_raster(ortho) as src:
        scale = 8
        img = src.read(out_shape=(4, H // scale, W // scale), resampling=Resampling.average)
    rgb = np.moveaxis(img[:3], 0, -1).astype(np.float32) / 255.0
    rgba = np.dstack([rgb, img[3] > 0])
    extent = (0, W_M, 0, H_M)

    def rel(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        return gdf.set_geometry(gdf.geometry.translate(-X0, -Y0))

    def col(rgb_: tuple[int, int, int], a: float = 0.5) -> tuple[float, float, float, float]:
        return (rgb_[0] / 255, rgb_[1] / 255, rgb_[2] / 255, a)

    sha = rel(read_layer(decision, "sha_reduction"))
    rem = rel(read_layer(decision, "sha_proposed_remaining"))
    can = rel(read_layer(decision, "sha_proposed_cancellation"))
    haz = rel(read_layer(decision, "hazard_polygons"))
    dets = rel(read_layer(decision, "detections"))
    qual = rel(read_layer(decision, "coverage_quality"))
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.0), dpi=90)
    for ax in axes:
        ax.set_facecolor((0.93, 0.93, 0.93))
        ax.imshow(rgba, extent=extent)
        ax.set_xlim(0, W_M)
        ax.set_ylim(0, H_M)
        ax.set_xlabel("m")
    ax = axes[0]
    sha.plot(ax=ax, facecolor=col(SHA_ORANGE), edgecolor=col(SHA_ORANGE, 1), linewidth=1.5)
    bad = qual[qual.quality != "adequate"]
    bad.plot(ax=ax, facecolor="none", edgecolor=(0.8, 0.1, 0.6, 0.9), linewidth=0.4, hatch="////")
    dets.centroid.plot(ax=ax, color="red", markersize=18, edgecolor="black", linewidth=0.5)
    ax.set_title("Before: SHA (orange), detections (red), inadequate / not imaged ground (hatched)", fontsize=9)
    ax = axes[1]
    can.plot(ax=ax, facecolor=col(CANCEL_GREEN), edgecolor=col(CANCEL_GREEN, 1), linewidth=1)
    colours = {"evidence": CHA_RED}
    for reason, part in rem.groupby("reason"):
        c = colours.get(str(reason), SHA_ORANGE)
        hatch = {"not imaged": "xxx", "inadequate imaging": "////"}.get(str(reason))
        part.plot(ax=ax, facecolor=col(c), edgecolor=col(c, 1), linewidth=0.8, hatch=hatch)
    haz.plot(ax=ax, facecolor="none", edgecolor="red", linewidth=0.8, linestyle="--")
    dets.centroid.plot(ax=ax, color="red", markersize=18, edgecolor="black", linewidth=0.5)
    ax.set_title("After: proposals for the national authority (recommendations)", fontsize=9)
    legend = [
        Patch(facecolor=col(CANCEL_GREEN), edgecolor=col(CANCEL_GREEN, 1), label="proposed cancellation"),
        Patch(facecolor=col(CHA_RED), edgecolor=col(CHA_RED, 1), label="remaining: evidence (CHA proposed)"),
        Patch(facecolor=col(SHA_ORANGE), edgecolor=col(SHA_ORANGE, 1), hatch="////",
              label="remaining: inadequately imaged"),
        Patch(facecolor=col(SHA_ORANGE), edgecolor=col(SHA_ORANGE, 1), hatch="xxx", label="remaining: not imaged"),
        Patch(facecolor="none", edgecolor="red", linestyle="--", label="candidate hazard polygon"),
        Patch(facecolor=col(NOT_IMAGED_GREY, 1), label="outside the imaged footprint"),
    ]
    ax.annotate("hazard polygon outside the SHA:\nnew hazardous area proposed", xy=(146, 14), xytext=(112, 24),
                fontsize=7, arrowprops={"arrowstyle": "->", "lw": 0.8},
                bbox={"boxstyle": "round", "fc": "white", "alpha": 0.85})
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, framealpha=0.9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/decisions-example"))
    ap.add_argument("--png", type=Path, default=Path("docs/decisions_example.png"))
    ap.add_argument("--pmn", action="store_true", help="Also require small AP mines (PMN) to be resolvable.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    ortho, result = args.out / "scene.tif", args.out / "result.gpkg"
    sha_path, quality, decision = args.out / "sha.gpkg", args.out / "quality.gpkg", args.out / "decision.gpkg"
    make_ortho(ortho)
    make_result(ortho, result)
    write_gpkg(sha_path, {"sha": gpd.GeoDataFrame({"sha_id": ["SHA-AZ-0417"], "name": ["Field east of the road"]},
                                                  geometry=[to_px(SHA)], crs=UTM)}, overwrite=True)
    cfg = DecisionsConfig(quality=QualityConfig(classes=["pmn", *CLASSES] if args.pmn else CLASSES))
    t0 = time.perf_counter()
    q = quality_file(ortho, quality, cfg.quality, overwrite=True)
    t_quality = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = reduce_files(result, sha_path, decision, cfg, quality_path=quality, overwrite=True)
    t_reduce = time.perf_counter() - t0
    draw(ortho, decision, args.png)
    s = q.summary()
    print(f"orthomosaic {W} x {H} px ({W * H / 1e6:.1f} Mpx) at {GSD * 100:g} cm/px; quality {t_quality:.1f} s "
          f"({s['cells']} cells, {s['tiles']} tiles), reduce {t_reduce:.1f} s\n")
    print("| coverage quality | m² | % of extent |\n|---|---:|---:|")
    for k, v in sorted(s["area_m2_by_class"].items()):
        print(f"| {k} | {v:,.0f} | {100 * v / s['total_m2']:.1f} |")
    row = res.table.iloc[0]
    print("\n| SHA-AZ-0417 | m² | ha | % of SHA |\n|---|---:|---:|---:|")
    for label, key in (("SHA area", "sha_m2"), ("imaged adequately and analysed", "adeq_m2"),
                       ("imaged inadequately", "inadeq_m2"), ("not imaged", "noimg_m2"),
                       ("evidence (hazard polygons)", "evid_m2"), ("proposed remaining", "remain_m2"),
                       ("proposed cancellation", "cancel_m2")):
        v = float(row[key])
        print(f"| {label} | {v:,.0f} | {v / 1e4:.3f} | {100 * v / float(row['sha_m2']):.1f} |")
    print("\n| remaining by reason | m² |\n|---|---:|")
    for reason, v in res.remaining.groupby("reason")["area_m2"].sum().items():
        print(f"| {reason} | {v:,.0f} |")
    print(f"\nstatus: {row['status']}\nnote: {row['note']}\nitems: {row['evidence']}, "
          f"hazard polygons: {row['n_hazpoly']}")
    for n in res.notes:
        print(f"note: {n}")
    print(f"\npicture: {args.png}")


if __name__ == "__main__":
    main()
