"""The Report view: the verdict on a run, a recipe or a paper, as `repro report` computes it.

A run: each `[expect]` row (metric, paper, ours, difference, tolerance, within or not), its training FLOPs as a
multiple of the dense model's and its wall time (repro.report.report_rows). A recipe: its paper's tables and the
rows of every run of the recipe. A paper: its tables in the paper's layout, each cell "ours / paper" coloured by
its state (repro.tables.paper_tables). Everything is read in a worker thread (metrics.jsonl, analysis.h5)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Static

from repro.tui.widgets import message

CELL_STYLE = {"within": "green", "outside": "bold red", "not run": "dim", "ours only": "cyan"}
STATE_STYLE = {"done": "green", "running": "cyan", "failed": "red", "killed": "yellow", "damaged": "bold red",
               "unreadable": "red", "unknown": "dim"}


def num(v: float | None, fmt: str = ".2f") -> str:
    """A number as the CLI's report prints it; '-' for none."""
    return "-" if v is None else format(v, fmt)


def wall_text(seconds: float | None) -> str:
    """Wall time as REPORT.md writes it: '12.6 min', '3.1 h'; '-' when unknown."""
    if seconds is None:
        return "-"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def verdict(row: dict[str, Any]) -> Text:
    """'within' (green), 'outside' (red) or '-' (no paper number or no number of ours)."""
    if row["within"] is None:
        return Text("-", style="dim")
    return Text("within", style="green") if row["within"] else Text("outside", style="bold red")


@dataclass
class RunsReport:
    """report_rows of some runs, and one line for each run that gives no row (why)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    """What the Report view shows: a title, runs' rows, a paper's tables (or why it has none)."""

    title: str
    runs: RunsReport | None = None
    paper: str | None = None
    tables: list[Any] = field(default_factory=list)  # repro.tables.PaperTable
    free: list[Any] = field(default_factory=list)  # repro.tables.CellResult
    paper_note: str = ""


def _why_no_rows(run_dir: Path, error: str) -> str:
    """Why report_rows skipped a run: its recipe.toml is missing or does not load."""
    from repro.recipe import RecipeError, load_resolved  # deferred: worker-side (h5py, torch)

    toml = run_dir / "recipe.toml"
    if not toml.exists():
        return "no recipe.toml: a half-written directory or one from an older version" + (f" ({error})" if error
                                                                                           else "")
    try:
        load_resolved(toml)
    except RecipeError as e:
        return f"recipe.toml does not load: {e.lines[0] if e.lines else e}"
    except OSError as e:
        return f"recipe.toml cannot be read: {e}"
    return error or "no row"


def runs_report(run_dirs: list[Path]) -> RunsReport:
    """The CLI's report rows of these run directories; a run that gives none says why in one line."""
    from repro.report import report_rows  # deferred: h5py, and torch once analyses are read
    from repro.rundir import read_run

    infos = [read_run(p) for p in run_dirs]
    rows = report_rows(infos)
    have = {(r["recipe"], r["run_id"]) for r in rows}
    problems = [f"{i.run_id}: {_why_no_rows(i.path, i.error)}" for i in infos if (i.recipe, i.run_id) not in have]
    return RunsReport(rows, problems)


def recipe_runs(root: Path, recipe: str) -> list[Path]:
    """The run directories of one recipe under the root, newest first."""
    from repro.rundir import is_run_dir  # deferred: worker-side (h5py, torch)

    try:
        with os.scandir(root / recipe) as it:
            dirs = [Path(e.path) for e in it if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return []
    return sorted((d for d in dirs if is_run_dir(d)), key=lambda d: d.name, reverse=True)


def paper_verdict(paper: str, root: Path) -> tuple[list[Any], list[Any], str]:
    """A paper's tables and free cells filled from the runs under the root, or a note why there are none."""
    from engine.config import names  # deferred: read in the worker, off the app's start (h5py, torch via repro.report)
    from repro.rundir import is_run_dir, read_run, run_dirs
    from repro.tables import paper_recipes, paper_tables

    if paper not in names.PAPERS or paper == "demo":
        return [], [], f"paper '{paper}': no paper tables (the digits demo has only its [expect] numbers)"
    wanted = set(paper_recipes(paper))
    infos = [read_run(Path(p)) for p, rec, _ in run_dirs(root) if rec in wanted and is_run_dir(Path(p))]
    tables, free = paper_tables(paper, infos)
    return tables, free, "" if tables or free else f"{paper}: no table of this paper is in a recipe"


def compute(kind: str, target: str, root: Path) -> Verdict:
    """The verdict on a run directory ('run'), a recipe by name ('recipe') or a paper ('paper')."""
    if kind == "run":
        path = Path(target)
        return Verdict(f"{path.parent.name}/{path.name}", runs=runs_report([path]))
    if kind == "recipe":
        from repro.recipe import load  # deferred: worker-side (h5py, torch)

        paper = load(target)[0].recipe.paper
        tables, free, note = paper_verdict(paper, root)
        return Verdict(f"recipe {target}", runs=runs_report(recipe_runs(root, target)), paper=paper, tables=tables,
                       free=free, paper_note=note)
    tables, free, note = paper_verdict(target, root)
    return Verdict(f"paper {target}", paper=target, tables=tables, free=free, paper_note=note)


# ---- widgets -----------------------------------------------------------------------------------------------
def run_summary(row: dict[str, Any]) -> Text:
    """One run's line: state, smoke, training FLOPs vs dense, wall time, GPU, nonzero parameters."""
    from repro.report import flops_cell  # deferred: worker-side (h5py, torch)

    t = Text()
    t.append(f"{row['recipe']}/{row['run_id']}", style="bold")
    t.append("  ")
    t.append(row["state"], style=STATE_STYLE.get(row["state"], ""))
    if row["smoke"]:
        t.append("  smoke run: not comparable with the paper's numbers", style="yellow")
    t.append(f"\ntrain FLOPs {flops_cell(row)} x dense   wall time {wall_text(row['wall_time'])}   "
             f"GPU {row.get('gpu') or '-'}")
    if row.get("params_nonzero") is not None:
        t.append(f"   nonzero params {row['params_nonzero']:,}")
    return t


def rows_table(rows: list[dict[str, Any]], with_run: bool) -> DataTable:
    """The `[expect]` rows: metric, paper, ours, difference, tolerance, verdict (and the run, the FLOPs and the
    wall time when the table holds several runs)."""
    from repro.report import flops_cell  # deferred: worker-side (h5py, torch)

    table: DataTable = DataTable(cursor_type="row", zebra_stripes=True, classes="report-table", id="report-rows")
    cols = (["run", "state"] if with_run else []) + ["metric", "paper", "ours", "difference", "tolerance",
                                                     "verdict"] + (["train FLOPs (x dense)", "wall time"]
                                                                   if with_run else [])
    for c in cols:
        table.add_column(c, key=c)
    for r in rows:
        cells: list[Any] = [r["metric"], num(r["paper"]), num(r["reproduced"]), num(r["delta"], "+.2f"),
                            "-" if r["tolerance"] is None else f"± {r['tolerance']:g}", verdict(r)]
        if with_run:
            state = Text(r["state"] + (" (smoke)" if r["smoke"] else ""), style=STATE_STYLE.get(r["state"], ""))
            cells = [r["run_id"], state, *cells, flops_cell(r), wall_text(r["wall_time"])]
        table.add_row(*cells)
    return table


def cell_widget_text(res: Any) -> Text:
    """A paper-table cell: 'ours / paper' coloured within (green), outside (red), not run (dim)."""
    from repro.tables import cell_text  # deferred: worker-side (h5py, torch)

    if res is None:
        return Text("")
    return Text(cell_text(res), style=CELL_STYLE.get(res.state, ""))


def paper_widgets(tables: list[Any], free: list[Any]) -> list[Widget]:
    """Each table as the paper prints it: a title line, a DataTable of 'ours / paper' cells, the claims checked."""
    from repro.tables import claim_counts, claim_line  # deferred: worker-side (h5py, torch)

    out: list[Widget] = []
    for i, t in enumerate(tables):
        states = [r.state for r in t.cells.values()]
        head = Text(t.title or t.id, style="bold")
        head.append(f"   {sum(s != 'not run' for s in states)} of {len(states)} cells run, "
                    f"{states.count('within')} within tolerance" + ("; approximate values" if t.approximate else ""),
                    style="dim")
        head.append(f"\n{t.source}", style="dim")
        out.append(Static(head, classes="report-head"))
        table: DataTable = DataTable(cursor_type="cell", classes="report-table", id=f"paper-table-{i}")
        table.add_column("", key="")
        for c in t.columns:
            table.add_column(c, key=c)
        for r in t.rows:
            table.add_row(Text(r, style="bold"), *(cell_widget_text(t.cells.get((r, c))) for c in t.columns))
        out.append(table)
        if t.claims:
            out.append(Static("\n".join(claim_line(cl, claim_counts(t, cl)) for cl in t.claims), classes="report-note"))
    if free:
        out.append(Static(Text("Other cells", style="bold"), classes="report-head"))
        table = DataTable(cursor_type="row", classes="report-table", id="paper-free")
        table.add_columns("recipe", "cell", "metric", "ours / paper")
        for r in free:
            table.add_row(r.recipe, r.cell.row or "-", r.cell.metric, cell_widget_text(r))
        out.append(table)
    return out


def verdict_widgets(v: Verdict) -> list[Widget]:
    """The Report view's body for a computed verdict."""
    out: list[Widget] = []
    if v.paper is not None:
        if v.tables or v.free:
            out.append(Static(Text.assemble(("cells: ours / paper   ", "dim"), ("within tolerance", "green"), "   ",
                                            ("outside", "bold red"), "   ", ("not run yet", "dim")),
                              classes="report-note"))
            out += paper_widgets(v.tables, v.free)
        elif v.paper_note:
            out.append(Static(Text(v.paper_note, style="dim"), classes="report-note"))
    if v.runs is not None:
        rows = v.runs.rows
        one_run = v.paper is None and len({r["run_id"] for r in rows}) == 1  # a run's report: its summary on top
        if v.paper is not None:
            out.append(Static(Text(f"runs of {v.title.removeprefix('recipe ')}", style="bold"), classes="report-head"))
        if one_run:
            out.append(Static(run_summary(rows[0]), classes="report-head"))
        for err in dict.fromkeys(r["error"] for r in rows if r.get("error")):
            out.append(Static(Text(f"damaged: {err}", style="red"), classes="report-note"))
        if rows:
            out.append(rows_table(rows, with_run=not one_run))
            sources = [s for s in dict.fromkeys(r["source"] for r in rows if r["paper"] is not None) if s]
            if sources:
                out.append(Static(Text("paper's numbers: " + "; ".join(sources), style="dim"), classes="report-note"))
            if not any(r["paper"] is not None for r in rows):
                out.append(Static(Text("no [expect] number for these runs: the main metric is shown", style="dim"),
                                  classes="report-note"))
        for p in v.runs.problems:
            out.append(Static(Text(p, style="red"), classes="report-note"))
        if not rows and not v.runs.problems:
            out.append(Static(Text("no runs yet", style="dim"), classes="report-note"))
    return out


class ReportScreen(Screen):
    """The verdict on a run, a recipe or a paper; `g` reads it again."""

    DEFAULT_CSS = """
    ReportScreen #report-title { height: 1; background: $panel; }
    ReportScreen #report-body { height: 1fr; padding: 0 1; }
    ReportScreen .report-table { height: auto; max-height: 24; margin: 0 0 1 0; }
    ReportScreen .report-head { margin: 1 0 0 0; }
    ReportScreen .report-note { margin: 0 0 1 0; }
    """
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("g", "reload", "Reload"),
    ]

    def __init__(self, kind: str, target: str, root: Path | None = None) -> None:
        super().__init__()
        if kind not in ("run", "recipe", "paper"):
            raise ValueError(f"report of a {kind!r}: a run, a recipe or a paper")
        self.kind, self.target, self.root = kind, str(target), root
        self.verdict: Verdict | None = None

    @classmethod
    def for_run(cls, run_dir: Path) -> ReportScreen:
        return cls("run", str(run_dir))

    @classmethod
    def for_recipe(cls, name: str) -> ReportScreen:
        return cls("recipe", name)

    @classmethod
    def for_paper(cls, paper: str) -> ReportScreen:
        return cls("paper", paper)

    @property
    def label(self) -> str:
        return (f"{Path(self.target).parent.name}/{Path(self.target).name}" if self.kind == "run"
                else f"{self.kind} {self.target}")

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f" Report: {self.label}", style="bold"), id="report-title")
        yield VerticalScroll(message("reading the runs ..."), id="report-body")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="report", exit_on_error=False)
    def load(self) -> None:
        root = Path(self.root or getattr(self.app, "root", "."))
        try:
            result: Verdict | str = compute(self.kind, self.target, root)
        except Exception as e:  # noqa: BLE001 - e.g. a recipe that no longer loads: one line why
            lines = getattr(e, "lines", None)
            result = f"cannot report {self.label}: {lines[0] if lines else f'{type(e).__name__}: {e}'}"
        try:
            self.app.call_from_thread(self.show, result)
        except RuntimeError:  # the app closed meanwhile
            pass

    async def show(self, result: Verdict | str) -> None:
        if not self.is_attached:
            return
        body = self.query_one("#report-body", VerticalScroll)
        await body.remove_children()
        if isinstance(result, str):
            await body.mount(message(result, "red"))
            return
        self.verdict = result
        widgets = verdict_widgets(result)
        await body.mount_all(widgets or [message("nothing to report", "dim")])
        body.scroll_home(animate=False)
        body.focus()  # the arrows scroll the whole report; tab reaches each table
