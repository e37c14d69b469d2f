"""Whole synthetic scenes (``validation.scenes``) or annotated flights (``validation.flights``) as a training run's
held-out set.

A few hundred held-out chips hold too few items to choose between epochs (docs/detector.md: a stage-3 run kept
its step-750 checkpoint on 150 chips, worse than its last one on the 24 calibration scenes), and chips drawn
around targets put far more items per hectare in front of the model than a survey does, so a false-alarm budget
set on them does not hold on a flight. This module renders whole scenes once, in memory, with the pixels ``rams synth``
writes (:func:`rams.synth.writer.render_scene`; no GDAL: it runs where ``python -m rams.detector.train`` runs),
cuts them into overlapping tiles with cores exactly as ``rams detect`` does (:mod:`rams.tiling`: every ground
point is owned by one tile), and hands :func:`rams.detector.train.validate` one frame in which every scene lies
apart from the others. A detection counts where its tile owns its centre; an item counts once, in scene
coordinates; the area is the imaged ground of the scenes. So recall at a false-alarm rate per hectare is counted
over hectares of ground, as ``rams evaluate`` counts it, and the operating-point thresholds written into the
bundle's card are set on them.

``validation.flights`` treats a site's own annotated orthomosaics the same way, read tile by tile through
:mod:`rams.raster` at the model GSD (as ``rams detect`` reads them), the annotations as items.

Items are those of ``rams synth``'s truth layer: a class the model learns, at least ``min_size_px`` long
(``length_m`` at the model GSD, as ``scripts/eval_model.py`` counts), with its centre on imaged ground. Other
items (classes the model does not learn, too small, centre not imaged) are *ignored*: a detection on one counts
neither way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rams.errors import ConfigError

if TYPE_CHECKING:
    from rams.detector.train import TrainConfig, ValSet

log = logging.getLogger(__name__)

#: Largest validation scene (pixels at its render GSD); a scene is rendered whole, in memory.
MAX_SCENE_MPX = 100.0
#: Most memory the held-out tiles (image bands + validity) may take.
MAX_HELD_GB = 4.0


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

    @field_validator("terrain", "targets")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        from rams.synth.scene import check_targets, check_terrain

        return check_terrain(v) if info.field_name == "terrain" else check_targets(v)

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


@dataclass
class _Ground:
    """One scene or flight of the held-out set, on the model-GSD grid."""

    name: str
    height: int
    width: int
    read: Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]
    """(row, col, rows, cols) -> (uint8 image (bands, rows, cols), bool valid), inside the grid."""
    xy: np.ndarray  # float (M, 2): item centres, grid pixels
    labels: np.ndarray  # int (M,): model class index
    countable: np.ndarray  # bool (M,): learnt class, long enough (imaged is checked on the tiles)


def build_scene_val_set(cfg: TrainConfig, classes: tuple[str, ...], bands: tuple[str, ...], workers: int = 0
                        ) -> ValSet:
    """Render ``validation.scenes`` and open ``validation.flights`` at the model GSD, cut them into tiles with
    cores (see module doc) and put them side by side in one frame."""
    from rams.detector.train import ValSet
    from rams.tiling import axis_core_bounds, axis_starts

    vcfg = cfg.validation
    tile = vcfg.chip_size_px
    overlap = cfg.tile_overlap_px
    if overlap >= tile:
        raise ConfigError(
            f"validation.chip_size_px {tile} must exceed the tile overlap ({overlap} px, the largest item plus a "
            "margin) for whole-scene validation; raise it (e.g. 512)"
        )
    grounds = _scene_grounds(cfg, classes, bands, workers) + _flight_grounds(cfg, classes, bands)
    # the tiles go straight into one array (at most every tile of every ground; trimmed by a view at the end)
    n_max = sum(len(axis_starts(g.height, tile, overlap)) * len(axis_starts(g.width, tile, overlap)) for g in grounds)
    need_gb = n_max * tile * tile * (len(bands) + 1) / 1e9
    if need_gb > MAX_HELD_GB:
        raise ConfigError(
            f"validation scenes/flights need {need_gb:.1f} GB of tiles in memory (at most {MAX_HELD_GB:g}); use fewer "
            "or smaller ones (crop a flight: gdal_translate -projwin)"
        )
    images = np.zeros((n_max, len(bands), tile, tile), np.uint8)
    valids = np.zeros((n_max, tile, tile), bool)
    offsets: list[tuple[float, float]] = []
    cores: list[tuple[int, int, int, int]] = []
    t_xy: list[np.ndarray] = []
    t_lab: list[np.ndarray] = []
    t_keep: list[np.ndarray] = []
    k = 0
    frame_x = 0.0
    area_px = 0
    for g in grounds:
        H, W = g.height, g.width
        rows, cols = axis_starts(H, tile, overlap), axis_starts(W, tile, overlap)
        row_cores, col_cores = axis_core_bounds(H, tile, rows), axis_core_bounds(W, tile, cols)
        owner: dict[tuple[int, int], int] = {}
        g_area = 0
        for i, (r0, (a, b)) in enumerate(zip(rows, row_cores, strict=True)):
            for j, (c0, (c, d)) in enumerate(zip(cols, col_cores, strict=True)):
                hh, ww = min(tile, H - r0), min(tile, W - c0)
                im, va = g.read(r0, c0, hh, ww)
                owned = int(va[a - r0 : b - r0, c - c0 : d - c0].sum())
                if owned == 0:
                    continue  # owns no imaged ground: rams detect skips such tiles too
                images[k, :, :hh, :ww] = im
                valids[k, :hh, :ww] = va
                owner[(i, j)] = k
                offsets.append((frame_x + c0, float(r0)))
                cores.append((c - c0, a - r0, d - c0, b - r0))
                g_area += owned
                k += 1
        area_px += g_area
        # an item counts only where its owning tile saw imaged ground under its centre
        imaged = np.zeros(len(g.xy), bool)
        row_ends = np.array([b for _, b in row_cores])
        col_ends = np.array([d for _, d in col_cores])
        for m, (x, y) in enumerate(g.xy):
            if not (0 <= x < W and 0 <= y < H):
                continue
            i, j = int(np.searchsorted(row_ends, y, side="right")), int(np.searchsorted(col_ends, x, side="right"))
            kk = owner.get((i, j))
            if kk is not None:
                imaged[m] = bool(valids[kk, int(y) - rows[i], int(x) - cols[j]])
        t_keep.append(g.countable & imaged)
        t_lab.append(g.labels)
        t_xy.append(g.xy + np.array([frame_x, 0.0]))
        frame_x += W + 10 * tile  # grounds lie far apart in the shared frame: no match crosses between them
        log.info("validation %s: %d items (%d counted), %.3f ha imaged", g.name, len(g.xy), int(t_keep[-1].sum()),
                 g_area * cfg.gsd_m**2 / 1e4)  # fmt: skip
    if k == 0:
        raise ConfigError("validation scenes/flights hold no imaged ground; check their sizes and masks")
    return ValSet(
        images=images[:k],
        valid=valids[:k],
        offsets=np.asarray(offsets, np.float64),
        cores=np.asarray(cores, np.int64),
        truth_xy=np.concatenate(t_xy).reshape(-1, 2),
        truth_labels=np.concatenate(t_lab).astype(np.int64),
        truth_keep=np.concatenate(t_keep).astype(bool),
        area_px=area_px,
        n_scenes=len(grounds),
    )


def _scene_grounds(cfg: TrainConfig, classes: tuple[str, ...], bands: tuple[str, ...], workers: int) -> list[_Ground]:
    """``validation.scenes``, rendered whole in memory (lazily, one at a time, when first read)."""
    from rams.synth.scene import SynthConfig, build_scene
    from rams.synth.writer import render_scene

    vcfg = cfg.validation
    if not vcfg.scenes:
        return []
    gsd = cfg.gsd_m
    lookup = {name: i for i, name in enumerate(classes)}
    synth_bands = _synth_bands(bands)
    grounds = []
    held: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the one scene being tiled (the next read drops it)
    for si, spec in enumerate(vcfg.scenes):
        w_m, h_m = spec.size_m
        f = 1
        if spec.source_gsd_m is not None:
            f = round(gsd / spec.source_gsd_m)
            if f < 1 or abs(gsd / spec.source_gsd_m - f) > 1e-6 * f:
                raise ConfigError(
                    f"validation scene {spec.describe()}: source_gsd_m {spec.source_gsd_m} must divide the model GSD "
                    f"{gsd} by a whole number (e.g. {gsd / 2:g}); other ratios are resampled, not block-averaged"
                )
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
        scene = build_scene(scfg)  # the draw only (cheap); pixels are rendered on first read

        def read(r0: int, c0: int, h: int, w: int, si: int = si, scene: Any = scene, scfg: Any = scfg, f: int = f
                 ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
            if si not in held:
                held.clear()
                img, val = render_scene(scene, scfg, workers=max(1, workers))  # the pixels `rams synth` writes
                held[si] = block_mean(img, val, f) if f > 1 else (img, val)
            img, val = held[si]
            return img[:, r0 : r0 + h, c0 : c0 + w], val[r0 : r0 + h, c0 : c0 + w]

        n = len(scene.targets)
        grounds.append(_Ground(
            name=f"scene {spec.describe()}",
            height=scfg.height_px // f,
            width=scfg.width_px // f,
            read=read,
            xy=np.array([[s.x_m / gsd, s.y_m / gsd] for s in scene.targets], np.float64).reshape(n, 2),
            labels=np.array([max(lookup.get(s.cls or "", -1), 0) for s in scene.targets], np.int64),
            countable=np.array([(s.cls or "") in lookup and s.length_m / gsd >= vcfg.min_size_px
                                for s in scene.targets], bool),  # fmt: skip
        ))
    return grounds


def _flight_grounds(cfg: TrainConfig, classes: tuple[str, ...], bands: tuple[str, ...]) -> list[_Ground]:
    """``validation.flights``: annotated orthomosaics read tile by tile through :mod:`rams.raster` at the model GSD
    (as ``rams detect`` reads them), their annotations as items (box centre; size = the box's long side)."""
    vcfg = cfg.validation
    grounds: list[_Ground] = []
    if not vcfg.flights:
        return grounds  # synthetic scenes only: train without GDAL (a GPU box without rasterio, scripts/gpu_train.sh)
    from rasterio.windows import Window

    from rams.detector.datasets import OrthoSource, SourceContext

    for fcfg in vcfg.flights:
        src = OrthoSource(fcfg, SourceContext(classes, bands, cfg.gsd_m, vcfg.chip_size_px, cfg.value_range))
        b = src.boxes

        def read(r0: int, c0: int, h: int, w: int, src: Any = src) -> tuple[np.ndarray, np.ndarray]:
            td = src._get_reader().read(Window(c0, r0, w, h))
            return np.rint(np.clip(td.image, 0.0, 1.0) * 255.0).astype(np.uint8), td.valid

        long_side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        grounds.append(_Ground(
            name=f"flight {fcfg.raster}",
            height=src.grid.height,
            width=src.grid.width,
            read=read,
            xy=np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1).astype(np.float64),
            labels=src.labels.astype(np.int64),
            countable=~src.ignore & (long_side >= vcfg.min_size_px),
        ))
    return grounds


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
