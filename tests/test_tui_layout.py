"""The terminal app's second pass (issue 18): no key acts on a row the filter hides, a launch shows its run, recipes
re-read from disk, a layout that fits 80x24 to 240x70, sorting, devices that exist, export path and format, the
sweep-stop warning, "stopped" runs and their active time, exact wording, and keys at first paint."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import test_tui
from digits_recipes import write_recipe
from fixtures_tui import BROKEN, T0, TINY, iso, metrics, write_run
from test_tui import SIZE, make_app, record_launches, rows_of, settle, sync, text, wait_for
from textual.widgets import DataTable, Footer, Input, Static

from repro.tui import procs
from repro.tui import recipes as recipes_mod
from repro.tui.analysis import AnalysisScreen
from repro.tui.dialogs import ConfirmDialog, ExportDialog
from repro.tui.recipes import RecipesScreen, recipe_info
from repro.tui.rundata import RunScanner, row_cells
from repro.tui.runs import COL, COLUMNS, RunsScreen, TailLog
from repro.tui.words import plural

REAL_DETECT = procs.detect_devices  # before any fixture replaces it
SMALL = (80, 24)
BIG = (240, 70)
world = test_tui.world  # the fixture recipes and runs


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list:
    """Launches and signals are recorded instead of done; the machine has no GPU."""
    calls = record_launches(monkeypatch)
    monkeypatch.setattr(procs, "signal_run", lambda pid, sig: calls.append({"signal": (pid, sig)}) or "sent")
    monkeypatch.setattr(procs, "detect_devices", lambda: ("auto", "cpu"))
    return calls


async def goto(pilot, key: str) -> RunsScreen:  # noqa: ANN001
    screen = pilot.app.screen
    table = screen.query_one("#runs", DataTable)
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause(0.2)
    await settle(pilot)
    return screen


# ---- 2. a filter that leaves no rows: no key acts ------------------------------------------------------
@sync
async def test_no_action_key_acts_when_the_filter_leaves_no_rows(world: dict, spawned: list) -> None:
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        recipes = app.screen
        await pilot.press("slash", *"zzz", "enter")
        assert recipes.query_one("#recipes", DataTable).row_count == 0 and recipes.current is None
        stack = list(app.screen_stack)
        for key in ("a", "x", "X", "r", "s", "f", "o", "enter"):
            await pilot.press(key)
            await settle(pilot)
            assert app.screen_stack == stack and app.screen is recipes, key
        assert spawned == []
        await pilot.press("2")
        await settle(pilot)
        runs = app.screen
        await pilot.press("slash", *"zzz", "enter")
        assert rows_of(runs) == {} and runs.selected is None
        stack = list(app.screen_stack)
        for key in ("a", "x", "X", "r", "s", "f", "enter"):
            await pilot.press(key)
            await settle(pilot)
            assert app.screen_stack == stack and app.screen is runs, key
        assert spawned == [] and not runs.stopping


@sync
async def test_keys_act_on_the_row_under_the_cursor_not_on_a_hidden_one(world: dict, spawned: list) -> None:
    runs = world["runs"]
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("down")  # tiny
        await settle(pilot)
        assert screen.current == "tiny"
        await pilot.press("slash", *"sweep", "enter")  # tiny is hidden now; tiny_sweep is the only row
        assert screen.current == "tiny_sweep"
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmDialog) and app.screen.body.startswith("repro run tiny_sweep ")
        await pilot.press("escape", "2")
        await settle(pilot)
        await goto(pilot, str(runs["done"]))
        await pilot.press("slash", *"failed", "enter")  # the done run is hidden: r resumes the failed one shown
        await pilot.press("r")
        await settle(pilot)
        assert len(spawned) == 1 and spawned[0]["argv"][4] == str(runs["failed"] / "recipe.toml")


@sync
async def test_a_launch_clears_a_stale_filter_and_selects_the_new_run(world: dict, spawned: list) -> None:
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        runs = app.screen
        await pilot.press("slash", *"failed", "enter")
        assert len(rows_of(runs)) == 1
        await pilot.press("1")
        await settle(pilot)
        await pilot.press("down")  # tiny
        await settle(pilot)
        await pilot.press("s", "enter")
        await settle(pilot)
        assert app.screen is runs and len(spawned) == 1
        argv = spawned[0]["argv"]
        new = Path(argv[argv.index("--out") + 1])
        (new / "status.json").write_text(json.dumps({"state": "running", "stage": "train", "progress": 0.0}))
        app.scan()
        key = str(world["root"] / "tiny" / new.name)
        await wait_for(pilot, lambda: runs.cursor_key == key)
        table = runs.query_one("#runs", DataTable)
        assert runs.query_one("#runs-filter", Input).value == "" and len(table.rows) == 7
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == key
        await settle(pilot)
        assert runs.selected == key and app.select_next is None


def test_a_sweep_point_has_its_tag_in_its_own_column(world: dict) -> None:
    rows = {r.key: r for r in RunScanner(world["root"]).scan()}
    cells = row_cells(rows[str(world["runs"]["failed"])], T0)
    assert (cells[COL["run"]], cells[COL["tag"]]) == ("20260103-100000", "seed1")
    assert row_cells(rows[str(world["runs"]["done"])], T0)[COL["tag"]] == ""


# ---- 3. recipes re-read from disk ----------------------------------------------------------------------
@sync
async def test_a_fixed_recipe_loses_its_error_and_new_files_appear(world: dict) -> None:
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert "widht" in screen.infos["broken"].error
        write_recipe(Path("recipes"), dict(BROKEN, model={"arch": "cifar_resnet_8", "width": 0.5}), "broken.toml")
        write_recipe(Path("recipes"), dict(TINY, name="tiny2"), "tiny2.toml")
        await pilot.press("g")
        await settle(pilot)
        assert screen.infos["broken"].error == "" and screen.infos["broken"].method == "train"
        table = screen.query_one("#recipes", DataTable)
        assert [k.value for k in table.rows] == ["broken", "tiny", "tiny2", "tiny_sweep"]
        assert str(table.get_row("broken")[0]) == "broken" and table.get_row("broken")[0].style == ""
        # the poll (no key) sees a file change by its size and mtime, and a removed file
        write_recipe(Path("recipes"), BROKEN, "broken.toml")
        Path("recipes/tiny2.toml").unlink()
        screen.load_recipes()
        await settle(pilot)
        assert "widht" in screen.infos["broken"].error and "tiny2" not in screen.infos
        assert [k.value for k in table.rows] == ["broken", "tiny", "tiny_sweep"]


# ---- 4. layout ------------------------------------------------------------------------------------------
@sync
async def test_every_screen_fits_80x24_and_fills_240x70(world: dict) -> None:
    for size in (SMALL, BIG):
        app = make_app(world["root"])
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            w, h = size
            screen = app.screen
            assert screen.query_one(Footer).region.y == h - 1
            assert screen.query_one("#launch-bar").region.y == h - 2
            pane = screen.query_one("#recipe-pane")
            assert pane.display is (w >= 110)
            if w >= 200:
                assert pane.region.width == int(w * 0.4)
            await pilot.press("i")  # the pane on demand (instead of the table when narrow)
            await pilot.pause()
            assert pane.display is (w < 110)
            assert screen.focused is (pane if w < 110 else screen.query_one("#recipes", DataTable))
            await pilot.press("i", "2")
            await settle(pilot)
            runs = app.screen
            assert runs.query_one(Footer).region.y == h - 1 and runs.query_one("#runs-status").region.y == h - 2
            table = runs.query_one("#runs", DataTable)
            scrollbar = int(sum(width + 2 for _, width in COLUMNS) > w)
            assert table.region.height == len(table.rows) + 1 + scrollbar  # its rows (up to half the screen)
            bottom = runs.query_one("#run-bottom")
            assert bottom.region.height == h - 6 - table.region.height  # the log and charts take the rest
            assert runs.query_one("#run-charts").display is (w >= 110)
            widths = sum(width + 2 for width in (18, 21, 10, 10))  # recipe, run, tag, state with cell padding
            assert widths <= w
            await goto(pilot, str(world["runs"]["done"]))
            await pilot.press("a")
            await settle(pilot)
            an = app.screen
            assert an.query_one(Footer).region.y == h - 1
            chart = an.query_one(".chart-wide")
            assert chart.region.height == max(10, int(h * 0.3))


@sync
async def test_the_log_wraps_and_can_be_maximised(world: dict) -> None:
    run = world["runs"]["done"]
    with open(run / "log.txt", "a") as f:
        f.write(f"{iso(T0 + 800)} " + "word " * 60 + "\n")
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        screen = await goto(pilot, str(run))
        log = screen.query_one("#run-log", TailLog)
        assert len(log.raw) == 8 and log.raw[-1].startswith("10:13:20 word word")
        assert len(log.lines) > len(log.raw)  # the long line wraps
        assert max(strip.cell_length for strip in log.lines) <= log.scrollable_content_region.width
        narrow = len(log.lines)
        await pilot.press("m")
        await pilot.pause()
        assert screen.maximized is log and log.region.width == SIZE[0]
        await pilot.pause(0.1)
        assert len(log.lines) < narrow  # wrapped again at the full width
        await pilot.press("escape")
        await pilot.pause()
        assert screen.maximized is None and screen.focused is screen.query_one("#runs", DataTable)
        await pilot.press("m", "m", "1")  # m again also restores; the next key is a key, not filter text
        assert isinstance(app.screen, RecipesScreen)
        assert screen.query_one("#runs-filter", Input).value == ""


# ---- 6. sorting, devices, export, sweep stop, stopped runs, active time ------------------------------------
@sync
async def test_columns_sort_by_key_and_by_header_click(world: dict) -> None:
    runs = {k: str(v) for k, v in world["runs"].items()}
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        recipes = app.screen
        table = recipes.query_one("#recipes", DataTable)
        await pilot.click("#recipes", offset=(2, 0))  # the "name" header: reversed
        assert [k.value for k in table.rows] == ["tiny_sweep", "tiny", "broken"]
        await pilot.press("less_than_sign")  # by latest run: broken "-", tiny "unknown", tiny_sweep "unreadable"
        assert recipes.sort_col == "latest run"
        assert [k.value for k in table.rows] == ["broken", "tiny", "tiny_sweep"]
        await pilot.press("2")
        await settle(pilot)
        screen = app.screen
        keys = lambda: list(rows_of(screen))  # noqa: E731
        assert keys() == [runs[k] for k in ("old", "half", "corrupt", "failed", "running", "done")]  # newest first
        x = sum(width + 2 for width in (18, 21, 10)) + 2  # inside the "state" header
        await pilot.click("#runs", offset=(x, 0))
        assert screen.sort_col == "state"
        assert [rows_of(screen)[k][COL["state"]] for k in keys()] == ["done", "failed", "running", "unknown",
                                                                      "unreadable", "unreadable"]
        await pilot.click("#runs", offset=(x, 0))
        assert [rows_of(screen)[k][COL["state"]] for k in keys()][0] == "unreadable" and screen.sort_reverse
        await pilot.press("less_than_sign")  # the next column: stage
        assert screen.sort_col == "stage"
        assert "sorted by stage" in text(screen.query_one("#runs-status", Static))


@sync
async def test_device_choice_offers_only_devices_that_exist(world: dict, spawned: list) -> None:
    import torch

    assert procs.DEVICES[:2] == ("auto", "cpu")
    expected = ("auto", "cpu", "cuda") if torch.cuda.is_available() else ("auto", "cpu")
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert screen.devices == ("auto", "cpu")
        seen = []
        for _ in range(3):
            await pilot.press("d")
            seen.append(screen.device)
        assert seen == ["cpu", "auto", "cpu"]
    assert REAL_DETECT() == expected  # the real probe (a child process), checked against torch in this one


@sync
async def test_export_asks_for_the_path_and_format(world: dict) -> None:
    run = world["runs"]["done"]
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(AnalysisScreen(run, "tiny/20260101-100000"))
        await settle(pilot)
        await pilot.press("e")
        dialog = app.screen
        assert isinstance(dialog, ExportDialog)
        box = dialog.query_one("#export-path", Input)
        assert box.value == str(run / "figures" / "predict.png")
        await pilot.press("ctrl+t")
        assert box.value == str(run / "figures" / "predict.svg")
        box.value = "elsewhere/p.txt"
        await pilot.press("enter")
        assert app.screen is dialog
        assert text(dialog.query_one("#export-errors", Static)) == \
            "'elsewhere/p.txt': the file name must end in .png, .svg, .pdf"
        box.value = "elsewhere/p.svg"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, AnalysisScreen)
        assert Path("elsewhere/p.svg").read_text().lstrip().startswith("<?xml")
        assert not (run / "figures" / "predict.png").exists()
        await pilot.press("e", "escape")
        await settle(pilot)
        assert isinstance(app.screen, AnalysisScreen) and not (run / "figures").exists()


LOCKER = """
import fcntl, json, os, sys, time
run = sys.argv[1]
fd = os.open(os.path.join(run, ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(60)
"""


@sync
async def test_stopping_a_sweep_point_says_the_whole_sweep_stops(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    root = Path("root")
    run = write_run(root, "tiny_sweep", "20260201-000000-seed1", {
        "state": "running", "stage": "train", "epoch": 1, "epochs": 9, "progress": 0.1, "tag": "seed1"}, metrics(1))
    # argv as `repro run tiny_sweep` has it: "run" and no --out
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(run), "run"], stdout=subprocess.PIPE,
                            start_new_session=True, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        status = json.loads((run / "status.json").read_text())
        (run / "status.json").write_text(json.dumps(dict(status, pid=proc.pid)))
        assert procs.runs_whole_sweep(proc.pid) is True
        app = make_app(root)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await settle(pilot)
            await goto(pilot, str(run))
            await pilot.press("x")
            dialog = app.screen
            assert isinstance(dialog, ConfirmDialog) and dialog.title_text == "Stop the whole sweep?"
            assert "stopping it stops the whole sweep" in dialog.body and f"pid {proc.pid}" in dialog.body
            await pilot.press("n")
            await pilot.pause(0.2)
            assert proc.poll() is None
            await pilot.press("x", "y")
            await wait_for(pilot, lambda: proc.poll() is not None)
            assert proc.returncode == -15
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_sigterm_runs_read_stopped_and_elapsed_leaves_out_the_gap(tmp_path: Path) -> None:
    from repro.launch import active_segments

    root = tmp_path / "root"
    base = {"stage": "train", "epoch": 2, "epochs": 4, "progress": 0.5, "started": iso(T0)}
    stopped = write_run(root, "tiny", "20260101-000001", dict(base, state="killed", updated=iso(T0 + 100),
                                                              error="terminated (SIGTERM)"))
    vanished = write_run(root, "tiny", "20260101-000002", dict(base, state="running", updated=iso(T0 + 100)))
    resumed = write_run(root, "tiny", "20260101-000003", dict(base, state="running", resumed=iso(T0 + 1000),
                                                              active_s=300.0, updated=iso(T0 + 1100)))
    rows = {r.path: r for r in RunScanner(root, locked=lambda p: p == resumed).scan()}
    assert rows[stopped].state == "stopped" and rows[vanished].state == "killed"
    r = rows[resumed]
    assert r.elapsed(T0 + 1100) == 400.0 and r.eta(T0 + 1100) == 400.0  # 300 s before + 100 s since the resume
    cells = row_cells(r, T0 + 1100)
    assert (cells[COL["elapsed"]], cells[COL["ETA"]]) == ("6:40", "6:40")
    assert active_segments({"started": iso(T0), "updated": iso(T0 + 300)})["active_s"] == 300.0
    seg = active_segments({"started": iso(T0), "resumed": iso(T0 + 1000), "active_s": 300.0,
                           "updated": iso(T0 + 1100)})
    assert seg["active_s"] == 400.0 and isinstance(seg["resumed"], str)


# ---- 7. wording -----------------------------------------------------------------------------------------
@sync
async def test_wording(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (plural(1, "member"), plural(2, "group"), plural(0, "run")) == ("1 member", "2 groups", "0 runs")
    monkeypatch.delenv("REPRO_RECIPES")
    demo = recipe_info("demo_sparse_digits")
    assert demo.description.startswith("Static sparse training (`fix`)")
    assert recipes_mod.PAPERS["demo"] == "a demo on scikit-learn's digits (the line below says what it trains)"
    assert "EDST" not in recipes_mod.PAPERS["demo"]
    monkeypatch.setenv("REPRO_RECIPES", "recipes")
    done = str(world["runs"]["done"])
    app = make_app(world["root"], timings=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        screen = await goto(pilot, done)
        assert text(screen.query_one("#runs-status", Static)) == " 6 runs, 1 running   root root"
        row = rows_of(screen)[done]
        assert row[COL["state"]] == "done" and row[COL["stage"]] == ""  # not "analysis:ood"
        detail = text(screen.query_one("#run-detail", Static))
        assert "best acc 83.33  final 83.33" in detail and "analysis:ood" not in detail
        await pilot.press("slash", *"running")  # the running run only
        await settle(pilot)
        assert text(screen.query_one("#runs-status", Static)).startswith(" 1 of 6 runs, 1 running")
        await pilot.press("escape")
        await goto(pilot, done)
        await pilot.press("a")
        await settle(pilot)
        assert "analysis.h5: 8 groups" in text(app.screen.query_one("#an-title", Static))
        assert "; 3 members on 40 test points" in text(app.screen.query(".note").first())
    one = Path("root2/tiny/20260101-000000")
    write_run(Path("root2"), "tiny", one.name, {"state": "done", "progress": 1.0, "started": iso(T0)})
    app = make_app(Path("root2"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        assert text(app.screen.query_one("#runs-status", Static)) == " 1 run, 0 running   root root2"


# ---- 8. keys at first paint ------------------------------------------------------------------------------
@sync
async def test_first_keys_reach_the_table_and_nothing_loads_on_the_event_loop(world: dict,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    threads = []
    real = recipes_mod.recipe_info

    def spy(name: str):  # noqa: ANN202
        threads.append(threading.current_thread() is threading.main_thread())
        return real(name)

    monkeypatch.setattr(recipes_mod, "recipe_info", spy)
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, RecipesScreen)
        assert screen.focused is screen.query_one("#recipes", DataTable)  # not the search box
        await pilot.press("down", "down")
        assert screen.query_one("#search", Input).value == ""
        await settle(pilot)
        assert screen.current == "tiny_sweep"
        assert threads and not any(threads)  # every recipe was read off the event loop's thread
        await pilot.press("2")
        assert isinstance(app.screen, RunsScreen) and app.screen.focused is app.screen.query_one("#runs")


# ---- snapshots at 80x24 ------------------------------------------------------------------------------------
def test_snapshot_recipes_80x24(world: dict, snap_compare) -> None:  # noqa: ANN001
    async def ready(pilot) -> None:  # noqa: ANN001
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)

    assert snap_compare(make_app(world["root"]), terminal_size=SMALL, run_before=ready)


def test_snapshot_runs_80x24(world: dict, snap_compare) -> None:  # noqa: ANN001
    async def ready(pilot) -> None:  # noqa: ANN001
        await pilot.press("2")
        await settle(pilot)
        await goto(pilot, str(world["runs"]["done"]))

    assert snap_compare(make_app(world["root"]), terminal_size=SMALL, run_before=ready)


def test_snapshot_analysis_80x24(world: dict, snap_compare) -> None:  # noqa: ANN001
    async def ready(pilot) -> None:  # noqa: ANN001
        await pilot.press("2")
        await settle(pilot)
        await goto(pilot, str(world["runs"]["done"]))
        await pilot.press("a")
        await settle(pilot)

    assert snap_compare(make_app(world["root"]), terminal_size=SMALL, run_before=ready)
