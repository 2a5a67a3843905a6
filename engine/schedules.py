"""Learning-rate schedules of the five papers, as pure functions of (epoch, progress within the epoch).

Every rule lives here: the recipe's `[schedule]` (`lr_at`), the linear warm-up, the cyclic triangle (FGE and the
Sup-tickets cycles), step decay, EDST's phases and Sup-tickets' pre-training + cycles; methods call them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.config import ScheduleConfig
from engine.config.params import EDSTParams, SupTicketsParams


def lr_at(cfg: ScheduleConfig, base_lr: float, epoch: int, frac: float, epochs: int, start: int = 0) -> float:
    """The learning rate for 0-based `epoch` at fraction `frac` in [0, 1) of its steps.

    `start` runs a stage from that absolute epoch of the schedule (Early-Bird's main_c.py --start-epoch): epoch e
    of the stage is schedule epoch start + e, over start + `epochs` epochs.

    multistep: base * gamma^(milestones passed), a milestone m taking effect from epoch index m (PyTorch
    MultiStepLR stepped once per epoch); fractions f give milestone int(f * epochs) as FreeTickets' int(E/2).
    cosine: per step from base to min_lr over the stage, after an optional linear warm-up.
    fge: dnn-mode-connectivity train.py, per epoch with a = (epoch+1)/E: 1 up to a = 0.5, then linear to
    0.01 at a = 0.9, then 0.01.
    cyclic: fge.py's triangle per step, lr_1 at cycle edges and lr_2 at mid-cycle (cycle in epochs).
    Warm-up (any schedule but cyclic) for the first `warmup_epochs`: see `warmup_lr`.
    """
    if start:
        epoch, epochs = epoch + start, epochs + start
    name = cfg.name
    if name != "cyclic":
        warm = warmup_lr(cfg, base_lr, epoch, frac)
        if warm is not None:
            return warm
    if name == "constant":
        return base_lr
    if name == "multistep":
        marks = list(cfg.milestones) + [int(f * epochs) for f in cfg.milestone_fractions]
        return step_decay_lr(base_lr, cfg.gamma, marks, epoch)
    if name == "cosine":
        warm = cfg.warmup_epochs
        t = (epoch - warm + frac) / max(epochs - warm, 1)
        return cfg.min_lr + 0.5 * (base_lr - cfg.min_lr) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
    if name == "fge":
        a = (epoch + 1) / epochs
        if a <= 0.5:
            factor = 1.0
        elif a <= 0.9:
            factor = 1.0 - (a - 0.5) / 0.4 * 0.99
        else:
            factor = 0.01
        return base_lr * factor
    if name == "cyclic":
        return cyclic_lr(cfg.lr_1, cfg.lr_2, cfg.cycle, epoch, frac)
    raise ValueError(f"unknown schedule '{name}'")


def step_decay_lr(base_lr: float, gamma: float, milestones: Sequence[int], epoch: int) -> float:
    """base·gamma^(milestones passed), a milestone m taking effect from 0-based epoch m (MultiStepLR per epoch)."""
    return base_lr * gamma ** sum(1 for m in milestones if m <= epoch)


def cyclic_lr(lr_1: float, lr_2: float, cycle: int, epoch: int, frac: float) -> float:
    """fge.py's triangle per step: with t = ((epoch mod cycle) + frac) / cycle, lr_1 at the cycle's edges (t = 0, 1)
    and lr_2 at its middle (t = 1/2), linear in between."""
    t = ((epoch % cycle) + frac) / cycle
    if t < 0.5:
        return (1 - 2 * t) * lr_1 + 2 * t * lr_2
    return (2 * t - 1) * lr_1 + (2 - 2 * t) * lr_2


def warmup_lr(cfg: ScheduleConfig, base_lr: float, epoch: int, frac: float) -> float | None:
    """The warm-up learning rate for 0-based `epoch` (None once it is over): linear warm-up over W epochs.

    step: base·(epoch + frac)/W, rising every step (a tiny epsilon keeps the very first step off zero).
    epoch: base·(epoch + 1)/(W + 1), constant within the epoch, as the ImageNet scripts of FreeTickets,
    Sup-tickets and random pruning set it once per epoch (never reaching base during the warm-up).
    """
    w = cfg.warmup_epochs
    if not w or epoch >= w:
        return None
    if cfg.warmup_style == "epoch":
        return base_lr * (epoch + 1) / (w + 1)
    return base_lr * (epoch + frac + 1e-12) / w


def edst_boundaries(epochs: int, explore: int, phases: int) -> tuple[float, list[int], list[int]]:
    """main_EDST.py's phase bookkeeping: phase length I = (E - explore)/M (may be fractional), restart epochs
    R1 = ceil(explore + k·I) for k = 1..M-1 and mid-phase epochs R2 = ceil(explore + k·I + I/2) for k = 0..M-1
    (1-based epochs; an event at the end of epoch b acts from epoch b+1)."""
    length = (epochs - explore) / phases
    restarts = [math.ceil(explore + k * length) for k in range(1, phases)]
    mids = [math.ceil(explore + k * length + length / 2) for k in range(phases)]
    return length, restarts, mids


def edst_phase_starts(epochs: int, explore: int, phases: int) -> list[int]:
    """The 0-based first epoch of each refinement phase: `explore`, then the restart epochs R1."""
    return [explore] + edst_boundaries(epochs, explore, phases)[1]


def edst_lr(base_lr: float, epoch: int, epochs: int, explore: int, phases: int,
            refine_lr: float = 0.01, low_lr: float = 0.001,
            table: list[list[float]] | None = None) -> float:
    """EDST's learning rate for 0-based `epoch`: `base_lr` while exploring, then per refinement phase `refine_lr`
    for its first half and `low_lr` for its second (absolute values, as the original sets them).

    `table` = [[offset, lr], ...] (offsets in epochs from the phase's start, the first 0, increasing) replaces the
    two halves: in every phase the lr of the last row whose offset is <= the epoch's offset. ImageNet main.py's
    [[0, 0.01], [30, 0.001], [60, 0.0001]] over 70-epoch phases gives 0.01 at epochs 30/100/170/240, 0.001 at
    60/130/200/270 and 0.0001 at 90/160/230/300.
    """
    if table is not None:
        starts = edst_phase_starts(epochs, explore, phases)
        if epoch < starts[0]:
            return base_lr
        offset = epoch - max(s for s in starts if s <= epoch)
        return [lr for off, lr in table if off <= offset][-1]
    _, restarts, mids = edst_boundaries(epochs, explore, phases)
    events = [(explore, 0, refine_lr)] + [(b, 1, low_lr) for b in mids] + [(b, 2, refine_lr) for b in restarts]
    passed = [e for e in events if e[0] < epoch + 1]
    return max(passed)[2] if passed else base_lr


def edst_stage_lr(cfg: ScheduleConfig, p: EDSTParams, base_lr: float, epoch: int, frac: float, epochs: int) -> float:
    """An EDST stage's learning rate: the warm-up of its `[schedule]` while exploring, then `edst_lr`'s absolute
    per-phase rates (the rest of the schedule table is unused, as `--nolrsche` / ImageNet's train_loop)."""
    if epoch < p.epochs_explo:
        warm = warmup_lr(cfg, base_lr, epoch, frac)
        if warm is not None:
            return warm
    return edst_lr(base_lr, epoch, epochs, p.epochs_explo, p.model_num, p.refine_lr, p.low_lr,
                   p.phase_schedule or None)


def suptickets_lr(cfg: ScheduleConfig, p: SupTicketsParams, base_lr: float, epoch: int, frac: float,
                  epochs: int) -> float:
    """A Sup-tickets stage's learning rate. Pre-training (the first P epochs, `p.budget`): the warm-up of its
    `[schedule]`, then x0.1 at each milestone (`p.milestones`, else int(P/2) and int(3P/4)); then the cyclic
    triangle from lr_1 to lr_2 and back every `p.cycle` epochs, restarting at epoch P."""
    pretrain = p.budget(epochs)[0]
    if epoch < pretrain:
        warm = warmup_lr(cfg, base_lr, epoch, frac)
        if warm is not None:
            return warm
        marks = p.milestones or (int(0.5 * pretrain), int(0.75 * pretrain))
        return step_decay_lr(base_lr, 0.1, marks, epoch)
    return cyclic_lr(p.lr_1, p.lr_2, p.cycle, epoch - pretrain, frac)
