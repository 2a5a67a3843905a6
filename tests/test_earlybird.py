"""Early-Bird tickets: masks, distances and the detector on hand-made cases; real channel pruning checked against
hand-computed parameter/FLOP counts and element by element; the low-precision quantiser by hand; the pipeline
search -> prune -> retrain on digits in-process (methods and analyses registered for the test)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

import engine.analyses as analyses_pkg
import engine.methods as methods_pkg
from engine.analyses import earlybird as eb_analysis
from engine.analyses import mask_overlap
from engine.analyses.context import AnalysisContext
from engine.config.params import ratio_tag
from engine.io import load_checkpoint
from engine.lowprec import LowPrecision, block_quantize
from engine.methods.earlybird import EBPrune, EBRetrain, EBSearch
from engine.models import create_model
from engine.runlog import read_metrics
from engine.sparse.channel_prune import model_cost, prune_channels
from engine.sparse.channels import (
    EarlyBird,
    bn_layers,
    bn_scales,
    channel_mask,
    detect,
    detector_trace,
    global_threshold,
    layer_masks,
)
from engine.sparse.masks import hamming_matrix, mask_distance
from engine.store import read_group
from repro.launch import execute
from repro.plots import plot_earlybird, plot_mask_overlap
from repro.recipe import RecipeError, load
from repro.report import run_metrics

# ---- masks, distance, detector -------------------------------------------------------------------------------


class TwoBN(nn.Module):
    def __init__(self, g1: list[float], g2: list[float]) -> None:
        super().__init__()
        self.a = nn.BatchNorm2d(len(g1))
        self.lin = nn.Linear(2, 2)  # not a BN: ignored
        self.b = nn.BatchNorm2d(len(g2))
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor(g1))
            self.b.weight.copy_(torch.tensor(g2))


def test_mask_keeps_exactly_the_channels_above_the_global_threshold() -> None:
    m = TwoBN([0.9, -0.1, 0.5], [0.3, -0.7, 0.2, 0.05])
    s = bn_scales(m)
    assert s.tolist() == pytest.approx([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.05])
    # sorted: 0.05 0.1 0.2 0.3 0.5 0.7 0.9; p = 0.3 -> index int(7 * 0.3) = 2 -> threshold 0.2 (strict >)
    assert global_threshold(s, 0.3) == pytest.approx(0.2)
    assert channel_mask(s, 0.3).tolist() == [True, False, True, True, True, False, False]
    # p = 0.5 -> index 3 -> threshold 0.3, so the 0.3 channel itself goes
    assert channel_mask(s, 0.5).tolist() == [True, False, True, False, True, False, False]
    assert channel_mask(s, 0.0).tolist() == [True, True, True, True, True, True, False]  # the minimum never kept
    per_layer = layer_masks(m, 0.5)
    assert [x.tolist() for x in per_layer] == [[True, False, True], [False, True, False, False]]
    # every channel above the threshold is kept, every other one pruned, for several ratios
    for p in (0.1, 0.25, 0.6, 0.85):
        thr = sorted(s.tolist())[int(7 * p)]
        assert channel_mask(s, p).tolist() == [v > thr for v in s.tolist()]


def test_ties_at_the_threshold_are_pruned_and_layers_keep_one_channel() -> None:
    tied = torch.full((8,), 0.5)  # every gamma at its initial 0.5: the original's empty first mask
    assert not channel_mask(tied, 0.3).any()
    m = TwoBN([0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.9])
    masks = layer_masks(m, 0.3)
    # layer a would lose every channel; it keeps its largest-|gamma| one (the first of the tie)
    assert masks[0].tolist() == [True, False, False] and masks[1].tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="ratio"):
        channel_mask(tied, 1.0)


def test_mask_distance_self_zero_complement_one() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(257, generator=g) > 0.4
    assert mask_distance(a, a) == 0.0
    assert mask_distance(a, ~a) == 1.0
    b = a.clone()
    b[:10] = ~b[:10]
    assert mask_distance(a, b) == pytest.approx(10 / 257)
    d = hamming_matrix([a, ~a, b])
    expected = torch.tensor([[0, 1, 10 / 257], [1, 0, 247 / 257], [10 / 257, 247 / 257, 0]], dtype=torch.float64)
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        mask_distance(a, a[:-1])


def _seq() -> list[torch.Tensor]:
    """Ten positions; the distances are multiples of 0.1 by construction."""
    m0 = torch.zeros(10, dtype=torch.bool)
    m1 = m0.clone()
    m1[:5] = True
    m2 = m1.clone()
    m2[5] = True  # d(m2, m1) = 0.1
    m3 = m2.clone()
    m3[6] = True  # d(m3, m2) = 0.1 but d(m3, m1) = 0.2: consecutive steps small, drift too large
    m4 = m3.clone()  # d(m4, m3) = 0, d(m4, m2) = 0.1 -> every distance <= 0.1: fires here
    return [m0, m1, m2, m3, m4]


def test_detector_fires_exactly_where_it_should() -> None:
    seq = _seq()
    trace = detector_trace(seq, window=3)
    assert math.isnan(trace[0]) and math.isnan(trace[1])
    assert trace[2:] == pytest.approx([0.6, 0.2, 0.1])  # newest vs each older mask in the window, the largest
    assert detect(seq, window=3, threshold=0.1) == 4
    assert detect(seq, window=3, threshold=0.09) is None
    assert detect(seq, window=3, threshold=0.2) == 3  # <= threshold fires (the original fails on > only)
    assert detect(seq, window=2, threshold=0.1) == 2  # a window of 2 compares consecutive masks
    # the streaming detector agrees and keeps its first firing
    det = EarlyBird(0.3, window=3, threshold=0.1)
    fired = [det.observe(m) for m in seq + [seq[-1]]]
    assert fired == [False, False, False, False, True, True] and det.found == 4
    state = det.state_dict()
    det2 = EarlyBird(0.3, window=3, threshold=0.1)
    det2.load_state_dict(state)
    assert det2.found == 4 and det2.seen == 6 and len(det2.masks) == 3
    assert ratio_tag(0.3) == "30" and ratio_tag(0.125) == "12.5"


def test_l1_subgradient_is_added_to_bn_scales_only() -> None:
    model = TwoBN([0.9, -0.1, 0.5], [0.3, -0.7, 0.2, 0.05])
    with torch.no_grad():
        model.a.weight[1] = 0.0  # sign(0) = 0: no push
    trainer = SimpleNamespace(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    for sr, s in ((True, 0.01), (False, 0.01)):
        method = EBSearch(trainer, SimpleNamespace(params={"sr": sr, "s": s}), SimpleNamespace())
        method.prepare_model(model)
        method.setup()
        grads = {n: torch.full_like(p, 0.5) for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        model.b.weight.grad = None  # a BN without a gradient is skipped
        method.before_step()
        push = 0.01 * torch.tensor([1.0, 0.0, 1.0]) if sr else torch.zeros(3)
        torch.testing.assert_close(model.a.weight.grad, 0.5 + push, rtol=0, atol=0)
        assert model.b.weight.grad is None
        for n in ("a.bias", "lin.weight", "lin.bias", "b.bias"):
            assert torch.equal(dict(model.named_parameters())[n].grad, grads[n])


# ---- real pruning --------------------------------------------------------------------------------------------

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in bn_layers(model):
            n = bn.num_features
            bn.weight.copy_(torch.rand(n, generator=g) * 2 - 1)
            bn.bias.copy_(torch.rand(n, generator=g) - 0.5)
            bn.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            bn.num_batches_tracked.fill_(7)


def vgg_counts(cfg: list, classes: int = 10) -> tuple[int, int]:
    """Parameters and conv/linear FLOPs of a slimming VGG from its cfg, by hand (32x32 input)."""
    params, flops, c_in, size = 0, 0, 3, 32
    for v in cfg:
        if v == "M":
            size //= 2
            continue
        params += 9 * c_in * v + 2 * v  # conv (no bias) + BN
        flops += 2 * 9 * c_in * v * size * size
        c_in = v
    return params + c_in * classes + classes, flops + 2 * c_in * classes


def preresnet_counts(cfg: list[int], planes: list[int], n: int, classes: int = 10) -> tuple[int, int]:
    """The same for the EB PreResNet (bottleneck x4, channel selections counted as parameters)."""
    stem = planes[0]
    params, flops = 9 * 3 * stem, 2 * 9 * 3 * stem * 32 * 32
    inplanes, size, k = stem, 32, 0
    for s, p in enumerate(planes):
        for b in range(n):
            c0, c1, c2 = cfg[k:k + 3]
            k += 3
            out_size = size // 2 if (s > 0 and b == 0) else size
            params += 3 * inplanes + c0 * c1 + 2 * c1 + 9 * c1 * c2 + 2 * c2 + c2 * 4 * p
            flops += 2 * c0 * c1 * size * size + 2 * 9 * c1 * c2 * out_size ** 2 + 2 * c2 * 4 * p * out_size ** 2
            if b == 0 and (s > 0 or inplanes != 4 * p):
                params += inplanes * 4 * p
                flops += 2 * inplanes * 4 * p * out_size ** 2
            inplanes, size = 4 * p, out_size
    params += 3 * inplanes + cfg[-1] * classes + classes
    return params, flops + 2 * cfg[-1] * classes


def test_vgg_pruning_counts_and_copies_every_surviving_weight() -> None:
    torch.manual_seed(0)
    width = 0.125
    src = create_model("eb-vgg16", 10, width)
    _randomise_bn(src)
    with torch.no_grad():
        src.classifier.bias.normal_()
    res = prune_channels(src, 0.5, lambda cfg: create_model("eb-vgg16", 10, width, cfg=cfg))
    full = [v if v == "M" else max(1, round(v * width)) for v in VGG16]
    assert src.cfg == full
    # the cfg holds the kept count of every BN, 'M' in place, and at least int(N*p)+1 channels went
    assert [v for v in res.cfg if v != "M"] == [int(m.sum()) for m in res.masks]
    assert [i for i, v in enumerate(res.cfg) if v == "M"] == [i for i, v in enumerate(full) if v == "M"]
    assert res.total == sum(v for v in full if v != "M") == len(bn_scales(src))
    above = bn_scales(src) > res.threshold
    start = 0
    for m in res.masks:  # exactly the channels above the threshold, unless a layer had none (then its largest one)
        a = above[start:start + len(m)]
        assert torch.equal(m, a) if a.any() else int(m.sum()) == 1
        start += len(m)
    # parameter and FLOP counts before and after, by hand from the cfgs
    assert model_cost(src) == dict(zip(("params", "flops"), vgg_counts(full)))
    assert model_cost(res.model) == dict(zip(("params", "flops"), vgg_counts(res.cfg)))
    assert model_cost(res.model)["params"] < model_cost(src)["params"]
    # element by element: conv [out kept, in kept], BN entries, the classifier's columns
    sc = [m for m in src.feature if isinstance(m, nn.Conv2d)]
    dc = [m for m in res.model.feature if isinstance(m, nn.Conv2d)]
    sb, db = bn_layers(src), bn_layers(res.model)
    prev = list(range(3))
    for layer, mask in enumerate(res.masks):
        kept = torch.nonzero(mask).flatten().tolist()
        assert dc[layer].weight.shape == (len(kept), len(prev), 3, 3)
        for j, a in enumerate(kept):
            for k, b in enumerate(prev):
                assert torch.equal(dc[layer].weight[j, k], sc[layer].weight[a, b])
            for name in ("weight", "bias", "running_mean", "running_var"):
                assert getattr(db[layer], name)[j] == getattr(sb[layer], name)[a]
        assert int(db[layer].num_batches_tracked) == 7
        prev = kept
    for k, b in enumerate(prev):
        assert torch.equal(res.model.classifier.weight[:, k], src.classifier.weight[:, b])
    assert torch.equal(res.model.classifier.bias, src.classifier.bias)
    # the pruned network computes what the source computes with the pruned channels' gamma and beta zeroed
    with torch.no_grad():
        for bn, m in zip(sb, res.masks):
            bn.weight[~m] = 0
            bn.bias[~m] = 0
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(res.model.eval()(x), src.eval()(x), rtol=1e-5, atol=1e-6)


def test_preresnet_pruning_counts_selection_and_equivalence() -> None:
    torch.manual_seed(1)
    width = 0.5
    src = create_model("eb-preresnet20", 10, width)  # 2 bottlenecks a stage, planes 8/16/32
    _randomise_bn(src, seed=3)
    res = prune_channels(src, 0.4, lambda cfg: create_model("eb-preresnet20", 10, width, cfg=cfg))
    planes, n = [8, 16, 32], 2
    assert len(res.cfg) == 9 * n + 1 == len(bn_layers(src))
    assert res.cfg == [int(m.sum()) for m in res.masks] and min(res.cfg) >= 1
    full = src.cfg
    assert model_cost(src) == dict(zip(("params", "flops"), preresnet_counts(full, planes, n)))
    assert model_cost(res.model) == dict(zip(("params", "flops"), preresnet_counts(res.cfg, planes, n)))
    # the pre-activation BN keeps its width; its selection holds its mask; conv1 is [kept bn2, kept bn1]
    blocks_s = [b for layer in (src.layer1, src.layer2, src.layer3) for b in layer]
    blocks_d = [b for layer in (res.model.layer1, res.model.layer2, res.model.layer3) for b in layer]
    for i, (bs, bd) in enumerate(zip(blocks_s, blocks_d)):
        m1, m2, m3 = res.masks[3 * i:3 * i + 3]
        assert torch.equal(bd.bn1.weight, bs.bn1.weight)
        assert bd.select.indexes.tolist() == m1.float().tolist()
        i1, i2, i3 = (torch.nonzero(m).flatten().tolist() for m in (m1, m2, m3))
        for j, a in enumerate(i2):
            for k, b in enumerate(i1):
                assert torch.equal(bd.conv1.weight[j, k], bs.conv1.weight[a, b])
        for j, a in enumerate(i3):
            for k, b in enumerate(i2):
                assert torch.equal(bd.conv2.weight[j, k], bs.conv2.weight[a, b])
        for k, b in enumerate(i3):
            assert torch.equal(bd.conv3.weight[:, k], bs.conv3.weight[:, b])
        assert bd.bn3.weight.tolist() == bs.bn3.weight[i3].tolist()
    assert res.model.select.indexes.tolist() == res.masks[-1].float().tolist()
    with torch.no_grad():
        for bn, m in zip(bn_layers(src), res.masks):
            bn.weight[~m] = 0
            bn.bias[~m] = 0
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(res.model.eval()(x), src.eval()(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unpruned"):
        prune_channels(res.model, 0.3, lambda cfg: create_model("eb-preresnet20", 10, width, cfg=cfg))
    with pytest.raises(ValueError, match="supports"):
        prune_channels(create_model("cifar_resnet_8", 10), 0.3, lambda cfg: None)


# ---- low precision -------------------------------------------------------------------------------------------


def test_block_quantize_by_hand() -> None:
    x = torch.tensor([0.75, -0.3, 0.1, 0.0, 0.99, -0.99])
    # max |x| 0.99 -> exponent -1, step 2^(-1 + 2 - 4) = 0.125 at 4 bits; clip at +-7 steps
    q = block_quantize(x, 4, stochastic=False, dim=-1)
    assert q.tolist() == [0.75, -0.25, 0.125, 0.0, 0.875, -0.875]
    rows = torch.tensor([[1.5, 0.1], [0.01, -0.003]])  # dim 0: one exponent per row
    q = block_quantize(rows, 8, stochastic=False, dim=0)
    assert q.tolist() == [[1.5, 0.09375], [0.010009765625, -0.0030517578125]]  # steps 2^-6 and 2^-13
    assert torch.equal(block_quantize(torch.zeros(3, 2), 8), torch.zeros(3, 2))
    torch.manual_seed(0)
    draws = torch.stack([block_quantize(torch.tensor([0.3, 0.99]), 4, stochastic=True, dim=-1) for _ in range(4000)])
    assert set(draws[:, 0].tolist()) == {0.25, 0.375}  # stochastic rounding to a neighbour, unbiased
    assert float(draws[:, 0].mean()) == pytest.approx(0.3, abs=0.01)


def test_low_precision_hooks_keep_the_state_dict_and_quantise_outputs() -> None:
    torch.manual_seed(0)
    model = create_model("eb-vgg16", 10, 0.125)
    keys = list(model.state_dict())
    lp = LowPrecision(model, wl_weight=8, wl_activate=8, wl_grad=8, wl_error=8, wl_momentum=8, rounding="nearest")
    assert list(model.state_dict()) == keys and len(lp.handles) == 13  # 13 convs; the classifier is left alone
    conv = model.feature[0]
    seen = {}
    conv.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    x = torch.randn(2, 3, 32, 32)
    raw = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    model(x)
    assert torch.equal(seen["out"], block_quantize(raw, 8, stochastic=False))
    with torch.no_grad():
        conv.weight.add_(1e-3)
    lp.quantize_weights([conv.weight])
    assert torch.equal(conv.weight, block_quantize(conv.weight, 8, stochastic=False))
    lp.remove()
    assert not conv._forward_hooks or all(h is not lp._hook for h in conv._forward_hooks.values())


# ---- the pipeline in-process ---------------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(methods_pkg.METHODS, "eb_search", EBSearch)
    monkeypatch.setitem(methods_pkg.METHODS, "eb_prune", EBPrune)
    monkeypatch.setitem(methods_pkg.METHODS, "eb_retrain", EBRetrain)
    monkeypatch.setitem(analyses_pkg.ANALYSES, "earlybird", eb_analysis.run)
    monkeypatch.setitem(analyses_pkg.ANALYSES, "mask_overlap", mask_overlap.run)


def test_smoke_pipeline_draws_tickets_prunes_and_retrains(registered: None, tmp_path: Path) -> None:
    res = load("earlybird_vgg16_cifar100", smoke=True, sets=['stage.prune.params.missing="error"'])[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu", smoke=True)
    assert out.state == "done", out.error
    run = out.run_dir
    ratios = res.recipe.stage[0].params.ratios
    # an EB epoch for every ratio, in the method state, the metrics and /earlybird
    eb = load_checkpoint(run / "search" / "final.pt")["method"]["earlybird"]
    assert set(eb["found"]) == {ratio_tag(r) for r in ratios}
    g = read_group(run / "analysis.h5", "earlybird")
    assert g["eb_epoch"].tolist() == [eb["found"][ratio_tag(r)] for r in ratios] and (g["eb_epoch"] >= 1).all()
    # repro report's eb_epoch: the epoch of the ratio the prune stage takes (p = 0.3), not of the others
    assert g["_attrs"]["prune_ratio"] == 0.3
    assert run_metrics(run)["eb_epoch"] == eb["found"]["30"]
    recs = read_metrics(run)
    for r in ratios:
        tag = ratio_tag(r)
        assert [x["epoch"] for x in recs if x.get("stage") == "search" and f"eb_epoch_{tag}" in x] == [
            eb["found"][tag]]
        ticket = load_checkpoint(run / "search" / f"eb-{tag}.pt")
        assert ticket["epoch"] == eb["found"][tag] and torch.equal(ticket["scales"], eb["scales"][ticket["epoch"]])
    # the detector statistic at the EB epoch is within the threshold, and not before the window filled
    thr = res.recipe.stage[0].params.threshold
    for i in range(len(ratios)):
        e = int(g["eb_epoch"][i])
        assert g["window_distance"][i, e] <= thr
        assert all(not (d <= thr) for d in g["window_distance"][i, :e])
    # the pruned network: the kept channels of the p = 0.3 ticket, parameters/FLOPs as its cfg implies
    prune = load_checkpoint(run / "prune" / "final.pt")
    info, cfg = prune["method"]["prune"], prune["model_kwargs"]["cfg"]
    ticket = load_checkpoint(run / "search" / "eb-30.pt")
    keep = channel_mask(ticket["scales"], 0.3)
    assert info["channels_kept"] == int(keep.sum()) == sum(v for v in cfg if v != "M")
    full = [v if v == "M" else max(1, round(v * 0.125)) for v in VGG16]
    p_full, f_full = vgg_counts(full)
    p_pruned, f_pruned = vgg_counts(cfg)
    assert (info["params_before"], info["flops_before"]) == (p_full, f_full)
    assert (info["params_after"], info["flops_after"]) == (p_pruned, f_pruned)
    assert p_pruned < p_full and f_pruned < f_full
    # a measure-only stage: no step, no learning rate, no training FLOPs; its row has the pruned network's numbers
    assert prune["cost"]["total"] == 0.0 and load_checkpoint(run / "prune" / "last.pt")["step"] == 0
    rows = [x for x in recs if x.get("stage") == "prune"]
    assert len(rows) == 1 and rows[0]["train_flops"] == 0.0 and not {"lr", "step"} & set(rows[0])
    assert {"test_acc", "flops_after"} <= set(rows[0]) and not {"train_loss", "train_acc"} & set(rows[0])
    # the prune stage's epoch changed nothing: its final weights are the EB ticket's surviving weights
    src = create_model("eb-vgg16", 10, 0.125)
    src.load_state_dict(ticket["model"])
    again = prune_channels(src, 0.3, lambda c: create_model("eb-vgg16", 10, 0.125, cfg=c))
    for k, v in again.model.state_dict().items():
        assert torch.equal(prune["model"][k], v), k
    # retraining ran to the end on the pruned architecture (continued from the EB weights)
    final = load_checkpoint(run / "retrain" / "final.pt")
    assert final["model_kwargs"]["cfg"] == cfg and final["epoch"] == res.recipe.stage[2].epochs
    assert final["method"]["offset"] == 35
    members = json.loads((run / "retrain" / "tickets.json").read_text())["members"]
    assert members[0]["model_kwargs"]["cfg"] == cfg
    # the channel-mask distance matrix over the search's epochs
    ov = read_group(run / "analysis.h5", "mask_overlap")
    k = res.recipe.stage[0].epochs + 1
    assert ov["_attrs"]["kind"] == "channel" and ov["distance"].shape == (k, k)
    assert ov["distance_by_ratio"].shape == (len(ratios), k, k)
    masks = [channel_mask(s, 0.5) for s in eb["scales"]]
    assert ov["distance"][2, 5] == pytest.approx(mask_distance(masks[2], masks[5]))
    assert ov["distance"][0, 3] == pytest.approx(float(masks[3].float().mean()))  # the init mask is empty
    # the figures draw from the stored groups; mask_overlap dispatches on the recipe
    for fig in (plot_earlybird(g, "eb"), plot_mask_overlap(ov, "overlap")):
        assert len(fig.axes) >= 2
        plt.close(fig)
    ctx = AnalysisContext(recipe=res.recipe, run_dir=run, device=torch.device("cpu"))
    assert eb_analysis.search_stages(ctx) == ["search"]
    demo = AnalysisContext(recipe=load("demo_digits")[0].recipe, run_dir=run, device=torch.device("cpu"))
    assert not eb_analysis.search_stages(demo)


@pytest.mark.parametrize("weights", ["reinit", "inherit"])
def test_retrain_weights_and_schedule_offset(registered: None, tmp_path: Path, weights: str) -> None:
    res = load("earlybird_scratch_vgg16_cifar10", smoke=True,
               sets=["stage.retrain.params.start_epoch=79", "stage.retrain.optimizer.lr=1e-9",
                     f'stage.retrain.params.weights="{weights}"', "stage.search.params.stop_when_found=true"])[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu", smoke=True)
    assert out.state == "done", out.error
    run = out.run_dir
    assert load_checkpoint(run / "search" / "final.pt")["method"]["earlybird"]["stop"] is True
    prune = load_checkpoint(run / "prune" / "final.pt")
    recs = [r for r in read_metrics(run) if r.get("stage") == "retrain"]
    assert [r["lr"] for r in recs] == pytest.approx([1e-9, 1e-10])  # absolute epochs 79, 80: the decay at 80
    state = load_checkpoint(run / "retrain" / "final.pt")
    assert state["model_kwargs"] == prune["model_kwargs"]
    # lr ~0 keeps the starting weights: the EB ticket's (inherit) or fresh ones (seed run.seed + 1000 * index + 17)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1 + 1000 * 2 + 17)
        fresh = create_model("eb-vgg16", 10, 0.125, **prune["model_kwargs"]).state_dict()
    start = fresh if weights == "reinit" else prune["model"]
    other = prune["model"] if weights == "reinit" else fresh
    for k, v in state["model"].items():
        if k.endswith("weight") and v.dim() > 1:
            torch.testing.assert_close(v, start[k], rtol=0, atol=1e-6)
            assert not torch.allclose(v, other[k], atol=1e-3)


def test_stop_when_found_ends_the_search(registered: None, tmp_path: Path) -> None:
    if "stop_requested" not in vars(methods_pkg.Method):
        pytest.skip("the trainer does not read Method.stop_requested() yet")
    res = load("earlybird_vgg16_cifar100", smoke=True, sets=["stage.search.params.stop_when_found=true"])[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu", smoke=True)
    assert out.state == "done", out.error
    final = load_checkpoint(out.run_dir / "search" / "final.pt")
    last = max(final["method"]["earlybird"]["found"].values())
    assert final["epoch"] == last < res.recipe.stage[0].epochs
    assert max(r["epoch"] for r in read_metrics(out.run_dir) if r.get("stage") == "search") == last


@pytest.mark.slow
def test_search_resumes_bitwise(registered: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = load("earlybird_vgg16_cifar10", smoke=True)[0]
    a = execute(res, root=tmp_path, out=str(tmp_path / "a"), device="cpu", smoke=True)
    assert a.state == "done", a.error
    original = EBSearch.end_epoch
    calls = {"n": 0}

    def crash(self: EBSearch, epoch: int, record: dict) -> None:
        original(self, epoch, record)
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")

    monkeypatch.setattr(EBSearch, "end_epoch", crash)
    b = execute(res, root=tmp_path, out=str(tmp_path / "b"), device="cpu", smoke=True)
    assert b.state == "failed"
    b = execute(res, root=tmp_path, out=str(tmp_path / "b"), resume=True, device="cpu", smoke=True)
    assert b.state == "done", b.error
    ea = load_checkpoint(a.run_dir / "search" / "final.pt")["method"]["earlybird"]
    eb = load_checkpoint(b.run_dir / "search" / "final.pt")["method"]["earlybird"]
    assert ea["found"] == eb["found"] and torch.equal(ea["scales"], eb["scales"])
    fa = load_checkpoint(a.run_dir / "retrain" / "final.pt")["model"]
    fb = load_checkpoint(b.run_dir / "retrain" / "final.pt")["model"]
    assert all(torch.equal(fa[k], fb[k]) for k in fa)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["earlybird_lowprec_vgg16_cifar10", "earlybird_scratch_preresnet101_cifar100"])
def test_other_pipelines_run(registered: None, tmp_path: Path, name: str) -> None:
    res = load(name, smoke=True)[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu", smoke=True)
    assert out.state == "done", out.error
    info = load_checkpoint(out.run_dir / "prune" / "final.pt")["method"]["prune"]
    assert info["params_after"] < info["params_before"] and info["flops_after"] < info["flops_before"]
    if "preresnet" in name:  # re-initialised, but the channel selections (the architecture) kept
        p = load_checkpoint(out.run_dir / "prune" / "final.pt")["model"]
        f = load_checkpoint(out.run_dir / "retrain" / "final.pt")["model"]
        sel = [k for k in p if k.endswith("select.indexes")]
        assert sel and all(torch.equal(p[k], f[k]) for k in sel) and any((p[k] == 0).any() for k in sel)
    if "lowprec" in name:
        assert (out.run_dir / "search" / "swa.pt").exists() and (out.run_dir / "retrain" / "swa.pt").exists()
        assert any("swa_test_acc" in r for r in read_metrics(out.run_dir) if r.get("stage") == "retrain")


def test_retrain_stops_at_the_absolute_end_epoch(registered: None, tmp_path: Path) -> None:
    # main_c.py --start-epoch 5 --epochs 7: two epochs (5 and 6) of a stage allowed up to 10
    res = load("earlybird_vgg16_cifar10", smoke=True,
               sets=["stage.retrain.params.start_epoch=5", "stage.retrain.params.end_epoch=7",
                     "stage.retrain.epochs=10"])[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu", smoke=True)
    assert out.state == "done", out.error
    assert load_checkpoint(out.run_dir / "retrain" / "final.pt")["epoch"] == 2
    assert [r["epoch"] for r in read_metrics(out.run_dir) if r.get("stage") == "retrain" and "lr" in r] == [1, 2]
    with pytest.raises(RecipeError, match="6 epochs from start_epoch 5 never reach end_epoch 12: set epochs >= 7"):
        load("earlybird_vgg16_cifar10", sets=["stage.retrain.params.start_epoch=5",
                                              "stage.retrain.params.end_epoch=12", "stage.retrain.epochs=6"])
    with pytest.raises(RecipeError, match="end_epoch 5 must lie after start_epoch 5"):
        load("earlybird_vgg16_cifar10", sets=["stage.retrain.params.start_epoch=5",
                                              "stage.retrain.params.end_epoch=5"])


def test_prune_takes_the_search_best_accuracy_weights(registered: None, tmp_path: Path) -> None:
    res = load("earlybird_vgg16_cifar10", smoke=True,
               sets=['stage.prune.params.ticket="best"', 'stage.search.keep="best"', "stage.retrain.epochs=1"])[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu", smoke=True)
    assert out.state == "done", out.error
    search = [r for r in read_metrics(out.run_dir) if r.get("stage") == "search"]
    best = max(search, key=lambda r: (r["test_acc"], -r["epoch"]))["epoch"]  # the first of equal bests
    info = load_checkpoint(out.run_dir / "prune" / "final.pt")["method"]["prune"]
    assert info["ticket"] == "best-accuracy weights" and info["ticket_epoch"] == best
    bad = load("earlybird_vgg16_cifar10", smoke=True, sets=['stage.prune.params.ticket="best"'])[0]
    out = execute(bad, root=tmp_path, out=str(tmp_path / "bad"), device="cpu", smoke=True)
    assert out.state == "failed" and "kept no best.pt (set its keep = \"best\")" in out.error
