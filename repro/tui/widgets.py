"""Widgets drawn from arrays: a heat map in coloured cells, and a plotext chart filled by a drawing function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static
from textual_plotext import PlotextPlot

VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def colormap(x: float, stops: Sequence[tuple[int, int, int]] = VIRIDIS) -> tuple[int, int, int]:
    """x in [0, 1] to an RGB colour, linear between the stops."""
    if not np.isfinite(x):
        return (40, 40, 40)
    x = min(max(float(x), 0.0), 1.0) * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    f = x - i
    a, b = stops[i], stops[i + 1]
    return tuple(int(round(a[k] + f * (b[k] - a[k]))) for k in range(3))  # type: ignore[return-value]


def heatmap_text(matrix: Any, labels: Sequence[str], fmt: str = ".3f", max_label: int = 10,
                 col_labels: Sequence[str] | None = None, vmax: float | None = None) -> Text:
    """A matrix as rows of coloured cells with the values written in, labels on both axes (`col_labels` for the
    columns when they differ from the rows'), and a scale; colours saturate at `vmax` when given."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.size == 0:
        return Text(f"not a matrix (shape {m.shape})", style="red")
    k_rows, k_cols = m.shape
    labels = [str(s)[:max_label] for s in labels] if len(labels) == k_rows else [str(i + 1) for i in range(k_rows)]
    cols = labels if col_labels is None else [str(s)[:max_label] for s in col_labels]
    finite = m[np.isfinite(m)]
    lo = 0.0 if finite.size == 0 else min(0.0, float(finite.min()))
    hi = max(float(finite.max()) if finite.size else 0.0, lo + 1e-12)
    clipped = vmax is not None and lo < vmax < hi
    if clipped:
        hi = float(vmax)  # type: ignore[arg-type]
    show_values = k_cols <= 16
    label_w = min(max(len(s) for s in labels), max_label)
    cw = max(len(format(hi, fmt)), len(format(lo, fmt)), label_w) + 2 if show_values else 2
    lw = max(len(s) for s in labels) + 1
    t = Text()
    t.append(" " * lw)
    for j in range(k_cols):
        t.append((cols[j] if j < len(cols) else str(j + 1))[: cw - 1].center(cw), style="bold")
    t.append("\n")
    for i in range(k_rows):
        t.append(labels[i].rjust(lw - 1) + " ", style="bold")
        for j in range(k_cols):
            v = m[i, j]
            r, g, b = colormap((v - lo) / (hi - lo))
            fg = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"
            cell = format(v, fmt).center(cw) if show_values else " " * cw
            t.append(cell, style=Style(color=fg, bgcolor=f"rgb({r},{g},{b})"))
        t.append("\n")
    t.append("\n" + " " * lw + format(lo, fmt) + " ")
    for s in range(24):
        r, g, b = colormap(s / 23)
        t.append(" ", style=Style(bgcolor=f"rgb({r},{g},{b})"))
    t.append(" " + format(hi, fmt) + (" and above" if clipped else ""))
    return t


class HeatMap(Static):
    """An annotated heat map of a matrix (see heatmap_text)."""

    def __init__(self, matrix: Any, labels: Sequence[str], fmt: str = ".3f", col_labels: Sequence[str] | None = None,
                 vmax: float | None = None, **kw: Any) -> None:
        super().__init__(heatmap_text(matrix, labels, fmt, col_labels=col_labels, vmax=vmax), **kw)
        self.matrix = np.asarray(matrix, dtype=float)  # the values drawn, rows top to bottom


class _Recorder:
    """Forwards plotext calls to a plot and appends each (name, args, kwargs) to `calls`."""

    def __init__(self, plt: Any, calls: list[tuple[str, tuple, dict]]) -> None:
        self._plt, self._calls = plt, calls

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._plt, name)
        if not callable(fn):
            return fn

        def call(*args: Any, **kw: Any) -> Any:
            self._calls.append((name, args, kw))
            return fn(*args, **kw)

        return call


class Chart(PlotextPlot):
    """A plotext chart whose content comes from `draw(plt)`, called once when it is built; `calls` records what
    `draw` asked plotext for (name, args, kwargs), so what is drawn can be read back without parsing the picture."""

    def __init__(self, draw: Callable[[Any], None], **kw: Any) -> None:
        super().__init__(**kw)
        self.plt.clear_figure()
        self.calls: list[tuple[str, tuple, dict]] = []
        draw(_Recorder(self.plt, self.calls))

    def drawn(self, name: str) -> list[tuple[tuple, dict]]:
        """The (args, kwargs) of every `name` call (e.g. "plot", "scatter")."""
        return [(a, kw) for n, a, kw in self.calls if n == name]


def message(text: str, style: str = "") -> Widget:
    return Static(Text(text, style=style), classes="message")
