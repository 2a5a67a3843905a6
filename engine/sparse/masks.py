"""Binary masks over the maskable weights, applied with every optimizer step in one fused foreach op.

Weights stay dense tensors (the papers simulate sparsity); a mask zeroes the pruned entries of the weight and,
by default, of the optimizer's momentum buffers too, so a pruned weight stays exactly zero through SGD
momentum and weight decay and a regrown weight starts from zero with zero momentum. No host sync.

The distance between two masks (weight tickets, or Early-Bird channel masks) is the normalised Hamming distance:
the fraction of the positions where they differ, `mask_distance` for a pair and `hamming_matrix` for all pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from engine.dist import broadcast_many_

_MOMENTA = ("momentum_buffer", "exp_avg", "exp_avg_sq")


class Masking:
    """The masks of one model: `apply()` after each optimizer step (or `mask_grads()` before it), densities for logs
    and analyses. The active count of every layer is kept on the host, so a topology update that knows its counts
    (magnitude prune and top-k growth are exact) never has to read them back from the device."""

    def __init__(self, model: nn.Module, names: list[str], optimizer: torch.optim.Optimizer | None = None,
                 mask_momentum: bool = True) -> None:
        params = dict(model.named_parameters())
        self.names = list(names)
        self.params = [params[n] for n in self.names]
        self.optimizer = optimizer
        self.mask_momentum = mask_momentum
        self.masks: dict[str, torch.Tensor] = {n: torch.ones_like(p, dtype=torch.bool)
                                               for n, p in zip(self.names, self.params)}
        self._active: dict[str, int | None] = {n: p.numel() for n, p in zip(self.names, self.params)}
        self._mult: list[torch.Tensor] = [m.to(p.dtype) for m, p in zip(self.masks.values(), self.params)]

    # ---- masks ---------------------------------------------------------------------------------------
    def set_masks(self, masks: dict[str, torch.Tensor], counts: dict[str, int] | None = None) -> None:
        """Replace masks (bool, the weights' shapes) and zero the newly pruned entries at once.

        `counts`: the new masks' active counts when the caller knows them exactly (no device read); layers without
        one are counted on the next `counts()`, all in one host sync. Under data parallelism rank 0's masks are
        broadcast in one collective, so every replica holds the same topology whatever each rank computed (SNIP
        scores on its own shard, a tie broken differently); exact counts hold for rank 0's masks as for any.
        """
        new: dict[str, torch.Tensor] = {}
        for n in self.names:
            if n in masks:
                m = masks[n]
                if m.shape != self.masks[n].shape:
                    raise ValueError(f"mask for {n} has shape {tuple(m.shape)}, "
                                     f"weight has {tuple(self.masks[n].shape)}")
                new[n] = m.to(device=self.masks[n].device, dtype=torch.bool).contiguous()
        broadcast_many_(list(new.values()))
        known = counts or {}
        for i, n in enumerate(self.names):
            if n in new:
                self.masks[n] = new[n]
                self._active[n] = known.get(n)
                self._mult[i] = new[n].to(self.params[i].dtype)
        self.apply()

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

    @torch.no_grad()
    def mask_grads(self) -> bool:
        """grads *= masks, before the optimizer step: one foreach kernel that replaces `apply()` after it.

        With the weights and momentum already zero where masked (set_masks/apply keep that so), a masked gradient
        leaves them zero through SGD (momentum, dampening, Nesterov, L2 weight decay) and Adam/AdamW alike, so the
        step equals step-then-apply while touching one tensor per weight instead of two. Only valid when the
        momentum is masked too (the original's unmasked buffer takes dense gradients); False (nothing done) when a
        weight has no gradient, and the caller falls back to `apply()`.
        """
        grads = [p.grad for p in self.params]
        if not self.mask_momentum or any(g is None for g in grads):
            return False
        torch._foreach_mul_(grads, self._mult)
        return True

    # ---- accounting ----------------------------------------------------------------------------------
    def counts(self) -> tuple[list[int], list[int]]:
        """Active entries and sizes per layer: from the host's record, with one host sync for all layers whose
        count is not known yet."""
        unknown = [n for n in self.names if self._active[n] is None]
        if unknown:
            read = torch.stack([self.masks[n].sum() for n in unknown]).tolist()
            self._active.update({n: int(a) for n, a in zip(unknown, read)})
        return [int(self._active[n]) for n in self.names], [self.masks[n].numel() for n in self.names]  # type: ignore[arg-type]

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


# ---- distance between masks --------------------------------------------------------------------------------


def mask_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised Hamming distance: the fraction of positions where two equally long masks differ.

    Counted exactly as an integer and divided once, so it is the correctly rounded float of count / N.
    """
    a, b = a.reshape(-1).bool(), b.reshape(-1).bool()
    if a.numel() != b.numel():
        raise ValueError(f"masks of different lengths ({a.numel()} and {b.numel()}) cannot be compared")
    if a.numel() == 0:
        raise ValueError("empty masks")
    return int((a != b).sum()) / a.numel()


def hamming_matrix(masks: torch.Tensor | Sequence[torch.Tensor], chunk: int = 1 << 20) -> torch.Tensor:
    """[K, K] float64 `mask_distance` of every pair of K equally long masks (a list, or the rows of a [K, N]
    tensor); zero diagonal. One matmul of the masks per chunk of `chunk` positions counts every pair's overlap
    exactly (integers in float64), so the result equals the pairwise count / N bit for bit, with one host copy."""
    flat = [m.reshape(-1).bool() for m in masks]
    k = len(flat)
    if k and any(m.numel() != flat[0].numel() for m in flat):
        sizes = sorted({m.numel() for m in flat})
        raise ValueError(f"masks of different sizes cannot be compared: {sizes}")
    if k == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    n = flat[0].numel()
    if n == 0:
        raise ValueError("empty masks")
    stacked = torch.stack(flat)
    both = torch.zeros(k, k, dtype=torch.float64, device=stacked.device)
    for start in range(0, n, chunk):
        part = stacked[:, start:start + chunk].double()
        both += part @ part.T
    kept = both.diagonal().clone()
    out = (kept[:, None] + kept[None, :] - 2 * both) / n  # |a| + |b| - 2|a & b| positions differ
    return out.fill_diagonal_(0.0).cpu()
