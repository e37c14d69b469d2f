"""Tie the coverage-quality thresholds to detector recall: degrade a synthetic scene step by step, measure both.

For each degradation step (Gaussian blur of sigma px at the model GSD; darkening by a gain), the scene's
orthomosaic is degraded, ``rams detect`` runs with the shipped default model, detections are matched to the
truth (``rams.evaluate``, any-ordnance recall at the default operating point), and ``rams.quality`` measures
the same image (median re-blur index and dark fraction over cells, and the share of cells it classes as
adequate). The table shows where recall drops and what the quality metric reads there, which is where
``blur_max`` / ``exposure_max_fraction`` belong (``configs/decisions-default.yaml``). This single-scene mode is
the first calibration (v1.0.0, anti-tank mines only); the per-class limits come from the mode below.

The scene is anti-tank mines on ploughed ground (the classes the default model finds reliably; a model that
misses small AP mines on sharp imagery cannot show where blur starts to hide them).

    .venv/bin/python scripts/sweep_quality_recall.py --workdir /tmp/rams-sweep

**Per class** (``--scenes-dir``): the same question for every class, on many rendered scenes of mixed targets
(those of ``scripts/eval_model.py``). Each scene is read once at the model's GSD as ``rams detect`` reads it, then
degraded step by step at that GSD and written to a plain GeoTIFF; ``rams detect`` runs on it down to score 0.05
and the card's per-class thresholds of ``--operating-point`` are applied afterwards. Every truth item (>= 8 px at
the model GSD, centre imaged) gets the re-blur index and dark fraction of its own quality cell (``rams.quality``,
``cell_size_m`` of the decisions defaults) and found / missed (class-aware, ``rams.evaluate.match_points``,
default radii). Item-steps are binned per class by their cell's re-blur index; the *paired drop* of a bin is the
recall of the same items on the sharp image minus their recall in the bin, which cancels the differences
between the items that land in each bin (terrain, contrast, size). ``limits`` then reads, per class, the highest
re-blur index up to which no bin with enough item-steps loses more than ``--max-drop``.

    .venv/bin/python scripts/sweep_quality_recall.py --scenes-dir runs/mixed05 --seeds 9301-9324 \
        --workdir runs/sweep-classes --json runs/sweep-classes/sweep.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

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

# ---------------------------------------------------------------------------------------------------------
# Per class, over many scenes

BLUR_BINS = tuple(round(0.20 + 0.05 * i, 2) for i in range(11))  # 0.20 ... 0.70 (re-blur index)
CLASS_SIGMAS = (0.0, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
CLASS_GAINS = (0.5, 0.3, 0.2, 0.15, 0.1)
GREY_BINS = (0.0, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20, 0.30, 1.0)  # mean grey of a cell (0-1)


def read_at_model_gsd(ortho: Path, bands: tuple[str, ...], gsd_m: float) -> tuple[np.ndarray, np.ndarray, Any]:
    """The whole mosaic as ``rams detect`` reads it for the model: float32 (bands, rows, cols) in [0, 1], valid
    mask, and its grid (transform, CRS)."""
    from rasterio.windows import Window

    from rams.config import ReadConfig
    from rams.raster import make_reader, open_raster

    with open_raster(ortho) as src, make_reader(src, bands, gsd_m, ReadConfig()) as r:
        td = r.read(Window(0, 0, r.grid.width, r.grid.height))
        return td.image, td.valid, r.grid


def write_degraded(path: Path, image: np.ndarray, valid: np.ndarray, grid: Any, sigma_px: float, gain: float
                   ) -> np.ndarray:  # fmt: skip
    """Blur (Gaussian, ``sigma_px`` at the model GSD) and darken (``gain``) ``image``, quantise to 8 bit and write
    an RGBA GeoTIFF on ``grid`` (alpha = valid); returns the degraded image in [0, 1] as the reader gives it back."""
    import rasterio
    from rasterio.enums import ColorInterp
    from scipy import ndimage as ndi

    out = np.stack([ndi.gaussian_filter(b, sigma_px) if sigma_px > 0 else b for b in image]) * gain
    q = np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": q.shape[0] + 1,
               "dtype": "uint8", "crs": grid.crs, "transform": grid.transform, "tiled": True,
               "blockxsize": 512, "blockysize": 512}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(q, indexes=list(range(1, q.shape[0] + 1)))
        dst.write(alpha, indexes=q.shape[0] + 1)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha][: q.shape[0] + 1]
    return q.astype(np.float32) / 255


def cell_metrics(image: np.ndarray, valid: np.ndarray, gsd_m: float, bands: tuple[str, ...], cell_px: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Re-blur index, dark fraction and mean grey of every ``cell_px`` cell (NaN where not measurable), as arrays
    (cell rows, cell cols), measured by ``rams.quality`` with the decisions defaults."""
    from rams.quality import QualityConfig, assess_cells

    cfg = QualityConfig(analysis_gsd_m=gsd_m)
    rows, cols = valid.shape
    nr, nc = -(-rows // cell_px), -(-cols // cell_px)
    blur = np.full((nr, nc), np.nan)
    dark = np.full((nr, nc), np.nan)
    grey = np.full((nr, nc), np.nan)
    for i in range(nr):  # one band of cells at a time, with a cell of context above and below
        r0, r1 = max(i * cell_px - cell_px, 0), min((i + 2) * cell_px, rows)
        cells = [(slice(i * cell_px - r0, min((i + 1) * cell_px, rows) - r0), slice(j * cell_px,
                  min((j + 1) * cell_px, cols))) for j in range(nc)]  # fmt: skip
        for j, m in enumerate(assess_cells(image[:, r0:r1], valid[r0:r1], gsd_m, bands, cfg, cells)):
            if m.n_valid_px and m.valid_fraction >= cfg.min_valid_fraction:
                blur[i, j], dark[i, j], grey[i, j] = m.blur_index, m.dark_fraction, m.mean_grey
    return blur, dark, grey


def sweep_scene(folder: Path, model: str, point: str | None, steps: list[tuple[str, float]], workdir: Path,
                min_px: float, cell_m: float) -> list[dict[str, Any]]:  # fmt: skip
    """Item-step records of one scene: class, step, the item's cell re-blur index and dark fraction, found."""
    import pyogrio
    from scene_cache import found_at

    from rams.detect import DetectConfig, run_detect
    from rams.detector.bundle import load_bundle

    card = load_bundle(model).card
    thresholds = card.thresholds(point)
    bands = tuple(card.bands)
    image, valid, grid = read_at_model_gsd(folder / "ortho.tif", bands, card.gsd_m)
    truth = pyogrio.read_dataframe(folder / "truth.gpkg", layer="truth").to_crs(grid.crs)
    cols, rows = ~grid.transform * (truth.geometry.centroid.x.to_numpy(), truth.geometry.centroid.y.to_numpy())
    r_i, c_i = np.floor(rows).astype(int), np.floor(cols).astype(int)
    inside = (r_i >= 0) & (r_i < grid.height) & (c_i >= 0) & (c_i < grid.width)
    imaged = np.zeros(len(truth), bool)
    imaged[inside] = valid[r_i[inside], c_i[inside]]
    length_px = truth["length_m"].to_numpy(float) / card.gsd_m
    classes = truth["class"].astype(str).to_numpy()
    use = imaged & (length_px >= min_px) & np.isin(classes, list(thresholds))
    cell_px = max(int(round(cell_m / card.gsd_m)), 16)
    area_ha = float(valid.sum()) * card.gsd_m**2 / 1e4
    out = []
    for kind, value in steps:
        deg = workdir / "deg.tif"
        det = workdir / "deg-det.gpkg"
        img = write_degraded(deg, image, valid, grid, value if kind == "blur" else 0.0,
                             value if kind == "gain" else 1.0)  # fmt: skip
        run_detect(deg, det, DetectConfig(model=model, threshold=0.05, force=True), overwrite=True)
        found, n_fp = found_at(det, truth, thresholds)
        blur, dark, grey = cell_metrics(img, valid, card.gsd_m, bands, cell_px)
        for k in np.flatnonzero(use):
            out.append({"scene": folder.name, "item": int(k), "class": classes[k], "kind": kind, "step": value,
                        "blur": float(blur[r_i[k] // cell_px, c_i[k] // cell_px]),
                        "dark": float(dark[r_i[k] // cell_px, c_i[k] // cell_px]),
                        "grey": float(grey[r_i[k] // cell_px, c_i[k] // cell_px]), "found": bool(found[k])})
        out.append({"scene": folder.name, "kind": kind, "step": value, "false_alarms": n_fp, "area_ha": area_ha,
                    "median_blur": float(np.nanmedian(blur)), "median_dark": float(np.nanmedian(dark))})
    return out


def _bins(items: list[dict[str, Any]], sharp: dict[Any, bool], key: str, edges: tuple[float, ...]
          ) -> list[dict[str, Any]]:  # fmt: skip
    """Item-steps binned by ``key``: recall, the same items' sharp recall and the paired drop per bin."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = [r for r in items if lo <= r[key] < hi]
        n = len(sel)
        rec = sum(r["found"] for r in sel) / n if n else None
        base = sum(sharp.get((r["scene"], r["item"]), False) for r in sel) / n if n else None
        rows.append({"bin": [lo, hi], "item_steps": n, "recall": rec, "sharp_recall": base,
                     "drop": None if rec is None or base is None else base - rec})  # fmt: skip
    return rows


def _limit(rows: list[dict[str, Any]], min_n: int, max_drop: float, edge: int) -> tuple[float | None, str]:
    """Walk the bins from the good end (``rows`` ordered from it): the far ``edge`` (0 lower, 1 upper) of the
    last bin before one that loses more than ``max_drop``, or before one with fewer than ``min_n`` item-steps
    once some bin counted."""
    limit: float | None = None
    for r in rows:
        lo, hi = r["bin"]
        if r["item_steps"] < min_n:
            if limit is not None:
                return limit, f"next bin {lo:.2f}-{hi:.2f} has {r['item_steps']} item-steps"
            continue
        if r["drop"] > max_drop:
            return limit, f"bin {lo:.2f}-{hi:.2f} loses {r['drop']:.2f}"
        limit = r["bin"][edge]
    return limit, "every bin within the drop" if limit is not None else "no bin with enough item-steps"


def class_tables(records: list[dict[str, Any]], min_n: int, max_drop: float) -> dict[str, Any]:
    """Per step and per class: recall; per class and cell re-blur index (blur steps) or mean grey (sharp and
    darkening steps): recall, the same items' sharp recall, the paired drop; each class's limits (see the module
    docstring)."""
    items = [r for r in records if "item" in r]
    scenes = [r for r in records if "item" not in r]
    sharp = {(r["scene"], r["item"]): r["found"] for r in items if r["kind"] == "blur" and r["step"] == 0.0}
    classes = sorted({r["class"] for r in items})
    steps = sorted({(r["kind"], r["step"]) for r in scenes},
                   key=lambda ks: (ks[0] != "blur", -ks[1] if ks[0] == "gain" else ks[1]))  # fmt: skip
    per_step = []
    for kind, value in steps:
        sel = [r for r in items if r["kind"] == kind and r["step"] == value]
        sc = [r for r in scenes if r["kind"] == kind and r["step"] == value]
        area = sum(r["area_ha"] for r in sc)
        row: dict[str, Any] = {"kind": kind, "step": value,
                               "median_blur": float(np.median([r["median_blur"] for r in sc])),
                               "median_dark": float(np.median([r["median_dark"] for r in sc])),
                               "fp_per_ha": sum(r["false_alarms"] for r in sc) / area if area else None}  # fmt: skip
        for cls in classes:
            f = [r["found"] for r in sel if r["class"] == cls]
            row[cls] = {"items": len(f), "found": int(sum(f))}
        per_step.append(row)
    per_bin: dict[str, list[dict[str, Any]]] = {}
    per_grey: dict[str, list[dict[str, Any]]] = {}
    limits: dict[str, Any] = {}
    for cls in classes:
        mine = [r for r in items if r["class"] == cls]
        blur_items = [r for r in mine if r["kind"] == "blur" and np.isfinite(r["blur"])]
        grey_items = [r for r in mine if (r["kind"] == "gain" or r["step"] == 0.0) and np.isfinite(r["grey"])]
        per_bin[cls] = _bins(blur_items, sharp, "blur", BLUR_BINS)
        per_grey[cls] = _bins(grey_items, sharp, "grey", GREY_BINS)
        n_items = len({(r["scene"], r["item"]) for r in blur_items})
        sharp_rec = [sharp[(r["scene"], r["item"])] for r in blur_items if r["step"] == 0.0]
        sr = sum(sharp_rec) / len(sharp_rec) if sharp_rec else 0.0
        if n_items < 50 or sr < 0.30:
            why = f"not measurable: {n_items} items, sharp recall {sr:.2f}"
            limits[cls] = {"blur_max": None, "blur_why": why, "grey_min": None, "grey_why": why}
            continue
        b, bw = _limit(per_bin[cls], min_n, max_drop, 1)
        g, gw = _limit(list(reversed(per_grey[cls])), min_n, max_drop, 0)
        limits[cls] = {"blur_max": b, "blur_why": bw, "grey_min": g, "grey_why": gw, "items": n_items,
                       "sharp_recall": sr}  # fmt: skip
    return {"per_step": per_step, "per_blur": per_bin, "per_grey": per_grey, "limits": limits}


def _print_bins(res: dict[str, Any], key: str, edges: tuple[float, ...], limit: str, title: str) -> None:
    heads = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    print(f"\n{title}: recall in the bin / the same items sharp (item-steps)")
    print("| class | " + " | ".join(heads) + " | limit |")
    print("|---|" + "---|" * len(heads) + "---|")
    for cls, rows in res[key].items():
        cells = [f"{r['recall']:.2f}/{r['sharp_recall']:.2f} ({r['item_steps']})" if r["item_steps"] else "-"
                 for r in rows]  # fmt: skip
        lim = res["limits"][cls]
        lt = f"{lim[limit]:.2f}" if lim[limit] is not None else "-"
        why = lim[limit.split("_")[0] + "_why"]
        print(f"| {cls} | " + " | ".join(cells) + f" | {lt} ({why}) |")


def print_class_tables(res: dict[str, Any]) -> None:
    classes = sorted(res["per_blur"])
    print("\nPer step: class-aware recall (found / items); median cell re-blur index and dark fraction; FP/ha")
    print("| step | median re-blur | median dark | FP/ha | " + " | ".join(classes) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(classes))
    for row in res["per_step"]:
        name = f"blur sigma {row['step']:g} px" if row["kind"] == "blur" else f"gain {row['step']:g}"
        cells = [f"{row[c]['found'] / row[c]['items']:.2f} ({row[c]['found']}/{row[c]['items']})"
                 if row[c]["items"] else "-" for c in classes]  # fmt: skip
        fp = f"{row['fp_per_ha']:.1f}" if row["fp_per_ha"] is not None else "-"
        print(f"| {name} | {row['median_blur']:.3f} | {row['median_dark']:.3f} | {fp} | " + " | ".join(cells) + " |")
    _print_bins(res, "per_blur", BLUR_BINS, "blur_max", "Per cell re-blur index (blur steps pooled)")
    _print_bins(res, "per_grey", GREY_BINS, "grey_min", "Per cell mean grey (sharp and darkening steps pooled)")


def main_classes(a: argparse.Namespace) -> None:
    import json

    from scene_cache import parse_seeds

    a.workdir.mkdir(parents=True, exist_ok=True)
    steps = [("blur", float(v)) for v in a.sigmas.split(",")] + [("gain", float(v)) for v in a.gains.split(",")
                                                                  if v]  # fmt: skip
    records: list[dict[str, Any]] = []
    parts = a.workdir / "records.jsonl"
    done = set()
    if parts.exists() and not a.restart:  # resume: scenes already swept with the same steps are kept
        for line in parts.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("steps") == [list(s) for s in steps] and rec.get("model") == a.model:
                records += rec["records"]
                done.add(rec["scene"])
    for seed in parse_seeds(a.seeds):
        folders = sorted(Path(a.scenes_dir).glob(f"s{seed}-*"))
        if not folders:
            sys.exit(f"no scene for seed {seed} in {a.scenes_dir}; render it with scripts/eval_model.py first")
        if folders[0].name in done:
            continue
        t0 = time.perf_counter()
        recs = sweep_scene(folders[0], a.model, a.operating_point, steps, a.workdir, a.min_px, a.cell_m)
        records += recs
        with parts.open("a") as f:
            f.write(json.dumps({"scene": folders[0].name, "model": a.model, "steps": [list(s) for s in steps],
                                "records": recs}) + "\n")  # fmt: skip
        print(f"{folders[0].name}: {sum('item' in r for r in recs)} item-steps, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    res = class_tables(records, a.min_n, a.max_drop)
    print_class_tables(res)
    if a.json:
        a.json.write_text(json.dumps({"model": a.model, "operating_point": a.operating_point, "seeds": a.seeds,
                                      "scenes_dir": str(a.scenes_dir), "min_n": a.min_n, "max_drop": a.max_drop,
                                      **res}, indent=1))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rams-sweep"))
    ap.add_argument("--classes", default="tm62", help="threat classes the quality check is asked about")
    ap.add_argument("--scenes-dir", type=Path, default=None,
                    help="per-class mode: rendered scenes of scripts/eval_model.py (s<seed>-<terrain>-<gsd>/)")
    ap.add_argument("--seeds", default="9301-9324", help="per-class mode: scene seeds (e.g. 9301-9324,9401)")
    ap.add_argument("--model", default="default", help="per-class mode: model bundle")
    ap.add_argument("--operating-point", default=None, help="per-class mode: card point (default: its default)")
    ap.add_argument("--sigmas", default=",".join(f"{v:g}" for v in CLASS_SIGMAS),
                    help="per-class mode: blur steps, Gaussian sigma in model pixels (0 = the sharp reference)")
    ap.add_argument("--gains", default=",".join(f"{v:g}" for v in CLASS_GAINS),
                    help="per-class mode: darkening steps (empty: none)")
    ap.add_argument("--min-px", type=float, default=8.0, help="per-class mode: smallest item length (model px)")
    ap.add_argument("--cell-m", type=float, default=2.5, help="per-class mode: quality cell size (metres)")
    ap.add_argument("--min-n", type=int, default=40, help="per-class mode: fewest item-steps a bin needs")
    ap.add_argument("--max-drop", type=float, default=0.05, help="per-class mode: largest paired recall drop")
    ap.add_argument("--restart", action="store_true", help="per-class mode: ignore records of an earlier run")
    ap.add_argument("--json", type=Path, default=None, help="per-class mode: write the tables here")
    a = ap.parse_args()
    if a.scenes_dir is not None:
        if "0" not in [f"{float(v):g}" for v in a.sigmas.split(",")]:
            sys.exit("--sigmas must include 0, the sharp reference the paired drops are taken against")
        main_classes(a)
        return
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
