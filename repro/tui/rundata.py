"""Reading run directories for the app, fast and without ever raising: a cache around repro.rundir.

`RunScanner.scan()` lists every run under the root as `repro.rundir.list_runs` does (with rundir's listing,
status.json parser, metrics parser and lock probe), but keeps a cache per directory keyed by the (inode, mtime,
size) of status.json and reads metrics.jsonl incrementally from the byte offset it reached last time, so a refresh
of thousands of finished runs costs a few stat calls each.
`LogTail` follows a log by its byte offset: the first read takes the last lines from a bounded chunk at
the end, later reads only the bytes appended since. No module here imports torch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.provenance import read_provenance, short_form
from engine.runlog import parse_metrics
from repro.rundir import (
    Status,
    best_acc,
    eval_acc,
    is_locked,
    is_run_dir,
    live_state,
    number,
    parse_time,
    read_status,
    run_dirs,
)

TAIL_CHUNK = 64 * 1024  # bytes read backwards from the end of a log on first open
MAX_STEP = 1 << 20  # more new bytes than this between two reads: skip ahead to the last chunk


# ---- small readers ------------------------------------------------------------------------------------
def _key(st: os.stat_result | None) -> tuple[int, int, int] | None:
    return None if st is None else (st.st_ino, st.st_mtime_ns, st.st_size)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


class JsonlReader:
    """Reads a JSON-lines file incrementally: each call parses only the complete lines appended since the last.

    A file that was replaced (new inode) or shrank is read again from the start (`reset` becomes True), as
    happens when a resume rewrites metrics.jsonl. Torn or malformed lines are skipped.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.ino: int | None = None
        self.reset = False

    def read_new(self, st: os.stat_result | None = None) -> list[dict[str, Any]]:
        st = st if st is not None else _stat(str(self.path))
        self.reset = False
        if st is None:
            if self.offset or self.ino is not None:
                self.offset, self.ino, self.reset = 0, None, True
            return []
        if st.st_ino != self.ino or st.st_size < self.offset:
            self.reset = self.ino is not None
            self.offset, self.ino = 0, st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(st.st_size - self.offset)
        end = data.rfind(b"\n")
        if end < 0:
            return []  # only a partial line so far
        self.offset += end + 1
        return parse_metrics(data[:end].decode("utf-8", "replace"))


class LogTail:
    """Follows a text file by byte offset, never reading more than a bounded chunk at a time.

    `read_new()` returns the new complete lines: on the first call (or after the file was replaced or
    truncated) the last `lines` lines of the file, read backwards from its end; afterwards only what was
    appended. `bytes_read` counts every byte read, for the tests.
    """

    def __init__(self, path: Path, lines: int = 200, chunk: int = TAIL_CHUNK, max_step: int = MAX_STEP) -> None:
        self.path = Path(path)
        self.lines, self.chunk, self.max_step = lines, chunk, max_step
        self.offset: int | None = None
        self.ino: int | None = None
        self.bytes_read = 0

    def _read(self, start: int, end: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        self.bytes_read += len(data)
        return data

    def _last_lines(self, size: int) -> list[str]:
        start = max(0, size - self.chunk)
        data = self._read(start, size)
        end = data.rfind(b"\n")
        self.offset = start + end + 1 if end >= 0 else start
        body = data[: end + 1] if end >= 0 else b""
        if start > 0:  # the chunk began mid-line: drop that partial first line
            nl = body.find(b"\n")
            body = body[nl + 1:] if nl >= 0 else b""
        out = body.decode("utf-8", "replace").splitlines()
        return out[-self.lines:]

    def read_new(self) -> list[str]:
        st = _stat(str(self.path))
        if st is None:
            self.offset, self.ino = None, None
            return []
        if self.offset is None or st.st_ino != self.ino or st.st_size < self.offset:
            self.ino = st.st_ino
            return self._last_lines(st.st_size)
        if st.st_size - self.offset > self.max_step:
            skipped = st.st_size - self.offset
            lines = self._last_lines(st.st_size)
            return [f"... {skipped / 1e6:.1f} MB of log skipped ...", *lines]
        if st.st_size == self.offset:
            return []
        data = self._read(self.offset, st.st_size)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return data[:end].decode("utf-8", "replace").splitlines()


# ---- the run table ----------------------------------------------------------------------------------
@dataclass
class RunRow:
    """One run directory as the app shows it; `error` says why when it cannot be read."""

    path: Path
    recipe: str
    run_id: str
    state: str
    stage: str = ""
    epoch: int | None = None
    epochs: int | None = None
    progress: float = 0.0
    best: float | None = None
    started: float | None = None
    ended: float | None = None
    error: str = ""
    status: dict[str, Any] = field(default_factory=dict)
    final: float | None = None  # the held-out accuracy of the last evaluated epoch (`best` is the maximum)
    provenance: dict[str, Any] | None = None  # provenance.json's short form {commit, torch, gpu}, if it has one

    @property
    def key(self) -> str:
        return str(self.path)

    @property
    def smoke(self) -> bool:
        return bool(self.status.get("smoke"))

    @property
    def tag(self) -> str:
        t = self.status.get("tag")
        return t if isinstance(t, str) else ""

    @property
    def pid(self) -> int | None:
        p = self.status.get("pid")
        return p if isinstance(p, int) and not isinstance(p, bool) and p > 0 else None

    def elapsed(self, now: float) -> float | None:
        """Seconds of running: since `started`, or after a resume the earlier segments' `active_s` plus the time
        since `resumed` (the time a run sat stopped is not counted)."""
        resumed = parse_time(self.status.get("resumed"))
        start = resumed if resumed is not None else self.started
        if start is None:
            return None
        end = now if self.state == "running" else self.ended
        before = number(self.status.get("active_s")) if resumed is not None else None
        return None if end is None else max(0.0, end - start) + max(0.0, before or 0.0)

    def eta(self, now: float) -> float | None:
        """Remaining seconds, from the average pace so far (running runs with some progress only)."""
        el = self.elapsed(now)
        if self.state != "running" or el is None or not 0.0 < self.progress < 1.0:
            return None
        return el * (1.0 - self.progress) / self.progress


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    if s < 100 * 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def squeeze(text: str, width: int) -> str:
    """Shorten from the middle: 'freetickets_individual_wrn28x10_cifar10' -> 'freetickets_i…10_cifar10'."""
    if len(text) <= width:
        return text
    head = (width - 1) * 3 // 5
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def progress_bar(p: float, width: int = 6) -> str:
    p = min(max(p, 0.0), 1.0)
    full = int(p * width)
    return "█" * full + "░" * (width - full) + f" {100 * p:3.0f}%"


STOPPED_ERRORS = ("terminated", "interrupted", "preempted")
"""How a run that stopped on a signal (SIGTERM from `x`, a scheduler, Ctrl-C) words its error: shown as "stopped"."""


def shown_state(state: str, error: str) -> str:
    """A run recorded as killed by a signal it handled reads "stopped" (resumable, not a crash); "killed" stays for
    a run whose process vanished without a word."""
    if state == "killed" and error.lower().startswith(STOPPED_ERRORS):
        return "stopped"
    return state


def run_label(r: RunRow) -> str:
    """The run id without its sweep tag (the tag has its own column)."""
    return r.run_id.replace(f"-{r.tag}", "", 1) if r.tag else r.run_id


def row_cells(r: RunRow, now: float) -> tuple[str, ...]:
    """The text of a row's cells (recipe, run, tag, state, stage, epoch, progress, best, elapsed, ETA, note)."""
    epoch = f"{r.epoch}/{r.epochs}" if r.epoch is not None and r.epochs else ("" if r.epoch is None else str(r.epoch))
    stage = "" if r.state == "done" else r.stage  # a finished run's last stage (e.g. analysis:predict) is history
    return (squeeze(r.recipe, 18), run_label(r), r.tag, r.state, stage, epoch, progress_bar(r.progress),
            "-" if r.best is None else f"{r.best:.2f}", fmt_duration(r.elapsed(now)), fmt_duration(r.eta(now)),
            r.error.splitlines()[0][:200] if r.error else "")


@dataclass
class _Entry:
    status_key: tuple[int, int, int] | None = None
    status: Status = field(default_factory=Status)
    metrics: JsonlReader | None = None
    best: float | None = None
    final: float | None = None
    provenance: dict[str, Any] | None = None
    row: RunRow | None = None


class RunScanner:
    """Every run directory under a root, re-reading only what changed since the last scan.

    Not thread-safe: one scan at a time (the app runs it in one worker).
    """

    def __init__(self, root: Path, locked: Callable[[Path], bool] = is_locked) -> None:
        self.root = Path(root)
        self.locked = locked
        self._cache: dict[str, _Entry] = {}
        self.last_ms = 0.0

    def scan(self) -> list[RunRow]:
        t0 = time.perf_counter()
        rows = []
        seen = set()
        for path, recipe, run_id in run_dirs(self.root):
            try:
                row = self._read(path, recipe, run_id)
            except Exception as e:  # noqa: BLE001 - a run the app cannot read is shown, never fatal
                row = RunRow(Path(path), recipe, run_id, "unreadable", error=f"{type(e).__name__}: {e}")
            if row is not None:
                rows.append(row)
                seen.add(path)
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        rows.sort(key=lambda r: (r.run_id, r.recipe), reverse=True)  # newest first (run ids start with a time)
        self.last_ms = 1000 * (time.perf_counter() - t0)
        return rows

    def _read(self, path: str, recipe: str, run_id: str) -> RunRow | None:
        st = _stat(path + "/status.json")
        ent = self._cache.get(path)
        if st is None and ent is None and not is_run_dir(Path(path)):
            return None  # not (yet) a run directory
        if ent is None:
            ent = self._cache[path] = _Entry(metrics=JsonlReader(Path(path) / "metrics.jsonl"))
        key = _key(st)
        if ent.row is None or key != ent.status_key:
            ent.status_key = key
            ent.status = read_status(Path(path))
            # provenance.json changes only at a start, a resume or a stage's start, each of which writes status.json
            ent.provenance = short_form(read_provenance(Path(path)))
        elif ent.status.state != "running":
            # Unchanged and not running: nothing to read. (The engine rewrites status.json after every
            # metrics.jsonl append, so an unchanged status means unchanged metrics.)
            return ent.row
        recs = ent.metrics.read_new()  # type: ignore[union-attr]
        if ent.metrics.reset:  # type: ignore[union-attr]
            ent.best = ent.final = None
        ent.best = best_acc(recs, ent.best)
        for rec in recs:
            acc = eval_acc(rec)
            ent.final = acc if acc is not None else ent.final
        s = ent.status
        state, error = live_state(s, s.state == "running" and self.locked(Path(path)))
        d = s.data
        ent.row = RunRow(Path(path), recipe, run_id, shown_state(state, error), stage=s.stage,
                         epoch=_int(d.get("epoch")), epochs=_int(d.get("epochs")), progress=s.progress, best=ent.best,
                         started=s.started, ended=s.ended, error=error, status=d, final=ent.final,
                         provenance=ent.provenance)
        return ent.row


def provenance_text(short: dict[str, Any] | None) -> str:
    """The run pane's short provenance: "commit 1a2b3c4d5e-dirty  torch 2.5.1  NVIDIA H100"; "" without one."""
    if not short:
        return ""
    parts = [f"commit {short['commit']}" if short.get("commit") else "",
             f"torch {short['torch']}" if short.get("torch") else "", str(short.get("gpu") or "")]
    return "  ".join(p for p in parts if p)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def latest_by_recipe(rows: list[RunRow]) -> dict[str, RunRow]:
    """The newest run of each recipe (run ids begin with their start time)."""
    out: dict[str, RunRow] = {}
    for r in rows:
        cur = out.get(r.recipe)
        if cur is None or r.run_id > cur.run_id:
            out[r.recipe] = r
    return out


# ---- curves of one run ---------------------------------------------------------------------------------
CURVES = {
    "loss": ("train_loss", "test_loss", "val_loss"),
    "accuracy": ("train_acc", "test_acc", "val_acc"),
    "learning rate": ("lr",),
    "density": ("density",),
}


def curves(records: list[dict[str, Any]]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Per chart, per metric: (x, y) with x counting epochs across stages (final test-only records skipped)."""
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {c: {} for c in CURVES}
    x = 0
    for rec in records:
        if rec.get("final"):
            continue
        x += 1
        for chart, keys in CURVES.items():
            for k in keys:
                v = number(rec.get(k))
                if v is not None and v == v and abs(v) != float("inf"):
                    xs, ys = out[chart].setdefault(k, ([], []))
                    xs.append(float(x))
                    ys.append(v)
    return out
