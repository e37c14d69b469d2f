#!/usr/bin/env python
"""Rank model bundles on whole synthetic scenes with the training run's own selection metric.

``rams train`` chooses its epoch with :func:`rams.detector.train.validate`: class-aware recall at a false-alarm
rate per hectare, items >= ``min_size_px`` long. With ``validation.scenes`` it counts that over whole scenes
(:mod:`rams.detector.valscenes`). This script applies the same function to finished bundles, so that checkpoints
of a run (or runs) can be compared, or re-chosen, on hectares of ground after the fact, in memory and without
GDAL files (a 30 x 30 m scene at 1 cm renders in ~5 s and is scored in ~1-2 s per model on two CPU cores):

    python scripts/select_on_scenes.py --model runs/stage3-best --model runs/stage3-last --seeds 8301-8312

Scenes are rendered at each model's GSD (``rams synth`` pixels; seeds, terrains cycled, size, targets, density
as for ``rams synth``), cut into tiles with cores as ``rams detect`` tiles a mosaic. Unlike
``scripts/eval_model.py`` nothing is written and no ``rams detect`` runs: seam duplicates are not merged (a little
pessimistic on false alarms) and the scenes are not read through another GSD. Prints one table; ``--json`` also
writes the numbers. Use seeds no training or evaluation scene uses (evaluation: 9001-9006, calibration:
8001-8024).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scene_cache import parse_seeds  # noqa: E402

TERRAINS = ("ploughed", "dry_grass", "crop", "gravel", "sand", "mixed")


def scene_specs(seeds: list[int], terrains: list[str], size_m: tuple[float, float], targets: str,
                density: float, source_gsd_m: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    return [
        {"seed": s, "terrain": terrains[i % len(terrains)], "size_m": size_m, "targets": targets,
         "density_per_ha": density, **({"source_gsd_m": source_gsd_m} if source_gsd_m else {})}  # fmt: skip
        for i, s in enumerate(seeds)
    ]


def score_bundle(model: str, specs: list[dict[str, Any]], fp_per_ha: float, min_px: float, tile: int,
                 cache: dict[tuple[Any, ...], Any]) -> dict[str, Any]:  # fmt: skip
    """``validate()`` of one bundle on the scenes (the rendered set is cached per GSD, bands and classes)."""
    import torch

    from rams.detector.bundle import load_bundle
    from rams.detector.datasets import SourceContext
    from rams.detector.train import TrainConfig, build_val_set, validate

    bundle = load_bundle(model)
    card = bundle.card
    if not card.training.config:
        raise SystemExit(f"{model}: its card records no training config; cannot rebuild its validation settings")
    cfg = TrainConfig.model_validate(card.training.config)
    vd = {**cfg.validation.model_dump(mode="json"), "sources": [], "scenes": specs, "chip_size_px": tile,
          "fp_per_ha": fp_per_ha, "min_size_px": min_px}  # fmt: skip
    cfg = TrainConfig.model_validate({**cfg.model_dump(mode="json"), "validation": vd})
    key = (cfg.gsd_m, tuple(cfg.bands), cfg.class_names, tile, cfg.tile_overlap_px, min_px)
    t0 = time.perf_counter()
    if key not in cache:
        cache[key] = build_val_set(cfg, SourceContext(cfg.class_names, tuple(cfg.bands), cfg.gsd_m, tile), 0)
    val = cache[key]
    t1 = time.perf_counter()
    m = validate(bundle.build_model().eval(), val, cfg, torch.device("cpu"))
    t2 = time.perf_counter()
    return {
        "model": model,
        "name": card.name,
        "steps": card.training.steps,
        "gsd_m": cfg.gsd_m,
        "tiles": m["n_chips"],
        "area_ha": m["area_ha"],
        "n_items": m["n_items"],
        "class_aware": m["class_aware"],
        "any_ordnance": m["any_ordnance"],
        "per_class": m["per_class"],
        "render_s": round(t1 - t0, 1),
        "score_s": round(t2 - t1, 1),
    }


def _wilson(tp: int, n: int) -> str:
    from rams.evaluate import wilson_interval

    ci = wilson_interval(tp, n)
    return "-" if ci is None else f"{ci[0]:.2f}-{ci[1]:.2f}"


def table(rows: list[dict[str, Any]], fp_per_ha: float) -> str:
    head = (f"| model | steps | scenes ha | items | class-aware recall <= {fp_per_ha:g} FP/ha (found; 95 %) | FP/ha | "
            "any ordnance | AP (class-aware) |")  # fmt: skip
    out = [head, "|" + "---|" * 8]
    for r in rows:
        ca, an = r["class_aware"], r["any_ordnance"]
        tp = int(ca.get("tp", 0))
        rec, arec = ca.get("recall"), an.get("recall")
        out.append(
            f"| {r['model']} | {r['steps']} | {r['area_ha']:.2f} | {r['n_items']} | "
            f"{'-' if rec is None else f'{rec:.3f}'} ({tp}; {_wilson(tp, r['n_items'])}) | "
            f"{ca.get('fp_per_ha', float('nan')):.1f} | "
            f"{'-' if arec is None else f'{arec:.3f}'} | {ca.get('ap', float('nan')):.3f} |"
        )
    classes = sorted({c for r in rows for c in r["per_class"]})
    out.append("")
    out.append("| model | " + " | ".join(classes) + " |")
    out.append("|---|" + "---:|" * len(classes))
    for r in rows:
        cells = []
        for c in classes:
            pc = r["per_class"].get(c)
            cells.append("-" if not pc or pc.get("recall") is None else f"{pc['recall']:.2f} ({pc['n_items']})")
        out.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="bundle name or folder (repeat to compare)")
    ap.add_argument("--seeds", default="8301-8312", help="scene seeds, e.g. 8301-8312 or 8301,8305")
    ap.add_argument("--terrains", default=",".join(TERRAINS), help="terrains, used in turn")
    ap.add_argument("--size", default="30x30", help="scene extent in metres (WIDTHxHEIGHT)")
    ap.add_argument("--targets", default="mixed", help="target preset (rams synth --targets)")
    ap.add_argument("--density", type=float, default=600.0, help="targets per hectare")
    ap.add_argument("--source-gsd", type=float, default=None,
                    help="render the scenes at this finer GSD in metres (e.g. 0.005: a 0.5 cm flight) and bring them "
                         "to the model GSD by the block mean, as rams detect reads such a flight")  # fmt: skip
    ap.add_argument("--fp-per-ha", type=float, default=10.0)
    ap.add_argument("--min-px", type=float, default=8.0)
    ap.add_argument("--tile", type=int, default=512, help="tile side (pixels at the model GSD)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = ap.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        w, h = (float(v) for v in a.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size {a.size!r}: give WIDTHxHEIGHT in metres, e.g. 30x30")
    specs = scene_specs(parse_seeds(a.seeds), a.terrains.split(","), (w, h), a.targets, a.density, a.source_gsd)
    cache: dict[tuple[Any, ...], Any] = {}
    rows = []
    for model in a.model:
        r = score_bundle(model, specs, a.fp_per_ha, a.min_px, a.tile, cache)
        print(f"{model}: scenes ready in {r['render_s']} s, scored in {r['score_s']} s", file=sys.stderr, flush=True)
        rows.append(r)
    src = f"rendered at {a.source_gsd * 100:g} cm, block-averaged to" if a.source_gsd else "rendered at"
    print(f"{len(specs)} scenes (seeds {a.seeds}; terrains {a.terrains}; {a.size} m; {a.targets} targets, "
          f"{a.density:g}/ha; {src} each model's GSD); items >= {a.min_px:g} px at the model GSD")  # fmt: skip
    print(table(rows, a.fp_per_ha))
    if a.json:
        Path(a.json).write_text(json.dumps({"scenes": specs, "rows": rows}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
