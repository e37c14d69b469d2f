"""Real photo textures (scikit-image's grass and gravel), made seamless and resampled to a scene's GSD.

The photos are used at a stated physical texel size, so a texture keeps its real scale at any GSD (coarser
GSD averages detail away, as a camera would). Each texture is made tileable once (four-way cross-fade of
half-period shifted copies with variance compensation) and then looked up by global pixel index, so any
window of a scene gets the same values; repetition is broken by mixing two differently rotated lookups
under a low-frequency weight (texture bombing), see :func:`bombed`.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np

from rams.synth.noise import Coarse, smooth_noise

#: Physical size of one texel of each source photo, metres (gravel stones of ~2 cm; grass blades ~3 mm).
SOURCE_TEXEL_M: dict[str, float] = {"grass": 0.0015, "gravel": 0.0012, "gravel_soft": 0.0012}


@cache
def _seamless(name: str) -> np.ndarray:
    """Zero-mean, unit-std, tileable float32 version of a scikit-image texture."""
    from skimage import data

    if name == "gravel_soft":
        # rounded lumps (soil clods, sand) instead of sharp stones with dark gaps between them
        from scipy.ndimage import gaussian_filter

        soft = gaussian_filter(_seamless("gravel"), 3.0, mode="wrap")
        return ((soft - soft.mean()) / (soft.std() + 1e-6)).astype(np.float32)
    loaders = {"grass": data.grass, "gravel": data.gravel}
    if name not in loaders:
        raise KeyError(f"unknown texture {name!r}; known: {sorted(loaders)} and gravel_soft")
    t = loaders[name]().astype(np.float32)
    t = (t - t.mean()) / (t.std() + 1e-6)
    n0, n1 = t.shape
    wy = np.sin(np.pi * (np.arange(n0) + 0.5) / n0)[:, None] ** 2
    wx = np.sin(np.pi * (np.arange(n1) + 0.5) / n1)[None, :] ** 2
    tx = np.roll(t, n1 // 2, axis=1)
    ty = np.roll(t, n0 // 2, axis=0)
    txy = np.roll(tx, n0 // 2, axis=0)
    w00, w01, w10, w11 = wy * wx, wy * (1 - wx), (1 - wy) * wx, (1 - wy) * (1 - wx)
    out = w00 * t + w01 * tx + w10 * ty + w11 * txy
    out /= np.sqrt(w00**2 + w01**2 + w10**2 + w11**2)
    out = (out - out.mean()) / (out.std() + 1e-6)
    return out.astype(np.float32)


@lru_cache(maxsize=256)
def _resampled(name: str, n: int) -> np.ndarray:
    from skimage.transform import resize

    src = _seamless(name)
    if n == src.shape[0]:
        return src
    out = resize(src, (n, n), order=1, mode="wrap", anti_aliasing=n < src.shape[0], preserve_range=True)
    return np.ascontiguousarray(out, dtype=np.float32)


def texture_at(name: str, gsd_m: float, texel_m: float | None = None) -> np.ndarray:
    """Tileable texture (zero mean; detail finer than the GSD averaged away) at ``gsd_m`` per pixel.

    ``texel_m`` overrides the physical size of one source pixel (a larger value makes coarser stones).
    """
    src_n = _seamless(name).shape[0]
    texel = SOURCE_TEXEL_M[name] if texel_m is None else texel_m
    n = max(8.0, src_n * texel / gsd_m)
    # sizes quantised to 3 % steps: the cache then holds every size a sampler asks for
    n_q = int(round(math.exp(round(math.log(n) / 0.03) * 0.03)))
    return _resampled(name, n_q)


def lookup(
    tex: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int = 0, off: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Window of the infinitely tiled texture at global pixel ``rows`` x ``cols`` (1-D int arrays).

    ``k`` picks one of the 8 rotations/flips; ``off`` shifts the tiling.
    """
    t = np.rot90(tex, k % 4)
    if k >= 4:
        t = t[:, ::-1]
    n0, n1 = t.shape
    return np.take(np.take(t, (rows + off[0]) % n0, axis=0), (cols + off[1]) % n1, axis=1)


def bombed(
    name: str,
    seed: int,
    rows: np.ndarray,
    cols: np.ndarray,
    gsd_m: float,
    texel_m: float | None = None,
    mix_scale_m: float = 1.5,
    coarse: Coarse | None = None,
) -> np.ndarray:
    """Texture with its repetition broken: two rotated, shifted lookups mixed by smooth noise.

    The mix keeps unit variance (weights normalised in quadrature). Returns float32 (rows, cols).
    """
    tex = texture_at(name, gsd_m, texel_m)
    n = tex.shape[0]
    rs = np.random.default_rng(seed)
    k1, k2 = (int(v) for v in rs.integers(0, 8, 2))
    o1 = (int(rs.integers(0, n)), int(rs.integers(0, n)))
    o2 = (int(rs.integers(0, n)), int(rs.integers(0, n)))
    a = lookup(tex, rows, cols, k1, o1)
    b = lookup(tex, rows, cols, k2, o2)
    if coarse is not None:
        w = coarse.up(np.clip(0.5 + 0.9 * coarse.noise(seed + 1, mix_scale_m), 0.0, 1.0))
    else:
        w = np.clip(0.5 + 0.9 * smooth_noise(seed + 1, rows, cols, gsd_m, mix_scale_m), 0.0, 1.0)
    return (w * a + (1.0 - w) * b) / np.sqrt(w * w + (1.0 - w) ** 2)
