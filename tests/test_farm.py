"""`repro reproduce` at farm scale: run claims, GPU slots, --jobs on the CPU, two workers on one list, submitit's
local executor with a preempted job, and the sbatch script --launcher slurm writes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from digits_recipes import digits_recipe, write_recipe
from helpers import REPRO, cli

from engine.io import load_checkpoint
from engine.runlog import read_metrics
from repro.claims import Claim, claim_path
from repro.farm import gpu_groups, slots_for
from repro.reproduce import duration
from repro.rundir import RunDirError, parse_time, read_run
from repro.slurm import RDZV_PORT, torchrun_args


def _claim_file(path: Path, **fields: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "owner": "x", "since": "t",
                                **fields}))


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_claim_is_held_by_one_worker_until_released(tmp_path: Path) -> None:
    path = claim_path(tmp_path, "tiny", "s1", smoke=True)
    assert path == tmp_path / ".claims" / "tiny-s1-smoke.claim"
    first, second = Claim(path, owner="w1"), Claim(path, owner="w2")
    assert first.acquire()
    assert not second.acquire()
    assert (second.holder.host, second.holder.pid, second.holder.owner) == (socket.gethostname(), os.getpid(), "w1")
    first.release()
    assert not path.exists()
    assert second.acquire() and second.took_over is None
    second.release()


def test_a_dead_workers_claim_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "c.claim"
    dead = _dead_pid()
    _claim_file(path, pid=dead)  # this host, a pid that is gone
    c = Claim(path, owner="w")
    assert c.acquire() and c.took_over.pid == dead
    assert json.loads(path.read_text())["owner"] == "w"
    c.release()


def test_another_hosts_claim_goes_stale_without_a_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "c.claim"
    _claim_file(path, host="node-17", pid=1)
    c = Claim(path, owner="w", stale_s=300)
    assert not c.acquire() and c.holder.host == "node-17"
    old = time.time() - 301
    os.utime(path, (old, old))
    assert c.acquire() and c.took_over.host == "node-17"
    c.release()


def test_a_requeued_job_takes_its_own_claim_back_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.claim"
    _claim_file(path, host="node-3", pid=99, owner="slurm:77_3")  # fresh: its heartbeat is seconds old
    assert not Claim(path, owner="slurm:77_4").acquire()
    c = Claim(path, owner="slurm:77_3")
    assert c.acquire() and c.took_over.owner == "slurm:77_3"
    c.release()


def test_a_damaged_claim_blocks_only_until_it_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "c.claim"
    path.write_text("not json")
    c = Claim(path, owner="w", stale_s=60)
    assert not c.acquire() and c.holder.host == "?"
    old = time.time() - 61
    os.utime(path, (old, old))
    assert c.acquire()
    c.release()


def test_the_heartbeat_keeps_a_claim_fresh_and_release_spares_a_claim_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "c.claim"
    c = Claim(path, owner="w", heartbeat_s=0.05)
    assert c.acquire()
    old = time.time() - 1000
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 5
    path.unlink()  # taken over by another worker, which wrote its own
    _claim_file(path, owner="other")
    c.release()
    assert json.loads(path.read_text())["owner"] == "other"


def _contend(path: str, start: float, q: mp.Queue, done: Any) -> None:
    time.sleep(max(0.0, start - time.time()))
    c = Claim(Path(path), owner=f"p{os.getpid()}")
    q.put(c.acquire())
    done.wait(60)  # alive until every contender has tried: a winner that exits is a dead holder, rightly taken over


def test_of_many_processes_claiming_at_once_exactly_one_wins(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    q, done = ctx.Queue(), ctx.Event()
    start = time.time() + 0.5
    procs = [ctx.Process(target=_contend, args=(str(tmp_path / "c.claim"), start, q, done)) for _ in range(8)]
    for p in procs:
        p.start()
    try:
        won = sorted(q.get(timeout=60) for _ in procs)
    finally:
        done.set()
        for p in procs:
            p.join(timeout=30)
    assert won == [False] * 7 + [True]


def test_gpu_slots() -> None:
    assert gpu_groups(["0", "1", "2", "3", "4"], 2) == ["0,1", "2,3"]  # GPU 4 has no partner: idle
    assert slots_for(None, ["0", "1", "2"], 1, "auto") == ["0", "1", "2"]
    assert slots_for(2, ["0", "1", "2"], 1, "auto") == ["0", "1"]
    assert slots_for(3, None, 1, "cpu") == ["", "", ""]  # CPU workers see no GPU
    with pytest.raises(RunDirError) as e:
        slots_for(None, ["0"], 2, "cuda")
    assert str(e.value) == "--nproc 2 needs 2 GPUs per run; --gpus gives 1"


def test_durations_and_torchrun_flags() -> None:
    assert [duration(s) for s in (12, 184, 7500)] == ["12s", "3m 04s", "2h 05m"]
    assert torchrun_args(2, 8, "gpu-node-01", "4242_3") == [
        "--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d", f"--rdzv-endpoint=gpu-node-01:{RDZV_PORT}",
        "--rdzv-id=repro-4242_3"]


@pytest.mark.parametrize("args, message", [
    (("--partition", "gpu"), "error: --partition is a SLURM setting: add --launcher slurm"),
    (("--nodes", "2", "--launcher", "local"), "error: --nodes is a SLURM setting: add --launcher slurm"),
    (("--jobs", "2", "--launcher", "local"),
     "error: --jobs and --gpus are for one box; with --launcher the scheduler places the runs"),
    (("--wait",), "error: --wait is for --launcher jobs (without it reproduce always waits)"),
    (("--gpus", "0", "--nproc", "2"), "error: --nproc 2 needs 2 GPUs per run; --gpus gives 1"),
])
def test_reproduce_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    rec = write_recipe(tmp_path, digits_recipe(), "tiny.toml")
    res = cli("reproduce", str(rec), "--root", str(tmp_path / "root"), *args)
    assert res.returncode == 2 and res.stderr.strip() == message
    assert not (tmp_path / "root" / "tiny").exists()


def test_launcher_slurm_submits_one_job_array(tmp_path: Path) -> None:
    """With fake sbatch/srun on PATH: the sbatch script submitit writes for two runs of 2 GPUs each."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path / "job.sh"}\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    recs = [str(write_recipe(tmp_path, digits_recipe(name=n), f"{n}.toml")) for n in ("tiny_a", "tiny_b")]
    res = cli("reproduce", *recs, "--root", str(tmp_path / "root"), "--launcher", "slurm", "--partition", "gpu",
              "--time", "2", "--account", "acct", "--nproc", "2",
              env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == ["tiny_a: submitted (slurm job 4242_0)",
                                           "tiny_b: submitted (slurm job 4242_1)"]
    script = (tmp_path / "job.sh").read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --account=acct",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --nodes=1", "#SBATCH --time=120", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@120"):
        assert line in script.splitlines(), line
    assert not (tmp_path / "root" / "tiny_a").exists()  # nothing runs here: the cluster starts the runs


def _interval(run: Path) -> tuple[float, float]:
    s = json.loads((run / "status.json").read_text())
    return parse_time(s["started"]), parse_time(s["finished"])


def _recipes(tmp_path: Path, names: tuple[str, ...], **overrides: object) -> list[str]:
    return [str(write_recipe(tmp_path, digits_recipe(name=n, run={"seed": i + 1}, **overrides), f"{n}.toml"))
            for i, n in enumerate(names)]


@pytest.mark.slow
def test_jobs_2_runs_two_at_a_time_and_reports_all(tmp_path: Path) -> None:
    recs = _recipes(tmp_path, ("tiny_a", "tiny_b", "tiny_c"), train={"epochs": 4})
    root, report = tmp_path / "root", tmp_path / "REPORT.md"
    res = cli("reproduce", *recs, "--jobs", "2", "--device", "cpu", "--root", str(root), "--report", str(report),
              timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = {n: next((root / n).iterdir()) for n in ("tiny_a", "tiny_b", "tiny_c")}
    assert all(read_run(r).state == "done" for r in runs.values())
    (a0, a1), (b0, b1) = _interval(runs["tiny_a"]), _interval(runs["tiny_b"])
    assert max(a0, b0) < min(a1, b1)  # the first two ran at the same time
    assert [ln.split(" on ")[0][9:] for ln in res.stdout.splitlines() if " start " in ln][:2] == [
        "start tiny_a", "start tiny_b"]
    text = report.read_text()
    assert all(f"| {n} | {runs[n].name} | done |" in text for n in runs)


@pytest.mark.slow
def test_two_reproduce_processes_train_each_run_once(tmp_path: Path) -> None:
    recs = _recipes(tmp_path, ("tiny_a", "tiny_b", "tiny_c"))
    root = tmp_path / "root"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*REPRO, "reproduce", *recs, "--device", "cpu", "--root", str(root), "--report",
                               str(tmp_path / f"R{i}.md")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (1, 2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for name in ("tiny_a", "tiny_b", "tiny_c"):
        (run,) = list((root / name).iterdir())  # one run directory each
        log = (run / "log.txt").read_text()
        assert log.count("on cpu (new)") == 1 and "resumed" not in log, log
        assert sum(f"{name}: done (" in out for out in outs) == 1, outs  # trained by exactly one of the two
        assert all(f"| {name} | {run.name} | done |" in (tmp_path / f"R{i}.md").read_text() for i in (1, 2))
    assert not list((root / ".claims").iterdir())


@pytest.mark.slow
def test_launcher_local_requeues_a_preempted_run_and_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    short, long = _recipes(tmp_path, ("tiny_a", "long_b"), train={"epochs": 10})
    root, env = tmp_path / "root", {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*REPRO, "reproduce", short, long, "--device", "cpu", "--root", str(root),
                             "--launcher", "local", "--wait", "--report", str(tmp_path / "R.md")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # preempt long_b once it has two epochs checkpointed
        status = next(iter((root / "long_b").glob("*/status.json")), None) if (root / "long_b").exists() else None
        try:
            s = json.loads(status.read_text()) if status else {}
        except ValueError:
            s = {}
        if s.get("epoch", 0) >= 2 and s.get("state") == "running":
            os.kill(s["host_pid"], signal.SIGUSR2)
            break
        time.sleep(0.05)
    else:
        pytest.fail("long_b never reached epoch 2")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    (run,) = list((root / "long_b").iterdir())
    log = (run / "log.txt").read_text()
    assert "killed: preempted (SIGUSR2); submitit requeues the job, which resumes the run" in log
    assert "on cpu (resumed)" in log and read_run(run).state == "done"
    ref = tmp_path / "ref"
    res = cli("run", long, "--device", "cpu", "--quiet", "--out", str(ref), env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    a = load_checkpoint(ref / "train" / "final.pt")["model"]
    b = load_checkpoint(run / "train" / "final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("epoch", "train_loss", "test_acc", "test_loss")
    assert [[r.get(k) for k in keys] for r in read_metrics(run)] == [
        [r.get(k) for k in keys] for r in read_metrics(ref)]
    assert read_run(next((root / "tiny_a").iterdir())).state == "done"
    assert "| long_b |" in (tmp_path / "R.md").read_text() and "| tiny_a |" in (tmp_path / "R.md").read_text()


NODE = """
import sys
from repro.farm import items_for
from repro.slurm import RunJob
(item,) = items_for([sys.argv[1]])
print(RunJob(sys.argv[2], "cpu", 1, nodes=2)(item)["state"])
"""


@pytest.mark.slow
def test_a_run_over_two_nodes_meets_at_node_0(tmp_path: Path) -> None:
    """Two processes posing as the two nodes of one submitit job (the env submitit sets): node 0 claims the run and
    names its directory, both start torchrun with the c10d rendezvous, one run of 2 processes results."""
    (rec,) = _recipes(tmp_path, ("tiny_a",))
    root = tmp_path / "root"
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    procs = []
    for node in (0, 1):
        env = {**os.environ, "SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "77", "SUBMITIT_LOCAL_NTASKS": "2",
               "SUBMITIT_LOCAL_JOB_NUM_NODES": "2", "SUBMITIT_LOCAL_NODEID": str(node),
               "SUBMITIT_LOCAL_GLOBALID": str(node), "SUBMITIT_LOCAL_LOCALID": "0", "REPRO_RDZV_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([REPRO[0], "-c", NODE, rec, str(root)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o.strip().splitlines()[-1] for o in outs] == ["done", "done"]
    (run,) = list((root / "tiny_a").iterdir())
    log = (run / "log.txt").read_text()
    assert "--nnodes=2" in log and "on cpu (new), 2 data-parallel processes" in log
    assert read_run(run).state == "done"
    assert json.loads((root / ".submitit" / "77.0.rundir.json").read_text()) == {"run_dir": str(run), "resume": False}
