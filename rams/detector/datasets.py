"""Training data sources: synthetic chips, YOLO / COCO chip datasets, orthomosaics with annotation layers.

Every source turns a random generator into one :class:`Sample` (image, validity, boxes and labels in the
*model's* label order) at the model's working GSD. A sample is a pure function of the generator, and the
training loop seeds one generator per ``(seed, sample index)``, so DataLoader workers can draw samples in
any order and a resumed run sees exactly the samples an uninterrupted one would.

Sources (``kind`` in the training config):

* ``synthetic``: :class:`rams.synth.chips.ChipSampler` chips rendered on the fly (optionally from a fixed
  pool cached on disk, so later epochs reuse chips under fresh augmentation instead of re-rendering);
* ``yolo``: ``images/`` + ``labels/`` (``class cx cy w h`` normalised), e.g. ``../shared/data/thermal-landmines``;
  files can be split *by group* (a regex on the file name, e.g. the zone) and never at random;
* ``coco``: a COCO ``instances`` JSON + image folder;
* ``ortho``: a GeoTIFF orthomosaic read at the model GSD through :mod:`rams.raster`, with a GIS annotation
  layer (points or polygons, as annotated in QGIS) read through :mod:`rams.layers`; optional hard-negative
  layer (confusers). rasterio / geopandas are imported only when such a source is built, so synthetic and
  YOLO training runs on machines without GDAL.

Sampling balances positives (a window around a random labelled object), hard negatives (around a confuser,
when the source has them) and empty ground (a random window), per source ``positive_fraction`` /
``hard_negative_fraction``; the synthetic sampler balances the same three kinds itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rams.classes import CLASS_NAMES, MODEL_NAMES, class_of_model, get_class
from rams.errors import BandError, ConfigError, InputError, InputNotFoundError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass
class Sample:
    """One training sample at the model GSD.

    Attributes:
        image: float32 (C, H, W) in [0, 1]; invalid pixels 0.
        valid: bool (H, W).
        boxes_xyxy_px: float32 (N, 4) (col0, row0, col1, row1).
        labels: int64 (N,) indices into the model's classes.
        ignore: bool (N,): objects neither taught as positives nor as background (barely visible, cut by
            the chip edge, or of a class the model does not learn).
    """

    image: np.ndarray
    valid: np.ndarray
    boxes_xyxy_px: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray

    @staticmethod
    def make(
        image: np.ndarray,
        valid: np.ndarray,
        boxes: np.ndarray | list[list[float]],
        labels: np.ndarray | list[int],
        ignore: np.ndarray | list[bool] | None = None,
    ) -> Sample:
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        lab = np.asarray(labels, np.int64).reshape(-1)
        ign = np.zeros(len(lab), bool) if ignore is None else np.asarray(ignore, bool).reshape(-1)
        return Sample(np.asarray(image, np.float32), np.asarray(valid, bool), b, lab, ign)


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = Field(default=1.0, gt=0)
    """Relative share of training samples drawn from this source."""


class SyntheticSourceConfig(_Source):
    """Synthetic chips from :class:`rams.synth.chips.ChipSampler`."""

    kind: Literal["synthetic"] = "synthetic"
    seed: int = 0
    sampler: dict[str, Any] = Field(default_factory=dict)
    """Extra ChipSampler arguments (terrains, positive_fraction, hard_negative_fraction, gsd_jitter, ...)."""
    pool_size: int | None = Field(default=None, ge=1)
    """Draw chips from this many fixed ones (index modulo pool), cached on disk; None renders every sample."""
    cache_dir: str | None = "runs/cache"
    """Where pooled chips are cached (one sub-folder per sampler setting); None disables the cache."""
    min_visible_fraction: float = Field(default=0.35, ge=0, le=1)
    """Labelled targets less visible than this are ``ignore`` (not positive, not background)."""
    hard_examples: str | None = None
    """A mined list of chip indices (``rams mine``: the chips of this same sampler a model
    found hardest); the source then draws only those chips. None draws from the whole pool."""


class YoloSourceConfig(_Source):
    """A YOLO chip dataset: ``images/NAME.jpg`` and ``labels/NAME.txt`` (``class cx cy w h``, normalised)."""

    kind: Literal["yolo"] = "yolo"
    path: str
    class_map: dict[int, str]
    """YOLO class id -> rams class name (ids not listed are ignored, never taught as background)."""
    group_pattern: str | None = None
    """Regex with one group applied to the file name (e.g. '_Zone_(\\d+)_'): the split unit."""
    groups: list[str] | None = None
    """Keep only files whose group is listed (e.g. training zones); None keeps all."""
    object_size_px: tuple[float, float] | None = None
    """Rescale each image so its median object's long side is uniform in this range (frames of unknown
    GSD); None keeps the native scale."""
    positive_fraction: float = Field(default=0.8, ge=0, le=1)


class CocoSourceConfig(_Source):
    """A COCO detection dataset: ``annotations`` JSON (images, annotations with bbox x,y,w,h, categories)."""

    kind: Literal["coco"] = "coco"
    annotations: str
    images_dir: str
    class_map: dict[str, str]
    """COCO category name -> rams class name (others are ignored)."""
    object_size_px: tuple[float, float] | None = None
    positive_fraction: float = Field(default=0.8, ge=0, le=1)


class OrthoSourceConfig(_Source):
    """An orthomosaic with a GIS annotation layer (points or polygons)."""

    kind: Literal["ortho"] = "ortho"
    raster: str
    annotations: str
    layer: str | None = None
    class_column: str | None = "class"
    """Attribute holding the class; None gives every feature ``default_class``."""
    class_map: dict[str, str] = Field(default_factory=dict)
    """Attribute value -> rams class name (values that are already rams class names need no entry)."""
    default_class: str | None = None
    point_size_m: float | None = None
    """Box side for point annotations; None uses the class's largest item length."""
    negatives_layer: str | None = None
    """Optional layer of confusers (hard negatives) in the same file as the annotations."""
    negatives: str | None = None
    """Optional file of hard negatives (``path`` or ``path.gpkg:layer``; default layer ``false_alarms``), e.g. what
    ``rams evaluate --errors`` writes for a model run on this orthomosaic; added to ``negatives_layer``'s."""
    positive_fraction: float = Field(default=0.6, ge=0, le=1)
    hard_negative_fraction: float = Field(default=0.2, ge=0, le=1)
    read_bands: list[int] | None = None
    """1-based band override (as ``--bands``)."""
    value_range: tuple[float, float] | None = None


SourceConfig = Annotated[
    SyntheticSourceConfig | YoloSourceConfig | CocoSourceConfig | OrthoSourceConfig, Field(discriminator="kind")
]


@dataclass(frozen=True)
class SourceContext:
    """What every source needs to know about the model being trained."""

    classes: tuple[str, ...]
    bands: tuple[str, ...]
    gsd_m: float
    chip_size_px: int
    float_range: tuple[float, float] | None = None
    """The run's ``value_range`` (recorded in the card): what float pixel values map to [0, 1], in training as
    ``rams detect`` maps a float mosaic with that card (None: 0-1)."""


def _label_lookup(classes: tuple[str, ...]) -> dict[str, int]:
    return {c: i for i, c in enumerate(classes)}


def _match_bands(image: np.ndarray, n_bands: int, what: str) -> np.ndarray:
    """Make an (C, H, W) image have ``n_bands`` bands: grey to RGB by repetition, RGB to grey by mean."""
    c = image.shape[0]
    if c == n_bands:
        return image
    if n_bands == 1:
        return image.mean(axis=0, keepdims=True)
    if c == 1:
        return np.repeat(image, n_bands, axis=0)
    raise ConfigError(f"{what} has {c} bands but the model has {n_bands}; train on data with matching bands")


def fit_to_size(s: Sample, size: int, rng: np.random.Generator) -> Sample:
    """Crop (random offset) or pad (as invalid) a sample to ``size`` x ``size``; boxes follow.

    Objects whose centre leaves the chip are dropped; objects cut to under half their area become
    ``ignore`` (neither taught as positive nor as background).
    """
    c, h, w = s.image.shape
    if h == size and w == size:
        return s
    image = np.zeros((c, size, size), np.float32)
    valid = np.zeros((size, size), bool)
    # offset of the source inside the output (positive: pad) or of the output inside the source (negative)
    dr = int(rng.integers(0, size - h + 1)) if h <= size else -int(rng.integers(0, h - size + 1))
    dc = int(rng.integers(0, size - w + 1)) if w <= size else -int(rng.integers(0, w - size + 1))
    sr0, dr0 = max(0, -dr), max(0, dr)
    sc0, dc0 = max(0, -dc), max(0, dc)
    hh, ww = min(h - sr0, size - dr0), min(w - sc0, size - dc0)
    image[:, dr0 : dr0 + hh, dc0 : dc0 + ww] = s.image[:, sr0 : sr0 + hh, sc0 : sc0 + ww]
    valid[dr0 : dr0 + hh, dc0 : dc0 + ww] = s.valid[sr0 : sr0 + hh, sc0 : sc0 + ww]
    boxes = s.boxes_xyxy_px + np.array([dc, dr, dc, dr], np.float32)
    return clip_to_chip(Sample(image, valid, boxes, s.labels, s.ignore), size, size)


def clip_to_chip(s: Sample, h: int, w: int) -> Sample:
    """Clip boxes to an ``h`` x ``w`` chip: drop objects centred outside, ``ignore`` those cut below half."""
    b = s.boxes_xyxy_px
    if not len(b):
        return s
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    keep = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    area = np.maximum(b[:, 2] - b[:, 0], 1e-6) * np.maximum(b[:, 3] - b[:, 1], 1e-6)
    cb = b.copy()
    cb[:, [0, 2]] = np.clip(cb[:, [0, 2]], 0, w)
    cb[:, [1, 3]] = np.clip(cb[:, [1, 3]], 0, h)
    carea = np.maximum(cb[:, 2] - cb[:, 0], 0) * np.maximum(cb[:, 3] - cb[:, 1], 0)
    ignore = s.ignore | (carea < 0.5 * area)
    return Sample(s.image, s.valid, cb[keep], s.labels[keep], ignore[keep])


# ------------------------------------------------------------------------------------------ synthetic


class SyntheticSource:
    """Synthetic chips at the model GSD (see :mod:`rams.synth.chips`)."""

    def __init__(self, cfg: SyntheticSourceConfig, ctx: SourceContext) -> None:
        from rams.synth.chips import ChipSampler

        self.cfg = cfg
        self.ctx = ctx
        if ctx.bands == ("red", "green", "blue"):
            bands = "rgb"
        elif len(ctx.bands) == 1:
            bands = "thermal"
        else:
            raise ConfigError(
                f"synthetic chips exist for RGB and single-band (thermal) models, not bands {list(ctx.bands)}; "
                "use real sources for other sensors"
            )
        kwargs = dict(cfg.sampler)
        for fixed in ("seed", "chip_size_px", "gsd_m", "bands", "classes"):
            if fixed in kwargs:
                raise ConfigError(f"synthetic source: sampler.{fixed} is set by the training config; remove it")
        try:
            self.sampler = ChipSampler(
                seed=cfg.seed, chip_size_px=ctx.chip_size_px, gsd_m=ctx.gsd_m, bands=bands,
                classes=list(ctx.classes), **kwargs,
            )  # fmt: skip
        except TypeError as err:
            raise ConfigError(f"synthetic source: bad sampler option ({err})") from err
        self.lookup = _label_lookup(ctx.classes)
        self.cache: Path | None = None
        if cfg.pool_size and cfg.cache_dir:
            key = json.dumps(self.sampler_key(), sort_keys=True)
            self.cache = Path(cfg.cache_dir) / f"synth-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        self.hard: list[int] | None = None
        if cfg.hard_examples:
            self.hard = read_hard_examples(Path(cfg.hard_examples), self.sampler_key(), cfg.pool_size)

    def sampler_key(self) -> dict[str, Any]:
        """What makes chip ``i`` of this source: seed, chip size, GSD, bands, classes and sampler options."""
        return {
            "seed": self.cfg.seed,
            "size": self.ctx.chip_size_px,
            "gsd": self.ctx.gsd_m,
            "bands": self.sampler.bands,
            "classes": list(self.ctx.classes),
            "sampler": dict(self.cfg.sampler),
        }

    def describe(self) -> str:
        pool = f", pool of {self.cfg.pool_size} chips" if self.cfg.pool_size else ""
        hard = f", {len(self.hard)} mined hard chips ({self.cfg.hard_examples})" if self.hard else ""
        return f"synthetic chips (rams.synth.chips, seed {self.cfg.seed}{pool}{hard})"

    def chip_index(self, index: int) -> int:
        """The sampler's chip behind training sample ``index`` (pool modulo, or the mined list)."""
        if self.hard is not None:
            return self.hard[index % len(self.hard)]
        pool = self.cfg.pool_size
        return index % pool if pool else index

    def chip(self, index: int) -> Any:
        """Chip ``index`` (from the disk cache when pooled)."""
        from rams.synth.chips import Chip

        if self.cache is None:
            return self.sampler.sample(index)
        path = self.cache / f"{index:07d}.npz"
        if path.exists():
            try:
                with np.load(path) as z:
                    return Chip(
                        image=z["image"].astype(np.float32) * np.float32(1.0 / 255.0),
                        valid=z["valid"],
                        boxes_xyxy_px=z["boxes"],
                        labels=z["labels"],
                        visible_fraction=z["vis"],
                    )
            except (OSError, ValueError, KeyError):  # a damaged cache entry is rendered again
                log.warning("cache entry %s unreadable; rendering it again", path)
        chip = self.sampler.sample(index)
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.npz")
        # chips are uint8 / 255 exactly (as the raster reader scales uint8 mosaics): storing uint8 is lossless
        np.savez(
            tmp, image=np.rint(chip.image * 255.0).astype(np.uint8), valid=chip.valid, boxes=chip.boxes_xyxy_px,
            labels=chip.labels, vis=chip.visible_fraction,
        )  # fmt: skip
        os.replace(tmp, path)
        return chip

    def sample(self, rng: np.random.Generator, index: int) -> Sample:
        return self.sample_chip(self.chip_index(index))

    def sample_chip(self, chip_index: int) -> Sample:
        """The sampler's chip ``chip_index`` as a training sample (labels in model order, ignore flags)."""
        chip = self.chip(chip_index)
        labels, ignore = [], []
        for lab, vis in zip(chip.labels.tolist(), chip.visible_fraction.tolist(), strict=True):
            name = CLASS_NAMES[lab]
            labels.append(self.lookup.get(name, 0))
            ignore.append(name not in self.lookup or vis < self.cfg.min_visible_fraction)
        return Sample.make(chip.image, chip.valid, chip.boxes_xyxy_px, labels, ignore)


def read_hard_examples(path: Path, key: dict[str, Any], pool_size: int | None) -> list[int]:
    """Chip indices of a mined hard-example file, checked against the sampler that is to draw them."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputNotFoundError(
            f"hard_examples file {path} not found; mine it first (rams mine) or drop the key"
        ) from err
    except (OSError, ValueError) as err:
        raise ConfigError(f"hard_examples file {path} is not readable JSON ({err}); mine it again") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("indices"), list) or not doc["indices"]:
        raise ConfigError(f"hard_examples file {path} has no 'indices' list; mine it again")
    if doc.get("sampler") != json.loads(json.dumps(key)):
        raise ConfigError(
            f"hard_examples file {path} was mined from other chips (seed, chip size, GSD, classes or sampler "
            "options differ from this source); mine it again for this source"
        )
    indices = [int(i) for i in doc["indices"]]
    if min(indices) < 0 or (pool_size is not None and max(indices) >= pool_size):
        raise ConfigError(f"hard_examples file {path} lists chips outside this source's pool of {pool_size}")
    return indices


# ------------------------------------------------------------------------------------------ chip datasets


def _read_image(path: Path, float_range: tuple[float, float] | None = None) -> np.ndarray:
    """Image file -> float32 (C, H, W) in [0, 1] (8-bit /255, 16-bit /65535, float by ``float_range``, default 0-1:
    as ``rams detect`` scales a mosaic of that type with the trained card)."""
    import imageio.v3 as iio

    try:
        arr = np.asarray(iio.imread(path))
    except Exception as err:
        raise InputError(f"cannot read image {path} ({err}); remove or replace the file") from err
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        lo, hi = 0.0, 255.0 if arr.dtype == np.uint8 else 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = float_range or (0.0, 1.0)
    else:
        raise InputError(f"image {path} holds {arr.dtype} pixels; training reads 8- and 16-bit and float images: "
                         "convert it (e.g. gdal_translate -ot UInt16)")
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr[..., :3] if arr.shape[-1] == 4 else arr, -1, 0)
    out = (arr.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    clipped = float(np.mean((out < 0) | (out > 1)))
    if clipped > CHIP_CLIPPED_REFUSE:
        raise InputError(
            f"image {path}: {100 * clipped:.0f} % of its pixel values lie outside the {lo:g}-{hi:g} range its "
            f"{arr.dtype} values are scaled by (they run from {float(arr.min()):g} to {float(arr.max()):g}); set the "
            "training config's value_range to the range float images use (it goes into the card for rams detect)"
        )
    return out.clip(0.0, 1.0)


#: Share of a chip's pixel values outside its scaling range above which it is refused (see rams.raster's check).
CHIP_CLIPPED_REFUSE = 0.05


def _resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    import torch
    from torch.nn import functional as F

    c, h, w = image.shape
    nh, nw = max(4, round(h * factor)), max(4, round(w * factor))
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    return F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=factor < 1)[0].numpy()


def _grey_is_rgb(image: np.ndarray) -> np.ndarray:
    """JPEGs of single-band sensors are often stored as 3 equal channels: keep one then."""
    if (
        image.shape[0] == 3
        and np.allclose(image[0], image[1], atol=2 / 255)
        and np.allclose(image[0], image[2], atol=2 / 255)
    ):
        return image[:1]
    return image


def crop_window(
    rng: np.random.Generator, h: int, w: int, size: int, boxes: np.ndarray, positive: bool
) -> tuple[int, int]:
    """Top-left (row, col) of a ``size`` window: around a random box when ``positive``, else anywhere.

    Windows may extend past the image (the outside is padded as invalid) when the image is smaller.
    """
    if positive and len(boxes):
        b = boxes[int(rng.integers(len(boxes)))]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        # the object's centre anywhere in the inner 80 % of the window
        m = 0.1 * size
        col = int(math.floor(cx - rng.uniform(m, size - m)))
        row = int(math.floor(cy - rng.uniform(m, size - m)))
        return row, col
    row = int(rng.integers(0, max(1, h - size + 1))) if h > size else -int(rng.integers(0, size - h + 1))
    col = int(rng.integers(0, max(1, w - size + 1))) if w > size else -int(rng.integers(0, size - w + 1))
    return row, col


def cut(image: np.ndarray, valid: np.ndarray | None, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` window at (row, col) of an in-memory image; the outside is 0 and invalid."""
    c, h, w = image.shape
    out = np.zeros((c, size, size), np.float32)
    v = np.zeros((size, size), bool)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + size, h), min(col + size, w)
    if r1 > r0 and c1 > c0:
        out[:, r0 - row : r1 - row, c0 - col : c1 - col] = image[:, r0:r1, c0:c1]
        v[r0 - row : r1 - row, c0 - col : c1 - col] = True if valid is None else valid[r0:r1, c0:c1]
    return out, v


@dataclass(frozen=True)
class _Item:
    path: Path
    boxes: np.ndarray  # pixels of the original image
    labels: np.ndarray
    ignore: np.ndarray


class ChipDatasetSource:
    """YOLO or COCO chip datasets (images of unknown GSD, optionally rescaled to an object size range)."""

    def __init__(self, cfg: YoloSourceConfig | CocoSourceConfig, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.items = _yolo_items(cfg, ctx) if isinstance(cfg, YoloSourceConfig) else _coco_items(cfg, ctx)
        if not self.items:
            raise ConfigError(f"{cfg.kind} source {self.where}: no images left after the group filter")

    @property
    def where(self) -> str:
        return self.cfg.path if isinstance(self.cfg, YoloSourceConfig) else self.cfg.annotations

    def describe(self) -> str:
        extra = ""
        if isinstance(self.cfg, YoloSourceConfig) and self.cfg.groups:
            extra = f", groups {','.join(self.cfg.groups)}"
        return f"{self.cfg.kind} {self.where} ({len(self.items)} images{extra})"

    def sample(self, rng: np.random.Generator, index: int) -> Sample:
        item = self.items[int(rng.integers(len(self.items)))]
        image = _match_bands(_grey_is_rgb(_read_image(item.path, self.ctx.float_range)), len(self.ctx.bands),
                             str(item.path))
        boxes = item.boxes.copy()
        if self.cfg.object_size_px is not None and len(boxes):
            long_side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            lo, hi = self.cfg.object_size_px
            target = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            factor = target / max(float(np.median(long_side)), 1.0)
            image = _resize_image(image, factor)
            boxes = boxes * np.float32(factor)
        size = self.ctx.chip_size_px
        positive = rng.random() < self.cfg.positive_fraction
        row, col = crop_window(rng, image.shape[1], image.shape[2], size, boxes, positive)
        chip, valid = cut(image, None, row, col, size)
        boxes = boxes - np.array([col, row, col, row], np.float32)
        return clip_to_chip(Sample(chip, valid, boxes, item.labels.copy(), item.ignore.copy()), size, size)


def _check_class_map(values: dict[Any, str], classes: tuple[str, ...], what: str) -> None:
    bad = [v for v in values.values() if v not in CLASS_NAMES]
    if bad:
        raise ConfigError(f"{what}: class_map names unknown classes {bad}; known: {', '.join(CLASS_NAMES)}")


def relative_note(path: Path) -> str:
    """Words for an error about a missing path from a config: where a relative one was looked for."""
    if path.is_absolute():
        return ""
    return (f" (relative paths in a config are read from the folder rams runs in, {Path.cwd()}: run it from the "
            "folder they are written for, e.g. the repository root, or make them absolute)")


def _yolo_items(cfg: YoloSourceConfig, ctx: SourceContext) -> list[_Item]:
    root = Path(cfg.path)
    images, labels_dir = root / "images", root / "labels"
    if not root.exists():
        raise InputNotFoundError(f"YOLO dataset {root} not found{relative_note(root)}")
    if not images.is_dir() or not labels_dir.is_dir():
        raise InputNotFoundError(f"YOLO dataset {root} needs images/ and labels/ folders; check the path")
    _check_class_map(cfg.class_map, ctx.classes, f"yolo source {root}")
    pattern = re.compile(cfg.group_pattern) if cfg.group_pattern else None
    lookup = _label_lookup(ctx.classes)
    items = []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if pattern is not None:
            m = pattern.search(img.name)
            if m is None:
                raise ConfigError(f"{img.name} does not match group_pattern {cfg.group_pattern!r}; fix the pattern")
            if cfg.groups is not None and m.group(1) not in cfg.groups:
                continue
        h, w = _image_size(img)
        lab_path = labels_dir / f"{img.stem}.txt"
        boxes, labs, ign = [], [], []
        if lab_path.exists():
            for line_no, line in enumerate(lab_path.read_text().splitlines(), start=1):
                parts = line.split()
                if not parts:
                    continue
                k, (x0, y0, x1, y1) = _yolo_box(parts, f"{lab_path}:{line_no}")
                boxes.append([x0 * w, y0 * h, x1 * w, y1 * h])
                name = cfg.class_map.get(k)
                labs.append(lookup.get(name, 0) if name else 0)
                ign.append(name is None or name not in lookup)
        items.append(_Item(img, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labs, np.int64),
                           np.asarray(ign, bool)))  # fmt: skip
    return items


def _yolo_box(parts: list[str], where: str) -> tuple[int, tuple[float, float, float, float]]:
    """One YOLO label line as (class, normalised x0, y0, x1, y1): ``class cx cy w h`` (detection), or ``class x1 y1
    x2 y2 ...`` (a segmentation polygon, as YOLO-seg exports write: its bounding box). Coordinates must be
    normalised to 0-1; pixel coordinates (a frequent export mistake) or empty boxes are refused with the line."""
    try:
        k = int(parts[0])
        values = [float(v) for v in parts[1:]]
    except ValueError as err:
        raise InputError(f"{where} is not 'class cx cy w h' (numbers); fix the label") from err
    if len(values) == 4:
        cx, cy, bw, bh = values
        box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
        size_ok = bw > 0 and bh > 0
    elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        box = (min(xs), min(ys), max(xs), max(ys))
        size_ok = box[2] > box[0] and box[3] > box[1]
    else:
        raise InputError(f"{where} has {len(values)} numbers after the class; a YOLO label is 'class cx cy w h' (or "
                         "'class x1 y1 x2 y2 ...' for a polygon); fix the label")
    if not all(-0.01 <= v <= 1.01 for v in values):
        raise InputError(f"{where}: coordinates must be normalised to 0-1 (YOLO), got {max(values, key=abs):g}; "
                         "were pixel coordinates exported? divide them by the image width and height")
    if not size_ok:
        raise InputError(f"{where}: the box has no width or height; fix or delete the label")
    return k, box


def _image_size(path: Path) -> tuple[int, int]:
    import imageio.v3 as iio

    try:
        props = iio.improps(path)
    except Exception as err:
        raise InputError(f"cannot read image {path} ({err}); remove or replace the file") from err
    shape = props.shape
    return int(shape[0]), int(shape[1])


def _coco_items(cfg: CocoSourceConfig, ctx: SourceContext) -> list[_Item]:
    ann_path, img_dir = Path(cfg.annotations), Path(cfg.images_dir)
    if not ann_path.is_file():
        raise InputNotFoundError(f"COCO annotations {ann_path} not found{relative_note(ann_path)}")
    _check_class_map(cfg.class_map, ctx.classes, f"coco source {ann_path}")
    try:
        coco = json.loads(ann_path.read_text())
        cats = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        imgs = {int(i["id"]): i for i in coco["images"]}
        anns = coco["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise InputError(f"{ann_path} is not a COCO detection file ({err}); export COCO 'instances' JSON") from err
    lookup = _label_lookup(ctx.classes)
    per_image: dict[int, list[tuple[list[float], int, bool]]] = {i: [] for i in imgs}
    for a in anns:
        try:
            x, y, bw, bh = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{ann_path}: annotation {a.get('id', '?')} has no 'bbox' [x, y, w, h] ({err!r}); export "
                             "COCO 'instances' with boxes") from err
        if not (bw > 0 and bh > 0):
            raise InputError(f"{ann_path}: annotation {a.get('id', '?')} has an empty box {a['bbox']}; fix or delete "
                             "it")
        name = cfg.class_map.get(cats.get(int(a["category_id"]), ""))
        per_image.setdefault(int(a["image_id"]), []).append(
            ([x, y, x + bw, y + bh], lookup.get(name, 0) if name else 0, name is None or name not in lookup)
        )
    items = []
    for iid, info in sorted(imgs.items()):
        path = img_dir / str(info["file_name"])
        if not path.is_file():
            raise InputNotFoundError(f"COCO image {path} (listed in {ann_path}) not found; check images_dir")
        rows = per_image.get(iid, [])
        items.append(
            _Item(
                path,
                np.asarray([r[0] for r in rows], np.float32).reshape(-1, 4),
                np.asarray([r[1] for r in rows], np.int64),
                np.asarray([r[2] for r in rows], bool),
            )
        )
    return items


# ------------------------------------------------------------------------------------------ orthomosaics


def _apply(t: Any, x: Any, y: Any) -> tuple[Any, Any]:
    """Affine ``t`` applied to coordinates (scalars or arrays)."""
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def _has_layer_suffix(spec: str) -> bool:
    """``path.gpkg:layer`` (not a Windows drive letter, not an existing file name with a colon)."""
    head, sep, tail = spec.rpartition(":")
    return bool(sep and head and tail) and not Path(spec).exists() and "/" not in tail and "\\" not in tail


class OrthoSource:
    """Windows of an orthomosaic at the model GSD with boxes from a GIS annotation layer.

    Annotations are read once (main process) into pixel boxes of the model-GSD grid; each DataLoader worker
    opens its own raster handle on first use (GDAL handles are not shared across processes).
    """

    def __init__(self, cfg: OrthoSourceConfig, ctx: SourceContext) -> None:
        from rams.raster import coarse_valid_mask, open_raster, select_bands, target_grid, value_range_check

        self.cfg = cfg
        self.ctx = ctx
        if not Path(cfg.raster).exists():
            raise InputNotFoundError(f"orthomosaic {cfg.raster} not found{relative_note(Path(cfg.raster))}")
        src = open_raster(cfg.raster, overviews=True)  # only the coarse mask is read here (chips: without)
        try:
            self.grid = target_grid(src, ctx.gsd_m)
            mask, mask_t = coarse_valid_mask(src, self.grid, max_px=1024)
            # values the scaling would clip or leave nearly black would train (and validate) on blank chips
            bands = select_bands(src, list(ctx.bands), cfg.read_bands)
            vr, given = self._value_range(src, bands[0])
            try:
                note = value_range_check(src, bands, vr, range_given=given)
            except BandError as err:
                raise BandError(f"training source {err}; in a training config the range goes under this source's "
                                "value_range (or the run's value_range, for float mosaics)") from None
            if note:
                log.warning("%s: %s", cfg.raster, note)
        finally:
            src.close()
        self.boxes, self.labels, self.ignore = self._read_boxes(cfg.layer, positives=True)
        self.neg_boxes = np.zeros((0, 4), np.float32)
        if cfg.negatives_layer:
            self.neg_boxes, _, _ = self._read_boxes(cfg.negatives_layer, positives=False)
        if cfg.negatives:
            path, _, layer = cfg.negatives.rpartition(":") if _has_layer_suffix(cfg.negatives) else (
                cfg.negatives, "", "false_alarms")  # fmt: skip
            more, _, _ = self._read_boxes(layer, positives=False, path=Path(path))
            self.neg_boxes = np.concatenate([self.neg_boxes, more])
        # centres of valid coarse cells, in grid pixels: where "empty ground" windows are centred
        inv = ~self.grid.transform
        rr, cc = np.nonzero(mask)
        xs, ys = _apply(mask_t, cc + 0.5, rr + 0.5)
        gc, gr = _apply(inv, xs, ys)
        self.valid_centres = np.stack([np.asarray(gc), np.asarray(gr)], axis=1).astype(np.float32)
        if not len(self.valid_centres):
            raise InputError(f"{cfg.raster} has no valid pixels; check its alpha/nodata")
        self._reader: Any = None
        self._pid = -1

    def describe(self) -> str:
        return f"ortho {self.cfg.raster} with {len(self.boxes)} annotations from {self.cfg.annotations}"

    def _read_boxes(
        self, layer: str | None, positives: bool, path: Path | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from rams.layers import read_layer

        cfg = self.cfg
        required = [cfg.class_column] if (positives and cfg.class_column) else []
        what = "annotation layer" if positives else "negatives layer"
        src_path = path or Path(cfg.annotations)
        gdf = read_layer(src_path, layer, required_columns=required, what=what)
        if len(gdf):  # (read_layer refuses a layer without a CRS)
            gdf = gdf.to_crs(self.grid.crs)
        lookup = _label_lookup(self.ctx.classes)
        inv = ~self.grid.transform
        boxes, labels, ignore = [], [], []
        for i, geom in enumerate(gdf.geometry):
            if geom is None or geom.is_empty:
                continue
            name = cfg.default_class
            if positives and cfg.class_column:
                raw = str(gdf[cfg.class_column].iloc[i])
                name = cfg.class_map.get(raw, raw)
                if name not in CLASS_NAMES and name in MODEL_NAMES:  # annotated by item model: 'PMN-2' is pmn
                    name = class_of_model(name)
            if positives and (name is None or name not in CLASS_NAMES):
                raise ConfigError(
                    f"annotation {i} in {cfg.annotations} has class {name!r}, which is not a rams class; map it "
                    f"with class_map (known: {', '.join(CLASS_NAMES)})"
                )
            if geom.geom_type == "Point":
                side = cfg.point_size_m or (get_class(name).max_length_m if name else 0.15)
                half = side / 2
                x0, y0, x1, y1 = geom.x - half, geom.y - half, geom.x + half, geom.y + half
            else:
                x0, y0, x1, y1 = geom.bounds
            c0, r0 = _apply(inv, x0, y1)
            c1, r1 = _apply(inv, x1, y0)
            boxes.append([min(c0, c1), min(r0, r1), max(c0, c1), max(r0, r1)])
            labels.append(lookup.get(name or "", 0))
            ignore.append(name not in lookup)
        arr = np.asarray(boxes, np.float32).reshape(-1, 4)
        on = (arr[:, 2] > 0) & (arr[:, 0] < self.grid.width) & (arr[:, 3] > 0) & (arr[:, 1] < self.grid.height)
        if len(arr) and not on.any():
            raise InputError(f"none of the {len(arr)} features of the {what} of {src_path} lies on {cfg.raster}; "
                             "check that both are of the same site and that the layer's CRS is right")
        if len(arr) and not on.all():
            log.warning("%d of %d features of the %s of %s lie off %s (ignored there)", int((~on).sum()), len(arr),
                        what, src_path, cfg.raster)
        return (
            arr,
            np.asarray(labels, np.int64),
            np.asarray(ignore, bool),
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"], state["_pid"] = None, -1  # GDAL handles never cross processes
        return state

    def _value_range(self, src: Any, band: int) -> tuple[tuple[float, float], bool]:
        """(range, given): this source's ``value_range``, else for a float mosaic the run's (as ``rams detect`` reads
        one with the trained card), else the type's or declared bit depth's (not given)."""
        from rams.raster import source_value_range

        given = self.cfg.value_range
        if given is None and np.issubdtype(np.dtype(src.dtypes[band - 1]), np.floating):
            given = self.ctx.float_range
        return source_value_range(src, band, given), given is not None

    def _get_reader(self) -> Any:
        if self._reader is None or self._pid != os.getpid():
            from rams.raster import OrthoReader, open_raster, select_bands

            src = open_raster(self.cfg.raster)
            bands = select_bands(src, list(self.ctx.bands), self.cfg.read_bands)
            vr, _ = self._value_range(src, bands[0])
            self._reader = OrthoReader(src, self.grid, bands, vr)
            self._pid = os.getpid()
        return self._reader

    def sample(self, rng: np.random.Generator, index: int) -> Sample:
        from rasterio.windows import Window

        size = self.ctx.chip_size_px
        u = rng.random()
        if u < self.cfg.positive_fraction and len(self.boxes):
            row, col = crop_window(rng, self.grid.height, self.grid.width, size, self.boxes, True)
        elif u < self.cfg.positive_fraction + self.cfg.hard_negative_fraction and len(self.neg_boxes):
            row, col = crop_window(rng, self.grid.height, self.grid.width, size, self.neg_boxes, True)
        else:
            c = self.valid_centres[int(rng.integers(len(self.valid_centres)))]
            row = int(c[1] + rng.uniform(-size, size) / 2) - size // 2
            col = int(c[0] + rng.uniform(-size, size) / 2) - size // 2
        tile = self._get_reader().read(Window(col, row, size, size))
        b = self.boxes - np.array([col, row, col, row], np.float32)
        s = Sample(tile.image, tile.valid, b, self.labels.copy(), self.ignore.copy())
        return clip_to_chip(s, size, size)


Source = SyntheticSource | ChipDatasetSource | OrthoSource


def build_source(cfg: Any, ctx: SourceContext) -> Source:
    """The source object for one source config."""
    if isinstance(cfg, SyntheticSourceConfig):
        return SyntheticSource(cfg, ctx)
    if isinstance(cfg, YoloSourceConfig | CocoSourceConfig):
        return ChipDatasetSource(cfg, ctx)
    if isinstance(cfg, OrthoSourceConfig):
        return OrthoSource(cfg, ctx)
    raise ConfigError(f"unknown source kind {getattr(cfg, 'kind', cfg)!r}")
