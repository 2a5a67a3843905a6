"""What every sparse method shares: masks drawn at setup, applied after each step, topology updates on a
step schedule, and the layer-wise densities over training (for /sparsity)."""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.config import SparseConfig
from engine.config.params import SparseParams
from engine.methods.base import Method
from engine.sparse.inits import initial_masks, maskable
from engine.sparse.masks import Masking
from engine.sparse.momentum import ShadowMomentum, optimizer_momentum
from engine.sparse.topology import grow, prune_magnitude, prune_rate_at, prune_set, prune_threshold, redistribute


class SparseMethod(Method):
    """Static sparse training by default; subclasses decide when and how the topology changes."""

    Params = SparseParams
    topology_updates = False  # DST-style prune-and-grow every update_frequency steps

    def setup(self) -> None:
        t = self.trainer
        self.scfg: SparseConfig = self.stage.sparse or SparseConfig()
        self.generator = torch.Generator().manual_seed(self.info.seeds.masks)
        params = maskable(self.model, self.scfg.dense_layers)
        if not params:
            raise ValueError("no maskable weights (every conv/linear weight is in dense_layers)")
        self.masking = Masking(self.model, list(params), t.optimizer, self.scfg.mask_momentum)
        self.masking.set_masks(self.initial_masks())
        # momentum growth scores the momentum of inactive weights, which masked buffers no longer hold: keep an
        # unmasked copy, as the original's optimizer buffer (engine/sparse/momentum.py)
        c = self.scfg
        self.shadow = (ShadowMomentum(self.masking.params, t.optimizer)
                       if self.topology_updates and c.growth == "momentum" and c.mask_momentum else None)
        self.history: list[dict[str, Any]] = []
        self.updates = 0

    # ---- initial masks -------------------------------------------------------------------------------
    def initial_density(self) -> float:
        return self.scfg.density

    def initial_masks(self) -> dict[str, torch.Tensor]:
        """Masks from the configured rule (engine.sparse.inits.initial_masks, which `repro sparsity` shows too)."""
        return initial_masks(self.model, self.masking.names, self.scfg, self.initial_density(), self.generator,
                             self.trainer.train_loader, self.trainer.data.num_classes)

    # ---- the step ------------------------------------------------------------------------------------
    def before_step(self) -> None:
        """Step the unmasked momentum copy (momentum growth only) from this step's gradient and starting weight."""
        if self.shadow is not None:
            self.shadow.update()

    def after_step(self) -> None:
        self.masking.apply()
        if self.topology_updates and self.trainer.step % self.scfg.update_frequency == 0 and self.updates_allowed():
            self.update_topology()

    def updates_allowed(self) -> bool:
        stop = self.scfg.stop_updates_epoch
        return not stop or self.trainer.epoch < stop

    def prune_rate(self) -> float:
        c, t = self.scfg, self.trainer
        total = self.stage.epochs * len(t.train_loader)
        return prune_rate_at(c.prune_rate_schedule, c.prune_rate, c.prune_rate_min, t.step, total)

    @torch.no_grad()
    def update_topology(self, rate: float | None = None) -> None:
        """Prune `rate` of each layer's active weights and regrow as many (per layer, or redistributed), exactly.

        A full layer (density 1.0, e.g. ERK-dense) keeps its topology unless `update_full_layers`: then it is pruned
        like the others and, having no other free positions, regrows exactly the weights it lost, at zero (the
        original CIFAR Masking's behaviour: its smallest weights restart from zero at every update)."""
        c = self.scfg
        rate = self.prune_rate() if rate is None else rate
        names, params, masks = self.masking.names, self.masking.params, self.masking.masks
        active, sizes = self.masking.counts()
        pruned: dict[str, torch.Tensor] = {}
        removed = []
        for n, p, a, s in zip(names, params, active, sizes):
            if a == 0 or (a == s and not c.update_full_layers):  # an empty (or full) layer keeps its topology
                pruned[n] = masks[n]
                removed.append(0)
                continue
            if c.prune == "threshold":
                new = prune_threshold(p, masks[n], c.threshold)
            else:
                k = math.ceil(rate * a)
                new = (prune_set if c.prune == "set" else prune_magnitude)(p, masks[n], k)
            pruned[n] = new
            removed.append(a - int(new.sum()))
        self.masking.set_masks(pruned)  # zero the pruned weights (and their momentum) before growing
        after = [a - r for a, r in zip(active, removed)]
        regrow = redistribute(removed, after, sizes, c.redistribution, list(params),
                              [self.masking.masks[n] for n in names])
        grown = {}
        for i, (n, p, k) in enumerate(zip(names, params, regrow)):
            mom = None
            if c.growth == "momentum":
                mom = self.shadow.score(i) if self.shadow is not None else optimizer_momentum(self.trainer.optimizer, p)
            grown[n] = grow(self.masking.masks[n], k, c.growth, grad=p.grad, momentum=mom, generator=self.generator)
        self.masking.set_masks(grown)  # grown weights start at zero (they were zero while inactive)
        self.updates += 1

    def densities(self) -> dict[str, float]:
        return self.masking.layer_density()

    def growth_cost(self) -> tuple[str | None, int | None]:
        if self.topology_updates:
            return self.scfg.growth, self.scfg.update_frequency
        return None, None

    # ---- records -------------------------------------------------------------------------------------
    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """The epoch's mask densities and, beside them, the fraction of masked weights that are nonzero: weights
        regrown at zero by an update shortly before the epoch's end are active in the mask but still zero."""
        layers = self.masking.layer_density()
        active, sizes = self.masking.counts()
        nonzero = [int(v) for v in torch.stack([(p != 0).sum() for p in self.masking.params]).cpu().tolist()]
        density = sum(active) / sum(sizes)
        record["density"] = density
        record["nonzero_density"] = sum(nonzero) / sum(sizes)
        self.history.append({"epoch": epoch + 1, "step": self.trainer.step, "density": density,
                             "layers": [layers[n] for n in self.masking.names],
                             "nonzero": record["nonzero_density"],
                             "nonzero_layers": [z / s for z, s in zip(nonzero, sizes)]})

    def state_dict(self) -> dict[str, Any]:
        out = {"masking": self.masking.state_dict(), "history": self.history, "updates": self.updates,
               "generator": self.generator.get_state()}
        if self.shadow is not None:
            out["shadow_momentum"] = self.shadow.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masking.load_state_dict(state["masking"])
        self.history = list(state["history"])
        self.updates = int(state["updates"])
        self.generator.set_state(state["generator"])
        if self.shadow is not None and "shadow_momentum" in state:
            self.shadow.load_state_dict(state["shadow_momentum"])
