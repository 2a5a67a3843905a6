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
    return topk_rows(score.reshape(1, -1), k).view_as(score)


def topk_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """[G, N] bool with ones at the k largest scores of every row: one top-k and one scatter for all G rows."""
    k = max(0, min(int(k), scores.shape[1]))
    out = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if k:
        out.scatter_(1, torch.topk(scores, k, dim=1, sorted=False).indices, True)
    return out


def groups(tensors: list[torch.Tensor], ks: list[int]) -> list[tuple[list[int], int]]:
    """Indices of the tensors that one batched top-k can serve together (same size, same k, same device), with k."""
    out: dict[tuple[int, int, torch.device], list[int]] = {}
    for i, (t, k) in enumerate(zip(tensors, ks)):
        out.setdefault((t.numel(), int(k), t.device), []).append(i)
    return [(idx, key[1]) for key, idx in out.items()]


def _rows(tensors: list[torch.Tensor], idx: list[int]) -> torch.Tensor:
    """The tensors at `idx` as the rows of one [G, N] tensor (a view when there is just one)."""
    if len(idx) == 1:
        return tensors[idx[0]].reshape(1, -1)
    return torch.stack([tensors[i].reshape(-1) for i in idx])


# ---- prune -------------------------------------------------------------------------------------------
def prune_magnitude(weight: torch.Tensor, mask: torch.Tensor, k: int, active: int | None = None) -> torch.Tensor:
    """Remove the k active weights of smallest |w| (RigL / SET / FreeTickets `magnitude`); `active`, the mask's
    count when the caller knows it, saves a host sync."""
    if k <= 0:
        return mask
    active = int(mask.sum()) if active is None else active
    return prune_magnitude_many([weight], [mask], [k], [active])[0]


def prune_magnitude_many(weights: list[torch.Tensor], masks: list[torch.Tensor], removes: list[int],
                         actives: list[int]) -> list[torch.Tensor]:
    """`prune_magnitude` for many layers from their known active counts: one top-k per group of equally sized
    layers keeping as many, no host sync. Each result has exactly active - remove ones (top-k is exact)."""
    out = list(masks)  # layers with nothing to do keep their mask (masks are never changed in place)
    keeps = [max(a - max(k, 0), 0) for a, k in zip(actives, removes)]
    todo = [i for i, k in enumerate(removes) if k > 0]
    for idx, keep in groups([masks[i] for i in todo], [keeps[i] for i in todo]):
        idx = [todo[j] for j in idx]
        mask_rows = _rows(masks, idx)
        score = _rows([w.detach() for w in weights], idx).abs().float().masked_fill_(~mask_rows, NEG)
        kept = topk_rows(score, keep) & mask_rows
        for row, i in zip(kept, idx):
            out[i] = row.view_as(masks[i])
    return out


def prune_set(weight: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """SET's rule: remove the ceil(k/2) smallest positive and the k - ceil(k/2) negative weights closest to zero."""
    return prune_set_many([weight], [mask], [k])[0][0]


def prune_set_many(weights: list[torch.Tensor], masks: list[torch.Tensor],
                   removes: list[int]) -> tuple[list[torch.Tensor], list[int]]:
    """`prune_set` for many layers, and how many each lost: the positive and negative counts of all layers are
    read in one host sync (how many of each sign to take depends on them)."""
    if not masks:
        return [], []
    ws = [w.detach().float() for w in weights]
    pos = [m & (w > 0) for w, m in zip(ws, masks)]
    neg = [m & (w <= 0) for w, m in zip(ws, masks)]
    counts = torch.stack([t.sum() for t in pos + neg]).tolist()
    n_pos, n_neg = counts[:len(masks)], counts[len(masks):]
    out, lost = [], []
    for w, m, p, q, k, a, b in zip(ws, masks, pos, neg, removes, n_pos, n_neg):
        if k <= 0:
            out.append(m)
            lost.append(0)
            continue
        k_pos = min(math.ceil(k / 2), a)
        k_neg = min(k - k_pos, b)
        k_pos = min(k - k_neg, a)
        drop_pos = _topk_mask(torch.where(p, -w, torch.full_like(w, NEG)), k_pos) & p
        drop_neg = _topk_mask(torch.where(q, w, torch.full_like(w, NEG)), k_neg) & q
        out.append(m & ~drop_pos & ~drop_neg)
        lost.append(k_pos + k_neg)
    return out, lost


def prune_threshold(weight: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """Remove every active weight with |w| below a fixed threshold (the count varies)."""
    return mask & (weight.detach().abs() >= threshold)


# ---- grow --------------------------------------------------------------------------------------------
def grow(mask: torch.Tensor, k: int, mode: str, *, grad: torch.Tensor | None = None,
         momentum: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Activate k inactive positions: `random`, the largest |grad| (`gradient`, RigL) or |momentum| (`momentum`)."""
    return grow_many([mask], [k], mode, grads=[grad], momenta=[momentum], generator=generator)[0]


def grow_many(masks: list[torch.Tensor], ks: list[int], mode: str, *, grads: list[torch.Tensor | None] | None = None,
              momenta: list[torch.Tensor | None] | None = None,
              generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """`grow` for many layers: one top-k per group of equally sized layers growing as many, no host sync.

    Random scores are drawn on the masks' device (`generator` must live there): no host-to-device copy of a
    weight-sized tensor per update. Each result gains exactly k ones when k fits in the layer's free room."""
    if mode not in ("random", "gradient", "momentum"):
        raise ValueError(f"unknown growth mode '{mode}'")
    source = (grads if mode == "gradient" else momenta) or [None] * len(masks)
    out = list(masks)  # layers with nothing to do keep their mask (masks are never changed in place)
    todo = [i for i, k in enumerate(ks) if k > 0]
    for idx, k in groups([masks[i] for i in todo], [ks[i] for i in todo]):
        idx = [todo[j] for j in idx]
        mask_rows = _rows(masks, idx)
        if mode == "random":
            score = torch.rand(mask_rows.shape, generator=generator, device=mask_rows.device)
        else:  # a layer without a gradient (momentum) scores zero everywhere
            rows = [torch.zeros_like(masks[i], dtype=torch.float) if source[i] is None else source[i].detach()
                    for i in idx]
            score = _rows(rows, list(range(len(idx)))).abs().float()  # abs() makes a new tensor to fill
        score = score.masked_fill_(mask_rows, NEG)
        grown = mask_rows | topk_rows(score, k)
        for row, i in zip(grown, idx):
            out[i] = row.view_as(masks[i])
    return out


# ---- how many to regrow where ------------------------------------------------------------------------
def redistribute(removed: list[int], active_after: list[int], sizes: list[int], mode: str,
                 magnitudes: list[float] | None = None) -> list[int]:
    """Regrowth per layer. `none`: each layer regrows what it lost. `magnitude` / `nonzeros`: the total removed is
    shared in proportion to the layer's mean active |w| (`magnitudes`, see `mean_magnitudes`) / its active count,
    capped at the layer's free room, the rest passed on, so the whole model's count is preserved exactly."""
    total = sum(removed)
    if mode == "none" or total == 0:
        return list(removed)
    if mode == "nonzeros":
        raw = [float(a) for a in active_after]
    elif mode == "magnitude":
        if magnitudes is None:
            raise ValueError("magnitude redistribution needs the layers' mean active |w|")
        raw = [float(v) for v in magnitudes]
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


def mean_magnitudes(weights: list[torch.Tensor], masks: list[torch.Tensor], actives: list[int]) -> list[float]:
    """Each layer's mean |w| over its active weights, all read in one host sync."""
    sums = torch.stack([(w.detach().abs().float() * m).sum() for w, m in zip(weights, masks)]).tolist()
    return [v / max(a, 1) for v, a in zip(sums, actives)]


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
