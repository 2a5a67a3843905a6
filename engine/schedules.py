"""Learning-rate schedules of the five papers, as pure functions of (epoch, progress within the epoch)."""

from __future__ import annotations

import math

from engine.config import ScheduleConfig


def lr_at(cfg: ScheduleConfig, base_lr: float, epoch: int, frac: float, epochs: int) -> float:
    """The learning rate for 0-based `epoch` at fraction `frac` in [0, 1) of its steps.

    multistep: base * gamma^(milestones passed), a milestone m taking effect from epoch index m (PyTorch
    MultiStepLR stepped once per epoch); fractions f give milestone int(f * epochs) as FreeTickets' int(E/2).
    cosine: per step from base to min_lr over the stage, after an optional linear warm-up.
    fge: dnn-mode-connectivity train.py, per epoch with a = (epoch+1)/E: 1 up to a = 0.5, then linear to
    0.01 at a = 0.9, then 0.01.
    cyclic: fge.py's triangle per step, lr_1 at cycle edges and lr_2 at mid-cycle (cycle in epochs).
    """
    name = cfg.name
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs and name != "cyclic":
        return base_lr * (epoch + frac + 1e-12) / cfg.warmup_epochs
    if name == "constant":
        return base_lr
    if name == "multistep":
        marks = list(cfg.milestones) + [int(f * epochs) for f in cfg.milestone_fractions]
        return base_lr * cfg.gamma ** sum(1 for m in marks if m <= epoch)
    if name == "cosine":
        start = cfg.warmup_epochs
        t = (epoch - start + frac) / max(epochs - start, 1)
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
        t = ((epoch % cfg.cycle) + frac) / cfg.cycle
        if t < 0.5:
            return (1 - 2 * t) * cfg.lr_1 + 2 * t * cfg.lr_2
        return (2 * t - 1) * cfg.lr_1 + (2 - 2 * t) * cfg.lr_2
    raise ValueError(f"unknown schedule '{name}'")


def edst_boundaries(epochs: int, explore: int, phases: int) -> tuple[float, list[int], list[int]]:
    """main_EDST.py's phase bookkeeping: phase length I = (E - explore)/M (may be fractional), restart epochs
    R1 = ceil(explore + k·I) for k = 1..M-1 and mid-phase epochs R2 = ceil(explore + k·I + I/2) for k = 0..M-1
    (1-based epochs; an event at the end of epoch b acts from epoch b+1)."""
    length = (epochs - explore) / phases
    restarts = [math.ceil(explore + k * length) for k in range(1, phases)]
    mids = [math.ceil(explore + k * length + length / 2) for k in range(phases)]
    return length, restarts, mids


def edst_lr(base_lr: float, epoch: int, epochs: int, explore: int, phases: int,
            refine_lr: float = 0.01, low_lr: float = 0.001) -> float:
    """EDST's learning rate for 0-based `epoch`: `base_lr` while exploring, then per refinement phase `refine_lr`
    for its first half and `low_lr` for its second (absolute values, as the original sets them)."""
    _, restarts, mids = edst_boundaries(epochs, explore, phases)
    events = [(explore, 0, refine_lr)] + [(b, 1, low_lr) for b in mids] + [(b, 2, refine_lr) for b in restarts]
    passed = [e for e in events if e[0] < epoch + 1]
    return max(passed)[2] if passed else base_lr
