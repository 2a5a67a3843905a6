"""The terminal app, driven through Textual's own harness (App.run_test and the Pilot) on fixture run directories,
plus SVG snapshots of the main screens (pytest-textual-snapshot; `--snapshot-update` after a deliberate change)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_tui import T0, metrics, write_fixture_runs, write_many, write_more_analyses, write_recipes, write_run
from textual.widgets import DataTable, Input, Static, TabbedContent
from textual.worker import WorkerCancelled, WorkerFailed

from repro.rundir import RunLock
from repro.tui import procs
from repro.tui.analysis import AnalysisScreen
from repro.tui.app import ReproApp, run_app
from repro.tui.dialogs import ConfirmDialog, OverridesDialog, parse_overrides
from repro.tui.recipes import RecipesScreen
from repro.tui.rundata import JsonlReader, LogTail, RunScanner, fmt_duration, progress_bar
from repro.tui.runs import RunsScreen, TailLog
from repro.tui.widgets import HeatMap


def sync(fn):  # noqa: ANN001, ANN201
    """Run an async test with asyncio.run (no async plugin needed); pytest still sees its fixtures."""

    @functools.wraps(fn)
    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return asyncio.run(fn(*args, **kwargs))

    return run


NOW = T0 + 86400 + 600  # ten minutes into the "running" fixture run
SIZE = (120, 40)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Fixture recipes and runs under tmp_path, which becomes the working directory (paths shown stay short)."""
    monkeypatch.chdir(tmp_path)
    write_recipes(tmp_path / "recipes")
    monkeypatch.setenv("REPRO_RECIPES", "recipes")
    runs = write_fixture_runs(Path("root"))
    lock = RunLock(runs["running"]).acquire()  # the "running" run is held, as by a live process
    yield {"root": Path("root"), "runs": runs}
    lock.release()


def record_launches(monkeypatch: pytest.MonkeyPatch) -> list:
    """procs.spawn records its launches in the returned list instead of starting them."""
    calls: list = []

    class Fake:
        pid = 4242

        def poll(self) -> int:
            return 0

    def fake_spawn(argv, log, root):  # noqa: ANN001, ANN202
        calls.append({"argv": list(argv), "log": Path(log), "root": Path(root)})
        return Fake()

    monkeypatch.setattr(procs, "spawn", fake_spawn)
    return calls


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list:
    """Launches are recorded instead of started."""
    return record_launches(monkeypatch)


def make_app(root: Path, **kw) -> ReproApp:  # noqa: ANN003
    kw.setdefault("refresh_interval", None)
    kw.setdefault("clock", lambda: NOW)
    return ReproApp(root, **kw)


async def settle(pilot) -> None:  # noqa: ANN001
    """Let every worker finish (cancelled ones included) and the messages they post land."""
    await pilot.pause()
    for _ in range(20):
        pending = [w for w in pilot.app.workers if not w.is_finished]
        if not pending:
            break
        for w in pending:
            try:
                await w.wait()
            except (WorkerCancelled, WorkerFailed):
                pass
        await pilot.pause()


async def wait_for(pilot, cond, timeout: float = 10.0) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


async def exited(pilot, proc: subprocess.Popen) -> int:  # noqa: ANN001
    """The exit code of proc, waited for without blocking the app's event loop."""
    await wait_for(pilot, lambda: proc.poll() is not None)
    return proc.returncode


def text(w: Static) -> str:
    """What a Static shows, as plain text (a Syntax's code, a Text's plain string)."""
    c = w.content
    return c.code if hasattr(c, "code") else c.plain if hasattr(c, "plain") else str(c)


def rows_of(screen) -> dict[str, list]:  # noqa: ANN001
    table = screen.query_one("#runs", DataTable)
    return {k.value: [str(c) for c in table.get_row(k)] for k in table.rows}


async def goto_run(pilot, key: str) -> RunsScreen:  # noqa: ANN001
    screen = pilot.app.screen
    assert isinstance(screen, RunsScreen)
    table = screen.query_one("#runs", DataTable)
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause(0.2)
    await settle(pilot)
    return screen


# ---- the data layer ---------------------------------------------------------------------------------
def test_scanner_reads_every_kind_of_run_and_caches(world: dict) -> None:
    runs = world["runs"]
    scanner = RunScanner(world["root"])
    rows = {r.path: r for r in scanner.scan()}
    assert rows[runs["done"]].state == "done" and rows[runs["done"]].best == pytest.approx(95 - 70 / 6)
    assert rows[runs["running"]].state == "running" and rows[runs["running"]].progress == 0.4
    assert rows[runs["failed"]].state == "failed" and "nan" in rows[runs["failed"]].error
    assert rows[runs["corrupt"]].state == "unreadable" and "not valid JSON" in rows[runs["corrupt"]].error
    assert rows[runs["half"]].state == "unknown" and "no status.json" in rows[runs["half"]].error
    assert rows[runs["old"]].state == "unreadable" and "older version" in rows[runs["old"]].error
    assert [r.run_id for r in scanner.scan()] == sorted((r.run_id for r in rows.values()), reverse=True)
    # a second scan reuses every row whose status.json did not change (the running one is re-read)
    again = {r.path: r for r in scanner.scan()}
    assert all(again[p] is rows[p] for p in rows if p != runs["running"])
    # a new epoch: metrics appended, then status.json rewritten (as the engine does)
    with open(runs["running"] / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 5, "test_acc": 99.5}) + "\n")
    status = json.loads((runs["running"] / "status.json").read_text())
    (runs["running"] / "status.json").write_text(json.dumps(dict(status, epoch=5, progress=0.5)))
    row = {r.path: r for r in scanner.scan()}[runs["running"]]
    assert (row.best, row.epoch, row.progress) == (99.5, 5, 0.5)
    # the process dies: its lock goes, the run reads as killed
    assert {r.path: r for r in RunScanner(world["root"], locked=lambda p: False).scan()}[runs["running"]].state \
        == "killed"
    assert fmt_duration(754) == "12:34" and fmt_duration(None) == "-" and progress_bar(0.5).endswith("50%")


def test_jsonl_reader_is_incremental_and_survives_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3')  # a torn last line
    r = JsonlReader(path)
    assert [x["a"] for x in r.read_new()] == [1, 2]
    with open(path, "a") as f:
        f.write('}\nnot json\n{"a": 4}\n')
    assert [x["a"] for x in r.read_new()] == [3, 4] and not r.reset
    tmp = tmp_path / "new.jsonl"
    tmp.write_text('{"a": 9}\n')
    os.replace(tmp, path)  # a resume rewrites the file atomically
    assert [x["a"] for x in r.read_new()] == [9] and r.reset


def test_log_tail_reads_a_bounded_chunk_of_a_huge_log(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    with open(log, "wb") as f:
        f.truncate(3 << 30)  # a 3 GB (sparse) log ...
        f.seek(3 << 30)
        f.write("".join(f"line {i}\n" for i in range(500)).encode())  # ... ending in real lines
    tail = LogTail(log, lines=200)
    lines = tail.read_new()
    assert lines[-1] == "line 499" and len(lines) == 200 and tail.bytes_read <= 64 * 1024
    with open(log, "a") as f:
        f.write("line 500\npartial")
    assert tail.read_new() == ["line 500"]
    with open(log, "a") as f:
        f.write(" end\n")
    assert tail.read_new() == ["partial end"]
    assert tail.bytes_read <= 64 * 1024 + 100
    log.write_text("fresh\n")  # truncated / replaced: start again from its end
    assert tail.read_new() == ["fresh"]


def test_spawn_detaches_the_run(tmp_path: Path) -> None:
    out = tmp_path / "x.launch.log"
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid(), os.environ['REPRO_ROOT'])"
    proc = procs.spawn([sys.executable, "-c", code], out, tmp_path / "root")
    assert proc.wait(timeout=30) == 0
    assert out.read_text().split() == ["True", "True", str((tmp_path / "root").resolve())]


def test_overrides_parse() -> None:
    assert parse_overrides("train.epochs=3 --set model.arch=wrn-16-2 --set=run.seed=2 'a.b=\"x y\"'") == [
        "train.epochs=3", "model.arch=wrn-16-2", "run.seed=2", 'a.b="x y"']
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides("train.epochs")


def test_run_app_builds_and_runs_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = []
    monkeypatch.setattr(ReproApp, "run", lambda self: seen.append(self.root))
    run_app(tmp_path)
    assert seen == [tmp_path]


# ---- the recipes screen -----------------------------------------------------------------------------
@sync
async def test_recipes_screen_search_overrides_device_and_launch(world: dict, spawned: list,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs, "detect_devices", lambda: procs.DEVICES)  # a machine with a GPU
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RecipesScreen)
        table = screen.query_one("#recipes", DataTable)
        assert [k.value for k in table.rows] == ["broken", "tiny", "tiny_sweep"]
        assert screen.infos["tiny"].method == "train" and screen.infos["tiny_sweep"].runs == 3
        assert "widht" in screen.infos["broken"].error
        assert [str(c) for c in table.get_row("tiny")][1] == "unknown"  # its newest run is the half-written one
        # search: "/" focuses it, typing filters, escape clears it and returns to the table
        await pilot.press("slash", *"sweep")
        assert [k.value for k in table.rows] == ["tiny_sweep"]
        await pilot.press("escape")
        assert len(table.rows) == 3 and table.has_focus and screen.current == "tiny_sweep"  # the cursor stays
        await pilot.press("up")
        await settle(pilot)
        assert screen.current == "tiny"
        assert "name = \"tiny\"" in text(screen.query_one("#recipe-toml", Static))
        # device and preview profile
        await pilot.press("d", "d")
        assert screen.device == "cuda"
        await pilot.press("d")
        assert screen.device == "auto"
        await pilot.press("d", "t")
        assert screen.device == "cpu" and screen.smoke_preview
        await settle(pilot)
        assert "resolved (smoke" in text(screen.query_one("#recipe-toml", Static))
        # overrides: a bad one is refused in the dialog, a good one applied
        await pilot.press("o")
        assert isinstance(app.screen, OverridesDialog)
        app.screen.query_one(Input).value = "train.epochs=-"
        await pilot.press("1", "enter")
        await settle(pilot)
        assert isinstance(app.screen, OverridesDialog)
        assert "train.epochs" in text(app.screen.query_one("#overrides-errors", Static))
        app.screen.query_one(Input).value = "train.epochs=2 --set run.seed=7"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, RecipesScreen) and screen.sets == ("train.epochs=2", "run.seed=7")
        await pilot.press("o", "escape")
        assert screen.sets == ("train.epochs=2", "run.seed=7")
        # launch: "n" cancels, "f" then escape cancels, "s" then enter launches
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n", "f", "escape")
        assert isinstance(app.screen, RecipesScreen) and spawned == []
        await pilot.press("s", "enter")
        await settle(pilot)
        assert len(spawned) == 1
        argv = spawned[0]["argv"]
        assert argv[1:5] == ["-m", "repro.cli", "run", "tiny"]
        assert argv[argv.index("--device") + 1] == "cpu" and "--smoke" in argv
        assert ["--set", "train.epochs=2"] == argv[argv.index("train.epochs=2") - 1:argv.index("train.epochs=2") + 1]
        out = Path(argv[argv.index("--out") + 1])
        assert out.parent == (world["root"] / "tiny").resolve() and out.name.endswith("-smoke") and out.is_dir()
        assert spawned[0]["log"].resolve() == out.parent / f"{out.name}.launch.log"
        assert isinstance(app.screen, RunsScreen) and app.select_next == str(world["root"] / "tiny" / out.name)
        # a sweep is launched whole, without --out; a recipe that does not load is not launched
        await pilot.press("1")
        await pilot.press("down")
        await settle(pilot)
        assert screen.current == "tiny_sweep"
        await pilot.press("f", "y")
        await settle(pilot)
        assert len(spawned) == 2 and "--out" not in spawned[1]["argv"] and "--smoke" not in spawned[1]["argv"]
        await pilot.press("1", "up", "up")
        await settle(pilot)
        assert screen.current == "broken"
        await pilot.press("s")
        assert isinstance(app.screen, RecipesScreen) and len(spawned) == 2
        # enter shows the recipe's runs
        await pilot.press("down", "enter")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert app.screen.query_one("#runs-filter", Input).value == "tiny"


@sync
async def test_recipes_are_listed_at_first_paint_and_read_in_a_worker(world: dict) -> None:
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#recipes", DataTable)  # just mounted: every name is listed
        assert [k.value for k in table.rows] == ["broken", "tiny", "tiny_sweep"]
        await settle(pilot)  # the worker has read the files: every column filled
        rows = {k.value: [str(c) for c in table.get_row(k)] for k in table.rows}
        assert rows["tiny"][2:] == rows["tiny_sweep"][2:] == ["demo", "train", "digits", "cifar_resnet_8"]
        assert rows["broken"][2:] == ["?", "?", "?", "?"] and "widht" in app.screen.infos["broken"].error


@sync
async def test_recipes_screen_offers_faithful_and_lists_the_differences(world: dict, spawned: list,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.fidelity import differences_for
    from repro.tui.recipes import recipe_info

    monkeypatch.delenv("REPRO_RECIPES")  # the shipped recipes
    info = recipe_info("freetickets_edst_wrn28x10_cifar10")
    assert [i for i, _ in info.differences] == [d.id for d in differences_for("freetickets_edst_wrn28x10_cifar10")]
    assert ("bf16_autocast", 'run.precision = "fp32"') in info.differences
    monkeypatch.setenv("REPRO_RECIPES", "recipes")
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("down")
        await settle(pilot)
        assert screen.current == "tiny" and not screen.faithful
        await pilot.press("F")
        await settle(pilot)
        assert screen.faithful and "resolved (full, faithful)" in text(screen.query_one("#recipe-toml", Static))
        assert "faithful = true" in text(screen.query_one("#recipe-toml", Static))
        assert "profile [b]faithful[/b]" in text(screen.query_one("#launch-bar", Static))
        await pilot.press("s", "enter")
        await settle(pilot)
        assert len(spawned) == 1 and "--faithful" in spawned[0]["argv"]


# ---- the runs screen --------------------------------------------------------------------------------
@sync
async def test_runs_screen_rows_filter_resume_and_analysis_keys(world: dict, spawned: list) -> None:
    runs = {k: str(v) for k, v in world["runs"].items()}
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        rows = rows_of(screen)
        assert set(rows) == set(runs.values())
        assert rows[runs["running"]][3:6] == ["running", "train", "4/10"]
        assert rows[runs["running"]][8:10] == ["10:00", "15:00"]  # elapsed 10 min at 40%: 15 min to go
        assert rows[runs["done"]][3] == "done" and rows[runs["done"]][8] == "12:34"
        assert rows[runs["corrupt"]][3] == "unreadable" and "not valid JSON" in rows[runs["corrupt"]][10]
        assert rows[runs["half"]][3] == "unknown" and "no status.json" in rows[runs["half"]][10]
        assert rows[runs["old"]][3] == "unreadable" and "older version" in rows[runs["old"]][10]
        # the selected run's log tail and charts
        await goto_run(pilot, runs["done"])
        log = screen.query_one("#run-log", TailLog)
        assert len(log.raw) == 7 and log.raw[-1] == "10:12:34 analysis predict ..."
        assert screen._records and len(screen._records) == 6
        # filter
        await pilot.press("slash", *"failed")
        assert list(rows_of(screen)) == [runs["failed"]]
        await pilot.press("escape")
        assert len(rows_of(screen)) == 6
        # resume: refused for done and running runs, launched for a failed one (a sweep point: via recipe.toml)
        await goto_run(pilot, runs["done"])
        await pilot.press("r")
        await goto_run(pilot, runs["running"])
        await pilot.press("r", "x", "X")  # its lock is held by this very process: refused, never signalled
        await settle(pilot)
        assert spawned == []
        await goto_run(pilot, runs["failed"])
        await pilot.press("r")
        await settle(pilot)
        argv = spawned[0]["argv"]
        assert argv[4] == str(Path(runs["failed"]) / "recipe.toml") and "--resume" in argv
        assert argv[argv.index("--out") + 1] == str(Path(runs["failed"]).resolve())
        assert argv[argv.index("--device") + 1] == "cpu"
        # x and X on a run that is not running do nothing but say so
        await goto_run(pilot, runs["corrupt"])
        await pilot.press("x", "X")
        # analyses: "a" (or enter) opens them, escape comes back
        await goto_run(pilot, runs["done"])
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, AnalysisScreen)
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, AnalysisScreen)
        await pilot.press("escape", "1")
        assert isinstance(app.screen, RecipesScreen)
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0


LOCKER = """
import fcntl, json, os, signal, sys, time
run = sys.argv[1]
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
fd = os.open(os.path.join(run, ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())
st = json.load(open(os.path.join(run, "status.json")))
st["pid"] = os.getpid()
json.dump(st, open(os.path.join(run, "status.json"), "w"))
print("locked", flush=True)
time.sleep(60)
"""


def start_locker(run: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(run), mode], stdout=subprocess.PIPE,
                            start_new_session=True, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@sync
async def test_stop_sends_sigterm_then_sigkill_to_the_process_group(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    root = Path("root")
    status = {"state": "running", "stage": "train", "epoch": 1, "epochs": 9, "progress": 0.1, "started": "x"}
    polite = write_run(root, "tiny", "20260201-000000", status, metrics(1))
    stubborn = write_run(root, "tiny", "20260202-000000", status, metrics(1))
    third = write_run(root, "tiny", "20260203-000000", status, metrics(1))
    procs_ = {"polite": start_locker(polite, "default"), "stubborn": start_locker(stubborn, "ignore"),
              "third": start_locker(third, "ignore")}
    try:
        app = make_app(root, stop_grace=0.5, refresh_interval=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await settle(pilot)
            screen = app.screen
            assert [rows_of(screen)[str(p)][3] for p in (polite, stubborn, third)] == ["running"] * 3
            # polite: SIGTERM ends it
            await goto_run(pilot, str(polite))
            await pilot.press("x")
            assert await exited(pilot, procs_["polite"]) == -signal.SIGTERM
            # stubborn ignores SIGTERM: SIGKILL follows after the grace period
            await goto_run(pilot, str(stubborn))
            await pilot.press("x")
            await pilot.pause(0.2)
            assert procs_["stubborn"].poll() is None and str(stubborn) in screen.stopping
            assert await exited(pilot, procs_["stubborn"]) == -signal.SIGKILL
            # third: X kills at once
            await goto_run(pilot, str(third))
            await pilot.press("X")
            assert await exited(pilot, procs_["third"]) == -signal.SIGKILL
            await wait_for(pilot, lambda: all(rows_of(screen)[str(p)][3] == "killed"
                                              for p in (polite, stubborn, third)))
            assert "no process holds the run" in rows_of(screen)[str(third)][10]
    finally:
        for p in procs_.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@sync
async def test_live_refresh_follows_a_growing_run(world: dict) -> None:
    run = world["runs"]["running"]
    app = make_app(world["root"], refresh_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        screen = await goto_run(pilot, str(run))
        with open(run / "log.txt", "a") as f:
            f.write("2026-01-02T10:05:00 train epoch 5/10 loss 0.4600\n")
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps(dict(metrics(5)[-1])) + "\n")
        status = json.loads((run / "status.json").read_text())
        (run / "status.json").write_text(json.dumps(dict(status, epoch=5, progress=0.5)))
        log = screen.query_one("#run-log", TailLog)
        await wait_for(pilot, lambda: log.raw and log.raw[-1] == "10:05:00 train epoch 5/10 loss 0.4600")
        await wait_for(pilot, lambda: rows_of(screen)[str(run)][5] == "5/10" and len(screen._records) == 5)


@sync
async def test_two_thousand_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "root"
    write_many(root, 2000)
    app = make_app(root)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#runs", DataTable)
        assert table.row_count == 2000
        cold = (app.scan_ms, screen.apply_ms)
        times = []
        for _ in range(3):
            n = app.scans
            app.scan()
            await wait_for(pilot, lambda n=n: app.scans > n)
            await pilot.pause()
            times.append(app.scan_ms + screen.apply_ms)
        # one run changes: only its row is re-read and updated
        target = root / "bulk_07" / "20250101-000007"
        status = json.loads((target / "status.json").read_text())
        (target / "status.json").write_text(json.dumps(dict(status, state="failed", error="boom")))
        app.scan()
        await wait_for(pilot, lambda: rows_of(screen)[str(target)][3] == "failed")
        await pilot.press("down", "down", "pagedown", "end", "home")
        assert table.row_count == 2000
    with capsys.disabled():
        print(f"\n2,000 runs: first scan {cold[0]:.0f} ms + table {cold[1]:.0f} ms; refreshes (scan + table) "
              f"{', '.join(f'{t:.0f}' for t in times)} ms")


# ---- the analysis screen ----------------------------------------------------------------------------
@sync
async def test_analysis_screen_tabs_export_and_damaged_files(world: dict) -> None:
    runs = world["runs"]
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(AnalysisScreen(runs["done"], "tiny/20260101-100000"))
        await settle(pilot)
        screen = app.screen
        assert screen.tabs == ["predict", "disagreement", "kd", "calibration", "tsne", "mask_overlap", "curve",
                               "earlybird"]
        tabs = screen.query_one("#an-tabs", TabbedContent)
        table = screen.query_one("#predict-table", DataTable)
        assert [str(c) for c in table.get_row_at(3)] == ["ensemble", "93.50", "0.2500", "0.0190"]
        await pilot.press("n")
        assert tabs.active == "tab-disagreement"
        await pilot.press("p", "p")
        assert tabs.active == "tab-earlybird"
        await pilot.press("e", "enter")  # this fixture's /earlybird: an older layout than repro.plots draws: fallback
        await pilot.press("n", "e", "enter")  # predict, drawn by repro.plots.PLOTS
        await settle(pilot)
        assert (runs["done"] / "figures" / "earlybird.png").stat().st_size > 1000
        assert (runs["done"] / "figures" / "predict.png").stat().st_size > 1000
        await pilot.press("g")  # reload
        await settle(pilot)
        assert screen.tabs[0] == "predict"
        await pilot.press("escape")
        # no analysis.h5 yet, and a corrupt one: a message each, no crash
        for run, words in ((runs["running"], "no analysis.h5 yet"), (runs["corrupt"], "cannot read analysis.h5")):
            if run == runs["corrupt"]:
                (run / "analysis.h5").write_bytes(b"not an hdf5 file")
            await app.push_screen(AnalysisScreen(run, run.name))
            await settle(pilot)
            assert words in text(app.screen.query_one(".message", Static))
            await pilot.press("e", "n", "escape")
    # a group from an older writer (fields missing) shows why instead of failing
    from engine.store import write_group

    write_group(runs["failed"] / "analysis.h5", "predict", {"member_acc": [90.0]})
    write_group(runs["failed"] / "analysis.h5", "calibration", {"ece": [0.1, 0.2]})
    app = make_app(world["root"])
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(AnalysisScreen(runs["failed"], "x"))
        await settle(pilot)
        texts = [text(w) for w in app.screen.query(".message")]
        assert any("cannot show /predict: KeyError" in t for t in texts)
        assert any("cannot show /calibration: KeyError" in t for t in texts)


@sync
async def test_analysis_screen_shows_plane_bn_eval_and_channel_overlap(tmp_path: Path) -> None:
    run = tmp_path / "root" / "curve" / "20260101-000000"
    run.mkdir(parents=True)
    write_more_analyses(run)
    app = make_app(tmp_path / "root")
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(AnalysisScreen(run, "curve/20260101-000000"))
        await settle(pilot)
        screen = app.screen
        assert screen.tabs == ["mask_overlap", "plane", "bn_eval"]
        assert not [w for w in screen.query(".message") if "cannot show" in text(w)]
        notes = " ".join(text(w) for w in screen.query(".note"))
        assert "pruning ratio 0.30: EB ticket at epoch 3" in notes and "pruning ratio 0.50: no EB ticket" in notes
        assert "train loss: min 0.14 at alpha 0.50, beta 0.15" in notes
        assert len(screen.query(HeatMap)) == 4  # two ratios, then train loss and test error over the plane
        table = screen.query_one("#tab-bn_eval DataTable", DataTable)
        assert [str(c) for c in table.get_row_at(2)] == ["mean", "0.6000", "6.0000", "0.6000", "6.0000"]


@sync
async def test_analysis_screen_shows_corruption(tmp_path: Path) -> None:
    import numpy as np

    from engine.store import write_group

    run = tmp_path / "root" / "ft" / "20260101-000000"
    run.mkdir(parents=True)
    acc = np.array([[90.0, 80.0], [70.0, 60.0]])
    write_group(run / "analysis.h5", "corruption", {
        "corruptions": ["fog", "zoom_blur"], "severities": np.array([1, 2]), "acc": acc, "nll": acc / 100,
        "ece": acc / 1000, "acc_mean": 75.0, "nll_mean": 0.75, "ece_mean": 0.075, "ece_pooled": 0.07,
        "member_names": ["t1"], "member_acc": acc[None], "member_nll": acc[None] / 100, "member_ece": acc[None] / 1000,
    }, attrs={"source": "generated"}, meta={"recipe": "ft", "run_id": run.name})
    app = make_app(tmp_path / "root")
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(AnalysisScreen(run, "ft/20260101-000000"))
        await settle(pilot)
        screen = app.screen
        assert screen.tabs == ["corruption"]
        notes = " ".join(text(w) for w in screen.query(".note"))
        assert "accuracy 75.00%, NLL 0.7500, ECE 0.0750 (pooled 0.0700); generated" in notes
        table = screen.query_one("#tab-corruption DataTable", DataTable)
        assert [str(c) for c in table.get_row_at(1)] == ["zoom_blur", "70.00", "60.00", "65.00"]
        assert [str(c) for c in table.get_row_at(2)] == ["mean", "80.00", "70.00", "75.00"]


# ---- snapshots ----------------------------------------------------------------------------------------
def test_snapshot_recipes(world: dict, snap_compare) -> None:  # noqa: ANN001
    async def ready(pilot) -> None:  # noqa: ANN001
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)

    assert snap_compare(make_app(world["root"], timings=False), terminal_size=SIZE, run_before=ready)


def test_snapshot_runs(world: dict, snap_compare) -> None:  # noqa: ANN001
    async def ready(pilot) -> None:  # noqa: ANN001
        await pilot.press("2")
        await settle(pilot)
        await goto_run(pilot, str(world["runs"]["done"]))

    assert snap_compare(make_app(world["root"], timings=False), terminal_size=SIZE, run_before=ready)


def test_snapshot_analysis_predict(world: dict, snap_compare) -> None:  # noqa: ANN001
    async def ready(pilot) -> None:  # noqa: ANN001
        await pilot.press("2")
        await settle(pilot)
        await goto_run(pilot, str(world["runs"]["done"]))
        await pilot.press("a")
        await settle(pilot)

    assert snap_compare(make_app(world["root"], timings=False), terminal_size=SIZE, run_before=ready)


def test_snapshot_analysis_heatmap(world: dict, snap_compare) -> None:  # noqa: ANN001
    async def ready(pilot) -> None:  # noqa: ANN001
        await pilot.app.push_screen(AnalysisScreen(world["runs"]["done"], "tiny/20260101-100000"))
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)

    assert snap_compare(make_app(world["root"], timings=False), terminal_size=SIZE, run_before=ready)
