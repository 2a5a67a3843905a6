"""Real channel pruning (network slimming's vggprune.py / resprune.py, as Early-Bird uses it): a smaller network
of the channels a mask keeps, the surviving weights copied into it, and what it costs.

    masks    <- per BatchNorm2d, the channels above the global |gamma| threshold (engine/sparse/channels.py)
    prune    <- a network built from the kept counts (cfg), the kept slices of every weight copied into it

Supported: the slimming VGG and PreResNet (engine/models/slimming_vgg.py, slimming_preresnet.py) and the ImageNet
ResNets (engine/models/imagenet_resnet.py; only each block's inner widths).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from engine.flops import dense_forward_flops, param_counts
from engine.models.imagenet_resnet import BasicBlock, ImageNetResNet
from engine.models.slimming_preresnet import EBPreResNet
from engine.models.slimming_vgg import SlimmingVGG
from engine.sparse.channels import bn_layers, bn_scales, check_ratio, global_threshold, layer_masks

__all__ = ["PruneResult", "model_cost", "prune_channels", "pruned_cfg"]


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
    r = check_ratio(ratio)
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
