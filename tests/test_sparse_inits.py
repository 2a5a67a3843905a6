"""Sparse initialisation rules against the reference notes' numbers (ResNet-20 oracle, WRN-28-10 ERK facts)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from engine.models import create_model
from engine.sparse.inits import (
    classifier_name,
    draw_masks,
    first_conv_name,
    grasp_batch,
    grasp_scores,
    layer_densities,
    magnitude_masks,
    maskable,
    overall_density,
    snip_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run faster on one thread


@pytest.fixture(scope="module")
def wrn():
    """WRN-28-10 on the meta device: shapes and counts only, no memory, never run forward."""
    with torch.device("meta"):
        return create_model("wrn-28-10", 10)


@pytest.fixture(scope="module")
def r20():
    torch.manual_seed(0)
    return create_model("cifar_resnet_20", 10)


# ResNet-20 names for the B.5 oracle columns
R20 = {
    "stem": "conv.weight",
    "s0b0.conv1": "blocks.0.conv1.weight",
    "s1b0.conv1": "blocks.3.conv1.weight",
    "s1b0.shortcut": "blocks.3.shortcut.0.weight",
    "last3x3": "blocks.8.conv2.weight",
    "fc": "fc.weight",
}


def n_all(model: nn.Module) -> int:
    return sum(p.numel() for p in maskable(model).values())


# ---------------------------------------------------------------------------------------------------------
# which weights
# ---------------------------------------------------------------------------------------------------------


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3)
        self.bn = nn.BatchNorm1d(3)
        self.c3 = nn.Conv3d(3, 4, 1, bias=False)
        self.t = nn.ConvTranspose2d(4, 2, 2)
        self.head = nn.Linear(8, 5)
        self.scale = nn.Parameter(torch.ones(3, 3))  # 2-D but not a Conv/Linear weight


def test_maskable_covers_conv_and_linear_weights_only():
    m = Mixed()
    assert list(maskable(m)) == ["c1.weight", "c3.weight", "t.weight", "head.weight"]
    assert first_conv_name(m) == "c1.weight"
    assert classifier_name(m) == "head.weight"
    assert list(maskable(m, dense=("c*",))) == ["t.weight", "head.weight"]


def test_maskable_resnet20_order_and_dense_patterns(r20):
    names = list(maskable(r20))
    assert names[0] == "conv.weight" and names[-1] == "fc.weight"
    assert len(names) == 1 + 18 + 2 + 1  # stem, 9 blocks x 2, 2 shortcuts, fc
    assert n_all(r20) == 270_896  # the reference's masked count for R20 on CIFAR-10
    assert names == [n for n, p in r20.named_parameters() if n in set(names)]
    kept = maskable(r20, dense=("fc.weight", "conv.weight", "*shortcut*"))
    assert "fc.weight" not in kept and "conv.weight" not in kept
    assert not any("shortcut" in n for n in kept) and len(kept) == 18


@pytest.mark.parametrize("arch,stem,fc", [
    ("cifar_resnet_20", "conv.weight", "fc.weight"),
    ("wrn-28-10", "conv1.weight", "fc.weight"),
    ("vgg16", None, None),
    ("cifar-vgg19", None, None),
])
def test_stem_and_classifier_names(arch, stem, fc):
    with torch.device("meta"):
        m = create_model(arch, 10)
    convs = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
    linears = [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)]
    assert first_conv_name(m) == (stem or convs[0] + ".weight")
    assert classifier_name(m) == (fc or linears[-1] + ".weight")


# ---------------------------------------------------------------------------------------------------------
# ERK / ER against an independent implementation and the references' numbers
# ---------------------------------------------------------------------------------------------------------


def erk_closed_form(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """ERK by a different route: sort by raw score, try 'the j highest-score groups are dense' for j = 0, 1, ...
    and take the first j whose epsilon keeps every remaining layer <= 1."""
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    order = sorted(shapes, key=lambda n: -raw[n])
    total = sum(numel.values())
    j = 0
    while j <= len(order):
        dense, rest = order[:j], order[j:]
        eps = (density * total - sum(numel[n] for n in dense)) / sum(raw[n] * numel[n] for n in rest)
        if eps * raw[rest[0]] <= 1:
            return {n: (1.0 if n in dense else eps * raw[n]) for n in shapes}
        j += 1
        while j < len(order) and raw[order[j]] == raw[order[j - 1]]:  # a tie group goes dense together
            j += 1
    raise AssertionError("unreachable for density < 1")


@pytest.mark.parametrize("density", [0.2, 0.1])
def test_erk_matches_independent_closed_form_on_wrn(wrn, density):
    shapes = {n: tuple(p.shape) for n, p in maskable(wrn).items()}
    expected = erk_closed_form(shapes, density)
    got = layer_densities(wrn, "ERK", density)
    assert list(got) == list(shapes)
    for n in shapes:
        assert got[n] == pytest.approx(expected[n], abs=1e-6), n


def test_wrn_28_10_erk_reference_facts(wrn):
    params = maskable(wrn)
    assert sum(p.numel() for p in params.values()) == 36_461_232
    d2 = layer_densities(wrn, "ERK", 0.2)
    assert overall_density(params, d2) == pytest.approx(0.2, abs=1e-4)
    assert overall_density(params, d2) == pytest.approx(0.2, abs=1e-9)
    assert sorted(n for n, d in d2.items() if d == 1.0) == sorted([
        "conv1.weight", "block1.layer.0.conv1.weight", "block1.layer.0.convShortcut.weight",
        "block2.layer.0.convShortcut.weight", "block3.layer.0.convShortcut.weight", "fc.weight"])
    big = [n for n, p in params.items() if tuple(p.shape) == (640, 640, 3, 3)]
    assert len(big) == 7
    for n in big:
        assert d2[n] == pytest.approx(0.14157, abs=5e-6)
    eps = d2[big[0]] / (1286 / (640 * 640 * 9))
    assert eps == pytest.approx(405.8, abs=0.05)
    assert d2["block1.layer.0.conv2.weight"] == pytest.approx(0.574, abs=5e-4)
    assert d2["block2.layer.0.conv1.weight"] == pytest.approx(0.428, abs=5e-4)
    assert d2["block3.layer.0.conv1.weight"] == pytest.approx(0.213, abs=5e-4)
    d1 = layer_densities(wrn, "ERK", 0.1)
    assert d1["block3.layer.0.convShortcut.weight"] == pytest.approx(0.918, abs=5e-4)
    assert overall_density(params, d1) == pytest.approx(0.1, abs=1e-9)


@pytest.mark.parametrize("init,density,row", [
    ("ERK", 0.05, [0.4748, 0.1353, 0.0961, 0.8012, 0.0298, 0.9486]),
    ("ER", 0.05, [0.4448, 0.1405, 0.1054, 0.1054, 0.0351, 0.1299]),
    ("ERK", 0.10, [0.9830, 0.2802, 0.1991, 1.0, 0.0617, 1.0]),
])
def test_resnet20_oracle_table(r20, init, density, row):
    got = layer_densities(r20, init, density)
    for name, want in zip(R20.values(), row):
        if want == 1.0:
            assert got[name] == 1.0, name
        else:
            assert got[name] == pytest.approx(want, abs=5e-5), name
    assert overall_density(maskable(r20), got) == pytest.approx(density, abs=1e-9)


def test_er_equals_erk_on_linear_layers_and_ignores_kernel():
    m = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 10))
    assert layer_densities(m, "ER", 0.3) == pytest.approx(layer_densities(m, "ERK", 0.3), abs=1e-12)


def test_erk_power_scale_zero_is_uniform(r20):
    got = layer_densities(r20, "ERK", 0.3, erk_power_scale=0.0)
    assert all(v == pytest.approx(0.3, abs=1e-12) for v in got.values())


def test_erk_dense_patterns_are_charged_to_the_budget(r20):
    got = layer_densities(r20, "ERK", 0.1, dense=("*shortcut*",))
    assert not any("shortcut" in n for n in got)
    everything = maskable(r20)
    full = {n: got.get(n, 1.0) for n in everything}
    assert overall_density(everything, full) == pytest.approx(0.1, abs=1e-9)


def test_erk_density_one_is_all_dense(r20):
    assert set(layer_densities(r20, "ERK", 1.0).values()) == {1.0}


# ---------------------------------------------------------------------------------------------------------
# uniform, uniform_plus, ERK_plus, dense, errors
# ---------------------------------------------------------------------------------------------------------


def test_uniform_and_dense(r20):
    assert set(layer_densities(r20, "uniform", 0.07).values()) == {0.07}
    assert set(layer_densities(r20, "dense", 0.07).values()) == {1.0}
    assert len(layer_densities(r20, "uniform", 0.07)) == 22


def test_uniform_plus_reference_numbers(r20):
    got = layer_densities(r20, "uniform_plus", 0.05)
    assert got["conv.weight"] == 1.0 and got["fc.weight"] == 0.2
    others = {v for n, v in got.items() if n not in ("conv.weight", "fc.weight")}
    assert len(others) == 1 and others.pop() == pytest.approx(0.04793, abs=5e-6)
    # the kept quirk: the divisor is the full N, so the model ends slightly below the target
    assert overall_density(maskable(r20), got) == pytest.approx(0.0498, abs=5e-5)
    high = layer_densities(r20, "uniform_plus", 0.3)
    assert high["conv.weight"] == 1.0 and high["fc.weight"] == 0.3
    assert overall_density(maskable(r20), high) == pytest.approx(0.3011, abs=5e-5)


@pytest.mark.parametrize("fc_density", [1.0, 0.5])
def test_erk_plus_holds_the_whole_model_at_density(r20, wrn, fc_density):
    for model, density in ((r20, 0.05), (wrn, 0.2)):
        got = layer_densities(model, "ERK_plus", density, fc_density=fc_density)
        assert got[classifier_name(model)] == fc_density
        assert overall_density(maskable(model), got) == pytest.approx(density, abs=1e-9)


def test_errors(r20):
    with pytest.raises(ValueError, match="unknown sparse init 'x'; choose from"):
        layer_densities(r20, "x", 0.1)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="density"):
            layer_densities(r20, "ERK", bad)
    with pytest.raises(ValueError, match="scores"):
        layer_densities(r20, "snip", 0.1)
    assert layer_densities(r20, "erk", 0.1) == layer_densities(r20, "ERK", 0.1)


# ---------------------------------------------------------------------------------------------------------
# mask drawing
# ---------------------------------------------------------------------------------------------------------


def test_exact_draws_count_and_reproducibility(r20):
    params = maskable(r20)
    dens = layer_densities(r20, "ERK", 0.05)
    a = draw_masks(params, dens, torch.Generator().manual_seed(3))
    b = draw_masks(params, dens, torch.Generator().manual_seed(3))
    c = draw_masks(params, dens, torch.Generator().manual_seed(4))
    for n, w in params.items():
        assert a[n].dtype == torch.bool and a[n].shape == w.shape and a[n].device == w.device
        assert int(a[n].sum()) == round(dens[n] * w.numel()), n
        assert torch.equal(a[n], b[n])
    assert any(not torch.equal(a[n], c[n]) for n in params)
    ones = draw_masks(params, dict.fromkeys(params, 1.0), torch.Generator().manual_seed(0))
    assert all(bool(m.all()) for m in ones.values())


def test_bernoulli_draws_have_the_right_mean(r20):
    params = maskable(r20)
    dens = layer_densities(r20, "ERK", 0.05)
    masks = draw_masks(params, dens, torch.Generator().manual_seed(0), exact=False)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept / n_all(r20) == pytest.approx(0.05, abs=3e-3)
    big = "blocks.8.conv2.weight"  # 36,864 weights at ~0.03
    assert masks[big].float().mean().item() == pytest.approx(dens[big], abs=5e-3)
    again = draw_masks(params, dens, torch.Generator().manual_seed(0), exact=False)
    assert all(torch.equal(masks[n], again[n]) for n in params)


def test_magnitude_global_keeps_exactly_the_largest(r20):
    params = maskable(r20)
    masks = magnitude_masks(params, 0.1)
    flat = torch.cat([p.detach().abs().reshape(-1) for p in params.values()])
    k = int(flat.numel() * 0.1)
    got = torch.cat([m.reshape(-1) for m in masks.values()])
    assert int(got.sum()) == k
    want = torch.zeros_like(got)
    want[torch.topk(flat, k).indices] = True
    assert torch.equal(got, want)


def test_magnitude_ties_and_uniform_scope():
    params = {"a": torch.ones(4, 5), "b": torch.ones(10)}
    g = magnitude_masks(params, 0.3)
    assert int(g["a"].sum()) + int(g["b"].sum()) == int(30 * 0.3)
    assert bool(g["a"].reshape(-1)[:9].all())  # ties go to the earliest positions
    u = magnitude_masks({"a": torch.randn(6, 7), "b": torch.randn(33)}, 0.25, scope="uniform")
    assert int(u["a"].sum()) == int(42 * 0.25) and int(u["b"].sum()) == int(33 * 0.25)
    w = torch.randn(50)
    m = magnitude_masks({"w": w}, 0.2, scope="uniform")["w"]
    assert w.abs()[m].min() > w.abs()[~m].max()


# ---------------------------------------------------------------------------------------------------------
# SNIP / GraSP scores and ratios
# ---------------------------------------------------------------------------------------------------------


def tiny_mlp(classes: int = 4) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, classes)).double()


def tiny_data(n: int = 12, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def test_snip_without_reinit_is_w_times_grad():
    m, (x, y) = tiny_mlp(), tiny_data()
    names = list(maskable(m))
    got = snip_scores(m, x, y, names, reinit=False)
    ref = tiny_mlp()
    F.cross_entropy(ref(x), y).backward()
    for n, p in ref.named_parameters():
        if n in names:
            assert torch.allclose(got[n], (p * p.grad).abs(), atol=1e-12), n


def test_snip_reinit_scores_xavier_weights():
    m, (x, y) = tiny_mlp(), tiny_data()
    names = list(maskable(m))
    got = snip_scores(m, x, y, names, generator=torch.Generator().manual_seed(5))
    ref = tiny_mlp()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n in names:
            nn.init.xavier_normal_(ref.get_parameter(n), generator=gen)
    F.cross_entropy(ref(x), y).backward()
    for n in names:
        p = ref.get_parameter(n)
        assert torch.allclose(got[n], (p * p.grad).abs(), atol=1e-12), n
    plain = snip_scores(m, x, y, names, reinit=False)
    assert not torch.allclose(got[names[0]], plain[names[0]])


def test_grasp_matches_hessian_vector_product():
    T = 3.0
    m, (x, y) = tiny_mlp(), tiny_data()
    names = list(maskable(m))
    got = grasp_scores(m, x, y, names, T=T)
    base = dict(m.named_parameters())
    halves = [(x[:6], y[:6]), (x[6:], y[6:])]

    def loss_fn(xb, yb):
        def f(*ws):
            out = functional_call(m, {**base, **dict(zip(names, ws))}, (xb,))
            return F.cross_entropy(out / T, yb)
        return f

    w = tuple(base[n].detach() for n in names)
    g = [torch.zeros_like(t) for t in w]
    for xb, yb in halves:
        for acc, gr in zip(g, torch.autograd.functional.vjp(loss_fn(xb, yb), w)[1]):
            acc += gr
    hg = [torch.zeros_like(t) for t in w]
    for xb, yb in halves:
        for acc, h in zip(hg, torch.autograd.functional.hvp(loss_fn(xb, yb), w, tuple(g))[1]):
            acc += h
    for n, wi, h in zip(names, w, hg):
        assert torch.allclose(got[n], -wi * h, rtol=1e-8, atol=1e-14), n
    assert any(float(v.abs().max()) > 0 for v in got.values())


def test_grasp_handles_more_than_ten_classes():
    m = tiny_mlp(classes=100)
    x, _ = tiny_data(8)
    y = torch.tensor([0, 17, 42, 99, 3, 64, 80, 11])
    got = grasp_scores(m, x, y, list(maskable(m)))
    assert all(torch.isfinite(v).all() for v in got.values())
    with pytest.raises(ValueError, match="labels"):
        grasp_scores(m, x, y + 100, list(maskable(m)))


def test_grasp_batch_is_class_balanced_and_class_ordered():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(64, 3, generator=g), torch.randint(0, 100, (64,), generator=g)) for _ in range(40)]
    x, y = grasp_batch(batches, num_classes=100, samples_per_class=2)
    assert x.shape == (200, 3)
    assert torch.equal(y, torch.arange(100).repeat_interleave(2))


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1))


@pytest.mark.parametrize("score", ["snip", "grasp"])
def test_scores_leave_the_live_model_untouched(score):
    torch.manual_seed(0)
    m = SmallNet().eval()
    for p in m.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 10, (8,))
    names = list(maskable(m))
    scores = (snip_scores if score == "snip" else grasp_scores)(m, x, y, names)
    assert set(scores) == set(names)
    assert all(scores[n].shape == m.get_parameter(n).shape for n in names)
    assert not m.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    for n, p in m.named_parameters():
        assert torch.equal(p.grad, grads[n]), n


@pytest.mark.parametrize("density", [0.05, 0.3])
def test_score_ratios_keep_exact_counts(r20, density):
    params = maskable(r20)
    g = torch.Generator().manual_seed(0)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in params.items()}
    total = n_all(r20)
    snip = layer_densities(r20, "snip", density, scores=scores)
    kept = sum(snip[n] * p.numel() for n, p in params.items())
    assert kept == pytest.approx(int(total * density), abs=1e-6)
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    cut = torch.topk(flat, int(total * density)).values.min()
    for n in params:
        assert snip[n] == pytest.approx(int((scores[n] >= cut).sum()) / params[n].numel(), abs=1e-12), n
    grasp = layer_densities(r20, "grasp", density, scores=scores)
    kept = sum(grasp[n] * p.numel() for n, p in params.items())
    assert kept == pytest.approx(total - int(total * (1 - density)), abs=1e-6)
    assert grasp["fc.weight"] != snip["fc.weight"] or grasp["conv.weight"] != snip["conv.weight"]
