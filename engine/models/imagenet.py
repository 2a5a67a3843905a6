"""ImageNet ResNets (FreeTickets, Sup-tickets, random pruning): torchvision's definitions, built untrained.

The seeds' ImageNet `resnet.py` is torchvision-style ResNet v1.5 (stride on the 3x3), so torchvision's
own classes are used. `conv_init` picks the seeds' `-c` option: 'fan_out' ('classic', torchvision's default)
or 'fan_in' (the READMEs' 'fanin'); BN 1/0 and the FC's PyTorch default init either way.
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

BUILDERS = {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "resnet101": tvm.resnet101,
    "resnet152": tvm.resnet152,
    "wide_resnet50_2": tvm.wide_resnet50_2,
    "wide_resnet101_2": tvm.wide_resnet101_2,
}


def imagenet_resnet(name: str, num_classes: int, width: float = 1.0, conv_init: str = "fan_out") -> nn.Module:
    """torchvision `name` with `num_classes` outputs and random weights; only width=1.0 is accepted."""
    if width != 1.0:
        raise ValueError(f"arch '{name}' (torchvision ImageNet model) takes only width=1.0, not {width}")
    if conv_init not in ("fan_out", "fan_in"):
        raise ValueError(f"conv_init must be 'fan_out' or 'fan_in', got {conv_init!r}")
    model = BUILDERS[name](weights=None, num_classes=num_classes)
    if conv_init == "fan_in":
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return model
