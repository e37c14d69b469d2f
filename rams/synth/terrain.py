"""Ground: albedo, micro-relief, moisture and vegetation canopy of each terrain, as pure functions of position.

A terrain is a :class:`GroundParams` (drawn once per scene from a seed) and :func:`render_ground`, which
evaluates it on any window given pixel-centre coordinates in scene metres (x east, y south) and global pixel
indices. Ground is made of layers that real field imagery shows at 0.5-2 cm GSD:

* soil albedo with colour, moisture patches at several scales and crumb texture (the gravel photo);
* micro-relief (furrows, clods, tyre-track ridges and tread, sand ripples) that the sun shades;
* a vegetation canopy (the grass photo recoloured to straw or green, crop seedlings in rows, weeds) that is
  composited *above* objects, so it occludes mines as grass does, and casts shadows on the soil.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rams.synth.noise import Coarse, smooth_noise, subseed, uniform2
from rams.synth.textures import bombed

#: Terrains drawn by default ("mixed" joins two of the others along a field edge): what training chips come from.
TERRAINS: tuple[str, ...] = ("ploughed", "dry_grass", "crop", "gravel", "sand", "mixed")
BASE_TERRAINS: tuple[str, ...] = ("ploughed", "dry_grass", "crop", "gravel", "sand")
#: Terrains the generator also renders, but only when asked by name: never in default training data, so a model
#: trained on the defaults can be evaluated on ground it has never seen ("stubble": a harvested cereal field,
#: dry soil with drill rows of cut straw stems and chopped straw lying about).
HELD_OUT_TERRAINS: tuple[str, ...] = ("stubble",)
ALL_TERRAINS: tuple[str, ...] = TERRAINS + HELD_OUT_TERRAINS

#: Soil albedo palette (display RGB in [0, 1]): loam, moist dark, reddish, grey-brown, pale dry, chalky.
SOIL_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.43, 0.34, 0.26),
    (0.31, 0.25, 0.20),
    (0.50, 0.36, 0.27),
    (0.45, 0.41, 0.35),
    (0.57, 0.50, 0.41),
    (0.62, 0.58, 0.50),
)


@dataclass(frozen=True)
class Track:
    """A pair of tyre tracks: a line through (x, y) at ``angle_deg`` (scene frame), gently curving."""

    x_m: float
    y_m: float
    angle_deg: float
    gauge_m: float
    width_m: float
    curve_amp_m: float
    curve_wl_m: float
    tread_m: float


@dataclass(frozen=True)
class GroundParams:
    """Everything that defines the ground of one scene (or of one side of a mixed field edge)."""

    terrain: str
    seed: int
    soil_rgb: tuple[float, float, float]
    veg_rgb: tuple[float, float, float]
    moisture: float
    furrow_period_m: float
    furrow_angle_deg: float
    furrow_amp_m: float
    cover: float  # vegetation cover target 0..1
    row_spacing_m: float
    plant_spacing_m: float
    plant_radius_m: float
    tracks: tuple[Track, ...] = ()
    parts: tuple[GroundParams, ...] = ()  # mixed: (side A, side B, verge)
    edge: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mixed: edge line x, y, angle
    texel_scale: float = 1.0
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Ground:
    """Ground layers on a window: all float32, images (3, h, w), fields (h, w)."""

    albedo: np.ndarray
    height: np.ndarray
    moisture: np.ndarray
    canopy_alpha: np.ndarray
    canopy_rgb: np.ndarray
    shadow: np.ndarray  # fraction of direct sun blocked by vegetation (0..1)

    @staticmethod
    def blend(a: Ground, b: Ground, w: np.ndarray) -> Ground:
        """``w`` weight of ``b`` (h, w) in [0, 1]."""
        w3 = w[None]
        return Ground(
            a.albedo * (1 - w3) + b.albedo * w3,
            a.height * (1 - w) + b.height * w,
            a.moisture * (1 - w) + b.moisture * w,
            a.canopy_alpha * (1 - w) + b.canopy_alpha * w,
            a.canopy_rgb * (1 - w3) + b.canopy_rgb * w3,
            a.shadow * (1 - w) + b.shadow * w,
        )


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> tuple[float, float, float]:
    g = 1.0 + rng.normal(0, amount)
    c = np.clip(np.asarray(rgb) * g * (1.0 + rng.normal(0, amount / 2, 3)), 0.03, 0.95)
    return (float(c[0]), float(c[1]), float(c[2]))


def random_ground(
    rng: np.random.Generator,
    terrain: str,
    extent_m: tuple[float, float, float, float],
    n_tracks: int | None = None,
) -> GroundParams:
    """Draw ground parameters for ``terrain`` over ``extent_m`` = (x0, y0, x1, y1) in scene metres."""
    x0, y0, x1, y1 = extent_m
    seed = int(rng.integers(0, 2**62))
    soil = _jitter(rng, SOIL_COLOURS[int(rng.integers(len(SOIL_COLOURS)))], 0.07)
    if terrain == "mixed":
        names = [t for t in BASE_TERRAINS]
        a, b = rng.choice(len(names), 2, replace=False)
        sub = tuple(
            random_ground(rng, names[int(i)], extent_m, n_tracks=0 if names[int(i)] != "ploughed" else None)
            for i in (a, b)
        )
        verge = random_ground(rng, "dry_grass", extent_m, n_tracks=0)
        ex = float(rng.uniform(x0 + 0.3 * (x1 - x0), x0 + 0.7 * (x1 - x0)))
        ey = float(rng.uniform(y0 + 0.3 * (y1 - y0), y0 + 0.7 * (y1 - y0)))
        return GroundParams(
            "mixed", seed, soil, sub[0].veg_rgb, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.1,
            parts=(sub[0], sub[1], verge), edge=(ex, ey, float(rng.uniform(0, 180))),
            extra={"verge_m": float(rng.uniform(0.6, 2.5))},
        )
    straw = _jitter(rng, (0.66, 0.58, 0.40) if rng.random() < 0.7 else (0.52, 0.50, 0.36), 0.06)
    green = _jitter(rng, (0.26, 0.40, 0.13), 0.10)
    veg = green if terrain == "crop" else straw
    furrow_period = float(rng.uniform(0.22, 0.6))
    furrow_amp = {"ploughed": rng.uniform(0.02, 0.06), "crop": rng.uniform(0.005, 0.02)}.get(terrain, 0.0)
    if terrain == "stubble":  # drill rows of the harvested crop: shallow, close together
        furrow_period = float(rng.uniform(0.12, 0.2))
        furrow_amp = rng.uniform(0.002, 0.008)
    cover = {
        "ploughed": rng.uniform(0.0, 0.12),
        "dry_grass": rng.uniform(0.3, 0.85),
        "crop": rng.uniform(0.0, 0.15),
        "gravel": rng.uniform(0.0, 0.15),
        "sand": rng.uniform(0.0, 0.1),
    }.get(terrain, 0.0)  # (every entry draws: a new terrain must not add one here, or all scenes change)
    if terrain == "stubble":
        cover = rng.uniform(0.15, 0.4)  # chopped straw lying about
    if terrain == "sand":
        soil = _jitter(rng, (0.70, 0.63, 0.52) if rng.random() < 0.6 else (0.62, 0.58, 0.50), 0.05)
    elif terrain == "gravel":
        soil = _jitter(rng, (0.55, 0.52, 0.47) if rng.random() < 0.6 else (0.60, 0.54, 0.44), 0.05)
    if n_tracks is None:
        n_tracks = int(rng.integers(0, 3)) if terrain in ("ploughed", "crop", "dry_grass", "sand", "stubble") else 0
    tracks = []
    for _ in range(n_tracks):
        tracks.append(
            Track(
                x_m=float(rng.uniform(x0, x1)),
                y_m=float(rng.uniform(y0, y1)),
                angle_deg=float(rng.uniform(0, 180)),
                gauge_m=float(rng.uniform(1.5, 2.1)),
                width_m=float(rng.uniform(0.25, 0.55)),
                curve_amp_m=float(rng.uniform(0, 1.5)),
                curve_wl_m=float(rng.uniform(30, 120)),
                tread_m=float(rng.uniform(0.12, 0.3)),
            )
        )
    return GroundParams(
        terrain=terrain,
        seed=seed,
        soil_rgb=soil,
        veg_rgb=veg,
        moisture=float(rng.uniform(0.05, 0.25)),
        furrow_period_m=furrow_period if terrain != "sand" else float(rng.uniform(0.06, 0.14)),
        furrow_angle_deg=float(rng.uniform(0, 180)),
        furrow_amp_m=float(furrow_amp) if terrain != "sand" else float(rng.uniform(0.0015, 0.007)),
        cover=float(cover),
        # crop: seedling rows; stubble: the cut stems of each drill row (a clump 2-4 cm across every few cm)
        row_spacing_m=furrow_period if terrain == "stubble" else float(rng.uniform(0.35, 0.75)),
        plant_spacing_m=float(rng.uniform(0.03, 0.07) if terrain == "stubble" else rng.uniform(0.08, 0.25)),
        plant_radius_m=float(rng.uniform(0.01, 0.02) if terrain == "stubble" else rng.uniform(0.025, 0.07)),
        tracks=tuple(tracks),
        texel_scale=float(rng.uniform(0.8, 1.6)),
    )


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _rotated(xs: np.ndarray, ys: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(along, across) coordinates of a window for a direction given in the scene frame."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    a = xs[None, :] * c + ys[:, None] * s
    b = -xs[None, :] * s + ys[:, None] * c
    return a.astype(np.float32), b.astype(np.float32)


def sun_offset_m(sun_azimuth_deg: float, sun_elevation_deg: float, height_m: float) -> tuple[float, float]:
    """Shadow displacement (dx east, dy south) in metres of a point ``height_m`` above ground."""
    length = height_m / math.tan(math.radians(max(sun_elevation_deg, 5.0)))
    az = math.radians(sun_azimuth_deg)
    # the sun is towards (sin az east, cos az north); the shadow falls the other way: -east, +south
    return (-length * math.sin(az), length * math.cos(az))


def render_ground(
    p: GroundParams,
    xs: np.ndarray,
    ys: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    gsd_m: float,
    sun: tuple[float, float],
    coarse: Coarse | None = None,
) -> Ground:
    """Evaluate the ground of ``p`` on the window ``ys`` x ``xs`` (pixel centres, scene metres).

    ``rows``/``cols`` are the matching contiguous global pixel indices (textures and smooth noise are keyed
    on them); ``sun`` is (azimuth_deg, elevation_deg) for vegetation shadows. Smooth fields are evaluated
    on a coarse grid and interpolated once (:class:`rams.synth.noise.Coarse`).
    """
    cg = coarse if coarse is not None else Coarse(rows, cols, gsd_m)
    if p.terrain == "mixed":
        return _render_mixed(p, xs, ys, rows, cols, gsd_m, sun, cg)
    h, w = len(ys), len(xs)
    sd = p.seed

    def cn(key: str, scale_m: float, octaves: int = 1) -> np.ndarray:
        return cg.noise(subseed(sd, key), scale_m, octaves)

    ts = p.texel_scale
    # --- smooth fields on the coarse grid: moisture, colour drift, undulation
    moist_c = p.moisture * (cn("moist", 9.0, 3) + 0.5 * cn("moist2", 0.7, 2))
    hue_c = cn("hue", 4.0, 2)
    soil = np.asarray(p.soil_rgb, np.float32)[:, None, None]
    tint_c = soil * np.stack([1 + 0.05 * hue_c, 1 + 0.01 * hue_c, 1 - 0.05 * hue_c]) * (1.0 - 0.9 * moist_c)[None]
    smooth_h_c = 0.03 * cn("undul", 1.5, 2)
    crumb = bombed("gravel" if p.terrain == "gravel" else "gravel_soft", subseed(sd, "crumb"), rows, cols, gsd_m,
                   texel_m=0.0012 * ts if p.terrain == "gravel" else 0.0007 * ts, mix_scale_m=1.2, coarse=cg)
    crumb_amp = {"ploughed": 0.07, "crop": 0.06, "gravel": 0.22, "sand": 0.03, "dry_grass": 0.06,
                 "stubble": 0.05}[p.terrain]
    lum: np.ndarray = 1.0 + crumb_amp * crumb
    # --- relief
    if p.terrain in ("ploughed", "crop", "stubble"):
        _, b = _rotated(xs, ys, p.furrow_angle_deg)
        pc = cg.up(np.stack([cn("fwarp", 3.0) * 0.35 * p.furrow_period_m,
                             p.furrow_amp_m * (0.7 + 0.3 * cn("famp", 2.0)), smooth_h_c]))
        ridge = 0.5 + 0.5 * np.sin((2 * np.pi / p.furrow_period_m) * (b + pc[0]))
        height = pc[2] + pc[1] * ridge * np.sqrt(ridge)
        # clods: the gravel photo at a larger scale used as a height map, shaded by the sun
        clod_scale = 4.5 if p.terrain == "ploughed" else 2.2
        clod = bombed("gravel_soft", subseed(sd, "clod"), rows, cols, gsd_m, texel_m=0.0012 * clod_scale * ts,
                      mix_scale_m=2.0, coarse=cg)
        clod_amp = (0.45 if p.terrain == "ploughed" else 0.2) * p.furrow_amp_m + 0.004
        height += clod_amp * clod * (0.6 + 0.4 * ridge) + 0.0025 * crumb
        lum = lum * (1.0 + 0.10 * (ridge - 0.5) + 0.06 * clod)  # dry ridge and clod tops are lighter
    elif p.terrain == "sand":
        _, b = _rotated(xs, ys, p.furrow_angle_deg)
        pc = cg.up(np.stack([(cn("rwarp", 0.8) + 0.6 * cn("rwarp2", 0.25)) * 0.9 * p.furrow_period_m,
                             p.furrow_amp_m * np.clip(0.4 + 0.8 * cn("ramp", 1.5, 2), 0, 1.2), smooth_h_c]))
        ph = (b + pc[0]) * (1.0 / p.furrow_period_m)
        saw = ph - np.floor(ph)
        ripple = np.where(saw < 0.7, saw * (1 / 0.7), (1.0 - saw) * (1 / 0.3))  # asymmetric wind ripples
        grains = bombed("gravel_soft", subseed(sd, "grains"), rows, cols, gsd_m, texel_m=0.0006 * ts, coarse=cg)
        height = pc[2] + pc[1] * ripple + 0.0012 * grains
    elif p.terrain == "gravel":
        coarse_stones = bombed("gravel", subseed(sd, "cobble"), rows, cols, gsd_m, texel_m=0.0012 * 2.6 * ts,
                               coarse=cg)
        height = cg.up(smooth_h_c) + (0.010 * ts) * crumb + (0.006 * ts) * coarse_stones
        # stones differ in colour: a hue field at stone scale
        stone_hue = smooth_noise(subseed(sd, "sthue"), rows, cols, gsd_m, 0.03 * ts)
        lum = lum * (1.0 + 0.1 * coarse_stones)
        tint_c = tint_c  # stone hue is applied at full resolution below
    else:
        height = cg.up(smooth_h_c) + 0.004 * crumb
    albedo = cg.up(tint_c) * lum[None]
    if p.terrain == "gravel":
        albedo = albedo * np.stack([1 + 0.07 * stone_hue, 1 + 0.02 * stone_hue, 1 - 0.05 * stone_hue])
    moist = cg.up(moist_c)
    # --- tyre tracks: compacted, smoother, darker, with tread and pushed-up edges
    for k, tr in enumerate(p.tracks):
        ta, tb = _rotated(xs - tr.x_m, ys - tr.y_m, tr.angle_deg)
        tb = tb + tr.curve_amp_m * np.sin(2 * np.pi * ta / tr.curve_wl_m)
        if np.abs(tb).min() > tr.gauge_m / 2 + tr.width_m:
            continue
        wob = cg.up(0.04 * cn(f"trw{k}", 1.0))
        for side in (-0.5, 0.5):
            dd = np.abs(tb - side * tr.gauge_m + wob)
            band = _smoothstep(tr.width_m / 2, tr.width_m / 2 - 0.05, dd)
            if not band.any():
                continue
            edge = np.exp(-(((dd - tr.width_m / 2 - 0.03) / 0.05) ** 2))
            tread = 0.006 * np.sin(2 * np.pi * (ta + 0.8 * np.abs(tb - side * tr.gauge_m)) / tr.tread_m)
            height = height * (1 - 0.7 * band) + band * tread + 0.015 * edge
            albedo = albedo * (1.0 - 0.07 * band)[None]
    # --- vegetation canopy
    canopy_alpha: np.ndarray = np.zeros((h, w), np.float32)
    canopy_rgb: np.ndarray = np.zeros((3, h, w), np.float32)
    shadow: np.ndarray = np.zeros((h, w), np.float32)
    if p.terrain in ("crop", "stubble"):
        canopy_alpha, shadow, canopy_rgb = _plants(p, xs, ys, gsd_m, sun, cg)
    if p.cover > 0.0:
        grass = bombed("grass", subseed(sd, "grass"), rows, cols, gsd_m, texel_m=0.002 * ts, mix_scale_m=0.9,
                       coarse=cg)
        vc = cg.up(np.stack([cn("dens", 2.5, 3), cn("tuft", 0.18 * ts, 2), cn("vm", 0.6)]))
        dens, tuft, mottle = vc[0], vc[1], vc[2]
        if p.terrain == "dry_grass":
            # a sward: dense where the field-scale density is high, in tussocks, with blades and gaps
            thr = 1.0 - 2.0 * p.cover
            field = 0.8 * dens + 0.55 * tuft + 0.45 * grass
            ga = _smoothstep(thr - 0.3, thr + 0.3, field)
        else:
            # sparse weeds and stubble: separate tufts where the density allows
            thr = 1.05 - 1.2 * p.cover
            ga = _smoothstep(thr - 0.15, thr + 0.2, 0.45 * dens + 0.75 * tuft + 0.25 * grass)
        vrgb = np.asarray(p.veg_rgb, np.float32)[:, None, None]
        green = np.asarray((0.32, 0.40, 0.18), np.float32)[:, None, None]
        greyed = np.asarray((0.50, 0.48, 0.42), np.float32)[:, None, None]
        gm = np.clip(mottle, 0, 1)[None] * 0.5
        dm = np.clip(-mottle, 0, 1)[None] * 0.4
        base = vrgb * (1 - gm - dm) + green * gm + greyed * dm
        # blades catch the light, the gaps between them are in shade
        col = base * (0.62 + 0.22 * grass + 0.16 * tuft)[None]
        canopy_rgb = canopy_rgb * (1 - ga)[None] + col * ga[None]
        canopy_alpha = 1.0 - (1.0 - canopy_alpha) * (1.0 - ga)
        # grass shades the soil beneath and around it
        shadow = np.maximum(shadow, 0.55 * _smoothstep(thr - 0.6, thr + 0.2, 0.8 * dens + 0.55 * tuft))
        albedo = albedo * (1.0 - 0.2 * ga)[None]
    return Ground(albedo.astype(np.float32), height.astype(np.float32), moist.astype(np.float32),
                  canopy_alpha.astype(np.float32), canopy_rgb.astype(np.float32), shadow.astype(np.float32))


def _plants(
    p: GroundParams, xs: np.ndarray, ys: np.ndarray, gsd_m: float, sun: tuple[float, float], cg: Coarse
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop seedlings in rows: rosettes of 3-7 leaves, each plant's size/orientation from a hash.

    Returns (alpha, shadow, rgb). The shadow is the same rosette displaced along the sun.
    """
    plant_h = 2.5 * p.plant_radius_m
    sdx, sdy = sun_offset_m(sun[0], sun[1], plant_h * 0.6)
    alpha, shade = _rosettes(p, xs, ys, gsd_m, with_shade=True)
    shadow, _ = _rosettes(p, xs - sdx, ys - sdy, gsd_m, with_shade=False)
    base = np.asarray(p.veg_rgb, np.float32)[:, None, None]
    var = cg.up(cg.noise(subseed(p.seed, "pv"), 0.5))
    rgb = base * (0.75 + 0.5 * shade)[None] * (1 + 0.1 * var)[None]
    return alpha, 0.8 * shadow * (1 - alpha), rgb


def _rosettes(
    p: GroundParams, xs: np.ndarray, ys: np.ndarray, gsd_m: float, with_shade: bool
) -> tuple[np.ndarray, np.ndarray]:
    a, b = _rotated(xs, ys, p.furrow_angle_deg + 90.0)
    sd = subseed(p.seed, "plants")
    j = np.round(b / p.row_spacing_m).astype(np.int64)
    row_phase = uniform2(sd, j, np.zeros_like(j)).astype(np.float32) * p.plant_spacing_m
    ai = (a - row_phase) / p.plant_spacing_m
    i_c = np.round(ai).astype(np.int64)
    alpha = np.zeros(a.shape, np.float32)
    shade = np.zeros(a.shape, np.float32)
    b_row = b - j * p.row_spacing_m
    for di in (-1, 0, 1):
        i = i_c + di
        u1 = uniform2(sd + 1, i, j).astype(np.float32)
        u2 = uniform2(sd + 2, i, j).astype(np.float32)
        present = u1 < 0.85
        radius = p.plant_radius_m * (0.55 + 0.9 * u2)
        ca = (i + 0.35 * (u1 - 0.5)) * p.plant_spacing_m + row_phase
        cb = 0.04 * p.row_spacing_m * (u2 - 0.5)
        da = a - ca
        db = b_row - cb
        rho = np.sqrt(da * da + db * db) / radius
        near = present & (rho < 1.2)
        if not near.any():
            continue
        theta = np.arctan2(db, da)
        nleaf = 3 + np.floor(u2 * 4.99)
        lobe = 0.3 + 0.7 * np.abs(np.cos(0.5 * nleaf * theta + 6.2832 * u1)) ** 1.5
        edge_w = gsd_m / radius
        aa = np.clip((lobe - rho) / np.maximum(edge_w, 1e-3) + 0.5, 0.0, 1.0) * near
        alpha = np.maximum(alpha, aa)
        if with_shade:
            shade = np.maximum(shade, aa * (1.0 - 0.6 * rho / np.maximum(lobe, 0.3)))
    return alpha, shade


def _render_mixed(
    p: GroundParams,
    xs: np.ndarray,
    ys: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    gsd_m: float,
    sun: tuple[float, float],
    cg: Coarse,
) -> Ground:
    ex, ey, ang = p.edge
    _, d = _rotated(xs - ex, ys - ey, ang)
    d = d + cg.up(0.6 * cg.noise(subseed(p.seed, "edge"), 6.0, 3) + 0.12 * cg.noise(subseed(p.seed, "edge2"), 0.4))
    verge = p.extra.get("verge_m", 1.0)
    w_b = _smoothstep(-0.15, 0.15, d)
    w_v = _smoothstep(verge / 2 + 0.25, verge / 2 - 0.25, np.abs(d))
    ga = render_ground(p.parts[0], xs, ys, rows, cols, gsd_m, sun, cg) if np.any(w_b < 1) else None
    gb = render_ground(p.parts[1], xs, ys, rows, cols, gsd_m, sun, cg) if np.any(w_b > 0) else None
    if ga is None:
        assert gb is not None
        g = gb
    elif gb is None:
        g = ga
    else:
        g = Ground.blend(ga, gb, w_b)
    if np.any(w_v > 0):
        g = Ground.blend(g, render_ground(p.parts[2], xs, ys, rows, cols, gsd_m, sun, cg), w_v)
    return g
