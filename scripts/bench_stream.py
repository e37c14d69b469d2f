#!/usr/bin/env python
"""Experiment (issue 6): row-streaming inference, the detector run down a stripe with no vertical tile overlap.

A negative result, kept so that it can be rerun: streaming is exact but, as built here, no faster per mosaic
pixel than 1536 px tiles on 2 CPU cores (docs/benchmarks.md, "Row-streaming inference"). ::

    .venv/bin/python scripts/bench_stream.py --threads 2 --rounds 6


Tiles cut the mosaic into squares that overlap so that an object on a seam is whole in one of them; the
overlap is paid in model time (1.14x at 1536 px tiles with 96 px overlap). The network is fully convolutional
(convolutions, ReLUs, residual sums, nearest 2x upsampling; no pooling over the image, no attention), so its
output rows depend only on a bounded band of input rows. :class:`StreamedCenterNet` exploits that: a stripe of
the mosaic is pushed in bands of rows, top to bottom, and every layer keeps only the few rows its kernel still
needs from the band before (its *halo*). Each input row goes through the network once, and the output is the
output of the network run on the whole stripe at once (top and bottom zero padding included), to float
rounding (``tests/test_stream.py``). Columns are not streamed: a stripe is as wide as a tile and stripes
overlap side by side as tiles do.

What it costs: each 3x3 (or strided) layer appends the new rows to the halo it kept, a copy of every
activation once more (``torch.cat``); the profiler puts that at ~10 % of the forward pass, about what the tile
overlap costs. Untried: let each producer write its ReLU (``clamp_min(out=...)``) straight into its consumer's
preallocated row buffer, which would remove most of the copies.

Only the architecture built by :func:`rams.detector.model.build_model` (``rams-centernet``, basic or dw blocks,
with or without the context conv) is supported, after :func:`~rams.detector.model.fuse_batchnorm`.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rams.detector.model import BasicBlock, CenterNet, DWBlock

#: The coarsest stride: the rows of a band (and the stripe's width) must be multiples of it.
STREAM_ALIGN = 16


class _Rows:
    """A queue of rows ``(N, C, h, W)`` with the absolute index of its first row."""

    def __init__(self) -> None:
        self.t: torch.Tensor | None = None
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + (0 if self.t is None else int(self.t.shape[2]))

    def append(self, x: torch.Tensor) -> None:
        if x.shape[2] == 0:
            if self.t is None:
                self.t = x
            return
        self.t = x if self.t is None or self.t.shape[2] == 0 else torch.cat([self.t, x], dim=2)

    def take(self, n: int) -> torch.Tensor:
        """Remove and return the first ``n`` rows."""
        assert self.t is not None
        head, self.t = self.t[:, :, :n], self.t[:, :, n:]
        self.start += n
        return head

    def drop_before(self, row: int) -> None:
        k = row - self.start
        if k > 0 and self.t is not None:
            self.t = self.t[:, :, k:]
            self.start = row


class _Conv:
    """A convolution (+ ReLU) over a row stream: output rows as soon as their input window has arrived."""

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        kh, kw = conv.kernel_size  # type: ignore[misc]
        sh, sw = conv.stride  # type: ignore[misc]
        dh, dw = conv.dilation  # type: ignore[misc]
        ph, pw = conv.padding  # type: ignore[misc]
        if kh != kw or sh != sw or dh != dw or ph != pw or conv.padding_mode != "zeros":
            raise ValueError("streaming needs square kernels, strides, dilations and zero padding")
        self.weight, self.bias = conv.weight, conv.bias
        self.k, self.s, self.d, self.p, self.groups = kh, sh, dh, ph, conv.groups
        self.span = self.d * (self.k - 1) + 1
        self.relu = relu
        self.pointwise = self.k == 1 and self.s == 1 and self.p == 0
        self.buf = _Rows()
        self.next_out = 0
        self.started = False

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, stride=self.s, padding=(0, self.p), dilation=self.d,
                     groups=self.groups)
        return F.relu_(y) if self.relu else y

    def push(self, x: torch.Tensor, end: bool) -> torch.Tensor:
        if self.pointwise:
            return self._run(x) if x.shape[2] else _empty_out(x, self.weight.shape[0])
        if not self.started:
            self.started = True
            self.buf.start = -self.p
            self.buf.append(_zero_rows(x, self.p))
        self.buf.append(x)
        if end:
            self.buf.append(_zero_rows(x, self.p))
        # output row o reads input rows [o*s - p, o*s - p + span)
        last = (self.buf.end + self.p - self.span) // self.s
        n = last - self.next_out + 1
        if n <= 0:
            return _empty_out(x, self.weight.shape[0], self.s)
        assert self.buf.t is not None
        r0 = self.next_out * self.s - self.p - self.buf.start
        r1 = last * self.s - self.p + self.span - self.buf.start
        y = self._run(self.buf.t[:, :, r0:r1])
        self.next_out = last + 1
        self.buf.drop_before(self.next_out * self.s - self.p)
        return y


def _zero_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` rows of zeros shaped and laid out (channels last or not) like ``x``."""
    fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    z = x.new_zeros((x.shape[0], x.shape[1], n, x.shape[3]))
    return z.contiguous(memory_format=fmt)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.ndim == 4 and x.shape[1] > 1 and x.stride(1) == 1


def _empty_out(x: torch.Tensor, channels: int, stride: int = 1) -> torch.Tensor:
    w = x.shape[3] if stride == 1 else (x.shape[3] - 1) // stride + 1
    return x.new_zeros(x.shape[0], channels, 0, w)


class _Add:
    """``a + b`` (then ReLU) of two row streams that start at the same row and run at different speeds."""

    def __init__(self, relu: bool) -> None:
        self.a, self.b = _Rows(), _Rows()
        self.relu = relu

    def push(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.a.append(a)
        self.b.append(b)
        n = min(self.a.end, self.b.end) - self.a.start
        if n <= 0:
            return a[:, :, :0]
        y = self.a.take(n) + self.b.take(n)
        return F.relu_(y) if self.relu else y


class _UpAdd:
    """``lateral + nearest_2x(top)`` of a full-resolution and a half-resolution row stream."""

    def __init__(self) -> None:
        self.lat, self.top = _Rows(), _Rows()

    def push(self, lat: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        self.lat.append(lat)
        self.top.append(top)
        n = min(self.lat.end, 2 * self.top.end) - self.lat.start
        n -= n % 2  # whole pairs of lateral rows per top row
        if n <= 0:
            return lat[:, :, :0]
        t = self.top.take(n // 2)
        up = F.interpolate(t, scale_factor=2.0, mode="nearest")
        return self.lat.take(n) + up


class _Seq:
    def __init__(self, nodes: list[Any]) -> None:
        self.nodes = nodes

    def push(self, x: torch.Tensor, end: bool) -> torch.Tensor:
        for node in self.nodes:
            x = node.push(x, end)
        return x


class _Residual:
    """``body(x) + x`` (then ReLU): the basic and dw blocks."""

    def __init__(self, body: _Seq, relu: bool) -> None:
        self.body = body
        self.add = _Add(relu)

    def push(self, x: torch.Tensor, end: bool) -> torch.Tensor:
        return self.add.push(self.body.push(x, end), x)


def _cna(module: nn.Module) -> _Conv:
    """A fused ``Conv2dNormActivation`` (conv, identity, optional ReLU)."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != 1 or norms:
        raise ValueError("streaming needs a BatchNorm-fused model (rams.detector.model.fuse_batchnorm)")
    return _Conv(convs[0], relu=any(isinstance(m, nn.ReLU) for m in module.modules()))


def _node(module: nn.Module) -> Any:
    if isinstance(module, BasicBlock):
        return _Residual(_Seq([_cna(module.conv1), _cna(module.conv2)]), relu=True)
    if isinstance(module, DWBlock):
        return _Residual(_Seq([_cna(m) for m in module.body]), relu=False)
    if isinstance(module, nn.Identity):
        return _Seq([])
    if isinstance(module, nn.Sequential) and not any(isinstance(m, nn.Conv2d) for m in module.children()):
        return _Seq([_node(m) for m in module])
    return _cna(module)


class StreamedCenterNet:
    """One pass of a fused :class:`CenterNet` down a stripe, fed in bands of rows.

    ``push(band)`` takes the next rows of the stripe (normalised, ``(N, C, h, W)``, ``h`` and ``W`` multiples of
    16) and returns the head outputs ready so far, as :meth:`CenterNet.forward` does (stride 4 rows); they lag
    the input by the network's reach. ``push(band, end=True)`` marks the stripe's last rows (zero padding below,
    as at a tile's lower edge) and returns everything left. A fresh object starts a fresh stripe.
    """

    def __init__(self, model: CenterNet) -> None:
        self.stem = _cna(model.stem)
        self.s4, self.s8, self.s16 = _node(model.s4), _node(model.s8), _node(model.s16)
        self.context = _node(model.context)
        self.lat16, self.lat8, self.lat4 = _cna(model.lat16), _cna(model.lat8), _cna(model.lat4)
        self.smooth8, self.reduce8, self.smooth4 = _cna(model.smooth8), _cna(model.reduce8), _cna(model.smooth4)
        self.up8, self.up4 = _UpAdd(), _UpAdd()
        self.head_hm = _Conv(model.head_hm, relu=False)
        self.head_reg = _Conv(model.head_reg, relu=False)
        self.rows_in = 0
        self.ended = False

    def push(self, x: torch.Tensor, end: bool = False) -> dict[str, torch.Tensor]:
        if self.ended:
            raise RuntimeError("this stripe has ended; start a new StreamedCenterNet")
        if x.shape[2] % STREAM_ALIGN or x.shape[3] % STREAM_ALIGN:
            raise ValueError(f"bands must be multiples of {STREAM_ALIGN} rows and columns; got {tuple(x.shape[2:])}")
        self.rows_in += int(x.shape[2])
        self.ended = end
        c4 = self.s4.push(self.stem.push(x, end), end)
        c8 = self.s8.push(c4, end)
        c16 = self.context.push(self.s16.push(c8, end), end)
        p8 = self.smooth8.push(self.up8.push(self.lat8.push(c8, end), self.lat16.push(c16, end)), end)
        p4 = self.smooth4.push(self.up4.push(self.lat4.push(c4, end), self.reduce8.push(p8, end)), end)
        reg = self.head_reg.push(p4, end)
        return {"heatmap": self.head_hm.push(p4, end), "size": reg[:, :2], "offset": reg[:, 2:]}


def _measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    import statistics
    import time

    from rams.detector.bundle import load_bundle
    from rams.detector.model import fuse_batchnorm
    from rams.detector.predict import keep_activations_on_heap

    torch.set_num_threads(args.threads)
    keep_activations_on_heap()
    card_overlap = 96
    model = fuse_batchnorm(load_bundle(args.model).build_model()).eval().to(memory_format=torch.channels_last)
    tile = args.tile
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        # exactness first: the streamed stripe against one forward pass over the whole stripe
        torch.manual_seed(0)
        x = torch.rand(1, 3, 2 * tile, tile).contiguous(memory_format=torch.channels_last)
        ref = model(x)
        s = StreamedCenterNet(model)
        outs = [s.push(x[:, :, r : r + 256], end=r + 256 >= x.shape[2]) for r in range(0, x.shape[2], 256)]
        diff = max(float((torch.cat([o[k] for o in outs], 2) - ref[k]).abs().max()) for k in ref)
        configs: list[tuple[str, int, int]] = [("tiles", tile, tile)] + [
            ("stream", w, b) for w, b in ((tile, 256), (tile, 512), (2 * tile, 256))
        ]
        data = {w: torch.rand(1, 3, args.height, w).contiguous(memory_format=torch.channels_last)
                for w in {c[1] for c in configs}}

        def run(kind: str, width: int, band: int) -> float:
            xs = data[width]
            h = xs.shape[2]
            t0 = time.perf_counter()
            if kind == "tiles":
                for r in range(0, h, tile):
                    model(xs[:, :, r : r + tile])
            else:
                st = StreamedCenterNet(model)
                for r in range(0, h, band):
                    st.push(xs[:, :, r : r + band], end=r + band >= h)
            return h * width / 1e6 / (time.perf_counter() - t0)

        for c in configs:
            run(*c)  # warm-up (oneDNN primitives)
        rates: dict[tuple[str, int, int], list[float]] = {c: [] for c in configs}
        for _ in range(args.rounds):  # alternated, so that the VM's slow stretches hit every config alike
            for c in configs:
                rates[c].append(run(*c))
        for (kind, width, band), r in rates.items():
            # model pixels per mosaic pixel: tiles overlap both ways, stripes only side by side
            factor = (tile / (tile - card_overlap)) ** 2 if kind == "tiles" else width / (width - card_overlap)
            med = statistics.median(r)
            rows.append({"kind": kind, "width": width, "band": band, "model_mpx_s": med,
                         "min": min(r), "max": max(r), "factor": factor, "mosaic_mpx_s": med / factor})
    print(f"streamed vs whole-stripe forward, max |difference| over all head outputs: {diff:.3g}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=1536, help="tile side and stripe width (px)")
    parser.add_argument("--height", type=int, default=1536 * 6, help="stripe height per measurement (px)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    rows = _measure(args)
    base = next(r["mosaic_mpx_s"] for r in rows if r["kind"] == "tiles")
    print(f"\n{args.threads} threads, random input, {args.rounds} alternated rounds of {args.height} rows each\n")
    print("| run | width px | band rows | model Mpx/s median (min-max) | model px per mosaic px "
          "| mosaic Mpx/s | vs tiles |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        band = "-" if r["kind"] == "tiles" else str(r["band"])
        print(f"| {r['kind']} | {r['width']} | {band} | {r['model_mpx_s']:.1f} ({r['min']:.1f}-{r['max']:.1f}) "
              f"| {r['factor']:.3f} | {r['mosaic_mpx_s']:.1f} | {r['mosaic_mpx_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()
