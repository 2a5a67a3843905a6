"""Fast Geometric Ensembling: members at each cycle's low point, the optimizer state carried over, the ensemble."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from digits_recipes import digits_recipe, write_recipe
from helpers import run_recipe, stopped_at

from engine.io import load_checkpoint
from engine.methods.fge import FGE
from engine.runlog import read_metrics
from engine.schedules import lr_at
from engine.store import groups, read_group
from repro.launch import execute
from repro.recipe import RecipeError, load


def _fge(cycle: int) -> FGE:
    stage = SimpleNamespace(schedule=SimpleNamespace(cycle=cycle), params={})
    return FGE(SimpleNamespace(), stage, SimpleNamespace())


def test_members_are_collected_mid_cycle() -> None:
    """(e mod c) + 1 == c/2: cycle 2 over 6 epochs collects after 0-based epochs 0, 2, 4; cycle 4 over 8 after 1, 5
    (the README's 40 epochs with cycle 2 give 20 members)."""
    assert [e for e in range(6) if _fge(2).collects(e)] == [0, 2, 4]
    assert [e for e in range(8) if _fge(4).collects(e)] == [1, 5]
    assert sum(_fge(2).collects(e) for e in range(40)) == 20


BASE = digits_recipe(name="fge_digits", analyses=["predict", "calibration"],
                     data={"train_subset": 512, "eval_batch_size": 500}, model={"arch": "preresnet8"},
                     train={"epochs": None, "schedule": None, "optimizer": {"lr": 0.1, "weight_decay": 5e-4}},
                     stage=None)


def test_fge_recipe_is_checked(tmp_path: Path) -> None:
    raw = {**BASE, "stage": [{"name": "train", "method": "train", "epochs": 2},
                             {"name": "fge", "method": "fge", "epochs": 2}]}
    with pytest.raises(RecipeError) as e:
        load(str(write_recipe(tmp_path, raw)))
    text = "\n".join(e.value.lines)
    assert "stage.1.schedule.name: fge runs the cyclic schedule" in text
    assert "stage.1.init_from: fge starts from a pretrained checkpoint" in text


def test_fge_collects_members_and_the_ensemble_beats_its_first_member(tmp_path: Path) -> None:
    cyclic = {"name": "cyclic", "lr_1": 0.05, "lr_2": 0.01, "cycle": 2}
    stages = [
        {"name": "train", "method": "train", "epochs": 5, "save_every": 1, "schedule": {"name": "fge"}},
        # the recipe's weight decay differs from the pretraining's: loading the optimizer state brings 5e-4 back
        {"name": "fge_own_opt", "method": "fge", "epochs": 1, "init_from": "train@4", "schedule": cyclic,
         "optimizer": {"weight_decay": 1e-3}, "params": {"load_optimizer": False}},
        {"name": "fge", "method": "fge", "epochs": 6, "init_from": "train@4", "schedule": cyclic,
         "optimizer": {"weight_decay": 1e-3}},
    ]
    # all 1437 training images: 23 steps an epoch
    raw = {**BASE, "data": {**BASE["data"], "train_subset": 0}, "stage": stages}
    out = run_recipe(raw, tmp_path, tmp_path / "run", root=tmp_path)
    assert out.state == "done", out.error
    run = out.run_dir
    members = json.loads((run / "fge" / "tickets.json").read_text())["members"]
    assert [m["name"] for m in members] == ["fge1", "fge3", "fge5"]
    assert all((run / m["path"]).exists() for m in members)
    # optimizer state: the checkpoint's param groups (weight decay 5e-4) unless load_optimizer = false
    assert {g["weight_decay"] for g in load_checkpoint(run / "fge" / "last.pt")["optimizer"]["param_groups"]} == {5e-4}
    own = load_checkpoint(run / "fge_own_opt" / "last.pt")["optimizer"]["param_groups"]
    assert {g["weight_decay"] for g in own} == {1e-3}
    # the per-step triangle: the lr logged at the end of each epoch is the schedule's at the last step
    recipe = load(str(write_recipe(tmp_path, raw)))[0].recipe
    fge_cfg = recipe.stage[-1]
    records = [r for r in read_metrics(run) if r.get("stage") == "fge"]
    nb = 23  # ceil(1437 / 64)
    assert [r["lr"] for r in records] == pytest.approx(
        [lr_at(fge_cfg.schedule, fge_cfg.optimizer.lr, e, (nb - 1) / nb, 6) for e in range(6)])
    assert [r.get("fge_members") for r in records] == [1, None, 2, None, 3, None]
    # the ensemble: mean of the members' probabilities, its NLL at most the first member's
    g = read_group(run / "analysis.h5", "predict")
    assert list(g["member_names"]) == ["fge1", "fge3", "fge5"]
    assert float(g["ensemble_nll"]) <= float(g["member_nll"][0])
    assert float(g["ensemble_nll"]) <= float(g["member_nll"].mean())
    # the running ensemble logged during training agrees with /predict
    assert records[4]["ensemble_test_nll"] == pytest.approx(float(g["ensemble_nll"]), abs=1e-4)
    assert records[4]["ensemble_test_acc"] == pytest.approx(float(g["ensemble_acc"]), abs=1e-3)
    assert "calibration" in groups(run / "analysis.h5")


def _cut_and_resume(tmp_path: Path, raw: dict, stage: str, at_epoch: int) -> tuple[Path, Path]:
    """An uninterrupted run, and one stopped at the start of `stage`'s epoch `at_epoch` (0-based) then resumed."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    res = load(str(write_recipe(tmp_path, raw)))[0]
    ref = execute(res, root=tmp_path, out=str(tmp_path / "ref"), device="cpu")
    assert ref.state == "done", ref.error
    with stopped_at(at_epoch, stage), pytest.raises(KeyboardInterrupt):  # as Ctrl-C would stop it
        execute(res, root=tmp_path, out=str(tmp_path / "cut"), device="cpu")
    assert load_checkpoint(tmp_path / "cut" / stage / "last.pt")["epoch"] == at_epoch
    out = execute(res, root=tmp_path, out=str(tmp_path / "cut"), resume=True, device="cpu")
    assert out.state == "done", out.error
    return ref.run_dir, out.run_dir


def test_fge_and_curve_stages_resume_bitwise(tmp_path: Path) -> None:
    """Killed mid-stage and resumed, an FGE stage (after its first member) and a curve stage end with the same
    weights, members and running ensemble as uninterrupted runs."""
    raw = {**BASE, "data": {**BASE["data"], "train_subset": 128, "test_subset": 64},
           "stage": [{"name": "train", "method": "train", "epochs": 1},
                     {"name": "fge", "method": "fge", "epochs": 4, "init_from": "train",
                      "schedule": {"name": "cyclic", "lr_1": 0.05, "lr_2": 0.01, "cycle": 2}}]}
    ref, cut = _cut_and_resume(tmp_path / "fge", raw, "fge", 2)
    a, b = (load_checkpoint(r / "fge" / "final.pt") for r in (ref, cut))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["method"]["saved"] == b["method"]["saved"] == [1, 3]
    assert torch.equal(a["method"]["probs_sum"], b["method"]["probs_sum"])
    assert read_group(ref / "analysis.h5", "predict")["ensemble_nll"] == read_group(cut / "analysis.h5",
                                                                                    "predict")["ensemble_nll"]
    raw = {**BASE, "analyses": ["curve"], "data": {**BASE["data"], "train_subset": 128, "test_subset": 64},
           "model": {"arch": "vgg16bn", "width": 0.125},
           "stage": [{"name": "endpoint", "method": "train", "repeat": 2, "epochs": 1},
                     {"name": "curve", "method": "curve", "epochs": 3, "params": {"eval_points": 2}}]}
    ref, cut = _cut_and_resume(tmp_path / "curve", raw, "curve", 2)
    a, b = (load_checkpoint(r / "curve" / "final.pt")["model"] for r in (ref, cut))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in read_metrics(ref)] == [r["train_loss"] for r in read_metrics(cut)]
