"""Early-Bird on the ImageNet ResNets: our ResNet v1.5 against torchvision (names, shapes, parameter counts, the same
logits from the same weights), and inner-width channel pruning of ResNet-18 / ResNet-50 checked against the masks,
against parameter and FLOP counts computed by hand from the cfg, and against the source network's logits."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import n_params
from torch import nn
from torchvision import models as tvm

from engine.models import UnknownArch, create_model
from engine.models.imagenet_resnet import resnet_default_cfg
from engine.sparse.channel_prune import model_cost, prune_channels, pruned_cfg
from engine.sparse.channels import bn_layers, layer_masks

TV = {"resnet18": tvm.resnet18, "resnet50": tvm.resnet50, "wide_resnet50_2": tvm.wide_resnet50_2}
# parameter counts with 1000 classes (torchvision's documented figures)
TV_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "wide_resnet50_2": 68_883_240}
SPEC = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet50": ("bottleneck", [3, 4, 6, 3])}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run faster on one thread


# ---- torchvision compatibility -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(TV))
def test_state_dict_names_shapes_and_count_equal_torchvision(arch: str) -> None:
    """Every parameter and buffer name and shape, in the same order, and the documented parameter count."""
    with torch.device("meta"):
        ours, theirs = create_model(arch, 1000), TV[arch](weights=None)
    a = [(k, tuple(v.shape)) for k, v in ours.state_dict().items()]
    b = [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert a == b
    assert n_params(ours) == n_params(theirs) == TV_PARAMS[arch]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_weights_give_the_same_logits(arch: str) -> None:
    """A torchvision state dict loads strictly and our forward computes torchvision's function (eval mode)."""
    torch.manual_seed(0)
    theirs = TV[arch](weights=None, num_classes=7).eval()
    with torch.no_grad():  # non-trivial BN statistics and affine terms
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    ours = create_model(arch, 7).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_init_conv_fan_modes_bn_and_fc() -> None:
    """He-normal with the chosen fan (layer4.0.conv1 is 1x1, 1024 -> 512: fan_in 1024, fan_out 512); BN 1/0."""
    torch.manual_seed(0)
    out = create_model("resnet50", 10)
    torch.manual_seed(0)
    fin = create_model("resnet50", 10, conv_init="fan_in")
    assert out.layer4[0].conv1.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.02)
    assert fin.layer4[0].conv1.weight.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.02)
    for bn in bn_layers(out):
        assert bool((bn.weight == 1).all()) and bool((bn.bias == 0).all())
    bound = 1 / math.sqrt(2048)  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert out.fc.weight.abs().max().item() <= bound and out.fc.weight.abs().max().item() > 0.9 * bound


# ---- counts by hand ------------------------------------------------------------------------------------------


def scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def resnet_counts(arch: str, width: float, cfg: list[int], classes: int, size: int) -> tuple[int, int]:
    """(parameters, forward FLOPs) of an ImageNet ResNet from its cfg, written out layer by layer.

    FLOPs follow engine.flops: 2 * k*k * c_in * c_out * H_out * W_out per conv, 2 * in * out per Linear.
    """
    kind, blocks = SPEC[arch]
    stem = scaled(64, width)
    s = size // 2  # stem conv, stride 2
    params, flops = 3 * stem * 49 + 2 * stem, 2 * 49 * 3 * stem * s * s
    s //= 2  # maxpool
    in_ch, widths = stem, iter(cfg)
    for stage, (base, count) in enumerate(zip((64, 128, 256, 512), blocks)):
        planes = scaled(base, width)
        out_ch = planes if kind == "basic" else 4 * planes
        for b in range(count):
            stride = 2 if stage > 0 and b == 0 else 1
            so = s // stride
            if kind == "basic":
                k = next(widths)
                params += 9 * in_ch * k + 2 * k + 9 * k * out_ch + 2 * out_ch
                flops += 2 * 9 * in_ch * k * so * so + 2 * 9 * k * out_ch * so * so
            else:
                k1, k2 = next(widths), next(widths)
                params += in_ch * k1 + 2 * k1 + 9 * k1 * k2 + 2 * k2 + k2 * out_ch + 2 * out_ch
                flops += 2 * in_ch * k1 * s * s + 2 * 9 * k1 * k2 * so * so + 2 * k2 * out_ch * so * so
            if stride != 1 or in_ch != out_ch:
                params += in_ch * out_ch + 2 * out_ch
                flops += 2 * in_ch * out_ch * so * so
            in_ch, s = out_ch, so
    params += in_ch * classes + classes
    flops += 2 * in_ch * classes
    return params, flops


def test_width_scales_every_channel_count() -> None:
    """At width 0.25 the counts equal the hand formula with the scaled widths (stem 16, planes 16/32/64/128)."""
    for arch in SPEC:
        model = create_model(arch, 10, width=0.25)
        assert model.cfg == resnet_default_cfg(arch, 0.25)
        assert model.conv1.out_channels == 16 and model.fc.in_features == (128 if arch == "resnet18" else 512)
        assert model_cost(model, (3, 64, 64)) == dict(zip(("params", "flops"),
                                                           resnet_counts(arch, 0.25, model.cfg, 10, 64)))
    full = create_model("resnet50", 1000)
    assert n_params(full) == resnet_counts("resnet50", 1.0, resnet_default_cfg("resnet50"), 1000, 224)[0] \
        == TV_PARAMS["resnet50"]


# ---- pruning -------------------------------------------------------------------------------------------------


def _randomise(model: nn.Module, seed: int) -> None:
    """Spread-out BN scales (so the global threshold cuts every layer differently) and non-trivial statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in bn_layers(model):
            n = bn.num_features
            bn.weight.copy_(torch.rand(n, generator=g) * torch.where(torch.rand(n, generator=g) < 0.2, -1.0, 1.0))
            bn.bias.copy_(torch.randn(n, generator=g) * 0.1)
            bn.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        model.fc.bias.normal_(generator=g)


def _inner(block: nn.Module) -> list[nn.BatchNorm2d]:
    """The BNs whose channels pruning removes: bn1 of a basic block, bn1 and bn2 of a bottleneck (has conv3)."""
    return [block.bn1, block.bn2] if hasattr(block, "conv3") else [block.bn1]


@pytest.mark.parametrize("arch, ratio", [("resnet18", 0.3), ("resnet50", 0.7)])
def test_pruning_keeps_the_masked_inner_channels_and_the_residual_widths(arch: str, ratio: float) -> None:
    torch.manual_seed(0)
    width, classes = 0.25, 10
    src = create_model(arch, classes, width)
    _randomise(src, seed=1)
    res = prune_channels(src, ratio, lambda cfg: create_model(arch, classes, width, cfg=cfg))
    masks = layer_masks(src, ratio)
    assert all(torch.equal(a, b) for a, b in zip(res.masks, masks)) and len(masks) == len(bn_layers(src))
    by_bn = {id(bn): m for bn, m in zip(bn_layers(src), masks)}
    # the cfg: each block's inner BN kept counts, in block order; some pruned, none emptied
    expected_cfg = [int(by_bn[id(bn)].sum()) for b in src.blocks() for bn in _inner(b)]
    assert res.cfg == expected_cfg == pruned_cfg(src, masks) == res.model.cfg
    assert min(res.cfg) >= 1 and sum(res.cfg) < sum(src.cfg)
    for bs, bd in zip(src.blocks(), res.model.blocks()):
        k1 = int(by_bn[id(bs.bn1)].sum())
        assert bd.conv1.out_channels == bd.bn1.num_features == bd.conv2.in_channels == k1
        if arch == "resnet18":
            assert bd.conv2.out_channels == bs.conv2.out_channels  # the residual width stays
            assert torch.equal(bd.bn2.weight, bs.bn2.weight)
        else:
            k2 = int(by_bn[id(bs.bn2)].sum())
            assert bd.conv2.out_channels == bd.bn2.num_features == bd.conv3.in_channels == k2
            assert bd.conv3.out_channels == bs.conv3.out_channels
            assert torch.equal(bd.bn3.weight, bs.bn3.weight)
        assert bd.conv1.in_channels == bs.conv1.in_channels
        if bs.downsample is not None:
            assert torch.equal(bd.downsample[0].weight, bs.downsample[0].weight)
            assert torch.equal(bd.downsample[1].running_var, bs.downsample[1].running_var)
    assert torch.equal(res.model.conv1.weight, src.conv1.weight)
    assert torch.equal(res.model.fc.weight, src.fc.weight) and torch.equal(res.model.fc.bias, src.fc.bias)
    # parameter and FLOP counts by hand from the cfgs, before and after
    shape = (3, 64, 64)
    assert model_cost(src, shape) == dict(zip(("params", "flops"), resnet_counts(arch, width, src.cfg, classes, 64)))
    assert model_cost(res.model, shape) == dict(zip(("params", "flops"),
                                                    resnet_counts(arch, width, res.cfg, classes, 64)))


@pytest.mark.parametrize("arch, ratio", [("resnet18", 0.3), ("resnet50", 0.7)])
def test_pruned_network_computes_the_source_with_pruned_inner_channels_zeroed(arch: str, ratio: float) -> None:
    """Zeroing gamma and beta of the removed inner channels makes them output ReLU(0) = 0, so the next conv sees
    nothing from them: the pruned network must give the source's logits (eval mode)."""
    torch.manual_seed(0)
    width, classes = 0.25, 10
    src = create_model(arch, classes, width)
    _randomise(src, seed=2)
    res = prune_channels(src, ratio, lambda cfg: create_model(arch, classes, width, cfg=cfg))
    src.eval()
    res.model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = src(x)
        by_bn = {id(bn): m for bn, m in zip(bn_layers(src), res.masks)}
        for b in src.blocks():
            for bn in _inner(b):
                bn.weight[~by_bn[id(bn)]] = 0
                bn.bias[~by_bn[id(bn)]] = 0
        after, pruned = src(x), res.model(x)
    assert not torch.allclose(before, after, atol=1e-3)  # the zeroed channels did matter
    torch.testing.assert_close(pruned, after, rtol=1e-5, atol=1e-5)


def test_bad_arch_cfg_and_unsupported_model_messages() -> None:
    with pytest.raises(UnknownArch, match=r"^unknown arch 'resnet19'; did you mean 'resnet18'\?$"):
        create_model("resnet19", 10)
    with pytest.raises(ValueError, match=r"^resnet18 cfg needs 8 entries \(one inner width per basic block\), got 3$"):
        create_model("resnet18", 10, cfg=[64, 64, 64])
    with pytest.raises(ValueError, match=r"^resnet50 cfg\[0\] = 65 is not a channel count in 1\.\.64$"):
        create_model("resnet50", 10, cfg=[65] + resnet_default_cfg("resnet50")[1:])
    with pytest.raises(ValueError, match=r"cfg\[1\] = 0 is not a channel count in 1\.\.16"):
        create_model("resnet18", 10, width=0.25, cfg=[16, 0] + resnet_default_cfg("resnet18", 0.25)[2:])
    with pytest.raises(ValueError, match="conv_init must be 'fan_out' or 'fan_in'"):
        create_model("resnet18", 10, conv_init="xavier")
    with pytest.raises(ValueError, match=r"supports .*ImageNet ResNets .*; got CifarResNet$"):
        prune_channels(create_model("cifar_resnet_8", 10), 0.3, lambda cfg: nn.Identity())
    src = create_model("resnet18", 10, width=0.125)
    with pytest.raises(ValueError, match="one mask per BatchNorm2d"):
        pruned_cfg(src, layer_masks(src, 0.3)[:-1])
