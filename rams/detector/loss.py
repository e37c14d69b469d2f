"""Training targets and losses of the centre-heatmap detector (CenterNet, Zhou et al. 2019).

Targets at output stride ``s`` for each sample:

* ``heatmap`` (K, H/s, W/s): a Gaussian bump per object on its class channel, exactly 1 at the cell holding
  the object's centre, sigma growing with the object's size (at least half a cell, so a 6 px mine still
  has a defined peak);
* ``ignore`` (H/s, W/s): 0 over objects flagged ``ignore`` (barely visible, cut by the chip edge, classes
  the model does not learn) so they are taught neither as objects nor as background;
* ``size`` (2, H/s, W/s): log(width_px), log(height_px), and ``offset`` (2, H/s, W/s): the centre's
  position inside its cell, both only where ``reg_mask`` is 1 (the centre cells).

Losses: penalty-reduced pixel-wise focal loss on the heatmap (alpha 2, beta 4), L1 on log-size and offset,
each normalised by the number of objects in the batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from rams.detector.datasets import Sample

#: sigma (in output cells) = max(MIN_SIGMA, SIGMA_PER_SIZE * geometric-mean side in cells)
MIN_SIGMA = 0.5
SIGMA_PER_SIZE = 0.18


def encode_targets(s: Sample, num_classes: int, stride: int) -> dict[str, np.ndarray]:
    """Dense training targets of one sample (see the module doc)."""
    _, h, w = s.image.shape
    oh, ow = h // stride, w // stride
    heatmap = np.zeros((num_classes, oh, ow), np.float32)
    ignore = np.ones((oh, ow), np.float32)
    size = np.zeros((2, oh, ow), np.float32)
    offset = np.zeros((2, oh, ow), np.float32)
    reg_mask = np.zeros((oh, ow), np.float32)
    ys = np.arange(oh, dtype=np.float32)[:, None]
    xs = np.arange(ow, dtype=np.float32)[None, :]
    for b, ign in zip(s.boxes_xyxy_px, s.ignore, strict=True):
        if ign:
            c0, r0 = int(math.floor(b[0] / stride)), int(math.floor(b[1] / stride))
            c1, r1 = int(math.ceil(b[2] / stride)), int(math.ceil(b[3] / stride))
            ignore[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = 0.0
    centres = []
    for b, lab, ign in zip(s.boxes_xyxy_px, s.labels, s.ignore, strict=True):
        if ign:
            continue
        bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
        if bw <= 0 or bh <= 0:
            continue
        cx, cy = (b[0] + b[2]) / 2 / stride, (b[1] + b[3]) / 2 / stride
        ci, ri = int(math.floor(cx)), int(math.floor(cy))
        if not (0 <= ci < ow and 0 <= ri < oh):
            continue
        sigma = max(MIN_SIGMA, SIGMA_PER_SIZE * math.sqrt(bw * bh) / stride)
        r = int(math.ceil(3 * sigma))
        y0, y1, x0, x1 = max(ri - r, 0), min(ri + r + 1, oh), max(ci - r, 0), min(ci + r + 1, ow)
        g = np.exp(-((xs[:, x0:x1] - ci) ** 2 + (ys[y0:y1] - ri) ** 2) / (2 * sigma * sigma))
        np.maximum(heatmap[lab, y0:y1, x0:x1], g, out=heatmap[lab, y0:y1, x0:x1])
        size[:, ri, ci] = (math.log(bw), math.log(bh))
        offset[:, ri, ci] = (cx - ci, cy - ri)
        reg_mask[ri, ci] = 1.0
        centres.append((ri, ci))
    for ri, ci in centres:  # a visible object inside an ignored one is still taught
        ignore[ri, ci] = 1.0
    return {"heatmap": heatmap, "ignore": ignore, "size": size, "offset": offset, "reg_mask": reg_mask}


def focal_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CenterNet penalty-reduced focal loss, summed (normalise outside). ``mask`` (N, 1, h, w) or broadcastable."""
    pos = target.eq(1.0).float()
    neg = 1.0 - pos
    logp = F.logsigmoid(logits)
    log1mp = F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = logp * (1 - p) ** 2 * pos
    neg_loss = log1mp * p**2 * (1 - target) ** 4 * neg
    return -((pos_loss + neg_loss) * mask).sum()


def detection_loss(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    size_weight: float = 1.0,
    offset_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Total and component losses of a batch (all normalised by the number of objects, at least 1)."""
    hm_t = targets["heatmap"]
    mask = targets["ignore"].unsqueeze(1)
    reg_mask = targets["reg_mask"].unsqueeze(1)
    n = reg_mask.sum().clamp(min=1.0)
    hm = focal_loss(outputs["heatmap"].float(), hm_t, mask) / n
    size = (F.l1_loss(outputs["size"].float(), targets["size"], reduction="none") * reg_mask).sum() / n
    off = (F.l1_loss(outputs["offset"].float(), targets["offset"], reduction="none") * reg_mask).sum() / n
    total = hm + size_weight * size + offset_weight * off
    return {"loss": total, "heatmap": hm, "size": size, "offset": off}
