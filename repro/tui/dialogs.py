"""Modal dialogs: confirm a launch, edit a recipe's `--set` overrides (checked before they are accepted), choose
an exported figure's path and format."""

from __future__ import annotations

import shlex
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from repro.recipe import RecipeError, load


class ConfirmDialog(ModalScreen[bool]):
    """A question answered with enter/y (yes) or escape/n (no)."""

    BINDINGS = [
        Binding("enter,y", "answer(True)", "Yes"),
        Binding("escape,n", "answer(False)", "No"),
    ]

    def __init__(self, title: str, body: str, note: str | None = None) -> None:
        super().__init__()
        self.title_text, self.body, self.note = title, body, note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body", markup=False)
            if self.note is not None:  # a line filled in later (the launch's cost estimate)
                yield Static(self.note, id="dialog-note", classes="dialog-body", markup=False)
            yield Static("[b]enter[/b]/[b]y[/b] yes    [b]escape[/b]/[b]n[/b] no", classes="dialog-keys")

    def set_note(self, text: str) -> None:
        """Replace the note line (a no-op once the dialog is gone)."""
        self.note = text
        if self.is_attached and self.note is not None:
            self.query_one("#dialog-note", Static).update(text)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def parse_overrides(text: str) -> list[str]:
    """'train.epochs=3 --set model.arch=wrn-16-2' -> ['train.epochs=3', 'model.arch=wrn-16-2'] (shell quoting)."""
    out = []
    for tok in shlex.split(text):
        if tok == "--set":
            continue
        tok = tok.removeprefix("--set=")
        if "=" not in tok:
            raise ValueError(f"'{tok}': an override is KEY=VALUE (a dotted key, a TOML value)")
        out.append(tok)
    return out


class OverridesDialog(ModalScreen["tuple[str, ...] | None"]):
    """Edit `--set K=V` overrides for one recipe; enter checks them against the recipe, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, recipe: str, sets: tuple[str, ...]) -> None:
        super().__init__()
        self.recipe, self.sets = recipe, sets

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"--set overrides for [b]{self.recipe}[/b]", classes="dialog-title")
            yield Static("dotted keys with TOML values, space separated, e.g. "
                         "train.epochs=3 model.arch=wrn-16-2 'run.seed=2'", classes="dialog-body")
            yield Input(" ".join(shlex.quote(s) for s in self.sets), id="overrides-input",
                        placeholder="KEY=VALUE ...")
            yield Static("", id="overrides-errors", classes="dialog-errors", markup=False)
            yield Static("[b]enter[/b] check and apply    [b]escape[/b] cancel", classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted, "#overrides-input")
    def submitted(self, event: Input.Submitted) -> None:
        try:
            sets = parse_overrides(event.value)
        except ValueError as e:
            self.query_one("#overrides-errors", Static).update(str(e))
            return
        self.query_one("#overrides-errors", Static).update("checking ...")
        self.check(tuple(sets))

    @work(thread=True, exclusive=True, group="check-overrides")
    def check(self, sets: tuple[str, ...]) -> None:
        try:
            load(self.recipe, sets, False)
            problem = ""
        except RecipeError as e:
            problem = "\n".join(e.lines)
        except Exception as e:  # noqa: BLE001 - shown in the dialog
            problem = f"{type(e).__name__}: {e}"
        self.app.call_from_thread(self._checked, sets, problem)

    def _checked(self, sets: tuple[str, ...], problem: str) -> None:
        if problem:
            self.query_one("#overrides-errors", Static).update(problem)
        else:
            self.dismiss(sets)

    def action_cancel(self) -> None:
        self.dismiss(None)


EXPORT_FORMATS = ("png", "svg", "pdf")
"""The figure formats an export offers (matplotlib writes each from the file's suffix)."""


class ExportDialog(ModalScreen["Path | None"]):
    """Where to write an exported figure and in which format: the path's suffix is the format, ctrl+t cycles it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+t", "cycle_format", "Format")]

    def __init__(self, what: str, default: Path) -> None:
        super().__init__()
        self.what, self.default = what, Path(default)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Export {self.what}", classes="dialog-title", markup=False)
            yield Static(f"file to write; its suffix is the format ({', '.join(EXPORT_FORMATS)})",
                         classes="dialog-body")
            yield Input(str(self.default), id="export-path")
            yield Static("", id="export-errors", classes="dialog-errors", markup=False)
            yield Static("[b]enter[/b] export    [b]ctrl+t[/b] next format    [b]escape[/b] cancel",
                         classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def action_cycle_format(self) -> None:
        box = self.query_one("#export-path", Input)
        path = Path(box.value.strip() or self.default)
        fmt = path.suffix.lstrip(".").lower()
        nxt = EXPORT_FORMATS[(EXPORT_FORMATS.index(fmt) + 1) % len(EXPORT_FORMATS)] if fmt in EXPORT_FORMATS \
            else EXPORT_FORMATS[0]
        box.value = str(path.with_suffix(f".{nxt}"))

    @on(Input.Submitted, "#export-path")
    def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        fmt = Path(text).suffix.lstrip(".").lower()
        if not text or fmt not in EXPORT_FORMATS:
            self.query_one("#export-errors", Static).update(
                f"'{text}': the file name must end in .{', .'.join(EXPORT_FORMATS)}")
            return
        self.dismiss(Path(text).expanduser())

    def action_cancel(self) -> None:
        self.dismiss(None)
