"""The runs screen: every run directory, refreshed live; the selected run's log tail and curves; keys to stop
(SIGTERM to its process group, SIGKILL for good), resume, and open its analyses."""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.events import Resize
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, RichLog, Static
from textual_plotext import PlotextPlot

from repro.rundir import pid_alive
from repro.tui import procs
from repro.tui.dialogs import ConfirmDialog
from repro.tui.recipes import BREAKPOINTS, STATE_STYLE
from repro.tui.rundata import CURVES, JsonlReader, LogTail, RunRow, curves, provenance_text, row_cells
from repro.tui.words import plural

COLUMNS = (("recipe", 18), ("run", 21), ("tag", 10), ("state", 10), ("stage", 12), ("epoch", 5), ("progress", 11),
           ("best", 6), ("elapsed", 7), ("ETA", 6), ("note", 80))
COL = {label: i for i, (label, _) in enumerate(COLUMNS)}


def _num(v: float | None) -> tuple[int, float]:
    return (1, 0.0) if v is None else (0, float(v))


SORT_KEYS: dict[str, Callable[[RunRow, float], Any]] = {
    "recipe": lambda r, now: r.recipe, "run": lambda r, now: r.run_id, "tag": lambda r, now: r.tag,
    "state": lambda r, now: r.state, "stage": lambda r, now: r.stage, "epoch": lambda r, now: _num(r.epoch),
    "progress": lambda r, now: r.progress, "best": lambda r, now: _num(r.best),
    "elapsed": lambda r, now: _num(r.elapsed(now)), "ETA": lambda r, now: _num(r.eta(now)),
    "note": lambda r, now: r.error,
}
"""Column -> the sort key of a row (numbers as numbers; a missing value sorts last)."""
SETTLE_S = 0.12  # the cursor rests this long before the selected run's log and curves are read
CHART_IDS = {name: "chart-" + name.replace(" ", "-") for name in CURVES}
SERIES_COLORS = {"train_loss": "blue", "test_loss": "red", "val_loss": "orange", "train_acc": "blue",
                 "test_acc": "red", "val_acc": "orange", "lr": "green", "density": "magenta"}


def short_times(lines: list[str]) -> list[str]:
    """'2026-01-01T10:00:00 text' -> '10:00:00 text' for the narrow log pane (the date is in the run id)."""
    return [ln[11:] if len(ln) > 19 and ln[10] == "T" and ln[4] == "-" and ln[13] == ":" else ln for ln in lines]


def _cell(col: int, text: str) -> str | Text:
    if col == COL["state"]:
        return Text(text, style=STATE_STYLE.get(text, ""))
    if col == COL["note"] and text:
        return Text(text, style="red")
    return text


class TailLog(RichLog):
    """The log pane: lines wrap at the pane's width and are wrapped again when it changes (maximised, resized);
    `raw` keeps the last lines as read."""

    def __init__(self, max_lines: int = 2000, **kw: Any) -> None:
        super().__init__(wrap=True, markup=False, highlight=False, max_lines=max_lines, auto_scroll=True, min_width=20,
                         **kw)
        self.raw: deque[str] = deque(maxlen=max_lines)
        self._wrapped_at = 0

    def write_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.raw.append(line)
            self.write(Text(line))

    def clear(self) -> TailLog:
        self.raw.clear()
        super().clear()
        return self

    def on_resize(self, event: Resize) -> None:
        super().on_resize(event)
        width = event.size.width
        if width and self._wrapped_at and width != self._wrapped_at and self.raw:
            lines = list(self.raw)
            super().clear()
            for line in lines:
                self.write(Text(line))
        self._wrapped_at = width or self._wrapped_at


class RunsScreen(Screen):
    """Runs: the live table, the selected run's log and charts."""

    AUTO_FOCUS = "#runs"
    HORIZONTAL_BREAKPOINTS = BREAKPOINTS
    BINDINGS = [
        Binding("/", "filter", "Filter"),
        Binding("a", "analysis", "Analyses"),
        Binding("x", "stop", "Stop"),
        Binding("X", "kill", "Kill"),
        Binding("r", "resume", "Resume"),
        Binding("R", "report", "Report"),
        Binding("m", "maximize_log", "Max log", tooltip="Log full screen"),
        Binding("less_than_sign", "sort", "Sort", tooltip="Sort (next column)"),
    ]

    search_text = reactive("")
    selected: reactive[str | None] = reactive(None)

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, RunRow] = {}
        self._keys: list[str] = []
        self._cells: dict[str, tuple[str, ...]] = {}
        self._src: dict[str, tuple[RunRow, tuple[str, ...]]] = {}
        self.apply_ms = 0.0
        self.stopping: dict[str, tuple[int, float]] = {}  # run key -> (pid, time.monotonic() of the SIGKILL)
        self._detail_lock = threading.Lock()
        self._tail: LogTail | None = None
        self._metrics: JsonlReader | None = None
        self._records: list[dict] = []
        self._settle: Timer | None = None
        self.cursor_key: str | None = None
        self.sort_col: str | None = None  # None: newest first
        self.sort_reverse = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="/ filter runs: recipe, run id, state, stage", id="runs-filter")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="run-detail")
        with Horizontal(id="run-bottom"):
            yield TailLog(id="run-log")
            with Grid(id="run-charts"):
                for cid in CHART_IDS.values():
                    yield PlotextPlot(id=cid, classes="chart")
        yield Static(id="runs-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for label, width in COLUMNS:
            table.add_column(label, key=label, width=width)
        table.focus()
        for name in CURVES:
            self._draw_chart(name, {})
        self.watch(self.app, "runs", self.show_runs)

    # ---- the table ----
    def _matches(self, r: RunRow, terms: list[str]) -> bool:
        if not terms:
            return True
        hay = f"{r.recipe} {r.run_id} {r.state} {r.stage}".lower()
        return all(t in hay for t in terms)

    def show_runs(self, rows: list[RunRow]) -> None:
        """Bring the table up to date: rebuild it when the set of rows changed, else update changed cells."""
        t0 = time.perf_counter()
        table = self.query_one("#runs", DataTable)
        now = self.app.clock()
        self.rows = {r.key: r for r in rows}
        new = self.rows.get(self.app.select_next or "")
        if new is not None and not self._matches(new, self.search_text.lower().split()):
            self._clear_filter()  # a run just launched: it must be visible to be selected
        terms = self.search_text.lower().split()
        visible = [r for r in rows if self._matches(r, terms)]
        if self.sort_col is not None:
            visible.sort(key=lambda r: SORT_KEYS[self.sort_col](r, now), reverse=self.sort_reverse)
        elif self.sort_reverse:
            visible.reverse()
        keys = [r.key for r in visible]
        cells = {}
        for r in visible:  # a row object the scanner reused is unchanged: so are its cells, unless it runs
            src = self._src.get(r.key)
            cells[r.key] = src[1] if src is not None and src[0] is r and r.state != "running" else row_cells(r, now)
        self._src = {r.key: (r, cells[r.key]) for r in visible}
        if keys != self._keys:
            keep = self.app.select_next if self.app.select_next in cells else (self.cursor_key or self.selected)
            table.clear()
            for k in keys:
                table.add_row(*(_cell(i, c) for i, c in enumerate(cells[k])), key=k)
            self._keys = keys
            if keep in cells:
                table.move_cursor(row=keys.index(keep), animate=False)
                if keep == self.app.select_next:
                    self.app.select_next = None
                    self.cursor_key = keep
                    self.selected = keep
            elif keys:  # the run under the cursor is filtered out: the cursor's row is the one acted on
                table.move_cursor(row=0, animate=False)
                self.cursor_key = self.selected = keys[0]
            else:
                self.cursor_key = self.selected = None
        else:
            for k in keys:
                old, new = self._cells.get(k), cells[k]
                if old is not new and old != new:
                    for i, (a, b) in enumerate(zip(old or (), new)):
                        if a != b:
                            table.update_cell(k, COLUMNS[i][0], _cell(i, b))
        self._cells = cells
        self._escalate()
        self.apply_ms = 1000 * (time.perf_counter() - t0)
        n_run = sum(1 for r in rows if r.state == "running")
        shown = f"{len(keys)} of {plural(len(rows), 'run')}" if terms else plural(len(rows), "run")
        order = (f"sorted by {self.sort_col or 'run'}{' ▼' if self.sort_reverse else ''}   "
                 if self.sort_col or self.sort_reverse else "")
        self.query_one("#runs-status", Static).update(
            Text(f" {shown}, {n_run} running   {order}root {self.app.root}"), layout=False)
        self._update_detail_line()
        if self.selected:
            self.refresh_detail()

    def on_screen_resume(self) -> None:
        if self.app.runs_filter is not None:  # asked for by the recipes screen (enter on a recipe)
            self.query_one("#runs-filter", Input).value = self.app.runs_filter
            self.app.runs_filter = None

    def watch_search_text(self) -> None:
        if self.is_mounted:
            self.show_runs(list(self.app.runs))

    def _clear_filter(self) -> None:
        """Empty the filter box without a second refresh (the caller is refreshing)."""
        box = self.query_one("#runs-filter", Input)
        with box.prevent(Input.Changed):
            box.value = ""
        self.set_reactive(RunsScreen.search_text, "")
        self.notify("filter cleared to show the new run")

    @on(DataTable.HeaderSelected, "#runs")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column header sorts by it; a second click reverses."""
        col = event.column_key.value
        col = None if col == "run" else col
        self.sort_reverse = not self.sort_reverse if col == self.sort_col else col is None
        self.sort_col = col
        self.show_runs(list(self.app.runs))

    def action_sort(self) -> None:
        """Sort by the next column (newest first, then recipe, tag, state, ...)."""
        order = [c for c, _ in COLUMNS if c != "run"]
        i = order.index(self.sort_col) + 1 if self.sort_col in order else 0
        self.sort_col, self.sort_reverse = (order[i] if i < len(order) else None), False
        self.show_runs(list(self.app.runs))

    def action_maximize_log(self) -> None:
        """The log pane over the whole screen (escape or m again: back)."""
        log = self.query_one("#run-log", TailLog)
        if self.maximized is log:
            self.minimize()
        else:
            self.maximize(log, container=False)
            log.focus()  # its scroll keys work

    def watch_maximized(self, widget: object) -> None:
        """Back from the full-screen log (m or escape): the table has the keys again, not the filter box."""
        if widget is None and self.is_mounted:
            self.query_one("#runs", DataTable).focus()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.search_text = event.value

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self) -> None:
        self.query_one("#runs", DataTable).focus()

    def on_key(self, event) -> None:  # noqa: ANN001 - textual's Key event
        box = self.query_one("#runs-filter", Input)
        if box.has_focus and event.key in ("escape", "down"):
            if event.key == "escape":
                box.value = ""
            self.query_one("#runs", DataTable).focus()
            event.stop()

    def action_filter(self) -> None:
        self.query_one("#runs-filter", Input).focus()

    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The detail line follows the cursor at once; the log and charts once it rests (a held arrow key
        does not read every run it passes)."""
        key = self.cursor_key = event.row_key.value
        self._update_detail_line(key)
        if self._settle is not None:
            self._settle.stop()
        self._settle = self.set_timer(SETTLE_S, lambda: setattr(self, "selected", key))

    @on(DataTable.RowSelected, "#runs")
    def _chosen(self) -> None:
        self.action_analysis()

    # ---- the selected run: detail line, log tail, charts ----
    def watch_selected(self, key: str | None) -> None:
        with self._detail_lock:
            self._tail = self._metrics = None
            self._records = []
            if key is not None:
                path = Path(key)
                log = path / "log.txt"
                launch_log = path.parent / f"{path.name}.launch.log"
                self._tail = LogTail(log if log.exists() or not launch_log.exists() else launch_log)
                self._metrics = JsonlReader(path / "metrics.jsonl")
        self.query_one("#run-log", TailLog).clear()
        self._update_detail_line(key)
        if key is not None:
            self.refresh_detail(first=True)

    def _update_detail_line(self, key: str | None = None) -> None:
        r = self.rows.get(key or self.selected or "")
        w = self.query_one("#run-detail", Static)
        if r is None:
            w.update(" no run selected", layout=False)
            return
        t = Text(" ")
        t.append(f"{r.recipe}/{r.run_id}", style="bold")
        t.append("  ")
        t.append(r.state, style=STATE_STYLE.get(r.state, ""))
        extra = [f"stage {r.stage}" if r.stage and r.state != "done" else "",
                 f"pid {r.pid}" if r.pid and r.state == "running" else "",
                 f"device {r.status.get('device')}" if r.status.get("device") else "", "smoke" if r.smoke else ""]
        if r.key in self.stopping:
            extra.append("stopping (SIGTERM sent)")
        if r.best is not None:
            extra.append(f"best acc {r.best:.2f}" + (f"  final {r.final:.2f}" if r.final is not None else ""))
        if r.tag:
            extra.append(f"sweep point {r.tag}")
        extra.append(provenance_text(r.provenance))
        t.append("  " + "  ".join(e for e in extra if e), style="dim")
        if r.error:
            t.append(f"\n {r.error.splitlines()[0]}", style="red")
        w.update(t, layout=False)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def refresh_detail(self, first: bool = False) -> None:
        """Read what the selected run appended to its log and metrics since the last read."""
        key = self.selected
        with self._detail_lock:
            tail, metrics = self._tail, self._metrics
            if tail is None or metrics is None:
                return
            try:
                lines = tail.read_new()
                recs = metrics.read_new()
                reset = metrics.reset
            except OSError as e:
                lines, recs, reset = [f"cannot read: {e}"], [], False
            if not (lines or recs or reset or first):
                return
            if reset:
                self._records = []
            self._records.extend(recs)
            data = curves(self._records) if (recs or reset or first) else None
        self.app.call_from_thread(self._detail_read, key, lines, data)

    def _detail_read(self, key: str | None, lines: list[str], data: dict | None) -> None:
        if key != self.selected:
            return
        if lines:
            self.query_one("#run-log", TailLog).write_lines(short_times(lines))
        if data is not None:
            for name in CURVES:
                self._draw_chart(name, data[name])

    def _draw_chart(self, name: str, series: dict) -> None:
        w = self.query_one(f"#{CHART_IDS[name]}", PlotextPlot)
        plt = w.plt
        plt.clear_figure()
        plt.title(name if series else f"{name}: no data yet")
        for key, (xs, ys) in series.items():
            plt.plot(xs, ys, label=key, marker="braille", color=SERIES_COLORS.get(key, "white"))
        if name == "learning rate" and series:
            plt.yticks([min(min(ys) for _, ys in series.values()), max(max(ys) for _, ys in series.values())])
        plt.xlabel("epoch")
        w.refresh()

    # ---- keys ----
    def _row(self) -> RunRow | None:
        """The run under the cursor (the keys act on it even before the detail pane caught up); never a run the
        filter hides."""
        key = self.cursor_key or self.selected or ""
        r = self.rows.get(key) if key in self._src else None
        if r is None:
            self.notify("no run selected" + (": the filter matches none" if self.rows and not self._keys else ""),
                        severity="warning")
        return r

    def action_analysis(self) -> None:
        from repro.tui.analysis import AnalysisScreen  # deferred: a screen opened on demand (it imports h5py)

        r = self._row()
        if r is not None:
            self.app.push_screen(AnalysisScreen(r.path, f"{r.recipe}/{r.run_id}"))

    def action_report(self) -> None:
        """The selected run's verdict: its `[expect]` rows against the paper, FLOPs, wall time."""
        from repro.tui.report import ReportScreen  # deferred: opened on demand

        r = self._row()
        if r is not None:
            self.app.push_screen(ReportScreen.for_run(r.path))

    def _pid(self, r: RunRow) -> int | None:
        if r.state != "running":
            self.notify(f"{r.run_id} is not running ({r.state})", severity="warning")
            return None
        pid = procs.lock_pid(r.path) or r.pid
        if pid is None:
            self.notify("the run's process id is unknown", severity="error")
        return pid

    def action_stop(self) -> None:
        """SIGTERM to the run's process group; SIGKILL after the grace period (or on a second press)."""
        r = self._row()
        if r is None:
            return
        if r.key in self.stopping:
            self.action_kill()
            return
        pid = self._pid(r)
        if pid is None:
            return
        if r.tag and procs.runs_whole_sweep(pid) is not False:
            self._confirm_sweep_stop(r, pid)
            return
        self._terminate(r, pid)

    def _confirm_sweep_stop(self, r: RunRow, pid: int) -> None:
        """A sweep point run by `repro run` of the whole sweep: SIGTERM stops that process, so every later point."""
        body = (f"{r.run_id} is point '{r.tag}' of a sweep of {r.recipe} that one process (pid {pid}) runs point "
                "after point: stopping it stops the whole sweep, and the points not yet started do not start.\n"
                "r resumes this point later; launch the recipe again for the rest.")

        def done(yes: bool | None) -> None:
            if yes:
                self._terminate(r, pid)

        self.app.push_screen(ConfirmDialog("Stop the whole sweep?", body), done)

    def _terminate(self, r: RunRow, pid: int) -> None:
        try:
            msg = procs.signal_run(pid, signal.SIGTERM)
        except OSError as e:
            self.notify(f"cannot stop pid {pid}: {e}", severity="error")
            return
        self.stopping[r.key] = (pid, time.monotonic() + self.app.stop_grace)
        self.notify(f"{msg}; SIGKILL in {self.app.stop_grace:g} s unless it exits (x again: now)",
                    title=f"stopping {r.run_id}")
        self._update_detail_line()

    def action_kill(self) -> None:
        r = self._row()
        if r is None:
            return
        pid = self.stopping.pop(r.key, (None, 0.0))[0] or self._pid(r)
        if pid is None:
            return
        try:
            msg = procs.signal_run(pid, signal.SIGKILL)
        except OSError as e:
            self.notify(f"cannot kill pid {pid}: {e}", severity="error")
            return
        self.notify(msg, title=f"killed {r.run_id}")
        self.app.scan()

    def _escalate(self) -> None:
        """Stopped runs that still hold their lock after the grace period get SIGKILL."""
        for key, (pid, deadline) in list(self.stopping.items()):
            r = self.rows.get(key)
            if r is None or r.state != "running" or not pid_alive(pid):
                del self.stopping[key]
            elif time.monotonic() >= deadline:
                del self.stopping[key]
                try:
                    msg = procs.signal_run(pid, signal.SIGKILL)
                except OSError as e:
                    msg = f"SIGKILL failed: {e}"
                self.notify(f"{r.run_id} ignored SIGTERM for {self.app.stop_grace:g} s: {msg}", severity="warning")

    def action_resume(self) -> None:
        r = self._row()
        if r is None:
            return
        if r.state in ("running", "done"):
            self.notify(f"{r.run_id} is {r.state}: nothing to resume", severity="warning")
            return
        if not (r.path / "recipe.toml").is_file():
            self.notify(f"{r.run_id} has no recipe.toml: it cannot be resumed", severity="error")
            return
        self._resume(r)

    @work(thread=True, group="launch", exit_on_error=False)
    def _resume(self, r: RunRow) -> None:
        try:
            la = procs.resume(self.app.root, r.path, r.status)
        except Exception as e:  # noqa: BLE001
            self.app.call_from_thread(self.notify, f"{type(e).__name__}: {e}", title="cannot resume",
                                      severity="error")
            return
        self.app.call_from_thread(self.app.launched_run, la)
