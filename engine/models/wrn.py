"""Wide ResNets for CIFAR: the FreeTickets / Sup-tickets `wrn-D-K` and the FGE repo's `WideResNet28x10`.

Two distinct definitions that papers both call "WRN-28-10"; they differ in conv biases, where the
shortcut reads its input, initialisation and the head's BatchNorm momentum, so both are kept.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.archs import ArchParams

from .common import he_normal_fan_out_, scaled
from .registry import register_model


class WideBasicBlock(nn.Module):
    """FreeTickets pre-activation block: BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3, no conv bias.

    When the shape changes, the BN-ReLU output (not the raw input) feeds the 1x1 shortcut conv.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == out_planes and stride == 1
        # attribute name kept from the original so its checkpoints load by name
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return out + shortcut


class NetworkBlock(nn.Module):
    """One WRN group: `n` WideBasicBlocks, the first one carrying the stride (held in `.layer`)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(*(
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout)
            for i in range(n)
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """FreeTickets / Sup-tickets `wrn-D-K`: widths 16, 16K, 32K, 64K; n = (D-4)/6 blocks per group.

    Init as the original: convs N(0, sqrt(2/(k*k*c_out))), BN 1/0, Linear bias 0 (weight PyTorch default).
    Returns logits (the original applied log_softmax and trained with NLL; cross-entropy is equivalent).
    WRN-28-10 has 36,479,194 parameters for 10 classes.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int, width: float = 1.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must satisfy (depth-4) % 6 == 0 and depth >= 10, got {depth}")
        n = (depth - 4) // 6
        c = [scaled(16, width)] + [scaled(b * widen_factor, width) for b in (16, 32, 64)]
        self.conv1 = nn.Conv2d(3, c[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, c[0], c[1], 1, dropout)
        self.block2 = NetworkBlock(n, c[1], c[2], 2, dropout)
        self.block3 = NetworkBlock(n, c[2], c[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(c[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(c[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                he_normal_fan_out_(m)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = avg_pool2d(8) on the 8x8 CIFAR map
        return self.fc(out)


class FGEWideBasic(nn.Module):
    """FGE block: BN-ReLU-conv3x3(bias)-dropout-BN-ReLU-conv3x3(stride, bias); shortcut reads raw input."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class FGEWideResNet(nn.Module):
    """The FGE / mode-connectivity repo's `WideResNet28x10` (depth 28, widen 10, dropout 0, default init).

    Quirk kept from the original: the head BatchNorm uses momentum=0.9, i.e. its running statistics are
    90% the latest batch (PyTorch's convention), unlike every other BN (0.1).
    """

    def __init__(self, num_classes: int, width: float = 1.0, depth: int = 28, widen_factor: int = 10,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must satisfy (depth-4) % 6 == 0 and depth >= 10, got {depth}")
        n = (depth - 4) // 6
        c = [scaled(16, width)] + [scaled(b * widen_factor, width) for b in (16, 32, 64)]
        self.conv1 = nn.Conv2d(3, c[0], 3, stride=1, padding=1, bias=True)
        in_planes = c[0]
        layers = []
        for planes, stride in ((c[1], 1), (c[2], 2), (c[3], 2)):
            blocks = []
            for i in range(n):
                blocks.append(FGEWideBasic(in_planes, planes, stride if i == 0 else 1, dropout))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.bn1 = nn.BatchNorm2d(c[3], momentum=0.9)  # sic: the original's momentum
        self.linear = nn.Linear(c[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = avg_pool2d(8) on the 8x8 CIFAR map
        return self.linear(out)


@register_model("wrn")
def _wrn(p: ArchParams, num_classes: int, width: float, **options: Any) -> nn.Module:
    return WideResNet(p[0], p[1], num_classes, width, **options)


@register_model("fge_wrn")
def _fge_wrn(p: ArchParams, num_classes: int, width: float, **options: Any) -> nn.Module:
    return FGEWideResNet(num_classes, width, **options)
