"""The app's own commands in the command palette (ctrl+p): jump to a recipe or a run, launch a recipe's smoke run
(through the launch dialog), open a paper's Report view, export the shown figure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from textual.app import App
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen
from textual.widgets import DataTable, Input

from engine.config import names
from repro.recipe import recipe_names


async def _mode_base(app: App, mode: str) -> Screen:
    """Switch to a mode and close what was pushed on it (analysis, report), so its table is what is shown."""
    await app.switch_mode(mode)
    while len(app.screen_stack) > 1:
        await app.pop_screen()
    return app.screen


def _show_row(screen: Screen, table_id: str, filter_id: str, key: str) -> bool:
    """Put the cursor on row `key`, clearing the screen's filter when it hides the row; False if there is none."""
    table = screen.query_one(table_id, DataTable)
    if key not in table.rows:
        screen.query_one(filter_id, Input).value = ""
        screen.search_text = ""  # type: ignore[attr-defined]  # the table is refilled at once, not on Input.Changed
    if key not in table.rows:
        return False
    table.move_cursor(row=table.get_row_index(key), animate=False)
    table.focus()
    return True


async def jump_to_recipe(app: App, name: str) -> Screen | None:
    """The recipes screen with `name` selected; None (and a notice) if no such row."""
    screen = await _mode_base(app, "recipes")
    if not _show_row(screen, "#recipes", "#search", name):
        app.notify(f"no recipe {name}", severity="warning")
        return None
    screen.current = name  # type: ignore[attr-defined]  # at once: a launch right after acts on it
    return screen


async def jump_to_run(app: App, key: str) -> None:
    """The runs screen with the run at path `key` selected (once the next scan lists it, if it does not yet)."""
    screen = await _mode_base(app, "runs")
    if not _show_row(screen, "#runs", "#runs-filter", key):
        app.select_next = key  # type: ignore[attr-defined]
        app.scan()  # type: ignore[attr-defined]


async def smoke_run(app: App, name: str) -> None:
    """Select the recipe and ask to launch its smoke run (the usual confirm dialog)."""
    screen = await jump_to_recipe(app, name)
    if screen is not None:
        screen.action_launch(True)  # type: ignore[attr-defined]


async def open_report(app: App, kind: str, target: str) -> None:
    from repro.tui.report import ReportScreen  # deferred: the view is built only when a report is asked for

    await app.push_screen(ReportScreen(kind, target))


class ReproCommands(Provider):
    """Recipes, runs and papers by name; the shown screen's figure export."""

    async def startup(self) -> None:
        self.recipes = recipe_names()
        self.papers = [p for p in names.PAPERS if p != "demo"]

    def commands(self) -> list[tuple[str, Callable[[], Awaitable[Any] | Any], str]]:
        """(text, action, help) of every command the palette can offer now."""
        app = self.app
        out: list[tuple[str, Callable[[], Awaitable[Any] | Any], str]] = []
        export = getattr(self.screen, "action_export", None)
        if export is not None:
            out.append(("export the shown figure", export, "as the PNG/PDF `repro plot` draws"))
        out += [(f"report paper {p}", partial(open_report, app, "paper", p), "its tables: ours / paper")
                for p in self.papers]
        for n in self.recipes:
            out.append((f"recipe {n}", partial(jump_to_recipe, app, n), "select it on the Recipes screen"))
            out.append((f"smoke run {n}", partial(smoke_run, app, n), "launch its smoke run (asks first)"))
            out.append((f"report recipe {n}", partial(open_report, app, "recipe", n), "its paper's tables and runs"))
        for r in getattr(app, "runs", []):
            out.append((f"run {r.recipe}/{r.run_id}", partial(jump_to_run, app, r.key), f"{r.state}: select it"))
        return out

    async def discover(self) -> Hits:
        for text, action, help_ in self.commands():
            if not text.startswith(("recipe ", "smoke run ", "report recipe ", "run ")):
                yield DiscoveryHit(text, action, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, action, help_ in self.commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), action, text=text, help=help_)
