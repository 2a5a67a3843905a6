"""`repro run`: choose or create the run directory, hold its lock, run the engine, record the outcome."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import dist, provenance
from engine.config import Recipe
from engine.device import resolve_device
from engine.errors import Terminated
from engine.io import append_text, write_text
from engine.runlog import NullProgress, Progress, RunLog, now
from engine.runner import run_recipe
from engine.trainer import TrainingDiverged
from repro.recipe import Resolved, load_resolved, to_toml
from repro.rundir import RunDirError, RunLock, latest_unfinished, new_run_dir, parse_time


@dataclass
class Outcome:
    """How one run ended."""

    run_dir: Path
    state: str  # done | failed | killed
    summary: dict[str, Any]
    error: str = ""


def prepare(res: Resolved, root: Path, out: str | None, resume: bool, smoke: bool) -> tuple[Path, bool]:
    """The run directory to use and whether it continues an earlier run."""
    name = res.recipe.name
    if out and Path(out).exists() and not Path(out).is_dir():
        raise RunDirError(f"{out}: --out names a file, not a directory")
    if resume:
        run_dir = Path(out) if out else latest_unfinished(root, name, res.tag)
        if run_dir is None:
            raise RunDirError(f"{root / name}: no unfinished run to resume")
        if not (run_dir / "recipe.toml").is_file():
            if out and (not run_dir.exists() or {p.name for p in run_dir.iterdir()} <= {".lock"}):
                run_dir.mkdir(parents=True, exist_ok=True)
                return run_dir, False  # killed before it wrote anything: start it afresh
            raise RunDirError(f"{run_dir}: not a run directory (no recipe.toml)")
        return run_dir, True
    if out:
        run_dir = Path(out)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise RunDirError(f"{run_dir}: already exists; use --resume to continue it or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, False
    return new_run_dir(root, name, res.tag, smoke), False


def execute(res: Resolved, *, root: Path, out: str | None = None, resume: bool = False, device: str = "auto",
            smoke: bool = False, progress: Progress | None = None, nproc: int = 1,
            torchrun: list[str] | None = None, sets: Sequence[str] = ()) -> Outcome:
    """Run one resolved recipe to the end (or to a failure, recorded in status.json); nproc > 1 runs it as
    nproc data-parallel processes through torchrun while this process holds the run directory's lock (`torchrun`:
    the multi-node flags that replace --standalone, see repro.slurm).

    Bad usage (a device that is not there, an --out that is a file) is refused before anything is written.
    `sets`: the --set overrides as given, recorded in provenance.json."""
    dev = resolve_device(device)
    run_dir, continuing = prepare(res, root, out, resume, smoke)
    with RunLock(run_dir) as lock, terminate_as_interrupt():
        if continuing:
            recipe = load_resolved(run_dir / "recipe.toml")
        else:
            recipe = res.recipe
            write_text(run_dir / "recipe.toml", to_toml(recipe))
        log = RunLog(run_dir, progress or NullProgress())
        if lock.removed:
            log.log(f"removed {len(lock.removed)} temp file(s) left by an interrupted write")
        started = log._status.get("started") if continuing else None
        segments = active_segments(log._status) if continuing else {}
        gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "none"
        tag = log._status.get("tag", res.tag) if continuing else res.tag
        log.status(state="running", recipe=recipe.name, tag=tag,
                   smoke=smoke or recipe.run.smoke or bool(log._status.get("smoke", False)),
                   profile="faithful" if recipe.run.faithful else "default",
                   started=started or now(), error=None, device=device, host_pid=os.getpid(), nproc=nproc, gpu=gpu,
                   **segments)
        record_session(run_dir, log, continuing, dev.type, sets, recipe, smoke, nproc)
        if nproc > 1 or torchrun:
            return _torchrun(run_dir, log, nproc, device, continuing, torchrun)
        return run_and_record(recipe, run_dir, log, device, continuing, dev=dev)


def record_session(run_dir: Path, log: RunLog, continuing: bool, device: str, sets: Sequence[str], recipe: Recipe,
                   smoke: bool, nproc: int) -> None:
    """Append this start or resume to provenance.json; a failure to learn the facts is a warning, never a failure."""
    try:
        entry = provenance.collect(kind="resume" if continuing else "start", device=device, sets=sets,
                                   faithful=recipe.run.faithful, smoke=smoke or recipe.run.smoke, world_size=nproc)
    except Exception as e:  # noqa: BLE001 - provenance describes the run; it must never stop it
        log.log(f"warning: provenance not recorded ({type(e).__name__}: {e})")
        return
    provenance.start_session(run_dir, entry)


def active_segments(status: dict) -> dict:
    """For a resume: `active_s`, the seconds the run ran before (its earlier segments, from started or the last
    resume to its last status write), and `resumed`, now; elapsed time and ETA then leave out the stopped gap."""
    before = parse_time(status.get("resumed")) or parse_time(status.get("started"))
    last = parse_time(status.get("updated"))
    ran = max(0.0, last - before) if before is not None and last is not None else 0.0
    prior = status.get("active_s") if status.get("resumed") else 0.0
    prior = prior if isinstance(prior, (int, float)) and not isinstance(prior, bool) else 0.0
    return {"active_s": round(prior + ran, 1), "resumed": now()}


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises Terminated (a KeyboardInterrupt), so a run stopped by `kill`, a scheduler
    or the TUI records itself as killed (resumable), as Ctrl-C does. Only the main thread can install it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_and_record(recipe: Recipe, run_dir: Path, log: RunLog, device: str, continuing: bool,
                   dev: torch.device | None = None) -> Outcome:
    """Run the engine and write the outcome into status.json (rank 0's job under DDP)."""
    try:
        dev = dev or resolve_device(device)
        world = dist.world()
        log.log(f"run {run_dir} on {dev} ({'resumed' if continuing else 'new'})"
                + (f", {world} data-parallel processes" if world > 1 else ""))
        summary = run_recipe(recipe, run_dir, log, device=dev, resume=continuing)
    except TrainingDiverged as e:
        return _fail(log, run_dir, str(e))
    except KeyboardInterrupt as e:
        log.progress.stop()
        why = getattr(e, "why", "terminated (SIGTERM)") if isinstance(e, Terminated) else "interrupted"
        log.status(state="killed", error=why)
        log.log(f"killed: {why}" + ("" if hasattr(e, "why") else "; continue with --resume"))
        raise
    except Exception as e:  # noqa: BLE001 - recorded, shown as one line, traceback in log.txt
        if log.enabled:
            append_text(run_dir / "log.txt", traceback.format_exc())
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return _fail(log, run_dir, msg, exc=e)
    log.status(state="done", progress=1.0, summary=summary, finished=now())
    return Outcome(run_dir, "done", summary)


def _torchrun(run_dir: Path, log: RunLog, nproc: int, device: str, continuing: bool,
              flags: list[str] | None = None) -> Outcome:
    """Launch `repro.worker` on nproc local processes (or one node's share of a multi-node run) and wait; a rank
    that dies fails the run."""
    flags = flags or ["--standalone", f"--nproc_per_node={nproc}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *flags, "-m", "repro.worker", str(run_dir),
           "--device", device] + (["--resume"] if continuing else [])
    log.log(f"launching {nproc} processes: {' '.join(cmd[2:])}")
    proc = subprocess.Popen(cmd)
    try:
        rc = proc.wait()
    except KeyboardInterrupt as e:  # pass the stop on to torchrun (which stops its workers), then record it
        proc.send_signal(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        RunLog(run_dir, log.progress).status(state="killed", error=getattr(e, "why", "terminated (SIGTERM)")
                                             if isinstance(e, Terminated) else "interrupted")
        raise
    status = RunLog(run_dir, enabled=True)
    state = status._status.get("state")
    if rc == 0 and state == "done":
        return Outcome(run_dir, "done", status._status.get("summary") or {})
    msg = status._status.get("error") if state == "failed" else None
    msg = msg or f"a worker process failed (torchrun exit code {rc}); see {run_dir / 'log.txt'}"
    status.status(state="failed", error=msg)
    return Outcome(run_dir, "failed", {}, msg)
def _fail(log: RunLog, run_dir: Path, msg: str, exc: BaseException | None = None) -> Outcome:
    log.progress.stop()
    log.status(state="failed", error=msg)
    log.log(f"failed: {msg}")
    out = Outcome(run_dir, "failed", {}, msg)
    out.exc = exc  # type: ignore[attr-defined]
    return out
