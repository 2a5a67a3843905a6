"""Channel masks from BatchNorm scales (network slimming, Early-Bird tickets: You et al., ICLR 2020) and the
Early-Bird detector that watches them settle.

    scales   <- |gamma| of every BatchNorm2d, in module order, as one vector of length N
    mask_p   <- scales > sorted(scales)[int(N * p)]            (one global threshold; strict >)
    dist     <- fraction of the N positions where two masks differ (engine.sparse.masks.mask_distance)
    EB at p  <- the window of the last W masks is full and the newest mask is within `threshold` of each older one

Ties: with the strict comparison every channel equal to the threshold is pruned, so at least int(N*p)+1 channels
go (more when values tie; at initialisation every gamma is 0.5 and the mask is empty, as in the original).
Pure functions of tensors and modules; engine/sparse/channel_prune.py turns the masks into a smaller network.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from engine.sparse.masks import mask_distance

__all__ = [
    "EarlyBird",
    "bn_layers",
    "bn_scales",
    "channel_mask",
    "check_ratio",
    "detect",
    "detector_trace",
    "global_threshold",
    "layer_masks",
]


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """Every BatchNorm2d of `model` in module order (all of them count, pre-activation BNs included)."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@torch.no_grad()
def bn_scales(model: nn.Module) -> torch.Tensor:
    """|gamma| of every BatchNorm2d, concatenated in module order: a float32 CPU vector of length N."""
    bns = bn_layers(model)
    if not bns:
        raise ValueError("the model has no BatchNorm2d layer, so Early-Bird channel masks are undefined")
    return torch.cat([m.weight.detach().abs().flatten().float().cpu() for m in bns])


def check_ratio(ratio: float) -> float:
    """`ratio` as a float, or ValueError when it is not a pruning ratio in [0, 1)."""
    r = float(ratio)
    if not 0.0 <= r < 1.0 or math.isnan(r):
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio!r}")
    return r


def global_threshold(scales: torch.Tensor, ratio: float) -> float:
    """The value at sorted index int(N * ratio) of the ascending scales (the original's `thre`)."""
    r = check_ratio(ratio)
    flat = scales.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("no scales to threshold")
    return float(torch.sort(flat).values[int(flat.numel() * r)])


def channel_mask(scales: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask of the channels kept at pruning ratio `ratio`: scale > the global threshold (strict)."""
    return scales.reshape(-1) > global_threshold(scales, ratio)


def layer_masks(model: nn.Module, ratio: float, min_channels: int = 1) -> list[torch.Tensor]:
    """Per-BN boolean keep masks at `ratio` from the global threshold, each keeping at least `min_channels`
    (a layer that would lose every channel keeps its largest-|gamma| ones, so no layer disappears)."""
    bns = bn_layers(model)
    scales = bn_scales(model)
    keep = channel_mask(scales, ratio)
    out, start = [], 0
    for bn in bns:
        n = bn.num_features
        m = keep[start:start + n].clone()
        s = scales[start:start + n]
        need = min(max(int(min_channels), 0), n)
        if int(m.sum()) < need:
            m[torch.argsort(s, descending=True, stable=True)[:need]] = True
        out.append(m)
        start += n
    return out


def detector_trace(masks: Sequence[torch.Tensor], window: int = 5) -> list[float]:
    """For each observation k, the largest distance from mask k to each of the `window - 1` masks before it
    (what the EB detector compares with its threshold); NaN while fewer than `window` masks exist."""
    if window < 2:
        raise ValueError(f"the EB window needs at least 2 masks, got {window}")
    out = []
    for k in range(len(masks)):
        if k < window - 1:
            out.append(float("nan"))
        else:
            out.append(max(mask_distance(masks[k], masks[k - j]) for j in range(1, window)))
    return out


def detect(masks: Sequence[torch.Tensor], window: int = 5, threshold: float = 0.1) -> int | None:
    """The first observation index k at which the EB detector fires (every distance from mask k to the
    `window - 1` masks before it is <= threshold), or None. Index k is the mask after k training epochs."""
    for k, d in enumerate(detector_trace(masks, window)):
        if not math.isnan(d) and d <= threshold:
            return k
    return None


class EarlyBird:
    """The streaming EB detector at one pruning ratio (the original's `EarlyBird(percent, epoch_keep=5)`).

    `observe(mask)` appends to a FIFO of the last `window` masks; once it is full, it compares the NEWEST mask
    with each of the older ones (not consecutive pairs) and fires when every distance is <= `threshold`.
    `found` keeps the first observation index that fired; the detector keeps observing afterwards.
    """

    def __init__(self, ratio: float, window: int = 5, threshold: float = 0.1) -> None:
        if window < 2:
            raise ValueError(f"the EB window needs at least 2 masks, got {window}")
        self.ratio = check_ratio(ratio)
        self.window = int(window)
        self.threshold = float(threshold)
        self.masks: deque[torch.Tensor] = deque(maxlen=self.window)
        self.seen = 0  # observations so far
        self.found: int | None = None
        self.trace: list[float] = []  # per observation: max distance over the window (NaN until full)

    def observe(self, mask: torch.Tensor) -> bool:
        """Add the mask of observation `self.seen`; True when the window is full and every distance is small."""
        self.masks.append(mask.reshape(-1).bool().cpu())
        self.seen += 1
        if len(self.masks) < self.window:
            self.trace.append(float("nan"))
            return False
        newest = self.masks[-1]
        dists = [mask_distance(newest, m) for m in list(self.masks)[:-1]]
        self.trace.append(max(dists))
        fired = all(d <= self.threshold for d in dists)
        if fired and self.found is None:
            self.found = self.seen - 1
        return fired

    def state_dict(self) -> dict[str, Any]:
        """The window, the counters and the trace, for a checkpoint (the search resumes from it)."""
        return {"ratio": self.ratio, "window": self.window, "threshold": self.threshold,
                "masks": list(self.masks), "seen": self.seen, "found": -1 if self.found is None else self.found,
                "trace": list(self.trace)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        self.masks = deque((m.bool() for m in state["masks"]), maxlen=self.window)
        self.seen = int(state["seen"])
        self.found = None if int(state["found"]) < 0 else int(state["found"])
        self.trace = [float(x) for x in state["trace"]]
