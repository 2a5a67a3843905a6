"""VGGs with a fully connected classifier: the FGE repo's VGG16/19(BN) and the SNIP `vgg-like` of FreeTickets.

(The Early-Bird / network-slimming VGG, with a single Linear head, lives in `slimming_vgg.py`.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.config.archs import FGE_VGG_DEPTHS, ArchParams

from .common import fixed_table, he_normal_fan_out_, scaled
from .registry import register_model

FGE_BLOCKS: dict[int, list[list[int]]] = fixed_table({
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}, FGE_VGG_DEPTHS, "FGE VGG")

VGG_LIKE_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                 512, 512, 512, "M", 512, 512, 512, "M"]


class FGEVGG(nn.Module):
    """FGE repo VGG16/19 (`VGG16`, `VGG16BN`, ...): conv3x3 with bias, optional BN, ReLU, maxpool per block.

    Classifier Dropout-Linear(512,512)-ReLU-Dropout-Linear(512,512)-ReLU-Linear(512,C).
    Init as the original: conv N(0, sqrt(2/(k*k*c_out))) with bias 0; Linear and BN PyTorch defaults.

    With batch_norm (`vgg16bn`, `vgg19bn`) this is the intended network, conv-BN-ReLU for every conv, not what the
    original runs. Its make_layers puts conv and BN into one list per block but one ReLU per conv into another
    (models/vgg.py:36-41), and forward zips the two (models/vgg.py:71-75, VGGCurve the same at 109-113): zip stops
    at the shorter list, so a block of k convs runs only its first k layers, conv and BN alternating, each followed
    by a ReLU (conv-ReLU-BN-ReLU-conv-ReLU for k = 3): ceil(k/2) convs and floor(k/2) BNs. VGG16BN runs 8 of its 13
    convs and 5 of its 13 BNs (VGG19BN 8 of 16 and 8 of 16); the rest are parameters that never see data. No README
    command uses the BN variants (VGG16 has no BN and runs as written).
    """

    def __init__(self, depth: int, num_classes: int, width: float = 1.0, batch_norm: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if depth not in FGE_BLOCKS:
            raise ValueError(f"FGE VGG depth must be one of {sorted(FGE_BLOCKS)}, got {depth}")
        layers: list[nn.Module] = []
        in_ch = 3
        for block in FGE_BLOCKS[depth]:
            for ch in block:
                out_ch = scaled(ch, width)
                layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=True))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out_ch))
                layers.append(nn.ReLU(inplace=True))
                in_ch = out_ch
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        hidden = scaled(512, width)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_ch, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                he_normal_fan_out_(m)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class VGGLike(nn.Module):
    """FreeTickets / Sup-tickets `vgg-like` (SNIP paper's VGG-D): 13 conv3x3 (bias) + BN + ReLU, 5 maxpools.

    Classifier Linear(512,512)-ReLU-BatchNorm1d-Linear(512,C). PyTorch default init throughout.
    """

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in VGG_LIKE_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out_ch = scaled(int(v), width)
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch),
                           nn.ReLU(inplace=True)]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        hidden = scaled(512, width)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch, hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register_model("fge_vgg")
def _fge_vgg(p: ArchParams, num_classes: int, width: float, **options: Any) -> nn.Module:
    return FGEVGG(p[0], num_classes, width, batch_norm=p[1] is not None, **options)


@register_model("vgg_like")
def _vgg_like(p: ArchParams, num_classes: int, width: float) -> nn.Module:
    return VGGLike(num_classes, width)
