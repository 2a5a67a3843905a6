"""The CLI's reading commands and the terminal app's recipe and run lists start without torch: each runs in a fresh
interpreter that then asserts `'torch' not in sys.modules` (and sklearn, h5py and matplotlib stay out too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_tui import write_fixture_runs

HEAVY = ("torch", "sklearn", "h5py", "matplotlib")
REPO = Path(__file__).resolve().parents[1]


def fresh(code: str, *args: str) -> str:
    """Run `code` in a new interpreter, then report which heavy modules it imported (one per line)."""
    probe = f"{code}\nimport sys\nprint('LOADED', *[m for m in {HEAVY!r} if m in sys.modules])"
    res = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip().splitlines()[-1]


CLI = """
import sys
from repro.cli import main
sys.argv[0] = "repro"
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
"""


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["list"],
    ["show", "demo_digits"],
    ["show", "freetickets_edst_wrn28x10_cifar10", "--smoke", "--faithful"],
    ["validate", "recipes/demo_digits.toml"],
    ["validate", "recipes/earlybird_vgg16_cifar10.toml", "recipes/demo_curve_digits.toml"],
    ["differences", "demo_digits"],
])
def test_cli_reading_commands_import_no_torch(argv: list[str]) -> None:
    assert fresh(CLI, *argv) == "LOADED"


def test_cli_runs_imports_no_torch(tmp_path: Path) -> None:
    write_fixture_runs(tmp_path)
    assert fresh(CLI, "runs", "--root", str(tmp_path)) == "LOADED"


def test_tui_recipe_and_run_lists_import_no_torch(tmp_path: Path) -> None:
    """The app's first screens (recipes: every row's columns once read; runs: the scanned list) and its device
    probe (a child process asks torch)."""
    write_fixture_runs(tmp_path)
    app = f"""
import asyncio
from pathlib import Path
from textual.widgets import DataTable
from repro.tui.app import ReproApp

async def go():
    app = ReproApp(Path({str(tmp_path)!r}))
    async with app.run_test(size=(160, 50)) as pilot:
        table = app.screen.query_one("#recipes", DataTable)
        for _ in range(200):  # the recipes are read by a worker thread
            await pilot.pause(0.05)
            if table.row_count and "…" not in {{str(table.get_row_at(i)[2]) for i in range(table.row_count)}}:
                break
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert rows and all("?" not in map(str, r[2:6]) and all(str(c) for c in r[2:6]) for r in rows), rows[:3]
        await pilot.press("2")
        await pilot.pause(0.5)
        runs = app.screen.query_one(DataTable)
        assert runs.row_count >= 3, runs.row_count

asyncio.run(go())
"""
    assert fresh(app) == "LOADED"
