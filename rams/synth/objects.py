"""Targets (mines, submunitions, projectiles) and confusers as sprites painted at true physical size.

One implementation paints both mosaics and training chips. A :class:`Sprite` is an object on the ground in
scene metres; its shape is a signed distance field (positive inside) with a height field, so painting gets,
at any GSD and rotation: anti-aliased coverage, shading from one sun (normals from the height field),
specular highlights, cast shadows (height field marched towards the sun), a contact shadow, partial burial
(a noisy soil line across the object), dust, rust and fading.

Frames: scene metres are x east, y south (pixel (row, col) centre at ((col + .5) gsd, (row + .5) gsd)).
``rotation_deg`` is the long axis, counter-clockwise from east in the map frame (north up), in [0, 180).
Local object coordinates: u along the long axis, v across it (left of u), both metres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from rams.classes import CLASSES, ItemModel, get_class
from rams.synth.noise import value_noise
from rams.synth.textures import lookup, texture_at

# ------------------------------------------------------------------ colours (display RGB albedo)
OLIVE = (0.30, 0.32, 0.19)
DARK_GREEN = (0.19, 0.25, 0.15)
GREEN = (0.24, 0.33, 0.17)
BROWN = (0.38, 0.29, 0.20)
SAND = (0.63, 0.55, 0.40)
KHAKI = (0.47, 0.43, 0.29)
BLACK = (0.09, 0.09, 0.09)
GREY = (0.42, 0.43, 0.42)
DARK_GREY = (0.22, 0.23, 0.23)
RUST = (0.44, 0.25, 0.14)
COPPER = (0.55, 0.36, 0.22)
METAL = (0.55, 0.56, 0.55)

#: Colour choices per real item model (each entry (rgb, weight)).
MODEL_COLOURS: dict[str, tuple[tuple[tuple[float, float, float], float], ...]] = {
    "PFM-1": ((GREEN, 3), (OLIVE, 2), (BROWN, 2), (SAND, 2)),
    "PMN": ((BROWN, 2), (OLIVE, 2), ((0.28, 0.22, 0.16), 1)),
    "PMN-2": ((OLIVE, 3), (DARK_GREEN, 2), (BROWN, 1)),
    "POM-2": ((OLIVE, 2), (DARK_GREEN, 2), (GREY, 1)),
    "OZM-72": ((OLIVE, 2), (DARK_GREEN, 1), (RUST, 1)),
    "MON-50": ((OLIVE, 2), (BROWN, 1), (DARK_GREEN, 1), (KHAKI, 1)),
    "MON-100": ((OLIVE, 2), (DARK_GREEN, 1)),
    "TM-62": ((OLIVE, 3), (DARK_GREEN, 2), (BLACK, 1), (BROWN, 1), (KHAKI, 1)),
    "TM-57": ((OLIVE, 2), (DARK_GREEN, 1), (RUST, 1)),
    "PTAB-1M": ((OLIVE, 2), (GREY, 2), (DARK_GREEN, 1)),
    "9N235": ((OLIVE, 2), (GREY, 1), (DARK_GREY, 1)),
    "ShOAB-0.5": ((OLIVE, 2), (GREY, 1), (DARK_GREEN, 1)),
    "M77": ((OLIVE, 3), (KHAKI, 1)),
    "82mm mortar": ((OLIVE, 2), (GREY, 2), (DARK_GREEN, 1), (BLACK, 1)),
    "120mm mortar": ((OLIVE, 2), (GREY, 2), (DARK_GREEN, 1)),
    "122mm shell": ((OLIVE, 2), (GREY, 1), (KHAKI, 1), (RUST, 1)),
    "152mm shell": ((OLIVE, 2), (GREY, 1), (KHAKI, 1), (RUST, 1)),
}

#: Height above ground (m) of each model as it usually lies (cylinders lie on their side).
MODEL_HEIGHT_M: dict[str, float] = {
    "PFM-1": 0.02, "PMN": 0.056, "PMN-2": 0.054, "POM-2": 0.16, "OZM-72": 0.04, "MON-50": 0.155,
    "MON-100": 0.083, "TM-62": 0.11, "TM-57": 0.10, "PTAB-1M": 0.042, "9N235": 0.065, "ShOAB-0.5": 0.06,
    "M77": 0.039, "82mm mortar": 0.082, "120mm mortar": 0.12, "122mm shell": 0.122, "152mm shell": 0.152,
}

#: Disc details: rings (r0, r1 as fractions of the radius, rgb or None = body colour, brightness, height+).
_DISC_RINGS: dict[str, tuple[tuple[float, float, tuple[float, float, float] | None, float, float], ...]] = {
    "PMN": ((0.0, 0.68, BLACK, 1.0, 0.12), (0.68, 0.78, DARK_GREY, 1.2, 0.06)),
    "PMN-2": ((0.0, 0.55, BLACK, 1.0, 0.10), (0.55, 0.62, None, 0.75, 0.04)),
    "POM-2": ((0.0, 0.38, DARK_GREY, 1.0, 0.05), (0.38, 0.45, None, 0.7, 0.02)),
    "OZM-72": ((0.0, 0.2, DARK_GREY, 1.0, 0.35), (0.2, 0.27, BLACK, 1.0, 0.1), (0.8, 0.86, None, 0.8, 0.0)),
    "MON-100": ((0.0, 0.82, None, 0.9, -0.25), (0.9, 1.0, None, 0.8, 0.0)),
    "TM-62": ((0.0, 0.26, DARK_GREY, 1.0, 0.22), (0.26, 0.31, BLACK, 1.0, 0.15), (0.58, 0.63, None, 1.18, 0.04)),
    "TM-57": ((0.0, 0.24, DARK_GREY, 1.0, 0.18), (0.24, 0.29, BLACK, 1.0, 0.1), (0.7, 0.74, None, 1.15, 0.03)),
    "lid": ((0.0, 0.85, None, 0.92, -0.3), (0.85, 1.0, None, 1.12, 0.0)),
}

#: Projectile profiles: (nose fraction, tail fraction, tail radius fraction, fins, band u, band rgb).
_PROFILES: dict[str, tuple[float, float, float, bool, float, tuple[float, float, float] | None]] = {
    "PTAB-1M": (0.12, 0.35, 0.95, True, 0.0, None),
    "9N235": (0.18, 0.3, 0.7, True, 0.0, None),
    "M77": (0.15, 0.15, 0.8, False, -0.6, (0.85, 0.85, 0.82)),
    "82mm mortar": (0.32, 0.38, 0.32, True, 0.1, None),
    "120mm mortar": (0.3, 0.35, 0.3, True, 0.1, None),
    "122mm shell": (0.3, 0.08, 0.9, False, -0.72, COPPER),
    "152mm shell": (0.28, 0.08, 0.9, False, -0.72, COPPER),
    "can": (0.0, 0.0, 1.0, False, 0.0, None),
    "bottle": (0.35, 0.0, 1.0, False, 0.0, None),
    "stick": (0.0, 0.0, 1.0, False, 0.0, None),
}

#: Confuser kinds and what they imitate.
CONFUSER_KINDS: tuple[str, ...] = (
    "stone", "clod", "plastic", "lid", "can", "bottle", "leaf", "weed", "stick", "shadow",
)


@dataclass(frozen=True)
class Sprite:
    """One object on the ground (target or confuser), in scene metres. See the module doc for frames."""

    kind: str
    cls: str | None
    shape: str
    x_m: float
    y_m: float
    length_m: float
    width_m: float
    height_m: float
    rotation_deg: float
    rgb: tuple[float, float, float]
    seed: int
    burial: float = 0.0
    dust: float = 0.0
    dust_rgb: tuple[float, float, float] = (0.42, 0.34, 0.26)
    rust: float = 0.0
    gloss: float = 0.15
    opacity: float = 1.0
    d_temp: float = 0.0
    coeffs: tuple[float, ...] = ()
    visible_fraction: float = 1.0
    on_top: bool = False  # lies on the vegetation (scattered from the air, litter): not hidden by it

    @property
    def radius_m(self) -> float:
        """Radius of the circle holding the footprint."""
        return 0.5 * math.hypot(self.length_m, self.width_m)

    def footprint_xy(self, n_disc: int = 32) -> np.ndarray:
        """Footprint polygon vertices (N, 2) in scene metres (x east, y south): ellipse or rectangle."""
        c, s = math.cos(math.radians(self.rotation_deg)), math.sin(math.radians(self.rotation_deg))
        if self.shape in ("disc", "lid", "stone", "clod", "weed", "shadow", "plastic"):
            t = np.linspace(0, 2 * np.pi, n_disc, endpoint=False)
            u, v = 0.5 * self.length_m * np.cos(t), 0.5 * self.width_m * np.sin(t)
        else:
            u = 0.5 * self.length_m * np.array([-1, 1, 1, -1])
            v = 0.5 * self.width_m * np.array([-1, -1, 1, 1])
        east = u * c - v * s
        north = u * s + v * c
        return np.stack([self.x_m + east, self.y_m - north], axis=1)


@dataclass(frozen=True)
class Light:
    """One sun: azimuth (compass degrees, clockwise from north), elevation, share of ambient sky light."""

    azimuth_deg: float
    elevation_deg: float
    ambient: float

    @property
    def vector(self) -> tuple[float, float, float]:
        """Unit vector towards the sun (east, north, up)."""
        az, el = math.radians(self.azimuth_deg), math.radians(self.elevation_deg)
        return (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))

    @property
    def shadow_level(self) -> float:
        """Brightness of shadowed flat ground relative to sunlit flat ground."""
        sz = self.vector[2]
        return self.ambient / (self.ambient + (1 - self.ambient) * sz)

    def irradiance(self, n_e: np.ndarray, n_n: np.ndarray, n_z: np.ndarray) -> np.ndarray:
        """Irradiance for unit normals, normalised so that flat sunlit ground is 1."""
        se, sn, sz = self.vector
        d = 1.0 - self.ambient
        ndots = np.maximum(n_e * se + n_n * sn + n_z * sz, 0.0)
        return (self.ambient * (0.5 + 0.5 * n_z) + d * ndots) / (self.ambient + d * sz)


# ------------------------------------------------------------------ shape fields


def _clamp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """np.clip without its wrapper overhead (sprites are small arrays: call overhead dominates)."""
    return np.minimum(np.maximum(x, lo), hi)


def _smooth(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = _clamp((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _harmonic(theta: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
    """1 + sum a_k cos(k theta + phi_k) for coeffs = (a2, phi2, a3, phi3, ...)."""
    out = np.ones_like(theta)
    for k in range(len(coeffs) // 2):
        out += coeffs[2 * k] * np.cos((k + 2) * theta + coeffs[2 * k + 1])
    return out


def _profile_width(s: Sprite, un: np.ndarray) -> np.ndarray:
    """Projectile half-width (fraction of the body radius) along un in [-1 (tail), 1 (nose)]."""
    nose, tail, tail_r, fins, _, _ = _PROFILES.get(s.kind, _PROFILES["can"])
    w = np.ones_like(un)
    if nose > 0:
        t = _clamp((un - (1 - 2 * nose)) / (2 * nose), 0.0, 1.0)
        tip = 0.35 if s.kind == "bottle" else 0.12
        w = np.where(t > 0, np.maximum(np.sqrt(_clamp(1 - t**1.7, 0, 1)), tip), w)
    if tail > 0:
        in_tail = un < -1 + 2 * tail
        w = np.where(in_tail, tail_r, w)
        if fins:
            w = np.where(un < -1 + 0.35 * tail, 1.0, w)
    return w


def shape_fields(
    s: Sprite, u: np.ndarray, v: np.ndarray, gsd_m: float, colour: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(sdf metres +inside, height metres, albedo (3, h, w) or None) of sprite ``s`` at local (u, v)."""
    L, W, H = 0.5 * s.length_m, 0.5 * s.width_m, s.height_m
    rgb = np.asarray(s.rgb, np.float32)
    shape = s.shape
    lum: np.ndarray | float = 1.0
    col_img: np.ndarray | None = None
    if shape in ("disc", "lid"):
        rn = np.sqrt((u / L) ** 2 + (v / W) ** 2)
        sdf = (1.0 - rn) * min(L, W)
        if s.kind == "ShOAB-0.5":
            height = H * np.sqrt(_clamp(1 - rn * rn, 0, 1))
            if colour:
                lum = 1.0 - 0.15 * (np.cos(np.arctan2(v, u) * 8) > 0.6)
        else:
            height = H * _smooth(1.0, 0.86, rn)
        rings = _DISC_RINGS.get(s.kind if shape == "disc" else "lid", ())
        if colour:
            col_img = np.broadcast_to(rgb[:, None, None], (3,) + u.shape).copy()
        for r0, r1, rc, bright, dh in rings:
            m = _smooth(r0 - 0.03, r0 + 0.03, rn) * _smooth(r1 + 0.03, r1 - 0.03, rn) if r0 > 0 else _smooth(
                r1 + 0.03, r1 - 0.03, rn
            )
            height = height + dh * H * m
            if colour and col_img is not None:
                target = (np.asarray(rc, np.float32) if rc is not None else rgb) * bright
                col_img = col_img * (1 - m) + target[:, None, None] * m
        if s.kind == "PMN-2" and colour and col_img is not None:
            cross = (np.minimum(np.abs(u), np.abs(v)) < 0.12 * L) & (rn < 0.5)
            col_img = np.where(cross[None], col_img * 1.6 + 0.04, col_img)
            height = height + 0.05 * H * cross
    elif shape == "butterfly":
        # PFM-1 from above: a thick explosive body at one end (with the fuze boss), a long thin wing
        # tapering away from it along one side; overall 120 x 61 mm.
        bu = u + 0.55 * L
        qx, qy = np.abs(bu) - 0.45 * L + 0.35 * W, np.abs(v) - W + 0.35 * W
        body = -(np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - 0.35 * W)
        t = _clamp((u + 0.1 * L) / (1.1 * L), 0, 1)
        top = W * (0.55 - 0.75 * t)  # wing's upper edge falls towards the tip
        wing = np.minimum(np.minimum(top - v, v + W * (1.0 - 0.25 * t)), np.minimum(L - u, u + 0.2 * L))
        boss = 0.3 * W - np.hypot(u + 0.12 * L, v - 0.15 * W)
        sdf = np.maximum(np.maximum(body, wing), boss)
        height = np.maximum(
            np.maximum(H * _smooth(-0.1 * W, 0.3 * W, body), 0.25 * H * _smooth(0, 0.08 * W, wing)),
            1.15 * H * _smooth(0, 0.12 * W, boss),
        )
        if colour:
            lum = (1.0 + 0.1 * _smooth(0, 0.08 * W, wing) * (1 - _smooth(0, 0.3 * W, body))
                   - 0.12 * _smooth(0, 0.1 * W, boss) + 0.05 * np.sin(u / L * 30) * _smooth(0, 0.2 * W, body))
    elif shape == "box":
        qx, qy = np.abs(u) - L + 0.25 * W, np.abs(v) - W + 0.25 * W
        sdf = -(np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - 0.25 * W)
        height = H * _smooth(0, 0.2 * W, sdf) * (1 - 0.25 * (v / W) ** 2)
        if colour:
            lum = 1.0 - 0.55 * (np.hypot(u - 0.6 * L, v) < 0.22 * W)
    elif shape == "cylinder":
        un = _clamp(u / L, -1.2, 1.2)
        if s.kind == "stick" and s.coeffs:
            v = v - s.coeffs[0] * L * (un**2 - 0.33)
        wprof = _profile_width(s, un) * W
        sdf = np.minimum(wprof - np.abs(v), L - np.abs(u))
        height = np.sqrt(np.maximum(wprof**2 - v**2, 0)) * (H / max(W * 2, 1e-6)) * 2 * _smooth(
            -0.5 * gsd_m, 0.5 * gsd_m, L - np.abs(u)
        )
        if colour:
            col_img = np.broadcast_to(rgb[:, None, None], (3,) + u.shape).copy()
            prof = _PROFILES.get(s.kind)
            if prof is not None and prof[5] is not None:
                band = np.abs(un - prof[4]) < 0.05
                col_img = np.where(band[None], np.asarray(prof[5], np.float32)[:, None, None], col_img)
            if s.kind in ("82mm mortar", "120mm mortar", "122mm shell", "152mm shell", "9N235", "PTAB-1M"):
                fuze = un > 0.9
                col_img = np.where(fuze[None], np.asarray(DARK_GREY, np.float32)[:, None, None], col_img)
            if s.kind == "can" and s.coeffs:
                label = np.abs(un) < 0.8
                lab_rgb = np.asarray(s.coeffs[1:4], np.float32)[:, None, None]
                col_img = np.where(label[None], lab_rgb, col_img)
    elif shape == "weed":
        # a rosette of n elliptical leaves of different lengths, each with a midrib and lighter tip
        n = int(s.coeffs[0]) if s.coeffs else 5
        ph = s.coeffs[1] if len(s.coeffs) > 1 else 0.0
        r = np.sqrt(u * u + v * v)
        theta = np.arctan2(v, u) - ph
        sector = 2 * np.pi / n
        li = np.floor(theta / sector + 0.5)
        sdf = np.full(u.shape, -1.0, np.float32)
        height = np.zeros(u.shape, np.float32)
        tipness = np.zeros(u.shape, np.float32)
        rib = np.zeros(u.shape, np.float32)
        for dl in (-1, 0, 1):
            k = li + dl
            lenf = 0.55 + 0.45 * (0.5 + 0.5 * np.sin(k * 12.9898 + (s.seed % 1000)))  # per-leaf length
            delta = theta - k * sector
            along = r * np.cos(delta) / (L * lenf)
            across = r * np.sin(delta) / (L * 0.22)
            e = np.sqrt(((along - 0.55) / 0.47) ** 2 + across**2)
            leaf_sdf = (1.0 - e) * 0.22 * L
            better = leaf_sdf > sdf
            sdf = np.where(better, leaf_sdf, sdf)
            height = np.where(better, H * _clamp(along, 0, 1) * _clamp(1 - e, 0, 1) ** 0.5, height)
            tipness = np.where(better, _clamp(along, 0, 1), tipness)
            rib = np.where(better, (np.abs(across) < 0.12).astype(np.float32), rib)
        centre = 0.12 * L - r
        sdf = np.maximum(sdf, centre)
        if colour:
            lum = 0.75 + 0.3 * tipness + 0.12 * rib
    elif shape in ("stone", "clod", "plastic", "shadow"):
        rn = np.sqrt((u / L) ** 2 + (v / W) ** 2)
        theta = np.arctan2(v / W, u / L)
        bound = _harmonic(theta, s.coeffs)
        x = _clamp(rn / np.maximum(bound, 0.2), 0, 1.5)
        height = H * np.sqrt(_clamp(1 - x * x, 0, 1))
        sdf = (bound - rn) * min(L, W)
    elif shape == "leaf":
        un = u / L
        hw = W * _clamp(1 - un**2, 0, 1) ** 0.8
        sdf = np.minimum(hw - np.abs(v), L - np.abs(u))
        height = H * _smooth(0, 0.5 * W, sdf) + 0.3 * H * un**2
        if colour:
            lum = 1.0 + 0.25 * (np.abs(v) < 0.08 * W) * (np.abs(un) < 0.9)
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown sprite shape {shape!r}")
    if not colour:
        return sdf, height, None
    if col_img is None:
        col_img = np.broadcast_to(rgb[:, None, None], (3,) + u.shape).astype(np.float32)
    if not isinstance(lum, float):
        col_img = col_img * lum[None]
    return sdf, height, col_img


# ------------------------------------------------------------------ painting


@dataclass
class Canvas:
    """A window being painted: lit image (C, h, w), optional temperature (h, w), global top-left pixel."""

    image: np.ndarray
    temperature: np.ndarray | None
    row0: int
    col0: int
    gsd_m: float


def _bbox(s: Sprite, gsd_m: float, light: Light | None) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in scene metres holding the sprite, its contact shadow and its cast shadow."""
    r = s.radius_m * 1.15 + 2 * gsd_m
    x0, y0, x1, y1 = s.x_m - r, s.y_m - r, s.x_m + r, s.y_m + r
    if light is not None and s.height_m > 0:
        el = math.radians(max(light.elevation_deg, 8.0))
        length = s.height_m / math.tan(el)
        az = math.radians(light.azimuth_deg)
        dx, dy = -length * math.sin(az), length * math.cos(az)
        x0, x1 = min(x0, x0 + dx), max(x1, x1 + dx)
        y0, y1 = min(y0, y0 + dy), max(y1, y1 + dy)
    return x0, y0, x1, y1


def bbox_px(s: Sprite, gsd_m: float, light: Light | None) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) global pixel range (end exclusive) that painting ``s`` may touch."""
    x0, y0, x1, y1 = _bbox(s, gsd_m, light)
    return (math.floor(y0 / gsd_m), math.floor(x0 / gsd_m), math.ceil(y1 / gsd_m) + 1, math.ceil(x1 / gsd_m) + 1)


def _local(s: Sprite, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, sn = math.cos(math.radians(s.rotation_deg)), math.sin(math.radians(s.rotation_deg))
    e = (xs - s.x_m).astype(np.float32)[None, :]
    n = (s.y_m - ys).astype(np.float32)[:, None]
    return e * c + n * sn, -e * sn + n * c


def _burial_mask(s: Sprite, u: np.ndarray, v: np.ndarray, xs: np.ndarray, ys: np.ndarray, gsd_m: float) -> np.ndarray:
    """Fraction of each pixel of the object covered by soil (0 where not buried)."""
    if s.burial <= 0:
        return np.zeros(u.shape, np.float32)
    phi = (s.seed % 6283) / 1000.0
    ext = max(0.5 * s.length_m, 0.5 * s.width_m)
    side = (u * math.cos(phi) + v * math.sin(phi)) / ext
    nz = value_noise(s.seed & 0x7FFFFFFF, xs, ys, max(0.25 * ext, 2 * gsd_m))
    level = side + 0.35 * nz
    thr = 1.0 - 2.0 * s.burial
    return _smooth(thr - gsd_m / ext, thr + gsd_m / ext, level)


def sprite_visibility(s: Sprite, gsd_m: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(row0, col0, coverage, visible) on the sprite's own pixel box (global pixel grid).

    ``coverage`` is the anti-aliased footprint; ``visible`` removes what burial hides (and opacity).
    """
    r0, c0, r1, c1 = bbox_px(s, gsd_m, None)
    xs = (np.arange(c0, c1) + 0.5) * gsd_m
    ys = (np.arange(r0, r1) + 0.5) * gsd_m
    u, v = _local(s, xs, ys)
    sdf, _, _ = shape_fields(s, u, v, gsd_m, colour=False)
    cov = _clamp(0.5 + sdf / gsd_m, 0.0, 1.0).astype(np.float32)
    vis = cov * (1.0 - _burial_mask(s, u, v, xs, ys, gsd_m)) * s.opacity
    return r0, c0, cov, vis.astype(np.float32)


def _grad(h: np.ndarray, g: float) -> tuple[np.ndarray, np.ndarray]:
    """(d/dx east, d/dy south) of a height field by central differences (one-sided at the edges)."""
    gx = np.zeros_like(h)
    gy = np.zeros_like(h)
    inv = 0.5 / g
    if h.shape[1] > 2:
        gx[:, 1:-1] = (h[:, 2:] - h[:, :-2]) * inv
    if h.shape[0] > 2:
        gy[1:-1] = (h[2:] - h[:-2]) * inv
    return gx, gy


def _shift_max(dst: np.ndarray, src: np.ndarray, dr: int, dc: int) -> None:
    """dst[r, c] = max(dst[r, c], src[r + dr, c + dc]) where both exist."""
    h, w = src.shape
    r0, r1 = max(0, -dr), min(h, h - dr)
    c0, c1 = max(0, -dc), min(w, w - dc)
    if r1 <= r0 or c1 <= c0:
        return
    np.maximum(dst[r0:r1, c0:c1], src[r0 + dr:r1 + dr, c0 + dc:c1 + dc], out=dst[r0:r1, c0:c1])


def paint_sprites(canvas: Canvas, sprites: Sequence[Sprite], light: Light) -> None:
    """Paint sprites (shadows, contact shadows, shaded bodies) onto ``canvas`` in list order, in place.

    Each sprite is evaluated on its whole pixel box (global grid) and then cropped to the canvas, so a
    sprite crossing window edges is painted identically in every window.
    """
    _, h, w = canvas.image.shape
    g = canvas.gsd_m
    se, sn, sz = light.vector
    tan_el = math.tan(math.radians(max(light.elevation_deg, 8.0)))
    sun_h = math.hypot(se, sn) or 1.0
    step_c, step_r = se / sun_h / g, -sn / sun_h / g  # pixels per metre towards the sun
    shadow_drop = 1.0 - light.shadow_level
    for s in sprites:
        r0, c0, r1, c1 = bbox_px(s, g, light)
        rr0, cc0 = max(r0, canvas.row0), max(c0, canvas.col0)
        rr1, cc1 = min(r1, canvas.row0 + h), min(c1, canvas.col0 + w)
        if rr1 <= rr0 or cc1 <= cc0:
            continue
        xs = (np.arange(c0, c1) + 0.5) * g
        ys = (np.arange(r0, r1) + 0.5) * g
        u, v = _local(s, xs, ys)
        crop = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        sl = (slice(rr0 - canvas.row0, rr1 - canvas.row0), slice(cc0 - canvas.col0, cc1 - canvas.col0))
        img = canvas.image[:, sl[0], sl[1]]
        if s.shape == "shadow":
            sdf, _, _ = shape_fields(s, u, v, g, colour=False)
            soft = _smooth(-0.25 * s.width_m, 0.25 * s.width_m, sdf)[crop]
            img *= 1.0 - shadow_drop * s.opacity * soft[None]
            if canvas.temperature is not None:
                canvas.temperature[sl] -= 1.5 * soft
            continue
        sdf, height, albedo = shape_fields(s, u, v, g, colour=True)
        assert albedo is not None
        cov = _clamp(0.5 + sdf / g, 0.0, 1.0)
        if s.kind in ("stone", "clod") and s.length_m > 3 * g:
            # real rock/soil grain on the surface: the gravel photo, shifted per object
            tex = lookup(texture_at("gravel", g, 0.0008 if s.kind == "stone" else 0.0015),
                         np.arange(r0, r1), np.arange(c0, c1), s.seed % 8, (s.seed % 997, s.seed % 991))
            height = height * (1.0 + (0.12 if s.kind == "stone" else 0.3) * tex)
            albedo = albedo * (1.0 + (0.18 if s.kind == "stone" else 0.12) * tex)[None]
        # cast shadow: a ground point is shadowed when the object, walked towards the sun, rises above the ray
        shadow = np.zeros(u.shape, np.float32)
        if s.height_m > 0 and light.ambient < 0.95:
            d_max = s.height_m / tan_el
            n_steps = int(min(32, max(1, math.ceil(d_max / g))))
            inv = 1.0 / (0.25 * s.height_m)
            for k in range(1, n_steps + 1):
                t = d_max * k / n_steps
                occ = cov * _clamp((height - t * tan_el) * inv + 0.5, 0.0, 1.0)
                _shift_max(shadow, occ, int(round(t * step_r)), int(round(t * step_c)))
        # contact shadow (ambient occlusion) just around the object
        contact = _clamp(1.0 + sdf / (0.12 * s.radius_m + g), 0.0, 1.0) * (1 - cov)
        ground_dim = 1.0 - shadow_drop * s.opacity * shadow - 0.25 * light.ambient * contact
        bur = _burial_mask(s, u, v, xs, ys, g) if s.burial > 0 else None
        vis = cov if bur is None else cov * (1.0 - bur)
        if s.opacity < 1.0:
            vis = vis * s.opacity
        # surface: wear (dust film, rust), shading from the height field, specular highlight
        if s.dust > 0 or s.rust > 0:
            wear = value_noise((s.seed >> 3) & 0x7FFFFFFF, xs, ys, max(0.15 * s.radius_m, g))
            if s.dust > 0:
                dmix = _clamp(s.dust * (0.7 + 0.6 * wear), 0, 1)[None]
                albedo = albedo * (1 - dmix) + np.asarray(s.dust_rgb, np.float32)[:, None, None] * dmix
            if s.rust > 0:
                rmix = _smooth(0.6 - s.rust, 0.9 - s.rust, -wear)[None] * 0.8
                albedo = albedo * (1 - rmix) + np.asarray(RUST, np.float32)[:, None, None] * rmix
        gx, gy = _grad(height, g)
        inv_norm = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
        ndots = (sz - gx * se + gy * sn) * inv_norm
        amb, d = light.ambient, 1.0 - light.ambient
        irr = (amb * (0.5 + 0.5 * inv_norm) + d * np.maximum(ndots, 0.0)) * (1.0 / (amb + d * sz))
        if s.gloss > 0.02 and d > 0.05:
            x = _clamp(2 * ndots * inv_norm - sz, 0, 1)
            x2 = x * x
            x8 = (x2 * x2) ** 2
            irr = irr[None] * albedo + (s.gloss * d) * (x8 * x8 * x8 * (ndots > 0))[None]
        else:
            irr = irr[None] * albedo
        col = irr[:, crop[0], crop[1]]
        if img.shape[0] == 1:
            col = (0.3 * col[0] + 0.59 * col[1] + 0.11 * col[2])[None]
        vis_c = vis[crop]
        img *= (ground_dim[crop] * (1 - vis_c))[None]
        img += col * vis_c[None]
        if canvas.temperature is not None:
            tcov = (cov if bur is None else cov * (1.0 - 0.6 * bur))[crop]
            canvas.temperature[sl] += s.d_temp * tcov - 1.5 * (shadow * (1 - cov))[crop]


# ------------------------------------------------------------------ random objects


def _pick_colour(
    rng: np.random.Generator, choices: Sequence[tuple[tuple[float, float, float], float]], hue: float = 0.04
) -> tuple[float, float, float]:
    cum = np.cumsum([c[1] for c in choices])
    rgb = np.asarray(choices[min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(cum) - 1)][0])
    # fading and batch variation: brightness, slight hue and desaturation
    rgb = rgb * rng.uniform(0.85, 1.18) * (1 + rng.normal(0, hue, 3))
    grey = rgb.mean()
    rgb = grey + (rgb - grey) * rng.uniform(0.65, 1.1)
    c = _clamp(rgb, 0.03, 0.95)
    return (float(c[0]), float(c[1]), float(c[2]))


def make_target(
    rng: np.random.Generator,
    model: ItemModel,
    x_m: float,
    y_m: float,
    soil_rgb: tuple[float, float, float],
    burial_prob: float = 0.3,
) -> Sprite:
    """A target sprite of a real item model at true size, with random colour, wear, burial and rotation."""
    from rams.classes import class_of_model

    burial = 0.0
    if model.name == "OZM-72":
        burial = float(rng.uniform(0.2, 0.6))
    elif rng.random() < burial_prob:
        burial = float(rng.uniform(0.1, 0.55))
    shape = model.shape
    return Sprite(
        kind=model.name,
        cls=class_of_model(model.name),
        shape=shape,
        x_m=float(x_m),
        y_m=float(y_m),
        length_m=model.length_m,
        width_m=model.width_m,
        height_m=MODEL_HEIGHT_M.get(model.name, model.width_m) * (1.0 - 0.5 * burial),
        rotation_deg=float(rng.uniform(0, 180)),
        rgb=_pick_colour(rng, MODEL_COLOURS.get(model.name, ((OLIVE, 1.0),))),
        seed=int(rng.integers(1, 2**62)),
        burial=burial,
        dust=float(rng.uniform(0.0, 0.5) if rng.random() < 0.6 else 0.0),
        dust_rgb=soil_rgb,
        rust=float(rng.uniform(0.1, 0.5)) if shape == "cylinder" and rng.random() < 0.3 else 0.0,
        gloss=float(rng.uniform(0.05, 0.35)),
        d_temp=float(rng.choice([-1, 1]) * rng.uniform(0.8, 4.0)),
        on_top=bool(rng.random() < (0.6 if model.name in _SCATTERED else 0.1)),
    )


#: Models delivered from the air (rockets, aircraft): they come to rest on top of vegetation.
_SCATTERED = ("PFM-1", "POM-2", "PTAB-1M", "9N235", "ShOAB-0.5", "M77")


def pick_model(rng: np.random.Generator, cls_name: str) -> ItemModel:
    """One real model of a detector class, uniformly."""
    models = get_class(cls_name).models
    return models[int(rng.integers(len(models)))]


#: Confuser sizes (length range m, aspect range, height fraction of width).
_CONFUSER_SIZE: dict[str, tuple[float, float, float, float, float]] = {
    "stone": (0.03, 0.30, 0.55, 1.0, 0.5),
    "clod": (0.04, 0.25, 0.5, 1.0, 0.45),
    "plastic": (0.05, 0.40, 0.3, 1.0, 0.03),
    "lid": (0.03, 0.11, 1.0, 1.0, 0.12),
    "can": (0.10, 0.17, 0.38, 0.5, 1.0),
    "bottle": (0.18, 0.33, 0.25, 0.35, 1.0),
    "leaf": (0.04, 0.20, 0.25, 0.5, 0.05),
    "weed": (0.04, 0.45, 0.7, 1.0, 0.35),
    "stick": (0.10, 0.70, 0.03, 0.12, 1.0),
    "shadow": (0.15, 1.2, 0.3, 0.9, 0.0),
}


def make_confuser(
    rng: np.random.Generator, kind: str, x_m: float, y_m: float, soil_rgb: tuple[float, float, float]
) -> Sprite:
    """A confuser (hard negative) of ``kind`` with random size, colour and shape detail."""
    lo, hi, a_lo, a_hi, hfrac = _CONFUSER_SIZE[kind]
    # sizes follow a falling power law: many small, few big
    length = float(lo * (hi / lo) ** (rng.random() ** 1.6))
    width = length * float(rng.uniform(a_lo, a_hi))
    height = width * hfrac
    shape = {"lid": "lid", "can": "cylinder", "bottle": "cylinder", "stick": "cylinder"}.get(kind, kind)
    gloss, opacity, d_temp = 0.05, 1.0, float(rng.normal(0, 0.8))
    coeffs: tuple[float, ...] = ()
    if kind == "stone":
        base = _pick_colour(rng, (((0.52, 0.50, 0.47), 3), ((0.60, 0.56, 0.49), 2), ((0.38, 0.37, 0.35), 2),
                                  ((0.70, 0.68, 0.64), 1), ((0.50, 0.42, 0.34), 1)), hue=0.01)
        mix = float(rng.uniform(0.0, 0.5))  # stones take on the soil's colour (dust, weathering)
        rgb = (base[0] * (1 - mix) + soil_rgb[0] * mix, base[1] * (1 - mix) + soil_rgb[1] * mix,
               base[2] * (1 - mix) + soil_rgb[2] * mix)
        coeffs = tuple(float(x) for k in range(6) for x in (rng.normal(0, 0.16 / (k + 1) ** 0.7), rng.uniform(0, 6.28)))
        gloss, d_temp = 0.08, float(rng.uniform(-0.5, 2.5))
    elif kind == "clod":
        shade = float(rng.uniform(0.72, 1.08))
        rgb = (soil_rgb[0] * shade, soil_rgb[1] * shade, soil_rgb[2] * shade)
        coeffs = tuple(float(x) for k in range(5) for x in (rng.normal(0, 0.2 / (k + 1)), rng.uniform(0, 6.28)))
    elif kind == "plastic":
        rgb = _pick_colour(rng, (((0.85, 0.85, 0.83), 3), ((0.15, 0.15, 0.16), 2), ((0.25, 0.40, 0.65), 1),
                                 ((0.70, 0.20, 0.15), 1), ((0.30, 0.45, 0.25), 1), ((0.80, 0.70, 0.35), 1)))
        coeffs = tuple(float(x) for k in range(4) for x in (rng.normal(0, 0.22 / (k + 1)), rng.uniform(0, 6.28)))
        gloss, opacity = 0.5, float(rng.uniform(0.6, 1.0))
    elif kind == "lid":
        rgb = _pick_colour(rng, ((METAL, 3), ((0.70, 0.15, 0.12), 1), ((0.15, 0.30, 0.60), 1),
                                 ((0.85, 0.85, 0.85), 1), ((0.70, 0.58, 0.25), 1), (OLIVE, 1)))
        gloss = 0.6
    elif kind == "can":
        rgb = _pick_colour(rng, ((METAL, 3), ((0.75, 0.75, 0.75), 1)))
        lab = _pick_colour(rng, (((0.75, 0.12, 0.10), 2), ((0.15, 0.25, 0.60), 1), ((0.20, 0.45, 0.20), 1),
                                 ((0.10, 0.10, 0.10), 1), ((0.90, 0.85, 0.30), 1)))
        coeffs = (0.0, *lab)
        gloss = 0.8
    elif kind == "bottle":
        rgb = _pick_colour(rng, (((0.80, 0.85, 0.85), 3), ((0.25, 0.40, 0.20), 2), ((0.40, 0.25, 0.12), 2)))
        gloss, opacity = 0.9, float(rng.uniform(0.45, 0.9))
    elif kind == "leaf":
        rgb = _pick_colour(rng, (((0.30, 0.42, 0.16), 2), ((0.60, 0.55, 0.20), 2), ((0.45, 0.30, 0.15), 2),
                                 ((0.55, 0.45, 0.30), 1)))
    elif kind == "weed":
        rgb = _pick_colour(rng, (((0.25, 0.40, 0.13), 3), ((0.33, 0.45, 0.18), 2), ((0.40, 0.45, 0.22), 1)))
        coeffs = (float(rng.integers(4, 10)), float(rng.uniform(0, 6.28)))
        d_temp = float(rng.uniform(-3, -0.5))
    elif kind == "stick":
        rgb = _pick_colour(rng, (((0.42, 0.32, 0.22), 2), ((0.55, 0.50, 0.42), 2), ((0.30, 0.24, 0.18), 1)))
        coeffs = (float(rng.normal(0, 0.12)),)
    else:  # shadow
        rgb = (0.0, 0.0, 0.0)
        opacity = float(rng.uniform(0.5, 0.9))
    return Sprite(
        kind=kind,
        cls=None,
        shape=shape,
        x_m=float(x_m),
        y_m=float(y_m),
        length_m=length,
        width_m=width,
        height_m=height,
        rotation_deg=float(rng.uniform(0, 180)),
        rgb=rgb,
        seed=int(rng.integers(1, 2**62)),
        dust=float(rng.uniform(0, 0.4)) if kind in ("plastic", "can", "bottle", "lid") else 0.0,
        dust_rgb=soil_rgb,
        gloss=gloss,
        opacity=opacity,
        d_temp=d_temp,
        coeffs=coeffs,
        on_top=bool(kind in ("weed", "shadow") or (kind in ("leaf", "plastic", "bottle", "can", "stick")
                                                    and rng.random() < 0.5)),
    )


#: Confuser densities (per m^2, before the clutter multiplier) on each base terrain.
CONFUSER_DENSITY: dict[str, dict[str, float]] = {
    "ploughed": {"clod": 2.5, "stone": 0.6, "plastic": 0.04, "lid": 0.01, "can": 0.01, "bottle": 0.01,
                 "leaf": 0.1, "weed": 0.25, "stick": 0.12, "shadow": 0.01},
    "dry_grass": {"stone": 0.25, "clod": 0.2, "plastic": 0.05, "lid": 0.02, "can": 0.02, "bottle": 0.02,
                  "leaf": 0.35, "weed": 0.3, "stick": 0.3, "shadow": 0.02},
    "crop": {"clod": 1.5, "stone": 0.35, "weed": 0.7, "leaf": 0.1, "plastic": 0.04, "lid": 0.01, "can": 0.01,
             "bottle": 0.01, "stick": 0.08, "shadow": 0.01},
    "gravel": {"stone": 3.0, "clod": 0.2, "plastic": 0.05, "lid": 0.02, "can": 0.02, "bottle": 0.01,
               "weed": 0.2, "leaf": 0.1, "stick": 0.05, "shadow": 0.01},
    "sand": {"stone": 0.3, "plastic": 0.08, "lid": 0.02, "can": 0.02, "bottle": 0.03, "weed": 0.15,
             "stick": 0.1, "leaf": 0.05, "shadow": 0.02},
    "stubble": {"clod": 1.0, "stone": 0.4, "stick": 0.5, "weed": 0.35, "leaf": 0.15, "plastic": 0.05, "lid": 0.01,
                "can": 0.01, "bottle": 0.01, "shadow": 0.01},
}


def all_models() -> list[ItemModel]:
    """Every real item model of every class."""
    return [m for c in CLASSES for m in c.models]


def with_visibility(s: Sprite, visible_fraction: float) -> Sprite:
    """Copy of ``s`` with its visible fraction recorded."""
    return replace(s, visible_fraction=float(visible_fraction))
