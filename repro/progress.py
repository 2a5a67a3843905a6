"""A rich progress bar for the trainer (engine.runlog.Progress), drawn on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """One bar per stage; log lines print above it."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._bar: Progress | None = None
        self._task = None

    def start(self, label: str, total: int, completed: int = 0) -> None:
        self.stop()
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("steps"), TimeElapsedColumn(), TimeRemainingColumn(),
                             console=self.console, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, completed=completed)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)  # one log line stays one line

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
