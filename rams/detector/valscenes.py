"""Whole synthetic scenes as a training run's held-out set (``validation.scenes``).

A few hundred held-out chips hold too few items to choose between epochs (docs/detector.md: a stage-3 run kept
its step-750 checkpoint on 150 chips, worse on whole scenes than its last one), and chips drawn around targets
put far more items per hectare in front of the model than a survey does, so a false-alarm budget set on them
does not hold on a flight. This module renders whole scenes once, in memory, with the pixels ``rams synth``
writes (:func:`rams.synth.writer.render_scene`; no GDAL: it runs where ``python -m rams.detector.train`` runs),
cuts them into overlapping tiles with cores exactly as ``rams detect`` does (:mod:`rams.tiling`: every ground
point is owned by one tile), and hands :func:`rams.detector.train.validate` one frame in which every scene lies
apart from the others. A detection counts where its tile owns its centre; an item counts once, in scene
coordinates; the area is the imaged ground of the scenes. So recall at a false-alarm rate per hectare is counted
over hectares of ground, as ``rams evaluate`` counts it, and the operating-point thresholds written into the
bundle's card are set on them.

Items are those of ``rams synth``'s truth layer: a class the model learns, at least ``min_size_px`` long
(``length_m`` at the model GSD, as ``scripts/eval_model.py`` counts), with its centre on imaged ground. Other
items (classes the model does not learn, too small, centre not imaged) are *ignored*: a detection on one counts
neither way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rams.errors import ConfigError

if TYPE_CHECKING:
    from rams.detector.train import TrainConfig, ValSet

log = logging.getLogger(__name__)

#: Largest validation scene (pixels at the model GSD); a scene is rendered whole, in memory.
MAX_SCENE_MPX = 100.0


class ValSceneConfig(BaseModel):
    """One synthetic scene of the held-out set, as ``rams synth`` would draw it at the model's GSD."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(ge=0, lt=2**63)
    """Scene seed: use seeds no training source draws (training chips use their own seeds and sub-seeds)."""
    terrain: str = "mixed"
    size_m: tuple[float, float] = (30.0, 30.0)
    """Width and height in metres."""
    targets: str = "mixed"
    """Target preset (``rams synth --targets``)."""
    density_per_ha: float = Field(default=600.0, ge=0)
    clutter: float = Field(default=1.0, ge=0)
    source_gsd_m: float | None = Field(default=None, gt=0)
    """Render the scene at this finer GSD (a drone flight at 0.5 cm for a 1 cm model) and bring it to the model GSD
    by the k x k block mean, as ``rams detect`` reads such a flight (k = model GSD / this, a whole number; a pixel
    is imaged only if all k x k under it are). None: render at the model GSD."""

    @field_validator("terrain")
    @classmethod
    def _terrain(cls, v: str) -> str:
        from rams.synth.terrain import ALL_TERRAINS

        if v not in ALL_TERRAINS:
            raise ValueError(f"unknown terrain {v!r}; choose one of {', '.join(ALL_TERRAINS)}")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: str) -> str:
        from rams.synth.scene import TARGET_PRESETS

        if v not in TARGET_PRESETS:
            raise ValueError(f"unknown targets preset {v!r}; choose one of {', '.join(TARGET_PRESETS)}")
        return v

    def describe(self) -> str:
        w, h = self.size_m
        src = f" rendered at {self.source_gsd_m * 100:g} cm" if self.source_gsd_m else ""
        return f"seed {self.seed} {self.terrain} {w:g}x{h:g} m{src}"


def _synth_bands(bands: tuple[str, ...]) -> str:
    if bands == ("red", "green", "blue"):
        return "rgba"
    if len(bands) == 1:
        return "thermal"
    raise ConfigError(
        f"validation.scenes: synthetic scenes exist for RGB and single-band (thermal) models, not bands {list(bands)};"
        " validate on validation.sources (chips of your own data) instead"
    )


def build_scene_val_set(cfg: TrainConfig, classes: tuple[str, ...], bands: tuple[str, ...], workers: int = 0
                        ) -> ValSet:
    """Render ``cfg.validation.scenes`` at the model GSD and cut them into tiles with cores (see module doc)."""
    from rams.detector.train import ValSet
    from rams.synth.scene import SynthConfig, build_scene
    from rams.synth.writer import render_scene
    from rams.tiling import axis_core_bounds, axis_starts

    vcfg = cfg.validation
    tile = vcfg.chip_size_px
    overlap = cfg.tile_overlap_px
    if overlap >= tile:
        raise ConfigError(
            f"validation.chip_size_px {tile} must exceed the tile overlap ({overlap} px, the largest item plus a "
            "margin) for whole-scene validation; raise it (e.g. 512)"
        )
    gsd = cfg.gsd_m
    lookup = {name: i for i, name in enumerate(classes)}
    synth_bands = _synth_bands(bands)
    offsets: list[tuple[float, float]] = []
    cores: list[tuple[int, int, int, int]] = []
    t_xy: list[np.ndarray] = []
    t_lab: list[np.ndarray] = []
    t_keep: list[np.ndarray] = []
    scfgs = []
    factors = []
    for spec in vcfg.scenes:
        w_m, h_m = spec.size_m
        f = 1
        if spec.source_gsd_m is not None:
            f = round(gsd / spec.source_gsd_m)
            if f < 1 or abs(gsd / spec.source_gsd_m - f) > 1e-6 * f:
                raise ConfigError(
                    f"validation scene {spec.describe()}: source_gsd_m {spec.source_gsd_m} must divide the model GSD "
                    f"{gsd} by a whole number (e.g. {gsd / 2:g}); other ratios are resampled, not block-averaged"
                )
        factors.append(f)
        try:
            scfg = SynthConfig(
                seed=spec.seed, width_m=w_m, height_m=h_m, gsd_m=gsd / f, terrain=spec.terrain, targets=spec.targets,
                target_density_per_ha=spec.density_per_ha, clutter=spec.clutter, bands=synth_bands,
            )  # fmt: skip
        except ValueError as err:
            raise ConfigError(f"validation.scenes ({spec.describe()}): {err}") from err
        if scfg.width_px * scfg.height_px / 1e6 > MAX_SCENE_MPX:
            raise ConfigError(
                f"validation scene {spec.describe()} is {scfg.width_px} x {scfg.height_px} px at {gsd} m; scenes are "
                f"rendered whole in memory, keep each under {MAX_SCENE_MPX:g} Mpx (use more, smaller scenes)"
            )
        scfgs.append(scfg)
    # the tiles go straight into one array (at most every tile of every scene; trimmed by a view at the end)
    n_max = sum(len(axis_starts(c.height_px // f, tile, overlap)) * len(axis_starts(c.width_px // f, tile, overlap))
                for c, f in zip(scfgs, factors, strict=True))  # fmt: skip
    images = np.zeros((n_max, len(bands), tile, tile), np.uint8)
    valids = np.zeros((n_max, tile, tile), bool)
    k = 0
    frame_x = 0.0
    area_px = 0
    for spec, scfg, factor in zip(vcfg.scenes, scfgs, factors, strict=True):
        scene = build_scene(scfg)
        img, val = render_scene(scene, scfg, workers=max(1, workers))  # the pixels `rams synth` writes
        if factor > 1:
            img, val = block_mean(img, val, factor)
        H, W = val.shape
        rows, cols = axis_starts(H, tile, overlap), axis_starts(W, tile, overlap)
        row_cores, col_cores = axis_core_bounds(H, tile, rows), axis_core_bounds(W, tile, cols)
        for r0, (a, b) in zip(rows, row_cores, strict=True):
            for c0, (c, d) in zip(cols, col_cores, strict=True):
                if not val[a:b, c:d].any():
                    continue  # owns no imaged ground: rams detect skips such tiles too
                hh, ww = min(tile, H - r0), min(tile, W - c0)
                images[k, :, :hh, :ww] = img[:, r0 : r0 + hh, c0 : c0 + ww]
                valids[k, :hh, :ww] = val[r0 : r0 + hh, c0 : c0 + ww]
                k += 1
                offsets.append((frame_x + c0, float(r0)))
                cores.append((c - c0, a - r0, d - c0, b - r0))
        area_px += int(val.sum())
        n = len(scene.targets)
        xy = np.array([[s.x_m / gsd, s.y_m / gsd] for s in scene.targets], np.float64).reshape(n, 2)
        labels = np.array([lookup.get(s.cls or "", -1) for s in scene.targets], np.int64)
        length_px = np.array([s.length_m / gsd for s in scene.targets], np.float64)
        ci = np.clip(np.floor(xy[:, 0]).astype(int), 0, W - 1) if n else np.zeros(0, int)
        ri = np.clip(np.floor(xy[:, 1]).astype(int), 0, H - 1) if n else np.zeros(0, int)
        imaged = val[ri, ci] if n else np.zeros(0, bool)
        t_keep.append((labels >= 0) & (length_px >= vcfg.min_size_px) & imaged)
        t_lab.append(np.maximum(labels, 0))
        t_xy.append(xy + np.array([frame_x, 0.0]))
        frame_x += W + 10 * tile  # scenes lie far apart in the shared frame: no match crosses between them
        log.info("validation scene %s: %d items (%d counted), %.3f ha imaged", spec.describe(), n,
                 int(t_keep[-1].sum()), val.sum() * gsd**2 / 1e4)  # fmt: skip
    if k == 0:
        raise ConfigError("validation.scenes hold no imaged ground; check their sizes")
    return ValSet(
        images=images[:k],
        valid=valids[:k],
        offsets=np.asarray(offsets, np.float64),
        cores=np.asarray(cores, np.int64),
        truth_xy=np.concatenate(t_xy).reshape(-1, 2),
        truth_labels=np.concatenate(t_lab),
        truth_keep=np.concatenate(t_keep).astype(bool),
        area_px=area_px,
        n_scenes=len(vcfg.scenes),
    )


def block_mean(image: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` x ``k`` block means of a uint8 scene (the remainder rows/columns dropped), rounded to uint8; a block is
    valid only if all its pixels are, invalid blocks are 0. ``rams.raster`` reads such a flight the same way, in
    float (so values here differ from what ``rams detect`` feeds the model by at most half a grey level)."""
    c, h, w = image.shape
    hh, ww = h // k, w // k
    sums = image[:, : hh * k, : ww * k].reshape(c, hh, k, ww, k).sum(axis=(2, 4), dtype=np.uint32)
    ok = np.asarray(valid[: hh * k, : ww * k].reshape(hh, k, ww, k).all(axis=(1, 3)), bool)
    out = ((sums + (k * k) // 2) // (k * k)).astype(np.uint8)
    out[:, ~ok] = 0
    return out, ok


def describe_scenes(specs: list[Any]) -> str:
    """One line for logs and the card."""
    return "; ".join(s.describe() for s in specs)
