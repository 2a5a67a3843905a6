"""Masks and topology updates: exact densities, pruned weights stay zero, grown weights start at zero."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import digits_trainer
from torch import nn

from engine.sparse.masks import Masking
from engine.sparse.topology import (
    gradual_density,
    grow,
    prune_magnitude,
    prune_rate_at,
    prune_set,
    redistribute,
)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def random_masks(model: nn.Module, names: list[str], density: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=g) < density for n in names}


NAMES = ["0.weight", "4.weight"]


def test_pruned_weights_stay_zero_through_sgd_momentum_and_weight_decay() -> None:
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    masking = Masking(model, NAMES, opt)
    masks = random_masks(model, NAMES, 0.3)
    masking.set_masks(masks)
    params = dict(model.named_parameters())
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        masking.apply()
        for n in NAMES:
            assert (params[n][~masks[n]] == 0).all()
            assert (opt.state[params[n]]["momentum_buffer"][~masks[n]] == 0).all()
            assert (params[n][masks[n]] != 0).all()  # active weights do train
    expected = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert masking.density() == pytest.approx(expected)


def test_without_momentum_masking_the_buffer_keeps_dense_gradients() -> None:
    """FreeTickets' CIFAR quirk (mask_momentum = false): pruned weights are zero but their momentum is not."""
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masking = Masking(model, NAMES, opt, mask_momentum=False)
    masks = random_masks(model, NAMES, 0.3)
    masking.set_masks(masks)
    nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    masking.apply()
    w = dict(model.named_parameters())["4.weight"]
    assert (w[~masks["4.weight"]] == 0).all()
    assert (opt.state[w]["momentum_buffer"][~masks["4.weight"]] != 0).any()


def test_prune_magnitude_removes_exactly_the_smallest_active() -> None:
    w = torch.tensor([[0.5, -0.1, 0.0, 2.0], [-3.0, 0.2, 0.05, -0.4]])
    mask = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]], dtype=torch.bool)
    new = prune_magnitude(w, mask, 3)
    # active |w|: .5 .1 2 3 .2 .05 .4 -> the three smallest are .05, .1, .2
    assert new.tolist() == [[True, False, False, True], [True, False, False, True]]


def test_prune_set_takes_from_both_signs() -> None:
    w = torch.tensor([0.3, 0.1, 0.2, -0.05, -0.5, -0.2])
    new = prune_set(w, torch.ones(6, dtype=torch.bool), 4)
    # two smallest positives (0.1, 0.2) and two negatives closest to zero (-0.05, -0.2)
    assert new.tolist() == [True, False, False, False, True, False]


def test_grow_gradient_picks_largest_inactive_and_random_is_exact() -> None:
    mask = torch.tensor([True, False, False, True, False, False])
    grad = torch.tensor([9.0, 0.1, 3.0, 8.0, -5.0, 0.2])
    assert grow(mask, 2, "gradient", grad=grad).tolist() == [True, False, True, True, True, False]
    g = torch.Generator().manual_seed(0)
    out = grow(torch.zeros(1000, dtype=torch.bool), 137, "random", generator=g)
    assert int(out.sum()) == 137


def test_redistribution_preserves_the_total_and_respects_room() -> None:
    removed, after, sizes = [10, 20, 0], [90, 30, 5], [100, 60, 10]
    assert redistribute(removed, after, sizes, "none") == removed
    out = redistribute(removed, after, sizes, "nonzeros")
    assert sum(out) == 30 and all(o <= s - a for o, s, a in zip(out, sizes, after))
    # by hand: shares 90:30:5 of 30 -> 21.6 capped at layer 0's room 10, 7, 1; the 12 left go 30:5 -> 10, 1; the last
    # one to the larger share: [10, 18, 2]
    assert out == [10, 18, 2]


def test_cubic_schedule_and_prune_rate_schedules() -> None:
    # f = 100 steps, L = 100 steps/epoch, epochs 0..10 -> i0 = 0, i1 = 10, n = 10
    args = dict(frequency=100, steps_per_epoch=100, init_density=0.5, final_density=0.05, init_epoch=0,
                final_epoch=10)
    assert gradual_density(0, **args) == pytest.approx(0.5)
    assert gradual_density(500, **args) == pytest.approx(0.05 + 0.45 * 0.5 ** 3)
    assert gradual_density(900, **args) == pytest.approx(0.05 + 0.45 * 0.1 ** 3)
    assert gradual_density(1000, **args) is None
    assert prune_rate_at("constant", 0.5, 0.005, 10, 100) == 0.5
    assert prune_rate_at("cosine", 0.5, 0.005, 50, 100) == pytest.approx(0.005 + 0.5 * 0.495)
    assert prune_rate_at("linear", 0.5, 0.0, 25, 100) == pytest.approx(0.375)


@pytest.mark.parametrize("growth,prune,redistribution", [
    ("gradient", "magnitude", "none"), ("random", "magnitude", "none"), ("momentum", "set", "none"),
    ("gradient", "magnitude", "magnitude"), ("random", "set", "nonzeros"),
])
def test_topology_update_holds_density_and_grows_from_zero(growth, prune, redistribution, tmp_path) -> None:
    """A DST run on digits: after every update the overall density equals the target exactly, pruned weights are
    zero, and weights grown in that update start at zero (with zero momentum)."""
    trainer = digits_trainer(tmp_path, "dst", {"density": 0.2, "init": "ERK", "update_frequency": 2, "growth": growth,
                                               "prune": prune, "redistribution": redistribution, "prune_rate": 0.3},
                             epochs=1, train_subset=256, test_subset=64)
    method = trainer.method
    method.setup()
    active0, sizes = method.masking.counts()
    target = sum(active0)
    seen_updates = []
    orig = method.update_topology

    def checked(rate=None):  # noqa: ANN001
        before = {n: m.clone() for n, m in method.masking.masks.items()}
        orig(rate)
        active = [int(m.sum()) for m in method.masking.masks.values()]  # counted afresh, not the host's record
        assert method.masking.counts()[0] == active
        assert sum(active) == target  # exact overall density
        if redistribution == "none":
            assert active == active0  # and layer by layer
        params = dict(trainer.model.named_parameters())
        for n, m in method.masking.masks.items():
            new = m & ~before[n]
            assert (params[n][~m] == 0).all()
            assert (params[n][new] == 0).all()  # grown weights start at zero
            buf = trainer.optimizer.state.get(params[n], {}).get("momentum_buffer")
            if buf is not None:
                assert (buf[new] == 0).all()
        seen_updates.append(sum(int((m != before[n]).sum()) for n, m in method.masking.masks.items()))

    method.update_topology = checked
    trainer.train_epoch(0)
    assert len(seen_updates) == math.ceil(256 / 32) // 2 and all(c > 0 for c in seen_updates)
