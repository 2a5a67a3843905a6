"""The network-slimming pre-activation ResNet for CIFAR (`eb-preresnetD`, Early-Bird) with channel selection.

It takes `cfg=`, the per-layer channel counts that channel pruning (engine/sparse/channel_prune.py) produces, so a
physically pruned network is built with the same definition; the unpruned model records its own `cfg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.archs import ArchParams

from .common import he_normal_fan_out_, scaled
from .registry import register_model


class ChannelSelection(nn.Module):
    """Early-Bird `channel_selection`: passes on only the input channels whose `indexes` entry is non-zero.

    It sits right after a BatchNorm that must keep its full width (a pre-activation BN on the residual
    path), so that in a physically pruned network the next conv receives only the kept channels. While
    `indexes` is all ones (every unpruned model) it is the identity. `indexes` is an nn.Parameter of
    ones, as in the original (so it is in `parameters()` and the state dict under the original name),
    but with requires_grad=False: no gradient, no optimizer update, no unused-parameter trouble in DDP.

    The kept positions are cached in the non-persistent buffer `kept`, so a forward pass needs no host
    sync. The cache is refreshed when `indexes` is replaced or changed in place by a tracked op
    (`load_state_dict`, `copy_` under no_grad). Writes through `indexes.data` are not tracked: change
    the selection with `set_indexes(mask)`, or call `refresh()` afterwards.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.indexes = nn.Parameter(torch.ones(num_channels), requires_grad=False)
        self.register_buffer("kept", torch.arange(num_channels), persistent=False)
        self._key = self._indexes_key()

    def _indexes_key(self) -> tuple[int, int]:
        return (self.indexes.data_ptr(), self.indexes._version)

    @torch.no_grad()
    def set_indexes(self, mask: torch.Tensor) -> None:
        """Set the selection from a 0/1 (or bool) vector of the input's channel count."""
        if mask.numel() != self.indexes.numel():
            raise ValueError(
                f"channel selection over {self.indexes.numel()} channels got a mask of {mask.numel()}"
            )
        self.indexes.copy_(mask.to(self.indexes.dtype).reshape(self.indexes.shape))
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the cached kept positions from `indexes` (one host sync)."""
        self.kept = torch.nonzero(self.indexes != 0).flatten().to(self.kept.device)
        self._key = self._indexes_key()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() and self._key != self._indexes_key():
            self.refresh()
        if self.kept.numel() == x.shape[1]:
            return x
        return x.index_select(1, self.kept)

    def extra_repr(self) -> str:
        return f"{self.indexes.numel()}"


class EBBottleneck(nn.Module):
    """Pre-activation bottleneck with selection: bn1 (full width), select, ReLU, conv1 1x1 cfg[0]->cfg[1],
    BN-ReLU-conv2 3x3 cfg[1]->cfg[2] (stride), BN-ReLU-conv3 1x1 cfg[2]->planes*4, plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, cfg: Sequence[int], stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.select = ChannelSelection(inplanes)
        self.conv1 = nn.Conv2d(cfg[0], cfg[1], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cfg[1])
        self.conv2 = nn.Conv2d(cfg[1], cfg[2], 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cfg[2])
        self.conv3 = nn.Conv2d(cfg[2], planes * 4, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.select(self.bn1(x))))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual


def eb_preresnet_cfg(depth: int, width: float = 1.0) -> list[int]:
    """The unpruned cfg of an EB PreResNet: per block (selected in, conv1 out, conv2 out), then the head."""
    if depth < 11 or (depth - 2) % 9 != 0:
        raise ValueError(f"EB PreResNet depth must satisfy (depth-2) % 9 == 0 and depth >= 11, got {depth}")
    n = (depth - 2) // 9
    cfg: list[int] = []
    inplanes = scaled(16, width)
    for base in (16, 32, 64):
        planes = scaled(base, width)
        for _ in range(n):
            cfg += [inplanes, planes, planes]
            inplanes = planes * 4
    return cfg + [inplanes]


class EBPreResNet(nn.Module):
    """EB / network-slimming pre-activation bottleneck ResNet (depth 9n+2) with channel_selection layers.

    Stages of 16/32/64 planes (x4 expansion), downsample a 1x1 conv without BN, head BN-select-ReLU-avgpool-FC
    with FC input cfg[-1]. `cfg` has 9n+1 entries (see `eb_preresnet_cfg`); conv3 and residual widths are not
    pruned. Init: conv N(0, sqrt(2/(k*k*c_out))), BN gamma 0.5 and beta 0, Linear PyTorch default.
    """

    def __init__(self, depth: int, num_classes: int, width: float = 1.0,
                 cfg: Sequence[int] | None = None) -> None:
        super().__init__()
        default = eb_preresnet_cfg(depth, width)
        n = (depth - 2) // 9
        if cfg is None:
            cfg = default
        cfg = list(cfg)
        if len(cfg) != len(default):
            raise ValueError(f"EB PreResNet-{depth} cfg needs {len(default)} entries, got {len(cfg)}")
        for i, (v, full) in enumerate(zip(cfg, default)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (i % 3 == 0 and v > full):
                raise ValueError(f"EB PreResNet cfg[{i}] = {v!r} is not a channel count in 1..{full}")
        self.cfg = cfg
        self.inplanes = scaled(16, width)
        self.conv1 = nn.Conv2d(3, self.inplanes, 3, padding=1, bias=False)
        self.layer1 = self._make_layer(scaled(16, width), n, cfg[0:3 * n], 1)
        self.layer2 = self._make_layer(scaled(32, width), n, cfg[3 * n:6 * n], 2)
        self.layer3 = self._make_layer(scaled(64, width), n, cfg[6 * n:9 * n], 2)
        self.bn = nn.BatchNorm2d(self.inplanes)
        self.select = ChannelSelection(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(cfg[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                he_normal_fan_out_(m)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, cfg: list[int], stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False))
        layers = [EBBottleneck(self.inplanes, planes, cfg[0:3], stride, downsample)]
        self.inplanes = planes * 4
        layers += [EBBottleneck(self.inplanes, planes, cfg[3 * i:3 * i + 3]) for i in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = self.relu(self.select(self.bn(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = AvgPool2d(8) on the 8x8 CIFAR map
        return self.fc(out)


@register_model("eb_preresnet")
def _eb_preresnet(p: ArchParams, num_classes: int, width: float, **options: Any) -> nn.Module:
    return EBPreResNet(p[0], num_classes, width, **options)
