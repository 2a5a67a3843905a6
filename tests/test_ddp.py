"""Data parallelism: `repro run --nproc 2` (torchrun, gloo on the CPU) trains identical replicas and writes once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from engine.io import load_checkpoint
from engine.runlog import read_metrics

RAW = {
    "name": "ddp", "paper": "demo", "run": {"seed": 3}, "analyses": ["predict", "sparsity"],
    "data": {"dataset": "digits", "normalize": "digits", "train_subset": 256, "test_subset": 100, "batch_size": 32,
             "eval_batch_size": 100, "crop_pad": 2, "flip": False},
    "model": {"arch": "cifar_resnet_8", "width": 0.5},
    "train": {"epochs": 2, "optimizer": {"lr": 0.05},
              "sparse": {"density": 0.3, "init": "snip", "update_frequency": 2, "growth": "random"}},
    "stage": [{"name": "dst", "method": "dst"}],
}


@pytest.mark.slow
def test_two_process_dst_run_keeps_replicas_identical(tmp_path: Path) -> None:
    rec = tmp_path / "ddp.toml"
    rec.write_text(tomli_w.dumps(RAW))
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "repro.cli", "run", str(rec), "--nproc", "2", "--device", "cpu",
                          "--out", str(run), "--quiet"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["nproc"] == 2
    # every stage ends with a cross-rank checksum of the weights (RuntimeError if they differ); SNIP scores on each
    # rank's own shard and random regrowth would diverge without the mask broadcast
    recs = read_metrics(run)
    assert [r["epoch"] for r in recs] == [1, 2]  # one writer: no duplicated records
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
    rec = tmp_path / "ddp_folders.toml"
    rec.write_text(tomli_w.dumps(raw))
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "repro.cli", "run", str(rec), "--nproc", "2", "--device", "cpu",
                          "--out", str(run), "--quiet"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "REPRO_DATA": str(tmp_path / "data")})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    recs = read_metrics(run)
    assert [r["epoch"] for r in recs] == [1]
    assert recs[0]["step"] == 10  # 160 images over 2 ranks = 80 each, global batch 16 = 8 a rank: 10 steps
