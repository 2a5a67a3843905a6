"""The Report view (`R`), the help screen (`?`) and the app's commands in the command palette, driven through
Textual's pilot on fixture runs, plus 80x24 snapshots of the Report view and the help screen."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import h5py
import pytest
from digits_recipes import write_recipe
from fixtures_tui import T0, TINY, iso, metrics, write_analysis, write_fixture_runs, write_recipes, write_run
from rich.console import Console
from rich.text import Text
from test_tui import make_app, settle, sync, wait_for
from textual.command import CommandPalette
from textual.widgets import DataTable, Static

from repro.recipe import load, to_toml
from repro.rundir import RunLock
from repro.tui.analysis import AnalysisScreen
from repro.tui.commands import ReproCommands
from repro.tui.help import HelpScreen, binding_rows
from repro.tui.recipes import RecipesScreen
from repro.tui.report import ReportScreen
from repro.tui.runs import RunsScreen

SMALL = (80, 24)
# a demo recipe with [expect] numbers (as demo_digits.toml has), and a FreeTickets-paper recipe with a table
EXPECT = dict(TINY, name="tiny_expect", expect={"source": "fixture target", "tolerance": 3.0,
                                                "metrics": {"ensemble_acc": 95.0, "test_acc": 90.0}})
TABLE = {"id": "t1", "title": "Table 1: digits accuracy", "source": "fixture paper, Table 1",
         "columns": [{"label": "density 0.2"}],
         "rows": [{"label": "tiny", "values": [84.0]}, {"label": "seed 99", "match": {"run.seed": 99},
                                                        "values": [93.5]}]}
PAPER = dict(TINY, name="ft_tiny", paper="freetickets", sweep={"run.seed": [3, 99]},
             expect={"source": "fixture paper", "table": [TABLE]})


def finished(root: Path, recipe: str, run_id: str, **status: object) -> Path:
    """A finished full-size run of the recipe's first sweep point, with six epochs of metrics and the fixture
    analyses."""
    d = write_run(root, recipe, run_id, {"state": "done", "pid": 1, "stage": "train", "epoch": 6, "epochs": 6,
                                         "progress": 1.0, "started": iso(T0), "updated": iso(T0 + 1530),
                                         "finished": iso(T0 + 1530), "error": None, **status}, metrics(6), toml=False)
    (d / "recipe.toml").write_text(to_toml(load(recipe)[0].recipe))
    write_analysis(d)
    return d


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """test_tui's fixture runs, plus runs of recipes with `[expect]` numbers and a paper table, and a damaged one."""
    monkeypatch.chdir(tmp_path)
    recipes = write_recipes(tmp_path / "recipes")
    write_recipe(recipes, EXPECT, "tiny_expect.toml")
    write_recipe(recipes, PAPER, "ft_tiny.toml")
    monkeypatch.setenv("REPRO_RECIPES", "recipes")
    root = Path("root")
    runs = write_fixture_runs(root)
    runs["expect"] = finished(root, "tiny_expect", "20260107-100000",
                              summary={"train_flops_vs_dense": 0.61, "train_flops_dense_epochs": 6})
    runs["damaged"] = finished(root, "tiny_expect", "20260108-100000")
    (runs["damaged"] / "analysis.h5").write_bytes(b"not an hdf5 file at all" * 10)
    runs["paper"] = finished(root, "ft_tiny", "20260109-100000")
    lock = RunLock(runs["running"]).acquire()
    yield {"root": root, "runs": runs}
    lock.release()


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def texts(screen) -> str:  # noqa: ANN001
    """Every Static's content on the screen as plain text (rich tables rendered 200 columns wide)."""
    console = Console(width=200, record=True, file=io.StringIO())
    out = []
    for w in screen.query(Static):
        if isinstance(w.content, (str, Text)):
            out.append(str(w.content))
        else:
            console.print(w.content)
            out.append(console.export_text())
    return "\n".join(out)


async def open_report(pilot, mode: str, key: str) -> ReportScreen:  # noqa: ANN001
    """Select the row `key` on the recipes (mode '1') or runs ('2') screen, press R, wait for the report."""
    await pilot.press(mode)
    await settle(pilot)
    table = pilot.app.screen.query_one("#recipes" if mode == "1" else "#runs", DataTable)
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause(0.2)
    await pilot.press("R")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, ReportScreen)
    return screen


# ---- the Report view --------------------------------------------------------------------------------------
@sync
async def test_report_of_a_run_shows_its_expect_rows(world: dict) -> None:
    run = world["runs"]["expect"]
    with h5py.File(run / "analysis.h5") as f:  # our numbers, read independently of repro.report
        ens = float(f["predict"]["ensemble_acc"][()])
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = recs[-1]["test_acc"]
    assert ens == 93.5 and acc == pytest.approx(95 - 70 / 6)
    app = make_app(world["root"], timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_report(pilot, "2", str(run))
        assert screen.kind == "run" and screen.target == str(run)
        rows = cells(screen.query_one("#report-rows", DataTable))
        assert rows == [["ensemble_acc", "95.00", f"{ens:.2f}", f"{ens - 95:+.2f}", "± 3", "within"],
                        ["test_acc", "90.00", f"{acc:.2f}", f"{acc - 90:+.2f}", "± 3", "outside"]]
        shown = texts(screen)
        assert "tiny_expect/20260107-100000" in shown
        assert "train FLOPs 0.610 (vs 6 ep) x dense" in shown and "wall time 25.5 min" in shown  # 1530 s
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


@sync
async def test_report_of_a_damaged_run_says_why_in_one_line(world: dict) -> None:
    app = make_app(world["root"], timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_report(pilot, "2", str(world["runs"]["damaged"]))
        damaged = [str(w.content) for w in screen.query(Static) if str(w.content).startswith("damaged: ")]
        assert len(damaged) == 1 and "\n" not in damaged[0] and "analysis.h5" in damaged[0]
        rows = cells(screen.query_one("#report-rows", DataTable))
        assert [r[:3] for r in rows] == [["ensemble_acc", "95.00", "-"], ["test_acc", "90.00", "-"]]
        await pilot.press("escape")
        # a directory without recipe.toml gives no row: the view says why
        screen = await open_report(pilot, "2", str(world["runs"]["old"]))
        assert "20260106-100000: no recipe.toml" in texts(screen)
        await pilot.press("escape")
        # a recipe that does not load: one line why
        screen = await open_report(pilot, "1", "broken")
        shown = texts(screen).splitlines()
        assert shown[-1].startswith("cannot report recipe broken: ") and "widht" in shown[-1]


@sync
async def test_report_of_a_recipe_shows_its_paper_table_and_runs(world: dict) -> None:
    app = make_app(world["root"], timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_report(pilot, "1", "ft_tiny")
        assert "Table 1: digits accuracy" in texts(screen)
        table = screen.query_one("#paper-table-0", DataTable)
        acc = 95 - 70 / 6  # the run's last test_acc (fixtures_tui.metrics)
        assert cells(table) == [["tiny", f"{acc:.2f} / 84.00 ok"], ["seed 99", "- / 93.50"]]
        assert table.get_row_at(0)[1].style == "green" and table.get_row_at(1)[1].style == "dim"
        runs = cells(screen.query_one("#report-rows", DataTable))
        assert [r[:8] for r in runs] == [["20260109-100000", "done", "test_acc", "84.00", f"{acc:.2f}",
                                          f"{acc - 84:+.2f}", "± 1", "within"]]  # the table's cell, per run


@sync
async def test_report_of_a_demo_recipe_has_no_paper_tables(world: dict) -> None:
    app = make_app(world["root"], timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_report(pilot, "1", "tiny_expect")
        shown = texts(screen)
        assert "paper 'demo': no paper tables" in shown
        runs = cells(screen.query_one("#report-rows", DataTable))
        assert [(r[0], r[2]) for r in runs] == [("20260108-100000", "ensemble_acc"), ("20260108-100000", "test_acc"),
                                                ("20260107-100000", "ensemble_acc"), ("20260107-100000", "test_acc")]


@sync
async def test_report_is_read_off_the_event_loop(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the verdict is computed (held here), the view says so and keys still work; a result that lands after
    the view was closed is dropped."""
    from repro.tui import report

    release, started = threading.Event(), threading.Event()
    real = report.compute

    def held(*args):  # noqa: ANN002, ANN202
        started.set()
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(report, "compute", held)
    app = make_app(world["root"], timings=False)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await app.push_screen(ReportScreen.for_run(world["runs"]["expect"]))
        await wait_for(pilot, started.is_set)
        assert "reading the runs ..." in texts(app.screen)
        await pilot.press("escape")  # handled while the worker is still held
        assert isinstance(app.screen, RecipesScreen)
        release.set()
        await settle(pilot)
        assert isinstance(app.screen, RecipesScreen)


# ---- help ----------------------------------------------------------------------------------------------------
def test_binding_rows_join_alternative_keys() -> None:
    assert binding_rows([("escape,q", "app.pop_screen", "Back"), ("ctrl+q", "quit", "Quit"), ("x", "y", "")]) == [
        ("esc/q", "Back"), ("^q", "Quit")]


@sync
async def test_question_mark_opens_help_and_escape_closes_it(world: dict) -> None:
    app = make_app(world["root"], timings=False)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        before = list(app.screen_stack)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and app.screen_stack[:-1] == before
        shown = texts(app.screen)
        assert "Recipes  (this screen)" in shown and "Report" in shown and "Smoke run" in shown
        await pilot.press("question_mark")  # a second ? closes it, as escape does
        await pilot.pause()
        assert app.screen_stack == before
        await pilot.press("2", "question_mark")
        await pilot.pause()
        assert "Runs  (this screen)" in texts(app.screen)
        before = app.screen_stack[:-1]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen_stack == before
        await pilot.press("1", "slash", "question_mark")  # in a search box, ? is a character
        await pilot.pause()
        assert app.screen.query_one("#search").value == "?" and not isinstance(app.screen, HelpScreen)


# ---- command palette ---------------------------------------------------------------------------------------------
@sync
async def test_palette_jumps_to_a_recipe_and_a_run(world: dict) -> None:
    app = make_app(world["root"], timings=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        recipes = app.screen
        assert isinstance(recipes, RecipesScreen)
        await pilot.press("slash", *"tiny_ex", "enter")  # a search that hides the recipe jumped to
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"recipe ft_tiny")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is recipes and recipes.current == "ft_tiny"
        table = recipes.query_one("#recipes", DataTable)
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "ft_tiny"
        # a run by name, from the recipes screen: the runs screen with that run under the cursor
        run = world["runs"]["failed"]
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"run tiny_sweep/20260103")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        runs = app.screen
        assert isinstance(runs, RunsScreen)
        table = runs.query_one("#runs", DataTable)
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == str(run)


@sync
async def test_palette_offers_reports_smoke_runs_and_export(world: dict) -> None:
    app = make_app(world["root"], timings=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        provider = ReproCommands(app.screen)
        await provider.startup()
        texts_ = [t for t, _, _ in provider.commands()]
        assert "report paper freetickets" in texts_ and "smoke run ft_tiny" in texts_
        assert "export the shown figure" not in texts_  # the recipes screen has no figure
        assert f"run tiny/{world['runs']['done'].name}" in texts_
        hits = [h async for h in provider.search("report paper freetickets")]
        best = max(hits, key=lambda h: h.score)
        assert best.text == "report paper freetickets"
        await best.command()
        await settle(pilot)
        assert isinstance(app.screen, ReportScreen) and app.screen.kind == "paper"
        assert "Table 1: digits accuracy" in texts(app.screen)
        # smoke run: the launch dialog, as `s` opens it
        await pilot.press("escape")
        smoke = next(a for t, a, _ in provider.commands() if t == "smoke run ft_tiny")
        await smoke()
        await pilot.pause()
        assert type(app.screen).__name__ == "ConfirmDialog" and "repro run ft_tiny" in texts(app.screen)
        await pilot.press("n")
        # a screen with a figure offers its export
        analysis = AnalysisScreen(world["runs"]["done"], "tiny/20260101-100000")
        await app.push_screen(analysis)
        provider = ReproCommands(analysis)
        await provider.startup()
        export = [a for t, a, _ in provider.commands() if t == "export the shown figure"]
        assert export == [analysis.action_export]


# ---- snapshots ---------------------------------------------------------------------------------------------------
def test_snapshot_report(world: dict, snap_compare) -> None:  # noqa: ANN001
    async def ready(pilot) -> None:  # noqa: ANN001
        await pilot.app.push_screen(ReportScreen.for_run(world["runs"]["expect"]))
        await settle(pilot)

    assert snap_compare(make_app(world["root"], timings=False), terminal_size=SMALL, run_before=ready)


def test_snapshot_help(world: dict, snap_compare) -> None:  # noqa: ANN001
    async def ready(pilot) -> None:  # noqa: ANN001
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(make_app(world["root"], timings=False), terminal_size=SMALL, run_before=ready)
