"""Export the analysis on screen as a matplotlib figure: `repro.plots.PLOTS` (so the file matches `repro plot`),
or a plain figure of its arrays when the group has another layout than PLOTS draws (an older run's).
Imports matplotlib (through repro.plots): the analysis screen loads this module only when it exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from repro.plots import PLOTS, plt


def _fallback(g: dict[str, Any], title: str, mode: str) -> Any:
    """A plain figure of a group's numeric arrays (a curve's series against t) for layouts PLOTS cannot draw."""
    if mode == "curve" and "t" in g:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        t = np.asarray(g["t"], dtype=float)
        for k in ("train_loss", "test_loss", "test_nll"):
            if k in g:
                ax1.plot(t, np.asarray(g[k], dtype=float), marker="o", ms=3, label=k)
        for k in ("train_error", "test_error"):
            if k in g:
                ax2.plot(t, np.asarray(g[k], dtype=float), marker="o", ms=3, label=k)
        ax1.set_ylabel("loss")
        ax2.set_ylabel("error (%)")
        for ax in (ax1, ax2):
            ax.set_xlabel("t")
            ax.legend(fontsize=8)
    else:
        arrays = {k: np.asarray(v, dtype=float) for k, v in g.items()
                  if k != "_attrs" and not isinstance(v, list) and np.asarray(v).dtype.kind in "fiub"}
        fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
        for k, a in arrays.items():
            if a.ndim == 1 and a.size > 1:
                ax.plot(np.arange(1, a.size + 1), a, marker="o", ms=3, label=k)
            elif a.ndim == 2:
                for i, row in enumerate(a):
                    ax.plot(np.arange(1, row.size + 1), row, lw=1, label=f"{k}[{i}]")
        ax.set_xlabel("index (epoch)")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def export(run_dir: Path, mode: str, group: dict[str, Any], out: Path | None = None) -> Path:
    """Draw `group` (the /mode of the run's analysis.h5) into <run>/figures/<mode>.png (or `out`)."""
    attrs = group.get("_attrs", {})
    title = f"{attrs.get('recipe', '')} / {attrs.get('run_id', '')}: {mode}"
    fig = None
    if mode in PLOTS:
        try:
            fig = PLOTS[mode](group, title)
        except Exception:  # noqa: BLE001 - a group of another layout (older run) still gets the plain figure
            plt.close("all")
    if fig is None:
        fig = _fallback(group, title, mode)
    out = Path(out) if out else Path(run_dir) / "figures" / f"{mode}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=130)
    finally:
        plt.close(fig)
    return out
