"""End-to-end runs on digits: metrics, resume (bitwise on the CPU), SIGKILL, NaN, the lock, predict, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from digits_recipes import digits_recipe, write_recipe
from helpers import REPRO, cli, run_recipe, stopped_at

from engine.io import CheckpointError, load_checkpoint
from engine.runlog import read_metrics
from repro.launch import execute
from repro.recipe import load
from repro.rundir import RunDirError, RunLock, read_run

TINY = digits_recipe(stage=[{"name": "train", "method": "train", "save_every": 1}])


def run_once(tmp_path: Path, out: Path, raw: dict = TINY, resume: bool = False):
    return run_recipe(raw, tmp_path, out, root=tmp_path / "root", name="tiny.toml", resume=resume)


def test_run_writes_the_run_directory(tmp_path: Path) -> None:
    out = run_once(tmp_path, tmp_path / "run")
    assert out.state == "done", out.error
    run = out.run_dir
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["progress"] == 1.0 and status["recipe"] == "tiny"
    recs = read_metrics(run)
    assert [r["epoch"] for r in recs] == [1, 2, 3] and all(r["stage"] == "train" for r in recs)
    assert recs[-1]["train_loss"] < recs[0]["train_loss"]
    assert (run / "train" / "checkpoint-1.pt").exists() and (run / "train" / "checkpoint-2.pt").exists()
    assert not (run / "train" / "checkpoint-3.pt").exists()  # the last epoch is final.pt
    final = load_checkpoint(run / "train" / "final.pt")
    assert final["epoch"] == 3
    # /predict agrees with the trainer's own last evaluation and with a by-hand recomputation
    with h5py.File(run / "analysis.h5") as f:
        g = f["predict"]
        probs, labels = g["member_probs"][()], g["labels"][()]
        assert probs.shape == (1, 200, 10) and labels.shape == (200,)
        assert np.allclose(probs.sum(-1), 1, atol=1e-5)
        acc = 100 * (probs[0].argmax(1) == labels).mean()
        assert g["member_acc"][0] == pytest.approx(acc, abs=1e-4)
        assert float(g["ensemble_acc"][()]) == pytest.approx(acc, abs=1e-4)
        nll = -np.log(probs[0][np.arange(200), labels]).mean()
        assert float(g["ensemble_nll"][()]) == pytest.approx(nll, rel=1e-4)
        assert g.attrs["recipe"] == "tiny" and g.attrs["run_id"] == "run" and g.attrs["version"] == "1"
    assert recs[-1]["test_acc"] == pytest.approx(acc, abs=1e-4)
    # training cost: a dense run costs exactly 3 forward passes per example, i.e. 1.0 dense model
    from engine.flops import dense_forward_flops
    from engine.models import create_model

    f_d = dense_forward_flops(create_model("cifar_resnet_8", 10, 0.5))
    summary = status["summary"]
    assert summary["train_flops"] == pytest.approx(3 * f_d * 3 * 384)
    assert summary["train_flops_vs_dense"] == pytest.approx(1.0)
    assert summary["params.nonzero"] == summary["params.params"] == sum(
        p.numel() for p in create_model("cifar_resnet_8", 10, 0.5).parameters())


def test_two_runs_cannot_share_a_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        with pytest.raises(RunDirError, match="another run is using this directory"):
            RunLock(run).acquire()
    (run / "keep.txt").write_text("user data")
    res = load(str(write_recipe(tmp_path, TINY, "tiny.toml")))[0]
    with pytest.raises(RunDirError) as e:
        execute(res, root=tmp_path, out=str(run), device="cpu")
    assert str(e.value) == f"{run}: already exists; use --resume to continue it or choose another --out"
    assert (run / "keep.txt").read_text() == "user data"


def _kill_and_resume(tmp_path: Path, delay: float) -> Path:
    rec = write_recipe(tmp_path, TINY, "tiny.toml")
    run = tmp_path / f"killed-{delay}"
    env = {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*REPRO, "run", str(rec), "--out", str(run), "--device", "cpu", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_run(run).state in ("killed", "unknown", "done")
    res = cli("run", str(rec), "--out", str(run), "--resume", "--device", "cpu", "--quiet", env=env)
    assert res.returncode == 0, res.stderr
    return run


@pytest.mark.slow
def test_sigkill_at_any_point_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    ref = run_once(tmp_path, tmp_path / "ref").run_dir
    ref_final = load_checkpoint(ref / "train" / "final.pt")["model"]
    ref_recs = read_metrics(ref)
    for delay in (2.5, 4.0, 5.5):
        run = _kill_and_resume(tmp_path, delay)
        final = load_checkpoint(run / "train" / "final.pt")["model"]
        assert all(torch.equal(final[k], ref_final[k]) for k in ref_final), f"weights differ (kill at {delay}s)"
        recs = read_metrics(run)
        assert [r["epoch"] for r in recs] == [1, 2, 3]
        for a, b in zip(recs, ref_recs):
            assert a["train_loss"] == b["train_loss"] and a["test_acc"] == b["test_acc"]
        assert read_run(run).state == "done"


def test_resume_continues_from_last_checkpoint_bitwise(tmp_path: Path) -> None:
    """Stop a run after epoch 2 (as a kill would leave it), resume, and compare with an uninterrupted run."""
    ref = run_once(tmp_path, tmp_path / "ref").run_dir
    run, stage = tmp_path / "cut", tmp_path / "cut" / "train"
    with stopped_at(2), pytest.raises(KeyboardInterrupt):  # as Ctrl-C would, at the start of epoch 3
        run_once(tmp_path, run)
    assert load_checkpoint(stage / "last.pt")["epoch"] == 2 and read_run(run).state == "killed"
    out = run_once(tmp_path, run, resume=True)
    assert out.state == "done"
    a = load_checkpoint(ref / "train" / "final.pt")["model"]
    b = load_checkpoint(stage / "final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in read_metrics(run)] == [r["train_loss"] for r in read_metrics(ref)]


def test_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from engine.methods.base import Method

    def poisoned(self):  # noqa: ANN001 - the loss turns NaN from the second epoch on
        return torch.tensor(float("nan")) if self.trainer.epoch >= 1 else None

    monkeypatch.setattr(Method, "extra_loss", poisoned)
    out = run_once(tmp_path, tmp_path / "nan")
    assert out.state == "failed"
    last = out.run_dir / "train" / "last.pt"
    assert out.error == f"loss became nan in stage 'train' epoch 2; last good checkpoint kept: {last}"
    status = json.loads((out.run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == out.error
    good = load_checkpoint(last)
    assert good["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    assert not (out.run_dir / "train" / "final.pt").exists()
    assert [r["epoch"] for r in read_metrics(out.run_dir)] == [1]


def test_corrupt_checkpoint_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad)
    assert str(e.value).startswith(f"{bad}: cannot read checkpoint (")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_cli_run_report_plot_runs(tmp_path: Path) -> None:
    rec = write_recipe(tmp_path, TINY, "tiny.toml")
    root = tmp_path / "root"
    env = {"REPRO_ROOT": str(root)}
    res = cli("run", str(rec), "--device", "cpu", "--quiet", env=env)
    assert res.returncode == 0, res.stderr
    run_dir = Path(res.stdout.strip().splitlines()[-1].removeprefix("run directory: "))
    assert run_dir.parent == root / "tiny"
    runs = json.loads(cli("runs", "--json", env=env).stdout)
    assert [(r["recipe"], r["state"]) for r in runs] == [("tiny", "done")]
    rep = json.loads(cli("report", "--json", env=env).stdout)
    last_acc = read_metrics(run_dir)[-1]["test_acc"]
    assert rep[0]["metric"] == "ensemble_acc" and rep[0]["reproduced"] == pytest.approx(last_acc, abs=1e-4)
    assert rep[0]["paper"] is None and rep[0]["within"] is None
    png = tmp_path / "p.png"
    res = cli("plot", str(run_dir), "--mode", "predict", "-o", str(png))
    assert res.returncode == 0, res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = cli("analyze", str(run_dir), "--mode", "predcit")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: unknown analysis mode 'predcit'; did you mean 'predict'?"
    res = cli("analyze", str(run_dir), "--mode", "predict")
    assert res.returncode == 0 and json.loads(res.stdout)["members"] == 1


def test_reproduce_skips_finished_runs_and_resumes_unfinished_ones(tmp_path: Path) -> None:
    rec = write_recipe(tmp_path, TINY, "tiny.toml")
    root, report = tmp_path / "root", tmp_path / "REPORT.md"
    args = ("reproduce", str(rec), "--device", "cpu", "--root", str(root), "--report", str(report))
    first = cli(*args, timeout=300)
    assert first.returncode == 0, first.stderr
    (run,) = list((root / "tiny").iterdir())
    assert (run / "figures" / "predict.png").exists()
    assert "| tiny | " in report.read_text() and "| done | ensemble_acc |" in report.read_text()
    again = cli(*args, timeout=300)
    assert f"done already ({run})" in again.stdout and len(list((root / "tiny").iterdir())) == 1
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "failed"}))  # as an interrupted run leaves it
    third = cli(*args, timeout=300)
    assert third.returncode == 0 and f"tiny: done ({run})" in third.stdout
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    assert len(list((root / "tiny").iterdir())) == 1


def test_a_stage_can_set_its_own_batch_size(tmp_path: Path) -> None:
    """Early-Bird's ResNet-18 scripts search at batch 256 and retrain at 128: `[[stage]] batch_size`."""
    raw = {**TINY, "train": {**TINY["train"], "epochs": 1},
           "stage": [{"name": "a", "method": "train"}, {"name": "b", "method": "train", "batch_size": 128}]}
    out = run_once(tmp_path, tmp_path / "run", raw)
    assert out.state == "done", out.error
    recs = read_metrics(out.run_dir)
    # 384 images: ceil(384 / 64) = 6 steps at the data batch, ceil(384 / 128) = 3 at the stage's own
    assert [(r["stage"], r["step"]) for r in recs] == [("a", 6), ("b", 3)]
