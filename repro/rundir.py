"""Run directories: where they go, the lock that keeps two runs out of one, and reading them back."""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.runlog import read_metrics


class RunDirError(Exception):
    """A run directory that cannot be used as asked (in use, exists, missing); one line."""


def run_root(root: str | Path | None = None) -> Path:
    """--root, else $REPRO_ROOT, else ./checkpoints."""
    return Path(root or os.environ.get("REPRO_ROOT") or "checkpoints")


def new_run_dir(root: Path, recipe: str, tag: str = "", smoke: bool = False) -> Path:
    """checkpoints/<recipe>/<YYYYmmdd-HHMMSS>[-tag][-smoke], never an existing directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = "-".join(x for x in (stamp, tag, "smoke" if smoke else "") if x)
    parent = root / recipe
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        cand = parent / (base if n == 1 else f"{base}-{n}")
        try:
            cand.mkdir()
            return cand
        except FileExistsError:
            continue
    raise RunDirError(f"{parent}: cannot find a free run directory name")


class RunLock:
    """An exclusive flock on <run>/.lock held for the whole run; the kernel drops it if the process dies."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _read_pid(self.path)
            raise RunDirError(f"{self.path.parent}: another run is using this directory"
                              + (f" (pid {pid})" if pid else "")) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def is_locked(run_dir: Path) -> bool:
    """True while some live process holds the run's lock."""
    path = Path(run_dir) / ".lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@dataclass
class RunInfo:
    """What `repro runs` and `repro report` show about one run directory."""

    path: Path
    recipe: str
    run_id: str
    state: str
    stage: str
    progress: float
    best: float | None
    error: str
    status: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "recipe": self.recipe, "run_id": self.run_id, "state": self.state,
                "stage": self.stage, "progress": self.progress, "best_acc": self.best, "error": self.error}


def read_run(path: Path) -> RunInfo:
    """A run directory's state; never raises for a damaged directory (the state says why)."""
    path = Path(path)
    status: dict[str, Any] = {}
    error = ""
    try:
        status = json.loads((path / "status.json").read_text())
        if not isinstance(status, dict):
            raise ValueError("not a JSON object")
        state = str(status.get("state", "unknown"))
    except FileNotFoundError:
        state, error = "unknown", "no status.json"
    except (OSError, ValueError) as e:
        status, state, error = {}, "unreadable", f"status.json: {e}"
    try:
        progress = float(status.get("progress") or 0.0)
    except (TypeError, ValueError):
        progress = 0.0
    if state == "running" and not is_locked(path):
        state = "killed"
    accs = [v for r in read_metrics(path) for k, v in r.items() if k.endswith("_acc") and not k.startswith("train")
            and isinstance(v, (int, float))]
    return RunInfo(path=path, recipe=path.parent.name, run_id=path.name, state=state,
                   stage=str(status.get("stage") or ""), progress=progress,
                   best=max(accs) if accs else None, error=error or str(status.get("error") or ""), status=status)


def list_runs(root: Path) -> list[RunInfo]:
    """Every run directory under the root (<root>/<recipe>/<run-id>/ holding recipe.toml or status.json)."""
    if not root.is_dir():
        return []
    runs = []
    for recipe_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for run in sorted(p for p in recipe_dir.iterdir() if p.is_dir()):
            if (run / "status.json").exists() or (run / "recipe.toml").exists():
                runs.append(read_run(run))
    return runs


def latest_done(root: Path, recipe: str, tag: str = "") -> Path | None:
    """The newest finished full-size run of a recipe with this sweep tag (what `repro reproduce` skips)."""
    parent = root / recipe
    if not parent.is_dir():
        return None
    for run in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        info = read_run(run)
        if info.state == "done" and info.status.get("tag", "") == tag and not info.status.get("smoke"):
            return run
    return None


def latest_unfinished(root: Path, recipe: str, tag: str = "", smoke: bool | None = None) -> Path | None:
    """The newest run of a recipe (with this sweep tag) that did not finish and is not running now: what a bare
    --resume continues (smoke=True/False restricts it to smoke or full-size runs)."""
    parent = root / recipe
    if not parent.is_dir():
        return None
    for run in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        info = read_run(run)
        if smoke is not None and bool(info.status.get("smoke")) != smoke:
            continue
        if info.state not in ("done", "running") and info.status.get("tag", "") == tag and (
                run / "recipe.toml").exists():
            return run
    return None
