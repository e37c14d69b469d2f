"""Training chips straight from synthetic scenes in memory: image, validity, boxes, labels. No GDAL needed.

Each chip is a window of its own random scene: ground cropped from a pool of pre-rendered ground plates
(terrain, sun and GSD per plate; see :class:`ChipSampler`), then its own targets, confusers, photo seams and
camera effects drawn from ``(seed, index)``, rendered by the same code as full mosaics
(:func:`rams.synth.scene.render_window`), quantised to uint8 and scaled by 1/255 exactly as
:class:`rams.raster.OrthoReader` scales uint8 mosaics.

The mix of chips is set by ``positive_fraction`` (chips with 1..``max_targets`` targets) and
``hard_negative_fraction`` (no targets, dense confusers: stones, lids, cans, bottles, litter, weeds,
shadows); the rest is plain ground with light clutter. ``sample(index)`` is a pure function of
``(seed, index)`` (and of the pool's epoch, 0 unless :meth:`ChipSampler.set_epoch` is called), so DataLoader
workers can call it in any order::

    sampler = ChipSampler(seed=1, chip_size_px=256, gsd_m=0.01)
    chip = sampler.sample(0)          # or sampler[0]; len(sampler) for map-style datasets
    chip.image.shape                  # (3, 256, 256) float32 in [0, 1]
    chip.boxes_xyxy_px, chip.labels   # (N, 4) float32 (col0, row0, col1, row1); (N,) int64

This module must not import rasterio, geopandas or pyogrio (training runs on GPU boxes without GDAL).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rams.classes import CLASS_NAMES
from rams.errors import ConfigError
from rams.synth.camera import CameraModel, PhotoLayout, random_layout
from rams.synth.objects import Light, Sprite, make_confuser, sprite_visibility
from rams.synth.scene import (
    HALO_PX,
    GroundPlate,
    Pattern,
    Scene,
    SpriteIndex,
    ThermalModel,
    ground_layers,
    layout_valid_points,
    place_confusers,
    place_targets,
    random_light,
    random_thermal,
    render_window,
)
from rams.synth.terrain import ALL_TERRAINS, TERRAINS, GroundParams, random_ground

#: Confuser kinds that look most like mines at survey GSDs (over-sampled in hard-negative chips).
_MINE_LIKE = ("stone", "lid", "can", "bottle", "plastic", "clod", "stick", "shadow", "weed", "leaf")


@dataclass(frozen=True)
class Chip:
    """One training chip.

    Attributes:
        image: float32 (C, H, W) in [0, 1] (uint8 / 255, as the raster reader scales uint8 mosaics);
            invalid pixels are 0.
        valid: bool (H, W), False outside the mosaic footprint.
        boxes_xyxy_px: float32 (N, 4) axis-aligned boxes (col0, row0, col1, row1) of the visible part of each
            target, in chip pixels (end exclusive).
        labels: int64 (N,) indices into :data:`rams.classes.CLASS_NAMES`.
        visible_fraction: float32 (N,) share of each footprint not hidden by soil or vegetation.
        gsd_m: ground sample distance the chip was rendered at.
        terrain: terrain name of the chip's scene.
        kind: "positive", "hard_negative" or "empty".
        models: real item model of each box (e.g. "PMN-2").
    """

    image: np.ndarray
    valid: np.ndarray
    boxes_xyxy_px: np.ndarray
    labels: np.ndarray
    visible_fraction: np.ndarray
    gsd_m: float = 0.0
    terrain: str = ""
    kind: str = ""
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChipScene:
    """The scene behind one chip: the chip is the window (``row0``, ``col0``, size, size) of ``scene``."""

    scene: Scene
    row0: int
    col0: int
    terrain: str
    kind: str


@dataclass(frozen=True)
class _Base:
    """Ground and light shared by the chips cut from one plate."""

    terrain: str
    gsd_m: float
    light: Light
    ground: GroundParams
    thermal: ThermalModel
    size_px: int
    plate: GroundPlate | None


class ChipSampler:
    """Deterministic random training chips (see the module doc). Map-style: ``len`` and ``[index]``.

    Ground is the costly part to render, so by default chips crop it from a pool of ``ground_pool`` ground
    plates (``plate_px`` square, one terrain, sun and GSD each, rendered lazily on first use and kept:
    about 3 MB each at 640 px), then paint their own targets, confusers and camera effects on it. Call
    :meth:`set_epoch` to draw a fresh pool (chips stay a pure function of ``(seed, epoch, index)``);
    ``ground_pool=0`` renders every chip's ground from scratch (unlimited variety, ~10x slower).

    Args:
        seed: base seed; chip ``index`` is drawn from ``(seed, index)`` alone (and the epoch of the pool).
        chip_size_px: chip height and width in pixels.
        gsd_m: nominal ground sample distance (metres per pixel).
        bands: "rgb" (3 bands; "rgba" is the same: alpha is a mask, not an image band) or "thermal" (1 band).
        terrains: terrains to draw from (default all of :data:`rams.synth.terrain.TERRAINS`; the held-out
            terrains of :data:`rams.synth.terrain.HELD_OUT_TERRAINS` only when named).
        classes: target classes to draw from (default all of :data:`rams.classes.CLASS_NAMES`).
        class_weights: relative draw weight per class of ``classes`` (absent classes weigh 1), to oversample the
            weak or easily confused ones; ``None`` (the default) draws them evenly, exactly as before.
        gsd_jitter: (low, high) multiplier range on ``gsd_m`` (log-uniform), so the model sees a GSD range.
        positive_fraction: share of chips with targets.
        hard_negative_fraction: share of chips with no targets and dense mine-like confusers.
        max_targets: most targets in one chip.
        min_visible_fraction: targets less visible than this are painted but not labelled.
        nodata_fraction: share of chips that include a ragged mosaic edge (invalid pixels).
        length: what ``len()`` reports (an epoch for map-style data loaders).
        ground_pool: number of ground plates to crop from (0: render each chip's ground).
        plate_px: side of a ground plate in pixels.
    """

    def __init__(
        self,
        seed: int = 0,
        chip_size_px: int = 256,
        gsd_m: float = 0.01,
        bands: str = "rgb",
        terrains: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        class_weights: Mapping[str, float] | None = None,
        gsd_jitter: tuple[float, float] = (0.8, 1.25),
        positive_fraction: float = 0.6,
        hard_negative_fraction: float = 0.25,
        max_targets: int = 6,
        min_visible_fraction: float = 0.2,
        nodata_fraction: float = 0.05,
        length: int = 10000,
        ground_pool: int = 48,
        plate_px: int = 640,
    ) -> None:
        if chip_size_px < 32 or chip_size_px > 4096:
            raise ConfigError(f"chip_size_px={chip_size_px} must be between 32 and 4096")
        if not 0.001 <= gsd_m <= 0.5:
            raise ConfigError(f"gsd_m={gsd_m} must be between 0.001 and 0.5 metres per pixel")
        if bands not in ("rgb", "rgba", "thermal"):
            raise ConfigError(f"bands={bands!r}: use 'rgb', 'rgba' or 'thermal'")
        self.terrains = tuple(terrains) if terrains else TERRAINS
        bad = [t for t in self.terrains if t not in ALL_TERRAINS]
        if bad:
            raise ConfigError(f"unknown terrain(s) {bad}; choose from {', '.join(ALL_TERRAINS)}")
        self.classes = tuple(classes) if classes else CLASS_NAMES
        badc = [c for c in self.classes if c not in CLASS_NAMES]
        if badc:
            raise ConfigError(f"unknown class(es) {badc}; choose from {', '.join(CLASS_NAMES)}")
        try:
            weights = {str(k): float(v) for k, v in dict(class_weights or {}).items()}
        except (TypeError, ValueError) as err:
            raise ConfigError(f"class_weights={class_weights!r} must map class names to numbers ({err})") from err
        badw = sorted(set(weights) - set(self.classes))
        if badw:
            raise ConfigError(f"class_weights names {badw}, not drawn here; weigh only {', '.join(self.classes)}")
        if any(not (math.isfinite(w) and w > 0) for w in weights.values()):
            raise ConfigError(f"class_weights={weights}: every weight must be a number > 0 (leave a class out for 1)")
        self.class_weights = tuple(float(weights.get(c, 1.0)) for c in self.classes)
        lo, hi = gsd_jitter
        if not 0 < lo <= hi:
            raise ConfigError(f"gsd_jitter={gsd_jitter} must be (low, high) with 0 < low <= high")
        fractions_ok = positive_fraction >= 0 and hard_negative_fraction >= 0
        if not (fractions_ok and positive_fraction + hard_negative_fraction <= 1):
            raise ConfigError("positive_fraction and hard_negative_fraction must be >= 0 and sum to <= 1")
        if max_targets < 1:
            raise ConfigError("max_targets must be >= 1")
        if ground_pool < 0:
            raise ConfigError("ground_pool must be >= 0 (0 renders every chip's ground)")
        self.seed = int(seed)
        self.chip_size_px = int(chip_size_px)
        self.gsd_m = float(gsd_m)
        self.bands = "thermal" if bands == "thermal" else "rgb"
        self.gsd_jitter = (float(lo), float(hi))
        self.positive_fraction = float(positive_fraction)
        self.hard_negative_fraction = float(hard_negative_fraction)
        self.max_targets = int(max_targets)
        self.min_visible_fraction = float(min_visible_fraction)
        self.nodata_fraction = float(nodata_fraction)
        self.length = int(length)
        self.ground_pool = int(ground_pool)
        self.plate_px = max(int(plate_px), self.chip_size_px + 2 * HALO_PX + 32)
        self.epoch = 0
        self._plates: dict[int, _Base] = {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Chip:
        return self.sample(index)

    def __iter__(self) -> Iterator[Chip]:
        for i in range(self.length):
            yield self.sample(i)

    @property
    def n_bands(self) -> int:
        return 1 if self.bands == "thermal" else 3

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh pool of ground plates for ``epoch`` (drops the cached plates)."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self._plates.clear()

    def _draw_base(self, rng: np.random.Generator, terrain: str, size_px: int) -> tuple[_Base, tuple[float, ...]]:
        lo, hi = self.gsd_jitter
        gsd = self.gsd_m * math.exp(rng.uniform(math.log(lo), math.log(hi)))
        side = size_px * gsd
        light = random_light(rng)
        n_tracks = (1 if rng.random() < 0.3 else 0) if terrain != "mixed" else None
        ground = random_ground(rng, terrain, (0.0, 0.0, side, side), n_tracks=n_tracks)
        base = _Base(terrain, gsd, light, ground, random_thermal(rng), size_px, None)
        return base, (0.0, 0.0, side, side)

    def _plate(self, plate_id: int) -> _Base:
        got = self._plates.get(plate_id)
        if got is not None:
            return got
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFF, self.epoch, plate_id, 0x9E37])
        terrain = self.terrains[plate_id % len(self.terrains)]
        base, _ = self._draw_base(rng, terrain, self.plate_px)
        n = self.plate_px
        tmp = _scene_for(base, self.bands, (), (), _full_layout(rng, base.gsd_m, 0, 0, n), True, rng, None)
        rows = np.arange(n, dtype=np.int64)
        plate = GroundPlate(ground_layers(tmp, rows, rows))
        base = _Base(base.terrain, base.gsd_m, base.light, base.ground, base.thermal, n, plate)
        self._plates[plate_id] = base
        return base

    def scene(self, index: int) -> ChipScene:
        """The random scene behind chip ``index``; the chip is its window (row0, col0, size, size)."""
        if index < 0:
            raise IndexError(f"chip index {index} must be >= 0")
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFF, int(index)])
        size = self.chip_size_px
        if self.ground_pool > 0:
            base = self._plate(int(rng.integers(self.ground_pool)))
            r0 = int(rng.integers(HALO_PX, base.size_px - size - HALO_PX + 1))
            c0 = int(rng.integers(HALO_PX, base.size_px - size - HALO_PX + 1))
        else:
            terrain = self.terrains[int(rng.integers(len(self.terrains)))]
            base, _ = self._draw_base(rng, terrain, size)
            r0 = c0 = 0
        u = rng.random()
        kind = "positive" if u < self.positive_fraction else (
            "hard_negative" if u < self.positive_fraction + self.hard_negative_fraction else "empty"
        )
        scene = _chip_scene(rng, base, r0, c0, size, self.bands, kind, self.classes, self.class_weights,
                            self.max_targets, self.nodata_fraction)
        return ChipScene(scene, r0, c0, base.terrain, kind)

    def sample(self, index: int) -> Chip:
        """The chip number ``index`` (any int >= 0): a pure function of ``(seed, index)`` (and the epoch)."""
        cs = self.scene(index)
        scene, size = cs.scene, self.chip_size_px
        rendered = render_window(scene, cs.row0, cs.col0, size, size,
                                 noise_rng=np.random.default_rng(scene.seed))
        image = rendered.image.astype(np.float32) * np.float32(1.0 / 255.0)
        boxes, labels, vis, models = [], [], [], []
        canopy = rendered.canopy_alpha if rendered.canopy_alpha is not None else np.zeros((size, size), np.float32)
        for s in scene.targets:
            box, frac = _visible_box(scene, s, canopy, cs.row0, cs.col0, size)
            if box is None or frac < self.min_visible_fraction:
                continue
            boxes.append(box)
            labels.append(CLASS_NAMES.index(s.cls or ""))
            vis.append(frac)
            models.append(s.kind)
        return Chip(
            image=image,
            valid=rendered.valid,
            boxes_xyxy_px=np.asarray(boxes, np.float32).reshape(-1, 4),
            labels=np.asarray(labels, np.int64),
            visible_fraction=np.asarray(vis, np.float32),
            gsd_m=float(scene.gsd_m),
            terrain=cs.terrain,
            kind=cs.kind,
            models=tuple(models),
        )


def _visible_box(
    scene: Scene, s: Sprite, canopy: np.ndarray, row0: int, col0: int, size: int
) -> tuple[list[float] | None, float]:
    """Box of the pixels where the target is visible (soil and canopy removed), in chip pixels."""
    r0, c0, cov, vis = sprite_visibility(s, scene.gsd_m)
    h, w = cov.shape
    # canopy over the sprite box (the box may stick out of the chip: no canopy there)
    ca = np.zeros((h, w), np.float32)
    rr0, cc0 = max(r0, row0), max(c0, col0)
    rr1, cc1 = min(r0 + h, row0 + size), min(c0 + w, col0 + size)
    if rr1 > rr0 and cc1 > cc0 and not s.on_top:
        ca[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = canopy[rr0 - row0:rr1 - row0, cc0 - col0:cc1 - col0]
    seen = vis * (1.0 - ca)
    total = float(cov.sum())
    frac = float(seen.sum() / total) if total > 0 else 0.0
    m = seen > 0.3
    if not m.any():
        return None, frac
    rr = np.flatnonzero(m.any(axis=1))
    cc = np.flatnonzero(m.any(axis=0))
    box = [
        float(np.clip(c0 + cc[0] - col0, 0, size)),
        float(np.clip(r0 + rr[0] - row0, 0, size)),
        float(np.clip(c0 + cc[-1] + 1 - col0, 0, size)),
        float(np.clip(r0 + rr[-1] + 1 - row0, 0, size)),
    ]
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None, frac
    return box, frac


def _full_layout(rng: np.random.Generator, gsd: float, r0: int, c0: int, size: int) -> PhotoLayout:
    """Photos around a window, covering it completely (a seam crosses some windows)."""
    spacing = gsd * float(rng.uniform(900, 1600))
    pad = spacing * 1.5
    x0, y0 = c0 * gsd, r0 * gsd
    side = size * gsd
    return random_layout(rng, (x0 - pad, y0 - pad, x0 + side + pad, y0 + side + pad), spacing, ragged=False)


def _scene_for(
    base: _Base,
    bands: str,
    targets: Sequence[Sprite],
    confusers: Sequence[Sprite],
    layout: PhotoLayout,
    full: bool,
    rng: np.random.Generator,
    cam: CameraModel | None,
) -> Scene:
    sprites = list(confusers) + list(targets)
    return Scene(
        seed=int(rng.integers(0, 2**62)),
        gsd_m=base.gsd_m,
        height_px=base.size_px,
        width_px=base.size_px,
        bands=bands,
        ground=base.ground,
        light=base.light,
        camera=cam if cam is not None else CameraModel(seed=0),
        layout=layout,
        full_footprint=full,
        thermal=base.thermal,
        brightness=float(rng.uniform(0.85, 1.15)),
        targets=tuple(targets),
        confusers=tuple(confusers),
        index=SpriteIndex(sprites, base.gsd_m, base.light, cell_px=256),
        plate=base.plate,
    )


def _chip_scene(
    rng: np.random.Generator,
    base: _Base,
    r0: int,
    c0: int,
    size: int,
    bands: str,
    kind: str,
    classes: Sequence[str],
    class_weights: Sequence[float],
    max_targets: int,
    nodata_fraction: float,
) -> Scene:
    """Targets, confusers, camera and photo layout of one chip on its ground."""
    gsd = base.gsd_m
    side = size * gsd
    x0, y0 = c0 * gsd, r0 * gsd
    extent = (x0, y0, x0 + side, y0 + side)
    ground = base.ground
    cam = CameraModel(
        seed=int(rng.integers(0, 2**62)),
        exposure_sd=float(rng.uniform(0.0, 0.04)),
        wb_sd=float(rng.uniform(0.0, 0.015)),
        vignette=float(rng.uniform(0.0, 0.1)),
        blur_px=(float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.5, 1.1))),
        motion_px=(0.0, float(rng.uniform(0.0, 1.6))),
        noise_sd=float(rng.uniform(0.004, 0.02)),
        jpeg_quality=int(rng.integers(70, 96)) if rng.random() < 0.8 else None,
        saturation=float(rng.uniform(0.8, 1.2)),
    )
    if rng.random() < nodata_fraction:
        layout = random_layout(rng, (x0 - 0.5 * side, y0 - 0.5 * side, x0 + 1.2 * side, y0 + 1.2 * side),
                               side / 1.5, ragged=True)
        full = False
    else:
        layout = _full_layout(rng, gsd, r0, c0, size)
        full = True

    def ok(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.ones(len(x), bool) if full else layout_valid_points(layout, x, y)

    targets: list[Sprite] = []
    clutter = {"positive": rng.uniform(0.3, 2.0), "hard_negative": rng.uniform(1.5, 4.0),
               "empty": rng.uniform(0.0, 0.6)}[kind]
    if kind == "positive":
        n = int(min(max_targets, rng.geometric(0.45)))
        preset: tuple[tuple[str, float, Pattern], ...] = tuple(
            (c, w, "random") for c, w in zip(classes, class_weights, strict=True))
        margin = 2 * gsd
        targets = place_targets(rng, preset, n, (x0 + margin, y0 + margin, x0 + side - margin, y0 + side - margin),
                                ok, ground.soil_rgb, burial_prob=0.3)
    confusers = place_confusers(rng, ground, extent, float(clutter), targets, max_count=150)
    if kind == "hard_negative":
        # extra mine-sized look-alikes
        extra = [
            make_confuser(rng, _MINE_LIKE[int(rng.integers(len(_MINE_LIKE)))], float(rng.uniform(x0, x0 + side)),
                          float(rng.uniform(y0, y0 + side)), ground.soil_rgb)
            for _ in range(int(rng.integers(3, 12)))
        ]
        confusers = sorted(confusers + extra, key=lambda s: -s.radius_m)
    return _scene_for(base, bands, targets, confusers, layout, full, rng, cam)
