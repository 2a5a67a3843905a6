"""What `repro reproduce` shows while it works through the list, and the REPORT.md it ends with."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from engine.runlog import NullProgress
from repro.claims import claim_path, default_owner, is_stale, read_holder
from repro.farm import Item, Pool, Result, done_already, run_item
from repro.progress import RichProgress

WAIT_S = 2.0
"""How often a worker looks again at runs another worker holds."""


def duration(seconds: float) -> str:
    """12s, 3m 04s, 2h 05m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def result_line(r: Result) -> str:
    """One line per finished run, the same in every mode (tests and scripts read it)."""
    if r.state == "skipped":
        return f"{r.item.label}: done already ({r.run_dir})"
    if r.state == "elsewhere":
        return f"{r.item.label}: running elsewhere ({r.error})"
    took = f" in {duration(r.seconds)}" if r.seconds else ""
    line = f"{r.item.label}: {r.state} ({r.run_dir}){took}" if r.run_dir else f"{r.item.label}: {r.state}"
    if r.extra.get("took_over"):
        line += f"; took over the claim of a dead worker ({r.extra['took_over']})"
    return line + (f": {r.error}" if r.error and r.state != "done" else "")


class Board:
    """The overall bar: done / running / queued / failed and an ETA; start and end lines print above it."""

    def __init__(self, total: int, console: Console | None = None, live: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.total = total
        self.counts = {"done": 0, "running": 0, "failed": 0}
        self.bar = Progress(TextColumn("[bold]reproduce"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.description}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=self.console, disable=not (live and self.console.is_terminal))
        self.task = self.bar.add_task(self._text(), total=total)

    def _text(self) -> str:
        c = self.counts
        queued = self.total - c["done"] - c["running"] - c["failed"]
        return f"done {c['done']} · running {c['running']} · queued {queued} · failed {c['failed']}"

    def __enter__(self) -> Board:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def event(self, kind: str, item: Item, result: Result | None, slot: str | None) -> None:
        """A worker started or ended."""
        if kind == "start":
            self.counts["running"] += 1
            where = f"GPU {slot}" if slot else "CPU"
            self.echo(f"{time.strftime('%H:%M:%S')} start {item.label} on {where}")
        else:
            assert result is not None
            self.counts["running"] -= 1
            self.finished(result)

    def finished(self, result: Result) -> None:
        """A run ended (or was skipped); one that another worker holds is waited for, not counted."""
        if result.state != "elsewhere":
            self.counts["failed" if result.state in ("failed", "killed") else "done"] += 1
            self.bar.update(self.task, advance=1, description=self._text())
        self.echo(result_line(result) + ("; waiting for it" if result.state == "elsewhere" else ""))

    def echo(self, line: str) -> None:
        print(line, flush=True)
        if self.bar.live.is_started:
            self.bar.refresh()


def run_local(items: Sequence[Item], root: Path, *, device: str, nproc: int, slots: list[str | None] | None,
              ) -> list[Result]:
    """Every item: in this process one after another (slots None), else in worker processes, one per slot."""
    results: list[Result] = []
    t_start = float(int(time.time()))  # status.json times have whole seconds
    with Board(len(items), live=slots is not None) as board:  # in-process runs draw their own bars
        todo = []
        for item in items:  # finished runs need no worker
            done = done_already(root, item, t_start)
            if done is not None:
                r = Result(item, "skipped", str(done))
                results.append(r)
                board.finished(r)
            else:
                todo.append(item)
        waiting: list[Item] = []
        while todo or waiting:
            if not todo:
                todo = wait_for_claims(waiting, root)
                waiting = [it for it in waiting if it not in todo]

            if slots is None:
                got = []
                for item in todo:
                    progress = RichProgress() if sys.stderr.isatty() else NullProgress()
                    got.append(run_item(item, root, device=device, nproc=nproc, progress=progress, since=t_start))
                    board.finished(got[-1])
            else:
                got = Pool(root, slots, device=device, nproc=nproc, on_event=board.event, since=t_start).run(todo)
            results += [r for r in got if r.state != "elsewhere"]
            waiting += [r.item for r in got if r.state == "elsewhere"]
            todo = []
    return results


def wait_for_claims(items: list[Item], root: Path, poll_s: float = WAIT_S) -> list[Item]:
    """Wait until at least one of these runs (held by other workers) is free again: finished, or its worker gone;
    returns those, to be skipped (done) or taken up (failed, killed) like any other item."""
    while items:
        free = [it for it in items if claim_free(root, it)]
        if free:
            return free
        time.sleep(poll_s)
    return []


def claim_free(root: Path, item: Item) -> bool:
    """Whether no live worker holds the item's claim."""
    holder = read_holder(claim_path(root, item.name, item.tag, item.smoke))
    return holder is None or is_stale(holder, default_owner())


def finished_dirs(results: Sequence[Result], root: Path) -> list[Path]:
    """The run directories the report covers: every run done now or before, including those another worker
    finished while this one skipped them."""
    out: list[Path] = []
    for r in results:
        if r.state in ("done", "skipped") and r.run_dir:
            out.append(Path(r.run_dir))
        elif r.state == "elsewhere":
            done = done_already(root, r.item)
            if done is not None:
                out.append(done)
    return out
