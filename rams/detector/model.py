"""The detector network: a compact CenterNet-style centre-point detector for tiny nadir targets.

Why this design (measurements in ``docs/detector.md``):

* targets are 6-80 px long at the working GSD and most are tiny, so the heads run at **output stride 4**
  (a 6 px object still owns its own heatmap cell; anchor-based detectors at stride 8-32 lose them);
* one object is one peak in a per-class centre heatmap: no anchors, no proposal stage, and decoding is a
  3x3 max-pool plus top-k, so inference cost is almost entirely the convolutions;
* a small residual encoder (stride 2-16) with an FPN-style top-down path back to stride 4 gives a
  receptive field of well over 100 px (the largest shells and mortars) at a few GFLOP per megapixel,
  which is what the >= 10 Mpx/s on 2 CPU cores budget allows;
* built only from ``torch.nn`` / ``torchvision.ops`` blocks, any number of input bands, no pretrained
  weights (``weights=None`` everywhere: nothing is downloaded).

Outputs (all at stride 4): ``heatmap`` logits ``(N, K, H/4, W/4)``, ``size`` ``(N, 2, H/4, W/4)`` as
log(width_px), log(height_px) of the box in input pixels, and ``offset`` ``(N, 2, H/4, W/4)`` as the
sub-cell (dx, dy) of the centre in output cells.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.nn import functional as F
from torchvision.ops import Conv2dNormActivation

#: Name of the only architecture this module builds (recorded in model cards).
ARCHITECTURE = "rams-centernet"

#: Prior probability used to initialise the heatmap bias (sparse targets: most cells are background).
HEATMAP_PRIOR = 0.01


class ArchParams(BaseModel):
    """Architecture hyper-parameters of :class:`CenterNet` (stored in the model card)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    widths: tuple[int, int, int, int] = (16, 24, 48, 64)
    """Channels at strides 2, 4, 8 and 16."""
    depths: tuple[int, int, int] = (0, 2, 2)
    """Residual blocks after the strided conv that enters strides 4, 8 and 16."""
    neck_width: int = 48
    """Channels of the top-down path at strides 16 and 8."""
    head_width: int = 24
    """Channels at stride 4: lateral, fused features and the shared head conv."""
    block: str = "basic"
    """'basic' (two 3x3 convs, ResNet) or 'dw' (depthwise-separable inverted residual, MobileNetV2)."""
    context: bool = True
    """Add a dilated 3x3 context conv at stride 16 (enlarges the receptive field for 60-80 px shells)."""
    output_stride: int = Field(default=4)

    @field_validator("block")
    @classmethod
    def _check_block(cls, v: str) -> str:
        if v not in ("basic", "dw"):
            raise ValueError("block must be 'basic' or 'dw'")
        return v

    @field_validator("output_stride")
    @classmethod
    def _check_stride(cls, v: int) -> int:
        if v != 4:
            raise ValueError("output_stride must be 4 (the only stride this architecture builds)")
        return v


def _cna(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True, d: int = 1) -> nn.Module:
    return Conv2dNormActivation(
        cin,
        cout,
        kernel_size=k,
        stride=s,
        groups=groups,
        dilation=d,
        activation_layer=nn.ReLU if act else None,
        inplace=True,
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity shortcut."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = _cna(c, c, 3)
        self.conv2 = _cna(c, c, 3, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + x)


class DWBlock(nn.Module):
    """Inverted residual (MobileNetV2 style, expansion 2) with a depthwise 3x3 conv."""

    def __init__(self, c: int) -> None:
        super().__init__()
        mid = c * 2
        self.body = nn.Sequential(_cna(c, mid, 1), _cna(mid, mid, 3, groups=mid), _cna(mid, c, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(block: str, cin: int, cout: int, depth: int) -> nn.Sequential:
    """A strided 3x3 conv into the next stride, then ``depth`` residual blocks."""
    cls: type[nn.Module] = BasicBlock if block == "basic" else DWBlock
    return nn.Sequential(_cna(cin, cout, 3, 2), *[cls(cout) for _ in range(depth)])


class CenterNet(nn.Module):
    """Centre-heatmap detector: encoder to stride 16, top-down path to stride 4, a shared head.

    Args:
        in_channels: input bands (3 for RGB, 1 for thermal, n for multispectral).
        num_classes: heatmap channels, one per class in the card's label order.
        params: architecture hyper-parameters.
    """

    def __init__(self, in_channels: int, num_classes: int, params: ArchParams | None = None) -> None:
        super().__init__()
        p = params or ArchParams()
        w2, w4, w8, w16 = p.widths
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.params = p
        self.stem = _cna(in_channels, w2, 3, 2)
        self.s4 = _stage(p.block, w2, w4, p.depths[0])
        self.s8 = _stage(p.block, w4, w8, p.depths[1])
        self.s16 = _stage(p.block, w8, w16, p.depths[2])
        self.context = _cna(w16, w16, 3, 1, d=2) if p.context else nn.Identity()
        n, h = p.neck_width, p.head_width
        self.lat16 = _cna(w16, n, 1)
        self.lat8 = _cna(w8, n, 1)
        self.smooth8 = _cna(n, n, 3)
        self.reduce8 = _cna(n, h, 1)
        self.lat4 = _cna(w4, h, 1)
        self.smooth4 = _cna(h, h, 3)
        self.head_hm = nn.Conv2d(h, num_classes, 1)
        self.head_reg = nn.Conv2d(h, 4, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head_hm.weight, std=0.001)
        assert self.head_hm.bias is not None and self.head_reg.bias is not None
        nn.init.constant_(self.head_hm.bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        nn.init.normal_(self.head_reg.weight, std=0.001)
        with torch.no_grad():
            # start at a 12 px box (log 12 ~ 2.5) centred in its cell
            self.head_reg.bias.copy_(torch.tensor([math.log(12.0), math.log(12.0), 0.5, 0.5]))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map normalised images ``(N, C, H, W)`` (H, W multiples of 16) to raw head outputs."""
        c4 = self.s4(self.stem(x))
        c8 = self.s8(c4)
        c16 = self.context(self.s16(c8))
        p8 = self.smooth8(self.lat8(c8) + F.interpolate(self.lat16(c16), size=c8.shape[-2:], mode="nearest"))
        p4 = self.smooth4(self.lat4(c4) + F.interpolate(self.reduce8(p8), size=c4.shape[-2:], mode="nearest"))
        reg = self.head_reg(p4)
        return {"heatmap": self.head_hm(p4), "size": reg[:, :2], "offset": reg[:, 2:]}


def build_model(in_channels: int, num_classes: int, params: dict[str, Any] | ArchParams | None = None) -> CenterNet:
    """Build the detector from card parameters (a dict as stored in ``model.json``, or :class:`ArchParams`)."""
    p = params if isinstance(params, ArchParams) else ArchParams.model_validate(params or {})
    return CenterNet(in_channels, num_classes, p)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases)."""
    return sum(p.numel() for p in model.parameters())


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a Conv2d into the conv (in place; eval-mode maths).

    Used for inference only: the fused network computes the same function with one op fewer per layer.
    """
    for module in model.modules():
        children = list(module.named_children())
        for (name_a, a), (name_b, b) in zip(children, children[1:], strict=False):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                _fold(a, b)
                setattr(module, name_b, nn.Identity())
                del name_a
    return model


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    assert bn.running_var is not None and bn.running_mean is not None
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * scale + bn.bias
        conv.bias = nn.Parameter(new_bias)
