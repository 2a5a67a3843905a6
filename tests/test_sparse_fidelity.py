"""Issue 14, fidelity you can prove: momentum growth under masked momentum, the full-layer switch, the original's
t-SNE protocol (and the EDST phase-end point taken before the jump), and nonzero density beside mask density."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import digits_trainer, sparse_digits_recipe
from torch import nn

from engine.analyses import sparsity
from engine.analyses.context import AnalysisContext
from engine.config import SparseConfig, StageConfig
from engine.data import make_loader, make_loaders, recipe_data
from engine.io import load_checkpoint
from engine.methods.dst import DST
from engine.models import create_model
from engine.seeds import stage_seeds
from engine.store import read_group
from engine.trainer import Trainer
from engine.trajectory import original_epochs

# ---- a sparse method on a hand-built layer (no data, no loop) -----------------------------------------------


def bare_dst(model: nn.Module, opt: torch.optim.Optimizer, weights: list[torch.Tensor], masks: list[torch.Tensor],
             **sparse: object) -> DST:
    """A DST method over `model` (Linear layers) with just the trainer attributes its masks and topology updates
    read, the given weights and masks in place of the initial draw."""
    stage = StageConfig(name="s", method="dst", epochs=1,
                        sparse=SparseConfig(init="uniform", density=0.5, update_frequency=10_000, **sparse))
    info = SimpleNamespace(seeds=stage_seeds(0, None, 0))
    # a one-batch epoch: every step ends an epoch, so the step keeps its raw gradient for gradient growth
    trainer = SimpleNamespace(optimizer=opt, model=model, step=0, epoch=0, train_loader=range(1),
                              data=SimpleNamespace(num_classes=2))
    method = DST(trainer, stage, info)  # type: ignore[arg-type]
    method.setup()
    with torch.no_grad():
        for p, w in zip(method.masking.params, weights):
            p.copy_(w)
    method.masking.set_masks(dict(zip(method.masking.names, masks)))
    return method


def sgd_step(method: DST, grad: torch.Tensor) -> None:
    """One training step as the trainer takes it, with a given gradient on the single masked weight."""
    w = method.masking.params[0]
    w.grad = grad.clone().view_as(w)
    method.before_step()
    method.trainer.optimizer.step()
    method.trainer.step += 1
    method.after_step()


def test_momentum_growth_scores_the_momentum_the_original_keeps() -> None:
    """growth = "momentum" with mask_momentum = true: the optimizer's momentum of inactive weights is zero, yet growth
    must pick the largest |momentum| of the original's never-masked buffer, not the first inactive positions."""
    w0 = torch.tensor([[0.01, 0.02, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0]])  # positions 0..7 row-major; active 0, 1, 7
    mask = w0 != 0
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    method = bare_dst(model, opt, [w0], [mask], growth="momentum", mask_momentum=True)
    g1 = torch.tensor([0.0, 0.0, 10.0, 0.0, -5.0, 1.0, 0.0, 0.0])
    g2 = torch.tensor([0.0, 0.0, -1.0, 2.0, 1.0, 0.5, -3.0, 0.0])
    sgd_step(method, g1)
    sgd_step(method, g2)
    buf = opt.state[model[0].weight]["momentum_buffer"].flatten()
    assert buf[~mask.flatten()].abs().max() == 0  # masked: the optimizer's buffer says nothing about inactive weights
    # the original's buffer at inactive positions (weight 0): 0.9 g1 + g2 = 8, 2, -3.5, 1.4, -3 at positions 2..6
    # prune ceil(0.5 * 3) = 2 smallest active (positions 0, 1: |w| 0.01, 0.02); regrow 2: positions 2 (8) and 4 (3.5)
    method.update_topology(0.5)
    assert method.masking.masks["0.weight"].flatten().nonzero().flatten().tolist() == [2, 4, 7]
    # gradient growth on the same state picks the last batch's largest |grad| instead: positions 6 (3) and 3 (2)
    model2 = nn.Sequential(nn.Linear(4, 2, bias=False))
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    grad_method = bare_dst(model2, opt2, [w0], [mask], growth="gradient")
    sgd_step(grad_method, g1)
    sgd_step(grad_method, g2)
    grad_method.update_topology(0.5)
    assert grad_method.masking.masks["0.weight"].flatten().nonzero().flatten().tolist() == [3, 6, 7]


def test_momentum_growth_equals_growth_from_an_unmasked_optimizer_buffer(tmp_path: Path) -> None:
    """Independent route: before any topology update, masked and unmasked momentum train the same weights, so the
    unmasked run's own SGD buffer is the original's momentum; both runs must then regrow the same positions."""
    sparse = {"density": 0.2, "init": "ERK", "update_frequency": 10_000, "growth": "momentum", "prune_rate": 0.3}
    runs = {}
    for mask_momentum in (True, False):
        t = digits_trainer(tmp_path / str(mask_momentum), "dst", {**sparse, "mask_momentum": mask_momentum})
        t.method.setup()
        t.train_epoch(0)
        runs[mask_momentum] = t
    masked, plain = runs[True], runs[False]
    for a, b in zip(masked.method.masking.params, plain.method.masking.params):
        assert torch.equal(a, b)  # the same training so far
    before = {n: m.clone() for n, m in masked.method.masking.masks.items()}
    masked.method.update_topology(0.3)
    plain.method.update_topology(0.3)
    changed = 0
    for n in masked.method.masking.names:
        assert torch.equal(masked.method.masking.masks[n], plain.method.masking.masks[n]), n
        changed += int((masked.method.masking.masks[n] & ~before[n]).sum())
    assert changed > 0


# ---- full (ERK-dense) layers --------------------------------------------------------------------------------


@pytest.mark.parametrize("update_full_layers", [True, False])
def test_full_layers_are_pruned_and_regrown_only_with_the_switch(update_full_layers: bool) -> None:
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 4, bias=False))
    w_full = torch.tensor([[0.5, -0.1, 2.0], [-3.0, 0.2, 1.0]])
    w_sparse = torch.tensor([[1.0, 0.0], [0.0, -2.0], [0.3, 0.0], [0.0, 4.0]])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = bare_dst(model, opt, [w_full, w_sparse], [torch.ones(2, 3, dtype=torch.bool), w_sparse != 0],
                      growth="gradient", update_full_layers=update_full_layers)
    for w in method.masking.params:
        w.grad = torch.ones_like(w)
    method.update_topology(0.5)
    assert method.masking.masks["0.weight"].all()  # the full layer is full again either way
    w = model[0].weight.detach()
    if update_full_layers:
        # prune ceil(0.5 * 6) = 3 smallest |w| (0.1, 0.2, 0.5), regrow the 3 free positions at zero
        assert w.tolist() == [[0.0, 0.0, 2.0], [-3.0, 0.0, 1.0]]
        assert int((w != w_full).sum()) == 3
    else:
        assert torch.equal(w, w_full)
    assert int(method.masking.masks["1.weight"].sum()) == 4  # the sparse layer is updated in both cases


# ---- t-SNE: the original's protocol -------------------------------------------------------------------------


def test_original_tsne_epochs_by_hand() -> None:
    # 250 epochs: checkpoint files 0..249 (file i = epoch i + 1), every second one from index 146 (>= 145)
    assert original_epochs(250) == list(range(147, 250, 2)) and len(original_epochs(250)) == 52
    # longer runs keep the original's fixed cut at index 145 (EDST's 450 epochs: 147, 149, ..., 449)
    assert original_epochs(450) == list(range(147, 450, 2))
    # shorter runs scale the cut: ceil(145 * E / 250); 100 epochs -> index 58 -> epochs 59, 61, ..., 99
    assert original_epochs(100) == list(range(59, 100, 2))
    assert original_epochs(15) == [11, 13, 15]  # index >= ceil(8.7) = 9 and even: 10, 12, 14
    assert original_epochs(14) == [12, 13, 14]  # index >= ceil(8.12) = 9 and even: 10, 12 only, so the last 3
    # fewer than 3 points: the last 3 epochs (or all of them), so that smoke runs still give a t-SNE
    assert original_epochs(4) == [2, 3, 4]  # index >= ceil(2.32) = 3 and even: none
    assert original_epochs(5) == [3, 4, 5]  # index >= 3 and even: 4 only
    assert original_epochs(2) == [1, 2] and original_epochs(1) == [1]


def _direct_outputs(trainer: Trainer, state: dict, k: int) -> torch.Tensor:
    """Logits of a model holding `state` on the first k test images (computed apart from the trainer)."""
    model = create_model("cifar_resnet_8", 10, 0.5)
    model.load_state_dict(state)
    model.eval()
    loader = make_loader(trainer.data.test.subset(k), 1000, device=torch.device("cpu"), train=False,
                         normalize=trainer.info.data.normalize)
    with torch.no_grad():
        return torch.cat([model(x) for x, _ in loader])


def test_original_protocol_records_log_softmax_of_128_images_at_the_selected_epochs(tmp_path: Path) -> None:
    t = digits_trainer(tmp_path, "dst", {"density": 0.3, "update_frequency": 3}, epochs=5, record=True)
    t.fit()
    traj = load_checkpoint(tmp_path / "s" / "trajectory.pt")
    assert traj["epoch"].tolist() == [3, 4, 5] and traj["member"].tolist() == [0, 0, 0]
    assert traj["output"] == "log_softmax" and tuple(traj["outputs"].shape) == (3, 128, 10)
    final = load_checkpoint(tmp_path / "s" / "final.pt")["model"]
    ref = torch.log_softmax(_direct_outputs(t, final, 128), dim=1)
    torch.testing.assert_close(traj["outputs"][-1], ref, rtol=1e-4, atol=1e-4)


def test_ours_protocol_records_softmax_every_epoch(tmp_path: Path) -> None:
    t = digits_trainer(tmp_path, "dst", {"density": 0.3, "update_frequency": 3}, epochs=3, record=True,
                       analysis={"tsne_protocol": "ours"})
    t.fit()
    traj = load_checkpoint(tmp_path / "s" / "trajectory.pt")
    assert traj["epoch"].tolist() == [1, 2, 3] and traj["output"] == "softmax"
    assert tuple(traj["outputs"].shape) == (3, 160, 10)  # 500 asked, the test split has 160
    final = load_checkpoint(tmp_path / "s" / "final.pt")["model"]
    ref = torch.softmax(_direct_outputs(t, final, 160), dim=1)
    torch.testing.assert_close(traj["outputs"][-1], ref, rtol=1e-4, atol=1e-5)


def test_edst_phase_end_point_is_the_ticket_before_the_jump(tmp_path: Path) -> None:
    """4 epochs, exploration 1, three phases of 1 epoch: jumps after epochs 2 and 3. The point recorded at epoch 2
    is ticket 1 (saved at epoch 2), not the network after the 80% prune-and-regrow."""
    t = digits_trainer(tmp_path, "edst", {"density": 0.3, "update_frequency": 3, "prune_rate": 0.3},
                       {"epochs_explo": 1, "model_num": 3, "large_death_rate": 0.8}, epochs=4, record=True,
                       analysis={"tsne_protocol": "ours"}, val=64)
    t.fit()
    traj = load_checkpoint(tmp_path / "s" / "trajectory.pt")
    assert traj["epoch"].tolist() == [1, 2, 3, 4] and traj["member"].tolist() == [-1, 0, 1, 2]
    for k, epoch in ((1, 2), (2, 3), (3, 4)):
        ticket = load_checkpoint(tmp_path / "s" / f"ticket-{k}.pt")
        assert ticket["epoch"] == epoch
        ref = torch.softmax(_direct_outputs(t, ticket["model"], 160), dim=1)
        torch.testing.assert_close(traj["outputs"][epoch - 1], ref, rtol=1e-4, atol=1e-5)


# ---- demo_digits and nonzero density ------------------------------------------------------------------------


def test_demo_digits_updates_never_land_on_an_epoch_end() -> None:
    from repro.recipe import load

    recipe = load("demo_digits")[0].recipe
    stage = recipe.stage[0]
    assert stage.sparse is not None
    train, _ = make_loaders(recipe.data, recipe_data(recipe), torch.device("cpu"), recipe.run.seed)
    steps, f = len(train), stage.sparse.update_frequency
    assert steps == 20  # 1,437 training digits - 200 held out = 1,237, batch 64
    assert steps % f != 0
    assert all((e * steps) % f for e in range(1, stage.epochs + 1))  # no ticket evaluated right after an update


def test_sparsity_reports_nonzero_density_from_the_checkpoint(tmp_path: Path) -> None:
    # 10 steps an epoch, an update every 10 steps: each epoch ends on an update, so the 30% regrown are still zero
    sparse = {"density": 0.3, "init": "ERK", "update_frequency": 10, "prune_rate": 0.3}
    t = digits_trainer(tmp_path, "dst", sparse, epochs=2)
    t.fit()
    recipe = sparse_digits_recipe("dst", sparse, epochs=2)
    ctx = AnalysisContext(recipe=recipe, run_dir=tmp_path, device=torch.device("cpu"))
    sparsity.run(ctx)
    g = read_group(ctx.h5, "sparsity")
    final = load_checkpoint(tmp_path / "s" / "final.pt")
    names = final["method"]["masking"]["names"]
    weights = [final["model"][n] for n in names]
    masks = [final["method"]["masking"]["masks"][n] for n in names]
    nonzero = [int((w != 0).sum()) for w in weights]
    sizes = [w.numel() for w in weights]
    assert g["nonzero_density"].shape == g["layer_density"].shape == (2, len(names))
    assert g["nonzero_density"][-1].tolist() == pytest.approx([n / s for n, s in zip(nonzero, sizes)], abs=1e-12)
    assert g["overall_nonzero"][-1] == pytest.approx(sum(nonzero) / sum(sizes), abs=1e-12)
    active = sum(int(m.sum()) for m in masks)
    # every sparse layer regrew ceil(0.3 * active) weights at zero in the epoch's last step
    regrown = sum(math.ceil(0.3 * int(m.sum())) for m in masks if 0 < int(m.sum()) < m.numel())
    assert sum(nonzero) == active - regrown
    assert g["overall_density"][-1] == pytest.approx(active / sum(sizes), abs=1e-12)
