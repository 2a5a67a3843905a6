"""BatchNorm running statistics re-estimated for a given set of weights: the one routine behind Sup-tickets'
superposition, Early-Bird's SWALP average and the mode-connectivity curves, planes and monitor.

    reset every BN (mean 0, var 1, count 0), put the model in train mode, and without a graph run one pass:
        weighting "batches":  momentum None, i.e. 1 / (batches seen): every batch counts alike
                              (torch.optim.swa_utils.update_bn; Sup-tickets' --update_bn)
        weighting "samples":  momentum s_b / (N_seen + s_b) for batch b of s_b samples: every sample counts alike
                              (utils.update_bn / bn_update of dnn-mode-connectivity, SWA and SWALP)
    then the momenta and the model's mode are restored.

Both give the average of the per-batch means and unbiased variances, and agree when all batches have one size;
with "samples" the running mean is exactly the mean of the BN's input over the pass. The running variance is
the average of the per-batch variances in either case (what BN normalises with in training), not the variance
over the whole pass, which would also hold the spread between the batches' means.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["Weighting", "batchnorms", "has_bn", "update_bn"]

Weighting = Literal["batches", "samples"]


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm of `model` (1d/2d/3d, SyncBatchNorm) in module order: the modules a re-estimation resets."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def has_bn(model: nn.Module) -> bool:
    """Whether `model` has a BatchNorm, i.e. whether re-estimating statistics changes anything."""
    return bool(batchnorms(model))


@torch.no_grad()
def update_bn(model: nn.Module, loader: Iterable, forward: Callable[[torch.Tensor], Any] | None = None,
              amp: Callable[[], AbstractContextManager[Any]] | None = None, *, weighting: Weighting = "batches",
              max_batches: int | None = None, device: torch.device | str | None = None) -> None:
    """Reset every BN's running statistics of `model` and re-estimate them over one pass of `loader`.

    `loader` is any iterable of (x, y) batches, iterated once (y is ignored); `device` moves each x there first
    (a DataLoader yielding CPU tensors). `forward` (default `model`) runs a batch, e.g. a curve at a fixed t;
    `amp` is a context factory (the trainer's autocast) entered around it; `max_batches` ends the pass early.
    `weighting` is how batches are averaged (see the module docstring). Momenta and the training mode are
    restored even when the pass raises.
    """
    if weighting not in ("batches", "samples"):
        raise ValueError(f"unknown BN weighting '{weighting}'; choose 'batches' or 'samples'")
    bns = batchnorms(model)
    if not bns:
        return
    run = forward or model
    enter = amp or nullcontext
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    batches = loader if max_batches is None else itertools.islice(loader, max_batches)
    seen = 0
    try:
        for x, _ in batches:
            if device is not None:
                x = x.to(device, non_blocking=True)
            if weighting == "samples":
                b = int(x.shape[0])
                for m in bns:
                    m.momentum = b / (seen + b)
                seen += b
            with enter():
                run(x)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
