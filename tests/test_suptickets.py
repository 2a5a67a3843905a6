"""Sup-tickets: the budget split, the superposition formula, exact target density, and the digits check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from digits_recipes import sup_recipe
from helpers import run_recipe

from engine.config.params import cycle_split
from engine.io import load_checkpoint
from engine.methods.suptickets import prune_global, superpose
from engine.sparse.inits import maskable
from engine.store import read_group


def test_cycle_split_matches_the_reference_examples() -> None:
    assert cycle_split(250, 0.1, 8) == (226, 3)  # 25 -> 24 cyclic epochs
    assert cycle_split(160, 0.2, 8) == (128, 4)
    assert cycle_split(100, 0.05, 8) == (100, 0)  # shorter than one cycle: no tickets


def test_superpose_and_prune_by_hand() -> None:
    prev = {"w": torch.tensor([1.0, -2.0, 0.0, 4.0]), "n": torch.tensor(3)}
    tick = {"w": torch.tensor([0.0, -1.0, 3.0, 1.0]), "n": torch.tensor(5)}
    s = superpose(prev, tick, 1 / 3)  # (2/3) prev + (1/3) ticket
    assert s["w"].tolist() == pytest.approx([2 / 3, -5 / 3, 1.0, 3.0])
    assert s["n"].item() == 4  # 11/3 rounded
    masks = prune_global(s, ["w"], 0.5)  # keep int(4 * 0.5) = 2 largest |w|: 3.0 and -5/3
    assert masks["w"].tolist() == [False, True, False, True]


def test_superposed_network_is_the_pruned_running_average_at_exact_density(tmp_path: Path) -> None:
    raw = sup_recipe(epochs=9, update_frequency=10, final_prune_epoch=3, cycle=1, cycle_rate=0.34, run={"seed": 2},
                     analyses=["predict"], data={"eval_batch_size": 360, "train_subset": None, "test_subset": None},
                     model={"arch": "cifar_resnet_20"})
    out = run_recipe(raw, tmp_path, tmp_path / "run", root=tmp_path)
    assert out.state == "done", out.error
    stage = out.run_dir / "sup"
    from engine.models import create_model

    names = list(maskable(create_model("cifar_resnet_20", 10, 0.5)))
    total = sum(load_checkpoint(stage / "ticket-0.pt")["model"][n].numel() for n in names)
    running = {n: load_checkpoint(stage / "ticket-0.pt")["model"][n] for n in names}
    for k in (1, 2, 3):
        ticket = load_checkpoint(stage / f"ticket-{k}.pt")["model"]
        sup = load_checkpoint(stage / f"superposed-{k}.pt")
        mask = sup["method"]["masking"]["masks"]
        assert sum(int(mask[n].sum()) for n in names) == int(total * 0.1)  # exactly the target density
        nonzero = sum(int((sup["model"][n] != 0).sum()) for n in names)
        assert nonzero <= int(total * 0.1)
        avg = {n: (1 - 1 / (k + 1)) * running[n] + ticket[n] / (k + 1) for n in names}  # CAA, pre-trained = S_0
        for n in names:
            assert torch.allclose(sup["model"][n], avg[n] * mask[n], atol=1e-6)
        running = {n: avg[n] * mask[n] for n in names}
    g = read_group(out.run_dir / "analysis.h5", "predict")
    assert g["member_names"] == ["ticket1", "ticket2", "ticket3", "superposed"]
    acc = g["member_acc"]
    assert acc[3] >= acc[:3].mean(), acc  # the superposed network is at least as accurate as its mean ticket
