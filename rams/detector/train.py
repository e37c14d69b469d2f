"""``rams train``: train a detector from a YAML config, validate each epoch, export a model bundle.

The loop, and why it is built this way:

* **Reproducible and resumable by construction.** Training sample ``i`` is a pure function of
  ``(seed, i)`` (source choice, chip, augmentation), the learning rate a pure function of the step, and a
  checkpoint holds model, EMA and optimizer tensors (safetensors, never pickle) plus a JSON state. Resuming
  at step ``k`` therefore replays exactly what an uninterrupted run would have done from step ``k``.
* **Data scales with cores.** A torch DataLoader draws samples in worker processes (synthetic rendering is
  the bottleneck); the model is small, so on a GPU box the workers set the pace.
* **Selected on the survey metric.** After every epoch the EMA model is run on the held-out set and scored
  with :mod:`rams.evaluate` (the same matching as ``rams evaluate``): recall at a fixed false-positive rate
  per hectare, for items at least ``min_size_px`` long. The held-out set is chips (``validation.sources``) or
  whole synthetic scenes / annotated flights tiled as ``rams detect`` tiles a mosaic (``validation.scenes`` /
  ``validation.flights``, :mod:`rams.detector.valscenes`: hectares of ground, each item counted once). The
  best epoch is kept; training stops early when it has not improved for ``patience`` epochs, or when
  ``--max-minutes`` runs out.
* **Ends in a bundle.** The best checkpoint becomes ``<out>/bundle`` (weights + card), with score thresholds
  per operating point measured on the held-out set and the exact command, config and data recorded.

No rasterio / geopandas import happens unless an ``ortho`` source is configured.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rams.classes import CLASS_NAMES
from rams.detector.augment import AugmentConfig, augment
from rams.detector.bundle import max_object_px, save_bundle
from rams.detector.datasets import (
    OrthoSourceConfig,
    Sample,
    SourceConfig,
    SourceContext,
    SyntheticSourceConfig,
    build_source,
    fit_to_size,
)
from rams.detector.loss import detection_loss, encode_targets
from rams.detector.model import ARCHITECTURE, ArchParams, build_model
from rams.detector.predict import decode, normalise, postprocess, resolve_device
from rams.detector.valscenes import ValSceneConfig
from rams.errors import ConfigError, InterruptedRun, ModelError, OutputError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "log.csv"
STEPS_FILE = "steps.csv"
CONFIG_FILE = "config.yaml"
BUNDLE_DIR = "bundle"


# ------------------------------------------------------------------------------------------- config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimConfig(_Strict):
    """AdamW with linear warm-up and cosine decay over ``max_epochs * steps_per_epoch`` steps."""

    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_steps: int = Field(default=200, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0, le=1)
    grad_clip: float = Field(default=10.0, gt=0)
    ema_decay: float = Field(default=0.998, ge=0, lt=1)
    """Exponential moving average of weights (0 disables); the EMA weights are validated and exported."""
    size_weight: float = 1.0
    offset_weight: float = 1.0


class ValidationConfig(_Strict):
    """The held-out set scored each epoch with the project metric: chips, or whole scenes / flights."""

    sources: list[SourceConfig] = Field(default_factory=list)
    """Held-out chip sources (default: synthetic chips with seed 1_000_000, never used for training)."""
    scenes: list[ValSceneConfig] = Field(default_factory=list)
    """Whole synthetic scenes instead of chips (:mod:`rams.detector.valscenes`): rendered once at the model GSD,
    tiled as ``rams detect`` tiles a mosaic, every item and hectare counted once, as ``rams evaluate`` counts.
    Epochs are chosen, and the card's operating-point thresholds set, on hectares of ground."""
    flights: list[OrthoSourceConfig] = Field(default_factory=list)
    """Whole annotated orthomosaics (``kind: ortho`` entries: raster, annotations, layer, class_column, class_map,
    ...; the sampling fractions are not used), read tile by tile as ``rams detect`` reads them and counted like
    ``scenes``: a site's own held-out flights. Items are the annotations (box centre; size = the box's long side)."""
    n_chips: int = Field(default=150, ge=1)
    chip_size_px: int = Field(default=512, ge=32)
    """Side of the held-out chips; with ``scenes`` / ``flights``, of the tiles they are cut into."""
    seed: int = 999
    fp_per_ha: float = Field(default=10.0, gt=0)
    """False-positive budget at which recall is measured and the best checkpoint chosen."""
    min_size_px: float = Field(default=8.0, ge=0)
    """Items shorter than this (long side, px) are left out of the metric (too small to promise)."""
    select_on: str = "class_aware"
    """'class_aware' (a hit needs the right class) or 'any_ordnance' (any label finds the item)."""
    score_floor: float = Field(default=0.03, gt=0, lt=1)
    """Lowest score decoded in validation (the low end of the threshold curve)."""
    patience: int = Field(default=6, ge=1)
    """Stop after this many epochs without improving the selection metric by ``min_delta``."""
    min_delta: float = 0.002
    batch_size: int = Field(default=8, ge=1)
    keep: Literal["best", "last"] = "best"
    """Which epoch becomes the bundle: 'best' (chosen on the held-out chips, with early stopping) or 'last' (the
    final epoch; the chips are still scored each epoch for the log). A few hundred chips hold too few items to
    choose between epochs of a fine-tuned model (docs/detector.md); choose such a model on whole scenes."""

    @field_validator("select_on")
    @classmethod
    def _sel(cls, v: str) -> str:
        if v not in ("class_aware", "any_ordnance"):
            raise ValueError("select_on must be 'class_aware' or 'any_ordnance'")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> ValidationConfig:
        if (self.scenes or self.flights) and self.sources:
            raise ValueError("validation: give sources (held-out chips) or scenes / flights (whole ground), not both")
        return self


class TrainConfig(_Strict):
    """Everything a training run needs (``configs/train-*.yaml``)."""

    name: str
    version: str = "0.1.0"
    description: str = ""
    classes: list[str] | None = None
    """Detector classes in label order; None: all of :data:`rams.classes.CLASS_NAMES`."""
    bands: list[str] = Field(default_factory=lambda: ["red", "green", "blue"])
    mean: list[float] | None = None
    """Per-band normalisation mean after scaling to [0, 1] (default 0.5 per band)."""
    std: list[float] | None = None
    """Per-band normalisation std (default 0.25 per band)."""
    value_range: tuple[float, float] | None = None
    """Recorded in the card for the reader (None: the default per dtype)."""
    gsd_m: float = Field(default=0.01, gt=0)
    gsd_range_m: tuple[float, float] = (0.005, 0.012)
    tile_size_px: int = 512
    overlap_px: int | None = None
    """Tile overlap for inference (default: largest object + 16 px, rounded up to 8)."""
    chip_size_px: int = Field(default=256, ge=32)
    model: ArchParams = Field(default_factory=ArchParams)
    sources: list[SourceConfig]
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    batch_size: int = Field(default=16, ge=1)
    steps_per_epoch: int = Field(default=250, ge=1)
    max_epochs: int = Field(default=40, ge=1)
    seed: int = 0
    device: str = "cpu"
    num_workers: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, ge=1)
    operating_points: dict[str, float] = Field(
        default_factory=lambda: {"high_recall": 30.0, "balanced": 10.0, "precise": 2.0}
    )
    """Operating point name -> false positives per hectare on the held-out set (sets its threshold)."""
    default_operating_point: str = "balanced"
    notes: list[str] = Field(default_factory=list)
    """Copied into the card (attributions, caveats)."""
    init_weights: str | None = None
    """Start from this model bundle's weights (a name in ``models/`` or a bundle folder) instead of random ones:
    fine-tuning on local data, or a second training stage. The bundle's SHA-256 is checked and its architecture,
    classes, bands and normalisation must equal this config's; its name, version and hash go into the card."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        unknown = [c for c in self.class_names if c not in CLASS_NAMES]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; known: {', '.join(CLASS_NAMES)}")
        nb = len(self.bands)
        for what, vals in (("mean", self.mean), ("std", self.std)):
            if vals is not None and len(vals) != nb:
                raise ValueError(f"{what} needs {nb} values (one per band)")
        if self.chip_size_px % 16 or self.validation.chip_size_px % 16 or self.tile_size_px % 16:
            raise ValueError("chip_size_px, validation.chip_size_px and tile_size_px must be multiples of 16")
        if not self.sources:
            raise ValueError("sources must list at least one training source")
        if self.default_operating_point not in self.operating_points:
            raise ValueError(f"default_operating_point {self.default_operating_point!r} is not in operating_points")
        return self

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.classes) if self.classes else CLASS_NAMES

    @property
    def norm_mean(self) -> list[float]:
        return self.mean or [0.5] * len(self.bands)

    @property
    def norm_std(self) -> list[float]:
        return self.std or [0.25] * len(self.bands)

    @property
    def tile_overlap_px(self) -> int:
        if self.overlap_px is not None:
            return self.overlap_px
        return int(math.ceil((max_object_px(list(self.class_names), self.gsd_m) + 16) / 8) * 8)

    @property
    def total_steps(self) -> int:
        return self.max_epochs * self.steps_per_epoch

    def validation_sources(self) -> list[Any]:
        if self.validation.sources:
            return list(self.validation.sources)
        return [SyntheticSourceConfig(seed=1_000_000, pool_size=self.validation.n_chips)]


# ------------------------------------------------------------------------------------------- data


class TrainDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Sample ``i`` of a run: source by weight, sample, augment, encode; a pure function of ``(seed, i)``."""

    def __init__(
        self,
        sources: list[Any],
        weights: list[float],
        seed: int,
        chip_size: int,
        num_classes: int,
        stride: int,
        augment_cfg: AugmentConfig | None,
        length: int,
    ) -> None:
        self.sources = sources
        w = np.asarray(weights, np.float64)
        self.p = w / w.sum()
        self.seed = seed
        self.chip_size = chip_size
        self.num_classes = num_classes
        self.stride = stride
        self.augment_cfg = augment_cfg
        self.length = length

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Sample:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, index])
        k = int(rng.choice(len(self.sources), p=self.p)) if len(self.sources) > 1 else 0
        s = self.sources[k].sample(rng, index)
        if self.augment_cfg is not None:
            return augment(s, rng, self.augment_cfg, self.chip_size)
        return fit_to_size(s, self.chip_size, rng)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.sample(int(index))
        t = encode_targets(s, self.num_classes, self.stride)
        out = {k: torch.from_numpy(v) for k, v in t.items()}
        out["image"] = torch.from_numpy(np.ascontiguousarray(s.image, np.float32))
        out["valid"] = torch.from_numpy(np.ascontiguousarray(s.valid))
        return out


class RangeSampler(torch.utils.data.Sampler[int]):
    """Yields global sample indices ``start .. stop - 1`` in order (resume = start later)."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _identity(x: Any) -> Any:
    return x


@dataclass
class ValSet:
    """The held-out set in memory: chips (uint8, as 8-bit mosaics are) and their items in one pixel frame.

    Chip ``i`` lies at ``offsets[i]`` (x, y) of the frame and owns the detections centred in ``cores[i]``
    (chip-local ``c0, r0, c1, r1``, half-open); items are points of the frame. Held-out chips lie side by side
    and own all of themselves; whole scenes (:mod:`rams.detector.valscenes`) are tiled with overlap, as
    ``rams detect`` tiles a mosaic, so that every item and every hectare counts once.
    """

    images: np.ndarray  # uint8 (N, C, H, W)
    valid: np.ndarray  # bool (N, H, W)
    offsets: np.ndarray  # float (N, 2): x, y of each chip's top-left pixel in the frame
    cores: np.ndarray  # int (N, 4): c0, r0, c1, r1 (chip-local) of the part each chip owns
    truth_xy: np.ndarray  # float (M, 2): item centres in the frame
    truth_labels: np.ndarray  # int (M,): model class index
    truth_keep: np.ndarray  # bool (M,): counted; False = ignored (a detection on it counts neither way)
    area_px: int  # imaged pixels the chips own
    n_scenes: int = 0  # 0: held-out chips

    @property
    def area_m2_px(self) -> int:
        return self.area_px

    def describe(self, gsd_m: float) -> str:
        what = f"{len(self.images)} tiles of {self.n_scenes} whole scenes / flights" if self.n_scenes else (
            f"{len(self.images)} held-out chips")  # fmt: skip
        return f"{what}, {self.area_px * gsd_m**2 / 1e4:.3f} ha, {int(self.truth_keep.sum())} items counted"


def build_val_set(cfg: TrainConfig, ctx: SourceContext, num_workers: int) -> ValSet:
    """Render / read the held-out set once (no augmentation): whole scenes if configured, else chips."""
    if cfg.validation.scenes or cfg.validation.flights:
        from rams.detector.valscenes import build_scene_val_set

        return build_scene_val_set(cfg, ctx.classes, ctx.bands, num_workers)
    vctx = SourceContext(ctx.classes, ctx.bands, ctx.gsd_m, cfg.validation.chip_size_px, ctx.float_range)
    sources = [build_source(s, vctx) for s in cfg.validation_sources()]
    ds = TrainDataset(
        sources, [s.weight for s in cfg.validation_sources()], cfg.validation.seed, vctx.chip_size_px,
        len(ctx.classes), 4, None, cfg.validation.n_chips,
    )  # fmt: skip
    n = cfg.validation.n_chips
    size = vctx.chip_size_px
    images = np.zeros((n, len(ctx.bands), size, size), np.uint8)
    valid = np.zeros((n, size, size), bool)
    t_xy, t_lab, t_keep = [], [], []
    stride_off = float(size + 1000)  # chips laid side by side in one pixel frame for one matching
    loader = torch.utils.data.DataLoader(
        _SampleList(ds), batch_size=None, collate_fn=_identity, num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers else None, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    for i, s in enumerate(loader):
        images[i] = np.rint(np.clip(s.image, 0, 1) * 255).astype(np.uint8)
        valid[i] = s.valid
        b = s.boxes_xyxy_px
        t_xy.append(np.stack([(b[:, 0] + b[:, 2]) / 2 + i * stride_off, (b[:, 1] + b[:, 3]) / 2], axis=1))
        t_lab.append(s.labels)
        long_side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        t_keep.append(~s.ignore & (long_side >= cfg.validation.min_size_px))
    return ValSet(
        images=images,
        valid=valid,
        offsets=np.stack([np.arange(n) * stride_off, np.zeros(n)], axis=1),
        cores=np.tile(np.array([0, 0, size, size], np.int64), (n, 1)),
        truth_xy=np.concatenate(t_xy).reshape(-1, 2) if t_xy else np.zeros((0, 2)),
        truth_labels=np.concatenate(t_lab).astype(np.int64) if t_lab else np.zeros(0, np.int64),
        truth_keep=np.concatenate(t_keep).astype(bool) if t_keep else np.zeros(0, bool),
        area_px=int(valid.sum()),
    )


class _SampleList(torch.utils.data.Dataset[Sample]):
    def __init__(self, ds: TrainDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Sample:
        return self.ds.sample(i)


# ------------------------------------------------------------------------------------------- metric


def frame_predictions(
    model: torch.nn.Module, val: ValSet, cfg: TrainConfig, device: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``model``'s detections on the held-out set down to ``validation.score_floor``, each kept by the chip that
    owns its centre: (centres (K, 2) in the frame, scores, labels). On whole scenes / flights, same-class
    detections of one object seen by two tiles across a seam are then merged exactly as ``rams detect`` merges
    them (:func:`rams.merge.merge_groups` at :data:`rams.merge.MERGE_DISTANCE_M`), so a seam pair is one
    detection, not a true positive and a false alarm. (Merging before or after a threshold gives the same set:
    a detection is dropped only by a higher-scoring one.)"""
    mean = torch.tensor(cfg.norm_mean, device=device)
    std = torch.tensor(cfg.norm_std, device=device)
    vcfg = cfg.validation
    was_training = model.training
    model.eval()
    pred_xy, pred_s, pred_l, pred_box = [], [], [], []
    n, _, h, w = val.images.shape
    with torch.inference_mode():
        for b0 in range(0, n, vcfg.batch_size):
            x = torch.from_numpy(val.images[b0 : b0 + vcfg.batch_size]).to(device).float() / 255.0
            v = torch.from_numpy(val.valid[b0 : b0 + vcfg.batch_size]).to(device)
            out = model(normalise(x, v, mean, std))
            for j, (boxes, scores, labels) in enumerate(decode(out, vcfg.score_floor, 4, 500)):
                d = postprocess(boxes, scores, labels, v[j], h, w, 0.5, True)
                cx = (d.boxes_xyxy_px[:, 0] + d.boxes_xyxy_px[:, 2]) / 2
                cy = (d.boxes_xyxy_px[:, 1] + d.boxes_xyxy_px[:, 3]) / 2
                c0, r0, c1, r1 = val.cores[b0 + j]
                own = (cx >= c0) & (cx < c1) & (cy >= r0) & (cy < r1)  # the chip owns the detection's centre
                ox, oy = val.offsets[b0 + j]
                pred_xy.append(np.stack([cx[own] + ox, cy[own] + oy], axis=1))
                pred_s.append(d.scores[own])
                pred_l.append(d.labels[own])
                pred_box.append(d.boxes_xyxy_px[own] + np.array([ox, oy, ox, oy]))
    if was_training:
        model.train()
    pxy = np.concatenate(pred_xy) if pred_xy else np.zeros((0, 2))
    ps = np.concatenate(pred_s) if pred_s else np.zeros(0, np.float32)
    pl = np.concatenate(pred_l) if pred_l else np.zeros(0, np.int64)
    if val.n_scenes and len(ps):
        from rams.merge import MERGE_DISTANCE_M, MapDetection, merge_groups

        frame_boxes = np.concatenate(pred_box)
        dets = [MapDetection(b[0], b[1], b[2], b[3], float(sc), int(lab), "")
                for b, sc, lab in zip(frame_boxes.tolist(), ps.tolist(), pl.tolist(), strict=True)]  # fmt: skip
        keep = np.array(sorted(merge_groups(dets, MERGE_DISTANCE_M / cfg.gsd_m, 1.0 / cfg.gsd_m)), np.int64)
        pxy, ps, pl = pxy[keep], ps[keep], pl[keep]
    return pxy, ps, pl


def validate(
    model: torch.nn.Module,
    val: ValSet,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Run ``model`` on the held-out set; recall at ``fp_per_ha`` (pooled and per class) and thresholds.

    Items shorter than ``min_size_px`` or flagged ``ignore`` are left out: detections that match them are
    neither true nor false positives. Matching is :func:`rams.evaluate.match_points` in pixels with each
    class's default radius (:func:`rams.evaluate.default_radius_m`) converted at the working GSD.
    """
    from rams.evaluate import default_radius_m, match_points, score_detections

    classes = cfg.class_names
    vcfg = cfg.validation
    n = len(val.images)
    pxy, ps, pl = frame_predictions(model, val, cfg, device)
    txy, tl, tk = val.truth_xy, val.truth_labels, val.truth_keep
    radius = np.array([default_radius_m(classes[k]) / cfg.gsd_m for k in tl]) if len(tl) else np.zeros(0)
    area_m2 = val.area_m2_px * cfg.gsd_m**2
    rates = sorted(set(cfg.operating_points.values()) | {vcfg.fp_per_ha})

    def scored(class_aware: bool, cls: int | None = None) -> Any:
        pm = np.ones(len(ps), bool) if cls is None else pl == cls
        tm = np.ones(len(tl), bool) if cls is None else tl == cls
        m = match_points(
            pxy[pm], ps[pm], txy[tm], radius[tm],
            pred_labels=pl[pm] if class_aware else None, truth_labels=tl[tm] if class_aware else None,
        )  # fmt: skip
        matched = m.pred_match
        keep_t = tk[tm]
        # detections of left-out items count neither way
        drop = np.zeros(len(matched), bool)
        if len(keep_t):  # (no items of this class: nothing can match)
            drop = (matched >= 0) & ~keep_t[np.maximum(matched, 0)]
        is_tp = (matched >= 0) & ~drop
        return score_detections(ps[pm][~drop], is_tp[~drop], int(keep_t.sum()), area_m2, fp_rates_per_ha=rates)

    def at(metrics: Any, rate: float) -> dict[str, Any]:
        for r in metrics.at_fp_rates:
            if abs(r.fp_per_ha_limit - rate) < 1e-9:
                return dict(r.point.to_dict())
        return {}

    aware = scored(True)
    agnostic = scored(False)
    per_class = {}
    for k, name in enumerate(classes):
        mc = scored(True, k)
        per_class[name] = {"n_items": mc.n_truth, "ap": mc.ap, **at(mc, vcfg.fp_per_ha)}
    res: dict[str, Any] = {
        "n_chips": n,
        "n_scenes": val.n_scenes,
        "area_ha": area_m2 / 1e4,
        "n_items": aware.n_truth,
        "min_size_px": vcfg.min_size_px,
        "fp_per_ha_limit": vcfg.fp_per_ha,
        "class_aware": {"ap": aware.ap, **at(aware, vcfg.fp_per_ha)},
        "any_ordnance": {"ap": agnostic.ap, **at(agnostic, vcfg.fp_per_ha)},
        "per_class": per_class,
        "thresholds": {name: at(aware, rate).get("score_threshold") for name, rate in cfg.operating_points.items()},
    }
    sel = res[vcfg.select_on].get("recall")
    res["selection"] = float(sel) if sel is not None else 0.0
    return res


# ------------------------------------------------------------------------------------------- checkpoints


@dataclass
class TrainState:
    """The JSON half of a checkpoint (the tensors live in the matching .safetensors)."""

    step: int = 0
    best_selection: float = -1.0
    best_step: int = -1
    best_metrics: dict[str, Any] = field(default_factory=dict)
    stale_epochs: int = 0
    last_val_step: int = -1
    elapsed_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    cfg: TrainConfig,
) -> Path:
    """Write ``path``.safetensors (model, EMA, optimizer tensors, torch RNG) and ``path``.json, atomically."""
    from safetensors.torch import save as st_save

    from rams.detector.bundle import sha256_bytes

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    if ema is not None:
        for k, v in ema.state_dict().items():
            tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for key, val in st.items():
            t = val if isinstance(val, torch.Tensor) else torch.tensor(val)
            tensors[f"optim.{pid}.{key}"] = t.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    data = st_save(tensors)
    meta = {
        "format": "rams-train-checkpoint-1",
        "state": state.__dict__,
        "param_groups": opt["param_groups"],
        "config": cfg.model_dump(mode="json"),
        "tensors_sha256": sha256_bytes(data),
        "saved": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tpath, jpath = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for p, payload in ((tpath, data), (jpath, (json.dumps(meta, indent=1) + "\n").encode())):
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, p)
    return tpath


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON meta, tensors) of a checkpoint; ``path`` may be the .safetensors, the .json or their stem."""
    from safetensors.torch import load as st_load

    from rams.detector.bundle import sha256_bytes

    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_DIR / "last" if (p / CHECKPOINT_DIR).is_dir() else p / "last"
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    tpath, jpath = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not tpath.is_file() or not jpath.is_file():
        raise ModelError(
            f"checkpoint {stem} not found (need {tpath.name} and {jpath.name}); give --resume RUN_DIR or "
            "RUN_DIR/checkpoints/last.safetensors"
        )
    data = tpath.read_bytes()
    try:
        meta = json.loads(jpath.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{jpath} is not valid JSON ({err}); the checkpoint is damaged") from err
    if meta.get("tensors_sha256") != sha256_bytes(data):
        raise ModelError(f"{tpath} does not match the SHA-256 in {jpath.name}; the checkpoint is damaged")
    return meta, st_load(data)


def _load_into(
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
) -> TrainState:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    if ema is not None:
        ema_sd = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        ema.load_state_dict(ema_sd if ema_sd else model.state_dict(), strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]  # JSON lists
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    return TrainState(**meta["state"])


# ------------------------------------------------------------------------------------------- loop


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    out_dir: Path
    bundle_dir: Path | None
    steps: int
    epochs: float
    stopped: str
    best_step: int
    best_metrics: dict[str, Any]
    elapsed_s: float


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of ``step``: linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    t = min(1.0, (step - o.warmup_steps) / max(1, cfg.total_steps - o.warmup_steps))
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    d = decay * (1 - math.exp(-(step + 1) / 500.0))  # ramp up: early EMA follows the model closely
    with torch.no_grad():
        msd = model.state_dict()
        for k, v in ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def _fmt_duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


class _Progress:
    """A rich progress bar when rich is importable, else periodic log lines."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.bar: Any = None
        self.task: Any = None
        if enabled:
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                self.bar = Progress(
                    TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), console=Console(stderr=True), transient=False,
                )  # fmt: skip
                self.bar.start()
                self.task = self.bar.add_task("train", total=total, completed=start, info="")
            except ImportError:
                self.bar = None

    def update(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(
    cfg: TrainConfig,
    out_dir: Path,
    resume: Path | None = None,
    max_minutes: float | None = None,
    device: str | None = None,
    command: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    export: bool = True,
    max_steps: int | None = None,
) -> TrainResult:
    """Train (or resume) a detector; write checkpoints, ``log.csv``, the resolved config and a bundle.

    Args:
        cfg: the training config.
        out_dir: run folder (``checkpoints/``, ``log.csv``, ``config.yaml``, ``bundle/``).
        resume: a checkpoint (or run folder) to continue from; its config must equal ``cfg``.
        max_minutes: wall-clock budget; the run stops cleanly (checkpoint, validation, bundle) when spent.
        device: overrides ``cfg.device`` (``cpu``, ``cuda``).
        command: the command line to record in the card (default: ``sys.argv``).
        overwrite: replace an existing run folder that is not being resumed.
        progress: show a progress bar.
        export: write ``<out_dir>/bundle`` from the best checkpoint at the end.
        max_steps: stop after this global step (tests and smoke runs), in addition to the epoch limit.

    Raises:
        OutputError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` was given.
        ConfigError: the resumed checkpoint was made with another config.
        InterruptedRun: Ctrl-C; the last checkpoint allows ``--resume``.
    """
    t_start = time.monotonic()
    dev = resolve_device(device or cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    if resume is None and ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        if not overwrite:
            raise OutputError(
                f"{out_dir} already holds a training run; pass --resume {out_dir} to continue it, --overwrite to "
                "start over, or choose another --out"
            )
        import shutil

        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = cfg.class_names
    ctx = SourceContext(classes, tuple(cfg.bands), cfg.gsd_m, cfg.chip_size_px, cfg.value_range)

    torch.manual_seed(cfg.seed)
    fmt = torch.channels_last  # faster convolutions on CPU (oneDNN) and GPU (cuDNN)
    model = build_model(len(cfg.bands), len(classes), cfg.model).to(dev).to(memory_format=fmt)
    ema = None
    if cfg.optim.ema_decay > 0:
        ema = build_model(len(cfg.bands), len(classes), cfg.model).to(dev).to(memory_format=fmt)
    if ema is not None:
        ema.load_state_dict(model.state_dict())
        ema.eval()
        for p in ema.parameters():
            p.requires_grad_(False)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.optim.lr,
    )
    state = TrainState()
    if resume is None and cfg.init_weights:
        _init_from_bundle(cfg, model, ema)
    if resume is not None:
        meta, tensors = read_checkpoint(resume)
        saved = TrainConfig.model_validate(meta["config"])
        if _comparable(saved) != _comparable(cfg):
            diff = sorted(k for k in _comparable(cfg) if _comparable(cfg)[k] != _comparable(saved).get(k))
            raise ConfigError(
                f"checkpoint {resume} was trained with a different config (differs in {', '.join(diff)}); "
                "resume with the run's own config (omit --config) or start a new run"
            )
        state = _load_into(tensors, meta, model, ema, optimizer)
        log.info("resumed from %s at step %d", resume, state.step)
    (out_dir / CONFIG_FILE).write_text(_dump_yaml(cfg))

    sources = [build_source(s, ctx) for s in cfg.sources]
    for s in sources:
        log.info("source: %s", s.describe())
    num_workers = cfg.num_workers
    if cfg.validation.scenes or cfg.validation.flights:
        log.info("preparing %d held-out scenes and %d flights", len(cfg.validation.scenes), len(cfg.validation.flights))
    else:
        log.info("building %d held-out chips", cfg.validation.n_chips)
    val = build_val_set(cfg, ctx, num_workers)
    log.info("held-out: %s", val.describe(cfg.gsd_m))

    last_step = min(cfg.total_steps, max_steps) if max_steps is not None else cfg.total_steps
    budget_s = max_minutes * 60.0 if max_minutes is not None else math.inf
    elapsed_before = state.elapsed_s
    ds = TrainDataset(
        sources, [s.weight for s in cfg.sources], cfg.seed, cfg.chip_size_px, len(classes), 4, cfg.augment,
        last_step * cfg.batch_size,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=RangeSampler(state.step * cfg.batch_size, last_step * cfg.batch_size),
        num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers else None,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
        pin_memory=dev.type == "cuda",
        drop_last=True,
        # the loader's own generator: the global torch RNG (checkpointed) is not consumed by data loading
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    mean = torch.tensor(cfg.norm_mean, device=dev)
    std = torch.tensor(cfg.norm_std, device=dev)
    log_path = out_dir / LOG_FILE
    steps_log = _StepLog(out_dir / STEPS_FILE, state.step)
    stopped = "max_epochs" if last_step == cfg.total_steps else "max_steps"
    bar = _Progress(last_step, state.step, progress)
    sums: dict[str, float] = {}
    count = 0
    t_epoch = time.monotonic()
    model.train()
    try:
        for batch in loader:
            step = state.step
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, cfg)
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            x = normalise(batch["image"], batch["valid"], mean, std).contiguous(memory_format=fmt)
            out = model(x)
            losses = detection_loss(out, batch, cfg.optim.size_weight, cfg.optim.offset_weight)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            if ema is not None:
                _ema_update(ema, model, step, cfg.optim.ema_decay)
            state.step = step + 1
            vals = {k: float(v.detach()) for k, v in losses.items()}
            steps_log.add(state.step, lr_at(step, cfg), vals)
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(state.step, f"loss {sums['loss'] / count:.3f}")
            if not math.isfinite(vals["loss"]):
                raise ModelError(f"training diverged at step {step} (loss {vals['loss']}); lower optim.lr")
            elapsed = elapsed_before + time.monotonic() - t_start
            end_epoch = state.step % cfg.steps_per_epoch == 0
            out_of_time = elapsed >= budget_s
            if end_epoch or out_of_time or state.step >= last_step:
                steps_log.flush()
                state.elapsed_s = elapsed
                improved = _end_epoch(
                    cfg, model, ema, optimizer, state, val, dev, ckpt_dir, log_path, sums, count,
                    time.monotonic() - t_epoch,
                )  # fmt: skip
                kept = (f"best {state.best_selection:.3f} at step {state.best_step}{' *' if improved else ''}"
                        if cfg.validation.keep == "best" else "keep: last, the final epoch is exported")  # fmt: skip
                log.info(
                    "epoch %.2f step %d: loss %.4f, held-out recall@%g FP/ha %.3f (%s)",
                    state.step / cfg.steps_per_epoch, state.step, sums["loss"] / max(count, 1),
                    cfg.validation.fp_per_ha, state.history[-1]["selection"], kept,
                )  # fmt: skip
                sums, count, t_epoch = {}, 0, time.monotonic()
                if out_of_time:
                    stopped = "max_minutes"
                    break
                if state.stale_epochs >= cfg.validation.patience:
                    stopped = "early_stopping"
                    break
    except KeyboardInterrupt as err:
        bar.close()
        steps_log.flush()
        state.elapsed_s = elapsed_before + time.monotonic() - t_start
        save_checkpoint(ckpt_dir / "last", model, ema, optimizer, state, cfg)
        raise InterruptedRun(f"training interrupted at step {state.step}; continue with --resume {out_dir}") from err
    finally:
        bar.close()
    state.elapsed_s = elapsed_before + time.monotonic() - t_start
    bundle_dir = None
    if export and state.best_step >= 0:
        bundle_dir = export_bundle(cfg, out_dir, state, sources, command, dev.type)
    log.info("training stopped (%s) at step %d after %s", stopped, state.step, _fmt_duration(state.elapsed_s))
    return TrainResult(
        out_dir=out_dir,
        bundle_dir=bundle_dir,
        steps=state.step,
        epochs=state.step / cfg.steps_per_epoch,
        stopped=stopped,
        best_step=state.best_step,
        best_metrics=state.best_metrics,
        elapsed_s=state.elapsed_s,
    )


class _StepLog:
    """``steps.csv``: one row per optimizer step (step, lr, losses); rows past a resumed step are dropped."""

    FIELDS = ("step", "lr", "loss", "heatmap", "size", "offset")

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        self.rows: list[list[str]] = []
        if path.exists():
            with path.open(newline="") as fh:
                kept = [r for r in csv.reader(fh)][1:]
            kept = [r for r in kept if r and int(r[0]) <= resume_step]
            self._write([list(self.FIELDS), *kept], "w")
        else:
            self._write([list(self.FIELDS)], "w")

    def _write(self, rows: list[list[str]], mode: str) -> None:
        with self.path.open(mode, newline="") as fh:
            csv.writer(fh).writerows(rows)

    def add(self, step: int, lr: float, losses: dict[str, float]) -> None:
        self.rows.append([str(step), repr(lr), *(repr(losses[k]) for k in self.FIELDS[2:])])

    def flush(self) -> None:
        if self.rows:
            self._write(self.rows, "a")
            self.rows = []


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    """Config keys that must match to resume (budget-like keys may change)."""
    d = cfg.model_dump(mode="json")
    for k in ("device", "num_workers", "threads", "max_epochs", "description", "notes"):
        d.pop(k, None)
    d["validation"].pop("patience", None)
    return d


def _dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _end_epoch(
    cfg: TrainConfig,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    val: ValSet,
    dev: torch.device,
    ckpt_dir: Path,
    log_path: Path,
    sums: dict[str, float],
    count: int,
    epoch_s: float,
) -> bool:
    """Validate, update best/stale counters, write checkpoints and a log row. Returns whether improved."""
    metrics = validate(ema if ema is not None else model, val, cfg, dev)
    sel = metrics["selection"]
    improved = sel > state.best_selection + cfg.validation.min_delta or state.best_step < 0
    improved = improved or cfg.validation.keep == "last"
    if improved:
        state.best_selection, state.best_step, state.best_metrics = sel, state.step, metrics
        state.stale_epochs = 0
    else:
        state.stale_epochs += 1
    state.last_val_step = state.step
    row = {
        "step": state.step,
        "epoch": round(state.step / cfg.steps_per_epoch, 3),
        "lr": lr_at(max(state.step - 1, 0), cfg),
        "loss": sums.get("loss", 0.0) / max(count, 1),
        "loss_heatmap": sums.get("heatmap", 0.0) / max(count, 1),
        "loss_size": sums.get("size", 0.0) / max(count, 1),
        "loss_offset": sums.get("offset", 0.0) / max(count, 1),
        "selection": sel,
        "recall_class_aware": metrics["class_aware"].get("recall"),
        "recall_any_ordnance": metrics["any_ordnance"].get("recall"),
        "ap_class_aware": metrics["class_aware"].get("ap"),
        "threshold": metrics["class_aware"].get("score_threshold"),
        "samples_per_s": count * cfg.batch_size / max(epoch_s, 1e-9),
        "elapsed_s": round(state.elapsed_s, 1),
    }
    state.history.append({"step": state.step, "selection": sel, "loss": row["loss"]})
    new = not log_path.exists()
    with log_path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
    save_checkpoint(ckpt_dir / "last", model, ema, optimizer, state, cfg)
    if improved:
        save_checkpoint(ckpt_dir / "best", model, ema, optimizer, state, cfg)
    return improved


def _threshold(value: Any, fallback: float) -> float:
    if value is None or not (0.0 < float(value) < 1.0):
        return fallback
    return float(value)


def _init_from_bundle(cfg: TrainConfig, model: torch.nn.Module, ema: torch.nn.Module | None) -> None:
    """Load ``cfg.init_weights`` (hash-checked, never unpickled) into the model and its EMA copy."""
    from rams.detector.bundle import load_bundle

    assert cfg.init_weights is not None
    bundle = load_bundle(cfg.init_weights)
    card = bundle.card
    wanted = {
        "architecture params": (cfg.model, ArchParams.model_validate(card.params)),
        "classes": (list(cfg.class_names), list(card.classes)),
        "bands": (list(cfg.bands), list(card.bands)),
        "normalisation mean": ([float(v) for v in cfg.norm_mean], [float(v) for v in card.normalisation.mean]),
        "normalisation std": ([float(v) for v in cfg.norm_std], [float(v) for v in card.normalisation.std]),
    }
    differ = [k for k, (mine, theirs) in wanted.items() if mine != theirs]
    if differ:
        raise ConfigError(
            f"init_weights {cfg.init_weights}: the bundle differs from this config in {', '.join(differ)}; "
            "start from a bundle with the same architecture, classes, bands and normalisation, or drop init_weights"
        )
    with torch.no_grad():
        model.load_state_dict(bundle.state_dict, strict=True)
        if ema is not None:
            ema.load_state_dict(bundle.state_dict, strict=True)
    log.info("initialised from %s %s (sha256 %s)", card.name, card.version, card.weights_sha256[:12])


def _init_record(cfg: TrainConfig) -> dict[str, str] | None:
    """Name, version and weights hash of the ``init_weights`` bundle, for the card."""
    if not cfg.init_weights:
        return None
    from rams.detector.bundle import read_card, resolve_bundle_path

    card = read_card(resolve_bundle_path(cfg.init_weights))
    return {"path": cfg.init_weights, "name": card.name, "version": card.version, "weights_sha256": card.weights_sha256}


def _held_out_key(metrics: dict[str, Any]) -> str:
    """Card key of the validation record: ``held_out_scenes`` (whole scenes) or ``held_out_chips``. Neither is
    read by the detector gate (``rams.gate``): epochs were chosen on these data, so their recall is optimistic;
    the gate reads an evaluation on other scenes or flights (``scripts/eval_model.py``)."""
    return "held_out_scenes" if metrics.get("n_scenes") else "held_out_chips"


def _held_out_what(cfg: TrainConfig, metrics: dict[str, Any], best_step: int) -> str:
    epoch = "last" if cfg.validation.keep == "last" else "best"
    if metrics.get("n_scenes"):
        from rams.detector.valscenes import describe_scenes

        parts = []
        scenes, flights = cfg.validation.scenes, cfg.validation.flights
        if scenes:
            parts.append(f"{len(scenes)} whole synthetic scenes ({describe_scenes(scenes)})")
        if flights:
            parts.append(f"{len(flights)} whole flights ({', '.join(f.raster for f in flights)})")
        data = f"{' and '.join(parts)}; {metrics.get('n_chips')} tiles with cores"
    else:
        data = f"{metrics.get('n_chips')} held-out chips"
    return (
        f"{epoch} epoch (step {best_step}) on {data} ({metrics.get('area_ha', 0):.3f} ha), items >= "
        f"{metrics.get('min_size_px')} px, recall at <= {metrics.get('fp_per_ha_limit')} FP/ha (rams.evaluate "
        "matching, pixels)"
    )


def export_bundle(
    cfg: TrainConfig,
    out_dir: Path,
    state: TrainState,
    sources: list[Any],
    command: str | None,
    device: str,
) -> Path:
    """Write ``<out_dir>/bundle`` from the best checkpoint (EMA weights when present)."""
    meta, tensors = read_checkpoint(out_dir / CHECKPOINT_DIR / "best")
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else "model."
    weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    metrics = meta["state"]["best_metrics"]
    thresholds = metrics.get("thresholds", {})
    ops, prev = {}, 0.99
    # thresholds fall as the FP budget grows; a budget no detection fits gets the strictest threshold seen
    for name, _rate in sorted(cfg.operating_points.items(), key=lambda kv: kv[1]):
        prev = _threshold(thresholds.get(name), prev)
        ops[name] = round(prev, 4)
    card = {
        "name": cfg.name,
        "version": cfg.version,
        "description": cfg.description,
        "architecture": ARCHITECTURE,
        "params": cfg.model.model_dump(mode="json"),
        "classes": list(cfg.class_names),
        "bands": list(cfg.bands),
        "normalisation": {"value_range": cfg.value_range, "mean": cfg.norm_mean, "std": cfg.norm_std},
        "gsd_m": cfg.gsd_m,
        "gsd_range_m": cfg.gsd_range_m,
        "tile_size_px": cfg.tile_size_px,
        "overlap_px": cfg.tile_overlap_px,
        "output_stride": 4,
        "operating_points": ops,
        "default_operating_point": cfg.default_operating_point,
        "training": {
            "data": [s.describe() for s in sources],
            "command": command or " ".join(shlex.quote(a) for a in sys.argv),
            "config": cfg.model_dump(mode="json"),
            "seed": cfg.seed,
            "duration": _fmt_duration(state.elapsed_s),
            "duration_s": round(state.elapsed_s, 1),
            "device": device,
            "steps": state.step,
            "notes": list(cfg.notes),
            "init_weights": _init_record(cfg),
        },
        "metrics": {
            _held_out_key(metrics): {
                "what": _held_out_what(cfg, metrics, meta["state"]["best_step"]),
                **{k: v for k, v in metrics.items() if k != "thresholds"},
            }
        },
    }
    dest = out_dir / BUNDLE_DIR
    save_bundle(dest, card, weights, overwrite=True)
    log.info("model bundle written to %s", dest)
    return dest


def load_train_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Training config from YAML (``rams.config.load_config`` rules: unknown keys fail)."""
    from rams.config import load_config

    return load_config(TrainConfig, path, overrides)


def config_from_checkpoint(path: Path) -> TrainConfig:
    """The config a checkpoint was trained with."""
    meta, _ = read_checkpoint(path)
    return TrainConfig.model_validate(meta["config"])


def main(argv: list[str] | None = None) -> int:
    """``python -m rams.detector.train``: the same as ``rams train`` for machines without the full CLI stack."""
    import argparse


    ap = argparse.ArgumentParser(prog="python -m rams.detector.train", description="Train a rams detector.")
    ap.add_argument("--config", type=Path)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--resume", type=Path)
    ap.add_argument("--device")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--max-epochs", type=int, help="override the config's max_epochs (e.g. to extend a finished run)")
    args = ap.parse_args(argv)

    def body(command: str) -> None:
        result = run_training(
            args.config, args.out, args.resume, args.max_minutes, args.device, args.workers, args.threads,
            args.overwrite, command=command, max_epochs=args.max_epochs,
        )  # fmt: skip
        print(json.dumps(summary(result), indent=2))

    return run_module_command("rams.detector.train", argv, body)


def run_module_command(module: str, argv: list[str] | None, body: Callable[[str], None]) -> int:
    """The shared tail of the ``python -m rams.detector.*`` entry points: log to stderr, run ``body`` with the
    exact command line (recorded in what it writes), and turn a :class:`RamsError` into one line and its exit code.
    """
    from rams.errors import RamsError, exit_code_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    command = f"python -m {module} " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        body(command)
    except RamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code_for(err)
    return 0


def run_training(
    config: Path | None,
    out: Path | None,
    resume: Path | None,
    max_minutes: float | None,
    device: str | None,
    workers: int | None,
    threads: int | None,
    overwrite: bool,
    command: str | None = None,
    progress: bool = True,
    max_epochs: int | None = None,
) -> TrainResult:
    """Resolve config (file or checkpoint), CLI overrides and output folder, then :func:`train`.

    ``max_epochs`` overrides the config's, e.g. to continue a finished run for longer with ``resume``: the cosine
    schedule is then that of the longer run, so the learning rate rises again at the resumed step.
    """
    if config is None and resume is None:
        raise ConfigError("give --config FILE (or --resume RUN_DIR to continue a run)")
    if max_epochs is not None and max_epochs < 1:
        raise ConfigError(f"--max-epochs {max_epochs}: give a whole number of epochs >= 1")
    if config is not None:
        cfg = load_train_config(config)
    else:
        assert resume is not None
        cfg = config_from_checkpoint(resume)
    if max_epochs is not None:
        cfg.max_epochs = max_epochs
    if workers is not None:
        cfg.num_workers = workers
    if threads is not None:
        cfg.threads = threads
    if out is None:
        if resume is not None:
            r = Path(resume)
            out = r if (r / CHECKPOINT_DIR).is_dir() else (r.parent.parent if r.parent.name == CHECKPOINT_DIR else r)
        else:
            out = Path("runs") / cfg.name
    if resume is not None and Path(resume).is_dir() and not (Path(resume) / CHECKPOINT_DIR).is_dir():
        raise ModelError(f"{resume} holds no {CHECKPOINT_DIR}/ folder; give a run folder or a checkpoint file")
    return train(cfg, out, resume, max_minutes, device, command, overwrite, progress)


def summary(result: TrainResult) -> dict[str, Any]:
    """A JSON-able summary of a run for ``--json`` / logs."""
    m = result.best_metrics
    return {
        "out_dir": str(result.out_dir),
        "bundle": str(result.bundle_dir) if result.bundle_dir else None,
        "steps": result.steps,
        "epochs": round(result.epochs, 2),
        "stopped": result.stopped,
        "best_step": result.best_step,
        "elapsed": _fmt_duration(result.elapsed_s),
        "held_out": {
            "recall_class_aware": m.get("class_aware", {}).get("recall"),
            "recall_any_ordnance": m.get("any_ordnance", {}).get("recall"),
            "fp_per_ha_limit": m.get("fp_per_ha_limit"),
            "n_items": m.get("n_items"),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
