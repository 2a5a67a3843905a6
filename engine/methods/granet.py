"""GraNet (Sup-tickets' `--method GraNet`): gradual magnitude pruning with zero-cost neuroregeneration.

    masks <- ERK at init_density ("final": at the final density, i.e. RigL / SET through GraNet's code)
    every update_frequency steps (from init_prune_epoch on):
        target density(i) = final + (init - final)·(1 - (i - i0)/n)^3 for i0 <= i < i1 (the cubic schedule)
        global magnitude pruning down to the target (strictly larger |w| kept)
        prune rate·active weights per layer by magnitude, regrow as many by |grad| (density unchanged)
"""

from __future__ import annotations

import torch

from engine.methods.base import register_method
from engine.methods.sparse_base import SparseMethod
from engine.sparse.topology import gradual_density, topk_rows


@register_method("granet")
class GraNet(SparseMethod):
    """Gradual pruning to `final_density`, neuroregeneration at every update."""

    topology_updates = True
    regrow = True

    @property
    def target_densities(self) -> tuple[float, float]:
        """(initial, final) density: the params', the final one defaulting to the stage's [sparse].density."""
        return self.params.densities(self.scfg.density)

    def initial_density(self) -> float:
        return self.target_densities[0]

    def update_topology(self, rate: float | None = None) -> None:
        t, p = self.trainer, self.params
        steps_per_epoch = len(t.train_loader)
        if t.step < p.init_prune_epoch * steps_per_epoch:
            return
        init, final = self.target_densities
        target = gradual_density(t.step, self.scfg.update_frequency, steps_per_epoch, init, final,
                                 p.init_prune_epoch, p.final_prune_epoch)
        if target is not None:
            self.prune_to(target)
        if self.regrow:
            super().update_topology(rate)

    @torch.no_grad()
    def prune_to(self, density: float) -> None:
        """Global magnitude pruning: keep the int(N·density) largest active |w| over all masked layers (one top-k
        over the model; the active count comes from the host's record, the new per-layer counts are read once)."""
        names, params, masks = self.masking.names, self.masking.params, self.masking.masks
        active, sizes = self.masking.counts()
        keep = int(sum(sizes) * density)
        if keep >= sum(active):
            return
        score = torch.cat([torch.where(masks[n], p.detach().abs().float(), torch.full_like(p, -1.0, dtype=torch.float))
                           .flatten() for n, p in zip(names, params)])
        chosen = topk_rows(score.view(1, -1), keep).view(-1)
        parts = chosen.split(sizes)
        self.masking.set_masks({n: part.view_as(masks[n]) for n, part in zip(names, parts)})
