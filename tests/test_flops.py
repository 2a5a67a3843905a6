"""Training-cost accounting (engine/flops.py) against FLOPs written out by hand."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from engine.flops import (
    CostMeter,
    dense_forward_flops,
    layer_flops,
    param_counts,
    sparse_forward_flops,
    step_flops,
)
from engine.models import create_model
from engine.sparse.inits import maskable

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run faster on one thread


def tiny() -> nn.Sequential:
    """conv 3->8 (3x3, pad 1) on 8x8, ReLU, conv 8->16 (3x3, stride 2, pad 1) -> 4x4, BN, pool, linear 16->10."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


TINY = {
    "0.weight": 2 * 3 * 3 * 3 * 8 * 8 * 8,  # 2·kh·kw·c_in·c_out·H_out·W_out = 27,648
    "2.weight": 2 * 3 * 3 * 8 * 16 * 4 * 4,  # stride 2: 8x8 -> 4x4 = 36,864
    "6.weight": 2 * 16 * 10,  # 320
}


def test_tiny_layer_flops_by_hand():
    model = tiny().train()
    bn = model[3]
    stats = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    flops = layer_flops(model, (3, 8, 8))
    assert flops == TINY
    assert list(flops) == list(maskable(model))
    assert dense_forward_flops(model, (3, 8, 8)) == 27_648 + 36_864 + 320 == 64_832
    # the live model is untouched: still training, same BN statistics, no hooks left behind
    assert model.training and bn.training
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]
    assert all(not m._forward_hooks for m in model.modules())


def test_groups_transposed_reuse_and_unused_layers():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)  # c_in/groups = 2
            self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)  # each input position x all of W
            self.fc = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.up(self.dw(x)).mean((2, 3))
            return self.fc(self.fc(x))  # called twice: counted twice

    flops = layer_flops(Net(), (8, 5, 5))
    assert flops == {
        "dw.weight": 2 * 3 * 3 * (8 // 4) * 8 * 5 * 5,
        "up.weight": 2 * (8 * 4 * 2 * 2) * 5 * 5,
        "fc.weight": 2 * (2 * 4 * 4),
        "unused.weight": 0,
    }


def resnet20_flops_by_hand(num_classes: int = 10) -> dict[str, int]:
    """cifar_resnet_20 from its shapes: stem, 3 stages x 3 basic blocks (16/32/64 at 32/16/8 px), 1x1 conv
    shortcuts on the two downsampling blocks, fc 64 -> classes."""
    out = {"conv.weight": 2 * 3 * 3 * 3 * 16 * 32 * 32}
    c_in, block = 16, 0
    for c_out, px in ((16, 32), (32, 16), (64, 8)):
        for _ in range(3):
            out[f"blocks.{block}.conv1.weight"] = 2 * 9 * c_in * c_out * px * px
            out[f"blocks.{block}.conv2.weight"] = 2 * 9 * c_out * c_out * px * px
            if c_in != c_out:
                out[f"blocks.{block}.shortcut.0.weight"] = 2 * c_in * c_out * px * px
            c_in, block = c_out, block + 1
    out["fc.weight"] = 2 * 64 * num_classes
    return out


def test_cifar_resnet_20_flops():
    model = create_model("cifar_resnet_20", 10)
    flops = layer_flops(model)
    assert flops == resnet20_flops_by_hand(10)
    total = sum(flops.values())
    # 40,813,184 multiply-adds: the often-quoted 40.55M is ResNet-20 with parameter-free (option A) shortcuts;
    # this model's two 1x1 conv shortcuts add 2 x 131,072 multiply-adds
    assert total == 2 * 40_813_184
    assert 40.6e6 < total / 2 < 41e6
    assert sum(layer_flops(create_model("cifar_resnet_20", 100)).values()) == total + 2 * 64 * 90


def test_sparse_forward_uniform_and_missing_layers():
    flops = resnet20_flops_by_hand()
    dense = sum(flops.values())
    for d in (1.0, 0.5, 0.2, 0.05):
        assert sparse_forward_flops(flops, dict.fromkeys(flops, d)) == pytest.approx(d * dense, rel=1e-12)
    assert sparse_forward_flops(flops, {}) == dense  # missing layers count dense
    # stem and fc kept dense, everything else at 0.1
    body = {n: 0.1 for n in flops if n not in ("conv.weight", "fc.weight")}
    expected = flops["conv.weight"] + flops["fc.weight"] + 0.1 * (dense - flops["conv.weight"] - flops["fc.weight"])
    assert sparse_forward_flops(flops, body) == pytest.approx(expected)
    with pytest.raises(ValueError, match="module.fc.weight"):
        sparse_forward_flops(flops, {"module.fc.weight": 0.5})
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        sparse_forward_flops(flops, {"fc.weight": 1.5})


def test_step_flops_rigl_formula_small_case():
    flops = {"a": 100, "b": 300}  # f_D = 400
    dens = {"a": 1.0, "b": 0.1}  # f_S = 100 + 30 = 130
    assert step_flops(flops, None) == 3 * 400
    assert step_flops(flops, None, growth="gradient", update_interval=4) == 3 * 400  # dense: no extra
    assert step_flops(flops, dens) == 3 * 130
    assert step_flops(flops, dens, growth="random") == 3 * 130  # SET costs what static sparse costs
    assert step_flops(flops, dens, growth="none") == 3 * 130
    # RigL, ΔT = 4: (3·130·4 + 2·130 + 400) / 5 = (1560 + 260 + 400) / 5 = 444
    assert step_flops(flops, dens, growth="gradient", update_interval=4) == pytest.approx(444.0)
    assert step_flops(flops, dens, growth="Gradient", update_interval=4) == pytest.approx(444.0)
    # the extra cost fades as ΔT grows: ΔT = 99 -> (3·130·99 + 260 + 400) / 100 = 392.7
    assert step_flops(flops, dens, growth="gradient", update_interval=99) == pytest.approx(392.7)
    # SNFS momentum growth: dense gradient every step, 2·130 + 400
    assert step_flops(flops, dens, growth="momentum") == 660
    assert step_flops(flops, dens, growth="momentum_neuron", update_interval=4) == 660
    with pytest.raises(ValueError, match="update_interval"):
        step_flops(flops, dens, growth="gradient")
    with pytest.raises(ValueError, match="unknown growth"):
        step_flops(flops, dens, growth="taylor")


def test_rigl_ratio_matches_paper_shape():
    """Uniform density d with ΔT = 100: RigL's relative training cost (3dΔT + 2d + 1) / (3(ΔT + 1))."""
    flops = resnet20_flops_by_hand()
    dense_step = step_flops(flops, None)
    rel = step_flops(flops, dict.fromkeys(flops, 0.2), growth="gradient", update_interval=100) / dense_step
    assert rel == pytest.approx((3 * 0.2 * 100 + 2 * 0.2 + 1) / (3 * 101))


def test_cost_meter_two_epochs_and_state_dict():
    flops = {"a": 100, "b": 300}
    meter = CostMeter(flops)
    # epoch 1: 391 steps of 128, static sparse at a=1, b=0.5 -> f_S = 250, 3·250 = 750 per example
    added = meter.add(391, 128, {"a": 1.0, "b": 0.5})
    assert added == 391 * 128 * 750
    # epoch 2: RigL at a=1, b=0.1 (f_S = 130), ΔT = 4 -> 444 per example
    meter.add(391, 128, {"a": 1.0, "b": 0.1}, growth="gradient", update_interval=4)
    hand = 391 * 128 * 750 + 391 * 128 * 444
    assert meter.total == pytest.approx(hand)
    assert meter.steps == 782 and meter.examples == 782 * 128
    assert meter.dense_equivalent(782, 128) == 782 * 128 * 3 * 400
    assert meter.dense_equivalent() == meter.dense_equivalent(782, 128)
    assert meter.relative() == pytest.approx((750 + 444) / (2 * 1200))

    buf = io.BytesIO()
    torch.save({"cost": meter.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["cost"]
    again = CostMeter(flops)
    again.load_state_dict(state)
    assert (again.total, again.steps, again.examples) == (meter.total, meter.steps, meter.examples)
    again.add(1, 10, None)  # a dense step keeps accumulating after the restore
    assert again.total == pytest.approx(hand + 10 * 1200)
    with pytest.raises(ValueError, match="different layer FLOPs"):
        CostMeter({"a": 100}).load_state_dict(state)
    with pytest.raises(ValueError, match="steps"):
        meter.add(-1, 128)


def test_cost_meter_on_a_real_model():
    model = tiny()
    meter = CostMeter(layer_flops(model, (3, 8, 8)))
    meter.add(10, 4, dict.fromkeys(maskable(model), 0.25))
    assert meter.total == pytest.approx(10 * 4 * 3 * 0.25 * 64_832)
    assert meter.relative() == pytest.approx(0.25)


def test_param_counts_tiny_by_hand():
    model = tiny()
    # conv0 216 + 8 bias, conv2 1152 + 16 bias, BN 16 + 16 (running stats are buffers), linear 160 + 10
    params = 216 + 8 + 1152 + 16 + 32 + 160 + 10
    assert params == 1594
    assert param_counts(model) == {"params": 1594, "maskable": 216 + 1152 + 160, "nonzero": 1594}
    counts = param_counts(model, {"0.weight": 0.5, "2.weight": 0.25})  # linear missing: dense
    assert counts == {"params": 1594, "maskable": 1528, "nonzero": 108 + 288 + 160 + (8 + 16 + 32 + 10)}
    # round(): 1152 · 0.3 = 345.6 -> 346
    assert param_counts(model, {"2.weight": 0.3})["nonzero"] == 1594 - 1152 + 346
    with pytest.raises(ValueError):
        param_counts(model, {"3.weight": 0.5})  # BN is never masked


def test_resnet50_imagenet_matches_paper_table():
    """ResNet-50 / ImageNet anchors (RigL Table 2, repeated as Sup-tickets Table 3 in the reference notes):
    test FLOPs 1x = 8.2e9, train FLOPs 1x = 3.2e18; ERK at 80% / 90% sparsity: static 0.42x / 0.24x,
    SNFS (momentum growth) 0.61x / 0.50x, RigL (ΔT = 100) 0.42x / 0.25x training FLOPs."""
    from engine.sparse.inits import layer_densities

    model = create_model("resnet50", 1000)
    flops = layer_flops(model, (3, 224, 224))
    dense = sum(flops.values())
    assert dense == pytest.approx(8.2e9, rel=0.01)
    assert step_flops(flops, None) * 1_281_167 * 100 == pytest.approx(3.2e18, rel=0.03)  # ~100 epochs
    dense_step = step_flops(flops, None)
    for density, static, snfs, rigl in ((0.2, 0.42, 0.61, 0.42), (0.1, 0.24, 0.50, 0.25)):
        erk = layer_densities(model, "ERK", density)
        assert sparse_forward_flops(flops, erk) / dense == pytest.approx(static, abs=0.01)
        assert step_flops(flops, erk, growth="momentum") / dense_step == pytest.approx(snfs, abs=0.01)
        assert step_flops(flops, erk, growth="gradient", update_interval=100) / dense_step == pytest.approx(
            rigl, abs=0.01)
