"""Binary masks over the maskable weights, applied after every optimizer step in one fused foreach op.

Weights stay dense tensors (the papers simulate sparsity); a mask zeroes the pruned entries of the weight and,
by default, of the optimizer's momentum buffers too, so a pruned weight stays exactly zero through SGD
momentum and weight decay and a regrown weight starts from zero with zero momentum. No host sync.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_MOMENTA = ("momentum_buffer", "exp_avg", "exp_avg_sq")


class Masking:
    """The masks of one model: `apply()` after each optimizer step, densities for logs and analyses."""

    def __init__(self, model: nn.Module, names: list[str], optimizer: torch.optim.Optimizer | None = None,
                 mask_momentum: bool = True) -> None:
        params = dict(model.named_parameters())
        self.names = list(names)
        self.params = [params[n] for n in self.names]
        self.optimizer = optimizer
        self.mask_momentum = mask_momentum
        self.masks: dict[str, torch.Tensor] = {n: torch.ones_like(p, dtype=torch.bool)
                                               for n, p in zip(self.names, self.params)}
        self._mult: list[torch.Tensor] = []
        self._refresh()

    # ---- masks ---------------------------------------------------------------------------------------
    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Replace masks (bool, the weights' shapes) and zero the newly pruned entries at once.

        Under data parallelism rank 0's masks are broadcast, so every replica holds the same topology whatever
        each rank computed (SNIP scores on its own shard, a tie broken differently).
        """
        from engine.dist import broadcast_

        for n in self.names:
            if n in masks:
                m = masks[n]
                if m.shape != self.masks[n].shape:
                    raise ValueError(f"mask for {n} has shape {tuple(m.shape)}, "
                                     f"weight has {tuple(self.masks[n].shape)}")
                self.masks[n] = broadcast_(m.to(device=self.masks[n].device, dtype=torch.bool).contiguous())
        self._refresh()
        self.apply()

    def _refresh(self) -> None:
        self._mult = [self.masks[n].to(p.dtype) for n, p in zip(self.names, self.params)]

    @torch.no_grad()
    def apply(self) -> None:
        """weights *= masks (and momentum buffers *= masks): two foreach kernels, no host sync."""
        torch._foreach_mul_(self.params, self._mult)
        if not (self.mask_momentum and self.optimizer is not None):
            return
        bufs, mults = [], []
        state = self.optimizer.state
        for p, m in zip(self.params, self._mult):
            st = state.get(p)
            if st:
                for key in _MOMENTA:
                    b = st.get(key)
                    if isinstance(b, torch.Tensor) and b.shape == m.shape:
                        bufs.append(b)
                        mults.append(m)
        if bufs:
            torch._foreach_mul_(bufs, mults)

    # ---- accounting ----------------------------------------------------------------------------------
    def counts(self) -> tuple[list[int], list[int]]:
        """Active entries and sizes per layer (one host sync for all layers)."""
        active = torch.stack([self.masks[n].sum() for n in self.names]).cpu().tolist()
        return [int(a) for a in active], [self.masks[n].numel() for n in self.names]

    def layer_density(self) -> dict[str, float]:
        active, sizes = self.counts()
        return {n: a / s for n, a, s in zip(self.names, active, sizes)}

    def density(self) -> float:
        """Active fraction over all masked weights (biases, norms and dense-kept layers excluded)."""
        active, sizes = self.counts()
        return sum(active) / max(sum(sizes), 1)

    def state_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "masks": {n: m.clone() for n, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [n for n in self.names if n not in state["masks"]]
        if missing:
            raise KeyError(f"checkpoint has no mask for {missing[0]}")
        self.set_masks(state["masks"])
