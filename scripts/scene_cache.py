"""Shared by the analysis scripts: seed lists and the rendered scenes / cached detections of scripts/eval_model.py.

``scripts/eval_model.py`` renders each scene once into ``SCENES_DIR/s<seed>-<terrain>-<gsd>/`` (``ortho.tif``,
``truth.gpkg`` with layers ``truth`` and ``confusers``) and caches a model's detections beside it as
``det-<model name>-<first 8 hex of its weights hash>.gpkg``. The analysis scripts read those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def parse_seeds(text: str) -> list[int]:
    """'9001,9002' or '8001-8012' (inclusive ranges) or a mix."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def detections_name(card: Any) -> str:
    """File name of a model's cached detections in a scene folder."""
    return f"det-{card.name}-{card.weights_sha256[:8]}.gpkg"


def scene_detections(root: Path, seeds: list[int], card: Any, model: str) -> list[tuple[Path, Path]] | str:
    """(scene folder, cached detections) per seed, or a one-line error naming what to run first."""
    out: list[tuple[Path, Path]] = []
    for seed in seeds:
        folders = sorted(root.glob(f"s{seed}-*"))
        if not folders:
            return f"no scene for seed {seed} in {root}; run scripts/eval_model.py first"
        det = folders[0] / detections_name(card)
        if not det.exists():
            return f"{det} missing; run scripts/eval_model.py --model {model} on these seeds first"
        out.append((folders[0], det))
    return out


def found_at(det_path: Path, truth: Any, thresholds: dict[str, float]) -> tuple[Any, int]:
    """Class-aware found flag of every ``truth`` item (numpy bool array) and the number of false alarms, for the
    detections of ``det_path`` kept at per-class ``thresholds`` (a label without one is dropped), matched as
    ``rams evaluate`` matches (``match_points``, default class radii, in the truth's CRS)."""
    import numpy as np
    import pyogrio

    from rams.evaluate import default_radius_m, match_points

    dets = pyogrio.read_dataframe(det_path, layer="detections").to_crs(truth.crs)
    keep = dets["score"].to_numpy(float) >= np.array([thresholds.get(str(lab), 1.0) for lab in dets["label"]])
    dets = dets[keep]
    c, t = dets.geometry.centroid, truth.geometry.centroid
    tc = truth["class"].astype(str).to_numpy()
    m = match_points(
        np.stack([c.x.to_numpy(), c.y.to_numpy()], 1), dets["score"].to_numpy(float),
        np.stack([t.x.to_numpy(), t.y.to_numpy()], 1), np.array([default_radius_m(x) for x in tc]),
        pred_labels=dets["label"].astype(str).to_numpy(), truth_labels=tc,
    )  # fmt: skip
    return m.truth_match >= 0, int((m.pred_match < 0).sum())
