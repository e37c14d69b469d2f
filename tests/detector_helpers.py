"""Shared helpers for detector tests: a toy YOLO dataset (real PNG files) and a tiny training config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np

from rams.detector.train import TrainConfig

TINY_MODEL = {"widths": [8, 16, 16, 16], "depths": [0, 1, 1], "neck_width": 16, "head_width": 16}


def write_toy_yolo(root: Path, n_per_zone: int = 12, zones: tuple[str, ...] = ("1", "2"), size: int = 96) -> Path:
    """Yellow 10 px squares (class 0) and cyan 18 px squares (class 1) on grey noise, YOLO labels."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    for zone in zones:
        rng = np.random.default_rng(int(zone))
        for i in range(n_per_zone):
            img = (rng.random((size, size, 3)) * 60 + 40).astype(np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(0, 2))
                s = 10 if k == 0 else 18
                c, r = (int(v) for v in rng.integers(s, size - s, size=2))
                img[r - s // 2 : r + s // 2, c - s // 2 : c + s // 2] = (230, 220, 40) if k == 0 else (40, 200, 230)
                lines.append(f"{k} {c / size:.6f} {r / size:.6f} {s / size:.6f} {s / size:.6f}")
            name = f"{i}_Zone_{zone}_frame"
            iio.imwrite(root / "images" / f"{name}.png", img)
            (root / "labels" / f"{name}.txt").write_text("\n".join(lines))
    return root


def tiny_config(yolo: Path, **overrides: Any) -> TrainConfig:
    """A training config that runs a step in well under a second on one CPU thread."""
    src = {
        "kind": "yolo",
        "path": str(yolo),
        "class_map": {0: "pmn", 1: "tm62"},
        "group_pattern": r"_Zone_(\d+)_",
    }
    cfg: dict[str, Any] = {
        "name": "tiny",
        "classes": ["pmn", "tm62"],
        "chip_size_px": 64,
        "batch_size": 8,
        "steps_per_epoch": 8,
        "max_epochs": 3,
        "model": TINY_MODEL,
        "optim": {"lr": 0.005, "warmup_steps": 4, "ema_decay": 0.9},
        "sources": [{**src, "groups": ["1"]}],
        "validation": {"n_chips": 6, "chip_size_px": 96, "sources": [{**src, "groups": ["2"]}]},
        "augment": {"p_degrade": 0.0},
        "threads": 1,
    }
    cfg.update(overrides)
    return TrainConfig.model_validate(cfg)
