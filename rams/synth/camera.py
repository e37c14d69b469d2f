"""Camera and orthomosaic effects: photo footprints, seams, exposure/white-balance drift, blur, noise, JPEG.

An orthomosaic is a patchwork of photos. Here the photos sit on flight lines (a lattice in a rotated frame,
jittered), and each ground point takes the photo whose centre is nearest (a Voronoi mosaic, as mosaicking
seam-lines roughly are). Each photo has its own exposure, white balance, vignetting, focus blur and motion
blur, keyed by a hash of (seed, line, photo), so the seams where photos meet show small steps in brightness,
colour and sharpness, as real mosaics do. Lines start and stop at random places: the union of the photo
footprints is the mosaic's irregular valid area (alpha/nodata outside).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from rams.synth.noise import pixel_noise, subseed, uniform2, value_noise


@dataclass(frozen=True)
class PhotoLayout:
    """Photo centres on flight lines. Line j holds photos i in [starts[j], ends[j]] (inclusive)."""

    seed: int
    angle_deg: float
    along_m: float
    across_m: float
    x0_m: float
    y0_m: float
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    jitter: float = 0.15  # fraction of the spacing

    def _frame(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        dx = (np.asarray(xs) - self.x0_m).astype(np.float32)[None, :]
        dy = (np.asarray(ys) - self.y0_m).astype(np.float32)[:, None]
        ca, sa = np.float32(c / self.along_m), np.float32(s / self.along_m)
        cb, sb = np.float32(c / self.across_m), np.float32(s / self.across_m)
        return dx * ca + dy * sa, dy * cb - dx * sb

    #: Seam wiggle: photo-cell boundaries are displaced by smooth noise of this amplitude (fraction of the
    #: spacing), as mosaicking seamlines follow image content rather than straight lines.
    WIGGLE = 0.1

    def _centre(self, i: int, j: int) -> tuple[float, float]:
        ca = i + self.jitter * (float(uniform2(self.seed, np.asarray(i), np.asarray(j))) - 0.5)
        cb = j + self.jitter * (float(uniform2(self.seed + 7, np.asarray(i), np.asarray(j))) - 0.5)
        return ca, cb

    def assign(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For each pixel: (line j, photo i, valid, r2) where r2 is the squared normalised distance to the
        photo centre (for vignetting). Pixels whose nearest photo does not exist are not valid."""
        xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
        if len(xs) > 2 and len(ys) > 2:
            # Fast path: photo cells (Voronoi) and the valid disc are convex, so if one photo holds the four
            # corners of the window grown by the largest seam wiggle, it holds every (wiggled) pixel.
            m = self.WIGGLE * math.hypot(self.along_m, self.across_m) * 1.05
            a4, b4 = self._frame(np.asarray([xs[0] - m, xs[-1] + m]), np.asarray([ys[0] - m, ys[-1] + m]))
            cj, ci, cv, _ = self._nearest(a4, b4)
            if cv.all() and (cj == cj[0, 0]).all() and (ci == ci[0, 0]).all():
                j0, i0 = int(cj[0, 0]), int(ci[0, 0])
                ca, cb = self._centre(i0, j0)
                a, b = self._frame(xs, ys)
                r2 = ((a - ca) ** 2 + (b - cb) ** 2).astype(np.float32)
                shape = r2.shape
                return (np.full(shape, j0, np.int64), np.full(shape, i0, np.int64), np.ones(shape, bool), r2)
        a, b = self._frame(xs, ys)
        wa = self.WIGGLE * value_noise(self.seed + 11, xs, ys, 0.3 * self.across_m)
        wb = self.WIGGLE * value_noise(self.seed + 13, xs, ys, 0.3 * self.across_m)
        bj, bi, valid, _ = self._nearest(a + wa, b + wb)
        # vignetting from the true (unwiggled) distance to the chosen photo's centre
        ni = int(bi.max()) - int(bi.min()) + 1
        i_lo, j_lo = int(bi.min()), int(bj.min())
        nj = int(bj.max()) - j_lo + 1
        tj, ti = np.meshgrid(np.arange(j_lo, j_lo + nj), np.arange(i_lo, i_lo + ni), indexing="ij")
        ca_t = (ti + self.jitter * (uniform2(self.seed, ti, tj) - 0.5)).astype(np.float32).ravel()
        cb_t = (tj + self.jitter * (uniform2(self.seed + 7, ti, tj) - 0.5)).astype(np.float32).ravel()
        k = (bj - j_lo) * ni + (bi - i_lo)
        r2 = (a - ca_t[k]) ** 2 + (b - cb_t[k]) ** 2
        return bj, bi, valid, np.where(valid, r2, 0.0).astype(np.float32)

    def _nearest(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Nearest existing photo (line j, photo i), validity and squared distance, in normalised coords."""
        a = a.astype(np.float32)
        b = b.astype(np.float32)
        ia = np.floor(a).astype(np.int64)
        ja = np.floor(b).astype(np.int64)
        i_lo, i_hi = int(ia.min()), int(ia.max()) + 1
        j_lo, j_hi = int(ja.min()), int(ja.max()) + 1
        ti, tj = np.meshgrid(np.arange(i_lo, i_hi + 1), np.arange(j_lo, j_hi + 1))
        ni = i_hi - i_lo + 1
        ca_t = (ti + self.jitter * (uniform2(self.seed, ti, tj) - 0.5)).astype(np.float32).ravel()
        cb_t = (tj + self.jitter * (uniform2(self.seed + 7, ti, tj) - 0.5)).astype(np.float32).ravel()
        n_lines = len(self.starts)
        starts = np.asarray(self.starts + (1,), np.int64)
        ends = np.asarray(self.ends + (0,), np.int64)
        jc = np.where((tj < 0) | (tj >= n_lines), n_lines, np.clip(tj, 0, n_lines))
        exists_t = ((ti >= starts[jc]) & (ti <= ends[jc])).ravel()
        base = (ja - j_lo) * ni + (ia - i_lo)
        best = np.full(a.shape, np.inf, np.float32)
        bk = np.zeros(a.shape, np.int64)
        for off in (0, 1, ni, ni + 1):
            k = base + off
            d2 = (a - ca_t[k]) ** 2 + (b - cb_t[k]) ** 2
            d2 = np.where(exists_t[k], d2, np.float32(np.inf))
            better = d2 < best
            best = np.where(better, d2, best)
            bk = np.where(better, k, bk)
        bi = bk % ni + i_lo
        bj = bk // ni + j_lo
        valid = best < 0.9
        return bj, bi, valid, best


def random_layout(
    rng: np.random.Generator, extent_m: tuple[float, float, float, float], spacing_m: float, ragged: bool = True
) -> PhotoLayout:
    """Flight lines over ``extent_m`` (x0, y0, x1, y1): photos ``spacing_m`` apart (along ~0.7x across).

    With ``ragged``, lines start and stop at random (an irregular footprint, edges inside the extent);
    otherwise every point of the extent is covered.
    """
    x0, y0, x1, y1 = extent_m
    angle = float(rng.uniform(0, 180))
    along = spacing_m * float(rng.uniform(0.6, 0.8))
    across = spacing_m
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # origin so that the rotated lattice covers the extent: start from the corner of the rotated bounding box
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    corners = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]
    a_vals = [((x - cx) * c + (y - cy) * s) for x, y in corners]
    b_vals = [(-(x - cx) * s + (y - cy) * c) for x, y in corners]
    a_min, a_max, b_min, b_max = min(a_vals), max(a_vals), min(b_vals), max(b_vals)
    ox = cx + a_min * c - b_min * s
    oy = cy + a_min * s + b_min * c
    n_lines = int(math.ceil((b_max - b_min) / across)) + 2
    n_along = int(math.ceil((a_max - a_min) / along)) + 2
    starts, ends = [], []
    # coverage of each line within the extent: mark where the line is inside the extent, then fray its ends
    for j in range(n_lines):
        inside = []
        for i in range(n_along):
            px = ox + i * along * c - j * across * s
            py = oy + i * along * s + j * across * c
            m = 0.3 * spacing_m
            if x0 - m <= px <= x1 + m and y0 - m <= py <= y1 + m:
                inside.append(i)
        if not inside:
            starts.append(1)
            ends.append(0)
            continue
        lo, hi = min(inside), max(inside)
        if ragged:
            lo += int(rng.integers(0, 3))
            hi -= int(rng.integers(0, 3))
            if j in (0, n_lines - 1) or rng.random() < 0.06:
                lo += int(rng.integers(0, 4))
        starts.append(lo)
        ends.append(hi)
    return PhotoLayout(
        seed=int(rng.integers(0, 2**62)),
        angle_deg=angle,
        along_m=along,
        across_m=across,
        x0_m=ox,
        y0_m=oy,
        starts=tuple(starts),
        ends=tuple(ends),
    )


@dataclass(frozen=True)
class CameraModel:
    """Scene-level camera/mosaic effect strengths (per-photo values are drawn around them)."""

    seed: int
    exposure_sd: float = 0.05
    wb_sd: float = 0.025
    vignette: float = 0.12
    blur_px: tuple[float, float] = (0.35, 0.9)
    motion_px: tuple[float, float] = (0.0, 1.2)
    noise_sd: float = 0.012
    jpeg_quality: int | None = 90
    gamma: float = 1.0
    saturation: float = 1.0


def _photo_values(cam: CameraModel, j: np.ndarray, i: np.ndarray, key: int) -> np.ndarray:
    """Uniform [0, 1) value ``key`` of each pixel's photo, hashed once per photo and gathered."""
    j = np.asarray(j)
    i = np.asarray(i)
    if j.size <= 4:
        return uniform2(subseed(cam.seed, "photo", key), i, j).astype(np.float32)
    j_lo, i_lo = int(j.min()), int(i.min())
    nj, ni = int(j.max()) - j_lo + 1, int(i.max()) - i_lo + 1
    tj, ti = np.meshgrid(np.arange(j_lo, j_lo + nj), np.arange(i_lo, i_lo + ni), indexing="ij")
    table = uniform2(subseed(cam.seed, "photo", key), ti, tj).astype(np.float32).ravel()
    return table[(j - j_lo) * ni + (i - i_lo)]


def photo_gains(cam: CameraModel, j: np.ndarray, i: np.ndarray, r2: np.ndarray, bands: int) -> np.ndarray:
    """Per-pixel (bands, h, w) gain from each photo's exposure, white balance and vignetting."""
    if j.size > 1 and j.flat[0] == j.min() == j.max() and i.flat[0] == i.min() == i.max():
        j, i = j.flat[:1], i.flat[:1]  # one photo: scalar values, broadcast below
    exp = np.exp(cam.exposure_sd * 1.7 * (_photo_values(cam, j, i, 1) - 0.5) * 2)
    vig = 1.0 - cam.vignette * (0.5 + _photo_values(cam, j, i, 2)) * r2
    base = exp * vig
    if bands == 1:
        return base[None]
    out = np.empty((3,) + base.shape, np.float32)
    for b, key in zip(range(3), (3, 4, 5), strict=True):
        wb = np.exp(cam.wb_sd * 1.7 * (_photo_values(cam, j, i, key) - 0.5) * 2)
        out[b] = base * wb
    return out


def photo_blur(cam: CameraModel, j: int, i: int, layout_angle_deg: float) -> tuple[float, float]:
    """(sigma_rows, sigma_cols) in pixels for one photo: focus/resampling blur plus motion along the line."""
    u1 = float(_photo_values(cam, np.asarray(j), np.asarray(i), 6))
    u2 = float(_photo_values(cam, np.asarray(j), np.asarray(i), 7))
    # the flight has one focus/resampling blur and one motion level; photos vary a little around them
    lvl = uniform2(subseed(cam.seed, "blur"), np.asarray(0), np.asarray(0))
    lvl_m = uniform2(subseed(cam.seed, "motion"), np.asarray(0), np.asarray(0))
    base = (cam.blur_px[0] + (cam.blur_px[1] - cam.blur_px[0]) * float(lvl)) * (0.85 + 0.3 * u1)
    motion = (cam.motion_px[0] + (cam.motion_px[1] - cam.motion_px[0]) * float(lvl_m) ** 2) * (0.6 + 0.8 * u2)
    ang = math.radians(layout_angle_deg)
    # a box of length m has sigma m / sqrt(12); project on the axes
    sm = motion / math.sqrt(12)
    return (math.hypot(base, sm * abs(math.sin(ang))), math.hypot(base, sm * abs(math.cos(ang))))


def blur_by_photo(img: np.ndarray, cam: CameraModel, pj: np.ndarray, pi: np.ndarray, angle_deg: float) -> np.ndarray:
    """Blur each photo's part of ``img`` (C, h, w) with that photo's kernel (separable Gaussians)."""
    from scipy.ndimage import gaussian_filter

    if pj.flat[0] == pj.min() == pj.max() and pi.flat[0] == pi.min() == pi.max():
        sr, sc = photo_blur(cam, int(pj.flat[0]), int(pi.flat[0]), angle_deg)
        return gaussian_filter(img, sigma=(0, sr, sc), mode="nearest", truncate=3.0)
    j_lo, i_lo = int(pj.min()), int(pi.min())
    ni = int(pi.max()) - i_lo + 1
    keys = (pj - j_lo) * ni + (pi - i_lo)
    out = np.empty_like(img)
    for k in np.flatnonzero(np.bincount(keys.ravel())):
        m = keys == k
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        pad = 5
        r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, img.shape[1])
        c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, img.shape[2])
        sr, sc = photo_blur(cam, int(k) // ni + j_lo, int(k) % ni + i_lo, angle_deg)
        blurred = gaussian_filter(img[:, r0:r1, c0:c1], sigma=(0, sr, sc), mode="nearest", truncate=3.0)
        np.copyto(out[:, r0:r1, c0:c1], blurred, where=m[None, r0:r1, c0:c1])
    return out


def add_noise(
    img: np.ndarray, cam: CameraModel, rows: np.ndarray, cols: np.ndarray, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Signal-dependent sensor noise, in place.

    Keyed by global pixel (so independent of the block layout) unless ``rng`` is given (faster; chips).
    """
    if cam.noise_sd <= 0:
        return img
    if rng is not None:
        n = rng.standard_normal(img.shape, dtype=np.float32)
    else:
        n = np.stack([pixel_noise(subseed(cam.seed, "noise", b), rows, cols) for b in range(img.shape[0])])
    # shot noise grows with signal: sd ~ sqrt(0.3 + x), linearised over the useful range
    img += n * (np.float32(cam.noise_sd * 0.55) + np.float32(cam.noise_sd * 0.5) * img)
    return img


def tone(img: np.ndarray, cam: CameraModel) -> np.ndarray:
    """Camera tone curve: saturation, gamma and a soft shoulder instead of hard clipping."""
    if img.shape[0] == 3 and cam.saturation != 1.0:
        grey = (img[0] + img[1] + img[2]) * np.float32((1.0 - cam.saturation) / 3.0)
        img *= np.float32(cam.saturation)
        img += grey[None]
    if cam.gamma != 1.0:
        img = np.clip(img, 0, None) ** cam.gamma
    knee = 0.85
    over = img > knee
    if over.any():
        x = img[over]
        img[over] = knee + (1 - knee) * (1 - np.exp(-(x - knee) / (1 - knee)))
    return img


def jpeg_roundtrip(img8: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode (C, h, w) uint8 as JPEG: real block and chroma-subsampling artefacts."""
    from PIL import Image

    arr = img8[0] if img8.shape[0] == 1 else np.moveaxis(img8, 0, -1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    dec = np.asarray(Image.open(buf))
    return dec[None] if dec.ndim == 2 else np.moveaxis(dec, -1, 0)
