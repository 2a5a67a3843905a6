"""provenance.json: what produced a run — code version, libraries, hardware, command line, seeds, determinism.

One entry per start or resume in `sessions`, appended when the run takes its directory over; the runner adds each
stage's seeds to the current entry as it seeds the stage. Collecting never fails a run: what cannot be learned
(no git, no GPU, an odd platform) is null. Module level is torch-free: the CLI and the TUI read these files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from engine.io import write_json
from engine.runlog import now

FILE = "provenance.json"
VERSION = 1
SOURCE_DIR = Path(__file__).resolve().parent.parent
"""The checkout the code runs from: the folder holding engine/ and repro/ (a git work tree, or site-packages)."""
GIT_TIMEOUT_S = 10.0


def _git(args: list[str], cwd: Path) -> bytes | None:
    """A git command's stdout in `cwd`; None when git is missing, fails or hangs."""
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def git_info(source: Path | None = None) -> dict[str, Any]:
    """{commit, dirty, diff_sha256} of the checkout at `source` (default SOURCE_DIR; dirty: `git diff HEAD` is not
    empty, its hash then); all null when `source` is not the top of a git work tree (an installed copy) or git is
    unavailable."""
    none: dict[str, Any] = {"commit": None, "dirty": None, "diff_sha256": None}
    source = SOURCE_DIR if source is None else Path(source)
    top = _git(["rev-parse", "--show-toplevel"], source)
    if top is None or Path(top.decode().strip()).resolve() != Path(source).resolve():
        return none  # e.g. site-packages inside some other repository's tree: its commit is not ours
    head = _git(["rev-parse", "HEAD"], source)
    diff = _git(["diff", "HEAD", "--no-ext-diff", "--binary"], source)
    if head is None or diff is None:
        return none
    return {"commit": head.decode().strip(), "dirty": bool(diff),
            "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None}


def _version(dist_name: str) -> str | None:
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    """/proc/cpuinfo's first "model name", else platform.processor(); None when neither says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def host_hash() -> str:
    """The first 12 hex digits of the SHA-256 of the host name: tells hosts apart without naming them."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


def _torch_facts() -> dict[str, Any]:
    """Versions of torch and its CUDA stack, the GPUs and the deterministic-algorithm settings."""
    import torch  # deferred: this module is read by the torch-free CLI and TUI

    nccl = None
    try:
        v = torch.cuda.nccl.version()
        nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:  # noqa: BLE001 - a CPU build has no NCCL; any failure means "not known"
        nccl = None
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001
        cudnn = None
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        gpu = torch.cuda.get_device_name(0) if count else None
    except Exception:  # noqa: BLE001 - a broken driver is "no GPU" here; the run says more if it needs one
        count, gpu = 0, None
    return {
        "torch": str(torch.__version__), "cuda": torch.version.cuda, "cudnn": cudnn, "nccl": nccl,
        "gpu": gpu, "gpu_count": count,
        "deterministic": {
            "algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        },
    }


def collect(*, kind: str, device: str, argv: Sequence[str] | None = None, sets: Sequence[str] = (),
            faithful: bool = False, smoke: bool = False, world_size: int = 1) -> dict[str, Any]:
    """One session entry: `kind` is "start" or "resume", `device` the one the run uses (cpu, cuda)."""
    import numpy as np  # deferred: the CLI's listings read this module and start without numpy

    return {
        "kind": kind, "time": now(), "repro": _version("repro"), "git": git_info(),
        "python": platform.python_version(), "torchvision": _version("torchvision"), "numpy": np.__version__,
        **_torch_facts(), "device": device, "cpu": cpu_model(), "host": host_hash(), "world_size": world_size,
        "argv": list(sys.argv if argv is None else argv), "sets": list(sets), "faithful": faithful, "smoke": smoke,
        "seeds": {},
    }


def read_provenance(run_dir: Path) -> dict[str, Any] | None:
    """The run's provenance.json as an object with a list of sessions; None when absent or unreadable."""
    try:
        data = json.loads((Path(run_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("sessions"), list):
        return None
    return data


def start_session(run_dir: Path, entry: dict[str, Any]) -> None:
    """Append a session to provenance.json (atomically; a missing or unreadable file starts a new list)."""
    data = read_provenance(run_dir) or {"version": VERSION, "sessions": []}
    data["sessions"].append(entry)
    write_json(Path(run_dir) / FILE, data)


def record_stage(run_dir: Path, stage: str, seeds: Any, world_size: int | None = None) -> None:
    """Add the seeds stage `stage` was just seeded with (a dataclass or a dict) to the current session; nothing
    when the run has no provenance.json (the engine driven without `repro run`)."""
    data = read_provenance(run_dir)
    if data is None or not data["sessions"] or not isinstance(data["sessions"][-1], dict):
        return
    session = data["sessions"][-1]
    seeds_map = session.get("seeds") if isinstance(session.get("seeds"), dict) else {}
    seeds_map[stage] = asdict(seeds) if is_dataclass(seeds) else dict(seeds)
    session["seeds"] = seeds_map
    if world_size is not None:
        session["world_size"] = world_size
    write_json(Path(run_dir) / FILE, data)


def short_form(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """{commit, torch, gpu} of the latest session: the commit's first 10 digits (+ "-dirty"), the torch version,
    the GPU model the run used ("cpu" when it ran on the CPU); None without provenance."""
    if not data or not data.get("sessions") or not isinstance(data["sessions"][-1], dict):
        return None
    s = data["sessions"][-1]
    git = s.get("git") if isinstance(s.get("git"), dict) else {}
    commit = git.get("commit")
    if isinstance(commit, str):
        commit = commit[:10] + ("-dirty" if git.get("dirty") else "")
    else:
        commit = None
    gpu = s.get("gpu") if str(s.get("device", "")).startswith("cuda") else "cpu"
    return {"commit": commit, "torch": s.get("torch"), "gpu": gpu}
