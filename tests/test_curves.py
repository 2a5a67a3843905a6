"""Mode connectivity: curve coefficients, the curve network, BN re-estimation, the curve method and analyses."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from digits_recipes import digits_recipe, write_recipe
from helpers import run_recipe
from torch import nn

from engine.analyses import curve as curve_analysis
from engine.analyses.curve import summary_stats
from engine.analyses.plane import plane_basis
from engine.curves import CurveNet, coefficients, line_coefficients, update_bn
from engine.io import load_checkpoint
from engine.methods.curve import Curve
from engine.models import create_model
from engine.store import read_group
from repro.recipe import load

# ---- coefficients --------------------------------------------------------------------------------------------


def test_bezier_coefficients_by_hand() -> None:
    # n = 3: [(1-t)^2, 2t(1-t), t^2] at t = 0.25
    assert coefficients("bezier", 0.25, 3).tolist() == pytest.approx([0.5625, 0.375, 0.0625], abs=1e-7)
    # n = 4: [(1-t)^3, 3t(1-t)^2, 3t^2(1-t), t^3]
    assert coefficients("bezier", 0.25, 4).tolist() == pytest.approx([0.421875, 0.421875, 0.140625, 0.015625],
                                                                     abs=1e-7)
    assert coefficients("bezier", 0.0, 3).tolist() == [1.0, 0.0, 0.0]
    assert coefficients("bezier", 1.0, 3).tolist() == [0.0, 0.0, 1.0]


def test_polychain_coefficients_by_hand() -> None:
    # n = 3: segment theta_0 -> theta_1 on [0, 0.5], theta_1 -> theta_2 on [0.5, 1]
    assert coefficients("polychain", 0.25, 3).tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-7)
    assert coefficients("polychain", 0.75, 3).tolist() == pytest.approx([0.0, 0.5, 0.5], abs=1e-7)
    assert coefficients("polychain", 0.5, 3).tolist() == [0.0, 1.0, 0.0]
    # n = 5: t = 0.25 is exactly the second bend, t = 0.3 is 80/20 between bends 1 and 2
    assert coefficients("polychain", 0.25, 5).tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert coefficients("polychain", 0.3, 5).tolist() == pytest.approx([0, 0.8, 0.2, 0, 0], abs=1e-6)
    assert coefficients("polychain", 0.0, 3).tolist() == [1.0, 0.0, 0.0]
    assert coefficients("polychain", 1.0, 3).tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("curve", ["bezier", "polychain"])
def test_coefficients_sum_to_one(curve: str) -> None:
    for n in (2, 3, 5):
        for t in np.linspace(0, 1, 11):
            assert float(coefficients(curve, float(t), n).sum()) == pytest.approx(1.0, abs=1e-6)
    assert line_coefficients(0.3, 4).tolist() == pytest.approx([0.7, 0.0, 0.0, 0.3])


# ---- the curve network ---------------------------------------------------------------------------------------


def _trained_pair(arch: str, x: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    """Two independently initialised models whose BN statistics are not the defaults."""
    torch.manual_seed(1)
    a = create_model(arch, 10, 0.125)
    torch.manual_seed(2)
    b = create_model(arch, 10, 0.125)
    for m in (a, b):
        m.train()
        with torch.no_grad():
            m(x)
        m.eval()
    return a, b


ARCHS = ["vgg16", "vgg16bn", "vgg19", "vgg19bn", "preresnet110", "preresnet164", "wideresnet28x10"]


@pytest.mark.parametrize("arch", ARCHS)
def test_fixed_ends_reproduce_the_endpoints(arch: str) -> None:
    """test_curve.py's check: with the endpoints imported (and their BN buffers), the curve at t = 0 and t = 1
    gives the endpoints' predictions in eval mode, for both parametrisations."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, 32, 32)
    a, b = _trained_pair(arch, x)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    for kind in ("bezier", "polychain"):
        net = CurveNet(create_model(arch, 10, 0.125), kind, 3, fix_start=True, fix_end=True)
        net.import_base(a.state_dict(), 0)
        net.import_base(b.state_dict(), 2)
        net.init_linear()
        net.eval()
        with torch.no_grad():
            net.import_buffers(a)
            assert (net(x, t=0.0) - ya).abs().max().item() <= 1e-5
            net.import_buffers(b)
            assert (net(x, t=1.0) - yb).abs().max().item() <= 1e-5
            # and the curve is not trivially one of them in between
            assert (net(x, t=0.5) - yb).abs().max().item() > 1e-3


def test_fixed_ends_get_no_gradient_and_interior_does() -> None:
    net = CurveNet(create_model("vgg16bn", 10, 0.125), "bezier", 3, fix_start=True, fix_end=True)
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0].shape[0] == 1  # only the middle bend is a parameter
    assert not net.fixed_points.requires_grad and net.fixed_points.shape[0] == 2
    loose = CurveNet(create_model("vgg16bn", 10, 0.125), "polychain", 4, fix_start=False, fix_end=True)
    assert loose.free.shape[0] == 3 and loose.fixed_points.shape[0] == 1
    out = loose(torch.randn(4, 3, 32, 32), t=0.1)
    out.sum().backward()
    g = loose.free.grad
    # t = 0.1 on a 4-bend chain: only bends 0 and 1 have non-zero coefficients
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0 and g[2].abs().sum() == 0


def test_init_linear_puts_interior_bends_on_the_segment() -> None:
    a, b = create_model("preresnet110", 10, 0.125), create_model("preresnet110", 10, 0.125)
    for n in (3, 4):
        net = CurveNet(create_model("preresnet110", 10, 0.125), "bezier", n)
        net.import_base(a, 0)
        net.import_base(b, n - 1)
        net.init_linear()
        wa, wb = net.bend(0).clone(), net.bend(n - 1).clone()
        for k in range(1, n - 1):
            f = k / (n - 1)
            assert torch.allclose(net.bend(k), (1 - f) * wa + f * wb, atol=1e-7)
    # n = 3: the midpoint, parameter by parameter, by name
    net = CurveNet(create_model("preresnet110", 10, 0.125), "polychain", 3)
    net.import_base(a, 0)
    net.import_base(b, 2)
    net.init_linear()
    mid = net.unflatten(net.bend(1))
    for name, p in a.named_parameters():
        assert torch.allclose(mid[name], 0.5 * (p + dict(b.named_parameters())[name]), atol=1e-7)
    # and the middle of a Bezier curve with a linear middle bend is the midpoint too
    assert torch.allclose(net.weights(0.5), 0.5 * (net.bend(0) + net.bend(2)), atol=1e-6)


def test_l2_term_by_hand() -> None:
    torch.manual_seed(0)
    bases = [create_model("vgg16bn", 10, 0.125) for _ in range(3)]
    net = CurveNet(create_model("vgg16bn", 10, 0.125), "bezier", 3)
    for k, m in enumerate(bases):
        net.import_base(m, k)
    t = 0.3
    c = [(1 - t) ** 2, 2 * t * (1 - t), t ** 2]
    net(torch.randn(2, 3, 32, 32), t=t)
    params = [{n: p.detach() for n, p in m.named_parameters()} for m in bases]
    by_hand = sum(float(sum(c[k] * params[k][name].double() for k in range(3)).pow(2).sum())
                  for name in params[0])  # every parameter: conv / linear weights and biases, BN affine
    assert float(net.l2.detach()) == pytest.approx(by_hand, rel=1e-5)
    # the method's extra loss is 0.5 * wd * ||w(t)||^2 at the batch's t
    stage = SimpleNamespace(optimizer=SimpleNamespace(weight_decay=3e-4), params={})
    method = Curve(SimpleNamespace(model=net), stage, SimpleNamespace())
    assert float(method.extra_loss().detach()) == pytest.approx(0.5 * 3e-4 * by_hand, rel=1e-5)


def test_t_is_drawn_uniformly_once_per_forward() -> None:
    net = CurveNet(create_model("vgg16", 10, 0.125), "bezier", 3).eval()
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(5)
    t = torch.rand(())
    torch.manual_seed(5)
    with torch.no_grad():
        drawn = net(x)
        fixed = net(x, t=t)
        other = net(x)  # the next mini-batch gets a new t
    assert torch.equal(drawn, fixed)
    assert not torch.equal(drawn, other)


# ---- BN re-estimation ----------------------------------------------------------------------------------------


def test_update_bn_is_the_sample_weighted_cumulative_mean() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.9), nn.ReLU())
    batches = [torch.randn(b, 3, 6, 6) * (1 + i) + i for i, b in enumerate((5, 3, 2))]
    loader = [(x, torch.zeros(len(x))) for x in batches]
    model.eval()
    update_bn(model, loader)
    feats = [model[0](x).detach() for x in batches]
    sizes = torch.tensor([5.0, 3.0, 2.0])
    means = torch.stack([f.mean((0, 2, 3)) for f in feats])
    vars_ = torch.stack([f.transpose(0, 1).reshape(4, -1).var(1, unbiased=True) for f in feats])
    w = (sizes / sizes.sum()).view(-1, 1)
    bn = model[1]
    assert torch.allclose(bn.running_mean, (w * means).sum(0), atol=1e-5)
    assert torch.allclose(bn.running_var, (w * vars_).sum(0), atol=1e-5)
    assert bn.momentum == 0.9 and not model.training  # momentum and mode restored
    # a second pass gives the same statistics (they are reset first)
    before = bn.running_mean.clone()
    update_bn(model, loader)
    assert torch.allclose(bn.running_mean, before, atol=1e-6)


def test_update_bn_at_a_fixed_t_matches_the_endpoint_model() -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 3, 32, 32)
    a, b = _trained_pair("vgg16bn", x)
    loader = [(x[:8], None), (x[8:], None)]
    update_bn(a, loader)
    net = CurveNet(create_model("vgg16bn", 10, 0.125), "bezier", 3)
    net.import_base(a, 0)
    net.import_base(b, 2)
    update_bn(net, loader, lambda z: net(z, t=0.0))
    for (name, ba), bc in zip(a.named_buffers(), net.net.buffers()):
        assert torch.allclose(ba.float(), bc.float(), atol=1e-6), name
    net.eval()
    with torch.no_grad():
        assert (net(x, t=0.0) - a.eval()(x)).abs().max().item() <= 1e-5


# ---- analyses helpers ----------------------------------------------------------------------------------------


def test_length_weighted_average() -> None:
    v = np.array([1.0, 3.0, 2.0])
    dl = np.array([0.0, 1.0, 3.0])
    s = summary_stats(v, dl)
    # (0.5 * (1 + 3) * 1 + 0.5 * (3 + 2) * 3) / 4
    assert s == pytest.approx({"min": 1.0, "max": 3.0, "avg": 2.0, "int": (2.0 + 7.5) / 4})


def test_plane_basis_is_orthonormal_and_places_the_bends() -> None:
    torch.manual_seed(0)
    w0, w1, w2 = torch.randn(50), torch.randn(50), torch.randn(50)
    u, v, dx, dy = plane_basis(w0, w1, w2)
    assert float(u @ u) == pytest.approx(1.0) and float(v @ v) == pytest.approx(1.0)
    assert abs(float(u @ v)) < 1e-12
    assert dx == pytest.approx(float((w2 - w0).norm()), rel=1e-6)
    # w1 lies in the plane: w0 + a u + b v reproduces it
    d = (w1 - w0).double()
    assert torch.allclose(w0.double() + (d @ u) * u + (d @ v) * v, w1.double(), atol=1e-6)


# ---- end to end on digits ------------------------------------------------------------------------------------

# every training image, no stage of its own: each test adds its stages
DIGITS = digits_recipe(name="curve_digits", run={"seed": 1},
                       data={"train_subset": None, "test_subset": 360, "eval_batch_size": 500},
                       model={"arch": "preresnet8", "width": 1.0},
                       train={"epochs": None, "optimizer": {"lr": 0.05, "weight_decay": 5e-4},
                              "schedule": {"name": "fge"}},
                       stage=None)


def _run(tmp_path: Path, raw: dict) -> Path:
    out = run_recipe(raw, tmp_path, tmp_path / "run", root=tmp_path)
    assert out.state == "done", out.error
    return out.run_dir


def test_trained_curve_beats_the_straight_line_on_digits(tmp_path: Path) -> None:
    """Two endpoints trained from different seeds, a Bezier curve between them: the curve's highest test loss
    (and NLL) is lower than the straight segment's, and its ends are the endpoints."""
    raw = {**DIGITS, "analyses": ["curve"], "model": {"arch": "preresnet8", "width": 0.5},
           "stage": [{"name": "endpoint", "method": "train", "repeat": 2, "epochs": 6, "optimizer": {"lr": 0.1}},
                     {"name": "curve", "method": "curve", "epochs": 4, "optimizer": {"lr": 0.03},
                      "params": {"curve": "bezier", "eval_points": 5}}]}
    run = _run(tmp_path, raw)
    g = read_group(run / "analysis.h5", "curve")
    assert g["t"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert g["test_loss"].max() < g["line_test_loss"].max()
    assert g["test_nll"].max() < g["line_test_nll"].max()
    # the ends are shared by the curve and the line (fixed endpoints, the same BN pass)
    for k in ("test_loss", "test_error", "train_loss"):
        assert g[k][0] == pytest.approx(g[f"line_{k}"][0], abs=1e-6)
        assert g[k][-1] == pytest.approx(g[f"line_{k}"][-1], abs=1e-6)
    a = g["_attrs"]
    assert a["length"] > a["line_length"] > 0
    assert a["test_loss_max"] == pytest.approx(float(g["test_loss"].max()))
    assert curve_analysis.report_metrics(run / "analysis.h5")["curve_max_test_error"] == pytest.approx(
        float(g["test_error"].max()))
    # the curve's end weights are exactly endpoint1's
    state = load_checkpoint(run / "curve" / "final.pt")["model"]
    e1 = load_checkpoint(run / "endpoint1" / "final.pt")["model"]
    net = CurveNet(create_model("preresnet8", 10, 0.5), "bezier", 3)
    net.load_state_dict(state)
    assert all(torch.equal(v, e1[n]) for n, v in net.unflatten(net.bend(0)).items())


def test_curve_stage_with_a_free_start_and_four_bends(tmp_path: Path) -> None:
    """A tiny pipeline: endpoints, a PolyChain curve with a free start, the curve and plane analyses; the optimizer
    has weight decay 0 and the curve leaves no ensemble member."""
    raw = {**DIGITS, "analyses": ["curve", "plane"],
           "data": {**DIGITS["data"], "train_subset": 128, "test_subset": 64},
           "model": {"arch": "vgg16bn", "width": 0.125},
           "stage": [{"name": "endpoint", "method": "train", "repeat": 2, "epochs": 1},
                     {"name": "curve", "method": "curve", "epochs": 1,
                      "params": {"curve": "polychain", "num_bends": 4, "fix_start": False, "eval_points": 3,
                                 "eval_line": False, "plane_grid": 2, "plane_margin": 0.1}}]}
    run = _run(tmp_path, raw)
    last = load_checkpoint(run / "curve" / "last.pt")
    assert all(g["weight_decay"] == 0.0 for g in last["optimizer"]["param_groups"])
    assert last["model"]["free"].shape[0] == 3 and last["model"]["fixed_points"].shape[0] == 1
    g = read_group(run / "analysis.h5", "curve")
    assert len(g["t"]) == 3 and "line_test_loss" not in g
    assert (run / "curve" / "tickets.json").read_text().count("path") == 0
    p = read_group(run / "analysis.h5", "plane")
    assert p["alphas"].tolist() == pytest.approx([-0.1, 1.1]) and p["train_loss"].shape == (2, 2)
    bends = p["bend_coordinates"]
    assert bends.shape == (4, 2) and bends[0].tolist() == [0.0, 0.0]
    assert bends[3][0] == pytest.approx(p["_attrs"]["dx"], rel=1e-6) and abs(bends[3][1]) < 1e-4
    # the middle bend (n // 2 = 2) spans v (to rounding: it is nearly on the segment after one epoch)
    assert bends[2][1] == pytest.approx(p["_attrs"]["dy"], abs=1e-6 * p["_attrs"]["dx"])
    assert p["grid"][1, 1].tolist() == pytest.approx([1.1 * p["_attrs"]["dx"], 1.1 * p["_attrs"]["dy"]])
    assert np.all(p["test_error"] >= 0) and np.all(p["train_loss"] > p["train_nll"])


def test_curve_params_are_checked(tmp_path: Path) -> None:
    from repro.recipe import RecipeError

    raw = {**DIGITS, "stage": [{"name": "endpoint", "method": "train", "repeat": 2, "epochs": 1},
                               {"name": "curve", "method": "curve", "epochs": 1,
                                "params": {"curve": "spline", "start": "endpoint1", "end": "endpoint1"}}]}
    p = write_recipe(tmp_path, raw)
    with pytest.raises(RecipeError) as e:
        load(str(p))
    assert "stage.2.params.curve" in e.value.lines[0]


def test_curve_and_plane_figures(tmp_path: Path) -> None:
    from engine.store import write_group
    from repro.plots import PLOTS, plot

    assert {"curve", "plane"} <= set(PLOTS)
    t = np.linspace(0, 1, 7)
    series = {k: 1 + np.sin(3 * t) for k in curve_analysis.SERIES}
    line = {f"line_{k}": v + 1 for k, v in series.items()}
    write_group(tmp_path / "analysis.h5", "curve", {"t": t, **series, **line},
                attrs={"curve": "bezier", "test_loss_int": 1.2}, meta={"recipe": "r", "run_id": "x"})
    g = 4
    alphas = np.linspace(-0.2, 1.2, g)
    grid = np.stack(np.meshgrid(alphas * 3, alphas * 2, indexing="ij"), -1)
    vals = {k: 0.1 + grid[..., 0] ** 2 + grid[..., 1] ** 2 for k in curve_analysis.SERIES}
    write_group(tmp_path / "analysis.h5", "plane", {
        "alphas": alphas, "betas": alphas, "grid": grid, "bend_coordinates": np.array([[0, 0], [1.5, 2], [3, 0]]),
        "curve_coordinates": np.array([[0, 0], [1.5, 1], [3, 0]]), **vals}, attrs={"middle_bend": 1})
    for mode in ("curve", "plane"):
        out = plot(tmp_path, mode, tmp_path / f"{mode}.png")
        assert out.stat().st_size > 10_000
