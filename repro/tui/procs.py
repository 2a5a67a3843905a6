"""Launching, resuming and stopping real `repro run` processes that outlive the app.

A launched run is `python -m repro.cli run ...` in a session of its own (start_new_session), its output in
`<root>/<recipe>/<run-id>.launch.log` beside the run directory, REPRO_ROOT set to the app's root. Stopping
signals the run's process group: SIGTERM first, SIGKILL for good (after a grace period, or at once).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from repro.rundir import new_run_dir, read_lock

DEVICES = ("auto", "cpu", "cuda")
"""Every device a launch may name; the recipes screen offers those detect_devices() finds."""


@dataclass
class Launched:
    """A process the app started: its argv, its output file and the run directory when it is known."""

    argv: list[str]
    log: Path
    run_dir: Path | None
    proc: subprocess.Popen | None


def spawn(argv: Sequence[str], log: Path, root: Path) -> subprocess.Popen:
    """Start argv detached from the app (own session and process group), output appended to `log`."""
    env = dict(os.environ, REPRO_ROOT=str(Path(root).resolve()), PYTHONUNBUFFERED="1")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, close_fds=True)


def run_argv(recipe: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "repro.cli", "run", recipe, "--quiet", *extra]


def launch(root: Path, name: str, sets: Sequence[str], smoke: bool, device: str, runs: int, tag: str = "",
           faithful: bool = False) -> Launched:
    """Launch a recipe. A single run gets its directory made here (so the app can select it at once);
    a sweep (runs > 1) lets `repro run` make one directory per point."""
    root = Path(root)
    extra = [a for s in sets for a in ("--set", s)] + ["--device", device] + (["--smoke"] if smoke else []) + (
        ["--faithful"] if faithful else [])
    if runs == 1:
        run_dir = new_run_dir(root, name, tag, smoke)
        log = run_dir.parent / f"{run_dir.name}.launch.log"
        argv = run_argv(name, *extra, "--out", str(run_dir.resolve()))
    else:
        run_dir = None
        log = root / name / f"{time.strftime('%Y%m%d-%H%M%S')}-sweep{'-smoke' if smoke else ''}.launch.log"
        argv = run_argv(name, *extra)
    return Launched(argv, log, run_dir, spawn(argv, log, root))


def resume(root: Path, run_dir: Path, status: dict) -> Launched:
    """`repro run RECIPE --resume --out RUN_DIR` on the run's own device. A sweep point is resumed through
    its recipe.toml (the recipe name would expand the whole sweep, which --out refuses)."""
    run_dir = Path(run_dir)
    tag = status.get("tag") if isinstance(status.get("tag"), str) else ""
    recipe = str(run_dir / "recipe.toml") if tag else str(status.get("recipe") or run_dir.parent.name)
    device = status.get("device") if status.get("device") in DEVICES else "auto"
    argv = run_argv(recipe, "--resume", "--out", str(run_dir.resolve()), "--device", device)
    log = run_dir.parent / f"{run_dir.name}.launch.log"
    return Launched(argv, log, run_dir, spawn(argv, log, root))


def lock_pid(run_dir: Path) -> int | None:
    """The pid written into the run's .lock by the process holding it."""
    return read_lock(Path(run_dir) / ".lock")[0]



def signal_run(pid: int, sig: int) -> str:
    """Send `sig` to the run's process group (or to the process alone when it shares the app's group)."""
    if pid == os.getpid():
        raise PermissionError(f"pid {pid} is this app itself")
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return "the process is gone"
    if pgid == os.getpgrp():
        os.kill(pid, sig)  # never signal our own group
        return f"{signal.Signals(sig).name} sent to pid {pid}"
    os.killpg(pgid, sig)
    return f"{signal.Signals(sig).name} sent to process group {pgid}"


GPU_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/proc/driver/nvidia/gpus", "/dev/kfd", "/dev/dxg")
"""Device files a GPU driver creates; without any of them torch cannot see a GPU and no probe is needed."""


def detect_devices(timeout: float = 60.0) -> tuple[str, ...]:
    """The devices a launch can ask for here: auto and cpu, and cuda only when torch.cuda.is_available(). Asked
    of a child process (the app itself never imports torch), and only where a GPU driver's device files exist;
    call it off the app's thread."""
    if not any(os.path.exists(p) for p in GPU_NODES):
        return ("auto", "cpu")
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(int(torch.cuda.is_available()))"],
                             capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        has_cuda = out.returncode == 0 and out.stdout.strip().endswith("1")
    except (OSError, subprocess.TimeoutExpired):
        has_cuda = False
    return DEVICES if has_cuda else ("auto", "cpu")


def runs_whole_sweep(pid: int) -> bool | None:
    """Whether process `pid` is a `repro run` of a whole sweep (no --out: it runs the points one after another),
    read from /proc; None when that cannot be told (no /proc, process gone)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return b"run" in argv and b"--out" not in argv and b"--resume" not in argv
