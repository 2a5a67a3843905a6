"""ImageNet ResNets (FreeTickets, Sup-tickets, random pruning, Early-Bird): ResNet v1.5 with torchvision's names.

The seeds' ImageNet `resnet.py` is torchvision-style ResNet v1.5, so this definition keeps torchvision's module
and parameter names (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`, ...): torchvision state
dicts load into it at width 1.0. Written here rather than taken from torchvision so that it also takes

- `width`: every channel count (stem, block inner and residual widths) multiplied, as the other families do;
- `conv_init`: the seeds' `-c` option, 'fan_out' ('classic', torchvision's default) or 'fan_in' ('fanin'),
  He-normal (ReLU gain) on every conv; BN gamma 1, beta 0; the fc keeps PyTorch's default init;
- `cfg`: the inner (prunable) widths per block, flattened in block order: [conv1 out] for a basic block,
  [conv1 out, conv2 out] for a bottleneck (Early-Bird channel pruning; residual widths are never pruned).

Stem: 7x7/2 conv (no bias), BN, ReLU, 3x3/2 maxpool. Stages of 64/128/256/512 planes, the first with stride 1,
the others stride 2 on the first block (on the bottleneck's 3x3 conv: v1.5). A block whose input and output
differ in shape gets a projection shortcut `downsample` = (1x1 conv with the stride, no bias; BN). Head: global
average pool, Linear. wide_resnet50_2 / wide_resnet101_2 double the bottleneck's inner width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.config.archs import IMAGENET_RESNETS, ArchParams

from .common import fixed_table, scaled
from .registry import register_model

__all__ = ["ARCHS", "BasicBlock", "Bottleneck", "ImageNetResNet", "ResNetSpec", "imagenet_resnet",
           "resnet_default_cfg"]

STAGE_PLANES = (64, 128, 256, 512)
CONV_INITS = ("fan_out", "fan_in")


@dataclass(frozen=True)
class ResNetSpec:
    """One ImageNet ResNet: block kind, blocks per stage, and the factor of the bottleneck's inner width."""

    kind: str  # "basic" or "bottleneck"
    blocks: tuple[int, int, int, int]
    inner: int = 1  # inner width = planes * inner (2 for the wide variants)


ARCHS: dict[str, ResNetSpec] = fixed_table({
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2)),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3)),
    "resnet152": ResNetSpec("bottleneck", (3, 8, 36, 3)),
    "wide_resnet50_2": ResNetSpec("bottleneck", (3, 4, 6, 3), inner=2),
    "wide_resnet101_2": ResNetSpec("bottleneck", (3, 4, 23, 3), inner=2),
}, IMAGENET_RESNETS, "ImageNet ResNet")


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    """The shortcut: None (identity) when the shapes agree, else (1x1 conv with `stride`, BN)."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """3x3 conv (stride) in_ch->inner, BN, ReLU, 3x3 conv inner->out_ch, BN, plus the shortcut, ReLU.

    `inner` (conv1's output) is the only width Early-Bird pruning changes; `out_ch` is the residual width.
    """

    expansion = 1

    def __init__(self, in_ch: int, inner: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(y + skip)


class Bottleneck(nn.Module):
    """1x1 conv in_ch->inner1, BN, ReLU, 3x3 conv (stride) inner1->inner2, BN, ReLU, 1x1 conv inner2->out_ch, BN,
    plus the shortcut, ReLU (v1.5: the stride sits on the 3x3). `inner1`/`inner2` are the prunable widths."""

    expansion = 4

    def __init__(self, in_ch: int, inner1: int, inner2: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, inner1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner1)
        self.conv2 = nn.Conv2d(inner1, inner2, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner2)
        self.conv3 = nn.Conv2d(inner2, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(y + skip)


def _spec(name: str) -> ResNetSpec:
    if name not in ARCHS:
        raise ValueError(f"unknown ImageNet ResNet '{name}' (one of {', '.join(ARCHS)})")
    return ARCHS[name]


def resnet_default_cfg(name: str, width: float = 1.0) -> list[int]:
    """The unpruned `cfg` of `name` at `width`: per block [inner] (basic) or [inner, inner] (bottleneck)."""
    spec = _spec(name)
    per_block = 1 if spec.kind == "basic" else 2
    cfg: list[int] = []
    for planes, count in zip(STAGE_PLANES, spec.blocks):
        cfg += [scaled(planes * spec.inner, width)] * (per_block * count)
    return cfg


class ImageNetResNet(nn.Module):
    """ResNet v1.5 for 224px ImageNet (any input of at least 32px works) with torchvision's parameter names.

    `cfg` (see `resnet_default_cfg`) sets the inner widths of every block, each in 1..its unpruned width;
    `width` still scales the stem and residual widths when `cfg` is given, so a pruned network is rebuilt with
    the recipe's width plus its cfg. The model records `cfg` (the one used) and `arch`.
    """

    def __init__(self, name: str, num_classes: int, width: float = 1.0, conv_init: str = "fan_out",
                 cfg: Sequence[int] | None = None) -> None:
        super().__init__()
        spec = _spec(name)
        if conv_init not in CONV_INITS:
            raise ValueError(f"conv_init must be 'fan_out' or 'fan_in', got {conv_init!r}")
        default = resnet_default_cfg(name, width)
        cfg = default if cfg is None else list(cfg)
        if len(cfg) != len(default):
            what = "one inner width per basic block" if spec.kind == "basic" else "two inner widths per bottleneck"
            raise ValueError(f"{name} cfg needs {len(default)} entries ({what}), got {len(cfg)}")
        for i, (v, full) in enumerate(zip(cfg, default)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= full:
                raise ValueError(f"{name} cfg[{i}] = {v!r} is not a channel count in 1..{full}")
        self.arch, self.kind, self.cfg = name, spec.kind, [int(v) for v in cfg]

        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = iter(self.cfg)
        in_ch = stem
        stages: list[nn.Sequential] = []
        for s, (base, count) in enumerate(zip(STAGE_PLANES, spec.blocks)):
            planes = scaled(base, width)
            blocks: list[nn.Module] = []
            for b in range(count):
                stride = 2 if s > 0 and b == 0 else 1
                if spec.kind == "basic":
                    out_ch = planes * BasicBlock.expansion
                    blocks.append(BasicBlock(in_ch, next(widths), out_ch, stride))
                else:
                    out_ch = planes * Bottleneck.expansion
                    blocks.append(Bottleneck(in_ch, next(widths), next(widths), out_ch, stride))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=conv_init, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def blocks(self) -> list[nn.Module]:
        """Every residual block, in order (the order of `cfg`)."""
        return [b for s in (self.layer1, self.layer2, self.layer3, self.layer4) for b in s]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def imagenet_resnet(name: str, num_classes: int, width: float = 1.0, conv_init: str = "fan_out",
                    cfg: Sequence[int] | None = None) -> ImageNetResNet:
    """Build ImageNet ResNet `name` (a key of ARCHS) with `num_classes` outputs and random weights."""
    return ImageNetResNet(name, num_classes, width, conv_init, cfg)


@register_model("imagenet_resnet")
def _imagenet_resnet(p: ArchParams, num_classes: int, width: float, **options: Any) -> nn.Module:
    return imagenet_resnet(p[0], num_classes, width, **options)
