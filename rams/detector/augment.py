"""Augmentation for nadir survey imagery: what changes between flights, not what cannot happen from above.

Applied per training sample, drawn from the sample's own random generator (so a sample is a pure function
of ``(seed, index)`` and training is reproducible and resumable):

* geometry: 90-degree rotations and flips (a nadir view has no "up"), scale jitter within the GSD range the
  model serves (objects keep their physical size to within the GSD estimate's error);
* resolution: down- then up-sampling (imagery coarser than the working GSD resampled up to it by the reader);
* radiometry: exposure (brightness shift, and optionally a gain in stops), contrast, gamma, white balance and
  saturation (RGB), blur (focus, motion), sensor noise. Invalid pixels stay 0 and invalid.

Only numpy and torch: no GDAL, no scipy (training runs on GPU boxes with a bare Python).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.nn import functional as F

from rams.detector.datasets import Sample, fit_to_size


class AugmentConfig(BaseModel):
    """Probabilities and ranges of each augmentation (``p_*`` are probabilities per sample)."""

    model_config = ConfigDict(extra="forbid")

    rotate90: bool = True
    flip: bool = True
    scale_range: tuple[float, float] = (0.9, 1.1)
    """Multiplier on object size in pixels (log-uniform). Keep within the served GSD's uncertainty."""
    p_degrade: float = Field(default=0.2, ge=0, le=1)
    degrade_max: float = Field(default=1.6, ge=1)
    """Largest down-sampling factor before up-sampling back (source imagery this much coarser)."""
    p_colour: float = Field(default=0.8, ge=0, le=1)
    brightness: float = 0.12
    """Additive exposure shift, +- this (in [0, 1] units)."""
    contrast: float = 0.25
    """Contrast factor in [1 - c, 1 + c] around the sample mean."""
    gamma: float = 0.25
    """Gamma in [1 - g, 1 + g]."""
    white_balance: float = 0.08
    """Per-band gain in [1 - w, 1 + w] (RGB only)."""
    saturation: float = 0.3
    """Blend towards grey by up to this, or away from it (RGB only)."""
    exposure_stops: tuple[float, float] = (0.0, 0.0)
    """Exposure change in stops, uniform in this range: the image is multiplied by ``2 ** stops`` (-1: half the
    light, every contrast halved; what an under-exposed flight or an overcast hour gives). (0, 0): off, and no
    random number is drawn for it, so configs without it train exactly as before."""
    @field_validator("exposure_stops")
    @classmethod
    def _stops(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not -4.0 <= v[0] <= v[1] <= 2.0:
            raise ValueError(f"exposure_stops must be [low, high] with -4 <= low <= high <= 2, got {list(v)}")
        return v

    p_blur: float = Field(default=0.3, ge=0, le=1)
    blur_sigma_max_px: float = 1.2
    p_noise: float = Field(default=0.4, ge=0, le=1)
    noise_sigma_max: float = 0.03


def _rot_boxes(boxes: np.ndarray, k: int, h: int, w: int) -> np.ndarray:
    """Boxes after ``np.rot90(image, k, axes=(1, 2))`` (counter-clockwise) of an (h, w) image."""
    b = boxes.copy()
    for _ in range(k % 4):
        # one CCW turn: new col = row, new row = (w - col); image becomes (w, h)
        c0, r0, c1, r1 = b[:, 0].copy(), b[:, 1].copy(), b[:, 2].copy(), b[:, 3].copy()
        b = np.stack([r0, w - c1, r1, w - c0], axis=1).astype(np.float32)
        h, w = w, h
    return b


def _resize(image: np.ndarray, valid: np.ndarray, out_h: int, out_w: int) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    shrink = out_h < image.shape[1]
    y = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=shrink)[0]
    v = torch.from_numpy(valid.astype(np.float32))[None, None]
    # a resized pixel is valid only if it is (almost) entirely made of valid pixels
    vv = F.interpolate(v, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=shrink)[0, 0]
    return y.numpy(), (vv.numpy() > 0.99)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = image.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x[0].numpy()


def augment(s: Sample, rng: np.random.Generator, cfg: AugmentConfig, size: int) -> Sample:
    """Apply the configured augmentations and return a ``size`` x ``size`` sample."""
    image, valid, boxes = s.image, s.valid, s.boxes_xyxy_px.astype(np.float32)
    c, h, w = image.shape
    # geometry
    if cfg.rotate90:
        k = int(rng.integers(0, 4))
        if k:
            image = np.rot90(image, k, axes=(1, 2))
            valid = np.rot90(valid, k)
            boxes = _rot_boxes(boxes, k, h, w)
            h, w = image.shape[1:]
    if cfg.flip and rng.random() < 0.5:
        image = image[:, :, ::-1]
        valid = valid[:, ::-1]
        boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1).astype(np.float32)
    image = np.ascontiguousarray(image, dtype=np.float32)
    valid = np.ascontiguousarray(valid)
    lo, hi = cfg.scale_range
    scale = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
    if abs(scale - 1.0) > 1e-3:
        nh, nw = max(8, round(h * scale)), max(8, round(w * scale))
        image, valid = _resize(image, valid, nh, nw)
        boxes = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
        h, w = nh, nw
    s = fit_to_size(Sample(image, valid, boxes, s.labels, s.ignore), size, rng)
    image, valid = s.image, s.valid
    # resolution
    if rng.random() < cfg.p_degrade and cfg.degrade_max > 1.0:
        f = rng.uniform(1.0, cfg.degrade_max)
        small = max(8, round(size / f))
        x = torch.from_numpy(image)[None]
        x = F.interpolate(x, size=(small, small), mode="bilinear", align_corners=False, antialias=True)
        image = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0].numpy()
    # radiometry
    if rng.random() < cfg.p_colour:
        image = image.copy()
        if c == 3:
            gains = 1.0 + rng.uniform(-cfg.white_balance, cfg.white_balance, size=(3, 1, 1))
            image = image * gains.astype(np.float32)
            sat = 1.0 + rng.uniform(-cfg.saturation, cfg.saturation)
            grey = image.mean(axis=0, keepdims=True)
            image = grey + (image - grey) * np.float32(sat)
        mean = float(image[:, valid].mean()) if valid.any() else 0.5
        contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
        image = (image - mean) * np.float32(contrast) + np.float32(mean + rng.uniform(-cfg.brightness, cfg.brightness))
        image = np.clip(image, 0.0, 1.0)
        gamma = 1.0 + rng.uniform(-cfg.gamma, cfg.gamma)
        image = np.power(image, np.float32(gamma), dtype=np.float32)
        lo, hi = cfg.exposure_stops
        if lo or hi:
            stops = rng.uniform(lo, hi) if hi > lo else lo
            image = np.clip(image * np.float32(2.0**stops), 0.0, 1.0)
    if rng.random() < cfg.p_blur and cfg.blur_sigma_max_px > 0.3:
        image = _gaussian_blur(image, float(rng.uniform(0.3, cfg.blur_sigma_max_px)))
    if rng.random() < cfg.p_noise and cfg.noise_sigma_max > 0:
        sigma = rng.uniform(0.0, cfg.noise_sigma_max)
        image = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    image[:, ~valid] = 0.0
    return Sample(image, valid, s.boxes_xyxy_px, s.labels, s.ignore)
