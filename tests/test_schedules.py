"""Learning-rate schedules against values worked out by hand from the reference notes."""

from __future__ import annotations

import math

import pytest

from engine.config import ScheduleConfig
from engine.schedules import lr_at


def lr(epoch: int, frac: float = 0.0, epochs: int = 250, base: float = 0.1, **cfg) -> float:
    return lr_at(ScheduleConfig(**cfg), base, epoch, frac, epochs)


def test_multistep_freetickets_250_epochs() -> None:
    # MultiStepLR(milestones=[125, 187]) stepped once per epoch: epochs 0..124 at 0.1, 125..186 at 0.01, then 0.001
    kw = {"name": "multistep", "milestone_fractions": [0.5, 0.75]}
    assert lr(124, **kw) == pytest.approx(0.1)
    assert lr(125, **kw) == pytest.approx(0.01)
    assert lr(186, 0.99, **kw) == pytest.approx(0.01)
    assert lr(187, **kw) == pytest.approx(0.001)
    assert lr(80, epochs=160, name="multistep", milestones=[80, 120]) == pytest.approx(0.01)


def test_fge_piecewise_linear() -> None:
    # a = (epoch+1)/E; E = 200: a = 0.5 at epoch index 99 (factor 1), 0.7 at 139 (1 - 0.99*0.5), 0.9 at 179 (0.01)
    kw = {"name": "fge"}
    assert lr(99, epochs=200, base=0.05, **kw) == pytest.approx(0.05)
    assert lr(139, epochs=200, base=0.05, **kw) == pytest.approx(0.05 * (1 - 0.99 * 0.5))
    assert lr(179, epochs=200, base=0.05, **kw) == pytest.approx(0.05 * 0.01)
    assert lr(199, 0.5, epochs=200, base=0.05, **kw) == pytest.approx(0.0005)


def test_fge_cyclic_triangle() -> None:
    # cycle 4, lr_1 0.05 at the cycle edges, lr_2 0.0001 at mid-cycle (fge.py's utils.cyclic_learning_rate)
    kw = {"name": "cyclic", "cycle": 4, "lr_1": 0.05, "lr_2": 1e-4}
    assert lr(0, 0.0, epochs=20, **kw) == pytest.approx(0.05)
    assert lr(2, 0.0, epochs=20, **kw) == pytest.approx(1e-4)
    assert lr(1, 0.0, epochs=20, **kw) == pytest.approx(0.5 * 0.05 + 0.5 * 1e-4)  # t = 0.25
    assert lr(3, 0.5, epochs=20, **kw) == pytest.approx((2 * 0.875 - 1) * 0.05 + (2 - 2 * 0.875) * 1e-4)
    assert lr(4, 0.0, epochs=20, **kw) == pytest.approx(0.05)  # the next cycle starts high again


def test_cosine_with_warmup() -> None:
    kw = {"name": "cosine", "warmup_epochs": 5}
    assert lr(0, 0.5, epochs=105, **kw) == pytest.approx(0.1 * 0.5 / 5)
    assert lr(5, 0.0, epochs=105, **kw) == pytest.approx(0.1)
    assert lr(55, 0.0, epochs=105, **kw) == pytest.approx(0.05)
    assert lr(104, 1.0, epochs=105, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr(30, 0.0, epochs=100, name="cosine") == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.3)))


def test_schedule_validation() -> None:
    with pytest.raises(ValueError, match="even cycle length"):
        ScheduleConfig(name="cyclic", cycle=3)
    with pytest.raises(ValueError, match="multistep needs milestones"):
        ScheduleConfig(name="multistep")


def test_bn_parameters_can_be_left_without_weight_decay() -> None:
    import torch

    from engine.config import OptimizerConfig
    from engine.models import create_model
    from engine.optim import build_optimizer

    model = create_model("cifar_resnet_8", 10, 0.5)
    bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    opt = build_optimizer(OptimizerConfig(bn_weight_decay=False, weight_decay=1e-4), model)
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 1e-4 and free["weight_decay"] == 0.0
    assert {id(p) for p in free["params"]} == bn and not bn & {id(p) for p in decayed["params"]}
    assert len(decayed["params"]) + len(free["params"]) == len(list(model.parameters()))
    assert len(build_optimizer(OptimizerConfig(), model).param_groups) == 1
