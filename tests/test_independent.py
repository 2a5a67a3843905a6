"""Independent reimplementations, checked against the engine (issue 14, part 3).

Each helper prefixed `ref_` below is written from the equations in the reference notes
(/work/shared/reference/*.md), without calling or copying the engine's helpers. Each test runs the same
inputs through the engine and through the `ref_` version and compares them at 1e-6 (exactly for masks and
epochs).

* ERK layer-wise densities: suptickets_and_random_pruning.md (B.3 "ERK", A.5.6) and freetickets.md (2.2).
* Bezier / PolyChain curve points: earlybird_and_fge.md (B1, B3 `init_linear`).
* CAA / CIMA superposition and the global magnitude pruning that follows it: suptickets_and_random_pruning.md
  (A.3.5, A.3.6).
* Early-Bird channel masks, mask distance and detector: earlybird_and_fge.md (A1.2 - A1.4).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from engine.curves import CurveNet, coefficients, line_coefficients
from engine.methods.suptickets import prune_global, superpose
from engine.models import create_model
from engine.sparse.channels import EarlyBird, bn_scales, channel_mask, detect, detector_trace
from engine.sparse.inits import layer_densities, overall_density
from engine.sparse.masks import hamming_matrix, mask_distance

TOL = 1e-6


# =========================================================================================================
# 1. ERK layer-wise densities
# =========================================================================================================

def ref_weight_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of every conv and linear weight (the masked set: biases and BatchNorm excluded)."""
    return {f"{name}.weight": tuple(mod.weight.shape) for name, mod in model.named_modules()
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))}


def ref_erk(shapes: dict[str, tuple[int, ...]], density: float, power: float = 1.0,
            dense: tuple[str, ...] = ()) -> dict[str, float]:
    """ERK from the notes: raw_l = (sum dims / prod dims) ** power; with D the dense set,
    eps = [d * sum_{l not in D} N_l - (1 - d) * sum_{l in D} N_l] / sum_{l not in D} raw_l N_l;
    while max_{l not in D} eps * raw_l > 1, every layer attaining the maximal raw_l joins D and eps is solved
    again. p_l = eps * raw_l, or 1 for l in D. `dense` layers start in D (they count at 1.0 in the budget)."""
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / math.prod(s)) ** power for n, s in shapes.items()}
    in_dense = set(dense)
    while True:
        free = [n for n in shapes if n not in in_dense]
        assert free, "every layer went dense"
        num = density * sum(numel[n] for n in free) - (1 - density) * sum(numel[n] for n in in_dense)
        eps = num / sum(raw[n] * numel[n] for n in free)
        top = max(raw[n] for n in free)
        if eps * top > 1:
            in_dense |= {n for n in free if raw[n] == top}
            continue
        return {n: (1.0 if n in in_dense else eps * raw[n]) for n in shapes}


def ref_overall(shapes: dict[str, tuple[int, ...]], dens: dict[str, float]) -> float:
    total = sum(math.prod(s) for s in shapes.values())
    return sum(dens[n] * math.prod(s) for n, s in shapes.items()) / total


_MODELS: dict[str, nn.Module] = {}


def _model(arch: str) -> nn.Module:
    if arch not in _MODELS:
        _MODELS[arch] = create_model(arch, 10)
    return _MODELS[arch]


@pytest.mark.parametrize("arch", ["wrn-16-8", "cifar_resnet_20"])
@pytest.mark.parametrize("density", [0.05, 0.2, 0.5])
@pytest.mark.parametrize("power", [1.0, 0.5])
def test_erk_layer_densities_match_the_equations(arch: str, density: float, power: float) -> None:
    model = _model(arch)
    shapes = ref_weight_shapes(model)
    want = ref_erk(shapes, density, power)
    got = layer_densities(model, "ERK", density, erk_power_scale=power)
    assert list(got) == list(want)  # same masked set, same order
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=TOL, rel=0), name
    # the overall density: target hit, and the engine's own accounting agrees with the equations
    assert ref_overall(shapes, got) == pytest.approx(density, abs=TOL)
    assert ref_overall(shapes, want) == pytest.approx(density, abs=TOL)
    params = dict(model.named_parameters())
    assert overall_density({n: params[n] for n in got}, got) == pytest.approx(ref_overall(shapes, want), abs=TOL)
    assert all(0.0 < v <= 1.0 for v in got.values())


def test_erk_iterative_capping_is_exercised() -> None:
    """The loop matters here: at 0.5 several layers reach density 1 one after the other (ref_erk moves them to D
    in steps), and the layers left are rescaled so the total stays at 0.5."""
    model = _model("cifar_resnet_20")
    shapes = ref_weight_shapes(model)
    want = ref_erk(shapes, 0.5)
    got = layer_densities(model, "ERK", 0.5)
    dense_names = sorted(n for n, v in want.items() if v == 1.0)
    assert len(dense_names) >= 3, dense_names
    assert sorted(n for n, v in got.items() if v == pytest.approx(1.0, abs=1e-12)) == dense_names


@pytest.mark.parametrize("density", [0.05, 0.2])
def test_erk_with_a_dense_pattern_counts_it_in_the_budget(density: float) -> None:
    """Layers taken out of masking are charged at 1.0 against the budget (they start in D)."""
    model = _model("cifar_resnet_20")
    shapes = ref_weight_shapes(model)
    short = tuple(n for n in shapes if "shortcut" in n)
    want = ref_erk(shapes, density, dense=short)
    got = layer_densities(model, "ERK", density, dense=("*shortcut*",))
    assert set(got) == set(shapes) - set(short)
    for name in got:
        assert got[name] == pytest.approx(want[name], abs=TOL, rel=0), name
    assert ref_overall(shapes, {**got, **{n: 1.0 for n in short}}) == pytest.approx(density, abs=TOL)


def test_ref_erk_reproduces_the_reference_tables() -> None:
    """Anchors the reimplementation itself to the numbers quoted in the notes (4 decimals there)."""
    r20 = ref_weight_shapes(_model("cifar_resnet_20"))
    table = {  # suptickets_and_random_pruning.md, B.5: ResNet-20, CIFAR-10
        0.05: {"conv.weight": 0.4748, "blocks.0.conv1.weight": 0.1353, "blocks.3.conv1.weight": 0.0961,
               "blocks.3.shortcut.0.weight": 0.8012, "blocks.8.conv2.weight": 0.0298, "fc.weight": 0.9486},
        0.10: {"conv.weight": 0.9830, "blocks.0.conv1.weight": 0.2802, "blocks.3.conv1.weight": 0.1991,
               "blocks.3.shortcut.0.weight": 1.0, "blocks.8.conv2.weight": 0.0617, "fc.weight": 1.0},
    }
    for d, rows in table.items():
        got = ref_erk(r20, d)
        for name, v in rows.items():
            assert got[name] == pytest.approx(v, abs=6e-5), (d, name)
    with torch.device("meta"):  # shapes only: no 36M-parameter allocation
        wrn = ref_weight_shapes(create_model("wrn-28-10", 10))
    assert sum(math.prod(s) for s in wrn.values()) == 36_461_232  # freetickets.md 2.2
    got = ref_erk(wrn, 0.2)
    dense = sorted(n for n, v in got.items() if v == 1.0)
    assert len(dense) == 6, dense  # conv1, the first conv of block 1, three shortcuts, fc
    assert got["block3.layer.1.conv2.weight"] == pytest.approx(0.14157, abs=5e-5)


# =========================================================================================================
# 2. Bezier and PolyChain curve points
# =========================================================================================================

def ref_bezier(t: float, n: int) -> list[float]:
    """Bernstein basis over n control points: C(n-1, k) t^k (1-t)^(n-1-k)."""
    return [math.comb(n - 1, k) * t ** k * (1 - t) ** (n - 1 - k) for k in range(n)]


def ref_polychain(t: float, n: int) -> list[float]:
    """Piecewise-linear through the n bends at the equally spaced knots k/(n-1)."""
    seg = min(int(t * (n - 1)), n - 2)  # segment [seg/(n-1), (seg+1)/(n-1)]
    u = t * (n - 1) - seg  # position inside it, in [0, 1]
    out = [0.0] * n
    out[seg] += 1 - u
    out[seg + 1] += u
    return out


def ref_coeffs(curve: str, t: float, n: int) -> list[float]:
    return ref_bezier(t, n) if curve == "bezier" else ref_polychain(t, n)


def _ts(n: int) -> list[float]:
    knots = [k / (n - 1) for k in range(n)]
    mids = [(k + 0.5) / (n - 1) for k in range(n - 1)]
    return sorted(set([0.0, 1.0, 0.1, 0.37, 0.62, 0.999, *knots, *mids]))


@pytest.mark.parametrize("curve", ["bezier", "polychain"])
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_curve_coefficients_match_the_equations(curve: str, n: int) -> None:
    for t in _ts(n):
        got = coefficients(curve, t, n).double().tolist()
        assert got == pytest.approx(ref_coeffs(curve, t, n), abs=TOL, rel=0), (curve, n, t)
        tt = torch.tensor(t)  # a 0-dim tensor t gives the same coefficients
        assert coefficients(curve, tt, n).double().tolist() == pytest.approx(got, abs=TOL, rel=0)
    # endpoints: theta_0 at t = 0, theta_{n-1} at t = 1; PolyChain hits every bend at its knot
    assert coefficients(curve, 0.0, n).tolist() == pytest.approx([1.0] + [0.0] * (n - 1), abs=TOL)
    assert coefficients(curve, 1.0, n).tolist() == pytest.approx([0.0] * (n - 1) + [1.0], abs=TOL)
    if curve == "polychain":
        for k in range(n):
            want = [1.0 if j == k else 0.0 for j in range(n)]
            assert coefficients(curve, k / (n - 1), n).tolist() == pytest.approx(want, abs=TOL), k


@pytest.mark.parametrize("n", [2, 3, 4])
def test_line_coefficients(n: int) -> None:
    for t in (0.0, 0.3, 0.5, 1.0):
        want = [1 - t] + [0.0] * (n - 2) + [t]
        assert line_coefficients(t, n).double().tolist() == pytest.approx(want, abs=TOL)


def _tiny_base(bn: bool) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(5, 4)]
    if bn:
        layers.append(nn.BatchNorm1d(4))
    layers += [nn.ReLU(), nn.Linear(4, 3)]
    return nn.Sequential(*layers)


def _random_states(base: nn.Module, n: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    states = []
    for _ in range(n):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        states.append({k: v.clone() for k, v in m.state_dict().items()})
    return states


@pytest.mark.parametrize("curve", ["bezier", "polychain"])
@pytest.mark.parametrize("n", [3, 4])
def test_curve_point_matches_the_weighted_sum_of_bends(curve: str, n: int) -> None:
    base = _tiny_base(bn=True)
    states = _random_states(base, n)
    net = CurveNet(copy.deepcopy(base), curve, n, fix_start=True, fix_end=True)
    for k, s in enumerate(states):
        net.import_base(s, k)
    names = [name for name, _ in base.named_parameters()]
    for t in _ts(n):
        got = net.unflatten(net.weights(t))
        c = ref_coeffs(curve, t, n)
        for name in names:
            want = sum(c[k] * states[k][name].double() for k in range(n))
            assert torch.allclose(got[name].double(), want, atol=TOL, rtol=0), (curve, n, t, name)
    # PolyChain passes through every bend at its knot; both curves start / end at the endpoints
    knots = range(n) if curve == "polychain" else (0, n - 1)
    for k in knots:
        got = net.unflatten(net.weights(k / (n - 1)))
        for name in names:
            assert torch.allclose(got[name].double(), states[k][name].double(), atol=TOL, rtol=0), (k, name)


@pytest.mark.parametrize("n", [3, 5])
def test_init_linear_puts_bends_on_the_segment(n: int) -> None:
    base = _tiny_base(bn=True)
    states = _random_states(base, 2, seed=3)
    net = CurveNet(copy.deepcopy(base), "bezier", n)
    net.import_base(states[0], 0)
    net.import_base(states[1], n - 1)
    net.init_linear()
    for k in range(n):
        got = net.unflatten(net.bend(k))
        for name, _ in base.named_parameters():
            want = (1 - k / (n - 1)) * states[0][name].double() + k / (n - 1) * states[1][name].double()
            assert torch.allclose(got[name].double(), want, atol=TOL, rtol=0), (k, name)


@pytest.mark.parametrize("curve", ["bezier", "polychain"])
def test_curve_forward_is_the_base_network_at_w_t(curve: str) -> None:
    """Forward through the curve at t equals a hand-written forward with w(t) = sum_k c_k(t) theta_k."""
    n = 3
    base = _tiny_base(bn=False)
    states = _random_states(base, n, seed=5)
    net = CurveNet(copy.deepcopy(base), curve, n).eval()
    for k, s in enumerate(states):
        net.import_base(s, k)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for t in (0.0, 0.25, 0.5, 0.8, 1.0):
        c = ref_coeffs(curve, t, n)
        w = {name: sum(c[k] * states[k][name].double() for k in range(n)) for name in states[0]}
        h = torch.relu(x @ w["0.weight"].T + w["0.bias"])
        want = h @ w["2.weight"].T + w["2.bias"]
        with torch.no_grad():
            got = net(x.float(), t).double()
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (curve, t, (got - want).abs().max())


# =========================================================================================================
# 3. Sup-tickets superposition (CAA / CIMA) and the global magnitude pruning after it
# =========================================================================================================

def ref_ema(previous: dict[str, torch.Tensor], ticket: dict[str, torch.Tensor], a: float) -> dict[str, torch.Tensor]:
    """S <- (1 - a) S + a T over every state-dict entry (weights, biases, BN affine and BN buffers alike)."""
    return {k: (1 - a) * previous[k].double() + a * ticket[k].double() for k in previous}


def ref_global_keep(state: dict[str, torch.Tensor], names: list[str], density: float) -> dict[str, torch.Tensor]:
    """Keep the int(N * density) largest |w| over the named weights jointly (|w| >= the keep-th largest)."""
    flat = torch.cat([state[n].double().abs().flatten() for n in names])
    keep = int(flat.numel() * density)
    thr = torch.sort(flat, descending=True).values[keep - 1]
    return {n: state[n].double().abs() >= thr for n in names}


def _hand_state(seed: int, zero_frac: float = 0.3) -> dict[str, torch.Tensor]:
    """A small conv / BN / linear state dict: masked weights with exact zeros, BN affine and buffers."""
    g = torch.Generator().manual_seed(seed)

    def sparse(*shape: int) -> torch.Tensor:
        w = torch.randn(*shape, generator=g)
        return w * (torch.rand(*shape, generator=g) >= zero_frac)

    return {
        "conv.weight": sparse(4, 3, 3, 3),
        "bn.weight": torch.rand(4, generator=g) + 0.5,
        "bn.bias": torch.randn(4, generator=g),
        "bn.running_mean": torch.randn(4, generator=g),
        "bn.running_var": torch.rand(4, generator=g) + 0.1,
        "bn.num_batches_tracked": torch.tensor(100 * (seed + 1)),
        "fc.weight": sparse(10, 4),
        "fc.bias": torch.randn(10, generator=g),
    }


WEIGHTS = ["conv.weight", "fc.weight"]


def test_caa_zeros_count_as_members() -> None:
    """A weight that is masked (0) in one member is averaged as a zero, not skipped."""
    prev = {"w": torch.tensor([2.0, 0.0, -3.0, 0.0])}
    t1 = {"w": torch.tensor([0.0, 4.0, -1.0, 0.0])}
    got = superpose(prev, t1, 1 / 2)["w"]
    assert got.double().tolist() == pytest.approx(ref_ema(prev, t1, 0.5)["w"].tolist(), abs=TOL)
    assert got.tolist() == pytest.approx([1.0, 2.0, -2.0, 0.0], abs=TOL)


def test_caa_cumulative_average_over_every_state_entry() -> None:
    """S_k = (1 - 1/(k+1)) S_{k-1} + 1/(k+1) T_k with S_0 the pre-trained model is the plain mean of
    {pre-trained, T_1..T_k}, for weights, biases, BN affine and BN running statistics."""
    members = [_hand_state(s) for s in range(4)]  # pre-trained + 3 tickets
    s_eng = members[0]
    for k in range(1, 4):
        s_eng = superpose(s_eng, members[k], 1 / (k + 1))
        want = {key: torch.stack([m[key].double() for m in members[:k + 1]]).mean(0) for key in members[0]}
        assert set(s_eng) == set(want)
        for key in want:
            if key.endswith("num_batches_tracked"):
                continue  # integer buffer: checked below where the mean is an integer
            assert torch.allclose(s_eng[key].double(), want[key], atol=TOL, rtol=0), (k, key)
        # num_batches_tracked 100, 200, 300, 400: the running means 150, 200, 250 are integers
        assert float(s_eng["bn.num_batches_tracked"]) == pytest.approx(float(want["bn.num_batches_tracked"]))


@pytest.mark.parametrize("factor", [0.5, 0.3])
def test_cima_moving_average(factor: float) -> None:
    """CIMA (intent): S <- f T + (1 - f) S with the fixed factor f."""
    members = [_hand_state(s) for s in range(4)]
    s_eng = members[0]
    s_ref = {k: v.double() for k, v in members[0].items()}
    for k in range(1, 4):
        s_eng = superpose(s_eng, members[k], factor)
        s_ref = ref_ema(s_ref, members[k], factor)
        for key in s_ref:
            if key.endswith("num_batches_tracked"):
                continue
            assert torch.allclose(s_eng[key].double(), s_ref[key], atol=TOL, rtol=0), (factor, k, key)


@pytest.mark.parametrize("density", [0.1, 0.25, 0.5])
def test_caa_with_iterative_global_magnitude_pruning(density: float) -> None:
    """The Sup-tickets loop: average, then prune the conv/linear weights globally back to the density (P is the
    *pruned* previous superposition); biases and BN entries are averaged but never pruned."""
    members = [_hand_state(s, zero_frac=0.5) for s in range(4)]
    s_eng = members[0]
    s_ref = {k: v.double() for k, v in members[0].items()}
    for k in range(1, 4):
        s_eng = dict(superpose(s_eng, members[k], 1 / (k + 1)))
        masks = prune_global(s_eng, WEIGHTS, density)
        for n in WEIGHTS:
            s_eng[n] = s_eng[n] * masks[n].to(s_eng[n].dtype)

        s_ref = ref_ema(s_ref, members[k], 1 / (k + 1))
        keep = ref_global_keep(s_ref, WEIGHTS, density)
        for n in WEIGHTS:
            s_ref[n] = s_ref[n] * keep[n]

        n_total = sum(members[0][n].numel() for n in WEIGHTS)
        assert sum(int(masks[n].sum()) for n in WEIGHTS) == int(n_total * density)
        for n in WEIGHTS:
            assert torch.equal(masks[n].bool(), keep[n]), (density, k, n)
        for key in s_ref:
            if key.endswith("num_batches_tracked"):
                continue
            assert torch.allclose(s_eng[key].double(), s_ref[key], atol=TOL, rtol=0), (density, k, key)


# =========================================================================================================
# 4. Early-Bird channel masks, mask distance and detector
# =========================================================================================================

def ref_channel_mask(scales: torch.Tensor, p: float) -> torch.Tensor:
    """Sort |gamma| ascending, thr = sorted[int(total * p)] (Python float product, as the original), keep > thr."""
    vals = scales.double().abs()
    thr = torch.sort(vals).values[int(vals.numel() * p)]
    return vals > thr


def ref_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 - (#positions where the masks agree) / total."""
    return 1 - int((a.bool() == b.bool()).sum()) / a.numel()


def ref_eb_first(masks: list[torch.Tensor], window: int = 5, threshold: float = 0.1) -> int | None:
    """FIFO of the last `window` masks; once full, distances from the NEWEST mask to each older one; EB when all
    of them are <= threshold. Returns the index of the first mask at which it fires."""
    fifo: list[torch.Tensor] = []
    for k, m in enumerate(masks):
        fifo.append(m)
        if len(fifo) > window:
            fifo.pop(0)
        if len(fifo) == window and all(ref_distance(fifo[-1], old) <= threshold for old in fifo[:-1]):
            return k
    return None


RATIOS = [0.1, 0.29, 0.3, 0.5, 0.57, 0.7, 0.9]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("total", [7, 100, 1000, 4224])
def test_channel_mask_from_random_bn_scales(seed: int, total: int) -> None:
    g = torch.Generator().manual_seed(seed)
    scales = torch.randn(total, generator=g).abs()
    if seed % 2:  # ties, including at the threshold
        scales = torch.round(scales * 4) / 4
    for p in RATIOS:
        got = channel_mask(scales, p)
        assert torch.equal(got.bool(), ref_channel_mask(scales, p)), (seed, total, p)


def test_channel_mask_all_tied_is_empty() -> None:
    scales = torch.full((64,), 0.5)  # every gamma 0.5 at initialisation: the mask is all zeros
    for p in (0.3, 0.5, 0.7):
        assert not channel_mask(scales, p).any()
        assert not ref_channel_mask(scales, p).any()


def test_bn_scales_gathers_every_batchnorm2d_in_module_order() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(8, 5, 1), nn.BatchNorm2d(5)),
                          nn.Flatten(), nn.LazyLinear(6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.weight.copy_(torch.randn(m.num_features))  # signed: |gamma| must be taken
    want = torch.cat([m.weight.detach().abs() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    got = bn_scales(model)
    assert got.shape == want.shape
    assert torch.allclose(got.double(), want.double(), atol=TOL, rtol=0)
    for p in (0.3, 0.5, 0.7):
        assert torch.equal(channel_mask(got, p).bool(), ref_channel_mask(want, p))


@pytest.mark.parametrize("seed", range(3))
def test_mask_distance_is_normalised_hamming(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    masks = [ref_channel_mask(torch.rand(513, generator=g), p) for p in (0.3, 0.5, 0.7, 0.5)]
    for a in masks:
        for b in masks:
            assert mask_distance(a, b) == pytest.approx(ref_distance(a, b), abs=TOL)
    mat = hamming_matrix(masks)
    for i, a in enumerate(masks):
        for j, b in enumerate(masks):
            assert float(mat[i, j]) == pytest.approx(ref_distance(a, b), abs=TOL)


def _drift_then_settle(total: int, flips: list[int], seed: int = 0) -> list[torch.Tensor]:
    """Hand-built masks: mask k = mask k-1 with flips[k-1] new positions toggled (never the same twice)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=g)
    m = torch.rand(total, generator=g) > 0.5
    seq = [m.clone()]
    used = 0
    for f in flips:
        m = m.clone()
        m[order[used:used + f]] = ~m[order[used:used + f]]
        used += f
        seq.append(m)
    return seq


def _streamed(masks: list[torch.Tensor], window: int, threshold: float) -> int | None:
    eb = EarlyBird(0.5, window=window, threshold=threshold)
    fired = [k for k, m in enumerate(masks) if eb.observe(m)]
    return fired[0] if fired else None


# (flips per epoch, window, threshold, expected first EB index worked out by hand)
DETECT_CASES = [
    # 4 new flips per epoch for 9 epochs, then stable: consecutive distances are 0.04 (a consecutive-pairs rule
    # would fire at 4), but newest vs oldest in the window is 4*(13-k)/100 until k > 10.5 -> first EB at 11.
    ([4] * 9 + [0] * 6, 5, 0.1, 11),
    # one jump of exactly 10 / 100 then stable: the distance 0.1 passes (<=) at the first full window, k = 4
    ([10] + [0] * 6, 5, 0.1, 4),
    # one jump of 11 / 100: fires only once the jump leaves the window (m_1 is the oldest at k = 5)
    ([11] + [0] * 6, 5, 0.1, 5),
    # window 3, 6 new flips per epoch: newest vs oldest is 0.12 while drifting; 6*(9-(k-2))/100 after k = 9
    # -> 0.06 at k = 10
    ([6] * 9 + [0] * 4, 3, 0.1, 10),
    # a tighter threshold of 0.05 on the drift: needs newest vs oldest <= 0.05, i.e. 4*(13-k) <= 5 -> k = 12
    ([4] * 9 + [0] * 6, 5, 0.05, 12),
    # never stable enough: every 4-step gap is 0.12
    ([3] * 14, 5, 0.1, None),
]


@pytest.mark.parametrize(("flips", "window", "threshold", "expected"), DETECT_CASES)
def test_eb_detector_on_hand_built_sequences(flips: list[int], window: int, threshold: float,
                                             expected: int | None) -> None:
    masks = _drift_then_settle(100, flips)
    assert ref_eb_first(masks, window, threshold) == expected  # the hand analysis agrees with the reference rule
    assert detect(masks, window=window, threshold=threshold) == expected
    assert _streamed(masks, window, threshold) == expected


@pytest.mark.parametrize("seed", range(5))
def test_eb_detector_on_random_decaying_noise(seed: int) -> None:
    """Masks from BN scales that settle over epochs: the engine's first EB epoch and its trace (the largest
    newest-vs-older distance) match the reference rule."""
    g = torch.Generator().manual_seed(seed)
    gamma = torch.rand(400, generator=g)
    masks = []
    for epoch in range(30):
        gamma = gamma + torch.randn(400, generator=g) * 0.3 * 0.8 ** epoch
        masks.append(ref_channel_mask(gamma, 0.5))
    for window in (3, 5):
        want = ref_eb_first(masks, window, 0.1)
        assert detect(masks, window=window, threshold=0.1) == want
        assert _streamed(masks, window, 0.1) == want
        trace = detector_trace(masks, window=window)
        assert len(trace) == len(masks)
        for k, v in enumerate(trace):
            if k < window - 1:
                assert math.isnan(v)
            else:
                ref = max(ref_distance(masks[k], masks[j]) for j in range(k - window + 1, k))
                assert v == pytest.approx(ref, abs=TOL), (window, k)
