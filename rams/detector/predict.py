"""Inference: a batch of tiles in, tile-local detections out.

:class:`Predictor` owns a loaded network on one device. ``predict`` normalises a float32 batch in [0, 1]
(invalid pixels set to the band mean first), runs the network, and decodes the stride-4 outputs:

1. cells whose score (``sigmoid`` of the class heatmap) reaches ``score_threshold`` and that are *peaks* (equal
   to the max of their 3x3 neighbourhood: max-pool NMS, CenterNet); the ``max_per_tile`` highest are kept;
2. each peak's box is its centre (cell + predicted sub-cell offset, times the stride) and its predicted
   width/height (exp of the log-size head), as ``(col0, row0, col1, row1)`` tile-local pixels;
3. detections whose centre falls on an invalid pixel are dropped (nothing is claimed where nothing was seen);
4. overlapping boxes are suppressed with :func:`torchvision.ops.batched_nms` (across classes when the card
   says ``class_agnostic_nms``).

**Score meaning.** The score is the sigmoid heatmap value at the peak: a per-pixel quantity computed by a
fully convolutional network with fixed normalisation (no per-tile or per-image statistics, no softmax over
detections), so a threshold means the same in every tile, scene and run. The focal-loss training makes it
rank-consistent rather than a calibrated probability: operating points in the card are thresholds measured
on held-out data (e.g. the one giving <= 10 false positives per hectare), not probabilities.

Deterministic: no sampling, fixed op order; on CPU the same input gives bit-identical output.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.ops import batched_nms

from rams.detector.bundle import ModelBundle, ModelCard
from rams.detector.model import fuse_batchnorm
from rams.errors import BandError, DeviceError

log = logging.getLogger(__name__)

#: Log-size predictions are clamped to boxes between 1 px and this many pixels.
MAX_BOX_PX = 1024.0


@dataclass(frozen=True)
class Detections:
    """Detections of one tile, sorted by descending score. Coordinates are tile-local pixels."""

    boxes_xyxy_px: np.ndarray
    """float32 (K, 4): (col0, row0, col1, row1)."""
    scores: np.ndarray
    """float32 (K,): sigmoid heatmap peak value."""
    labels: np.ndarray
    """int64 (K,): indices into the card's ``classes``."""

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def check_band_count(card: ModelCard, count: int, band_names: list[str] | tuple[str, ...] | None = None) -> None:
    """Raise :class:`BandError` unless ``count`` input bands fit the model's card."""
    need = len(card.bands)
    if count == need:
        return
    have = f"{count}" + (f" ({', '.join(band_names)})" if band_names else "")
    kind = "RGB" if card.bands == ["red", "green", "blue"] else f"{need}-band {'/'.join(card.bands)}"
    raise BandError(
        f"model {card.name} expects {need} band{'s' if need != 1 else ''} ({', '.join(card.bands)}) but the "
        f"input has {have}; give {kind} imagery (pick bands with --bands) or use a model trained for "
        f"{count}-band imagery"
    )


#: glibc ``mallopt`` parameters (malloc.h): ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD``.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Heap blocks up to this size are reused instead of being mapped afresh for every forward pass.
ACTIVATION_HEAP_BYTES = 1 << 30
_heap_tuned = False


def keep_activations_on_heap() -> bool:
    """Let glibc reuse freed activation buffers instead of unmapping and mapping them for every forward pass.

    glibc serves blocks above ``M_MMAP_THRESHOLD`` (dynamic, at most 32 MB by default) with a fresh ``mmap``
    and unmaps them on free, and it trims the heap top above ``M_TRIM_THRESHOLD``: every forward pass over a big
    tile then page-faults all its activation memory in again. Measured on 2 CPU cores with the default model
    (docs/benchmarks.md): 2048 px tiles ran at 17.5-20.8 Mpx/s with glibc's defaults and 22.7-24.1 Mpx/s
    with both thresholds fixed at 1 GiB; 1024 px tiles 22-25 Mpx/s either way. Memory stays bounded by the
    largest working set (freed blocks are reused); ``rams detect`` still hands free memory back with
    ``malloc_trim`` now and then. The setting is process-wide: a host process that embeds rams (a notebook, a GIS
    plugin) and wants glibc's defaults sets ``RAMS_KEEP_HEAP=0``. Idempotent; a no-op (False) where glibc is
    absent or the variable says no.
    """
    global _heap_tuned
    if _heap_tuned:
        return True
    if os.environ.get("RAMS_KEEP_HEAP", "1").strip().lower() in ("0", "no", "false", "off"):
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, ACTIVATION_HEAP_BYTES)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, ACTIVATION_HEAP_BYTES)
        )
    except (OSError, AttributeError):
        return False
    _heap_tuned = ok
    return ok


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; DeviceError when CUDA is asked for but absent."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
        return torch.device(device)
    if device != "cpu":
        raise DeviceError(f"unknown device {device!r}; use cpu or cuda")
    return torch.device("cpu")


def normalise(
    images: torch.Tensor,
    valid: torch.Tensor | None,
    mean: torch.Tensor,
    std: torch.Tensor,
    channels_last: bool = False,
) -> torch.Tensor:
    """``(x - mean) / std`` per band, with invalid pixels set to the mean (so they enter as 0).

    Shared by training and inference so that both see identical inputs. The result is a new tensor (the
    caller's images are never modified), written directly in ``channels_last`` layout when asked.
    """
    inv = (1.0 / std).view(1, -1, 1, 1)
    fmt = torch.channels_last if channels_last and images.ndim == 4 else torch.contiguous_format
    x = torch.empty_like(images, memory_format=fmt)
    torch.addcmul(-mean.view(1, -1, 1, 1) * inv, images, inv, out=x)  # one pass: x * inv - mean * inv
    if valid is not None:
        x.mul_(valid.unsqueeze(1))
    return x


def _candidate_logit(score_threshold: float) -> float:
    """A logit at or below that of every score >= ``score_threshold`` (a safe pre-filter for the exact test).

    The margin (1e-6 in score, 1e-3 in logit) exceeds float32 sigmoid rounding, so no cell whose sigmoid
    reaches the threshold is ever dropped by the pre-filter.
    """
    p = score_threshold - 1e-6
    if p <= 0.0:
        return -math.inf
    p = min(p, 1.0 - 1e-6)
    return math.log(p) - math.log1p(-p) - 1e-3


def _sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``torch.sigmoid`` of a 1-D tensor, every element through the vectorised kernel.

    torch's CPU kernels run the vectorised code on blocks of 2 x SIMD width and the scalar code on the tail;
    the two sigmoid implementations differ in the last bit for a few % of inputs. Padding to a multiple of 64
    keeps each score independent of its position (and equal to the full-heatmap sigmoid)."""
    n = x.numel()
    pad = (-n) % 64
    if pad:
        x = torch.cat([x, x.new_zeros(pad)])
    return torch.sigmoid(x)[:n]


def decode(
    outputs: dict[str, torch.Tensor],
    score_threshold: float | Sequence[float],
    stride: int,
    max_per_tile: int,
    peak_kernel: int = 3,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Heatmap peaks -> per-image (boxes_xyxy_px, scores, labels) before validity filtering and NMS.

    The score threshold comes first: only cells whose logit can reach it (a cheap comparison on the logits;
    the sigmoid is monotonic) are tested for being a peak (not below any neighbour in the ``peak_kernel``
    window, the max-pool test of CenterNet), and only those are passed through the sigmoid and tested
    exactly. Of the peaks at or above the threshold, the ``max_per_tile`` highest are kept, in descending
    score order (ties: lower class, then row-major cell first). This gives exactly the detections of the
    classic order (top ``max_per_tile`` peaks, then threshold): the peaks at or above the threshold are the
    highest peaks, so they are all among the top ``max_per_tile`` unless there are more of them, and then the
    top ``max_per_tile`` are all above it (tested against that order in ``tests/test_detector_predict.py``).
    Background cells, the vast majority, cost one comparison instead of a max-pool, a top-k and a sigmoid.

    ``score_threshold`` is one threshold for every class or one per class (heatmap channel order); per-class
    thresholds that are all equal decode exactly as the single threshold.
    """
    logits = outputs["heatmap"].float()
    n, k, h, w = logits.shape
    flat_logits = logits.reshape(n, -1)
    class_thr: torch.Tensor | None = None
    single = 0.0
    if isinstance(score_threshold, (int, float)):
        single = float(score_threshold)
    else:
        per_class = [float(t) for t in score_threshold]
        if len(per_class) != k:
            raise ValueError(f"{len(per_class)} class thresholds for a {k}-class heatmap")
        if len(set(per_class)) == 1:
            single = per_class[0]
        else:
            class_thr = torch.tensor(per_class, dtype=torch.float32, device=logits.device)
            cand = torch.tensor([_candidate_logit(t) for t in per_class], dtype=logits.dtype, device=logits.device)
    if class_thr is None:
        img, flat = (flat_logits >= _candidate_logit(single)).nonzero(as_tuple=True)
    else:
        img, flat = (logits >= cand.view(1, k, 1, 1)).reshape(n, -1).nonzero(as_tuple=True)
    vals = flat_logits[img, flat]
    cls, cell = flat // (h * w), flat % (h * w)
    cy, cx = cell // w, cell % w
    pad = peak_kernel // 2
    peak = torch.isfinite(vals)
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            if dy == 0 and dx == 0:
                continue
            # clamping to the edge repeats the cell itself or an in-window neighbour: same as -inf padding
            nb = logits[img, cls, (cy + dy).clamp(0, h - 1), (cx + dx).clamp(0, w - 1)]
            peak &= ~(vals < nb)
    img, flat, vals = img[peak], flat[peak], vals[peak]
    scores = _sigmoid(vals)
    above = scores >= (single if class_thr is None else class_thr[flat // (h * w)])
    img, flat, vals, scores = img[above], flat[above], vals[above], scores[above]
    size, offset = outputs["size"], outputs["offset"]
    out = []
    for i in range(n):
        mine = img == i
        order = torch.sort(vals[mine], descending=True, stable=True).indices[:max_per_tile]
        s = scores[mine][order]
        ids = flat[mine][order]
        labels = ids // (h * w)
        cell = ids % (h * w)
        cy, cx = cell // w, cell % w
        ox, oy = offset[i, 0, cy, cx].float(), offset[i, 1, cy, cx].float()
        log_wh = size[i, :, cy, cx].float().clamp(0.0, math.log(MAX_BOX_PX))
        bw, bh = torch.exp(log_wh[0]), torch.exp(log_wh[1])
        col = (cx.float() + ox) * stride
        row = (cy.float() + oy) * stride
        boxes = torch.stack([col - bw / 2, row - bh / 2, col + bw / 2, row + bh / 2], dim=1)
        out.append((boxes, s, labels.long()))
    return out


def postprocess(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None,
    height: int,
    width: int,
    nms_iou: float,
    class_agnostic: bool,
) -> Detections:
    """Drop detections centred outside the ``height`` x ``width`` tile or on invalid pixels, then NMS."""
    if scores.numel() == 0:
        return Detections.empty()
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
    if valid is not None:
        col = cx.floor().long().clamp(0, width - 1)
        row = cy.floor().long().clamp(0, height - 1)
        inside &= valid[row, col]
    boxes, scores, labels = boxes[inside], scores[inside], labels[inside]
    groups = torch.zeros_like(labels) if class_agnostic else labels
    keep = batched_nms(boxes, scores, groups, nms_iou)
    return Detections(
        boxes[keep].cpu().numpy().astype(np.float32),
        scores[keep].cpu().numpy().astype(np.float32),
        labels[keep].cpu().numpy().astype(np.int64),
    )


class Predictor:
    """Runs a model bundle on batches of tiles.

    Args:
        bundle: a loaded :class:`ModelBundle`.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        threads: CPU threads for torch (None leaves torch's setting alone).
    """

    def __init__(self, bundle: ModelBundle, device: str = "cpu", threads: int | None = None) -> None:
        self.bundle = bundle
        self.card = bundle.card
        self.device = resolve_device(device)
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        model = fuse_batchnorm(bundle.build_model())
        self.channels_last = self.device.type == "cpu"
        if self.device.type == "cpu":
            keep_activations_on_heap()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device).eval()
        norm = self.card.normalisation
        self.mean = torch.tensor(norm.mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(norm.std, dtype=torch.float32, device=self.device)
        self.stride = self.card.output_stride

    def class_thresholds(self, score_threshold: float | Sequence[float] | Mapping[str, float] | None) -> list[float]:
        """Per-class thresholds (card class order) for ``predict``'s ``score_threshold``."""
        card = self.card
        if score_threshold is None:
            return list(card.thresholds().values())
        if isinstance(score_threshold, (int, float)):
            return [float(score_threshold)] * len(card.classes)
        if isinstance(score_threshold, Mapping):
            missing = [c for c in card.classes if c not in score_threshold]
            if missing:
                raise ValueError(f"no score threshold for class(es) {missing}")
            return [float(score_threshold[c]) for c in card.classes]
        values = [float(t) for t in score_threshold]
        if len(values) != len(card.classes):
            raise ValueError(f"{len(values)} thresholds for the {len(card.classes)} classes of model {card.name}")
        return values

    def predict(
        self,
        images: np.ndarray,
        valid: np.ndarray | None = None,
        score_threshold: float | Sequence[float] | Mapping[str, float] | None = None,
    ) -> list[Detections]:
        """Detect objects in a batch of tiles.

        Args:
            images: float32 ``(N, C, H, W)`` in [0, 1] (C must equal the card's bands).
            valid: bool ``(N, H, W)``; None means every pixel is valid.
            score_threshold: keep peaks scoring at least this: one threshold, one per class (card order) or a
                class -> threshold mapping (default: the card's default operating point, per class).

        Returns:
            One :class:`Detections` per image, tile-local, sorted by descending score.
        """
        if images.ndim != 4:
            raise BandError(f"images must be (N, C, H, W); got shape {images.shape}")
        n, c, h, w = images.shape
        check_band_count(self.card, c)
        if valid is not None and valid.shape != (n, h, w):
            raise ValueError(f"valid mask shape {valid.shape} does not match images {(n, h, w)}")
        thr = self.class_thresholds(score_threshold)
        if n == 0:
            return []
        # pad to a multiple of 16 (the network's coarsest stride) with invalid pixels
        ph, pw = (-h) % 16, (-w) % 16
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        v = None if valid is None else torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)).to(self.device)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
            v = F.pad(
                v if v is not None else torch.ones((n, h, w), dtype=torch.bool, device=self.device), (0, pw, 0, ph)
            )
        with torch.inference_mode():
            v_norm = None if v is None or bool(v.all()) else v  # all valid: skip a pass that multiplies by 1
            outputs = self.model(normalise(x, v_norm, self.mean, self.std, self.channels_last))
            decoded = decode(outputs, thr, self.stride, self.card.decoding.max_per_tile, self.card.decoding.peak_kernel)
            d = self.card.decoding
            return [
                postprocess(boxes, scores, labels, None if v is None else v[i], h, w, d.nms_iou, d.class_agnostic_nms)
                for i, (boxes, scores, labels) in enumerate(decoded)
            ]
