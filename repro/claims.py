"""Claims: the file that says "this worker trains this run" before the run directory even exists.

Several `repro reproduce` processes (on several nodes sharing a file system) may work through one list. Before a
worker starts or resumes a run it creates `<root>/.claims/<recipe>[-tag][-smoke].claim` with O_CREAT|O_EXCL, which
is atomic on local file systems and on NFS (v3 and later): exactly one worker wins. The winner keeps the file's mtime
fresh (a heartbeat thread) and removes the file when the run ends. A claim is taken over when its holder is gone: on
the same host its pid is no longer alive; from another host its heartbeat is older than `stale_s`; a requeued SLURM
job (same `owner`) takes its own claim back at once. The take-over renames the old file away first (rename is
atomic: of two workers taking over, one wins), then claims afresh. Every claim carries a random token: that, not
the inode number (which the file system reuses), is how a worker knows a claim file is still its own.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from repro.rundir import pid_alive

HEARTBEAT_S = 30.0
STALE_S = float(os.environ.get("REPRO_CLAIM_STALE_S", "300"))
"""A claim whose heartbeat is older than this (and whose holder is on another host) belongs to a dead worker."""


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as its file records it."""

    host: str
    pid: int
    owner: str
    since: str
    age_s: float
    token: str = ""

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid}" + (f", {self.owner}" if self.owner != f"{self.host}:{self.pid}" else "")


def claim_path(root: Path, recipe: str, tag: str = "", smoke: bool = False) -> Path:
    """Where the claim of one run (a recipe and its sweep tag) lives."""
    name = "-".join(x for x in (recipe, tag, "smoke" if smoke else "") if x)
    return Path(root) / ".claims" / f"{name}.claim"


def default_owner() -> str:
    """The identity that survives a requeue: the SLURM job (array task) when there is one, else host:pid."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        return f"slurm:{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm:{os.environ['SLURM_JOB_ID']}"
    return f"{socket.gethostname()}:{os.getpid()}"


def read_holder(path: Path) -> Holder | None:
    """The holder a claim file records, or None when there is no file (a damaged one reads as an anonymous holder,
    so it goes stale and is taken over rather than blocking the run for ever)."""
    try:
        st = os.stat(path)
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        host, pid, owner, since = str(data["host"]), int(data["pid"]), str(data["owner"]), str(data["since"])
        token = str(data.get("token", ""))
    except (ValueError, KeyError, TypeError):
        host, pid, owner, since, token = "?", 0, "?", "?", text[:64]
    return Holder(host, pid, owner, since, time.time() - st.st_mtime, token)


def is_stale(holder: Holder, owner: str, stale_s: float = STALE_S) -> bool:
    """Whether a claim's holder is gone (or is this very job, requeued)."""
    if holder.owner == owner:
        return True
    if holder.host == socket.gethostname() and holder.pid and holder.pid != os.getpid():
        return not pid_alive(holder.pid)
    return holder.age_s > stale_s


class Claim:
    """One run's claim: `acquire()` is True when this worker may train the run; `release()` when it is over."""

    def __init__(self, path: Path, owner: str | None = None, heartbeat_s: float = HEARTBEAT_S,
                 stale_s: float | None = None) -> None:
        self.path = Path(path)
        self.owner = owner or default_owner()
        self.heartbeat_s = heartbeat_s
        self.stale_s = STALE_S if stale_s is None else stale_s
        self.holder: Holder | None = None  # who holds it, when acquire() lost
        self.took_over: Holder | None = None  # whose dead claim acquire() took over
        self._token: str | None = None  # what our claim file says: inode numbers are reused, tokens are not
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        token = uuid.uuid4().hex
        try:
            os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "owner": self.owner,
                                     "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "token": token}).encode())
            os.fsync(fd)
            self._token = token
        finally:
            os.close(fd)
        return True

    def acquire(self) -> bool:
        """Claim the run; False (with `holder` set) when a live worker holds it."""
        for _ in range(5):
            if self._create():
                self._start_heartbeat()
                return True
            holder = read_holder(self.path)
            if holder is None:
                continue
            if not is_stale(holder, self.owner, self.stale_s):
                self.holder = holder
                return False
            aside = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}.stale")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue  # another worker took it over first
            moved = read_holder(aside)
            if moved is None or moved.token != holder.token:
                # between our look and our rename another worker took the dead claim over and made a new one: put
                # theirs back (link fails if a third claim appeared; then theirs is lost but that one holds the run)
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                os.unlink(aside)
                continue
            os.unlink(aside)
            self.took_over = holder
        self.holder = read_holder(self.path)
        return False

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        self._beat = threading.Thread(target=beat, name=f"claim-heartbeat {self.path.name}", daemon=True)
        self._beat.start()

    def mine(self) -> bool:
        """Whether the claim file is still the one this worker created."""
        try:
            held = read_holder(self.path)
        except OSError:
            return False
        return self._token is not None and held is not None and held.token == self._token

    def release(self) -> None:
        """Stop the heartbeat and remove the claim (only if it is still ours)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
        if self.mine():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._token = None
