"""Data parallelism: `repro run --nproc 2` (torchrun, gloo on the CPU) trains identical replicas and writes once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from digits_recipes import digits_recipe, write_recipe
from helpers import cli

from engine.io import load_checkpoint
from engine.runlog import read_metrics

RAW = digits_recipe(name="ddp", analyses=["predict", "sparsity"],
                    data={"train_subset": 256, "test_subset": 100, "batch_size": 32, "eval_batch_size": 100},
                    train={"epochs": 2, "schedule": None,
                           "sparse": {"density": 0.3, "init": "snip", "update_frequency": 2, "growth": "random"}},
                    stage=[{"name": "dst", "method": "dst"}])


@pytest.mark.slow
def test_two_process_dst_run_keeps_replicas_identical(tmp_path: Path) -> None:
    rec = write_recipe(tmp_path, RAW, "ddp.toml")
    run = tmp_path / "run"
    res = cli("run", str(rec), "--nproc", "2", "--device", "cpu", "--out", str(run), "--quiet", timeout=300,
              env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["nproc"] == 2
    # every stage ends with a cross-rank checksum of the weights (RuntimeError if they differ); SNIP scores on each
    # rank's own shard and random regrowth would diverge without the mask broadcast
    recs = read_metrics(run)
    assert [r["epoch"] for r in recs] == [1, 2]  # one writer: no duplicated records
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 alone mirrors them to TensorBoard
    # 256 images over 2 ranks, global batch 32 = 16 a rank: 8 steps an epoch, and every image counted once
    assert recs[0]["step"] == 8
    final = load_checkpoint(run / "dst" / "final.pt")
    masks = final["method"]["masking"]["masks"]
    assert sum(int(m.sum()) for m in masks.values()) == pytest.approx(
        0.3 * sum(m.numel() for m in masks.values()), rel=0.02)
    assert (run / "analysis.h5").exists()


@pytest.mark.slow
def test_two_process_run_on_image_folders(tmp_path: Path) -> None:
    """The ImageNet path under DDP: DistributedSampler shards, DataLoader workers, identical replicas."""
    raw = {**RAW, "analyses": ["predict"],
           "data": {"dataset": "synthetic-imagenet", "normalize": "imagenet", "batch_size": 16, "eval_batch_size": 16,
                    "image_size": 32, "resize": 36, "workers": 1},
           "model": {"arch": "resnet18", "width": 0.125},
           "train": {**RAW["train"], "epochs": 1}}
    rec = write_recipe(tmp_path, raw, "ddp_folders.toml")
    run = tmp_path / "run"
    res = cli("run", str(rec), "--nproc", "2", "--device", "cpu", "--out", str(run), "--quiet", timeout=300,
              env={"OMP_NUM_THREADS": "1", "REPRO_DATA": str(tmp_path / "data")})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    recs = read_metrics(run)
    assert [r["epoch"] for r in recs] == [1]
    assert recs[0]["step"] == 10  # 160 images over 2 ranks = 80 each, global batch 16 = 8 a rank: 10 steps
