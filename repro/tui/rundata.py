"""Reading run directories for the app, fast and without ever raising.

`RunScanner.scan()` lists every run under the root the way `repro.rundir.list_runs` does, but keeps a cache
per directory keyed by the (inode, mtime, size) of status.json and reads metrics.jsonl incrementally from the
byte offset it reached last time, so a refresh of thousands of finished runs costs a few stat calls each.
`LogTail` follows a log by its byte offset: the first read takes the last lines from a bounded chunk at
the end, later reads only the bytes appended since. No module here imports torch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from repro.rundir import is_locked

TAIL_CHUNK = 64 * 1024  # bytes read backwards from the end of a log on first open
MAX_STEP = 1 << 20  # more new bytes than this between two reads: skip ahead to the last chunk
STATES = ("running", "done", "failed", "killed", "unknown", "unreadable")


# ---- small readers ------------------------------------------------------------------------------------
def _key(st: os.stat_result | None) -> tuple[int, int, int] | None:
    return None if st is None else (st.st_ino, st.st_mtime_ns, st.st_size)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def parse_time(text: Any) -> float | None:
    """status.json's local ISO time ('2026-01-02T03:04:05') as epoch seconds; None when absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text[:19]).timestamp()  # naive: local time, as written
    except (ValueError, OverflowError, OSError):
        return None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def eval_acc(record: dict[str, Any]) -> float | None:
    """The best held-out accuracy in one metrics record (as read_run: any numeric *_acc but train_acc)."""
    best = None
    for k, v in record.items():
        if k.endswith("_acc") and not k.startswith("train"):
            x = _num(v)
            if x is not None and (best is None or x > best):
                best = x
    return best


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
        out = []
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


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
        if self.started is None:
            return None
        end = now if self.state == "running" else self.ended
        return None if end is None else max(0.0, end - self.started)

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


def row_cells(r: RunRow, now: float) -> tuple[str, ...]:
    """The text of a row's cells (recipe, run, state, stage, epoch, progress, best, elapsed, ETA, note)."""
    epoch = f"{r.epoch}/{r.epochs}" if r.epoch is not None and r.epochs else ("" if r.epoch is None else str(r.epoch))
    return (squeeze(r.recipe, 20), r.run_id, r.state, r.stage, epoch, progress_bar(r.progress),
            "-" if r.best is None else f"{r.best:.2f}", fmt_duration(r.elapsed(now)), fmt_duration(r.eta(now)),
            r.error.splitlines()[0][:200] if r.error else "")


@dataclass
class _Entry:
    status_key: tuple[int, int, int] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    state: str = "unknown"
    error: str = ""
    started: float | None = None
    ended: float | None = None
    metrics: JsonlReader | None = None
    best: float | None = None
    row: RunRow | None = None


def _is_locked(path: Path) -> bool:
    try:
        return is_locked(path)
    except OSError:
        return False


class RunScanner:
    """Every run directory under a root, re-reading only what changed since the last scan.

    Not thread-safe: one scan at a time (the app runs it in one worker).
    """

    def __init__(self, root: Path, locked: Callable[[Path], bool] = _is_locked) -> None:
        self.root = Path(root)
        self.locked = locked
        self._cache: dict[str, _Entry] = {}
        self.last_ms = 0.0

    def run_dirs(self) -> list[tuple[str, str, str]]:
        """(path, recipe, run_id) of every <root>/<recipe>/<run>/ holding status.json or recipe.toml."""
        out = []
        try:
            recipe_dirs = [e for e in os.scandir(self.root) if not e.name.startswith(".") and e.is_dir()]
        except OSError:
            return []
        for rd in recipe_dirs:
            try:
                runs = [e for e in os.scandir(rd.path) if not e.name.startswith(".") and e.is_dir()]
            except OSError:
                continue
            for e in runs:
                out.append((e.path, rd.name, e.name))
        return out

    def scan(self) -> list[RunRow]:
        t0 = time.perf_counter()
        rows = []
        seen = set()
        for path, recipe, run_id in self.run_dirs():
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
        if st is None and ent is None and not os.path.exists(path + "/recipe.toml"):
            return None  # not (yet) a run directory
        if ent is None:
            ent = self._cache[path] = _Entry(metrics=JsonlReader(Path(path) / "metrics.jsonl"))
        key = _key(st)
        changed = ent.row is None or key != ent.status_key
        if changed:
            ent.status_key = key
            self._read_status(ent, path, st)
        elif ent.state != "running":
            # Unchanged and not running: nothing to read. (The engine rewrites status.json after every
            # metrics.jsonl append, so an unchanged status means unchanged metrics.)
            return ent.row
        recs = ent.metrics.read_new()  # type: ignore[union-attr]
        if ent.metrics.reset:  # type: ignore[union-attr]
            ent.best = None
        for rec in recs:
            acc = eval_acc(rec)
            if acc is not None and (ent.best is None or acc > ent.best):
                ent.best = acc
        s = ent.status
        state = ent.state
        if state == "running" and not self.locked(Path(path)):
            state = "killed"  # the process died without saying so (SIGKILL, SIGTERM, a crash)
        error = ent.error or ("status says running but no process holds the run (it was stopped or died)"
                              if state != ent.state else "")
        ent.row = RunRow(Path(path), recipe, run_id, state, stage=_str(s.get("stage")), epoch=_int(s.get("epoch")),
                         epochs=_int(s.get("epochs")), progress=_progress(s.get("progress")), best=ent.best,
                         started=ent.started, ended=ent.ended, error=error, status=s)
        return ent.row

    @staticmethod
    def _read_status(ent: _Entry, path: str, st: os.stat_result | None) -> None:
        ent.status, ent.error, ent.started, ent.ended = {}, "", None, None
        if st is None:
            ent.state, ent.error = "unknown", "no status.json (half written, or never started)"
            return
        try:
            with open(path + "/status.json", "rb") as f:
                data = json.loads(f.read())
        except ValueError as e:
            ent.state, ent.error = "unreadable", f"status.json is not valid JSON ({e})"
            return
        except OSError as e:
            ent.state, ent.error = "unreadable", f"status.json: {e.strerror or e}"
            return
        if not isinstance(data, dict):
            ent.state, ent.error = "unreadable", f"status.json holds a {type(data).__name__}, not an object " \
                                                 "(an older version?)"
            return
        ent.status = data
        state = data.get("state")
        if not isinstance(state, str) or not state:
            ent.state, ent.error = "unknown", "status.json has no state (an older version?)"
        else:
            ent.state = state
            err = data.get("error")
            ent.error = err if isinstance(err, str) else ("" if err is None else str(err))
        ent.started = parse_time(data.get("started"))
        ent.ended = parse_time(data.get("finished")) or parse_time(data.get("updated"))


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None else str(v))


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _progress(v: Any) -> float:
    x = _num(v)
    return 0.0 if x is None or x != x else min(max(x, 0.0), 1.0)


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
                v = _num(rec.get(k))
                if v is not None and v == v and abs(v) != float("inf"):
                    xs, ys = out[chart].setdefault(k, ([], []))
                    xs.append(float(x))
                    ys.append(v)
    return out
