"""What every sparse method shares: masks drawn at setup, applied after each step, topology updates on a
step schedule, and the layer-wise densities over training (for /sparsity)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from engine.config import SparseConfig
from engine.config.params import SparseParams
from engine.methods.base import Method
from engine.sparse.inits import initial_masks, maskable
from engine.sparse.masks import Masking
from engine.sparse.momentum import ShadowMomentum, optimizer_momentum
from engine.sparse.topology import (
    grow_many,
    mean_magnitudes,
    prune_magnitude_many,
    prune_rate_at,
    prune_set_many,
    prune_threshold,
    redistribute,
)


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
        self._masked_grads = False  # this step's gradients were masked (no apply() after it)
        self._growth_gen = torch.Generator(device=self.masking.params[0].device)

    # ---- initial masks -------------------------------------------------------------------------------
    def initial_density(self) -> float:
        return self.scfg.density

    def initial_masks(self) -> dict[str, torch.Tensor]:
        """Masks from the configured rule (engine.sparse.inits.initial_masks, which `repro sparsity` shows too)."""
        return initial_masks(self.model, self.masking.names, self.scfg, self.initial_density(), self.generator,
                             self.trainer.train_loader, self.trainer.data.num_classes)

    # ---- the step ----------------------------------------------------------------------------------
    fuse_mask_step = True  # mask the gradients before the step instead of the weights and momenta after it

    def before_step(self) -> None:
        """Step the unmasked momentum copy (momentum growth only) from this step's gradient and starting weight,
        then mask the gradients so the optimizer step itself keeps pruned weights at zero (`Masking.mask_grads`),
        unless something reads this step's raw gradient afterwards (a gradient-growth update follows)."""
        if self.shadow is not None:
            self.shadow.update()
        self._masked_grads = (self.fuse_mask_step and not self.raw_grads_needed() and self.masking.mask_grads())

    def raw_grads_needed(self) -> bool:
        """Whether gradient growth may rank this step's unmasked gradient after the step: the step ends on a
        topology update, or ends an epoch (EDST's jump and Sup-tickets' re-exploration regrow from the last step)."""
        if self.scfg.growth != "gradient":
            return False
        t = self.trainer
        step = t.step + 1
        return step % max(len(t.train_loader), 1) == 0 or (self.topology_updates
                                                           and step % self.scfg.update_frequency == 0)

    def after_step(self) -> None:
        if not self._masked_grads:
            self.masking.apply()
        self._masked_grads = False
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
        original CIFAR Masking's behaviour: its smallest weights restart from zero at every update).

        Counts come from the host's record and stay exact through top-k, so the usual update (magnitude prune,
        gradient/random/momentum growth, no or `nonzeros` redistribution) reads nothing back from the device; SET's
        prune, a threshold prune and magnitude redistribution read what they need in one host sync each."""
        c = self.scfg
        rate = self.prune_rate() if rate is None else rate
        names, params, masks = self.masking.names, self.masking.params, self.masking.masks
        active, sizes = self.masking.counts()
        todo = [i for i, (a, s) in enumerate(zip(active, sizes))
                if a and (a < s or c.update_full_layers)]  # an empty (or full) layer keeps its topology
        w_todo, m_todo = [params[i] for i in todo], [masks[names[i]] for i in todo]
        removed = [0] * len(names)
        if c.prune == "threshold":
            new = [prune_threshold(p, m, c.threshold) for p, m in zip(w_todo, m_todo)]
            kept = torch.stack([m.sum() for m in new]).tolist() if new else []
            lost = [active[i] - int(k) for i, k in zip(todo, kept)]
        else:
            ks = [math.ceil(rate * active[i]) for i in todo]
            if c.prune == "set":
                new, lost = prune_set_many(w_todo, m_todo, ks)
            else:
                new = prune_magnitude_many(w_todo, m_todo, ks, [active[i] for i in todo])
                lost = [min(k, active[i]) for k, i in zip(ks, todo)]
        for i, k in zip(todo, lost):
            removed[i] = k
        after = [a - r for a, r in zip(active, removed)]
        self.masking.set_masks({names[i]: m for i, m in zip(todo, new)},
                               counts={names[i]: after[i] for i in todo})  # zero the pruned weights (and momentum)
        magnitudes = None
        if c.redistribution == "magnitude" and sum(removed):
            magnitudes = mean_magnitudes(list(params), [masks[n] for n in names], after)
        regrow = redistribute(removed, after, sizes, c.redistribution, magnitudes)
        room = [s - a for s, a in zip(sizes, after)]
        regrow = [min(k, r) for k, r in zip(regrow, room)]
        grow_at = [i for i, k in enumerate(regrow) if k > 0]
        moms = None
        if c.growth == "momentum":
            moms = [self.shadow.score(i) if self.shadow is not None
                    else optimizer_momentum(self.trainer.optimizer, params[i]) for i in grow_at]
        grown = grow_many([masks[names[i]] for i in grow_at], [regrow[i] for i in grow_at], c.growth,
                          grads=[params[i].grad for i in grow_at], momenta=moms, generator=self.growth_generator())
        self.masking.set_masks({names[i]: m for i, m in zip(grow_at, grown)},
                               counts={names[i]: after[i] + regrow[i] for i in grow_at})  # grown weights start at 0
        self.updates += 1

    def growth_generator(self) -> torch.Generator:
        """The random-growth generator of this update, on the weights' device: seeded from the run's mask seed and
        the update's number, so a resumed run regrows as an uninterrupted one without any generator state."""
        return self._growth_gen.manual_seed(_growth_seed(self.info.seeds.masks, self.updates))

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
        nonzero = [int(v) for v in torch.stack([(p != 0).sum() for p in self.masking.params]).tolist()]
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


def _growth_seed(seed: int, update: int) -> int:
    """A 63-bit seed per (run seed, update number), decorrelated by numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(update)]).generate_state(2)
    return (int(state[0]) << 31 | int(state[1])) & ((1 << 63) - 1)
