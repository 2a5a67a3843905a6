"""The help screen (`?`): every screen's keys, read from the screens' own BINDINGS so that it never goes stale."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

EXTRA = {"Everywhere": [("^p", "command palette")],
         "Recipes": [("enter", "the recipe's runs")],
         "Runs": [("enter", "the run's analyses")]}


def key_label(key: str) -> str:
    """A key as the footer writes it: 'question_mark' -> '?', 'ctrl+q' -> '^q', 'escape' -> 'esc'."""
    names = {"question_mark": "?", "escape": "esc", "left_square_bracket": "[", "right_square_bracket": "]",
             "slash": "/", "enter": "enter", "less_than_sign": "<"}
    if key.startswith("ctrl+"):
        return "^" + key_label(key[5:])
    return names.get(key, key)


def binding_rows(bindings: list[BindingType]) -> list[tuple[str, str]]:
    """(keys, description) of each binding with a description (its tooltip, the long form, where the footer's label
    is short), alternative keys joined by '/'."""
    out = []
    for b in bindings:
        b = b if isinstance(b, Binding) else Binding(*b)
        if b.description:
            out.append(("/".join(key_label(k.strip()) for k in b.key.split(",")), b.tooltip or b.description))
    return out


def screen_sections() -> list[tuple[str, list[BindingType]]]:
    """(section title, bindings) of the app and each of its screens, in the order a user meets them."""
    from repro.tui.analysis import AnalysisScreen  # deferred: the help screen is opened on demand (h5py)
    from repro.tui.app import ReproApp
    from repro.tui.recipes import RecipesScreen
    from repro.tui.report import ReportScreen
    from repro.tui.runs import RunsScreen

    return [("Everywhere", list(ReproApp.BINDINGS)), ("Recipes", list(RecipesScreen.BINDINGS)),
            ("Runs", list(RunsScreen.BINDINGS)), ("Analysis", list(AnalysisScreen.BINDINGS)),
            ("Report", list(ReportScreen.BINDINGS))]


def section_table(title: str, rows: list[tuple[str, str]], here: bool = False) -> Table:
    """One screen's keys as a two-column table; the screen the help was opened from is marked."""
    t = Table(title=Text(title + ("  (this screen)" if here else ""), style="bold reverse" if here else "bold"),
              title_justify="left", show_header=False, box=None, padding=(0, 1), expand=True)
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column(ratio=1)
    for keys, what in rows:
        t.add_row(keys, what)
    return t


class HelpScreen(ModalScreen[None]):
    """Every screen's keys; escape (or ? or q) closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen #help-box { width: 100%; max-width: 120; height: auto; max-height: 100%;
                           border: thick $primary; background: $surface; padding: 0 1; }
    HelpScreen #help-columns { height: auto; }
    HelpScreen .help-column { width: 1fr; height: auto; padding: 0 1; }
    HelpScreen .help-section { height: auto; margin: 0 0 1 0; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def __init__(self, current: Screen | None = None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        here = type(self.current).__name__.removesuffix("Screen") if self.current is not None else ""
        columns: list[list[Static]] = [[], []]
        heights = [0, 0]
        for title, bindings in screen_sections():  # each section into the shorter column, in order
            rows = binding_rows(bindings) + EXTRA.get(title, [])
            col = heights.index(min(heights))
            columns[col].append(Static(section_table(title, rows, title == here), classes="help-section"))
            heights[col] += len(rows) + 2
        with VerticalScroll(id="help-box"):
            with Horizontal(id="help-columns"):
                for sections in columns:
                    yield Vertical(*sections, classes="help-column")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "keys"
