"""Model zoo: names, shapes, parameter counts against the references, initialisation, EB cfg building."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import n_params
from torch import nn
from torch.func import functional_call

from engine.config import archs
from engine.models import BUILDERS, UnknownArch, canonical_arch, create_model, list_archs
from engine.models.cifar_stem_resnet import STAGES
from engine.models.common import fixed_table
from engine.models.imagenet_resnet import ARCHS
from engine.models.preresnet import PreActBasicBlock, PreActBottleneck
from engine.models.slimming_preresnet import ChannelSelection, EBBottleneck, eb_preresnet_cfg
from engine.models.slimming_vgg import EB_VGG_CFG
from engine.models.vgg import FGE_BLOCKS

TORCHVISION = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
               "wide_resnet50_2", "wide_resnet101_2"}
CIFAR_ARCHS = [a for a in list_archs() if a not in TORCHVISION]
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run faster on one thread


def masked_weights(model: nn.Module) -> int:
    """Conv + Linear weights: what the sparse-training masks cover."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def shape_only(arch: str, num_classes: int, **kwargs) -> nn.Module:
    """Build on the meta device: real structure and parameter shapes, no memory or init time (for counts)."""
    with torch.device("meta"):
        return create_model(arch, num_classes, **kwargs)


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


# ---------------------------------------------------------------- names


def test_list_archs_holds_every_family_by_example():
    archs = list_archs()
    assert len(archs) == len(set(archs))
    for name in ("wrn-28-10", "wrn-16-8", "wrn-22-8", "wrn-28-2", "wrn-16-10", "wrn-10-1", "wideresnet28x10",
                 "vgg16", "vgg16bn", "vgg19", "vgg19bn", "vgg-like",
                 "preresnet20", "preresnet110", "preresnet164",
                 "eb-vgg11", "eb-vgg13", "eb-vgg16", "eb-vgg19", "eb-preresnet101", "eb-preresnet164",
                 "cifar_resnet_20", "cifar_resnet_110", "cifar-resnet18", "cifar-resnet50",
                 "resnet18", "resnet50", "wide_resnet50_2"):
        assert name in archs
    assert all(canonical_arch(a) == a for a in archs)


def test_every_arch_family_has_one_builder_and_each_table_its_listed_depths():
    # the torch-free names (engine.config.archs) and the model registry are one set
    assert set(BUILDERS) == {f.id for f in archs.FAMILIES}
    # each fixed-table family: the depths recipes are checked against are the rows its model module defines
    assert tuple(FGE_BLOCKS) == archs.FGE_VGG_DEPTHS
    assert tuple(EB_VGG_CFG) == archs.SLIMMING_VGG_DEPTHS
    assert tuple(STAGES) == archs.CIFAR_STEM_RESNET_DEPTHS
    assert tuple(ARCHS) == archs.IMAGENET_RESNETS
    with pytest.raises(RuntimeError, match="slimming VGG"):
        fixed_table({11: [64]}, archs.SLIMMING_VGG_DEPTHS, "slimming VGG")


@pytest.mark.parametrize("spelling, canonical", [
    ("WideResNet28x10", "wideresnet28x10"),
    ("VGG16", "vgg16"),
    ("VGG16BN", "vgg16bn"),
    ("VGG19BN", "vgg19bn"),
    ("PreResNet110", "preresnet110"),
    ("PreResNet164", "preresnet164"),
    ("WideResNet50_2", "wide_resnet50_2"),
    ("ResNet50", "resnet50"),  # the torchvision ImageNet definition; Sup-tickets' CIFAR one is cifar-resnet50
    ("WRN-28-10", "wrn-28-10"),
    ("wrn-40-4", "wrn-40-4"),
    ("cifar_resnet_32", "cifar_resnet_32"),
    ("cifar_resnet_20_24", "cifar_resnet_20_24"),
    ("EB-PreResNet101", "eb-preresnet101"),
    (" vgg-like ", "vgg-like"),
])
def test_canonical_arch_maps_the_seeds_spellings(spelling, canonical):
    assert canonical_arch(spelling) == canonical


def test_unknown_arch_suggests_the_close_name():
    with pytest.raises(UnknownArch) as err:
        canonical_arch("wrn-28-1O")
    assert str(err.value) == "unknown arch 'wrn-28-1O'; did you mean 'wrn-28-10'?"
    assert isinstance(err.value, ValueError)


def test_unknown_arch_far_from_everything_lists_known_names():
    with pytest.raises(UnknownArch) as err:
        create_model("transformer", 10)
    msg = str(err.value)
    assert msg.startswith("unknown arch 'transformer'; known archs include 'wrn-28-10'")
    assert "\n" not in msg


@pytest.mark.parametrize("name, hint", [
    ("wrn-27-10", "(D-4) % 6 == 0"),
    ("preresnet100", "(D-2) % 9 == 0"),
    ("cifar_resnet_21", "(A-2) % 6 == 0"),
    ("eb-vgg15", "11, 13, 16, 19"),
    ("vgg11", "16, 19"),
    ("cifar-resnet20", "18, 34, 50"),
])
def test_impossible_parameters_are_unknown_archs_with_the_rule(name, hint):
    with pytest.raises(UnknownArch) as err:
        canonical_arch(name)
    assert str(err.value).startswith(f"unknown arch '{name}'; ")
    assert hint in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_options_width_and_classes_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^arch 'vgg16' has no option 'cfg' \(its options: dropout\)$"):
        create_model("VGG16", 10, cfg=[64])
    with pytest.raises(ValueError, match=r"^resnet50 cfg needs 32 entries"):
        create_model("resnet50", 10, cfg=[64])
    with pytest.raises(ValueError, match="width must be a positive number"):
        create_model("wrn-16-8", 10, width=0)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        create_model("wrn-16-8", 0)


# ---------------------------------------------------------------- shapes and structure


@pytest.mark.parametrize("arch", CIFAR_ARCHS)
def test_every_cifar_family_gives_logits_at_narrow_width(arch):
    torch.manual_seed(0)
    model = create_model(arch, 7, width=0.125).eval()
    with torch.no_grad():
        out = model(X)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    # raw logits, not log_softmax (rows of log-probabilities would logsumexp to 0)
    assert not torch.allclose(torch.logsumexp(out, 1), torch.zeros(2), atol=1e-4)


@pytest.mark.parametrize("arch", CIFAR_ARCHS)
def test_parameters_live_only_in_standard_layers(arch):
    """Masks cover Conv2d/Linear weights and curves swap parameters by name, so no custom parameter layers."""
    model = create_model(arch, 10, width=0.125)
    allowed = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, ChannelSelection)
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert isinstance(module, allowed), name
    assert masked_weights(model) > 0


@pytest.mark.parametrize("arch", ["wrn-16-8", "wideresnet28x10", "vgg16bn", "preresnet20", "eb-preresnet20",
                                  "cifar_resnet_20", "cifar-resnet18", "vgg-like"])
def test_functional_call_reproduces_forward(arch):
    model = create_model(arch, 10, width=0.125).eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        assert torch.equal(functional_call(model, params, (X,)), model(X))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_models_run_on_cifar_sized_input(arch):
    model = create_model(arch, 5).eval()
    with torch.no_grad():
        assert model(X).shape == (2, 5)
    assert model.fc.out_features == 5


def test_torchvision_fan_in_init_changes_conv_std():
    torch.manual_seed(0)
    conv = create_model("resnet18", 10, conv_init="fan_in").layer4[0].conv2  # 512 -> 512, 3x3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.02)
    with pytest.raises(ValueError, match="conv_init"):
        create_model("resnet18", 10, conv_init="xavier")


# ---------------------------------------------------------------- parameter counts


def wrn_params_by_hand(depth: int, k: int, classes: int) -> int:
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    total = 3 * 16 * 9
    for c_in, c_out in zip(widths, widths[1:]):
        shortcut = c_in * c_out if c_in != c_out else 0
        total += 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + shortcut
        total += (n - 1) * (4 * c_out + 18 * c_out * c_out)
    return total + 2 * widths[-1] + widths[-1] * classes + classes


def test_wrn_28_10_parameter_count():
    model = shape_only("wrn-28-10", 10)
    assert n_params(model) == wrn_params_by_hand(28, 10, 10) == 36_479_194  # FreeTickets: ~36.5M
    assert masked_weights(model) == 36_461_232  # FreeTickets: 36.46M maskable
    assert n_params(shape_only("wrn-16-8", 100)) == wrn_params_by_hand(16, 8, 100)
    assert n_params(shape_only("wrn-22-8", 10)) == wrn_params_by_hand(22, 8, 10)


def test_fge_wideresnet28x10_is_wrn_28_10_plus_conv_biases():
    fge, ft = shape_only("WideResNet28x10", 10), shape_only("wrn-28-10", 10)
    assert n_params(fge) == n_params(ft) + sum(c.out_channels for c in convs(fge))
    assert all(c.bias is not None for c in convs(fge))
    assert all(c.bias is None for c in convs(ft))
    momenta = [m.momentum for m in fge.modules() if isinstance(m, nn.BatchNorm2d)]
    assert momenta[-1] == 0.9 and set(momenta[:-1]) == {0.1}  # the head-BN quirk of the FGE repo


@pytest.mark.parametrize("depth, classes, expected", [
    (20, 10, 270_896), (32, 10, 464_432), (56, 10, 851_504), (110, 10, 1_722_416),
])
def test_cifar_resnet_masked_weight_counts(depth, classes, expected):
    assert masked_weights(shape_only(f"cifar_resnet_{depth}", classes)) == expected


def test_cifar_resnet_base_width_and_width_multiplier():
    m = create_model("cifar_resnet_20_24", 10)
    assert [m.conv.out_channels, m.blocks[3].conv1.out_channels, m.fc.in_features] == [24, 48, 96]
    assert create_model("cifar_resnet_20", 10, width=0.5).fc.in_features == 32


def test_fge_vgg16_parameter_count_by_hand():
    cfg = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs_ = sum(9 * a * b + b for a, b in zip([3] + cfg, cfg))
    classifier = 2 * (512 * 512 + 512) + 512 * 10 + 10
    assert n_params(shape_only("vgg16", 10)) == convs_ + classifier == 15_245_130
    bn = sum(2 * c for c in cfg)
    assert n_params(shape_only("vgg16bn", 10)) == convs_ + classifier + bn


def test_cifar_resnet50_is_torchvision_resnet50_with_cifar_stem_and_biasless_classifier():
    cifar = shape_only("cifar-resnet50", 100)
    tv = shape_only("resnet50", 100)
    stem_7x7, stem_3x3 = 3 * 64 * 49, 3 * 64 * 9
    assert n_params(cifar) == n_params(tv) - stem_7x7 + stem_3x3 - 100 == 23_705_152
    assert cifar.classifier.bias is None and cifar.classifier.in_features == 2048


def test_wide_resnet50_2_parameter_count():
    # torchvision's wide_resnet50_2 has 68,883,240 parameters with 1000 classes
    assert n_params(shape_only("WideResNet50_2", 10)) == 68_883_240 - 2049 * 1000 + 2049 * 10


@pytest.mark.parametrize("depth, kind, n", [(164, PreActBottleneck, 18), (110, PreActBottleneck, 12),
                                            (20, PreActBasicBlock, 3)])
def test_preresnet_block_structure_and_depth(depth, kind, n):
    model = shape_only(f"PreResNet{depth}", 100)
    for stage in (model.layer1, model.layer2, model.layer3):
        assert len(stage) == n and all(isinstance(b, kind) for b in stage)
    downsample = {id(m) for m in model.modules() if isinstance(m, nn.Sequential) for m in m}
    weighted = [c for c in convs(model) if id(c) not in downsample]
    assert len(weighted) + 1 == depth  # stem + block convs + fc
    assert model.fc.in_features == 64 * kind.expansion


def test_preresnet164_parameter_count():
    assert n_params(shape_only("preresnet164", 10)) == 1_703_258  # the usual "1.7M"


# ---------------------------------------------------------------- Early-Bird models


def test_eb_vgg16_has_4224_bn_channels_and_gamma_half():
    model = create_model("eb-vgg16", 10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert sum(b.num_features for b in bns) == 4224
    assert all(torch.all(b.weight == 0.5) and torch.all(b.bias == 0) for b in bns)
    assert model.cfg == [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    assert all(c.bias is None for c in convs(model))
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(model.classifier.bias == 0)


def test_cifar_vgg_is_the_slimming_vgg_with_unit_gamma():
    model = create_model("cifar-vgg19", 10, width=0.25)
    assert all(torch.all(m.weight == 1) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_eb_vgg_built_from_pruned_cfg_has_its_channel_counts():
    cfg = [20, 31, "M", 50, 64, "M", 100, 90, 80, "M", 200, 150, 120, "M", 60, 40, 33]
    model = create_model("eb-vgg16", 100, width=0.125, cfg=cfg)  # width is ignored when cfg is given
    assert [c.out_channels for c in convs(model)] == [v for v in cfg if v != "M"]
    assert [c.in_channels for c in convs(model)][1:] == [v for v in cfg if v != "M"][:-1]
    assert model.classifier.in_features == 33
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert model.eval()(X).shape == (2, 100)
    with pytest.raises(ValueError, match="cfg must hold positive ints"):
        create_model("eb-vgg16", 10, cfg=[64, 0, "M"])


def test_eb_preresnet_default_cfg_and_bn_count():
    model = shape_only("eb-preresnet101", 10)
    assert len(model.cfg) == 9 * 11 + 1
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 100
    assert model.cfg == eb_preresnet_cfg(101)
    assert model.cfg[:6] == [16, 16, 16, 64, 16, 16] and model.cfg[-1] == 256
    small = create_model("eb-preresnet20", 10)
    assert all(torch.all(m.weight == 0.5) for m in small.modules() if isinstance(m, nn.BatchNorm2d))


def test_eb_preresnet_built_from_pruned_cfg_has_its_channel_counts():
    full = eb_preresnet_cfg(20)  # n = 2 bottlenecks per stage, 19 entries
    cfg = [max(1, v // 2 - i % 3) for i, v in enumerate(full)]
    model = create_model("eb-preresnet20", 10, cfg=cfg)
    blocks = [b for b in model.modules() if isinstance(b, EBBottleneck)]
    got = [x for b in blocks for x in (b.conv1.in_channels, b.conv1.out_channels, b.conv2.out_channels)]
    assert got + [model.fc.in_features] == cfg
    assert [b.conv3.out_channels for b in blocks] == [64, 64, 128, 128, 256, 256]  # residual widths unpruned
    assert [b.bn1.num_features for b in blocks] == [16, 64, 64, 128, 128, 256]  # bn1 keeps full width
    # select the kept channels as the EB prune step does, then run the pruned net
    for b, keep in zip(blocks, cfg[0:18:3]):
        mask = torch.zeros(b.bn1.num_features)
        mask[torch.randperm(b.bn1.num_features, generator=torch.Generator().manual_seed(1))[:keep]] = 1
        b.select.set_indexes(mask)
    head = torch.zeros(256)
    head[: cfg[-1]] = 1
    model.select.set_indexes(head)
    assert model.eval()(X).shape == (2, 10)
    with pytest.raises(ValueError, match="needs 19 entries"):
        create_model("eb-preresnet20", 10, cfg=cfg[:-1])
    with pytest.raises(ValueError, match=r"cfg\[0\]"):
        create_model("eb-preresnet20", 10, cfg=[17] + cfg[1:])


def test_channel_selection_keeps_the_selected_channels():
    sel = ChannelSelection(6)
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert sel(x) is x  # all ones: identity
    sel.load_state_dict({"indexes": torch.tensor([1.0, 0, 1, 0, 0, 1])})
    assert sel(x).flatten().tolist() == [0.0, 2.0, 5.0]
    sel.set_indexes(torch.tensor([False, True, False, False, True, False]))
    assert sel(x).flatten().tolist() == [1.0, 4.0]
    with torch.no_grad():
        sel.indexes.fill_(1.0)  # a tracked in-place change is seen too
    assert sel(x).shape == (1, 6, 1, 1)
    assert not sel.indexes.requires_grad
    assert "indexes" in dict(sel.named_parameters()) and "kept" not in sel.state_dict()


def test_pruned_eb_model_compiles_without_graph_trouble():
    model = create_model("eb-preresnet20", 10, width=0.25).eval()
    mask = torch.zeros(64)
    mask[::2] = 1
    model.select.set_indexes(mask)
    model.fc = nn.Linear(32, 10)
    with torch.no_grad():
        assert torch.allclose(torch.compile(model, backend="eager")(X), model(X))


# ---------------------------------------------------------------- initialisation and width


@pytest.mark.parametrize("arch", ["wrn-16-8", "wideresnet28x10", "vgg16", "preresnet20", "eb-vgg11",
                                  "eb-preresnet20", "cifar_resnet_20", "cifar-resnet18", "vgg-like"])
def test_seeded_construction_is_deterministic(arch):
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return create_model(arch, 10, width=0.25).state_dict()

    a, b, c = build(0), build(0), build(1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_freetickets_wrn_init():
    torch.manual_seed(0)
    model = create_model("wrn-16-8", 10)
    conv = model.block3.layer[1].conv2  # 512 -> 512, 3x3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 512)), rel=0.02)
    assert torch.all(model.fc.bias == 0)
    assert all(torch.all(m.weight == 1) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_fge_vgg_and_preresnet_init():
    torch.manual_seed(0)
    vgg = create_model("vgg16", 10)
    assert all(torch.all(c.bias == 0) for c in convs(vgg))
    assert vgg.features[-3].weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 512)), rel=0.02)
    pre = create_model("preresnet20", 10, width=4.0)  # 256 -> 256 3x3 convs in the last stage
    assert pre.layer3[1].conv2.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.02)


def test_cifar_resnet_init_is_kaiming_fan_in():
    torch.manual_seed(0)
    model = create_model("cifar_resnet_20", 10, width=4.0)  # last stage 256 -> 256
    conv = model.blocks[-1].conv2
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.02)
    scaled = create_model("cifar_resnet_20", 10, width=4.0, scaled_density=0.25).blocks[-1].conv2
    gain = nn.init.calculate_gain("leaky_relu", 0.01)
    assert scaled.weight.std().item() == pytest.approx(gain / math.sqrt(9 * 256 * 0.25), rel=0.02)


def test_width_scales_every_internal_channel_count():
    wide, narrow = shape_only("wrn-16-8", 10), shape_only("wrn-16-8", 10, width=0.5)
    assert [c.out_channels for c in convs(narrow)] == [round(c.out_channels / 2) for c in convs(wide)]
    assert narrow.fc.in_features == 256 and narrow.fc.out_features == 10
    vgg = create_model("vgg19bn", 10, width=0.125)
    assert vgg.classifier[1].in_features == 64 and vgg.classifier[-1].in_features == 64
    assert create_model("eb-vgg16", 10, width=0.25).cfg[-1] == 128
    assert create_model("cifar-resnet50", 10, width=0.125).classifier.in_features == 256
    tiny = shape_only("preresnet164", 10, width=0.01)  # every count rounds up to at least 1
    assert min(c.out_channels for c in convs(tiny)) == 1


def test_dropout_option_is_passed_through():
    model = create_model("wrn-16-8", 10, width=0.125, dropout=0.3)
    assert model.block1.layer[0].dropout == 0.3
    assert create_model("WideResNet28x10", 10, width=0.125, dropout=0.2).layer1[0].dropout.p == 0.2
