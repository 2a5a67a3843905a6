"""The random-pruning (and Sup-tickets) `cifar_resnet_A[_B]`: post-activation basic-block ResNet, depth 6n+2.

Three stages of widths B, 2B, 4B (B = 16 by default); the names `conv`, `blocks`, `fc` match the original,
whose layer-wise rules look them up ('conv.weight' is the stem, 'fc.weight' the classifier).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.archs import ArchParams

from .common import scaled
from .registry import register_model


class CifarBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN plus the shortcut (1x1 conv + BN on a shape change), then ReLU."""

    def __init__(self, f_in: int, f_out: int, downsample: bool = False) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut = nn.Sequential()
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """`cifar_resnet_<depth>_<base_width>`: stem conv3x3-BN-ReLU, 3 stages of (depth-2)/6 blocks, avgpool, FC.

    Init as the original: kaiming_normal (fan_in, gain sqrt 2) on Conv/Linear weights only, all else
    PyTorch default. `scaled_density=d` gives the `--scaled` variant:
    std = gain(leaky_relu 0.01) / sqrt(fan_in * d).
    """

    def __init__(self, depth: int, num_classes: int, width: float = 1.0, base_width: int = 16,
                 scaled_density: float | None = None) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"cifar_resnet depth must satisfy (depth-2) % 6 == 0, depth >= 8; got {depth}")
        if scaled_density is not None and not 0 < scaled_density <= 1:
            raise ValueError(f"scaled_density must be in (0, 1], got {scaled_density}")
        n = (depth - 2) // 6
        widths = [scaled(base_width * m, width) for m in (1, 2, 4)]
        self.conv = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        blocks = []
        current = widths[0]
        for stage, filters in enumerate(widths):
            for i in range(n):
                blocks.append(CifarBlock(current, filters, downsample=stage > 0 and i == 0))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if scaled_density is None:
                    nn.init.kaiming_normal_(m.weight)
                else:
                    fan_in = nn.init._calculate_correct_fan(m.weight, "fan_in")
                    gain = nn.init.calculate_gain("leaky_relu", 0.01)
                    nn.init.normal_(m.weight, 0.0, gain / math.sqrt(fan_in * scaled_density))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("cifar_resnet")
def _cifar_resnet(p: ArchParams, num_classes: int, width: float, **options: Any) -> nn.Module:
    return CifarResNet(p[0], num_classes, width, base_width=16 if p[1] is None else p[1], **options)
