"""Inference: peak decoding, validity and NMS post-processing, Predictor plumbing on a tiny bundle."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rams.detector.bundle import load_bundle, make_test_bundle
from rams.detector.predict import Detections, Predictor, decode, postprocess
from rams.errors import DeviceError


def _outputs(
    peaks: list[tuple[int, int, int, float, float, float, float, float]], k: int = 3, h: int = 16, w: int = 16
):
    """Head outputs with the given peaks: (cls, y, x, logit, off_x, off_y, width_px, height_px)."""
    hm = torch.full((1, k, h, w), -8.0)
    size = torch.zeros(1, 2, h, w)
    off = torch.zeros(1, 2, h, w)
    for c, y, x, logit, ox, oy, bw, bh in peaks:
        hm[0, c, y, x] = logit
        off[0, :, y, x] = torch.tensor([ox, oy])
        size[0, :, y, x] = torch.tensor([math.log(bw), math.log(bh)])
    return {"heatmap": hm, "size": size, "offset": off}


def test_decode_places_boxes_exactly() -> None:
    out = _outputs([(1, 5, 7, 2.0, 0.25, 0.5, 10.0, 6.0), (2, 12, 3, 0.0, 0.0, 0.0, 8.0, 8.0)])
    [(boxes, scores, labels)] = decode(out, 0.3, stride=4, max_per_tile=100)
    assert labels.tolist() == [1, 2]
    np.testing.assert_allclose(scores.numpy(), [1 / (1 + math.exp(-2.0)), 0.5], rtol=1e-6)
    # centre col (7 + 0.25) * 4 = 29, row (5 + 0.5) * 4 = 22; 10 x 6 px
    np.testing.assert_allclose(boxes[0].numpy(), [24.0, 19.0, 34.0, 25.0], atol=1e-4)
    np.testing.assert_allclose(boxes[1].numpy(), [8.0, 44.0, 16.0, 52.0], atol=1e-4)
    # threshold applies to the sigmoid peak value
    [(b2, s2, _)] = decode(out, 0.6, stride=4, max_per_tile=100)
    assert len(s2) == 1


def test_only_local_maxima_are_peaks() -> None:
    out = _outputs([(0, 5, 5, 3.0, 0, 0, 8, 8), (0, 5, 6, 2.0, 0, 0, 8, 8), (0, 5, 9, 2.0, 0, 0, 8, 8)])
    [(_, scores, _)] = decode(out, 0.1, stride=4, max_per_tile=100)
    assert len(scores) == 2  # (5, 6) is a shoulder of (5, 5), not a peak; (5, 9) is its own peak


def test_postprocess_drops_invalid_centres_and_suppresses_overlaps() -> None:
    boxes = torch.tensor([[10, 10, 20, 20], [11, 11, 21, 21], [40, 40, 50, 50], [70, 10, 80, 20]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 1, 0, 0])
    valid = torch.ones(64, 96, dtype=torch.bool)
    valid[:, 32:] = False  # centres at col 45 and 75 are on invalid ground
    det = postprocess(boxes, scores, labels, valid, 64, 96, nms_iou=0.5, class_agnostic=True)
    assert det.labels.tolist() == [0] and det.scores.tolist() == pytest.approx([0.9])
    det = postprocess(boxes, scores, labels, valid, 64, 96, nms_iou=0.5, class_agnostic=False)
    assert sorted(det.labels.tolist()) == [0, 1]  # per-class NMS keeps the overlapping other class
    det = postprocess(boxes, scores, labels, None, 64, 64, nms_iou=0.5, class_agnostic=True)
    assert len(det) == 2  # the box centred at col 75 lies outside a 64-wide tile
    assert det.boxes_xyxy_px.dtype == np.float32 and det.labels.dtype == np.int64


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    folder: Path = tmp_path_factory.mktemp("b") / "tiny"
    make_test_bundle(folder, classes=("pmn", "tm62", "shell"))
    return Predictor(load_bundle(folder), device="cpu", threads=1)


def test_predictor_contract(predictor: Predictor) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 100, 130), dtype=np.float32)  # not a multiple of 16: padded inside
    dets = predictor.predict(images, None, 0.3)
    assert len(dets) == 2
    for d in dets:
        assert isinstance(d, Detections) and len(d) > 0
        assert d.boxes_xyxy_px.shape == (len(d), 4) and d.boxes_xyxy_px.dtype == np.float32
        assert d.scores.dtype == np.float32 and d.labels.dtype == np.int64
        assert (np.diff(d.scores) <= 0).all() and (d.scores >= 0.3).all()
        assert set(d.labels.tolist()) <= {0, 1, 2}
        cx = (d.boxes_xyxy_px[:, 0] + d.boxes_xyxy_px[:, 2]) / 2
        cy = (d.boxes_xyxy_px[:, 1] + d.boxes_xyxy_px[:, 3]) / 2
        assert (cx >= 0).all() and (cx < 130).all() and (cy >= 0).all() and (cy < 100).all()
    again = predictor.predict(images, None, 0.3)
    for a, b in zip(dets, again, strict=True):  # deterministic
        assert np.array_equal(a.boxes_xyxy_px, b.boxes_xyxy_px) and np.array_equal(a.scores, b.scores)
    higher = predictor.predict(images, None, 0.6)
    assert len(higher[0]) < len(dets[0])


def test_predictor_drops_detections_on_invalid_pixels(predictor: Predictor) -> None:
    rng = np.random.default_rng(1)
    images = rng.random((2, 3, 128, 128), dtype=np.float32)
    valid = np.ones((2, 128, 128), bool)
    valid[0, :, 64:] = False
    valid[1] = False
    images[~np.broadcast_to(valid[:, None], images.shape)] = 0.0
    d0, d1 = predictor.predict(images, valid, 0.3)
    assert len(d1) == 0
    assert len(d0) > 0
    cx = (d0.boxes_xyxy_px[:, 0] + d0.boxes_xyxy_px[:, 2]) / 2
    assert (cx < 64).all()


def test_predictor_empty_batch_and_cuda_absent(predictor: Predictor) -> None:
    assert predictor.predict(np.zeros((0, 3, 64, 64), np.float32), None, 0.5) == []
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            Predictor(predictor.bundle, device="cuda")


def _decode_topk_first(
    outputs: dict[str, torch.Tensor], score_threshold: float, stride: int, max_per_tile: int, peak_kernel: int = 3
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The classic CenterNet order (decode before rams 2026-11-27): 3x3 max-pool peaks over the whole
    heatmap, top ``max_per_tile`` peaks, sigmoid, then the score threshold. Kept as the reference."""
    from torch.nn import functional as F

    from rams.detector.predict import MAX_BOX_PX

    logits = outputs["heatmap"].float()
    n, k, h, w = logits.shape
    pooled = F.max_pool2d(logits, peak_kernel, stride=1, padding=peak_kernel // 2)
    peaks = logits.masked_fill(logits < pooled, float("-inf")).reshape(n, -1)
    top_logits, idx = torch.topk(peaks, min(max_per_tile, peaks.shape[1]), dim=1, sorted=True)
    scores = torch.sigmoid(top_logits)
    size, offset = outputs["size"], outputs["offset"]
    out = []
    for i in range(n):
        keep = (scores[i] >= score_threshold) & torch.isfinite(top_logits[i])
        s, ids = scores[i][keep], idx[i][keep]
        labels, cell = ids // (h * w), ids % (h * w)
        cy, cx = cell // w, cell % w
        ox, oy = offset[i, 0, cy, cx].float(), offset[i, 1, cy, cx].float()
        log_wh = size[i, :, cy, cx].float().clamp(0.0, math.log(MAX_BOX_PX))
        bw, bh = torch.exp(log_wh[0]), torch.exp(log_wh[1])
        col, row = (cx.float() + ox) * stride, (cy.float() + oy) * stride
        out.append((torch.stack([col - bw / 2, row - bh / 2, col + bw / 2, row + bh / 2], dim=1), s, labels))
    return out


@pytest.fixture(scope="module")
def real_outputs() -> tuple[dict[str, torch.Tensor], torch.Tensor, Predictor]:
    """Head outputs of the shipped default model on synthetic chips with mines, confusers and a mosaic edge."""
    from rams.detector.predict import normalise
    from rams.synth.chips import ChipSampler

    pred = Predictor(load_bundle("default"), device="cpu", threads=1)
    sampler = ChipSampler(seed=11, chip_size_px=256, positive_fraction=0.7, hard_negative_fraction=0.2,
                          nodata_fraction=0.3, ground_pool=3, plate_px=320)
    chips = [sampler[i] for i in range(8)]
    x = torch.from_numpy(np.stack([c.image for c in chips]))
    v = torch.from_numpy(np.stack([c.valid for c in chips]))
    with torch.inference_mode():
        outputs = pred.model(normalise(x, v, pred.mean, pred.std, pred.channels_last))
    return outputs, v, pred


@pytest.mark.parametrize("max_per_tile", [1000, 25, 3])
def test_threshold_first_decode_equals_topk_first(real_outputs, max_per_tile: int) -> None:
    """Applying the score threshold before the peak test and the top-k gives exactly (bitwise) the boxes,
    scores and labels of the classic top-k-first order, at the card's operating points and far below them."""
    outputs, valid, pred = real_outputs
    card = pred.card
    thresholds = [0.0, 0.01, 0.1, 0.3, *sorted(card.operating_points.values()), 0.9, 1.0]
    n_dets = {}

    def same_scores(a: np.ndarray, b: np.ndarray) -> bool:
        if max_per_tile == 1000:  # the card's value: bitwise
            return np.array_equal(a, b)
        # The reference's (8, k) sigmoid sends its last (8 k) % 32 values through torch's scalar kernel, which
        # differs from the vectorised one in the last bit; decode() sends every score through the vectorised one.
        return a.shape == b.shape and bool((np.abs(a - b) <= np.spacing(np.maximum(a, b))).all())

    for thr in thresholds:
        new = decode(outputs, thr, pred.stride, max_per_tile, card.decoding.peak_kernel)
        ref = _decode_topk_first(outputs, thr, pred.stride, max_per_tile, card.decoding.peak_kernel)
        n_dets[thr] = sum(len(s) for _, s, _ in ref)
        for (b1, s1, l1), (b2, s2, l2) in zip(new, ref, strict=True):
            assert torch.equal(l1, l2) and torch.equal(b1, b2), f"threshold {thr}"
            assert same_scores(s1.numpy(), s2.numpy()), f"threshold {thr}"
        for i, ((b1, s1, l1), (b2, s2, l2)) in enumerate(zip(new, ref, strict=True)):  # and after NMS
            d1 = postprocess(b1, s1, l1, valid[i], 256, 256, card.decoding.nms_iou, True)
            d2 = postprocess(b2, s2, l2, valid[i], 256, 256, card.decoding.nms_iou, True)
            assert np.array_equal(d1.boxes_xyxy_px, d2.boxes_xyxy_px) and np.array_equal(d1.labels, d2.labels)
            assert same_scores(d1.scores, d2.scores)
    # not vacuous: the operating points find things, and at low thresholds the per-tile cap binds
    assert n_dets[card.operating_points[card.default_operating_point]] > 0
    assert n_dets[0.0] == 8 * max_per_tile if max_per_tile < 1000 else n_dets[0.0] > n_dets[0.3]
    assert n_dets[1.0] <= n_dets[0.9]


def test_per_class_thresholds_decode_each_class_at_its_own_threshold(real_outputs) -> None:
    """Per-class thresholds keep exactly, for each class, the peaks a single threshold at that class's value
    keeps; all-equal per-class thresholds are the single threshold, bitwise."""
    outputs, valid, pred = real_outputs
    card = pred.card
    k = len(card.classes)
    stride, cap, kern = pred.stride, card.decoding.max_per_tile, card.decoding.peak_kernel
    per_class = [0.1 + 0.08 * (i % 5) for i in range(k)]  # 0.10 ... 0.42, differing between classes
    mixed = decode(outputs, per_class, stride, cap, kern)
    singles = {t: decode(outputs, t, stride, cap, kern) for t in set(per_class)}
    total = 0
    for i, (boxes, scores, labels) in enumerate(mixed):
        for c in range(k):
            sb, ss, sl = singles[per_class[c]][i]
            want = sl == c
            got = labels == c
            assert torch.equal(boxes[got], sb[want]) and torch.equal(scores[got], ss[want]), (i, c)
            assert bool((scores[got] >= per_class[c]).all())
            total += int(got.sum())
    assert total > 0 and len({int(c) for _, _, lab in mixed for c in lab}) > 1  # not vacuous
    for thr in (0.3, card.default_threshold):
        a = decode(outputs, [thr] * k, stride, cap, kern)
        b = decode(outputs, thr, stride, cap, kern)
        for (b1, s1, l1), (b2, s2, l2) in zip(a, b, strict=True):
            assert torch.equal(b1, b2) and torch.equal(s1, s2) and torch.equal(l1, l2)
    with pytest.raises(ValueError, match="class thresholds"):
        decode(outputs, [0.5, 0.5], stride, cap, kern)


def test_predictor_takes_class_thresholds_in_every_form(predictor: Predictor) -> None:
    """``predict`` takes one threshold, a list in card order or a class -> threshold mapping; None is the card's
    default operating point per class."""
    card = predictor.card
    rng = np.random.default_rng(3)
    x = rng.random((2, 3, 64, 64), dtype=np.float32)
    as_list = [0.2 + 0.01 * i for i in range(len(card.classes))]
    as_map = dict(zip(card.classes, as_list, strict=True))
    a = predictor.predict(x, None, as_list)
    b = predictor.predict(x, None, as_map)
    for da, db in zip(a, b, strict=True):
        assert np.array_equal(da.scores, db.scores) and np.array_equal(da.labels, db.labels)
    assert predictor.class_thresholds(None) == list(card.thresholds().values())
    assert predictor.class_thresholds(0.4) == [0.4] * len(card.classes)
    with pytest.raises(ValueError, match="no score threshold for class"):
        predictor.predict(x, None, {card.classes[0]: 0.5})


_HEAP_PROBE = """
import sys
import numpy as np
from rams.detector.predict import keep_activations_on_heap

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))

if sys.argv[1] == "tuned":
    assert keep_activations_on_heap() and keep_activations_on_heap()  # idempotent
a = np.ones(96 * 2**20 // 8)  # a 96 MB activation-sized block, touched
held = rss_mb()
del a
print(held - rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning: Linux only")
def test_activation_buffers_stay_on_the_heap_between_forward_passes() -> None:
    """With glibc's defaults a freed 96 MB block is unmapped (the next forward pass page-faults it in again);
    once the predictor has tuned the allocator it is kept for reuse. Measured in fresh processes by RSS."""
    def released(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _HEAP_PROBE, mode], check=True, capture_output=True, text=True)
        return int(out.stdout.strip().splitlines()[-1])

    assert released("default") >= 80
    assert released("tuned") <= 8


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning: Linux only")
def test_keep_heap_can_be_switched_off() -> None:
    """RAMS_KEEP_HEAP=0 leaves glibc's allocator alone (for host processes that embed rams)."""
    code = "from rams.detector.predict import keep_activations_on_heap as k; print(k())"
    for value, want in (("0", "False"), ("1", "True")):
        env = dict(os.environ, RAMS_KEEP_HEAP=value)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
        assert out.stdout.strip().splitlines()[-1] == want
