"""Sup-tickets' CIFAR ResNet-18/34/50 (its `ResNet50` with --data cifar100): ImageNet blocks, CIFAR stem.

3x3 stride-1 stem without maxpool, stages of 64/128/256/512 planes, a bias-free Linear named `classifier`
(Sup-tickets' layer rules look that name up). PyTorch default init throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.archs import CIFAR_STEM_RESNET_DEPTHS, ArchParams

from .common import fixed_table, scaled
from .registry import register_model

STAGES: dict[int, tuple[str, list[int]]] = fixed_table({
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}, CIFAR_STEM_RESNET_DEPTHS, "CIFAR-stem ResNet")


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1(x4)-BN plus the shortcut, then ReLU (v1.5 stride)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(in_planes, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarStemResNet(nn.Module):
    """`cifar-resnet18/34/50`: Sup-tickets' ResNet for 32x32 inputs; logits from `classifier` (no bias)."""

    def __init__(self, depth: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"CIFAR-stem ResNet depth must be one of {sorted(STAGES)}, got {depth}")
        kind, counts = STAGES[depth]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        self.in_planes = scaled(64, width)
        self.conv1 = nn.Conv2d(3, self.in_planes, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.in_planes)
        layers = []
        for base, count, stride in zip((64, 128, 256, 512), counts, (1, 2, 2, 2)):
            planes = scaled(base, width)
            blocks = []
            for i in range(count):
                blocks.append(block(self.in_planes, planes, stride if i == 0 else 1))
                self.in_planes = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.classifier = nn.Linear(self.in_planes, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = avg_pool2d(4) on the 4x4 CIFAR map
        return self.classifier(out)


@register_model("cifar_stem_resnet")
def _cifar_stem_resnet(p: ArchParams, num_classes: int, width: float) -> nn.Module:
    return CifarStemResNet(p[0], num_classes, width)
