"""Run directories: where they go, the lock that keeps two runs out of one, and reading them back.

This module is the one reader of a run directory's files for the CLI, the report and the TUI: status.json
(`read_status`, `parse_status`), metrics.jsonl (`engine.runlog.parse_metrics`, `best_acc`), the lock (`read_lock`,
`is_locked`) and the listing of a root (`run_dirs`, `list_runs`). repro.tui.rundata caches around these
functions. Nothing here imports torch."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.io import clean_temp_files
from engine.provenance import read_provenance, short_form
from engine.runlog import read_metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KILLED_NOTE = "status says running but no process holds the run (it was stopped or died)"
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
    Never raises.
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
    except OSError:
        return False  # the system refuses the probe (e.g. no locks on this file system): nobody can hold it
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


# ---- status.json ------------------------------------------------------------------------------------
def parse_time(text: Any) -> float | None:
    """status.json's local ISO time ('2026-01-02T03:04:05') as epoch seconds; None when absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text[:19]).timestamp()  # naive: local time, as written
    except (ValueError, OverflowError, OSError):
        return None


def number(v: Any) -> float | None:
    """A JSON number as a float; None for anything else (a bool, a string, null)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


@dataclass
class Status:
    """A run's status.json as read: its object (empty when unusable), the run's state as recorded, and the error
    to show (the run's own, or why the file cannot be used)."""

    data: dict[str, Any] = field(default_factory=dict)
    state: str = "unknown"
    error: str = ""

    @property
    def stage(self) -> str:
        v = self.data.get("stage")
        return v if isinstance(v, str) else ("" if v is None else str(v))

    @property
    def progress(self) -> float:
        """The recorded fraction done, clamped to [0, 1]; 0 when absent or not a number."""
        x = number(self.data.get("progress"))
        return 0.0 if x is None or x != x else min(max(x, 0.0), 1.0)

    @property
    def started(self) -> float | None:
        return parse_time(self.data.get("started"))

    @property
    def ended(self) -> float | None:
        """When it finished, else when status.json was last written."""
        return parse_time(self.data.get("finished")) or parse_time(self.data.get("updated"))


def parse_status(raw: bytes | str) -> Status:
    """status.json's content as a Status; a file that is not a JSON object, or has no state, says why."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        return Status(state="unreadable", error=f"status.json is not valid JSON ({e})")
    if not isinstance(data, dict):
        return Status(state="unreadable", error=f"status.json holds a {type(data).__name__}, not an object "
                                                "(an older version?)")
    state = data.get("state")
    if not isinstance(state, str) or not state:
        return Status(data, "unknown", "status.json has no state (an older version?)")
    err = data.get("error")
    return Status(data, state, err if isinstance(err, str) else ("" if err is None else str(err)))


def read_status(run_dir: Path) -> Status:
    """A run directory's status.json as a Status; never raises (a missing or unreadable file says why)."""
    try:
        with open(Path(run_dir) / "status.json", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return Status(state="unknown", error="no status.json (half written, or never started)")
    except OSError as e:
        return Status(state="unreadable", error=f"status.json: {e.strerror or e}")
    return parse_status(raw)


def live_state(status: Status, locked: bool) -> tuple[str, str]:
    """(state, error) as shown: a run recorded as running whose lock nobody holds (`locked` False) was killed."""
    if status.state == "running" and not locked:
        return "killed", status.error or KILLED_NOTE
    return status.state, status.error


# ---- metrics.jsonl ----------------------------------------------------------------------------------
def eval_acc(record: dict[str, Any]) -> float | None:
    """The best held-out accuracy in one metrics record: any numeric *_acc but train_acc."""
    accs = [x for k, v in record.items() if k.endswith("_acc") and not k.startswith("train")
            and (x := number(v)) is not None]
    return max(accs) if accs else None


def best_acc(records: Iterable[dict[str, Any]], best: float | None = None) -> float | None:
    """The best held-out accuracy over the records (and `best`, the best of earlier ones)."""
    for rec in records:
        acc = eval_acc(rec)
        if acc is not None and (best is None or acc > best):
            best = acc
    return best


# ---- runs -------------------------------------------------------------------------------------------
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
    provenance: dict[str, Any] | None = None  # provenance.json's short form {commit, torch, gpu}; None without one

    @property
    def smoke(self) -> bool:
        """A smoke run by status.json or by its recipe.toml (which stays right when status.json is lost)."""
        return bool(self.status.get("smoke")) or recipe_is_smoke(self.path)

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "recipe": self.recipe, "run_id": self.run_id, "state": self.state,
                "stage": self.stage, "progress": self.progress, "best_acc": self.best, "error": self.error,
                "provenance": self.provenance}


def read_run(path: Path) -> RunInfo:
    """A run directory's state; never raises for a damaged directory (the state says why)."""
    path = Path(path)
    status = read_status(path)
    state, error = live_state(status, status.state == "running" and is_locked(path))
    return RunInfo(path=path, recipe=path.parent.name, run_id=path.name, state=state, stage=status.stage,
                   progress=status.progress, best=best_acc(read_metrics(path)), error=error, status=status.data,
                   provenance=short_form(read_provenance(path)))


def is_run_dir(path: Path) -> bool:
    """Whether a directory holds a run (its status.json or its recipe.toml)."""
    return (Path(path) / "status.json").exists() or (Path(path) / "recipe.toml").exists()


def run_dirs(root: Path) -> list[tuple[str, str, str]]:
    """(path, recipe, run id) of every directory <root>/<recipe>/<run>/ (hidden names skipped), by recipe and run;
    a directory that cannot be listed contributes nothing. Whether each holds a run is for the caller to ask. The
    paths stay strings: the TUI lists thousands of runs every second, and building Path objects would cost more
    than the listing itself."""
    def subdirs(path: Path | str) -> list[os.DirEntry]:
        try:
            with os.scandir(path) as it:
                return sorted((e for e in it if not e.name.startswith(".") and e.is_dir()), key=lambda e: e.name)
        except OSError:
            return []

    return [(run.path, recipe.name, run.name) for recipe in subdirs(root) for run in subdirs(recipe.path)]


def list_runs(root: Path) -> list[RunInfo]:
    """Every run directory under the root (<root>/<recipe>/<run-id>/ holding recipe.toml or status.json)."""
    return [read_run(Path(path)) for path, _, _ in run_dirs(root) if is_run_dir(Path(path))]


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
