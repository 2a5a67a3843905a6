"""Issue 13: a hostile or unlucky user. Links are never written through, files honour the umask, a kill at any
point resumes exactly, smoke runs stay smoke runs, listings survive damaged files, bad usage is one line (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from digits_recipes import digits_recipe, write_recipe
from helpers import REPRO, cli, stopped_at

from engine import trainer as trainer_mod
from engine.checkpoints import checkpoint_path
from engine.io import CheckpointError, load_checkpoint, write_text
from engine.runlog import read_metrics
from repro.launch import execute
from repro.recipe import load
from repro.rundir import RunLock, is_locked, latest_done, latest_unfinished, read_run

TINY = digits_recipe(data={"train_subset": 256}, model={"width": 0.25},
                     stage=[{"name": "train", "method": "train", "save_every": 1}])
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # added to the environment of every subprocess


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished tiny run (3 epochs, checkpoints at 1 and 2); tests work on copies of it."""
    folder = tmp_path_factory.mktemp("finished")
    res = load(str(write_recipe(folder, TINY, "tiny.toml")))[0]
    out = execute(res, root=folder / "root", out=str(folder / "run"), device="cpu")
    assert out.state == "done", out.error
    return out.run_dir


@pytest.fixture
def run_copy(finished: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "root" / "tiny" / "run"
    shutil.copytree(finished, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


# ---- links (2) ----------------------------------------------------------------------------------------------
def test_a_symlinked_lock_is_refused_and_its_target_untouched(run_copy: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_copy / ".lock").symlink_to(victim)
    res = cli("analyze", str(run_copy), "--mode", "predict", "--device", "cpu", env=ENV)
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"error: {run_copy / '.lock'}: is a symbolic link; repro never writes through links "
                          "(remove it)\n")
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("name", ["log.txt", "metrics.jsonl", "train/last.pt"])
def test_a_symlink_anywhere_in_the_run_directory_refuses_resume(run_copy: Path, tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_copy / name).unlink()
    (run_copy / name).symlink_to(victim)
    before = (run_copy / "status.json").read_text()
    res = cli("run", str(run_copy / "recipe.toml"), "--out", str(run_copy), "--resume", "--device", "cpu", "--quiet",
              env=ENV)
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"error: {run_copy / name}: is a symbolic link; repro never writes through links in a run "
                          "directory (remove it, or copy the run without links)\n")
    assert victim.read_text() == "precious\n"
    assert (run_copy / "status.json").read_text() == before  # nothing written


def test_appends_never_follow_a_link_made_during_a_run(tmp_path: Path) -> None:
    from engine.errors import UnsafePathError
    from engine.runlog import RunLog

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "log.txt").symlink_to(victim)
    os.link(victim, tmp_path / "metrics.jsonl")  # a hard link is another way to write someone else's file
    log = RunLog(tmp_path)
    with pytest.raises(UnsafePathError, match="log.txt: is a symbolic link"):
        log.log("hello")
    with pytest.raises(UnsafePathError, match="metrics.jsonl: is a hard link to another file"):
        log.metric({"epoch": 1})
    assert victim.read_text() == "precious\n"


# ---- umask (3) ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_atomic_writes_honour_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        write_text(tmp_path / "status.json", "{}")
        from engine.io import save_checkpoint

        save_checkpoint(tmp_path / "last.pt", {"x": torch.zeros(2)})
    finally:
        os.umask(old)
    for name in ("status.json", "last.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


# ---- resume (4, 5, 6, 7) ------------------------------------------------------------------------------------
class Killed(BaseException):
    """A stand-in for SIGKILL: nothing after it runs, not even `except Exception` handlers."""


def test_a_kill_between_the_epoch_checkpoint_and_last_pt_loses_nothing(tmp_path: Path, finished: Path,
                                                                       monkeypatch) -> None:
    real_save = trainer_mod.save_checkpoint
    written: list[str] = []

    def save_then_die(path: Path, state: dict) -> None:
        real_save(path, state)
        if state.get("epoch") == 2 and Path(path).name in ("last.pt", "checkpoint-2.pt"):
            written.append(Path(path).name)
            if len(written) == 1:  # the first of epoch 2's two writes is on disk, the second never happens
                raise Killed()

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_then_die)
    res = load(str(write_recipe(tmp_path, TINY, "tiny.toml")))[0]
    run = tmp_path / "run"
    with pytest.raises(Killed):
        execute(res, root=tmp_path, out=str(run), device="cpu")
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real_save)
    out = execute(res, root=tmp_path, out=str(run), resume=True, device="cpu")
    assert out.state == "done", out.error
    got = load_checkpoint(run / "train" / "checkpoint-2.pt")
    ref = load_checkpoint(finished / "train" / "checkpoint-2.pt")
    assert got["epoch"] == 2
    assert all(torch.equal(got["model"][k], ref["model"][k]) for k in ref["model"])


def test_a_missing_epoch_checkpoint_is_an_error_not_final_pt(tmp_path: Path) -> None:
    raw = {**TINY, "stage": [*TINY["stage"], {"name": "ft", "method": "train", "epochs": 1, "init_from": "train@2"}]}
    recipe = load(str(write_recipe(tmp_path, raw, "tiny.toml")))[0].recipe
    (tmp_path / "train").mkdir()
    torch.save({"model": {}, "epoch": recipe.stage[0].epochs}, tmp_path / "train" / "final.pt")
    with pytest.raises(CheckpointError) as e:
        checkpoint_path(tmp_path, "train@2")
    assert str(e.value) == (f"{tmp_path / 'train' / 'checkpoint-2.pt'}: checkpoint not found (init_from = "
                            "'train@2' needs stage 'train' saved at epoch 2; rerun that stage, e.g. in a new run "
                            "directory)")
    assert checkpoint_path(tmp_path, "train@3") == tmp_path / "train" / "final.pt"  # the epoch final.pt holds
    torch.save({"model": {}}, tmp_path / "train" / "checkpoint-2.pt")
    assert checkpoint_path(tmp_path, "train@2") == tmp_path / "train" / "checkpoint-2.pt"


def test_resume_rewrites_an_epoch_checkpoint_an_older_version_lost(run_copy: Path, finished: Path) -> None:
    """A run killed by an older version between last.pt and checkpoint-E: the resume writes checkpoint-E."""
    state = load_checkpoint(finished / "train" / "checkpoint-2.pt")
    # that state: last.pt at epoch 2 (an identical run stopped there), checkpoint-2.pt missing, no final.pt
    cut = run_copy.parent / "cut"
    res = load(str(run_copy / "recipe.toml"))[0]
    with stopped_at(2, exc=Killed), pytest.raises(Killed):
        execute(res, root=run_copy.parent, out=str(cut), device="cpu")
    (cut / "train" / "checkpoint-2.pt").unlink()
    assert load_checkpoint(cut / "train" / "last.pt")["epoch"] == 2
    out = execute(res, root=run_copy.parent, out=str(cut), resume=True, device="cpu")
    assert out.state == "done"
    got = load_checkpoint(cut / "train" / "checkpoint-2.pt")
    assert all(torch.equal(got["model"][k], state["model"][k]) for k in state["model"])


def test_leftover_temp_files_are_removed_on_resume(run_copy: Path) -> None:
    junk = [run_copy / ".status.json.k2j4x9.tmp", run_copy / "train" / ".last.pt.a8d7s6.tmp"]
    for p in junk:
        p.write_bytes(b"half a write")
    keep = run_copy / "train" / "notes.tmp"  # not one of ours: left alone
    keep.write_text("mine")
    res = cli("run", str(run_copy / "recipe.toml"), "--out", str(run_copy), "--resume", "--device", "cpu", "--quiet",
              env=ENV)
    assert res.returncode == 0, res.stderr
    assert not any(p.exists() for p in junk)
    assert keep.read_text() == "mine"
    assert "removed 2 temp file(s) left by an interrupted write" in (run_copy / "log.txt").read_text()


def test_a_smoke_run_stays_a_smoke_run_without_its_status(tmp_path: Path) -> None:
    rec = write_recipe(tmp_path, TINY, "tiny.toml")
    root = tmp_path / "root"
    res = load(str(rec), smoke=True)[0]
    from repro.recipe import to_toml

    assert "smoke = true" in to_toml(res.recipe) and "smoke = " not in to_toml(load(str(rec))[0].recipe)
    out = execute(res, root=root, device="cpu", smoke=True)
    assert out.state == "done"
    (out.run_dir / "status.json").unlink()
    assert latest_done(root, "tiny") is None
    assert latest_unfinished(root, "tiny", smoke=False) is None  # `repro reproduce` does not take it for a full run
    assert latest_unfinished(root, "tiny", smoke=True) == out.run_dir
    again = execute(res, root=root, out=str(out.run_dir), resume=True, device="cpu", smoke=False)
    assert again.state == "done"
    assert json.loads((out.run_dir / "status.json").read_text())["smoke"] is True
    assert latest_done(root, "tiny") is None and read_run(out.run_dir).smoke


@pytest.mark.slow
def test_sigterm_marks_the_run_killed_and_it_resumes(tmp_path: Path) -> None:
    raw = {**TINY, "train": {**TINY["train"], "epochs": 40}}
    rec = write_recipe(tmp_path, raw, "tiny.toml")
    run = tmp_path / "run"
    proc = subprocess.Popen([*REPRO, "run", str(rec), "--out", str(run), "--device", "cpu", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ENV})
    deadline = time.time() + 120
    while time.time() < deadline:
        recs = read_metrics(run) if run.exists() else []
        if recs:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM); continue with --resume"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "killed" and status["error"] == "terminated (SIGTERM)"
    assert read_run(run).state == "killed"


def test_the_lock_probe_never_makes_a_starting_run_fail(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    stop = tmp_path / "stop"
    prober = subprocess.Popen([sys.executable, "-c", (
        "import sys, pathlib; from repro.rundir import is_locked\n"
        "run, stop = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])\n"
        "n = 0\n"
        "while not stop.exists():\n"
        "    is_locked(run); n += 1\n"
        "print(n)\n"), str(run), str(stop)], stdout=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    try:
        time.sleep(1.0)  # the prober is up and probing
        refused = 0
        for _ in range(3000):
            try:
                RunLock(run).acquire().release()
            except Exception:  # noqa: BLE001
                refused += 1
    finally:
        stop.touch()
        probes = int(prober.communicate(timeout=30)[0])
    assert probes > 1000 and refused == 0


def test_the_lock_probe_reads_the_pid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert not is_locked(run)
    with RunLock(run):
        assert is_locked(run)
        assert (run / ".lock").read_text().split()[0] == str(os.getpid())
    assert not is_locked(run)
    (run / ".lock").write_text("999999999")  # an older version's lock of a process long gone
    assert not is_locked(run)


# ---- damaged files never stop a listing (11) ------------------------------------------------------------------
def test_metrics_lines_that_are_not_objects_are_skipped(run_copy: Path) -> None:
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write("5\nnull\n[1, 2]\n\"text\"\n")
    recs = read_metrics(run_copy)
    assert [r["epoch"] for r in recs if not r.get("final")] == [1, 2, 3]
    assert read_run(run_copy).best is not None
    res = cli("runs", "--json", "--root", str(run_copy.parent.parent), env=ENV)
    assert res.returncode == 0, res.stderr
    assert [r["state"] for r in json.loads(res.stdout)] == ["done"]
    res = cli("report", "--json", "--root", str(run_copy.parent.parent), env=ENV)
    assert res.returncode == 0, res.stderr


# ---- clear errors, exit 2 (12-15) -----------------------------------------------------------------------------
def test_a_binary_recipe_file_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    for args in (("validate", str(p)), ("run", str(p), "--device", "cpu"), ("show", str(p), "--smoke")):
        res = cli(*args, env=ENV)
        assert res.returncode == 2 and res.stderr == f"{p}: not a TOML text file (it is not UTF-8)\n", args


@pytest.mark.parametrize("table", ["model", "data", "run", "train"])
def test_smoke_and_full_accept_the_same_recipes(tmp_path: Path, table: str) -> None:
    raw = {**TINY, table: "x"}
    p = write_recipe(tmp_path, raw, "tiny.toml")
    full, smoke = cli("show", str(p), env=ENV), cli("show", str(p), "--smoke", env=ENV)
    assert full.returncode == smoke.returncode == 2
    assert smoke.stderr == full.stderr and full.stderr.count("\n") == 1 and f"{p}: {table}" in full.stderr


def test_a_string_width_is_refused_under_smoke_too(tmp_path: Path) -> None:
    p = write_recipe(tmp_path, {**TINY, "model": {"arch": "cifar_resnet_8", "width": "2"}}, "tiny.toml")
    full, smoke = cli("show", str(p), env=ENV), cli("show", str(p), "--smoke", env=ENV)
    assert full.returncode == smoke.returncode == 2 and smoke.stderr == full.stderr
    assert full.stderr.startswith(f"{p}: model.width: ")


def test_bench_with_an_unknown_arch_is_one_line() -> None:
    res = cli("bench", "--arch", "bogus", "--device", "cpu", env=ENV)
    assert res.returncode == 2
    assert res.stderr.startswith("error: --arch: unknown arch 'bogus'") and res.stderr.count("\n") == 1


def test_out_naming_a_file_is_refused(tmp_path: Path) -> None:
    rec = write_recipe(tmp_path, TINY, "tiny.toml")
    f = tmp_path / "afile"
    f.write_text("mine")
    for extra in ((), ("--resume",)):
        res = cli("run", str(rec), "--out", str(f), "--device", "cpu", *extra, env=ENV)
        assert res.returncode == 2 and res.stderr == f"error: {f}: --out names a file, not a directory\n", extra
    assert f.read_text() == "mine"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_one_writes_nothing(tmp_path: Path) -> None:
    rec = write_recipe(tmp_path, TINY, "tiny.toml")
    root = tmp_path / "root"
    res = cli("run", str(rec), "--root", str(root), "--device", "cuda", env=ENV)
    assert res.returncode == 2
    assert res.stderr == "error: --device cuda was asked for but no CUDA device is available\n"
    assert not root.exists() or not any(root.rglob("*"))


def test_set_problems_name_set_not_the_file(tmp_path: Path) -> None:
    p = write_recipe(tmp_path, TINY, "tiny.toml")
    res = cli("show", str(p), "--set", "train.epochs=-1", "--set", "model.width=\"2\"", env=ENV)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert lines and all(line.startswith("--set: ") for line in lines), lines
    bad = write_recipe(tmp_path, {**TINY, "run": {"seed": "3"}}, "bad.toml")
    res = cli("show", str(bad), "--set", "model.width=\"2\"", env=ENV)
    assert res.returncode == 2
    assert sorted(res.stderr.splitlines()) == sorted([
        f"{bad}: run.seed: input should be a valid integer (got '3')",
        "--set: model.width: input should be a valid number (got '2')"])


def test_the_terminal_app_reads_the_pid_of_a_pid_and_host_lock(tmp_path: Path) -> None:
    from repro.tui import procs

    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        assert procs.lock_pid(run) == os.getpid()  # the lock now says "pid host"; the stop key signals that pid
        assert procs.lock_pid(tmp_path) is None  # no lock there
