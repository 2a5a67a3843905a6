"""The repro terminal app: recipes to launch, live runs to watch and stop, analyses to read and export.

Two modes (screens with their own stacks): `recipes` and `runs`; the analysis screen of a run is pushed
on top of the runs mode. The app owns what both modes share: the run root, a `RunScanner` refreshed in a
worker thread every `refresh_interval` seconds (its rows land in the `runs` reactive, which the screens
watch), and the processes it launched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive

from repro.tui.commands import ReproCommands
from repro.tui.procs import Launched
from repro.tui.recipes import RecipesScreen
from repro.tui.rundata import RunRow, RunScanner
from repro.tui.runs import RunsScreen


class ReproApp(App[None]):
    """`repro tui`."""

    CSS_PATH = "app.tcss"
    TITLE = "repro"
    MODES = {"recipes": RecipesScreen, "runs": RunsScreen}
    DEFAULT_MODE = "recipes"
    COMMANDS = App.COMMANDS | {ReproCommands}
    BINDINGS = [
        Binding("1", "switch_mode('recipes')", "Recipes"),
        Binding("2", "switch_mode('runs')", "Runs"),
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    runs: reactive[list[RunRow]] = reactive(list, always_update=True, init=False)
    """Every run directory under the root, newest first; replaced after each scan."""

    def __init__(self, root: Path, *, refresh_interval: float | None = 1.0, clock: Callable[[], float] = time.time,
                 stop_grace: float = 10.0, scanner: RunScanner | None = None, timings: bool = False) -> None:
        super().__init__()
        self.root = Path(root)
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.stop_grace = stop_grace
        self.timings = timings  # kept for callers; the status line no longer shows refresh times (scan_ms has them)
        self.scanner = scanner or RunScanner(self.root)
        self.scan_ms = 0.0
        self.scans = 0
        self.launched: list[Launched] = []
        self._scanning = False
        self.select_next: str | None = None  # a run to select in the runs table as soon as it appears
        self.runs_filter: str | None = None  # a filter for the runs table, set by the recipes screen
        self.sub_title = str(self.root)

    def on_mount(self) -> None:
        self.scan()
        if self.refresh_interval:
            self.set_interval(self.refresh_interval, self.scan)

    def action_help(self) -> None:
        """`?`: every screen's keys (a second `?` closes it)."""
        from repro.tui.help import HelpScreen  # deferred: opened on demand

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    # ---- the shared run scan ----
    def scan(self) -> None:
        """Start a scan unless one is under way (a slow disk never piles scans up)."""
        if self._scanning:
            return
        self._scanning = True
        self._scan_worker()

    @work(thread=True, group="scan", exit_on_error=False)
    def _scan_worker(self) -> None:
        rows: list[RunRow] | None = None
        try:
            rows = self.scanner.scan()
        finally:
            self.call_from_thread(self._scanned, rows)

    def _scanned(self, rows: list[RunRow] | None) -> None:
        self._scanning = False
        for la in self.launched:
            if la.proc is not None:
                la.proc.poll()  # reap finished children
        if rows is not None:
            self.scan_ms = self.scanner.last_ms
            self.scans += 1
            self.runs = rows

    # ---- launches ----
    def launched_run(self, la: Launched) -> None:
        """A run was started (from any screen): show it in the runs mode."""
        self.launched.append(la)
        target = la.run_dir.name if la.run_dir else "a sweep"
        self.notify(f"launched {target} (pid {la.proc.pid if la.proc else '?'}); output in {la.log.name}",
                    title="repro run")
        if la.run_dir is not None:
            self.select_next = str(la.run_dir)
        if self.current_mode != "runs":
            self.runs_filter = ""  # a filter left from an earlier visit must not hide the new run
        self.switch_mode("runs")
        self.scan()


def run_app(root: Path) -> None:
    """Build and run the app on a run root (what `repro tui` calls)."""
    ReproApp(Path(root)).run()
