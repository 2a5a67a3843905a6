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
