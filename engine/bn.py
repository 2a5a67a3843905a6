"""BatchNorm statistics re-estimated for a given set of weights (SWA's update_bn; FGE curves; Sup-tickets)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def update_bn(model: nn.Module, loader: Iterable,
              forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """Reset every BN's running stats and recompute them as the exact average over one pass of `loader`
    (momentum None = cumulative average), in train mode; the model's mode and momenta are restored."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    run = forward or model
    for x, _ in loader:
        run(x)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
