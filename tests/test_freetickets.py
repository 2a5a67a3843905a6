"""FreeTickets procedures: the EDST schedule and tickets, repeated stages (DST and PF ensembles)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from digits_recipes import digits_recipe, write_recipe
from helpers import cli

from engine.io import load_checkpoint
from engine.runlog import read_metrics
from engine.schedules import edst_boundaries, edst_lr
from engine.store import groups, read_group
from repro.launch import execute
from repro.recipe import RecipeError, load


def test_edst_schedule_matches_the_worked_example() -> None:
    """freetickets.md §1.4: E = 450, explo = 150, M = 3 -> I = 100; 0.1 / 0.01 / 0.001 by phase halves."""
    length, restarts, mids = edst_boundaries(450, 150, 3)
    assert (length, restarts, mids) == (100.0, [250, 350], [200, 300, 400])
    table = {1: 0.1, 150: 0.1, 151: 0.01, 200: 0.01, 201: 0.001, 250: 0.001, 251: 0.01, 300: 0.01, 301: 0.001,
             350: 0.001, 351: 0.01, 400: 0.01, 401: 0.001, 450: 0.001}
    for epoch1, lr in table.items():
        assert edst_lr(0.1, epoch1 - 1, 450, 150, 3) == lr, epoch1
    # fractional phases (E = 320 default, explo 150, M 3 -> I = 56.67): ceilings of the same float sums
    assert edst_boundaries(320, 150, 3)[1:] == ([207, 264], [179, 235, 292])  # 150 + 56.67 + 28.33 = 235.0 exactly


BASE = digits_recipe(name="ft", run={"seed": 5}, data={"val_split": 100, "train_subset": 320, "test_subset": 120},
                     train={"epochs": 2, "schedule": None,
                            "sparse": {"density": 0.3, "init": "ERK", "update_frequency": 2, "prune_rate": 0.3}},
                     stage=None)


def test_repeat_expands_into_paired_independent_stages(tmp_path: Path) -> None:
    raw = {**BASE, "stage": [{"name": "dense", "method": "train", "repeat": 3},
                             {"name": "pf", "method": "fix", "repeat": 3, "init_from": "dense",
                              "sparse": {"init": "pruning", "density": 0.2}}]}
    r = load(str(write_recipe(tmp_path, raw)))[0].recipe
    assert [(s.name, s.group, s.seed, s.init_from) for s in r.stage] == [
        ("dense1", "dense", 5, ""), ("dense2", "dense", 6, ""), ("dense3", "dense", 7, ""),
        ("pf1", "pf", 5, "dense1"), ("pf2", "pf", 6, "dense2"), ("pf3", "pf", 7, "dense3")]
    raw["stage"][0]["repeat"] = 0
    with pytest.raises(RecipeError) as e:
        load(str(write_recipe(tmp_path, raw)))
    assert e.value.lines[0].endswith("stage.0.repeat: must be a whole number >= 1 (got 0)")


def test_pf_ensemble_runs_and_prunes_each_dense_model(tmp_path: Path) -> None:
    raw = {**BASE, "analyses": ["predict"],
           "stage": [{"name": "dense", "method": "train", "repeat": 2},
                     {"name": "pf", "method": "fix", "repeat": 2, "init_from": "dense", "epochs": 1,
                      "sparse": {"init": "pruning", "density": 0.2}}]}
    res = load(str(write_recipe(tmp_path, raw)))[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu")
    assert out.state == "done", out.error
    run = out.run_dir
    for k in (1, 2):
        dense = load_checkpoint(run / f"dense{k}" / "final.pt")["model"]
        pf = load_checkpoint(run / f"pf{k}" / "final.pt")
        masks = pf["method"]["masking"]["masks"]
        total = sum(m.numel() for m in masks.values())
        assert sum(int(m.sum()) for m in masks.values()) == int(0.2 * total)  # global magnitude, exact count
        # the kept positions were the largest |w| of that dense model
        scores = torch.cat([dense[n].abs().flatten() for n in masks])
        kept = torch.cat([masks[n].flatten() for n in masks])
        assert scores[kept].min() >= scores[~kept].max()
    members = json.loads((run / "pf1" / "tickets.json").read_text())["members"]
    assert members == [{"name": "pf1", "path": "pf1/final.pt"}]
    from engine.store import read_group

    assert read_group(run / "analysis.h5", "predict")["member_names"] == ["pf1", "pf2"]


def test_edst_leaves_one_best_validation_ticket_per_phase(tmp_path: Path) -> None:
    raw = {**BASE, "analyses": ["predict"], "train": {**BASE["train"], "epochs": 7},
           "analysis": {"tsne_protocol": "ours"},  # a trajectory point every epoch (the original keeps 5, 6, 7)
           "stage": [{"name": "edst", "method": "edst", "record_predictions": True,
                      "params": {"epochs_explo": 1, "model_num": 3, "large_death_rate": 0.8}}]}
    res = load(str(write_recipe(tmp_path, raw)))[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu")
    assert out.state == "done", out.error
    run = out.run_dir
    recs = [r for r in read_metrics(run) if not r.get("final")]
    # I = 2: phases are epochs 2-3, 4-5, 6-7; jumps at the end of epochs 3 and 5; lr 0.05 / 0.01 / 0.001 pattern
    assert [r["epoch"] for r in recs if r.get("jump")] == [3, 5]
    assert [round(r["lr"], 6) for r in recs] == [0.05, 0.01, 0.001, 0.01, 0.001, 0.01, 0.001]
    for k, epochs in enumerate(([2, 3], [4, 5], [6, 7]), start=1):
        ticket = load_checkpoint(run / "edst" / f"ticket-{k}.pt")
        phase = [r for r in recs if r["epoch"] in epochs]
        best = max(phase, key=lambda r: r["val_acc"])  # first of equal bests, as a strict > keeps the first
        assert ticket["epoch"] == best["epoch"] and ticket["acc"] == best["val_acc"]
        masks = ticket["method"]["masking"]["masks"]
        density = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        assert density == pytest.approx(recs[0]["density"], abs=1e-9)  # every ticket at the run's density
    tickets = json.loads((run / "edst" / "tickets.json").read_text())["members"]
    assert [t["name"] for t in tickets] == ["ticket1", "ticket2", "ticket3"]
    traj = load_checkpoint(run / "edst" / "trajectory.pt")
    assert traj["epoch"].tolist() == list(range(1, 8)) and traj["member"].tolist() == [-1, 0, 0, 1, 1, 2, 2]
    assert traj["outputs"].shape == (7, 120, 10)


@pytest.mark.slow
def test_demo_is_a_freetickets_ensemble_with_every_analysis(tmp_path: Path) -> None:
    """Issue 4: the demo's EDST ensemble has lower NLL than its mean member, its members disagree, and every
    ensemble analysis is in analysis.h5 with the spec's names and shapes."""
    res = cli("run", "demo_digits", "--quiet", "--device", "cpu", env={"REPRO_ROOT": str(tmp_path)}, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ensemble" in res.stdout and "ticket3" in res.stdout
    (run,) = list((tmp_path / "demo_digits").iterdir())
    h5 = run / "analysis.h5"
    assert set(groups(h5)) >= {"predict", "disagreement", "kd", "calibration", "tsne", "mask_overlap", "ood",
                               "sparsity"}
    p = read_group(h5, "predict")
    m, n, c = p["member_probs"].shape
    assert (m, n, c) == (3, 360, 10) and p["labels"].shape == (360,)
    assert float(p["ensemble_nll"]) < float(np.mean(p["member_nll"]))
    assert float(p["ensemble_acc"]) >= 95.0
    d = read_group(h5, "disagreement")
    assert d["matrix"].shape == (3, 3) and float(d["mean"]) > 0
    assert read_group(h5, "kd")["kl"].shape == (3, 3)
    cal = read_group(h5, "calibration")
    assert cal["ece"].shape == (4,) and cal["bin_count"].shape == (15,) and cal["bin_edges"].shape == (16,)
    assert cal["_attrs"]["n_bins"] == 15 and int(cal["bin_count"].sum()) == 360
    t = read_group(h5, "tsne")
    # the original t-SNE protocol over 15 epochs: every second epoch from index ceil(145 * 15 / 250) = 9
    assert t["embedding"].shape == (3, 2) and t["member"].shape == (3,) and t["step"].tolist() == [11, 13, 15]
    mo = read_group(h5, "mask_overlap")
    assert mo["distance"].shape == (3, 3) and mo["_attrs"]["kind"] == "weight" and mo["labels"] == [
        "ticket1", "ticket2", "ticket3"]
    o = read_group(h5, "ood")
    assert 0.5 < float(o["auroc"]) <= 1.0
