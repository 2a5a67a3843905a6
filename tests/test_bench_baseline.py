"""`repro bench --baseline` and `--image-size`: the JSON keys, the original-style step and topology update it times,
and the input shape an ImageNet arch sees."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from engine.bench import Stepper, baseline_recipe, bench_recipe, time_topology, train_flops_per_image
from engine.bench_original import OriginalMasking
from engine.throughput import cache_path, read_entries
from repro.cli import cli

ARCH, WIDTH = "cifar_resnet_20", 0.25
CPU = torch.device("cpu")


def _bench(*args: str) -> dict:
    res = CliRunner().invoke(cli, ["bench", "--device", "cpu", "--batch-size", "4", "--steps", "1", "--warmup", "0",
                                   "--repeats", "1", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_bench_baseline_json_has_the_new_keys_and_ratios() -> None:
    out = _bench("--arch", ARCH, "--width", str(WIDTH), "--sparse", "--baseline", "--topology",
                 "--topology-updates", "1")
    for key in ("dense_img_s", "sparse_img_s", "baseline_img_s", "baseline_sparse_img_s", "topology_update_ms",
                "topology_update_min_ms", "baseline_topology_update_ms", "baseline_topology_update_min_ms"):
        assert isinstance(out[key], float) and out[key] > 0, key
    assert out["speedup"] == pytest.approx(out["dense_img_s"] / out["baseline_img_s"], abs=2e-3)
    assert out["sparse_speedup"] == pytest.approx(out["sparse_img_s"] / out["baseline_sparse_img_s"], abs=2e-3)
    assert out["topology_speedup"] == pytest.approx(
        out["baseline_topology_update_ms"] / out["topology_update_ms"], rel=1e-3)
    assert out["torch"] == torch.__version__ and isinstance(out["gpu"], str) and out["gpu"]
    assert (out["image_size"], out["width"], out["compile"], out["precision"]) == (32, WIDTH, False, "fp32")
    assert out["dense_tflop_s"] == pytest.approx(out["dense_img_s"] * out["train_gflop_per_image"] / 1e3, abs=2e-3)


def test_training_flops_per_image_of_wrn_28_10_is_the_issues_figure() -> None:
    assert train_flops_per_image(bench_recipe("wrn-28-10", 8, "fp32")) == pytest.approx(31.46e9, rel=1e-4)


def test_bench_without_baseline_leaves_the_baseline_keys_out() -> None:
    out = _bench("--arch", "cifar_resnet_8")
    assert not {"baseline_img_s", "speedup", "topology_update_ms"} & out.keys()
    assert out["dense_img_s"] > 0 and out["sparse_img_s"] is None


def test_baseline_sparse_steps_keep_pruned_weights_zero_with_a_for_loop_sgd() -> None:
    ours = Stepper(bench_recipe(ARCH, 4, "fp32", method="fix"), CPU)
    s = Stepper(baseline_recipe(ARCH, 4, sparse=True), CPU, baseline=True)
    opt = s.trainer.optimizer
    assert type(opt) is torch.optim.SGD and opt.defaults["foreach"] is False
    for ga, gb in zip(opt.param_groups, ours.trainer.optimizer.param_groups, strict=True):  # same hyperparameters
        assert {k: ga[k] for k in ("lr", "momentum", "weight_decay", "nesterov")} == \
               {k: gb[k] for k in ("lr", "momentum", "weight_decay", "nesterov")}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in s.trainer.model.parameters()}
    masks = s.masking.bool_masks()
    assert masks.keys() == ours.trainer.method.masking.masks.keys()
    assert all(torch.equal(masks[n], m) for n, m in ours.trainer.method.masking.masks.items())  # the same draw
    s(3)
    params = dict(s.trainer.model.named_parameters())
    pruned_momentum = 0.0
    for name, mask in masks.items():
        assert not params[name][~mask].any(), name
        assert params[name][mask].count_nonzero() == mask.sum(), name  # active weights are trained, not zeroed
        pruned_momentum += float(opt.state[params[name]]["momentum_buffer"][~mask].abs().sum())
    assert pruned_momentum > 0  # the original leaves momentum unmasked: zero weights come from the mask multiply
    assert s.trainer.step == 3 and s.loss_sum > 0 and 0 <= s.correct <= 12


def test_original_update_by_hand() -> None:
    """Prune ceil(0.5 * 6) = 3 smallest active weights, regrow 3 where |grad| is largest among the inactive; the
    layer that started dense loses its 2 smallest weights to zero and is switched fully back on."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False), torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -0.5, 0.3, 0.0], [0.2, 0.0, -0.4, 0.6]]))
        model[1].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
    model[0].weight.grad = torch.tensor([[0.9, 5.0, 0.1, -0.8], [0.05, -0.7, 5.0, 5.0]])
    model[1].weight.grad = torch.ones(2, 2)
    masks = {"0.weight": torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1]], dtype=torch.bool),
             "1.weight": torch.ones(2, 2, dtype=torch.bool)}
    om = OriginalMasking(model, masks)
    assert om.update(0.5) == 10
    assert torch.equal(om.bool_masks()["0.weight"], torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool))
    assert torch.equal(model[0].weight, torch.tensor([[0.0, -0.5, 0.0, 0.0], [0.0, 0.0, -0.4, 0.6]]))
    assert om.bool_masks()["1.weight"].all()
    assert torch.equal(model[1].weight, torch.tensor([[0.0, 0.0], [3.0, 4.0]]))


def test_baseline_topology_update_keeps_counts_and_agrees_with_ours() -> None:
    kw = {"width": WIDTH, "density": 0.2, "updates": 2, "warmup": 1}
    base = time_topology(ARCH, CPU, baseline=True, **kw)
    ours = time_topology(ARCH, CPU, **kw)
    assert base.initial.keys() == ours.initial.keys() == base.masks.keys()
    moved = 0
    for name, start in base.initial.items():
        assert torch.equal(start, ours.initial[name])
        assert int(base.masks[name].sum()) == int(start.sum()) == int(ours.masks[name].sum()), name
        assert torch.equal(base.masks[name], ours.masks[name]), name  # no ties: the same weights pruned and grown
        moved += int((base.masks[name] != start).sum())
    assert moved > 0 and len(base.times_ms) == 2


def test_baseline_topology_refuses_other_rules() -> None:
    with pytest.raises(ValueError, match="magnitude prune with gradient growth only"):
        time_topology(ARCH, CPU, width=WIDTH, growth="random", baseline=True)


def test_image_size_reaches_an_imagenet_arch_and_the_bench_cache() -> None:
    s = Stepper(bench_recipe("resnet18", 2, "fp32", image_size=64), CPU)
    seen = []
    s.trainer.model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    s(1)
    assert seen == [(2, 3, 64, 64)]
    out = _bench("--arch", "resnet18", "--width", "0.125", "--image-size", "64")
    assert out["image_size"] == 64 and out["dense_img_s"] > 0
    entries = [e for e in read_entries(cache_path()) if e.arch == "resnet18" and e.width == 0.125]
    assert [e.image_shape for e in entries] == [(3, 64, 64)]
