"""The ImageNet recipes' schedules against numbers worked out by hand from the originals' code (freetickets.md §5.2,
suptickets_and_random_pruning.md A.4 and B.6): per-epoch warm-up, EDST's phase table and prune-rate restarts,
Sup-tickets' absolute milestones, and the recipes resolving to those settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine.config import ModelConfig, Recipe, ScheduleConfig, SparseConfig, StageConfig
from engine.methods.edst import EDST
from engine.methods.suptickets import SupTickets
from engine.schedules import edst_lr, edst_phase_starts, lr_at, warmup_lr
from repro.recipe import RecipeError, load

IMAGENET_EDST = [[0, 0.01], [30, 0.001], [60, 0.0001]]


def stage(method: str, epochs: int, lr: float, params: dict, **schedule: object) -> StageConfig:
    return StageConfig(name="s", method=method, epochs=epochs, optimizer={"lr": lr},
                       schedule=ScheduleConfig(**schedule), params=params)


def method_lr(cls: type, st: StageConfig) -> object:
    """A method of the stage config with a stand-in trainer and run (its lr reads the stage config alone)."""
    return cls(SimpleNamespace(), st, SimpleNamespace())


# ---- warm-up ------------------------------------------------------------------------------------------
def test_epoch_warmup_is_lr_times_e_plus_1_over_w_plus_1() -> None:
    cfg = ScheduleConfig(warmup_epochs=5, warmup_style="epoch")
    # lr 0.1, W = 5: 0.1/6, 0.2/6, ..., 0.5/6, then 0.1; constant within an epoch
    expected = {0: 0.1 / 6, 1: 0.2 / 6, 2: 0.05, 3: 0.4 / 6, 4: 0.5 / 6}
    for epoch, lr in expected.items():
        for frac in (0.0, 0.5, 0.99):
            assert lr_at(cfg, 0.1, epoch, frac, 100) == pytest.approx(lr)
    assert lr_at(cfg, 0.1, 0, 0.0, 100) == pytest.approx(0.0166666667)
    assert lr_at(cfg, 0.1, 4, 0.0, 100) == pytest.approx(0.0833333333)
    assert lr_at(cfg, 0.1, 5, 0.0, 100) == 0.1
    assert warmup_lr(cfg, 0.1, 5, 0.0) is None


def test_step_warmup_is_unchanged() -> None:
    cfg = ScheduleConfig(warmup_epochs=5)  # default style "step": lr·(e + frac)/W
    assert cfg.warmup_style == "step"
    assert lr_at(cfg, 0.1, 2, 0.5, 100) == pytest.approx(0.05)
    assert lr_at(cfg, 0.1, 4, 0.75, 100) == pytest.approx(0.095)
    assert lr_at(cfg, 0.1, 0, 0.0, 100) == pytest.approx(0.0, abs=1e-12) and lr_at(cfg, 0.1, 0, 0.0, 100) > 0
    with pytest.raises(ValueError):
        ScheduleConfig(warmup_style="linear")


def test_random_pruning_wrn50_schedule() -> None:
    # Random_Pruning ImageNet: lr 0.4, warm-up 5 per epoch, then x0.1 from epochs 30, 60, 80 (100 epochs)
    cfg = ScheduleConfig(name="multistep", milestones=[30, 60, 80], warmup_epochs=5, warmup_style="epoch")
    table = {0: 0.4 / 6, 2: 0.2, 4: 0.4 * 5 / 6, 5: 0.4, 29: 0.4, 30: 0.04, 59: 0.04, 60: 0.004, 79: 0.004,
             80: 0.0004, 99: 0.0004}
    for epoch, lr in table.items():
        assert lr_at(cfg, 0.4, epoch, 0.3, 100) == pytest.approx(lr), epoch


# ---- EDST on ImageNet ---------------------------------------------------------------------------------
def test_edst_imagenet_phase_table() -> None:
    # 310 epochs = 30 exploration + 4 phases of 70: phases start at epochs 30, 100, 170, 240 (0-based)
    assert edst_phase_starts(310, 30, 4) == [30, 100, 170, 240]
    table = {0: 0.1, 29: 0.1, 30: 0.01, 59: 0.01, 60: 0.001, 89: 0.001, 90: 0.0001, 99: 0.0001, 100: 0.01,
             129: 0.01, 130: 0.001, 160: 0.0001, 169: 0.0001, 170: 0.01, 200: 0.001, 230: 0.0001, 240: 0.01,
             270: 0.001, 299: 0.001, 300: 0.0001, 309: 0.0001}
    for epoch, lr in table.items():
        assert edst_lr(0.1, epoch, 310, 30, 4, table=IMAGENET_EDST) == lr, epoch
    # without a table: today's halves (CIFAR), unchanged
    assert [edst_lr(0.1, e, 450, 150, 3) for e in (149, 150, 199, 200, 250)] == [0.1, 0.01, 0.01, 0.001, 0.01]


def test_edst_method_lr_warms_up_then_follows_the_table() -> None:
    st = stage("edst", 310, 0.1, {"epochs_explo": 30, "model_num": 4, "phase_schedule": IMAGENET_EDST},
               warmup_epochs=5, warmup_style="epoch")
    m = method_lr(EDST, st)
    got = {e: m.lr(e, 0.5) for e in (0, 4, 5, 29, 30, 59, 60, 99, 100, 309)}
    want = {0: 0.1 / 6, 4: 0.5 / 6, 5: 0.1, 29: 0.1, 30: 0.01, 59: 0.01, 60: 0.001, 99: 0.0001, 100: 0.01,
            309: 0.0001}
    assert got == pytest.approx(want)
    # the warm-up only acts while exploring (here 2 exploration epochs inside a 5-epoch warm-up)
    st2 = stage("edst", 10, 0.1, {"epochs_explo": 2, "model_num": 2}, warmup_epochs=5, warmup_style="epoch")
    assert [method_lr(EDST, st2).lr(e, 0.0) for e in (0, 1, 2, 3)] == pytest.approx([0.1 / 6, 0.2 / 6, 0.01, 0.01])


def test_edst_phase_schedule_validation() -> None:
    for bad in ([[1, 0.01]], [[0, 0.01], [0, 0.001]], [[0, 0.01, 5]], [[0, 0.0]], [[0, 0.01], [2.5, 0.001]]):
        with pytest.raises(ValueError, match="phase_schedule"):
            EDST.Params.model_validate({"phase_schedule": bad})
    assert EDST.Params().phase_schedule == []  # the default: refine_lr, then low_lr


def test_edst_prune_rate_restarts_at_every_jump() -> None:
    # ImageNet main.py: CosineDecay(0.5, 100 epochs) then a new CosineDecay(0.5, 70 epochs) after each jump;
    # cosine from 0.5 to 0.005: halfway = 0.005 + 0.495/2 = 0.2525
    st = stage("edst", 310, 0.1, {"epochs_explo": 30, "model_num": 4, "prune_rate_restart": True})
    st.sparse = SparseConfig(prune_rate=0.5, prune_rate_schedule="cosine", prune_rate_min=0.005)
    steps = 10  # per epoch
    trainer = SimpleNamespace(train_loader=range(steps), step=0)
    m = EDST(trainer, st, SimpleNamespace())
    m.scfg = st.sparse
    for step, rate in {0: 0.5, 500: 0.2525, 1000: 0.5, 1350: 0.2525, 1700: 0.5, 2400: 0.5, 2750: 0.2525,
                       3099: 0.0050025}.items():
        trainer.step = step
        assert m.prune_rate() == pytest.approx(rate, abs=1e-6), step
    m.params.prune_rate_restart = False  # one decay over the whole stage: 1550 of 3100 steps is its middle
    trainer.step = 1550
    assert m.prune_rate() == pytest.approx(0.2525)


# ---- Sup-tickets on ImageNet --------------------------------------------------------------------------
def test_suptickets_imagenet_pretrain_and_cycles() -> None:
    params = {"init_density": 0.1, "final_density": 0.1, "pretrain_epochs": 92, "milestones": [30, 60, 85],
              "cycle": 2, "lr_1": 1e-4, "lr_2": 5e-4}
    st = stage("suptickets", 100, 0.1, params, warmup_epochs=5, warmup_style="epoch")
    m = method_lr(SupTickets, st)
    assert m.split == (92, 4)
    pre = {0: 0.1 / 6, 4: 0.5 / 6, 5: 0.1, 29: 0.1, 30: 0.01, 59: 0.01, 60: 0.001, 84: 0.001, 85: 1e-4, 91: 1e-4}
    for epoch, lr in pre.items():
        assert m.lr(epoch, 0.3) == pytest.approx(lr), epoch
    # cycles of 2 epochs from epoch 92: t = ((e - 92) % 2 + frac)/2; lr_1 at t = 0, lr_2 at t = 0.5
    cyc = {(92, 0.0): 1e-4, (92, 0.5): 3e-4, (93, 0.0): 5e-4, (93, 0.5): 3e-4, (94, 0.0): 1e-4, (99, 0.5): 3e-4}
    for (epoch, frac), lr in cyc.items():
        assert m.lr(epoch, frac) == pytest.approx(lr), (epoch, frac)
    # without pretrain_epochs / milestones: the CIFAR split and int(P/2), int(3P/4) (250 -> 226, x0.1 at 113, 169)
    cifar = method_lr(SupTickets, stage("suptickets", 250, 0.1, {"cycle_rate": 0.1, "cycle": 8}))
    assert cifar.split == (226, 3)
    assert [cifar.lr(e, 0.0) for e in (112, 113, 168, 169)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_suptickets_pretrain_epochs_must_leave_whole_cycles() -> None:
    bad = stage("suptickets", 100, 0.1, {"pretrain_epochs": 93, "cycle": 2})
    assert bad.params.check(bad)[0][0] == "params.pretrain_epochs"
    ok = stage("suptickets", 100, 0.1, {"pretrain_epochs": 92, "cycle": 2})
    assert ok.params.check(ok) == []


# ---- model option and recipes -------------------------------------------------------------------------
def test_conv_init_reaches_the_model() -> None:
    from engine.runner import build_stage_model

    stds = {}
    for mode in ("fan_in", "fan_out"):
        recipe = Recipe.model_validate({"name": "r", "paper": "demo", "model": {"arch": "resnet18", "conv_init": mode},
                                        "stage": [{"name": "s", "method": "train", "epochs": 1}]})
        model = build_stage_model(recipe, 0, 10, run_dir=None)  # type: ignore[arg-type]
        stds[mode] = float(model.layer4[0].conv1.weight.detach().std())  # 3x3, 256 -> 512
    assert stds["fan_in"] == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.03)  # 0.02946
    assert stds["fan_out"] == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.03)  # 0.02083
    with pytest.raises(ValueError, match="conv_init applies to the ImageNet ResNets"):
        ModelConfig(arch="cifar-resnet50", conv_init="fan_in")
    assert ModelConfig(arch="resnet50").options() == {}


RECIPES = ("freetickets_edst_resnet50_imagenet", "freetickets_dst_resnet50_imagenet",
           "suptickets_rigl_resnet50_imagenet", "suptickets_granet_resnet50_imagenet",
           "randompruning_erkplus_wrn50x2_imagenet")


@pytest.mark.parametrize("name", RECIPES)
def test_imagenet_recipes_resolve_to_the_original_settings(name: str) -> None:
    r = load(name)[0].recipe
    d, st = r.data, r.stage[0]
    assert (d.dataset, d.normalize, d.image_size, d.resize, d.val_split) == ("imagenet", "imagenet", 224, 256, 0)
    assert r.model.conv_init == "fan_in" and st.label_smoothing == 0.1
    assert (st.optimizer.weight_decay, st.optimizer.bn_weight_decay, st.optimizer.momentum) == (1e-4, False, 0.9)
    assert (st.schedule.warmup_epochs, st.schedule.warmup_style) == (5, "epoch")
    if name.startswith("suptickets"):
        assert (st.epochs, d.batch_size, d.workers) == (100, 128, 20)
        assert SupTickets.Params.model_validate(st.params).final_density == 0.1
        assert r.expect.metrics["superposed_acc"] == (74.0 if "rigl" in name else 74.6)
    elif name.startswith("randompruning"):
        assert (r.model.arch, st.epochs, d.batch_size, st.optimizer.lr) == ("wide_resnet50_2", 100, 768, 0.4)
        assert (st.sparse.init, st.sparse.fc_density, st.sparse.density, st.method) == ("ERK_plus", 1.0, 0.2, "fix")
        assert not r.expect.metrics
    else:
        assert (r.model.arch, d.batch_size, d.workers, st.sparse.density, st.sparse.update_frequency) == (
            "resnet50", 128, 5, 0.2, 4000)
        assert (st.sparse.prune_rate_schedule, st.sparse.prune_rate, st.sparse.prune_rate_min) == ("cosine", 0.5, 0.005)
        assert not r.expect.metrics


def test_imagenet_recipe_budgets() -> None:
    edst = load("freetickets_edst_resnet50_imagenet")[0].recipe.stage[0]
    assert edst.epochs == 310 and edst.params.epochs_explo == 30 and edst.params.model_num == 4
    assert edst.params.phase_schedule == IMAGENET_EDST and edst.params.prune_rate_restart is True
    granet = load("suptickets_granet_resnet50_imagenet")[0].recipe.stage[0].params
    assert (granet.init_density, granet.final_density, granet.final_prune_epoch) == (0.5, 0.1, 30)
    for name in ("suptickets_rigl_resnet50_imagenet", "suptickets_granet_resnet50_imagenet"):
        p = SupTickets.Params.model_validate(load(name)[0].recipe.stage[0].params)
        assert p.budget(100) == (92, 4) and p.milestones == [30, 60, 85]
        assert (p.no_maskupdates, p.re_explore) == (False, False)  # the ImageNet lines pass neither flag
    dst = load("freetickets_dst_resnet50_imagenet")[0].recipe.stage
    assert [s.name for s in dst] == ["dst1", "dst2"] and [s.seed for s in dst] == [17, 18]
    with pytest.raises(RecipeError, match="conv_init applies"):
        load("freetickets_edst_resnet50_imagenet", sets=["model.arch=cifar-resnet50"])


def test_label_smoothing_is_the_originals_formula() -> None:
    """The ImageNet scripts' LabelSmoothing, (1 - e)·NLL(y) + e·mean_c(-log p_c), is torch's label_smoothing."""
    # logits (2, 0, -1): logsumexp = ln(7.389056 + 1 + 0.367879) = 2.169846, so -log p = (0.169846, 2.169846,
    # 3.169846) with mean 1.836513; 0.9 * 0.169846 + 0.1 * 1.836513 = 0.336513
    got = torch.nn.functional.cross_entropy(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]), label_smoothing=0.1)
    assert float(got) == pytest.approx(0.336513, abs=1e-5)
