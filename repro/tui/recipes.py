"""The recipes screen: every recipe in a searchable table, its paper, command line and resolved TOML beside
it, and keys to edit `--set` overrides, pick a device and launch it (smoke or full).

The recipe names are listed at first paint; every recipe is then loaded in a worker thread (repro.recipe.load
validates a recipe's schema without importing torch, ~10 ms a recipe), so the event loop never waits on them and
the first keys typed reach the table. Recipes that change on disk are re-read: a cheap (mtime, size) poll of the
recipes folder, and `g` to re-read them all."""

from __future__ import annotations

from dataclasses import dataclass

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from engine.fidelity import differences_for, toml_value
from repro.recipe import RecipeError, load, recipe_names, recipes_dir, to_toml
from repro.tui import procs
from repro.tui.dialogs import ConfirmDialog, OverridesDialog
from repro.tui.rundata import latest_by_recipe
from repro.tui.words import plural

PAPERS = {
    "freetickets": "FreeTickets: Deep Ensembling with No Overhead for either Training or Testing "
                   "(Liu et al., ICLR 2022)",
    "suptickets": "Sup-tickets: Superposing Many Tickets into One (Yin et al., 2022)",
    "earlybird": "Drawing Early-Bird Tickets: Towards More Efficient Training of Deep Networks "
                 "(You et al., ICLR 2020)",
    "randompruning": "The Unreasonable Effectiveness of Random Pruning (Liu et al., ICLR 2022)",
    "modeconnectivity": "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs "
                        "(Garipov et al., NeurIPS 2018)",
    "demo": "a demo on scikit-learn's digits (the line below says what it trains)",
}
STATE_STYLE = {"running": "bold cyan", "done": "green", "failed": "bold red", "killed": "yellow", "stopped": "yellow",
               "unknown": "dim", "unreadable": "red"}
COLUMNS = ("name", "latest run", "paper", "method", "dataset", "model")
POLL_S = 2.0  # how often the recipes folder is checked for changed files (a stat per file)
BREAKPOINTS = [(0, "-narrow"), (110, "-normal"), (200, "-wide")]  # screen width -> class (app.tcss lays them out)


@dataclass
class RecipeInfo:
    """What the table shows about one recipe; `error` when it does not load."""

    name: str
    paper: str = "?"
    method: str = "?"
    dataset: str = "?"
    model: str = "?"
    runs: int = 1
    description: str = ""
    command: str = ""
    expect: str = ""
    differences: tuple[tuple[str, str], ...] = ()  # (id, "key = faithful value" or "not switchable")
    error: str = ""
    loaded: bool = True  # False: a placeholder row until the loading worker has read the file

    def haystack(self) -> str:
        return " ".join((self.name, self.paper, self.method, self.dataset, self.model)).lower()


def placeholder(name: str) -> RecipeInfo:
    """The row of a recipe whose file is still being read."""
    return RecipeInfo(name, "…", "…", "…", "…", loaded=False)


def recipe_signature() -> dict[str, tuple[int, int]]:
    """name -> (mtime_ns, size) of every recipe file: what the poll compares to see a file changed or appeared."""
    out = {}
    for path in recipes_dir().glob("*.toml"):
        try:
            st = path.stat()
        except OSError:  # removed between the listing and the stat
            continue
        out[path.stem] = (st.st_mtime_ns, st.st_size)
    return out


def recipe_info(name: str) -> RecipeInfo:
    """One recipe's row and side pane, loaded from its file; a recipe that does not load gives its reason."""
    try:
        resolved = load(name)
    except RecipeError as e:
        return RecipeInfo(name, error="\n".join(e.lines))
    except Exception as e:  # noqa: BLE001 - a recipe that cannot load is a row with its reason
        return RecipeInfo(name, error=f"{type(e).__name__}: {e}")
    r = resolved[0].recipe
    exp = r.expect
    expect = ", ".join(f"{k} = {v} (± {exp.tolerance_for(k)})" for k, v in (exp.metrics or {}).items())
    diffs = tuple((d.id, "not switchable" if d.key is None else f"{d.key} = {toml_value(d.faithful)}")
                  for d in differences_for(r.name))
    return RecipeInfo(name, r.paper, "+".join(dict.fromkeys(s.method for s in r.stage)), r.data.dataset,
                      r.model.arch, len(resolved), r.description, r.command, expect, diffs)


class RecipesScreen(Screen):
    """Recipes: search, preview, overrides, device, launch."""

    AUTO_FOCUS = "#recipes"  # the table has the focus from the first key on (not the search box)
    HORIZONTAL_BREAKPOINTS = BREAKPOINTS
    BINDINGS = [
        Binding("/", "search", "Search"),
        Binding("s", "launch(True)", "Smoke", tooltip="Smoke run"),
        Binding("f", "launch(False)", "Full", tooltip="Full run"),
        Binding("o", "overrides", "--set"),
        Binding("d", "cycle_device", "Device"),
        Binding("t", "toggle_preview", "Preview", tooltip="Smoke/full TOML"),
        Binding("F", "toggle_faithful", "Faithful"),
        Binding("R", "report", "Report"),
        Binding("g", "reload", "Reload", tooltip="Reload recipes"),
        Binding("less_than_sign", "sort", "Sort", tooltip="Sort (next column)"),
        Binding("i", "toggle_pane", "Details", tooltip="Details pane"),
    ]

    search_text = reactive("")
    device = reactive("auto")
    smoke_preview = reactive(False)
    faithful = reactive(False)  # --faithful: run what the original code did (engine.fidelity)
    current: reactive[str | None] = reactive(None)
    sets: reactive[tuple[str, ...]] = reactive(tuple)

    def __init__(self) -> None:
        super().__init__()
        self.infos: dict[str, RecipeInfo] = {}
        self.overrides: dict[str, tuple[str, ...]] = {}
        self.latest: dict[str, str] = {}
        self._shown: list[str] = []
        self._sig: dict[str, tuple[int, int]] = {}  # the recipe files as last read
        self.devices: tuple[str, ...] = ("auto", "cpu")  # cuda joins once the probe finds a GPU
        self.sort_col: str | None = None  # None: by name
        self.sort_reverse = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="/ search recipes: name, paper, method, dataset, model", id="search")
        with Horizontal(id="recipes-main"):
            yield DataTable(id="recipes", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="recipe-pane"):
                yield Static(id="recipe-about")
                yield Static(id="recipe-toml")
        yield Static(id="launch-bar")
        yield Footer()

    def on_mount(self) -> None:
        self.infos = {n: placeholder(n) for n in recipe_names()}  # names at first paint; the rest from the worker
        table = self.query_one("#recipes", DataTable)
        for c in COLUMNS:
            table.add_column(c, key=c)
        self._fill()
        table.focus()
        self._update_bar()
        self.watch(self.app, "runs", self._runs_changed)
        self.load_recipes()
        self.probe_devices()
        if self.app.refresh_interval:
            self.set_interval(max(POLL_S, self.app.refresh_interval), self.load_recipes)

    # ---- reading the recipe files ----
    @work(thread=True, exclusive=True, group="recipes", exit_on_error=False)
    def load_recipes(self, force: bool = False) -> None:
        """Read the recipes whose files changed (every one when `force`), off the app's thread."""
        sig = recipe_signature()
        known = dict(self._sig)
        infos = {n: recipe_info(n) for n in sorted(sig) if force or sig[n] != known.get(n)}
        if infos or set(sig) != set(known) or force:
            self.app.call_from_thread(self._recipes_read, sig, infos, force)

    def _recipes_read(self, sig: dict[str, tuple[int, int]], infos: dict[str, RecipeInfo], force: bool) -> None:
        self._sig = sig
        names = sorted(sig)
        old = self.infos
        self.infos = {n: infos.get(n) or old.get(n) or placeholder(n) for n in names}
        if list(old) != names:
            self._fill()
        else:
            for n in infos:
                self._refresh_row(n)
        if self.current in infos:
            self._update_preview()
        if force:
            bad = sum(1 for i in self.infos.values() if i.error)
            self.notify(f"re-read {plural(len(names), 'recipe')}" + (f"; {bad} do not load" if bad else ""))

    def action_reload(self) -> None:
        self.load_recipes(force=True)

    @work(thread=True, group="devices", exit_on_error=False)
    def probe_devices(self) -> None:
        """Offer cuda only where torch sees a GPU (procs.detect_devices asks a child process)."""
        devices = procs.detect_devices()
        self.app.call_from_thread(setattr, self, "devices", devices)

    # ---- table ----
    def _visible(self) -> list[str]:
        terms = self.search_text.lower().split()
        names = [n for n, i in self.infos.items() if all(t in i.haystack() for t in terms)]
        if self.sort_col is not None:
            col = COLUMNS.index(self.sort_col)
            names.sort(key=lambda n: str(self._cells(n)[col]).lower(), reverse=self.sort_reverse)
        elif self.sort_reverse:
            names.reverse()
        return names

    @on(DataTable.HeaderSelected, "#recipes")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column header sorts by it; a second click reverses."""
        col = event.column_key.value
        col = None if col == "name" else col
        self.sort_reverse = not self.sort_reverse if col == self.sort_col else False
        self.sort_col = col
        self._fill()
        self._update_bar()

    def action_sort(self) -> None:
        """Sort by the next column (name, latest run, paper, method, dataset, model, then name again)."""
        i = COLUMNS.index(self.sort_col or "name")
        nxt = COLUMNS[(i + 1) % len(COLUMNS)]
        self.sort_col, self.sort_reverse = (None if nxt == "name" else nxt), False
        self._fill()
        self._update_bar()

    def action_toggle_pane(self) -> None:
        """Show or hide the side pane (at narrow widths it is hidden until asked for, then shown instead of the
        table)."""
        self.toggle_class("-pane-toggled")
        self.call_after_refresh(self._refocus)

    def _refocus(self) -> None:
        """Keys go to the table, or to the pane where it took the table's place (never to the search box)."""
        table = self.query_one("#recipes", DataTable)
        (table if table.display else self.query_one("#recipe-pane")).focus()

    def _cells(self, name: str) -> tuple:
        i = self.infos[name]
        state = self.latest.get(name, "")
        name_cell = Text(name, style="red" if i.error else "")
        return (name_cell, Text(state or "-", style=STATE_STYLE.get(state, "dim")), i.paper, i.method, i.dataset,
                i.model)

    def _fill(self) -> None:
        table = self.query_one("#recipes", DataTable)
        keep = self.current
        table.clear()
        self._shown = self._visible()
        for n in self._shown:
            table.add_row(*self._cells(n), key=n)
        if keep in self._shown:
            table.move_cursor(row=self._shown.index(keep), animate=False)
        elif self._shown:  # the recipe under the cursor is filtered out: the cursor's row is the one acted on
            table.move_cursor(row=0, animate=False)
            self.current = self._shown[0]
        else:
            self.current = None

    def _refresh_row(self, name: str) -> None:
        if name not in self._shown:
            return
        table = self.query_one("#recipes", DataTable)
        for c, v in zip(COLUMNS, self._cells(name)):
            table.update_cell(name, c, v, update_width=True)

    def _runs_changed(self, rows: list) -> None:
        latest = {k: r.state for k, r in latest_by_recipe(rows).items()}
        changed = [n for n in self.infos if latest.get(n) != self.latest.get(n)]
        self.latest = latest
        for n in changed:
            self._refresh_row(n)

    @on(DataTable.RowSelected, "#recipes")
    def _selected(self) -> None:
        self.action_show_runs()

    @on(DataTable.RowHighlighted, "#recipes")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.current = event.row_key.value

    def watch_current(self, name: str | None) -> None:
        self.sets = self.overrides.get(name, ()) if name else ()
        self._update_preview()
        self._update_bar()

    def watch_search_text(self) -> None:
        if self.is_mounted:
            self._fill()

    def watch_sets(self) -> None:
        self._update_bar()

    def watch_device(self) -> None:
        self._update_bar()

    def watch_smoke_preview(self) -> None:
        self._update_preview()
        self._update_bar()

    def watch_faithful(self) -> None:
        self._update_preview()
        self._update_bar()

    # ---- side pane and bar ----
    def _update_bar(self) -> None:
        if not self.is_mounted:
            return
        sets = " ".join(f"--set {s}" for s in self.sets) or "none"
        self.query_one("#launch-bar", Static).update(
            f" device [b]{self.device}[/b]   overrides [b]{Text(sets).markup}[/b]   "
            f"preview [b]{'smoke' if self.smoke_preview else 'full'}[/b]   "
            f"profile [b]{'faithful' if self.faithful else 'ours'}[/b]   "
            + (f"sorted by [b]{self.sort_col}{' ▼' if self.sort_reverse else ''}[/b]   " if self.sort_col else "")
            + f"root {Text(str(self.app.root)).markup}", layout=False)

    def _update_preview(self) -> None:
        if not self.is_mounted:
            return
        about = self.query_one("#recipe-about", Static)
        name = self.current
        if name is None:
            about.update("no recipe matches the search")
            self.query_one("#recipe-toml", Static).update("")
            return
        i = self.infos[name]
        t = Text()
        t.append(f"{name}\n", style="bold")
        t.append("paper  ", style="dim")
        t.append(f"{PAPERS.get(i.paper, i.paper)}\n")
        if i.description:
            t.append(f"{i.description}\n")
        if i.command:
            t.append("original command\n", style="dim")
            t.append(f"{i.command}\n", style="cyan")
        if i.expect:
            t.append("paper's numbers  ", style="dim")
            t.append(f"{i.expect}\n")
        if i.runs > 1:
            t.append(f"a sweep: {i.runs} runs\n", style="yellow")
        if i.differences:
            t.append(f"differs from the original code ({'switched back: ' if self.faithful else ''}"
                     "F toggles --faithful)\n", style="dim")
            for ident, switch in i.differences:
                t.append(f"  {ident}", style="magenta")
                t.append(f"  {switch}\n", style="dim" if switch == "not switchable" else "")
        about.update(t)
        self.query_one("#recipe-toml", Static).update(Text("resolving ...", style="dim"))
        self.resolve(name, self.sets, self.smoke_preview, self.faithful)

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def resolve(self, name: str, sets: tuple[str, ...], smoke: bool, faithful: bool = False) -> None:
        try:
            resolved = load(name, sets, smoke, faithful)
            head = (f"# resolved ({'smoke' if smoke else 'full'}{', faithful' if faithful else ''}"
                    f"{', ' + ' '.join(sets) if sets else ''})")
            if len(resolved) > 1:
                head += f"; sweep point 1 of {len(resolved)}: {resolved[0].tag}"
            body: Syntax | Text = Syntax(head + "\n" + to_toml(resolved[0].recipe), "toml", theme="ansi_dark",
                                         word_wrap=True, background_color="default")
        except RecipeError as e:
            body = Text("\n".join(e.lines), style="red")
        except Exception as e:  # noqa: BLE001
            body = Text(f"{type(e).__name__}: {e}", style="red")
        self.app.call_from_thread(self._resolved, name, sets, smoke, faithful, body)

    def _resolved(self, name: str, sets: tuple[str, ...], smoke: bool, faithful: bool, body: Syntax | Text) -> None:
        if (name, sets, smoke, faithful) == (self.current, self.sets, self.smoke_preview, self.faithful):
            self.query_one("#recipe-toml", Static).update(body)

    # ---- actions ----
    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.search_text = event.value

    @on(Input.Submitted, "#search")
    def _search_done(self) -> None:
        self.query_one("#recipes", DataTable).focus()

    def on_key(self, event) -> None:  # noqa: ANN001 - textual's Key event
        search = self.query_one("#search", Input)
        if search.has_focus and event.key in ("escape", "down"):
            if event.key == "escape":
                search.value = ""
            self.query_one("#recipes", DataTable).focus()
            event.stop()

    def action_cycle_device(self) -> None:
        """auto -> cpu (-> cuda where there is a GPU) -> auto."""
        devs = self.devices
        self.device = devs[(devs.index(self.device) + 1) % len(devs)] if self.device in devs else devs[0]

    def _target(self) -> str | None:
        """The recipe a key acts on: the one under the cursor, never one the search hides."""
        name = self.current
        if name is None or name not in self._shown:
            self.notify("no recipe selected: the search matches none", severity="warning")
            return None
        return name

    def action_toggle_preview(self) -> None:
        self.smoke_preview = not self.smoke_preview

    def action_toggle_faithful(self) -> None:
        self.faithful = not self.faithful

    def action_overrides(self) -> None:
        name = self._target()
        if name is None:
            return

        def done(sets: tuple[str, ...] | None) -> None:
            if sets is None or name != self.current:
                return
            self.overrides[name] = tuple(sets)
            self.sets = tuple(sets)
            self._update_preview()

        self.app.push_screen(OverridesDialog(name, self.sets), done)

    def action_show_runs(self) -> None:
        name = self._target()
        if name is not None:
            self.app.runs_filter = name
            self.app.switch_mode("runs")

    def action_report(self) -> None:
        """The verdict on the selected recipe: its paper's tables and its runs' `[expect]` rows."""
        from repro.tui.report import ReportScreen  # deferred: opened on demand

        if self.current:
            self.app.push_screen(ReportScreen.for_recipe(self.current))

    def action_launch(self, smoke: bool) -> None:
        name = self._target()
        if name is None:
            return
        info = self.infos[name]
        if not info.loaded:
            self.notify(f"{name} is still being read", severity="warning")
            return
        if info.error:
            self.notify(info.error.splitlines()[0], title=f"{name} does not load", severity="error")
            return
        sets, device, faithful = self.sets, self.device, self.faithful
        cmd = " ".join(["repro run", name, *(f"--set {s}" for s in sets), f"--device {device}",
                        *(["--smoke"] if smoke else []), *(["--faithful"] if faithful else [])])
        runs = info.runs
        body = (f"{cmd}\n\n{'smoke profile: digits, a narrow model, two epochs a stage' if smoke else 'FULL SIZE'}"
                f"{f'; a sweep of {runs} runs, one after another' if runs > 1 else ''}\n"
                f"runs in the background and outlives this app; root {self.app.root}")

        def done(yes: bool | None) -> None:
            if yes:
                self.start(name, sets, smoke, device, faithful)

        dialog = ConfirmDialog(f"Launch {'a smoke' if smoke else 'a full'} run?", body,
                               None if smoke else "estimate: computing ...")
        self.app.push_screen(dialog, done)
        if not smoke:
            self.estimate(dialog, name, sets, faithful)

    @work(thread=True, group="estimate", exclusive=True, exit_on_error=False)
    def estimate(self, dialog: ConfirmDialog, name: str, sets: tuple[str, ...], faithful: bool) -> None:
        """The full run's GPU-hours (`repro plan`'s estimate) into the launch dialog, off the app's thread: it
        imports torch and counts FLOPs."""
        try:
            from repro.plan import launch_estimate  # deferred: torch, only once a full launch is asked for

            line = launch_estimate(load(name, sets, False, faithful))
        except Exception as e:  # noqa: BLE001 - an estimate that fails must not stop the launch
            line = f"estimate: not available ({type(e).__name__}: {e})"
        try:
            self.app.call_from_thread(dialog.set_note, line)
        except RuntimeError:  # the app closed meanwhile
            pass

    @work(thread=True, group="launch", exit_on_error=False)
    def start(self, name: str, sets: tuple[str, ...], smoke: bool, device: str, faithful: bool = False) -> None:
        try:
            resolved = load(name, sets, smoke, faithful)
            la = procs.launch(self.app.root, name, sets, smoke, device, len(resolved), resolved[0].tag, faithful)
        except RecipeError as e:
            self.app.call_from_thread(self.notify, "\n".join(e.lines), title="cannot launch", severity="error")
            return
        except Exception as e:  # noqa: BLE001 - e.g. the root is not writable
            self.app.call_from_thread(self.notify, f"{type(e).__name__}: {e}", title="cannot launch",
                                      severity="error")
            return
        self.app.call_from_thread(self.app.launched_run, la)
