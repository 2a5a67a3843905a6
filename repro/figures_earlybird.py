"""Early-Bird figures: the detector's distance over the search with each ticket's epoch, and the pairwise
channel-mask distance matrices over epochs (the paper's overlap figure). Functions `(group, title) -> Figure`,
as in repro.plots."""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_COLORS = ("#4c78a8", "#e45756", "#54a24b", "#b279a2", "#f58518", "#72b7b2", "#9d755d", "#eeca3b")


def _pct(r: float) -> str:
    return f"{float(r) * 100:g}%"


def plot_earlybird(g: dict[str, Any], title: str) -> plt.Figure:
    """Left: the detector's statistic (largest distance from the newest mask to the older ones in the window) per
    ratio against epochs, the threshold dashed, a star where each ticket was drawn. Right: parameters and FLOPs of
    the network pruned from each ticket, relative to the unpruned one."""
    ratios = np.asarray(g["ratios"], dtype=float)
    epochs = np.asarray(g["epoch"])
    win = np.asarray(g["window_distance"], dtype=float)
    cons = np.asarray(g["consecutive_distance"], dtype=float)
    eb = np.asarray(g["eb_epoch"])
    attrs = g.get("_attrs", {})
    thr = float(attrs.get("threshold", 0.1))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    for i, r in enumerate(ratios):
        c = _COLORS[i % len(_COLORS)]
        label = f"p={_pct(r)}" + (f", EB at epoch {int(eb[i])}" if eb[i] >= 0 else ", no ticket")
        ax1.plot(epochs, win[i], "-", color=c, lw=1.6, label=label)
        ax1.plot(epochs, cons[i], ":", color=c, lw=1.0, alpha=0.7)
        if eb[i] >= 0:
            ax1.plot([eb[i]], [win[i][int(eb[i])]], "*", color=c, ms=14, mec="black", mew=0.6)
    ax1.axhline(thr, color="black", ls="--", lw=1, label=f"threshold {thr:g}")
    ax1.set_xlabel("epochs trained")
    ax1.set_ylabel("mask distance")
    ax1.set_ylim(bottom=0)
    ax1.set_title(f"EB detector (solid: max over a window of {attrs.get('window', '?')}; dotted: consecutive)",
                  fontsize=9)
    ax1.legend(loc="upper right", fontsize=8)
    pd, fd = float(g["params_dense"]), float(g["flops_dense"])
    pp, fp = np.asarray(g["params_pruned"], dtype=float), np.asarray(g["flops_pruned"], dtype=float)
    x = np.arange(len(ratios))
    has = pp > 0
    ax2.bar(x[has] - 0.18, pp[has] / pd, width=0.36, color="#4c78a8", label="parameters")
    ax2.bar(x[has] + 0.18, fp[has] / fd, width=0.36, color="#f58518", label="FLOPs")
    ax2.axhline(1.0, color="black", lw=0.8)
    ax2.set_xticks(x, [_pct(r) for r in ratios])
    ax2.set_xlabel("channels pruned (p)")
    ax2.set_ylabel("pruned / unpruned")
    ax2.set_ylim(0, 1.1)
    ax2.set_title(f"pruned EB tickets (unpruned: {pd / 1e6:.3g}M params, {fd / 1e6:.4g} MFLOPs)", fontsize=9)
    ax2.legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_channel_overlap(g: dict[str, Any], title: str) -> plt.Figure:
    """One heat-map per ratio of the distance between the masks after epochs i and j (0 = identical, drawn
    yellow as in the paper), the EB epoch marked by dashed lines."""
    mats = np.asarray(g.get("distance_by_ratio", np.asarray(g["distance"])[None]), dtype=float)
    attrs = g.get("_attrs", {})
    ratios = np.asarray(g.get("ratios", [attrs.get("ratio", float("nan"))]), dtype=float)
    eb = np.asarray(g.get("eb_epoch", [-1] * len(ratios)))
    n = len(mats)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n + 0.6, 4.2), constrained_layout=True, squeeze=False)
    im = None
    for ax, m, r, e in zip(axes[0], mats, ratios, eb):
        im = ax.imshow(m, cmap="viridis_r", vmin=0.0, vmax=1.0, interpolation="none", origin="upper")
        if e >= 0:
            ax.axvline(e, color="red", ls="--", lw=0.8)
            ax.axhline(e, color="red", ls="--", lw=0.8)
        ax.set_title(f"p={_pct(r)}" + (f", EB at epoch {int(e)}" if e >= 0 else ""), fontsize=9)
        ax.set_xlabel("epochs")
        ax.set_ylabel("epochs")
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), fraction=0.046, pad=0.04, label="mask distance")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_mask_overlap_any(g: dict[str, Any], title: str) -> plt.Figure:
    """/mask_overlap of either kind: the EB channel matrices over epochs, or repro.plots' weight-ticket heat-map."""
    if g.get("_attrs", {}).get("kind") == "channel":
        return plot_channel_overlap(g, title)
    from repro.plots import plot_mask_overlap

    return plot_mask_overlap(g, title)
