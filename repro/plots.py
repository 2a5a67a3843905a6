"""Figures of the analyses (matplotlib, headless): PLOTS maps an analysis mode to its drawing function."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from engine.store import read_group  # noqa: E402


def plot_predict(g: dict[str, Any], title: str) -> plt.Figure:
    """Each member's accuracy and NLL as bars, with the ensemble as a dashed line across them."""
    names = list(g["member_names"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(6.0, 1.2 * len(names) + 4), 3.6), constrained_layout=True)
    x = range(len(names))
    ax1.bar(x, g["member_acc"], color="#4c78a8", label="member")
    ax1.axhline(float(g["ensemble_acc"]), color="#e45756", ls="--", label=f"ensemble {float(g['ensemble_acc']):.2f}%")
    lo = min(float(min(g["member_acc"])), float(g["ensemble_acc"]))
    ax1.set_ylim(max(0.0, lo - 5), 100)
    ax1.set_ylabel("accuracy (%)")
    ax2.bar(x, g["member_nll"], color="#72b7b2", label="member")
    ax2.axhline(float(g["ensemble_nll"]), color="#e45756", ls="--", label=f"ensemble {float(g['ensemble_nll']):.3f}")
    ax2.set_ylabel("NLL")
    for ax in (ax1, ax2):
        ax.set_xticks(list(x), names, rotation=30, ha="right")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_sparsity(g: dict[str, Any], title: str) -> plt.Figure:
    """Each masked layer's density over the epochs (thin lines) and the whole model's (thick)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    epochs, dens = g["epoch"], g["layer_density"]
    for j in range(dens.shape[1]):
        ax1.plot(epochs, dens[:, j], lw=0.8, alpha=0.6)
    ax1.plot(epochs, g["overall_density"], color="black", lw=2.5, label="overall")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("density")
    ax1.legend(loc="upper right", fontsize=8)
    last = dens[-1]
    ax2.barh(range(len(last)), last, color="#4c78a8")
    ax2.set_yticks(range(len(last)), list(g["layer_names"]), fontsize=6)
    ax2.invert_yaxis()
    ax2.set_xlabel("final density")
    fig.suptitle(title, fontsize=10)
    return fig


PLOTS: dict[str, Callable[[dict[str, Any], str], plt.Figure]] = {
    "predict": plot_predict,
    "sparsity": plot_sparsity,
}


def plot(run_dir: Path, mode: str, out: Path) -> Path:
    """Draw `mode` of a run's analysis.h5 into `out` (format from its suffix: png, pdf, svg)."""
    g = read_group(Path(run_dir) / "analysis.h5", mode)
    attrs = g.get("_attrs", {})
    fig = PLOTS[mode](g, f"{attrs.get('recipe', '')} / {attrs.get('run_id', '')}: {mode}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
