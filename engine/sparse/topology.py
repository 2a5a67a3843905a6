"""Topology updates: prune active weights, grow inactive ones, keep the overall density exact.

One small function per rule, each returning new bool masks. Counts are exact (top-k on scores), so the
number of active weights after prune-and-grow equals the number before, layer by layer without
redistribution and over the whole model with it.
"""

from __future__ import annotations

import math

import torch

NEG = float("-inf")


def _topk_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """A bool mask with ones at the k largest scores (k clamped to [0, numel])."""
    flat = score.flatten()
    k = max(0, min(int(k), flat.numel()))
    out = torch.zeros_like(flat, dtype=torch.bool)
    if k:
        out[torch.topk(flat, k, sorted=False).indices] = True
    return out.view_as(score)


# ---- prune -------------------------------------------------------------------------------------------
def prune_magnitude(weight: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Remove the k active weights of smallest |w| (RigL / SET / FreeTickets `magnitude`)."""
    if k <= 0:
        return mask.clone()
    score = torch.where(mask, weight.detach().abs().float(), torch.full_like(weight, NEG, dtype=torch.float))
    return _topk_mask(score, int(mask.sum()) - k) & mask


def prune_set(weight: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """SET's rule: remove the ceil(k/2) smallest positive and the k - ceil(k/2) negative weights closest to zero."""
    w = weight.detach().float()
    pos, neg = mask & (w > 0), mask & (w <= 0)
    k_pos = min(math.ceil(k / 2), int(pos.sum()))
    k_neg = min(k - k_pos, int(neg.sum()))
    k_pos = min(k - k_neg, int(pos.sum()))
    drop_pos = _topk_mask(torch.where(pos, -w, torch.full_like(w, NEG)), k_pos) & pos
    drop_neg = _topk_mask(torch.where(neg, w, torch.full_like(w, NEG)), k_neg) & neg
    return mask & ~drop_pos & ~drop_neg


def prune_threshold(weight: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """Remove every active weight with |w| below a fixed threshold (the count varies)."""
    return mask & (weight.detach().abs() >= threshold)


# ---- grow --------------------------------------------------------------------------------------------
def grow(mask: torch.Tensor, k: int, mode: str, *, grad: torch.Tensor | None = None,
         momentum: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Activate k inactive positions: `random`, the largest |grad| (`gradient`, RigL) or |momentum| (`momentum`)."""
    if k <= 0:
        return mask.clone()
    if mode == "random":
        score = torch.rand(mask.shape, generator=generator).to(mask.device)  # drawn on the CPU: same on any device
    elif mode == "gradient":
        score = torch.zeros(mask.shape, device=mask.device) if grad is None else grad.detach().abs().float()
    elif mode == "momentum":
        score = torch.zeros(mask.shape, device=mask.device) if momentum is None else momentum.detach().abs().float()
    else:
        raise ValueError(f"unknown growth mode '{mode}'")
    score = torch.where(mask, torch.full_like(score, NEG), score)
    return mask | _topk_mask(score, k)


# ---- how many to regrow where ------------------------------------------------------------------------
def redistribute(removed: list[int], active_after: list[int], sizes: list[int], mode: str,
                 weights: list[torch.Tensor] | None = None, masks: list[torch.Tensor] | None = None) -> list[int]:
    """Regrowth per layer. `none`: each layer regrows what it lost. `magnitude` / `nonzeros`: the total removed is
    shared in proportion to the layer's mean active |w| / its active count, capped at the layer's free room, the
    rest passed on, so the whole model's count is preserved exactly."""
    total = sum(removed)
    if mode == "none" or total == 0:
        return list(removed)
    if mode == "nonzeros":
        raw = [float(a) for a in active_after]
    elif mode == "magnitude":
        assert weights is not None and masks is not None
        raw = [float((w.detach().abs() * m).sum()) / max(int(m.sum()), 1) for w, m in zip(weights, masks)]
    else:
        raise ValueError(f"unknown redistribution '{mode}'")
    room = [s - a for s, a in zip(sizes, active_after)]
    out, left = [0] * len(sizes), total
    while left > 0:
        open_ = [i for i in range(len(sizes)) if out[i] < room[i]]
        if not open_:
            break
        share = [raw[i] for i in open_]
        norm = sum(share)
        if norm <= 0:
            share, norm = [1.0] * len(open_), float(len(open_))
        gave = 0
        for i, w in zip(open_, share):
            g = min(room[i] - out[i], int(left * w / norm))
            out[i] += g
            gave += g
        left -= gave
        if gave == 0:  # less than one each: hand out singles, largest share first
            for i, _ in sorted(zip(open_, share), key=lambda t: -t[1])[:left]:
                out[i] += 1
                left -= 1
    return out


# ---- schedules ---------------------------------------------------------------------------------------
def prune_rate_at(schedule: str, rate: float, minimum: float, step: int, total_steps: int) -> float:
    """The prune-and-grow fraction at a step: constant, cosine from rate to minimum, or linear to minimum."""
    t = min(max(step / max(total_steps, 1), 0.0), 1.0)
    if schedule == "constant":
        return rate
    if schedule == "cosine":
        return minimum + 0.5 * (rate - minimum) * (1 + math.cos(math.pi * t))
    if schedule == "linear":
        return rate + (minimum - rate) * t
    raise ValueError(f"unknown prune-rate schedule '{schedule}'")


def gradual_density(step: int, frequency: int, steps_per_epoch: int, init_density: float, final_density: float,
                    init_epoch: float, final_epoch: float) -> float | None:
    """GraNet/GMP's cubic schedule (Zhu & Gupta) at a pruning event, None outside the pruning window.

    i = step / f, i0 = floor(init_epoch*L/f), i1 = floor(final_epoch*L/f), n = i1 - i0, active for i0 <= i < i1:
    density(i) = final + (init - final) * (1 - (i - i0)/n)^3. As in the original, the last event leaves the
    density at final + (init - final)/n^3, so the final density is approached, not hit exactly.
    """
    i = step // frequency
    i0 = math.floor(init_epoch * steps_per_epoch / frequency)
    i1 = math.floor(final_epoch * steps_per_epoch / frequency)
    n = i1 - i0
    if n <= 0 or not i0 <= i < i1:
        return None
    return final_density + (init_density - final_density) * (1 - (i - i0) / n) ** 3
