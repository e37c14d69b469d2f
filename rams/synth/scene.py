"""Synthetic survey scenes: configuration, random scene layout, and rendering of any window.

:func:`build_scene` turns a :class:`SynthConfig` into a :class:`Scene` (sun, ground, camera, photo layout and
a global list of targets and confusers, placed once); :func:`render_window` renders any pixel window of it,
the same way whether a mosaic is written block by block or a training chip is cut. Per-pixel values are
pure functions of (seed, global position), so a scene split into blocks gives the same pixels as one window.

Render order per window: ground albedo lit by the sun on its micro-relief -> sprites (cast shadows first,
then shaded bodies) -> vegetation canopy over everything -> photo exposure / white balance / vignetting ->
per-photo blur (focus, resampling, motion) -> tone curve -> sensor noise -> uint8 -> JPEG round trip.
No GDAL here: training chips (:mod:`rams.synth.chips`) use this module on machines without it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from rams.config import StrictModel
from rams.synth.camera import (
    CameraModel,
    PhotoLayout,
    add_noise,
    blur_by_photo,
    jpeg_roundtrip,
    photo_gains,
    random_layout,
    tone,
)
from rams.synth.noise import subseed
from rams.synth.objects import (
    CONFUSER_DENSITY,
    Light,
    Sprite,
    bbox_px,
    make_confuser,
    make_target,
    paint_sprites,
    pick_model,
    sprite_visibility,
    with_visibility,
)
from rams.synth.objects import (
    Canvas as _Canvas,
)
from rams.synth.terrain import (
    ALL_TERRAINS,
    GroundParams,
    random_ground,
    render_ground,
)

log = logging.getLogger(__name__)

Pattern = Literal["cluster", "rows", "random"]

#: Target presets: (class, weight, placement pattern). "rows" = laid minefield rows; "cluster" = scattered
#: by rocket/aircraft (PFM-1, POM-2, submunitions); "random" = isolated UXO.
TARGET_PRESETS: dict[str, tuple[tuple[str, float, Pattern], ...]] = {
    "mixed": (
        ("pfm1", 3, "cluster"), ("pmn", 2, "rows"), ("pom2", 1, "cluster"), ("ozm72", 1, "rows"),
        ("mon", 1, "random"), ("tm62", 1.5, "rows"), ("submunition", 2, "cluster"), ("mortar", 1, "random"),
        ("shell", 1, "random"),
    ),
    "ap": (("pfm1", 3, "cluster"), ("pmn", 2, "rows"), ("pom2", 1, "cluster"), ("ozm72", 1, "rows"),
           ("mon", 1, "random")),
    "at": (("tm62", 1, "rows"),),
    "scatterable": (("pfm1", 3, "cluster"), ("pom2", 1, "cluster"), ("submunition", 2, "cluster")),
    "uxo": (("submunition", 2, "cluster"), ("mortar", 1, "random"), ("shell", 1, "random")),
    "pfm1": (("pfm1", 1, "cluster"),),
    "none": (),
}

#: Row spacing (m) of laid mines, by class.
_ROW_SPACING_M = {"pmn": (0.8, 1.5), "ozm72": (2.0, 4.0), "tm62": (3.0, 6.0), "mon": (3.0, 5.0)}


class CameraConfig(StrictModel):
    """Strength of camera and mosaic effects (per-photo values are drawn around these)."""

    exposure_drift: float = Field(0.02, ge=0, le=0.5, description="sd of per-photo log exposure")
    wb_drift: float = Field(0.008, ge=0, le=0.3, description="sd of per-photo, per-channel log gain")
    vignette: float = Field(0.06, ge=0, le=0.8, description="brightness fall-off at photo edges")
    blur_px: tuple[float, float] = (0.35, 0.9)
    motion_blur_px: tuple[float, float] = (0.0, 1.2)
    noise: float = Field(0.012, ge=0, le=0.2, description="sensor noise sd at mid-grey (0-1 scale)")
    jpeg_quality: int | None = Field(90, ge=10, le=100, description="JPEG round trip quality; null = none")

    @field_validator("blur_px", "motion_blur_px")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 5:
            raise ValueError("must be (low, high) with 0 <= low <= high <= 5 pixels")
        return v


def check_terrain(v: str) -> str:
    """``v`` if it names a terrain, else a ValueError listing them (config validators)."""
    if v not in ALL_TERRAINS:
        raise ValueError(f"unknown terrain {v!r}; choose one of {', '.join(ALL_TERRAINS)}")
    return v


def check_targets(v: str) -> str:
    """``v`` if it names a target preset, else a ValueError listing them (config validators)."""
    if v not in TARGET_PRESETS:
        raise ValueError(f"unknown targets preset {v!r}; choose one of {', '.join(TARGET_PRESETS)}")
    return v


class SynthConfig(StrictModel):
    """Every parameter of a synthetic scene. Same config (seed included) => identical outputs."""

    seed: int = Field(0, ge=0, lt=2**63)
    width_m: float = Field(60.0, gt=0, description="scene extent west-east, metres")
    height_m: float = Field(40.0, gt=0, description="scene extent north-south, metres")
    gsd_m: float = Field(0.005, description="ground sample distance, metres per pixel")
    terrain: str = "mixed"
    targets: str = "mixed"
    target_density_per_ha: float | None = Field(None, ge=0, le=100000)
    clutter: float = Field(1.0, ge=0, le=20, description="multiplier on confuser densities")
    burial_prob: float = Field(0.3, ge=0, le=1)
    bands: Literal["rgb", "rgba", "thermal"] = "rgba"
    crs: str = "EPSG:32638"
    origin_e: float = 500000.0
    origin_n: float = 4420000.0
    footprint: Literal["irregular", "full"] = "irregular"
    tiled: bool = True
    bigtiff: bool = False
    block_px: int = Field(512, ge=64, le=4096)
    camera: CameraConfig = CameraConfig()

    @field_validator("gsd_m")
    @classmethod
    def _gsd(cls, v: float) -> float:
        if not 0.001 <= v <= 0.5:
            raise ValueError(f"gsd {v} m is outside 0.001-0.5 m per pixel")
        return v

    @field_validator("terrain")
    @classmethod
    def _terrain(cls, v: str) -> str:
        return check_terrain(v)

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: str) -> str:
        return check_targets(v)

    @field_validator("block_px")
    @classmethod
    def _block(cls, v: int) -> int:
        if v % 16:
            raise ValueError("block_px must be a multiple of 16 (GeoTIFF tiles and JPEG blocks)")
        return v

    @model_validator(mode="after")
    def _size(self) -> SynthConfig:
        w, h = self.width_px, self.height_px
        if w < 32 or h < 32:
            raise ValueError(
                f"scene of {self.width_m} x {self.height_m} m at {self.gsd_m} m/px is only {w} x {h} px; "
                "give at least 32 px a side (larger size or finer gsd)"
            )
        if w * h > 200e9:
            raise ValueError(f"scene of {w} x {h} px is over 200 gigapixels; use a smaller size or coarser gsd")
        return self

    @property
    def width_px(self) -> int:
        return max(1, int(round(self.width_m / self.gsd_m)))

    @property
    def height_px(self) -> int:
        return max(1, int(round(self.height_m / self.gsd_m)))

    @property
    def density_per_ha(self) -> float:
        if self.target_density_per_ha is not None:
            return self.target_density_per_ha
        return 0.0 if self.targets == "none" else 120.0


@dataclass(frozen=True)
class ThermalModel:
    """Thermal band: temperatures (deg C) mapped linearly to uint8 DN 1-255 over [t_min, t_max]; 0 = nodata."""

    t_ground: float
    t_min: float
    t_max: float


class SpriteIndex:
    """Buckets of sprite indices by coarse pixel cells, to find what may touch a window quickly."""

    def __init__(self, sprites: Sequence[Sprite], gsd_m: float, light: Light, cell_px: int = 256) -> None:
        self.sprites = list(sprites)
        self.cell = cell_px
        self.cells: dict[tuple[int, int], list[int]] = {}
        for k, s in enumerate(self.sprites):
            r0, c0, r1, c1 = bbox_px(s, gsd_m, light)
            for cr in range(r0 // cell_px, (r1 - 1) // cell_px + 1):
                for cc in range(c0 // cell_px, (c1 - 1) // cell_px + 1):
                    self.cells.setdefault((cr, cc), []).append(k)

    def query(self, row0: int, col0: int, h: int, w: int) -> list[Sprite]:
        """Sprites whose paint box may touch the window, in paint (list) order."""
        found: set[int] = set()
        c = self.cell
        for cr in range(row0 // c, (row0 + h - 1) // c + 1):
            for cc in range(col0 // c, (col0 + w - 1) // c + 1):
                found.update(self.cells.get((cr, cc), ()))
        return [self.sprites[k] for k in sorted(found)]


@dataclass(frozen=True)
class Scene:
    """A fully specified scene: everything :func:`render_window` needs, and the truth."""

    seed: int
    gsd_m: float
    height_px: int
    width_px: int
    bands: str
    ground: GroundParams
    light: Light
    camera: CameraModel
    layout: PhotoLayout
    full_footprint: bool
    thermal: ThermalModel
    brightness: float
    targets: tuple[Sprite, ...]
    confusers: tuple[Sprite, ...]
    index: SpriteIndex = field(repr=False, compare=False)
    plate: GroundPlate | None = field(default=None, repr=False, compare=False)

    @property
    def n_bands(self) -> int:
        return {"rgb": 3, "rgba": 3, "thermal": 1}[self.bands]


# ------------------------------------------------------------------ random scene parts


def random_light(rng: np.random.Generator) -> Light:
    """Sunny (most) or overcast light; the sun anywhere between 20 and 70 degrees up."""
    overcast = rng.random() < 0.2
    return Light(
        azimuth_deg=float(rng.uniform(0, 360)),
        elevation_deg=float(rng.uniform(20, 70)),
        ambient=float(rng.uniform(0.7, 0.9) if overcast else rng.uniform(0.22, 0.4)),
    )


def random_camera(rng: np.random.Generator, cfg: CameraConfig) -> CameraModel:
    """Camera effects of one flight around the configured strengths."""
    return CameraModel(
        seed=int(rng.integers(0, 2**62)),
        exposure_sd=cfg.exposure_drift,
        wb_sd=cfg.wb_drift,
        vignette=cfg.vignette,
        blur_px=cfg.blur_px,
        motion_px=cfg.motion_blur_px,
        noise_sd=cfg.noise,
        jpeg_quality=cfg.jpeg_quality,
        saturation=float(rng.uniform(0.85, 1.15)),
    )


def random_thermal(rng: np.random.Generator) -> ThermalModel:
    t = float(rng.uniform(12, 38))
    return ThermalModel(t_ground=t, t_min=t - 12.0, t_max=t + 13.0)


def terrain_at(ground: GroundParams, x_m: np.ndarray, y_m: np.ndarray) -> list[str]:
    """Base terrain name at points (resolves mixed scenes to the side of the field edge)."""
    if ground.terrain != "mixed":
        return [ground.terrain] * len(x_m)
    ex, ey, ang = ground.edge
    c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
    d = -(np.asarray(x_m) - ex) * s + (np.asarray(y_m) - ey) * c
    verge = ground.extra.get("verge_m", 1.0)
    out = []
    for dv in d:
        if abs(dv) < verge / 2:
            out.append(ground.parts[2].terrain)
        else:
            out.append(ground.parts[1].terrain if dv > 0 else ground.parts[0].terrain)
    return out


def place_targets(
    rng: np.random.Generator,
    preset: Sequence[tuple[str, float, Pattern]],
    n: int,
    extent_m: tuple[float, float, float, float],
    ok: Callable[[np.ndarray, np.ndarray], np.ndarray],
    soil_rgb: tuple[float, float, float],
    burial_prob: float,
    placed: list[Sprite] | None = None,
) -> list[Sprite]:
    """Place ``n`` targets by the preset's classes and patterns; ``ok(x, y)`` says where ground is imaged.

    Targets keep a clear gap between each other; a footprint must lie wholly on valid ground.
    """
    out: list[Sprite] = list(placed or [])
    if n <= 0 or not preset:
        return out
    x0, y0, x1, y1 = extent_m
    w = np.asarray([p[1] for p in preset], float)
    counts = rng.multinomial(n, w / w.sum())
    for (cls_name, _, pattern), count in zip(preset, counts, strict=True):
        left = int(count)
        guard = 0
        while left > 0 and guard < 50:
            guard += 1
            if pattern == "rows":
                lo, hi = _ROW_SPACING_M.get(cls_name, (1.0, 2.0))
                spacing = float(rng.uniform(lo, hi))
                k = min(left, int(rng.integers(4, 16)))
                ang = rng.uniform(0, np.pi)
                cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
                t = (np.arange(k) - (k - 1) / 2) * spacing
                xs = cx + t * np.cos(ang) + rng.normal(0, 0.05 * spacing, k)
                ys = cy + t * np.sin(ang) + rng.normal(0, 0.05 * spacing, k)
            elif pattern == "cluster":
                k = min(left, int(rng.integers(3, 20)))
                sx, sy = rng.uniform(0.5, 6.0), rng.uniform(0.5, 6.0)
                cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
                xs = cx + rng.normal(0, sx, k)
                ys = cy + rng.normal(0, sy, k)
            else:
                k = min(left, 3)
                xs = rng.uniform(x0, x1, k)
                ys = rng.uniform(y0, y1, k)
            for x, y in zip(xs, ys, strict=True):
                s = make_target(rng, pick_model(rng, cls_name), float(x), float(y), soil_rgb, burial_prob)
                if _fits(s, out, extent_m, ok):
                    out.append(s)
                    left -= 1
                    if left == 0:
                        break
    return out


def _fits(
    s: Sprite,
    others: Sequence[Sprite],
    extent_m: tuple[float, float, float, float],
    ok: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> bool:
    pts = s.footprint_xy(8)
    x0, y0, x1, y1 = extent_m
    if pts[:, 0].min() < x0 or pts[:, 0].max() > x1 or pts[:, 1].min() < y0 or pts[:, 1].max() > y1:
        return False
    if not bool(np.all(ok(pts[:, 0], pts[:, 1]))):
        return False
    return all(math.hypot(o.x_m - s.x_m, o.y_m - s.y_m) >= o.radius_m + s.radius_m + 0.1 for o in others)


def place_confusers(
    rng: np.random.Generator,
    ground: GroundParams,
    extent_m: tuple[float, float, float, float],
    clutter: float,
    avoid: Sequence[Sprite],
    max_count: int | None = None,
) -> list[Sprite]:
    """Scatter confusers with terrain-dependent densities, never overlapping a target (truth stays clean)."""
    from scipy.spatial import cKDTree

    x0, y0, x1, y1 = extent_m
    area = (x1 - x0) * (y1 - y0)
    parts = [ground.terrain] if ground.terrain != "mixed" else [p.terrain for p in ground.parts]
    kinds = sorted({k for t in parts for k in CONFUSER_DENSITY[t]})
    tree = cKDTree(np.asarray([[s.x_m, s.y_m] for s in avoid])) if avoid else None
    max_r = max((s.radius_m for s in avoid), default=0.0)
    out: list[Sprite] = []
    for kind in kinds:
        dmax = max(CONFUSER_DENSITY[t].get(kind, 0.0) for t in parts) * clutter
        n = int(rng.poisson(dmax * area))
        if max_count is not None:
            n = min(n, max_count)
        if n == 0:
            continue
        xs = rng.uniform(x0, x1, n)
        ys = rng.uniform(y0, y1, n)
        if ground.terrain == "mixed":
            here = terrain_at(ground, xs, ys)
            keep = rng.random(n) * dmax < np.asarray([CONFUSER_DENSITY[t].get(kind, 0) * clutter for t in here])
            xs, ys = xs[keep], ys[keep]
        for x, y in zip(xs, ys, strict=True):
            c = make_confuser(rng, kind, float(x), float(y), ground.soil_rgb)
            if tree is not None:
                near = tree.query_ball_point([c.x_m, c.y_m], c.radius_m + max_r + 0.03)
                if any(math.hypot(avoid[i].x_m - c.x_m, avoid[i].y_m - c.y_m) < avoid[i].radius_m + c.radius_m + 0.03
                       for i in near):
                    continue
            out.append(c)
    # paint big things first so small ones lie on top of them
    out.sort(key=lambda s: -s.radius_m)
    return out


def measure_visibility(scene_ground: GroundParams, s: Sprite, gsd_m: float, light: Light) -> float:
    """Visible fraction of a target: footprint not under soil, opacity, or vegetation canopy."""
    r0, c0, cov, vis = sprite_visibility(s, gsd_m)
    total = float(cov.sum())
    if total <= 0:
        return 0.0
    if s.on_top:
        return float(vis.sum() / total)
    h, w = cov.shape
    rows, cols = np.arange(r0, r0 + h), np.arange(c0, c0 + w)
    g = render_ground(scene_ground, (cols + 0.5) * gsd_m, (rows + 0.5) * gsd_m, rows, cols, gsd_m,
                      (light.azimuth_deg, light.elevation_deg))
    return float((vis * (1.0 - g.canopy_alpha)).sum() / total)


def build_scene(cfg: SynthConfig) -> Scene:
    """Draw a whole scene from its config: deterministic in ``cfg`` (the seed included)."""
    rng = np.random.default_rng(subseed(cfg.seed, "scene"))
    gsd = cfg.gsd_m
    w_px, h_px = cfg.width_px, cfg.height_px
    extent = (0.0, 0.0, w_px * gsd, h_px * gsd)
    light = random_light(rng)
    ground = random_ground(rng, cfg.terrain, extent)
    camera = random_camera(rng, cfg.camera)
    spacing = gsd * float(rng.uniform(900, 1600))
    spacing = min(spacing, min(extent[2], extent[3]) / 2.2)
    full = cfg.footprint == "full"
    layout = random_layout(rng, extent, spacing, ragged=not full)
    thermal = random_thermal(rng)
    brightness = float(rng.uniform(0.88, 1.12))

    def ok(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if full:
            return np.ones(len(x), bool)
        return layout_valid_points(layout, x, y)

    area_ha = extent[2] * extent[3] / 1e4
    n_targets = int(round(cfg.density_per_ha * area_ha))
    if n_targets == 0 and cfg.density_per_ha > 0 and TARGET_PRESETS[cfg.targets]:
        log.warning("%.4f ha at %g targets/ha rounds to no target; raise --density for a small scene",
                    area_ha, cfg.density_per_ha)
    targets = place_targets(rng, TARGET_PRESETS[cfg.targets], n_targets, extent, ok, ground.soil_rgb,
                            cfg.burial_prob)
    if len(targets) < n_targets:
        log.warning("placed %d of %d targets (not enough imaged ground)", len(targets), n_targets)
    confusers = place_confusers(rng, ground, extent, cfg.clutter, targets)
    targets = [with_visibility(s, measure_visibility(ground, s, gsd, light)) for s in targets]
    sprites = list(confusers) + list(targets)
    return Scene(
        seed=cfg.seed,
        gsd_m=gsd,
        height_px=h_px,
        width_px=w_px,
        bands=cfg.bands,
        ground=ground,
        light=light,
        camera=camera,
        layout=layout,
        full_footprint=full,
        thermal=thermal,
        brightness=brightness,
        targets=tuple(targets),
        confusers=tuple(confusers),
        index=SpriteIndex(sprites, gsd, light),
    )


def layout_valid_points(layout: PhotoLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether points (x, y arrays, scene metres) lie inside the mosaic footprint."""
    out = np.zeros(len(x), bool)
    for k in range(len(x)):
        _, _, valid, _ = layout.assign(np.asarray([x[k]]), np.asarray([y[k]]))
        out[k] = bool(valid[0, 0])
    return out


# ------------------------------------------------------------------ rendering

HALO_PX = 8


@dataclass
class Rendered:
    """A rendered window: ``image`` uint8 (C, h, w), ``valid`` bool (h, w); invalid pixels are 0.

    ``canopy_alpha`` (h, w) is the vegetation drawn over objects (what hides targets), for labelling.
    """

    image: np.ndarray
    valid: np.ndarray
    canopy_alpha: np.ndarray | None = None


@dataclass
class GroundLayers:
    """Lit ground of a window before objects: ``lit`` (C, H, W), canopy over objects, thermal base."""

    lit: np.ndarray
    temperature: np.ndarray | None
    canopy_alpha: np.ndarray
    canopy_rgb: np.ndarray | None


def ground_layers(scene: Scene, rows: np.ndarray, cols: np.ndarray) -> GroundLayers:
    """Ground of a window (contiguous global ``rows`` x ``cols``) lit by the scene's sun."""
    g = scene.gsd_m
    ys = (rows + 0.5) * g
    xs = (cols + 0.5) * g
    light = scene.light
    ground = render_ground(scene.ground, xs, ys, rows, cols, g, (light.azimuth_deg, light.elevation_deg))
    gy, gx = np.gradient(ground.height, g)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    irr = light.irradiance(-gx / norm, gy / norm, 1.0 / norm)
    irr = irr * (1.0 - (1.0 - light.shadow_level) * ground.shadow)
    if scene.bands == "thermal":
        alb = ground.albedo
        lum = 0.3 * alb[0] + 0.59 * alb[1] + 0.11 * alb[2]
        # sunlit, dark, dry ground is warm; moist ground and vegetation are cool
        temp = (scene.thermal.t_ground + 9.0 * (1 - light.ambient) * (irr - 1.0) + 6.0 * (0.45 - lum)
                - 12.0 * ground.moisture).astype(np.float32)
        return GroundLayers((lum * irr)[None].astype(np.float32), temp, ground.canopy_alpha, None)
    return GroundLayers((ground.albedo * irr[None]).astype(np.float32), None, ground.canopy_alpha, ground.canopy_rgb)


class GroundPlate:
    """A cache of :func:`ground_layers` over global rows/cols [0, size), quantised to save memory.

    Training chips crop their ground from a pool of plates instead of rendering it (the costly part),
    then paint their own objects and camera effects on it.
    """

    def __init__(self, layers: GroundLayers) -> None:
        self.size = layers.canopy_alpha.shape
        self._lit = np.clip(np.rint(layers.lit * 160.0), 0, 255).astype(np.uint8)
        self._ca = np.clip(np.rint(layers.canopy_alpha * 255.0), 0, 255).astype(np.uint8)
        self._crgb = (
            None if layers.canopy_rgb is None
            else np.clip(np.rint(layers.canopy_rgb * 255.0), 0, 255).astype(np.uint8)
        )
        self._temp = None if layers.temperature is None else layers.temperature.astype(np.float16)

    @property
    def nbytes(self) -> int:
        n = self._lit.nbytes + self._ca.nbytes
        n += self._crgb.nbytes if self._crgb is not None else 0
        n += self._temp.nbytes if self._temp is not None else 0
        return n

    def crop(self, r0: int, c0: int, h: int, w: int) -> GroundLayers:
        if r0 < 0 or c0 < 0 or r0 + h > self.size[0] or c0 + w > self.size[1]:
            raise ValueError(f"window ({r0}, {c0}, {h}, {w}) is outside the ground plate {self.size}")
        sl = (slice(r0, r0 + h), slice(c0, c0 + w))
        return GroundLayers(
            self._lit[:, sl[0], sl[1]].astype(np.float32) * np.float32(1 / 160.0),
            None if self._temp is None else self._temp[sl].astype(np.float32),
            self._ca[sl].astype(np.float32) * np.float32(1 / 255.0),
            None if self._crgb is None else self._crgb[:, sl[0], sl[1]].astype(np.float32) * np.float32(1 / 255.0),
        )


def render_window(
    scene: Scene, row0: int, col0: int, h: int, w: int, noise_rng: np.random.Generator | None = None
) -> Rendered:
    """Render pixels [row0, row0+h) x [col0, col0+w) of ``scene`` (global pixel indices) to uint8.

    Same pixels whatever the window layout, except JPEG artefacts, which follow the window's 8x8 grid
    (and sensor noise when ``noise_rng`` is given instead of the default position-keyed noise).
    """
    g = scene.gsd_m
    R0, C0 = row0 - HALO_PX, col0 - HALO_PX
    H, W = h + 2 * HALO_PX, w + 2 * HALO_PX
    rows = np.arange(R0, R0 + H, dtype=np.int64)
    cols = np.arange(C0, C0 + W, dtype=np.int64)
    light = scene.light
    layers = scene.plate.crop(R0, C0, H, W) if scene.plate is not None else ground_layers(scene, rows, cols)
    thermal = scene.bands == "thermal"
    canvas = _Canvas(layers.lit, layers.temperature, R0, C0, g)
    sprites = scene.index.query(R0, C0, H, W)
    paint_sprites(canvas, [s for s in sprites if not s.on_top], light)
    # vegetation over what lies on the ground, then what lies on the vegetation
    ca = layers.canopy_alpha
    if canvas.temperature is not None:
        canvas.temperature = canvas.temperature * (1 - ca) + (scene.thermal.t_ground - 2.5) * ca
    if layers.canopy_rgb is not None:
        canvas.image = canvas.image * (1 - ca)[None] + layers.canopy_rgb * ca[None]
    else:
        canvas.image = canvas.image * (1 - ca)[None] + canvas.image.mean() * ca[None]
    paint_sprites(canvas, [s for s in sprites if s.on_top], light)
    if thermal:
        assert canvas.temperature is not None
        span = scene.thermal.t_max - scene.thermal.t_min
        image = ((canvas.temperature - scene.thermal.t_min) / span)[None].astype(np.float32)
    else:
        image = canvas.image * np.float32(scene.brightness)
    pj, pi, pvalid, r2 = scene.layout.assign((cols + 0.5) * g, (rows + 0.5) * g)
    if not thermal:
        image *= photo_gains(scene.camera, pj, pi, r2, image.shape[0])
    else:
        # per-photo offsets of radiometric calibration (non-uniformity) instead of white balance
        image += 0.01 * (photo_gains(scene.camera, pj, pi, r2, 1) - 1.0)
    image = blur_by_photo(image.astype(np.float32), scene.camera, pj, pi, scene.layout.angle_deg)
    if thermal:
        from scipy.ndimage import gaussian_filter

        image = gaussian_filter(image, sigma=(0, 0.8, 0.8), mode="nearest")  # thermal optics are softer
    else:
        image = tone(image, scene.camera)
    add_noise(image, scene.camera, rows, cols, noise_rng)
    inner = (slice(None), slice(HALO_PX, HALO_PX + h), slice(HALO_PX, HALO_PX + w))
    img8 = np.clip(np.rint(image[inner] * 255.0), 0, 255).astype(np.uint8)
    if scene.camera.jpeg_quality is not None:
        img8 = jpeg_roundtrip(img8, scene.camera.jpeg_quality)
    valid = pvalid[HALO_PX:HALO_PX + h, HALO_PX:HALO_PX + w] if not scene.full_footprint else np.ones((h, w), bool)
    valid = valid & ((rows[HALO_PX:HALO_PX + h] >= 0) & (rows[HALO_PX:HALO_PX + h] < scene.height_px))[:, None]
    valid = valid & ((cols[HALO_PX:HALO_PX + w] >= 0) & (cols[HALO_PX:HALO_PX + w] < scene.width_px))[None, :]
    img8 = np.where(valid[None], np.maximum(img8, 1), 0).astype(np.uint8)
    return Rendered(img8, valid, ca[HALO_PX:HALO_PX + h, HALO_PX:HALO_PX + w])


def without_targets(scene: Scene) -> Scene:
    """The same scene with its targets removed (everything else identical): the background they lie on."""
    from dataclasses import replace

    return replace(scene, targets=(), index=SpriteIndex(list(scene.confusers), scene.gsd_m, scene.light))
