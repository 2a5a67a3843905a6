"""`repro reproduce --launcher slurm|local`: the runs as submitit jobs (a SLURM job array, or submitit's local
executor on the same code path), each preemptible: SIGUSR2 (SLURM's warning before a time limit, and submitit's
preemption signal) or, under SLURM, SIGTERM stops the run the way Ctrl-C does (recorded as killed, its last epoch
checkpoint kept, the claim released), then submitit requeues the job, which resumes the run exactly where its
checkpoints left it.

ImageNet recipes can span `--nodes` nodes: node 0 claims the run and makes its directory, tells the other nodes which
directory through a small file in the submitit folder, and every node starts torchrun with the c10d rendezvous on
node 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import submitit

from engine.errors import Terminated
from engine.io import write_json
from repro.claims import Claim, claim_path
from repro.farm import Item, Result, done_already, resolve, run_item
from repro.rundir import latest_unfinished, new_run_dir

RDZV_PORT = int(os.environ.get("REPRO_RDZV_PORT", "29500"))
RDZV_WAIT_S = 600.0


class Preempted(Terminated):
    """SIGUSR2 (or SIGTERM under SLURM) in a submitit job: stop like a kill, then requeue."""

    signum = int(signal.SIGUSR2)
    why = "preempted (SIGUSR2); submitit requeues the job, which resumes the run"


@dataclass(frozen=True)
class Slurm:
    """What `repro reproduce --launcher slurm` asks of the cluster."""

    partition: str | None = None
    gpus_per_node: int = 1
    nodes: int = 1
    hours: float = 24.0
    account: str | None = None
    cpus_per_gpu: int = 8
    parallelism: int = 256


@contextlib.contextmanager
def preemptible(slurm: bool) -> Iterator[Any]:
    """Within the block SIGUSR2 (and SIGTERM under SLURM) raise Preempted; yields submitit's own USR2 handler
    (checkpoint and requeue), which the caller invokes once the run has stopped cleanly."""
    requeue = signal.getsignal(signal.SIGUSR2)

    def handler(signum: int, frame: object) -> None:
        raise Preempted()

    sigs = [signal.SIGUSR2] + ([signal.SIGTERM] if slurm else [])
    previous = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield requeue
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job; on a requeue submitit calls it again with the same item (checkpoint() is
    Checkpointable's: resubmit self with the same arguments) and run_item resumes the run."""

    def __init__(self, root: str, device: str, nproc: int, nodes: int = 1) -> None:
        self.root, self.device, self.nproc, self.nodes = str(root), device, nproc, nodes

    def __call__(self, item: Item) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        on_slurm = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
        with preemptible(on_slurm) as requeue:
            try:
                if env.num_nodes > 1:
                    result = self._multinode(item, env)
                else:
                    result = run_item(item, Path(self.root), device=self.device, nproc=self.nproc,
                                      owner=f"submitit:{env.job_id}")
            except Terminated as e:  # Preempted, or SIGTERM caught by the run's own handler (execute's)
                if not (isinstance(e, Preempted) or on_slurm):
                    raise  # a plain kill of a local job: the run is recorded killed, no requeue
                print(f"{item.label}: preempted; requeueing", flush=True)
                if callable(requeue):
                    requeue(signal.SIGUSR2, None)  # submitit: checkpoint() (resubmit self), requeue, exit
                raise
        print(f"{item.label}: {result.state}" + (f" ({result.run_dir})" if result.run_dir else "")
              + (f": {result.error}" if result.error else ""), flush=True)
        if result.state == "failed":
            raise RuntimeError(f"{item.label}: {result.error}")
        out = asdict(result)
        out["item"] = asdict(item)
        return out

    # -- several nodes: torchrun's c10d rendezvous on node 0 -------------------------------------------------------

    def _multinode(self, item: Item, env: submitit.JobEnvironment) -> Result:
        folder = Path(self.root) / ".submitit"
        note = folder / f"{env.job_id}.{os.environ.get('SLURM_RESTART_COUNT', '0')}.rundir.json"
        torchrun = torchrun_args(self.nodes, self.nproc, env.hostnames[0], env.job_id)
        if env.global_rank != 0:
            deadline = time.monotonic() + RDZV_WAIT_S
            while not note.exists():
                if time.monotonic() > deadline:
                    return Result(item, "failed", error=f"node {env.node}: node 0 never named the run directory")
                time.sleep(2)
            info = json.loads(note.read_text())
            if info.get("skip"):
                return Result(item, "skipped", info.get("run_dir"))
            cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun, "-m", "repro.worker", info["run_dir"],
                   "--device", self.device] + (["--resume"] if info["resume"] else [])
            rc = subprocess.call(cmd)
            return Result(item, "done" if rc == 0 else "failed", info["run_dir"],
                          "" if rc == 0 else f"node {env.node}: torchrun exit code {rc}")
        root = Path(self.root)
        done = done_already(root, item)
        claim = Claim(claim_path(root, item.name, item.tag, item.smoke), f"submitit:{env.job_id}")
        if done is not None or not claim.acquire():
            write_json(note, {"skip": True, "run_dir": str(done) if done else None})
            return Result(item, "skipped" if done else "elsewhere", str(done) if done else None,
                          "" if done else f"claimed by {claim.holder}")
        try:
            from repro.launch import execute  # deferred: torch

            unfinished = latest_unfinished(root, item.name, item.tag, smoke=item.smoke)
            run_dir = unfinished or new_run_dir(root, item.name, item.tag, item.smoke)
            write_json(note, {"run_dir": str(run_dir), "resume": unfinished is not None})
            out = execute(resolve(item), root=root, out=str(run_dir), resume=unfinished is not None,
                          device=self.device, smoke=item.smoke, nproc=self.nproc, torchrun=torchrun)
            return Result(item, out.state, str(out.run_dir), out.error)
        finally:
            claim.release()


def torchrun_args(nodes: int, nproc: int, master: str, job_id: str) -> list[str]:
    """torchrun's flags for every node of a multi-node run (replacing --standalone); the c10d rendezvous hands out
    the ranks, and rank 0 (wherever it lands) writes the run directory on the shared file system."""
    return [f"--nnodes={nodes}", f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={master}:{RDZV_PORT}", f"--rdzv-id=repro-{job_id}"]


def executor(root: Path, launcher: str, slurm: Slurm, *, nodes: int, gpus: int) -> submitit.Executor:
    """A submitit executor for runs that each take `nodes` nodes of `gpus` GPUs."""
    folder = Path(root) / ".submitit" / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster="local" if launcher == "local" else "slurm")
    params: dict[str, Any] = {"timeout_min": max(1, round(slurm.hours * 60)), "tasks_per_node": 1,
                              "name": "repro"}
    if launcher == "local":
        params.update(gpus_per_node=gpus)
    else:
        params.update(nodes=nodes, gpus_per_node=gpus, cpus_per_task=max(1, slurm.cpus_per_gpu * max(gpus, 1)),
                      slurm_array_parallelism=slurm.parallelism, slurm_signal_delay_s=120,
                      slurm_additional_parameters={"requeue": True})
        if slurm.partition:
            params["slurm_partition"] = slurm.partition
        if slurm.account:
            params["slurm_account"] = slurm.account
    ex.update_parameters(**params)
    return ex


def submit(items: Sequence[Item], root: Path, launcher: str, slurm: Slurm, *, device: str,
           nproc: int) -> list[tuple[Item, submitit.Job]]:
    """Submit every item (one array per shape: ImageNet recipes over `slurm.nodes` nodes, the rest on one node);
    returns at once with the jobs."""
    groups: dict[tuple[int, int], list[Item]] = {}
    for item in items:
        multi = item.dataset == "imagenet" and slurm.nodes > 1 and launcher == "slurm"
        key = (slurm.nodes, slurm.gpus_per_node) if multi else (1, nproc)
        groups.setdefault(key, []).append(item)
    out: list[tuple[Item, submitit.Job]] = []
    for (nodes, gpus), group in groups.items():
        ex = executor(root, launcher, slurm, nodes=nodes, gpus=gpus if device != "cpu" else 0)
        job = RunJob(str(Path(root).resolve()), device, gpus, nodes)
        jobs = ex.map_array(job, group)
        out.extend(zip(group, jobs))
    return out
