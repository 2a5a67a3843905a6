"""Figures of the analyses (matplotlib, headless), one function `(group, title) -> Figure` per analysis.h5 group,
each registered in PLOTS under its analysis name by `@register_plot` beside its definition (timm's
`@register_model`). matplotlib is imported here at module level: this module is the heavy part, and the CLI and
the TUI import it only when they draw."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from engine.registry import Registry
from engine.store import read_group  # noqa: E402

Plot = Callable[[dict[str, Any], str], plt.Figure]
PLOTS: Registry[Plot] = Registry("figure")
"""Analysis name -> the function drawing its group; filled by @register_plot beside each."""
register_plot = PLOTS.register

_COLORS = ("#4c78a8", "#e45756", "#54a24b", "#b279a2", "#f58518", "#72b7b2", "#9d755d", "#eeca3b")


def _pct(r: float) -> str:
    return f"{float(r) * 100:g}%"


@register_plot("predict")
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


@register_plot("sparsity")
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


def _heatmap(ax: plt.Axes, matrix: Any, labels: list[str], fmt: str, cbar_label: str, cmap: str = "RdBu_r") -> None:
    """An annotated square heatmap with the labels on both axes and a colour bar."""
    m = np.asarray(matrix, dtype=float)
    k = m.shape[0]
    im = ax.imshow(m, cmap=cmap, vmin=0.0, vmax=max(float(np.nanmax(m)) if m.size else 0.0, 1e-12))
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=cbar_label)
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    if k <= 16:
        for i in range(k):
            for j in range(k):
                v = m[i, j]
                r, g, b, _ = im.cmap(im.norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # white text on dark cells
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=max(5, 10 - k // 2),
                        color="white" if dark else "black")


def _member_labels(g: dict[str, Any], key: str, k: int) -> list[str]:
    names = g.get(key)
    return [str(n) for n in names] if names is not None and len(names) == k else [str(i + 1) for i in range(k)]


@register_plot("disagreement")
def plot_disagreement(g: dict[str, Any], title: str) -> plt.Figure:
    """Pairwise top-1 disagreement between members as an annotated heatmap; the mean in the title."""
    m = np.asarray(g["matrix"])
    k = m.shape[0]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * k + 3), max(4.0, 0.6 * k + 2.5)), constrained_layout=True)
    _heatmap(ax, m, _member_labels(g, "member_names", k), ".3f", "fraction of test points")
    ax.set_title(f"prediction disagreement, mean {float(g['mean']):.4f}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


@register_plot("kd")
def plot_kd(g: dict[str, Any], title: str) -> plt.Figure:
    """KL(p_row || p_column) between members as an annotated heatmap; the mean in the title."""
    m = np.asarray(g["kl"])
    k = m.shape[0]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * k + 3), max(4.0, 0.6 * k + 2.5)), constrained_layout=True)
    _heatmap(ax, m, _member_labels(g, "member_names", k), ".3f", "KL (nats)", cmap="viridis")
    ax.set_xlabel("q (second argument)")
    ax.set_ylabel("p (first argument)")
    ax.set_title(f"KL(p || q) between members, mean {float(g['mean']):.4f}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


@register_plot("calibration")
def plot_calibration(g: dict[str, Any], title: str) -> plt.Figure:
    """The ensemble's reliability diagram (bin accuracy against confidence, the diagonal as perfect
    calibration) and each member's ECE beside the ensemble's."""
    edges = np.asarray(g["bin_edges"], dtype=float)
    acc, conf, count = (np.asarray(g[k], dtype=float) for k in ("bin_accuracy", "bin_confidence", "bin_count"))
    eces = np.asarray(g["ece"], dtype=float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    width = np.diff(edges)
    filled = count > 0
    ax1.bar(edges[:-1][filled], acc[filled], width=width[filled], align="edge", color="#4c78a8",
            edgecolor="white", label=f"ensemble, ECE {eces[-1]:.4f}")
    ax1.bar(edges[:-1][filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled], align="edge",
            facecolor="none", hatch="//", edgecolor="#e45756", lw=0.8, label="gap to the bin's mean confidence")
    ax1.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax1.set_xlim(0, 1)
    ax1.set_ylim(0, 1)
    ax1.set_xlabel("confidence (max probability)")
    ax1.set_ylabel("accuracy")
    ax1.legend(loc="upper left", fontsize=8)
    ax1.set_title(f"reliability, {len(width)} bins", fontsize=9)
    k = len(eces) - 1
    names = [*_member_labels(g, "member_names", k), "ensemble"]
    ax2.bar(range(k + 1), eces, color=["#72b7b2"] * k + ["#e45756"])
    ax2.set_xticks(range(k + 1), names, rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("ECE")
    ax2.set_title("member vs ensemble ECE", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


@register_plot("ood")
def plot_ood(g: dict[str, Any], title: str) -> plt.Figure:
    """Histograms of the ensemble's max-softmax scores in and out of distribution; AUROC in the title."""
    s_in, s_out = np.asarray(g["scores_in"], dtype=float), np.asarray(g["scores_out"], dtype=float)
    ood_name = g.get("_attrs", {}).get("ood_dataset", "OOD")
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    lo = float(min(s_in.min(initial=1.0), s_out.min(initial=1.0)))
    bins = np.linspace(min(lo, 0.99), 1.0, 31)
    ax.hist(s_in, bins=bins, density=True, alpha=0.55, color="#4c78a8", label=f"in-distribution ({len(s_in)})")
    ax.hist(s_out, bins=bins, density=True, alpha=0.55, color="#e45756", label=f"{ood_name} ({len(s_out)})")
    ax.set_xlabel("max softmax probability of the ensemble")
    ax.set_ylabel("density")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"AUROC {float(g['auroc']):.4f}, AUPR {float(g['aupr']):.4f}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


@register_plot("corruption")
def plot_corruption(g: dict[str, Any], title: str) -> plt.Figure:
    """The ensemble's accuracy on each corruption (rows) at each severity (columns) as an annotated heat map, and
    the mean accuracy and ECE over corruptions against severity, ensemble vs each member."""
    acc = np.asarray(g["acc"], dtype=float)
    sev = np.asarray(g["severities"]).tolist()
    names = [str(n) for n in g["corruptions"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.32 * len(names) + 2)), constrained_layout=True,
                                   gridspec_kw={"width_ratios": [1.2, 1]})
    im = ax1.imshow(acc, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04, label="ensemble accuracy (%)")
    ax1.set_xticks(range(len(sev)), [str(s) for s in sev])
    ax1.set_yticks(range(len(names)), names, fontsize=7)
    ax1.set_xlabel("severity")
    if acc.size <= 120:
        for (i, j), v in np.ndenumerate(acc):
            ax1.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6, color="white" if v < acc.mean() else "k")
    ax1.set_title(f"mean {float(g['acc_mean']):.2f}%, NLL {float(g['nll_mean']):.3f}, "
                  f"ECE {float(g['ece_mean']):.4f} (pooled {float(g['ece_pooled']):.4f})", fontsize=9)
    member_acc = np.asarray(g["member_acc"], dtype=float)
    for i, row in enumerate(member_acc):
        ax2.plot(sev, row.mean(0), color="#9d755d", lw=0.8, alpha=0.7, label="members" if i == 0 else None)
    ax2.plot(sev, acc.mean(0), color="#4c78a8", lw=2, marker="o", label="ensemble accuracy")
    ax2.set_xlabel("severity")
    ax2.set_ylabel("accuracy (%), mean over corruptions")
    ax3 = ax2.twinx()
    ax3.plot(sev, np.asarray(g["ece"], dtype=float).mean(0), color="#e45756", lw=2, marker="s", label="ensemble ECE")
    ax3.set_ylabel("ECE (fraction)")
    lines = ax2.get_legend_handles_labels()
    more = ax3.get_legend_handles_labels()
    ax2.legend(lines[0] + more[0], lines[1] + more[1], loc="lower left", fontsize=8)
    ax2.set_xticks(sev)
    fig.suptitle(title, fontsize=10)
    return fig


@register_plot("mask_overlap")
def plot_mask_overlap(g: dict[str, Any], title: str) -> plt.Figure:
    """/mask_overlap of either kind (attr `kind`): the tickets' weight masks as one annotated heat map, or
    Early-Bird's channel masks after every pair of epochs as one heat map per pruning ratio."""
    if g.get("_attrs", {}).get("kind") == "channel":
        return _channel_overlap(g, title)
    return _ticket_overlap(g, title)


def _ticket_overlap(g: dict[str, Any], title: str) -> plt.Figure:
    """Normalised Hamming distance between the tickets' masks as an annotated heat map, the mean in the title."""
    m = np.asarray(g["distance"])
    k = m.shape[0]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * k + 3), max(4.0, 0.6 * k + 2.5)), constrained_layout=True)
    _heatmap(ax, m, _member_labels(g, "labels", k), ".3f", "fraction of positions that differ", cmap="magma")
    off = m[~np.eye(k, dtype=bool)]
    kind = g.get("_attrs", {}).get("kind", "weight")
    ax.set_title(f"{kind} mask distance, mean {float(off.mean()) if off.size else float('nan'):.4f}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def _channel_overlap(g: dict[str, Any], title: str) -> plt.Figure:
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


@register_plot("tsne")
def plot_tsne(g: dict[str, Any], title: str) -> plt.Figure:
    """Each trajectory's points in the t-SNE plane joined in epoch order, a star at its first point."""
    emb = np.asarray(g["embedding"], dtype=float)
    ids, steps = np.asarray(g["member"]), np.asarray(g["step"])
    labels = list(g.get("labels", []))
    fig, ax = plt.subplots(figsize=(6.5, 6), constrained_layout=True)
    colors = plt.get_cmap("tab10")
    for t in sorted(set(ids.tolist())):
        rows = np.flatnonzero(ids == t)
        rows = rows[np.argsort(steps[rows], kind="stable")]
        c = colors(t % 10)
        name = labels[t] if t < len(labels) else f"trajectory {t}"
        ax.plot(emb[rows, 0], emb[rows, 1], "-o", color=c, ms=4, lw=1, alpha=0.8, label=name)
        ax.plot(emb[rows[0], 0], emb[rows[0], 1], "*", color=c, ms=14, mec="black", mew=0.6)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.legend(loc="best", fontsize=8, title="star: first epoch", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


@register_plot("curve")
def plot_curve(g: dict[str, Any], title: str) -> plt.Figure:
    """Train loss and test error along the curve and along the straight segment between its endpoints, against
    t (as the README's PreResNet164 figure); the curve's length-weighted averages in the legend."""
    t = np.asarray(g["t"], dtype=float)
    attrs = g.get("_attrs", {})
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    panels = (("train_loss", "train loss"), ("test_error", "test error (%)"), ("test_nll", "test NLL"))
    name = str(attrs.get("curve", "curve"))
    for ax, (key, label) in zip(axes, panels):
        avg = attrs.get(f"{key}_int")
        ax.plot(t, g[key], "-o", ms=3, color="#4c78a8",
                label=f"{name}" + (f" (length-weighted mean {float(avg):.3g})" if avg is not None else ""))
        if f"line_{key}" in g:
            ax.plot(t, g[f"line_{key}"], "--", color="#e45756", label="straight line")
        ax.set_xlabel("t")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def _log_levels(values: np.ndarray, vmax: float, log_alpha: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """plane_plot.py's levels: min + exp(log_alpha + k g) for k = 0..n with g = (log(vmax - min) - log_alpha) / n,
    the first set to min and the last to vmax; values clipped at vmax. Returns (levels, clipped values)."""
    v = np.minimum(np.asarray(values, dtype=float), vmax)
    lo = float(v.min())
    top = max(vmax - lo, 1e-12)
    step = (np.log(top) - log_alpha) / n
    levels = lo + np.exp(log_alpha + step * np.arange(n + 1))
    levels[0], levels[-1] = lo, lo + top
    return np.unique(levels), v


@register_plot("plane")
def plot_plane(g: dict[str, Any], title: str) -> plt.Figure:
    """Train loss and test error over the plane of the endpoints and the middle bend, on log-spaced contour
    levels (plane_plot.py), with the endpoints (circles), the middle bend (diamond), the curve and the segment."""
    grid = np.asarray(g["grid"], dtype=float)
    x, y = grid[:, :, 0], grid[:, :, 1]
    bends = np.asarray(g["bend_coordinates"], dtype=float)
    curve = np.asarray(g["curve_coordinates"], dtype=float)
    mid = int(g.get("_attrs", {}).get("middle_bend", len(bends) // 2))
    fig, axes = plt.subplots(1, 2, figsize=(12.4, 5.4), constrained_layout=True)
    panels = (("train_loss", "train loss", 5.0, -5.0), ("test_error", "test error (%)", 40.0, -1.0))
    for ax, (key, label, vmax, log_alpha) in zip(axes, panels):
        vals = np.asarray(g[key], dtype=float)
        levels, clipped = _log_levels(vals, max(vmax, float(vals.min()) + 1e-6), log_alpha, 7)
        if len(levels) < 2:
            levels = np.linspace(float(clipped.min()), float(clipped.min()) + 1e-6, 2)
        cf = ax.contourf(x, y, clipped, levels=levels, cmap="jet_r", alpha=0.55, extend="max")
        ax.contour(x, y, clipped, levels=levels, cmap="jet_r", linewidths=1)
        fig.colorbar(cf, ax=ax, format="%.3g", label=label)
        ax.plot(curve[:, 0], curve[:, 1], color="black", lw=3, label="curve")
        ax.plot(bends[[0, -1], 0], bends[[0, -1], 1], "k--", lw=1.5, label="segment")
        ax.scatter(bends[[0, -1], 0], bends[[0, -1], 1], s=120, c="black", marker="o", zorder=3, label="endpoints")
        ax.scatter(bends[mid, 0], bends[mid, 1], s=120, c="black", marker="D", zorder=3, label="middle bend")
        ax.set_title(f"{label}, min {float(vals.min()):.3g}", fontsize=9)
        ax.set_xlabel("along the endpoints' segment")
    axes[0].set_ylabel("towards the middle bend")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


@register_plot("bn_eval")
def plot_bn_eval(g: dict[str, Any], title: str) -> plt.Figure:
    """Each scored network's train loss and test error after BN re-estimation as bars (eval_curve.py's endpoint
    numbers), their mean as a dashed line."""
    names = [str(n) for n in g.get("member_names", [])]
    k = len(np.asarray(g["test_error"]).reshape(-1))
    names = names if len(names) == k else [str(i + 1) for i in range(k)]
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.2 * k + 4), 3.6), constrained_layout=True)
    for ax, (key, label, color) in zip(axes, (("train_loss", "train loss", "#4c78a8"),
                                              ("test_error", "test error (%)", "#72b7b2"))):
        v = np.asarray(g[key], dtype=float).reshape(-1)
        ax.bar(range(k), v, color=color)
        ax.axhline(float(v.mean()), color="#e45756", ls="--", label=f"mean {float(v.mean()):.4g}")
        ax.set_xticks(range(k), names, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{title} (BN statistics re-estimated on the training data)", fontsize=10)
    return fig


@register_plot("earlybird")
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


def plot(run_dir: Path, mode: str, out: Path) -> Path:
    """Draw `mode` of a run's analysis.h5 into `out` (format from its suffix: png, pdf, svg)."""
    g = read_group(Path(run_dir) / "analysis.h5", mode)
    attrs = g.get("_attrs", {})
    fig = PLOTS[mode](g, f"{attrs.get('recipe', '')} / {attrs.get('run_id', '')}: {mode}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
