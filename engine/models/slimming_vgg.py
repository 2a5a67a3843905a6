"""The network-slimming VGG for CIFAR (`eb-vggD`, Early-Bird; `cifar-vggD`, random pruning and Sup-tickets).

It takes `cfg=`, the per-layer channel counts that channel pruning (engine/sparse/channel_prune.py) produces, so a
physically pruned network is built with the same definition; the unpruned model records its own `cfg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.config.archs import SLIMMING_VGG_DEPTHS, ArchParams

from .common import fixed_table, he_normal_fan_out_, scaled
from .registry import register_model

EB_VGG_CFG: dict[int, list[int | str]] = fixed_table({
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}, SLIMMING_VGG_DEPTHS, "slimming VGG")


class SlimmingVGG(nn.Module):
    """Network-slimming VGG for CIFAR (EB `vgg`; also the random-pruning repo's VGG with bn_gamma=1).

    `cfg` lists output channels per conv3x3 (no bias, each followed by BN and ReLU) with 'M' for a 2x2
    maxpool; the head is a 2x2 average pool and one Linear(cfg[-1], C). Init: conv N(0, sqrt(2/(k*k*c_out))),
    BN gamma `bn_gamma` (EB: 0.5) and beta 0, Linear N(0, 0.01) with bias 0. `width` scales the default cfg
    and is ignored when `cfg` is given (a pruned cfg holds exact counts).
    """

    def __init__(self, depth: int, num_classes: int, width: float = 1.0,
                 cfg: Sequence[int | str] | None = None, bn_gamma: float = 0.5) -> None:
        super().__init__()
        if cfg is None:
            if depth not in EB_VGG_CFG:
                raise ValueError(f"slimming VGG depth must be one of {sorted(EB_VGG_CFG)}, got {depth}")
            cfg = [v if v == "M" else scaled(int(v), width) for v in EB_VGG_CFG[depth]]
        cfg = list(cfg)
        bad = [v for v in cfg if v != "M" and (isinstance(v, bool) or not isinstance(v, int) or v < 1)]
        if bad or not any(v != "M" for v in cfg):
            raise ValueError(f"VGG cfg must hold positive ints and 'M', got {cfg}")
        self.cfg = cfg
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.feature = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                he_normal_fan_out_(m)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, bn_gamma)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.feature(x), 1)  # = AvgPool2d(2) on the 2x2 CIFAR map
        return self.classifier(x.flatten(1))


@register_model("eb_vgg")
def _eb_vgg(p: ArchParams, num_classes: int, width: float, **options: Any) -> nn.Module:
    return SlimmingVGG(p[0], num_classes, width, **options)


@register_model("cifar_vgg")
def _cifar_vgg(p: ArchParams, num_classes: int, width: float, **options: Any) -> nn.Module:
    return SlimmingVGG(p[0], num_classes, width, bn_gamma=1.0, **options)
