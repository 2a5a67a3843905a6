"""Run directories: where they go, the lock that keeps two runs out of one, and reading them back."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.io import clean_temp_files
from engine.runlog import read_metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOCK_WAIT_S = 0.5
"""How long acquiring a run's lock retries before refusing: a listing's probe holds it for microseconds, a run
for its whole life."""


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
    """An exclusive flock on <run>/.lock held for the whole run; the kernel drops it if the process dies.

    Acquiring it is the moment a run (or `repro analyze`) takes the directory over, so it also refuses a directory
    holding symbolic links (a run directory received from someone else must not make us write elsewhere) and
    removes the temp files that killed atomic writes left behind (`removed`).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None
        self.removed: list[Path] = []

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP or self.path.is_symlink():
                raise RunDirError(f"{self.path}: is a symbolic link; repro never writes through links "
                                  "(remove it)") from None
            raise RunDirError(f"{self.path}: cannot open the run's lock ({e.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            raise RunDirError(f"{self.path}: is a hard link to another file; repro never writes through links "
                              "(remove it)")
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.005)
                    continue
                os.close(fd)
                pid = read_lock(self.path)[0]
                raise RunDirError(f"{self.path.parent}: another run is using this directory"
                                  + (f" (pid {pid})" if pid else "")) from None
        try:
            check_no_links(self.path.parent)
        except RunDirError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}".encode())
        self.fd = fd
        self.removed = clean_temp_files(self.path.parent)
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


def check_no_links(run_dir: Path) -> None:
    """Refuse a run directory with a symbolic link anywhere inside it (the directory's own path may be one)."""
    for dirpath, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise RunDirError(f"{p}: is a symbolic link; repro never writes through links in a run directory "
                                  "(remove it, or copy the run without links)")


def read_lock(path: Path) -> tuple[int | None, str | None]:
    """The (pid, host) a lock file records ("pid host"; older runs wrote the pid alone); never follows a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None, None
    try:
        words = os.read(fd, 512).decode(errors="replace").split()
    finally:
        os.close(fd)
    try:
        pid = int(words[0]) if words else None
    except ValueError:
        return None, None
    return (pid or None), (words[1] if len(words) > 1 else None)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has that pid (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    except OSError:
        return False
    return True


def is_locked(run_dir: Path) -> bool:
    """True while some live process holds the run's lock.

    Listings call this for every run, often, so it must never make a starting run fail to take its lock: a lock
    whose recorded process (on this host) is gone is free without touching it; only a live pid, or one recorded
    on another host, is confirmed with a shared-lock probe (and acquiring retries for LOCK_WAIT_S anyway).
    """
    path = Path(run_dir) / ".lock"
    pid, host = read_lock(path)
    if pid is None:
        return False
    if (host is None or host == socket.gethostname()) and not pid_alive(pid):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def recipe_is_smoke(run_dir: Path) -> bool:
    """Whether the run's recipe.toml was resolved under --smoke (`[run] smoke = true`); False when unreadable."""
    try:
        with open(Path(run_dir) / "recipe.toml", "rb") as f:
            run = tomllib.load(f).get("run", {})
    except (OSError, ValueError):
        return False
    return isinstance(run, dict) and run.get("smoke") is True


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

    @property
    def smoke(self) -> bool:
        """A smoke run by status.json or by its recipe.toml (which stays right when status.json is lost)."""
        return bool(self.status.get("smoke")) or recipe_is_smoke(self.path)

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
        if info.state == "done" and info.status.get("tag", "") == tag and not info.smoke:
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
        if smoke is not None and info.smoke != smoke:
            continue
        if info.state not in ("done", "running") and info.status.get("tag", "") == tag and (
                run / "recipe.toml").exists():
            return run
    return None
