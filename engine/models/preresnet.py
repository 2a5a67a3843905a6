"""The FGE repo's pre-activation ResNet for CIFAR (`PreResNet110`, `PreResNet164`, ...).

Depth >= 44 builds bottleneck blocks with n = (depth-2)/9 per stage, so "PreResNet110" is a bottleneck net
with n=12 (not the basic-block ResNet-110); depth < 44 builds basic blocks with n = (depth-2)/6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.archs import ArchParams, preresnet_blocks

from .common import he_normal_fan_out_, scaled
from .registry import register_model


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 plus the shortcut (1x1 conv on the raw input if needed)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3(stride), BN-ReLU-conv1x1 (x4 channels) plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual


class PreResNet(nn.Module):
    """FGE PreResNet: stem conv3x3 3->16, stages of 16/32/64 planes, head BN-ReLU-avgpool-FC.

    The downsample is a 1x1 conv without BN. Init as the original: conv N(0, sqrt(2/(k*k*c_out))),
    BN 1/0, Linear PyTorch default.
    """

    def __init__(self, depth: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        kind, n = preresnet_blocks(depth)
        block = PreActBottleneck if kind == "bottleneck" else PreActBasicBlock
        self.inplanes = scaled(16, width)
        self.conv1 = nn.Conv2d(3, self.inplanes, 3, padding=1, bias=False)
        self.layer1 = self._make_layer(block, scaled(16, width), n, 1)
        self.layer2 = self._make_layer(block, scaled(32, width), n, 2)
        self.layer3 = self._make_layer(block, scaled(64, width), n, 2)
        self.bn = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                he_normal_fan_out_(m)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = self.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = AvgPool2d(8) on the 8x8 CIFAR map
        return self.fc(out)


@register_model("preresnet")
def _preresnet(p: ArchParams, num_classes: int, width: float) -> nn.Module:
    return PreResNet(p[0], num_classes, width)
