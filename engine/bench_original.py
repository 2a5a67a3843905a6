"""The original scripts' way of stepping and of updating masks, kept only as `repro bench --baseline`'s yardstick.

Rewritten from the reference notes on FreeTickets' CIFAR `Masking` (sparselearning/core.py), not copied: float
masks multiplied into each weight by a Python loop over the model's parameters after every optimizer step
(core.py:376-380, `tensor.data = tensor.data*self.masks[name]`, momentum left unmasked), and a topology update
that, layer by layer, counts with `.item()`, sorts |w| to find the pruning threshold (magnitude_death,
core.py:479-488) and sorts |grad| of the inactive positions to regrow as many (gradient_growth, core.py:616-626),
with a mask multiply between the two passes and a nonzero count at the end (truncate_weights, core.py:384-436).
Training never uses this: engine/sparse is the fast path. What the yardstick does not copy: the batches come from
our loader (the same ones ours steps on, not the original's per-image CPU pipeline), the loss is cross_entropy on
logits (the original's log_softmax + nll_loss, the same number), and TF32 settings are whatever this process has.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class OriginalMasking:
    """Float masks over named weights, applied and updated the way the original CIFAR Masking does it."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.model = model
        self.masks = {n: m.float().clone() for n, m in masks.items()}
        # density_dict[name] == 1.0 in the original: gradient growth turns such a layer fully back on
        self.full = {n: bool(m.all()) for n, m in masks.items()}

    @torch.no_grad()
    def apply(self) -> None:
        """weights = weights * mask, one layer at a time, a new tensor each (momentum buffers untouched)."""
        for name, p in self.model.named_parameters():
            if name in self.masks:
                p.data = p.data * self.masks[name]

    @torch.no_grad()
    def update(self, rate: float) -> int:
        """Prune ceil(rate * active) smallest-magnitude weights of each layer and regrow as many where |grad| is
        largest among the inactive positions; returns the active count over all layers (as the original prints)."""
        removed: dict[str, int] = {}
        for name, w in self.model.named_parameters():
            if name not in self.masks:
                continue
            mask = self.masks[name]
            new = _magnitude_death(mask, w, rate)
            removed[name] = int(mask.sum().item() - new.sum().item())
            self.masks[name] = new.float()
        self.apply()
        for name, w in self.model.named_parameters():
            if name not in self.masks:
                continue
            self.masks[name] = _gradient_growth(self.masks[name], w, removed[name], self.full[name])
        self.apply()
        return sum(int((m != 0).sum().int().item()) for m in self.masks.values())

    def bool_masks(self) -> dict[str, torch.Tensor]:
        return {n: m != 0 for n, m in self.masks.items()}


def _magnitude_death(mask: torch.Tensor, w: torch.Tensor, rate: float) -> torch.Tensor:
    """Keep |w| above the threshold that leaves (inactive + ceil(rate * active)) entries at or below it."""
    inactive = (mask == 0).sum().item()
    k = math.ceil(rate * mask.sum().item())
    if k == 0:
        return w.data != 0
    ordered, _ = torch.sort(w.data.abs().flatten())
    threshold = ordered[math.ceil(inactive + k) - 1].item()
    return w.data.abs() > threshold


def _gradient_growth(mask: torch.Tensor, w: torch.Tensor, k: int, full: bool) -> torch.Tensor:
    """Switch on the k inactive positions of largest |grad| (every position, for a layer that started dense)."""
    if full:
        return torch.ones_like(mask)
    score = w.grad.abs() * (mask == 0).float()
    _, order = torch.sort(score.flatten(), descending=True)
    grown = mask.clone()
    grown.view(-1)[order[:k]] = 1.0
    return grown
