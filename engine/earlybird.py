"""Early-Bird tickets (You et al., ICLR 2020): channel masks from BN scales, mask distance, the EB detector, and
real channel pruning of the network-slimming VGG and PreResNet (engine/models/earlybird.py) and of the ImageNet
ResNets (engine/models/imagenet.py; only each block's inner widths).

    scales   <- |gamma| of every BatchNorm2d, in module order, as one vector of length N
    mask_p   <- scales > sorted(scales)[int(N * p)]            (one global threshold; strict >)
    dist     <- fraction of the N positions where two masks differ (normalised Hamming)
    EB at p  <- the window of the last W masks is full and the newest mask is within `threshold` of each older one
    prune    <- a smaller network of the kept channels (cfg), the surviving weights copied into it

Ties: with the strict comparison every channel equal to the threshold is pruned, so at least int(N*p)+1 channels
go (more when values tie; at initialisation every gamma is 0.5 and the mask is empty, as in the original).
Pure functions of tensors and modules; the methods in engine/methods/earlybird.py call them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from engine.config.params import ratio_tag
from engine.flops import dense_forward_flops, param_counts
from engine.models.earlybird import EBPreResNet, SlimmingVGG
from engine.models.imagenet import BasicBlock, ImageNetResNet

__all__ = [
    "EarlyBird",
    "PruneResult",
    "bn_layers",
    "bn_scales",
    "channel_mask",
    "detect",
    "detector_trace",
    "distance_matrix",
    "global_threshold",
    "layer_masks",
    "mask_distance",
    "model_cost",
    "prune_channels",
    "pruned_cfg",
    "ratio_tag",
]


# ---------------------------------------------------------------------------------------------------------
# masks and distances
# ---------------------------------------------------------------------------------------------------------


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


def _check_ratio(ratio: float) -> float:
    r = float(ratio)
    if not 0.0 <= r < 1.0 or math.isnan(r):
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio!r}")
    return r


def global_threshold(scales: torch.Tensor, ratio: float) -> float:
    """The value at sorted index int(N * ratio) of the ascending scales (the original's `thre`)."""
    r = _check_ratio(ratio)
    flat = scales.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("no scales to threshold")
    return float(torch.sort(flat).values[int(flat.numel() * r)])


def channel_mask(scales: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask of the channels kept at pruning ratio `ratio`: scale > the global threshold (strict)."""
    return scales.reshape(-1) > global_threshold(scales, ratio)


def mask_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised Hamming distance: the fraction of positions where the two masks differ."""
    a, b = a.reshape(-1).bool(), b.reshape(-1).bool()
    if a.numel() != b.numel():
        raise ValueError(f"masks of different lengths ({a.numel()} and {b.numel()}) cannot be compared")
    if a.numel() == 0:
        raise ValueError("empty masks")
    return float((a != b).double().mean())


def distance_matrix(masks: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """[K, K] float64 pairwise normalised Hamming distances of K equally long masks (rows of a [K, N] tensor).

    Computed as (|a| + |b| - 2 a.b) / N with one matrix product, exact for N < 2**53.
    """
    m = masks if isinstance(masks, torch.Tensor) else torch.stack([x.reshape(-1) for x in masks])
    m = m.reshape(m.shape[0], -1).double()
    n = m.shape[1]
    if n == 0:
        raise ValueError("empty masks")
    ones = m.sum(1)
    d = (ones[:, None] + ones[None, :] - 2.0 * (m @ m.T)) / n
    d.fill_diagonal_(0.0)
    return d.clamp_(min=0.0)


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
        self.ratio = _check_ratio(ratio)
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
        return {"ratio": self.ratio, "window": self.window, "threshold": self.threshold,
                "masks": list(self.masks), "seen": self.seen, "found": -1 if self.found is None else self.found,
                "trace": list(self.trace)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = deque((m.bool() for m in state["masks"]), maxlen=self.window)
        self.seen = int(state["seen"])
        self.found = None if int(state["found"]) < 0 else int(state["found"])
        self.trace = [float(x) for x in state["trace"]]


# ---------------------------------------------------------------------------------------------------------
# real channel pruning
# ---------------------------------------------------------------------------------------------------------


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


def _inner_bns(block: nn.Module) -> list[nn.BatchNorm2d]:
    """The BNs of an ImageNet ResNet block whose channels pruning removes: bn1 (basic), bn1 and bn2 (bottleneck)."""
    return [block.bn1] if isinstance(block, BasicBlock) else [block.bn1, block.bn2]


def _masks_by_bn(model: nn.Module, masks: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
    """id(BN) -> its mask, checking that `masks` has one entry of the right length per BatchNorm2d."""
    bns = bn_layers(model)
    if len(masks) != len(bns) or any(m.numel() != bn.num_features for m, bn in zip(masks, bns)):
        raise ValueError(f"expected one mask per BatchNorm2d ({len(bns)}, in module order) of matching length, "
                         f"got {len(masks)}")
    return {id(bn): m for bn, m in zip(bns, masks)}


def pruned_cfg(model: nn.Module, masks: Sequence[torch.Tensor]) -> list[int | str]:
    """The `cfg=` of the pruned network: VGG kept counts with 'M' in place; PreResNet one entry per BN;
    ImageNet ResNet the kept counts of each block's inner BNs (bn1, and bn2 of a bottleneck), in block order."""
    if isinstance(model, ImageNetResNet):
        by_bn = _masks_by_bn(model, masks)
        return [int(by_bn[id(bn)].sum()) for b in model.blocks() for bn in _inner_bns(b)]
    counts = [int(m.sum()) for m in masks]
    if isinstance(model, SlimmingVGG):
        it = iter(counts)
        return ["M" if v == "M" else next(it) for v in model.cfg]
    if isinstance(model, EBPreResNet):
        return counts
    raise ValueError(_UNSUPPORTED.format(type(model).__name__))


_UNSUPPORTED = ("Early-Bird channel pruning supports the slimming VGG (eb-vggD, cifar-vggD), the EB PreResNet "
                "(eb-preresnetD) and the ImageNet ResNets (resnet18/34/50/101/152, wide_resnet50_2/101_2); got {}")


@dataclass
class PruneResult:
    """A physically pruned network and how it was obtained."""

    model: nn.Module
    cfg: list[int | str]
    masks: list[torch.Tensor]  # per BN of the source network: the channels kept
    ratio: float
    threshold: float
    kept: int = 0  # channels kept over all BNs (after the per-layer minimum)
    total: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def _idx(mask: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.nonzero(mask).flatten().to(device)


@torch.no_grad()
def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, idx: torch.Tensor | None = None) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        s = getattr(src, name)
        getattr(dst, name).copy_(s if idx is None else s.index_select(0, idx))
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


@torch.no_grad()
def _copy_vgg(src: SlimmingVGG, dst: SlimmingVGG, masks: Sequence[torch.Tensor]) -> None:
    dev = src.classifier.weight.device
    convs_s = [m for m in src.feature if isinstance(m, nn.Conv2d)]
    bns_s = [m for m in src.feature if isinstance(m, nn.BatchNorm2d)]
    convs_d = [m for m in dst.feature if isinstance(m, nn.Conv2d)]
    bns_d = [m for m in dst.feature if isinstance(m, nn.BatchNorm2d)]
    prev = torch.arange(convs_s[0].in_channels, device=dev)
    for cs, bs, cd, bd, m in zip(convs_s, bns_s, convs_d, bns_d, masks):
        idx = _idx(m, dev)
        cd.weight.copy_(cs.weight.index_select(0, idx).index_select(1, prev))
        _copy_bn(bd, bs, idx)
        prev = idx
    dst.classifier.weight.copy_(src.classifier.weight.index_select(1, prev))
    dst.classifier.bias.copy_(src.classifier.bias)


def _blocks(model: EBPreResNet) -> list[nn.Module]:
    return [b for layer in (model.layer1, model.layer2, model.layer3) for b in layer]


@torch.no_grad()
def _copy_preresnet(src: EBPreResNet, dst: EBPreResNet, masks: Sequence[torch.Tensor]) -> None:
    dev = src.fc.weight.device
    unpruned = all(bool((s.indexes != 0).all()) for s in src.modules() if hasattr(s, "set_indexes"))
    if not unpruned:
        raise ValueError("Early-Bird pruning of a PreResNet needs an unpruned source network "
                         "(its channel selections are not all ones)")
    dst.conv1.weight.copy_(src.conv1.weight)
    it = iter(masks)
    for bs, bd in zip(_blocks(src), _blocks(dst)):
        m1, m2, m3 = next(it), next(it), next(it)
        i1, i2, i3 = _idx(m1, dev), _idx(m2, dev), _idx(m3, dev)
        _copy_bn(bd.bn1, bs.bn1)  # the pre-activation BN keeps its full width ...
        bd.select.set_indexes(m1.to(bd.select.indexes.device))  # ... and the selection passes on the kept ones
        bd.conv1.weight.copy_(bs.conv1.weight.index_select(0, i2).index_select(1, i1))
        _copy_bn(bd.bn2, bs.bn2, i2)
        bd.conv2.weight.copy_(bs.conv2.weight.index_select(0, i3).index_select(1, i2))
        _copy_bn(bd.bn3, bs.bn3, i3)
        bd.conv3.weight.copy_(bs.conv3.weight.index_select(1, i3))  # output width = residual width, kept
        if bs.downsample is not None:
            bd.downsample.load_state_dict(bs.downsample.state_dict())
    mf = next(it)
    _copy_bn(dst.bn, src.bn)
    dst.select.set_indexes(mf.to(dst.select.indexes.device))
    dst.fc.weight.copy_(src.fc.weight.index_select(1, _idx(mf, dev)))
    dst.fc.bias.copy_(src.fc.bias)


@torch.no_grad()
def _copy_imagenet_resnet(src: ImageNetResNet, dst: ImageNetResNet, masks: Sequence[torch.Tensor]) -> None:
    """Copy the kept weights: the stem, each block's output side, the downsample and the fc whole; each block's
    inner convs sliced by its inner BN masks (conv1 out / conv2 in; bottleneck also conv2 out / conv3 in)."""
    if src.kind != dst.kind or len(src.blocks()) != len(dst.blocks()):
        raise ValueError(f"pruned network ({dst.arch}) does not match the source ({src.arch})")
    dev = src.fc.weight.device
    by_bn = _masks_by_bn(src, masks)
    dst.conv1.weight.copy_(src.conv1.weight)
    _copy_bn(dst.bn1, src.bn1)
    for bs, bd in zip(src.blocks(), dst.blocks()):
        i1 = _idx(by_bn[id(bs.bn1)], dev)
        bd.conv1.weight.copy_(bs.conv1.weight.index_select(0, i1))
        _copy_bn(bd.bn1, bs.bn1, i1)
        if isinstance(bs, BasicBlock):
            bd.conv2.weight.copy_(bs.conv2.weight.index_select(1, i1))  # output = residual width, kept
            _copy_bn(bd.bn2, bs.bn2)
        else:
            i2 = _idx(by_bn[id(bs.bn2)], dev)
            bd.conv2.weight.copy_(bs.conv2.weight.index_select(0, i2).index_select(1, i1))
            _copy_bn(bd.bn2, bs.bn2, i2)
            bd.conv3.weight.copy_(bs.conv3.weight.index_select(1, i2))  # output = residual width, kept
            _copy_bn(bd.bn3, bs.bn3)
        if bs.downsample is not None:
            bd.downsample.load_state_dict(bs.downsample.state_dict())
    dst.fc.load_state_dict(src.fc.state_dict())


def prune_channels(model: nn.Module, ratio: float, build: Callable[[list[int | str]], nn.Module],
                   min_channels: int = 1) -> PruneResult:
    """Prune `model` at `ratio` (one global |gamma| threshold) into `build(cfg)`, copying the surviving weights.

    VGG: each conv keeps [kept out, kept in] (the first conv all 3 inputs), each BN its kept entries, the
    Linear the columns of the last BN's kept channels. PreResNet: each block's pre-activation bn1 stays whole
    and its channel selection takes bn1's mask; conv1 [kept bn2, kept bn1], conv2 [kept bn3, kept bn2], conv3
    [all, kept bn3] (residual widths are not pruned); the stem conv and downsample convs are copied whole; the
    head BN stays whole with its selection, the fc takes the kept columns. ImageNet ResNet (resprune.py's
    ResNet-18 scheme, also used for the bottlenecks): only each block's inner widths shrink (bn1; bn2 too in a
    bottleneck); the stem, every block's output conv/BN, the downsample and the fc are copied whole, so the
    residual widths stay. The masks still come from the threshold over every BN (residual BNs included). The new
    network is returned on the source's device, in the source's training mode.
    """
    if not isinstance(model, (SlimmingVGG, EBPreResNet, ImageNetResNet)):
        raise ValueError(_UNSUPPORTED.format(type(model).__name__))
    r = _check_ratio(ratio)
    scales = bn_scales(model)
    thr = global_threshold(scales, r)
    masks = layer_masks(model, r, min_channels)
    cfg = pruned_cfg(model, masks)
    dev = next(model.parameters()).device
    new = build(cfg).to(dev)
    if isinstance(model, SlimmingVGG):
        _copy_vgg(model, new, masks)
    elif isinstance(model, ImageNetResNet):
        if not isinstance(new, ImageNetResNet):
            raise ValueError(f"build(cfg) must return an ImageNet ResNet, got {type(new).__name__}")
        _copy_imagenet_resnet(model, new, masks)
    else:
        _copy_preresnet(model, new, masks)
    new.train(model.training)
    kept = sum(int(m.sum()) for m in masks)
    return PruneResult(new, cfg, masks, r, thr, kept=kept, total=int(scales.numel()))


def model_cost(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> dict[str, int]:
    """{"params": every parameter (channel selections included, as the original counts them), "flops": dense
    forward FLOPs per example of the Conv/Linear layers (engine.flops convention: a multiply-add is 2)}."""
    return {"params": int(param_counts(model)["params"]), "flops": int(dense_forward_flops(model, input_shape))}
