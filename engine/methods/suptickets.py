"""Sup-tickets (Yin et al., UAI 2022; `main_suptickets.py`): cheap tickets from a cyclic learning rate,
superposed into one sparse network.

    P = E - C epochs of sparse training (GraNet, or RigL/SET = GraNet with init = final density; static ERK / SNIP
        with `fix`, --fix: no topology updates but the re-explorations), lr 0.1 with
        x0.1 at int(P/2) and int(3P/4);       C = floor(E·cycle_rate) down to a multiple of `cycle`
        (ImageNet main.py: P = --pretrain_epoch, x0.1 at the absolute epochs --first_m/second_m/third_m, after
        the warm-up of the stage's [schedule])
    S_0 <- the pre-trained model
    for each cycle k = 1..C/cycle (lr per step: lr_1 at the cycle's ends, lr_2 in its middle):
        at the cycle's start: one large prune-and-regrow (re_explore); no other topology updates (no_maskupdates)
        ticket T_k <- the weights at the cycle's end
        S_k <- (1 - a)·S_{k-1} + a·T_k  (CAA: a = 1/(k+1); CIMA: a = CIMA_factor), every state-dict entry
        S_k <- global magnitude pruning back to the final density; BN statistics re-estimated (update_bn)
    the training run itself continues on its own trajectory; S_k is an accumulator beside it
    (swap_superposed: the ImageNet code's way instead: S_k replaces the model in use while the optimizer and the
     masks stay bound to the replaced weights, so from then on the weights in use never change, only their BN
     running statistics move in training-mode forwards, and later re-explorations and mask updates touch nothing
     in use; later tickets are S_{k-1} with drifted BN statistics)
"""

from __future__ import annotations

import copy
from functools import cached_property
from typing import Any

import torch

from engine.bn import update_bn
from engine.evaluate import evaluate
from engine.io import save_checkpoint
from engine.methods.base import register_method
from engine.methods.granet import GraNet
from engine.schedules import suptickets_lr
from engine.sparse.inits import maskable


def superpose(previous: dict[str, torch.Tensor], ticket: dict[str, torch.Tensor], a: float) -> dict[str, torch.Tensor]:
    """(1 - a)·previous + a·ticket for every entry (integer buffers averaged, then rounded back)."""
    out = {}
    for k, v in previous.items():
        t = ticket[k]
        if v.is_floating_point():
            out[k] = (1 - a) * v + a * t
        else:
            out[k] = torch.round((1 - a) * v.double() + a * t.double()).to(v.dtype)
    return out


def prune_global(state: dict[str, torch.Tensor], names: list[str], density: float) -> dict[str, torch.Tensor]:
    """Masks keeping exactly int(N·density) of the largest |w| over the named weights jointly (ties: first found).

    Tickets' masks differ, so their average is non-zero on the union of their supports; this cuts it back to the
    target density by magnitude, as the paper does after each superposition."""
    scores = torch.cat([state[n].abs().flatten().float() for n in names])
    keep = int(scores.numel() * density)
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    chosen[torch.topk(scores, keep, sorted=False).indices] = True
    masks, i = {}, 0
    for n in names:
        k = state[n].numel()
        masks[n] = chosen[i:i + k].view_as(state[n])
        i += k
    return masks


@register_method("suptickets")
class SupTickets(GraNet):
    """GraNet / RigL / SET pre-training, then cyclic cheap tickets superposed into one network."""

    @cached_property
    def split(self) -> tuple[int, int]:
        """This stage's (pre-train epochs, number of cheap tickets)."""
        return self.params.budget(self.stage.epochs)

    def setup(self) -> None:
        super().setup()
        self.pretrain, self.n_tickets = self.split
        self.superposed: dict[str, torch.Tensor] | None = None
        self.k = 0  # tickets taken

    # ---- schedule ------------------------------------------------------------------------------------
    def lr(self, epoch: int, frac: float) -> float:
        """Pre-training: the schedule's warm-up, then step decay x0.1 per milestone; then the cyclic triangle."""
        if epoch >= self.split[0] and self.swapped:
            return 0.0  # the swapped-in model is not stepped (the original's optimizer steps the replaced weights)
        st = self.stage
        return suptickets_lr(st.schedule, self.params, st.optimizer.lr, epoch, frac, st.epochs)

    def in_cycles(self) -> bool:
        return self.trainer.epoch >= self.pretrain

    def update_topology(self, rate: float | None = None) -> None:
        if self.swapped or (rate is None and self.in_cycles() and self.params.no_maskupdates):
            return
        super().update_topology(rate)

    def updates_allowed(self) -> bool:
        """No periodic updates with `fix` (static pre-training); re-explorations call update_topology directly."""
        return not self.params.fix and super().updates_allowed()

    def growth_cost(self) -> tuple[str | None, int | None]:
        return (None, None) if self.params.fix else super().growth_cost()

    def start_epoch(self, epoch: int) -> None:
        """Re-exploration: one large prune-and-regrow at the start of every cycle, with the last step's gradient."""
        if self.re_explores_at(epoch):
            self.update_topology(self.params.large_death_rate)

    # ---- tickets and their superposition -------------------------------------------------------------
    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        super().end_epoch(epoch, record)
        e1 = epoch + 1
        if e1 == self.pretrain and self.params.include_pretrained:
            self.superposed = self.snapshot()
            save_checkpoint(self.trainer.stage_dir / "ticket-0.pt", {"model": self.superposed, "epoch": e1,
                            "method": {"masking": self.masking.state_dict()}})
        if e1 > self.pretrain and (e1 - self.pretrain) % self.params.cycle == 0:
            self.take_ticket(record)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()}

    def take_ticket(self, record: dict[str, Any]) -> None:
        t, p = self.trainer, self.params
        self.k += 1
        ticket = self.snapshot()
        save_checkpoint(t.stage_dir / f"ticket-{self.k}.pt", {"model": ticket,
                        "method": {"masking": self.masking.state_dict()}, "epoch": t.epoch})
        if self.superposed is None:
            self.superposed = ticket
        else:
            a = 1.0 / (self.k + 1 if p.include_pretrained else self.k) if p.superposing == "caa" else p.cima_factor
            self.superposed = superpose(self.superposed, ticket, a)
        names = list(maskable(self.model, self.scfg.dense_layers))
        masks = prune_global(self.superposed, names, self.target_densities[1])
        for n in names:
            self.superposed[n] = self.superposed[n] * masks[n]
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.superposed)
        if p.update_bn:
            t.train_loader.set_epoch(t.epoch)
            update_bn(model, t.train_loader)
            self.superposed = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        model.eval()
        ev = evaluate(model, t.eval_loader, t.amp)
        save_checkpoint(t.stage_dir / f"superposed-{self.k}.pt", {"model": self.superposed,
                        "method": {"masking": {"names": names, "masks": masks}}, "epoch": t.epoch, "acc": ev["acc"]})
        split = t.data.eval_name
        record.update({"ticket": self.k, f"superposed_{split}_acc": ev["acc"], f"superposed_{split}_loss": ev["loss"]})
        self.log(f"ticket {self.k}/{self.n_tickets}: superposed {split} {ev['acc']:.2f}%")
        if p.swap_superposed:  # the superposed network (BN re-estimated, its own masks) becomes the model in use
            self.model.load_state_dict(self.superposed)
            self.masking.set_masks(masks)

    @property
    def swapped(self) -> bool:
        """Whether the model in use is a swapped-in superposed network, frozen as in the original ImageNet code."""
        return self.params.swap_superposed and self.k > 0

    def members(self) -> list[dict[str, Any]]:
        name = self.stage.name
        out = [{"name": f"ticket{k}", "path": f"{name}/ticket-{k}.pt"} for k in range(1, self.k + 1)]
        if self.k:
            out.append({"name": "superposed", "path": f"{name}/superposed-{self.k}.pt"})
        return out

    def re_explores_at(self, epoch: int) -> bool:
        """Whether a re-exploration (the large prune-and-regrow) opens `epoch`."""
        p = self.params
        return (p.re_explore and not self.swapped and self.pretrain <= epoch < self.stage.epochs
                and (epoch - self.pretrain) % p.cycle == 0)

    def state_dict(self) -> dict[str, Any]:
        """GraNet's state, the tickets taken and the superposed accumulator; when the next epoch opens with a
        gradient-growth re-exploration, also the last step's gradients of the masked weights, which that regrowth
        ranks by (they are not part of the model or optimizer state), so a run resumed there regrows the same
        positions as an uninterrupted one."""
        grads = None
        if self.scfg.growth == "gradient" and self.re_explores_at(self.trainer.epoch):
            grads = {n: p.grad.detach().clone() for n, p in zip(self.masking.names, self.masking.params)
                     if p.grad is not None}
        return {**super().state_dict(), "k": self.k, "superposed": self.superposed, "last_grads": grads}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.k, self.superposed = int(state["k"]), state["superposed"]
        for n, p in zip(self.masking.names, self.masking.params):
            g = (state.get("last_grads") or {}).get(n)
            if g is not None:
                p.grad = g.to(device=p.device, dtype=p.dtype)
