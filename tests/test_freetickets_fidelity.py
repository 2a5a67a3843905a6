"""FreeTickets fidelity (issue 14): the CIFAR-100 held-out split, members as final weights or the best checkpoint
(`keep`), resuming with a best checkpoint, and the dense reference of the training-FLOPs ratio."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from digits_recipes import digits_recipe, write_recipe
from helpers import run_recipe, stopped_at

from engine import trainer as tr
from engine.data import make_loader, recipe_data
from engine.evaluate import predict_probs
from engine.io import load_checkpoint
from engine.models import create_model
from engine.runlog import read_metrics
from repro.recipe import RecipeError, load

TINY = digits_recipe(name="tiny_keep", data={"val_split": 100, "train_subset": 256, "test_subset": 120},
                     train={"epochs": 4, "schedule": None, "keep": "best"},
                     stage=[{"name": "train", "method": "train", "save_every": 1}], analyses=["predict"])


def run(tmp_path: Path, raw: dict[str, Any], out: str, resume: bool = False, sets: tuple[str, ...] = ()) -> Any:
    return run_recipe(raw, tmp_path, tmp_path / out, root=tmp_path / "root", resume=resume, sets=sets)


def fake_accuracies(monkeypatch: pytest.MonkeyPatch, table: dict[int, list[float]]) -> None:
    """Trainer.evaluate reports table[epoch][attempt] as the accuracy (the loss stays real): the epochs' order of
    merit is then chosen by the test, not by chance. A second evaluation of the same epoch (a rerun after a
    resume) takes the next value of the list."""
    orig = tr.Trainer.evaluate
    calls: dict[int, int] = {}

    def chosen(self: tr.Trainer) -> dict[str, float]:
        out = orig(self)
        k = calls.get(self.epoch, 0)
        calls[self.epoch] = k + 1
        out["acc"] = table[self.epoch][min(k, len(table[self.epoch]) - 1)]
        return out

    monkeypatch.setattr(tr.Trainer, "evaluate", chosen)


def test_cifar100_recipes_hold_out_5000_and_pad_with_zeros() -> None:
    """FreeTickets' CIFAR-100 loader holds out the last 10% (5,000) like CIFAR-10's, and its crop pads with zeros
    (torchvision RandomCrop(32, padding=4); CIFAR-10 reflects): sparselearning/utils.py:35, 59-62."""
    for kind in ("dst", "edst", "pf"):
        r = load(f"freetickets_{kind}_wrn28x10_cifar100")[0].recipe
        assert (r.data.val_split, r.data.pad_mode, r.data.crop_pad) == (5000, "zeros", 4), kind
    c10 = load("freetickets_dst_wrn28x10_cifar10")[0].recipe
    assert (c10.data.val_split, c10.data.pad_mode) == (5000, "reflect")


def test_freetickets_recipes_keep_and_dense_reference() -> None:
    """PF fine-tunes keep their best-validation checkpoint (main_PF.py), dense and DST stages their final weights;
    EDST's training FLOPs are measured against the paper's 250-epoch dense model, not its own 450 epochs."""
    for ds in ("cifar10", "cifar100"):
        pf = load(f"freetickets_pf_wrn28x10_{ds}")[0].recipe
        assert [(s.name, s.keep) for s in pf.stage] == [
            ("dense1", "final"), ("dense2", "final"), ("dense3", "final"),
            ("pf1", "best"), ("pf2", "best"), ("pf3", "best")]
        dst = load(f"freetickets_dst_wrn28x10_{ds}")[0].recipe
        assert [s.keep for s in dst.stage] == ["final"] * 3
        edst = load(f"freetickets_edst_wrn28x10_{ds}")[0].recipe
        assert (edst.stage[0].epochs, edst.run.dense_reference_epochs) == (450, 250)
    assert load("freetickets_individual_wrn28x10_cifar10")[0].recipe.stage[0].keep == "final"


def test_keep_is_inherited_from_train_and_checked(tmp_path: Path) -> None:
    raw = {**TINY, "stage": [{"name": "a", "method": "train"}, {"name": "b", "method": "train", "keep": "final"}]}
    assert [s.keep for s in load(str(write_recipe(tmp_path, raw)))[0].recipe.stage] == ["best", "final"]
    plain = {**TINY, "train": {"epochs": 4}}
    assert load(str(write_recipe(tmp_path, plain)))[0].recipe.stage[0].keep == "final"  # the default
    bad = {**TINY, "train": {"epochs": 4, "keep": "last"}}
    with pytest.raises(RecipeError) as e:
        load(str(write_recipe(tmp_path, bad)))
    assert e.value.lines[0].endswith("train.keep: input should be 'final' or 'best' (got 'last')")
    edst = {**TINY, "stage": [{"name": "e", "method": "edst", "params": {"epochs_explo": 1, "model_num": 2}}]}
    with pytest.raises(RecipeError) as e:
        load(str(write_recipe(tmp_path, edst)))
    assert e.value.lines[0].endswith(
        "stage.0: keep = 'best' does not apply to method 'edst': it chooses its own ensemble members")


def test_keep_best_makes_the_best_epoch_the_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation accuracies 50, 80, 60, 70: the member is epoch 2's weights (checkpoint-2.pt, saved independently
    by save_every), not the final ones; /predict and the final test record score those weights."""
    fake_accuracies(monkeypatch, {1: [50.0], 2: [80.0], 3: [60.0], 4: [70.0]})
    out = run(tmp_path, TINY, "run")
    assert out.state == "done", out.error
    stage = out.run_dir / "train"
    recs = read_metrics(out.run_dir)
    assert [r["val_acc"] for r in recs if not r.get("final")] == [50.0, 80.0, 60.0, 70.0]
    best, ep2 = load_checkpoint(stage / "best.pt"), load_checkpoint(stage / "checkpoint-2.pt")
    final = load_checkpoint(stage / "final.pt")
    assert (best["epoch"], best["acc"]) == (2, 80.0)
    assert all(torch.equal(best["model"][k], ep2["model"][k]) for k in ep2["model"])
    assert not all(torch.equal(best["model"][k], final["model"][k]) for k in final["model"])
    assert json.loads((stage / "tickets.json").read_text())["members"] == [{"name": "train", "path": "train/best.pt"}]
    # epoch 2's weights on the test split, computed here from checkpoint-2.pt
    res = load(str(write_recipe(tmp_path, TINY)))[0].recipe
    data = recipe_data(res)
    model = create_model("cifar_resnet_8", 10, 0.5)
    model.load_state_dict(ep2["model"])
    model.eval()
    loader = make_loader(data.test, 200, device=torch.device("cpu"), train=False, normalize="digits")
    probs = predict_probs(model, loader, contextlib.nullcontext).numpy()
    labels = data.test.y.numpy()
    acc = 100.0 * float((probs.argmax(1) == labels).mean())
    with h5py.File(out.run_dir / "analysis.h5") as f:
        assert np.allclose(f["predict"]["member_probs"][0], probs, atol=1e-6)
        assert f["predict"]["member_acc"][0] == pytest.approx(acc, abs=1e-4)
    last = recs[-1]
    assert last["final"] and last["keep"] == "best" and last["best_epoch"] == 2
    assert last["test_acc"] == pytest.approx(acc, abs=1e-4)


def test_resume_keeps_the_best_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped at the start of epoch 3 (best: epoch 2), the resumed run keeps epoch 2 as its member, bitwise as
    an uninterrupted run."""
    fake_accuracies(monkeypatch, {1: [50.0], 2: [80.0], 3: [60.0], 4: [70.0]})
    ref = run(tmp_path, TINY, "ref")
    assert ref.state == "done", ref.error
    with stopped_at(2), pytest.raises(KeyboardInterrupt):
        run(tmp_path, TINY, "cut")
    assert load_checkpoint(tmp_path / "cut" / "train" / "best.pt")["epoch"] == 2
    out = run(tmp_path, TINY, "cut", resume=True)
    assert out.state == "done", out.error
    a = load_checkpoint(ref.run_dir / "train" / "best.pt")
    b = load_checkpoint(out.run_dir / "train" / "best.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_kill_before_last_pt_drops_that_epochs_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after epoch 3 scored a new best (90) but before its last.pt was written: the resumed run redoes
    epoch 3, which now scores 40 (as a nondeterministic GPU rerun may). The member must be epoch 2's weights,
    the best of the epochs the run kept, not the lost epoch 3's."""
    fake_accuracies(monkeypatch, {1: [50.0], 2: [80.0], 3: [90.0, 40.0], 4: [70.0]})
    orig = tr.save_checkpoint

    def killed(path: Path, state: dict[str, Any]) -> None:
        if Path(path).name == "last.pt" and state["epoch"] == 3:
            raise KeyboardInterrupt
        orig(path, state)

    monkeypatch.setattr(tr, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, TINY, "run")
    monkeypatch.setattr(tr, "save_checkpoint", orig)
    out = run(tmp_path, TINY, "run", resume=True)
    assert out.state == "done", out.error
    stage = out.run_dir / "train"
    assert [r["val_acc"] for r in read_metrics(out.run_dir) if not r.get("final")] == [50.0, 80.0, 40.0, 70.0]
    best, ep2 = load_checkpoint(stage / "best.pt"), load_checkpoint(stage / "checkpoint-2.pt")
    assert (best["epoch"], best["acc"]) == (2, 80.0)
    assert all(torch.equal(best["model"][k], ep2["model"][k]) for k in ep2["model"])
    assert sorted(p.name for p in stage.iterdir() if "best" in p.name) == ["best.pt"]


def test_dense_reference_epochs_sets_the_flops_ratio(tmp_path: Path) -> None:
    """Two dense stages of 2 and 1 epochs cost 3 dense epochs: 3/5 = 0.6 of a 5-epoch dense model when
    run.dense_reference_epochs = 5, 3/2 = 1.5 of the longest stage when it is 0."""
    from engine.flops import dense_forward_flops

    raw = {**TINY, "train": {"epochs": 2, "optimizer": {"lr": 0.05}}, "analyses": [],
           "stage": [{"name": "a", "method": "train"}, {"name": "b", "method": "train", "epochs": 1,
                                                        "init_from": "a"}]}
    f_d = dense_forward_flops(create_model("cifar_resnet_8", 10, 0.5))
    n = 256  # train_subset: the first 256 of the training images left after the 100 held out
    for ref, epochs, ratio in ((5, 5, 0.6), (0, 2, 1.5)):
        out = run(tmp_path, raw, f"ref{ref}", sets=(f"run.dense_reference_epochs={ref}",))
        assert out.state == "done", out.error
        summary = json.loads((out.run_dir / "status.json").read_text())["summary"]
        assert summary["train_flops"] == pytest.approx(3 * f_d * 3 * n)
        assert summary["train_flops_dense_epochs"] == epochs
        assert summary["train_flops_vs_dense"] == pytest.approx(ratio)
