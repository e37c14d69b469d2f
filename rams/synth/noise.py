"""Deterministic procedural noise evaluated at map coordinates, so any window of a scene renders the same.

Everything here is a pure function of (seed, coordinates): a scene split into blocks, or rendered as one
window, gives the same values at the same place. Lattice values come from a counter-based hash
(splitmix64), never from a stateful RNG, and are interpolated separably (two gather-and-lerp passes), so
the cost is linear in the number of pixels whatever the noise scale.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_PI = np.uint64(0xD6E8FEB86659FD93)
_INV53 = 1.0 / float(1 << 53)


def subseed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed derived from ``seed`` and any keys (stable across runs, unlike ``hash()``)."""
    h = hashlib.blake2b(repr((int(seed),) + keys).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hash2(seed: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """uint64 hash of integer lattice coordinates (broadcasting)."""
    s = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    ii = np.asarray(i).astype(np.int64).view(np.uint64)
    jj = np.asarray(j).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        return _mix(_mix(ii * _GOLD + s) ^ (jj * _PI))


def uniform2(seed: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float64 per lattice point."""
    return (hash2(seed, i, j) >> np.uint64(11)).astype(np.float64) * _INV53


def _axis_weights(coord: np.ndarray, scale: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Lattice start, lattice length, integer index and smoothstep weight of each coordinate."""
    u = np.asarray(coord, dtype=np.float64) / scale
    fl = np.floor(u)
    i0 = int(fl.min())
    n = int(fl.max()) - i0 + 2
    idx = (fl - i0).astype(np.intp)
    t = u - fl
    s = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    return i0, n, idx, s


def value_noise(seed: int, xs: np.ndarray, ys: np.ndarray, scale_m: float) -> np.ndarray:
    """Smooth value noise in [-1, 1] on the grid ``ys`` x ``xs`` (1-D pixel-centre coordinates, metres).

    Feature size is ``scale_m`` (lattice spacing). Returns float32 ``(len(ys), len(xs))``.
    """
    ix0, nx, idx, sx = _axis_weights(xs, scale_m)
    iy0, ny, idy, sy = _axis_weights(ys, scale_m)
    jj, ii = np.meshgrid(np.arange(iy0, iy0 + ny), np.arange(ix0, ix0 + nx), indexing="ij")
    lat = (uniform2(seed, ii, jj) * 2.0 - 1.0).astype(np.float32)
    a = lat[:, idx] * (1.0 - sx) + lat[:, idx + 1] * sx
    return a[idy] * (1.0 - sy)[:, None] + a[idy + 1] * sy[:, None]


def fbm(
    seed: int,
    xs: np.ndarray,
    ys: np.ndarray,
    scale_m: float,
    octaves: int = 4,
    persistence: float = 0.5,
    min_scale_m: float = 0.0,
) -> np.ndarray:
    """Fractal sum of value-noise octaves (largest feature ``scale_m``), normalised to about [-1, 1].

    Octaves finer than ``min_scale_m`` (e.g. 2 pixels) are skipped: they would only alias.
    """
    out = np.zeros((len(ys), len(xs)), np.float32)
    amp, total, scale = 1.0, 0.0, scale_m
    for k in range(octaves):
        if scale < min_scale_m and k > 0:
            break
        out += amp * value_noise(subseed(seed, "oct", k), xs, ys, scale)
        total += amp
        amp *= persistence
        scale *= 0.5
    out /= max(total, 1e-9) * 0.75
    return out


def pixel_noise(seed: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Per-pixel white noise, approximately standard normal, keyed by global pixel (row, col).

    Sum of two uniforms from one hash (triangular, scaled to unit variance): cheap and block-independent.
    """
    h = hash2(seed, cols[None, :], rows[:, None])
    a = (h & np.uint64(0xFFFFFFFF)).astype(np.float32) * np.float32(1.0 / 4294967296.0)
    b = (h >> np.uint64(32)).astype(np.float32) * np.float32(1.0 / 4294967296.0)
    return (a + b - 1.0) * np.float32(2.449489742783178)  # sqrt(6): unit variance


def _upsample_axis(n_out: int, start: int, k: int, c0: int) -> tuple[np.ndarray, np.ndarray]:
    """Index into a coarse axis (coarse point m at fine index m * k) and linear weight for fine indices."""
    f = np.arange(start, start + n_out, dtype=np.int64)
    q = f // k
    idx = (q - c0).astype(np.intp)
    t = ((f - q * k).astype(np.float32)) / np.float32(k)
    return idx, t


def smooth_noise(
    seed: int,
    rows: np.ndarray,
    cols: np.ndarray,
    gsd_m: float,
    scale_m: float,
    octaves: int = 1,
    persistence: float = 0.5,
) -> np.ndarray:
    """:func:`fbm` of features no finer than ~4 px, evaluated on a coarse global grid and upsampled.

    ``rows``/``cols`` are contiguous global pixel indices. The coarse grid is aligned to global pixel
    multiples of its step, so every window gets the same values. Much cheaper than full resolution.
    """
    min_scale = 4.0 * gsd_m
    smallest = scale_m * 0.5 ** (octaves - 1)
    smallest = max(smallest, min_scale)
    k = int(np.clip(smallest / gsd_m / 4.0, 1, 32))
    if k == 1:
        xs = (cols + 0.5) * gsd_m
        ys = (rows + 0.5) * gsd_m
        return fbm(seed, xs, ys, scale_m, octaves, persistence, min_scale) if octaves > 1 else value_noise(
            seed, xs, ys, scale_m
        )
    r0, c0 = int(rows[0]) // k, int(cols[0]) // k
    cr = np.arange(r0, int(rows[-1]) // k + 2)
    cc = np.arange(c0, int(cols[-1]) // k + 2)
    ys_c = (cr * k + 0.5) * gsd_m
    xs_c = (cc * k + 0.5) * gsd_m
    if octaves > 1:
        coarse = fbm(seed, xs_c, ys_c, scale_m, octaves, persistence, min_scale)
    else:
        coarse = value_noise(seed, xs_c, ys_c, scale_m)
    ix, tx = _upsample_axis(len(cols), int(cols[0]), k, c0)
    iy, ty = _upsample_axis(len(rows), int(rows[0]), k, r0)
    a = coarse[:, ix] * (1.0 - tx) + coarse[:, ix + 1] * tx
    return a[iy] * (1.0 - ty)[:, None] + a[iy + 1] * ty[:, None]


class Coarse:
    """A coarse grid aligned to global pixel multiples of ``k``, for smooth fields of one window.

    Smooth fields are evaluated on it (1/k^2 of the pixels) and combined there; :meth:`up` then
    interpolates a result to the window once. Values depend only on global position, never on the window.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, gsd_m: float, k: int | None = None) -> None:
        if k is None:
            k = int(np.clip(0.3 / gsd_m / 6.0, 1, 4))
        self.k = k
        self.gsd_m = gsd_m
        r0, c0 = int(rows[0]) // k, int(cols[0]) // k
        cr = np.arange(r0, int(rows[-1]) // k + 2)
        cc = np.arange(c0, int(cols[-1]) // k + 2)
        self.ys = (cr * k + 0.5) * gsd_m
        self.xs = (cc * k + 0.5) * gsd_m
        self.shape = (len(cr), len(cc))
        self._ix, self._tx = _upsample_axis(len(cols), int(cols[0]), k, c0)
        self._iy, self._ty = _upsample_axis(len(rows), int(rows[0]), k, r0)
        self._ox = int(cols[0]) - c0 * k
        self._oy = int(rows[0]) - r0 * k

    def noise(self, seed: int, scale_m: float, octaves: int = 1, persistence: float = 0.5) -> np.ndarray:
        """Value noise (or fbm for ``octaves`` > 1) on the coarse grid, about [-1, 1]."""
        if octaves == 1:
            return value_noise(seed, self.xs, self.ys, scale_m)
        return fbm(seed, self.xs, self.ys, scale_m, octaves, persistence, min_scale_m=2.0 * self.k * self.gsd_m)

    def up(self, c: np.ndarray) -> np.ndarray:
        """Bilinear interpolation of a coarse field (..., hc, wc) to the window (..., h, w).

        Each fine index f takes coarse values q = f // k and q + 1 with weight (f - q k) / k; laid out as
        (coarse cell, phase) blocks and reshaped, that is three contiguous array operations per axis.
        """
        c = np.asarray(c, np.float32)
        k = self.k
        if k == 1:
            return c[..., self._iy[0]:self._iy[0] + len(self._iy), self._ix[0]:self._ix[0] + len(self._ix)]
        w1 = np.arange(k, dtype=np.float32) / np.float32(k)
        w0 = 1.0 - w1
        ox, oy = self._ox, self._oy
        a = c[..., :-1, None] * w0 + c[..., 1:, None] * w1
        a = a.reshape(c.shape[:-1] + (-1,))[..., ox:ox + len(self._ix)]
        b = a[..., :-1, None, :] * w0[:, None] + a[..., 1:, None, :] * w1[:, None]
        b = b.reshape(a.shape[:-2] + (-1, a.shape[-1]))
        return b[..., oy:oy + len(self._iy), :]
