"""EDST ensemble (FreeTickets' `main_EDST.py`): M free tickets from one dynamic-sparse-training run.

    masks <- ERK at the density; DST prune-and-grow every update_frequency steps throughout
    exploration: epochs 1..E_explo at the base learning rate
    for each refinement phase k = 1..M (I = (E - E_explo)/M epochs each):
        lr 0.01 for the first half, 0.001 for the second (or per `phase_schedule`: ImageNet's 0.01 / 0.001 / 0.0001)
        ticket k <- the phase's best checkpoint on the validation split
        between phases: one large prune-and-regrow (large_death_rate), lr back to 0.01
    ensemble <- mean of the M tickets' softmax outputs

The stage's `[schedule]` warm-up (warmup_epochs, warmup_style) applies during exploration; the rest of the
schedule table is not used (EDST sets its own absolute rates, as `--nolrsche` / ImageNet's train_loop do).
"""

from __future__ import annotations

import math
from typing import Any

from engine.io import save_checkpoint
from engine.methods.base import register_method
from engine.methods.dst import DST
from engine.schedules import edst_boundaries, edst_phase_starts, edst_stage_lr
from engine.sparse.topology import prune_rate_at


@register_method("edst")
class EDST(DST):
    """DST with an exploration phase and M refinement phases, each leaving a ticket."""

    def setup(self) -> None:
        super().setup()
        p, epochs = self.params, self.stage.epochs
        self.phase_len, self.restarts, _ = edst_boundaries(epochs, p.epochs_explo, p.model_num)
        self.best = -math.inf
        self.saved: list[int] = []

    def lr(self, epoch: int, frac: float) -> float:
        """The warm-up of the stage's schedule while exploring, then EDST's absolute per-phase rates."""
        st = self.stage
        return edst_stage_lr(st.schedule, self.params, st.optimizer.lr, epoch, frac, st.epochs)

    def prune_rate(self) -> float:
        """The topology-update fraction; with prune_rate_restart the decay starts afresh after every jump."""
        if not self.params.prune_rate_restart:
            return super().prune_rate()
        c, t, p, epochs = self.scfg, self.trainer, self.params, self.stage.epochs
        per_epoch = len(t.train_loader)
        bounds = edst_phase_starts(epochs, p.epochs_explo, p.model_num)[1:] + [epochs]
        start = max([0] + [b for b in bounds[:-1] if b * per_epoch <= t.step])
        end = min(b for b in bounds if b > start)
        return prune_rate_at(c.prune_rate_schedule, c.prune_rate, c.prune_rate_min, t.step - start * per_epoch,
                             (end - start) * per_epoch)

    def phase(self, epoch1: int) -> int:
        """The 0-based refinement phase of 1-based epoch `epoch1` (-1 while exploring)."""
        p = self.params
        if epoch1 <= p.epochs_explo:
            return -1
        return min(int((epoch1 - p.epochs_explo - 1) // self.phase_len), p.model_num - 1)

    def current_member(self) -> int:
        return self.phase(self.trainer.epoch)

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        super().end_epoch(epoch, record)
        e1, split = epoch + 1, self.trainer.data.eval_name
        k = self.phase(e1)
        acc = record.get(f"{split}_acc")
        if k >= 0 and acc is not None and acc > self.best:
            self.best = acc
            self.save_ticket(k, e1, acc)
        if e1 == self.params.epochs_explo:
            self.best = -math.inf  # each phase picks its own best (the original carried exploration's best over)
        if e1 in self.restarts:
            self.best = -math.inf
            if self.params.jump:
                self.update_topology(self.params.large_death_rate)
            record["jump"] = True

    def save_ticket(self, k: int, epoch1: int, acc: float) -> None:
        t = self.trainer
        save_checkpoint(t.stage_dir / f"ticket-{k + 1}.pt", {
            "model": t.model.state_dict(), "method": {"masking": self.masking.state_dict()},
            "epoch": epoch1, "acc": acc})
        if k not in self.saved:
            self.saved.append(k)

    def members(self) -> list[dict[str, Any]]:
        name = self.stage.name
        return [{"name": f"ticket{k + 1}", "path": f"{name}/ticket-{k + 1}.pt"} for k in sorted(self.saved)]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best": self.best, "saved": list(self.saved)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best, self.saved = float(state["best"]), list(state["saved"])
