"""The analysis screen of one run: a tab per analysis.h5 group (member vs ensemble table, disagreement and KL
heat maps, reliability diagram with ECE, t-SNE scatter, mask overlap, curve along t, loss plane, Early-Bird
epochs, ...) and a key that exports the shown analysis as the matplotlib figure `repro plot` draws.

Each view `(group, all groups) -> widgets` is registered in VIEWS under its analysis name by `@register_view`
beside its definition; the registration order is the order of the tabs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from engine.registry import Registry
from engine.store import groups, read_group
from repro.tui.dialogs import ExportDialog
from repro.tui.widgets import Chart, HeatMap, message
from repro.tui.words import plural

View = Callable[[dict[str, Any], dict[str, Any]], list[Widget]]
VIEWS: Registry[View] = Registry("view")
"""Analysis name -> the function building its tab; filled by @register_view, in tab order."""
TITLES: dict[str, str] = {}
"""Analysis name -> its tab's title."""
USES: dict[str, tuple[str, ...]] = {}
"""Analysis name -> the other groups its view reads (its tab is redrawn when they change)."""
PALETTE = ["blue", "red", "green", "orange", "magenta", "cyan", "yellow", "white", "gray", "violet"]


def _names(g: dict[str, Any], key: str, k: int, prefix: str = "") -> list[str]:
    v = g.get(key)
    if v is not None and len(v) == k:
        return [str(x) for x in v]
    return [f"{prefix}{i + 1}" for i in range(k)]


def _f(v: Any, fmt: str = ".2f") -> str:
    try:
        return format(float(np.asarray(v).reshape(-1)[0]), fmt)
    except (TypeError, ValueError, IndexError):
        return "-"


def register_view(name: str, title: str | None = None, uses: tuple[str, ...] = ()) -> Callable[[View], View]:
    """Register the decorated function as the tab of analysis `name` (titled `title`, else the name); `uses`: the
    other groups it reads."""

    def add(fn: View) -> View:
        VIEWS.add(name, fn)
        TITLES[name] = title or name
        USES[name] = uses
        return fn

    return add


# ---- one builder per group: dict of arrays -> widgets, in tab order ----------------------------------------
@register_view("predict", uses=("calibration",))
def view_predict(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    acc = np.asarray(g["member_acc"], dtype=float).reshape(-1)
    nll = np.asarray(g["member_nll"], dtype=float).reshape(-1)
    names = _names(g, "member_names", len(acc), "member ")
    cal = all_groups.get("calibration")
    ece = np.asarray(cal["ece"], dtype=float).reshape(-1) if isinstance(cal, dict) and "ece" in cal else None
    if ece is not None and len(ece) != len(acc) + 1:
        ece = None
    table = DataTable(cursor_type="row", id="predict-table", classes="small-table")
    table.add_columns("member", "accuracy (%)", "NLL", *(["ECE"] if ece is not None else []))
    for i, n in enumerate(names):
        table.add_row(n, f"{acc[i]:.2f}", f"{nll[i]:.4f}", *([f"{ece[i]:.4f}"] if ece is not None else []))
    ens_acc, ens_nll = float(np.asarray(g["ensemble_acc"])), float(np.asarray(g["ensemble_nll"]))
    table.add_row(Text("ensemble", style="bold"), Text(f"{ens_acc:.2f}", style="bold"),
                  Text(f"{ens_nll:.4f}", style="bold"), *([Text(f"{ece[-1]:.4f}", style="bold")] if ece is not None
                                                          else []))
    best = float(acc.max()) if acc.size else float("nan")
    summary = Text(f"ensemble {ens_acc:.2f}% vs best member {best:.2f}% ({ens_acc - best:+.2f}), "
                   f"member mean {acc.mean() if acc.size else float('nan'):.2f}%; "
                   f"{plural(len(acc), 'member')} on {plural(len(np.asarray(g.get('labels', []))), 'test point')}")

    def draw(plt: Any) -> None:
        plt.bar([*names, "ensemble"], [*acc.tolist(), ens_acc], color="blue")
        plt.title("accuracy (%)")
        lo = min([*acc.tolist(), ens_acc])
        plt.ylim(max(0.0, lo - 5), min(100.0, max([*acc.tolist(), ens_acc]) + 1))

    return [Static(summary, classes="note"), table, Chart(draw, classes="chart-wide")]


def matrix_view(g: dict[str, Any], key: str, labels_key: str, what: str, fmt: str = ".3f") -> list[Widget]:
    """A pairwise matrix as a heat map, with its mean off the diagonal in a note."""
    m = np.asarray(g[key], dtype=float)
    labels = _names(g, labels_key, m.shape[0])
    mean = g.get("mean")
    if mean is None and m.ndim == 2 and m.shape[0] > 1:
        mean = float(m[~np.eye(m.shape[0], dtype=bool)].mean())
    note = f"{what}; mean {_f(mean, '.4f')}"
    kind = g.get("_attrs", {}).get("kind")
    if kind:
        note += f" ({kind} masks)"
    return [Static(note, classes="note"), HeatMap(m, labels, fmt, classes="heatmap")]


@register_view("disagreement")
def view_disagreement(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    return matrix_view(g, "matrix", "member_names", "fraction of test points on which two members' predictions "
                                                    "differ")


@register_view("kd", "KL (kd)")
def view_kd(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    return matrix_view(g, "kl", "member_names", "KL(p_row || p_column) between members, nats")


@register_view("calibration")
def view_calibration(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    edges = np.asarray(g["bin_edges"], dtype=float)
    acc = np.asarray(g["bin_accuracy"], dtype=float)
    conf = np.asarray(g["bin_confidence"], dtype=float)
    count = np.asarray(g["bin_count"], dtype=float)
    ece = np.asarray(g["ece"], dtype=float).reshape(-1)
    names = [*_names(g, "member_names", len(ece) - 1, "member "), "ensemble"]
    filled = count > 0
    centers = (edges[:-1] + edges[1:]) / 2

    def draw(plt: Any) -> None:
        plt.bar(centers[filled].tolist(), acc[filled].tolist(), width=0.8, color="blue", label="bin accuracy")
        plt.plot([0.0, 1.0], [0.0, 1.0], color="white", label="perfect calibration")
        plt.scatter(centers[filled].tolist(), conf[filled].tolist(), color="red", marker="x",
                    label="bin confidence")
        plt.xlim(0, 1)
        plt.ylim(0, 1)
        plt.xticks([i / 5 for i in range(6)], [f"{i / 5:.1f}" for i in range(6)])
        plt.xlabel("confidence")
        plt.title(f"reliability of the ensemble, ECE {ece[-1]:.4f}")

    t = Text("ECE  ")
    for n, e in zip(names, ece):
        t.append(f"{n} ", style="bold" if n == "ensemble" else "")
        t.append(f"{e:.4f}   ", style="bold" if n == "ensemble" else "")
    return [Static(t, classes="note"), Chart(draw, classes="chart-big")]


TICKET = "◆"  # marks the point at which a t-SNE trajectory leaves its ticket


@register_view("tsne", "t-SNE")
def view_tsne(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    """Each trajectory's points joined in epoch order, its last point (the ticket the member leaves) marked; an
    exploration phase leaves no ticket and gets no mark."""
    emb = np.asarray(g["embedding"], dtype=float)
    ids = np.asarray(g["member"]).astype(int).reshape(-1)
    steps = np.asarray(g.get("step", np.arange(len(ids)))).reshape(-1)
    labels = [str(x) for x in g.get("labels", [])]
    step_is = g.get("_attrs", {}).get("step_is", "step")

    def draw(plt: Any) -> None:
        for n, t in enumerate(sorted(set(ids.tolist()))):
            rows = np.flatnonzero(ids == t)
            rows = rows[np.argsort(steps[rows], kind="stable")]
            name = labels[t] if 0 <= t < len(labels) else f"trajectory {t}"
            color = PALETTE[n % len(PALETTE)]
            x, y = emb[rows, 0].tolist(), emb[rows, 1].tolist()
            plt.plot(x, y, color=color, label=name, marker="braille")
            if not name.endswith("exploration"):
                plt.scatter([x[-1]], [y[-1]], color=color, marker=TICKET)
        plt.title(f"prediction trajectories in function space (t-SNE), joined in {step_is} order; "
                  f"{TICKET} the ticket (last point)")

    return [Static(f"{len(ids)} points, {len(set(ids.tolist()))} trajectories; each line runs through its member's "
                   f"points in {step_is} order and ends at the ticket it leaves ({TICKET})", classes="note"),
            Chart(draw, classes="chart-big")]


MAX_EPOCH_CELLS = 40  # an Early-Bird channel-overlap heat map shows at most this many epochs (evenly spaced)


@register_view("mask_overlap", "mask overlap")
def view_mask_overlap(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    """The tickets' weight-mask distances as one heat map, or (attr kind "channel") Early-Bird's channel-mask
    distances between epochs, one heat map per pruning ratio with its EB epoch."""
    if g.get("_attrs", {}).get("kind") != "channel":
        return matrix_view(g, "distance", "labels", "fraction of mask positions that differ")
    mats = np.asarray(g.get("distance_by_ratio", np.asarray(g["distance"], dtype=float)[None]), dtype=float)
    ratios = np.asarray(g.get("ratios", [g["_attrs"].get("ratio", float("nan"))]), dtype=float).reshape(-1)
    eb = np.asarray(g.get("eb_epoch", [-1] * len(ratios))).reshape(-1)
    k = mats.shape[-1]
    idx = np.unique(np.linspace(0, k - 1, min(k, MAX_EPOCH_CELLS)).round().astype(int))
    out: list[Widget] = [Static(f"channel masks: fraction of channels that differ between the masks after epochs i "
                                f"and j ({k} epochs" + (f", {len(idx)} shown" if len(idx) < k else "") + ")",
                                classes="note")]
    for m, r, e in zip(mats, ratios, eb):
        found = f"EB ticket at epoch {int(e)}" if e >= 0 else "no EB ticket"
        out += [Static(f"pruning ratio {float(r):.2f}: {found}", classes="note"),
                HeatMap(m[np.ix_(idx, idx)], [str(i) for i in idx], ".2f", classes="heatmap")]
    return out


CURVE_PANELS = (("train_loss", "train loss"), ("test_error", "test error (%)"), ("test_nll", "test NLL"))


@register_view("curve")
def view_curve(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    """Train loss, test error and test NLL against t along the curve and (stored with eval_line as line_*) along
    the straight segment between its endpoints, one chart each, as `repro plot` draws them."""
    t = np.asarray(g["t"], dtype=float).reshape(-1)
    attrs = g.get("_attrs", {})
    name = str(attrs.get("curve", "curve"))

    def panel(key: str, label: str) -> Any:
        curve = np.asarray(g[key], dtype=float).reshape(-1)
        line = np.asarray(g[f"line_{key}"], dtype=float).reshape(-1) if f"line_{key}" in g else None

        def draw(plt: Any) -> None:
            plt.plot(t.tolist(), curve.tolist(), label=name, color="blue", marker="braille")
            title = f"{label}: max {curve.max():.4g} along the curve"
            if line is not None:
                plt.plot(t.tolist(), line.tolist(), label="straight line", color="red", marker="braille")
                title += f", {line.max():.4g} along the straight line"
            plt.xlabel("t")
            plt.title(title)

        return draw

    err = np.asarray(g.get("test_error", []), dtype=float).reshape(-1)
    note = f"{len(t)} points along the curve ({name})"
    if err.size:
        note += (f"; test error at the ends {err[0]:.2f} / {err[-1]:.2f}, "
                 f"max {err.max():.2f} at t = {t[err.argmax()]:.2f}")
    if not any(k.startswith("line_") for k in g):
        note += "; no straight line stored (the curve stage's eval_line is off)"
    return [Static(note, classes="note"),
            *(Chart(panel(k, label), classes="chart-half") for k, label in CURVE_PANELS if k in g)]


@register_view("plane")
def view_plane(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    """Train loss and test error over the plane through the curve's endpoints and middle bend, as heat maps:
    columns along the endpoints' segment (alpha), rows towards the middle bend (beta, increasing upwards)."""
    alphas = np.asarray(g["alphas"], dtype=float).reshape(-1)
    betas = np.asarray(g["betas"], dtype=float).reshape(-1)

    def marks(values: np.ndarray) -> list[str]:
        """'0' and '1' at the grid points nearest 0 and 1 (the endpoints, the middle bend's level), blank else."""
        out = [""] * len(values)
        for v in (0.0, 1.0):
            out[int(np.abs(values - v).argmin())] = f"{v:g}"
        return out

    out: list[Widget] = [Static(f"{len(alphas)} x {len(betas)} points; columns: alpha along the endpoints' segment "
                                "(0 and 1: the endpoints), rows: beta towards the middle bend (1: its level)",
                                classes="note")]
    for key, label, vmax in (("train_loss", "train loss", 5.0), ("test_error", "test error (%)", 40.0)):
        v = np.asarray(g[key], dtype=float)  # [alpha, beta]
        i, j = np.unravel_index(int(np.nanargmin(v)), v.shape)
        out += [Static(f"{label}: min {v[i, j]:.4g} at alpha {alphas[i]:.2f}, beta {betas[j]:.2f}; colours "
                       f"saturate at {vmax:g} (as the figure's contours)", classes="note"),
                HeatMap(v.T[::-1], [f"{b:.2f}" for b in betas[::-1]], ".2f", col_labels=marks(alphas), vmax=vmax,
                        classes="heatmap")]
    return out


@register_view("bn_eval", "BN eval")
def view_bn_eval(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    """Each network of the last stage scored after BN re-estimation, as eval_curve.py scores endpoints."""
    keys = ("train_loss", "train_error", "test_nll", "test_error")
    cols = {k: np.asarray(g[k], dtype=float).reshape(-1) for k in keys}
    names = _names(g, "member_names", len(cols["test_error"]), "member ")
    table = DataTable(cursor_type="row", classes="small-table")
    table.add_columns("network", "train loss", "train error (%)", "test NLL", "test error (%)")
    for n, row in enumerate(names):
        table.add_row(row, *(f"{cols[k][n]:.4f}" for k in keys))
    if len(names) > 1:
        table.add_row(Text("mean", style="bold"), *(Text(f"{cols[k].mean():.4f}", style="bold") for k in keys))
    attrs = g.get("_attrs", {})
    return [Static(f"BN statistics re-estimated on {attrs.get('train_data', 'the training data')}; weight decay "
                   f"{attrs.get('weight_decay', '?')} in the loss", classes="note"), table]


def _count(v: float, dense: float) -> tuple[str, str]:
    """A pruned count and its share of the dense one ("-" twice when there is none, -1)."""
    return ("-", "-") if v < 0 else (f"{int(v):,}", f"{v / dense:.1%}" if dense > 0 else "-")


@register_view("earlybird", "Early-Bird")
def view_earlybird(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    """Per pruning ratio: the EB epoch and the pruned network's parameters and FLOPs (a table), and the detector's
    windowed mask distance against the stored epochs with its threshold and each ticket marked (a chart)."""
    if "window_distance" not in g:
        return _earlybird_older(g)
    attrs = g.get("_attrs", {})
    ratios = np.asarray(g["ratios"], dtype=float).reshape(-1)
    eb = np.asarray(g["eb_epoch"]).astype(int).reshape(-1)
    epochs = np.asarray(g["epoch"], dtype=float).reshape(-1)
    win = np.asarray(g["window_distance"], dtype=float).reshape(len(ratios), -1)
    thr = float(attrs.get("threshold", float("nan")))
    window = attrs.get("window", "?")
    pd, fd = float(np.asarray(g["params_dense"])), float(np.asarray(g["flops_dense"]))
    pp = np.asarray(g["params_pruned"], dtype=float).reshape(-1)
    fp = np.asarray(g["flops_pruned"], dtype=float).reshape(-1)
    chosen = float(attrs.get("prune_ratio", float("nan")))
    table = DataTable(cursor_type="row", id="eb-table", classes="small-table")
    table.add_columns("pruning ratio", "EB epoch", "parameters", "of dense", "FLOPs", "of dense")
    table.add_row("dense", "-", f"{int(pd):,}", "100.0%", f"{int(fd):,}", "100.0%")
    for i, r in enumerate(ratios):
        cells = [f"{r:.2f}", str(eb[i]) if eb[i] >= 0 else "no ticket", *_count(pp[i], pd), *_count(fp[i], fd)]
        style = "bold" if abs(r - chosen) < 1e-9 else ""
        table.add_row(*(Text(c, style=style) for c in cells))

    def draw(plt: Any) -> None:
        for i, r in enumerate(ratios):
            color = PALETTE[i % len(PALETTE)]
            ok = np.isfinite(win[i])
            if ok.any():
                plt.plot(epochs[ok].tolist(), win[i][ok].tolist(), label=f"p={r:.2f}", color=color, marker="braille")
            at = np.flatnonzero(epochs == eb[i])
            if eb[i] >= 0 and at.size and np.isfinite(win[i][at[0]]):
                plt.scatter([float(epochs[at[0]])], [float(win[i][at[0]])], color=color, marker=TICKET)
        if np.isfinite(thr) and epochs.size:
            plt.plot([float(epochs[0]), float(epochs[-1])], [thr, thr], label=f"threshold {thr:g}", color="gray")
        plt.xlabel("epochs trained")
        plt.title(f"EB detector: largest channel-mask distance over a window of {window}; {TICKET} ticket drawn")

    before = f"the {int(window) - 1} masks before it" if isinstance(window, (int, np.integer)) else "the masks before"
    note = (f"Early-Bird search in stage '{attrs.get('stage', '?')}': a ticket is drawn at the first epoch where "
            f"the newest channel mask is within {thr:g} of {before} (window {window}); "
            f"parameters and FLOPs of the network pruned from each ticket"
            + (f"; bold: the ratio the recipe prunes ({chosen:.2f})" if np.isfinite(chosen) else ""))
    return [Static(note, classes="note"), table, Chart(draw, classes="chart-big")]


def _earlybird_older(g: dict[str, Any]) -> list[Widget]:
    """/earlybird of an older layout (no window_distance): the EB epochs and whatever distance trace it holds."""
    arrays = {k: np.asarray(v) for k, v in g.items() if k != "_attrs" and not isinstance(v, list)}
    ratio_key = next((k for k in arrays if "ratio" in k), None)
    epoch_key = next((k for k in arrays if "epoch" in k and arrays[k].ndim == 1), None)
    trace_key = next((k for k in arrays if "dist" in k), None)
    table = DataTable(cursor_type="row", classes="small-table")
    table.add_columns("pruning ratio", "EB epoch")
    if ratio_key and epoch_key:
        for r, e in zip(arrays[ratio_key].reshape(-1), arrays[epoch_key].reshape(-1)):
            table.add_row(f"{float(r):.2f}", str(int(e)) if int(e) >= 0 else "not found")
    out: list[Widget] = [Static(f"Early-Bird tickets: the epoch at which each ratio's channel mask stopped moving "
                                f"(fields: {', '.join(sorted(arrays))})", classes="note"), table]
    if trace_key is not None:
        d = np.asarray(arrays[trace_key], dtype=float)
        d2 = d.reshape(1, -1) if d.ndim == 1 else d.reshape(d.shape[0], -1)
        ratios = arrays[ratio_key].reshape(-1) if ratio_key else np.arange(d2.shape[0])

        def draw(plt: Any) -> None:
            for i, row in enumerate(d2):
                name = f"ratio {float(ratios[i]):.2f}" if i < len(ratios) else f"trace {i}"
                plt.plot(list(range(1, len(row) + 1)), row.tolist(), label=name, color=PALETTE[i % len(PALETTE)],
                         marker="braille")
            plt.xlabel("epoch")
            plt.title("mask distance between consecutive epochs")

        out.append(Chart(draw, classes="chart-half"))
    return out


@register_view("sparsity")
def view_sparsity(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    epochs = np.asarray(g["epoch"], dtype=float).reshape(-1)
    overall = np.asarray(g["overall_density"], dtype=float).reshape(-1)
    dens = np.asarray(g.get("layer_density", np.zeros((0, 0))), dtype=float)

    def draw(plt: Any) -> None:
        plt.plot(epochs.tolist(), overall.tolist(), label="overall", color="white", marker="braille")
        if dens.ndim == 2 and dens.shape[0] == len(epochs):
            plt.plot(epochs.tolist(), dens.min(axis=1).tolist(), label="sparsest layer", color="blue",
                     marker="braille")
            plt.plot(epochs.tolist(), dens.max(axis=1).tolist(), label="densest layer", color="red",
                     marker="braille")
        plt.xlabel("epoch")
        plt.title("density")

    note = f"final overall density {overall[-1]:.4f}" if overall.size else "no epochs"
    return [Static(note, classes="note"), Chart(draw, classes="chart-big")]


def steps(edges: np.ndarray, heights: np.ndarray) -> tuple[list[float], list[float]]:
    """A histogram as the outline of its bars (x, y), so two drawn on one chart both stay visible."""
    x = np.repeat(np.asarray(edges, dtype=float), 2)
    y = np.concatenate([[0.0], np.repeat(np.asarray(heights, dtype=float), 2), [0.0]])
    return x.tolist(), y.tolist()


@register_view("ood", "OOD")
def view_ood(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    """The ensemble's max-softmax scores in and out of distribution as two outlined histograms on shared bins
    (densities, as the figure: the two sets differ in size)."""
    s_in = np.asarray(g["scores_in"], dtype=float).reshape(-1)
    s_out = np.asarray(g["scores_out"], dtype=float).reshape(-1)
    name = str(g.get("_attrs", {}).get("ood_dataset", "OOD"))
    lo = float(min(s_in.min(initial=1.0), s_out.min(initial=1.0)))
    edges = np.linspace(min(lo, 0.99), 1.0, 31)

    def draw(plt: Any) -> None:
        for scores, label, color in ((s_in, f"in-distribution ({len(s_in)})", "blue"),
                                     (s_out, f"{name} ({len(s_out)})", "red")):
            if scores.size:
                plt.plot(*steps(edges, np.histogram(scores, bins=edges, density=True)[0]), label=label, color=color,
                         marker="braille")
        plt.xlabel("max softmax of the ensemble")
        plt.title("density of the scores in and out of distribution (outlines)")

    med = (f"; median score {np.median(s_in):.4f} in, {np.median(s_out):.4f} out"
           if s_in.size and s_out.size else "")
    return [Static(f"AUROC {_f(g['auroc'], '.4f')}   AUPR {_f(g['aupr'], '.4f')}   ({name}){med}", classes="note"),
            Chart(draw, classes="chart-big")]


@register_view("corruption", "corruptions")
def view_corruption(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    """The ensemble's accuracy per corruption and severity, and its means."""
    acc = np.asarray(g["acc"], dtype=float)
    sev = [str(s) for s in np.asarray(g["severities"]).reshape(-1)]
    names = _names(g, "corruptions", acc.shape[0], "corruption ")
    table = DataTable(cursor_type="row", classes="small-table")
    table.add_columns("corruption", *(f"severity {s} (%)" for s in sev), "mean (%)")
    for name, row in zip(names, acc):
        table.add_row(name, *(f"{v:.2f}" for v in row), f"{row.mean():.2f}")
    table.add_row(Text("mean", style="bold"), *(Text(f"{v:.2f}", style="bold") for v in acc.mean(0)),
                  Text(_f(g["acc_mean"]), style="bold"))
    src = g.get("_attrs", {}).get("source", "")
    note = (f"ensemble on corrupted test images: accuracy {_f(g['acc_mean'])}%, NLL {_f(g['nll_mean'], '.4f')}, "
            f"ECE {_f(g['ece_mean'], '.4f')} (pooled {_f(g['ece_pooled'], '.4f')}); {src}")
    return [Static(note, classes="note"), table]


def view_generic(g: dict[str, Any], all_groups: dict[str, Any]) -> list[Widget]:
    t = Text()
    for k, v in g.items():
        if k == "_attrs":
            continue
        a = np.asarray(v) if not isinstance(v, list) else None
        if a is None:
            t.append(f"{k}: {len(v)} strings: {', '.join(map(str, v[:8]))}{' ...' if len(v) > 8 else ''}\n")
        elif a.ndim == 0:
            t.append(f"{k}: {a.item()}\n")
        else:
            t.append(f"{k}: {a.dtype} {list(a.shape)}\n")
    return [Static(t, classes="note")]


def build_view(name: str, g: Any, all_groups: dict[str, Any]) -> list[Widget]:
    """A group's widgets, or one line saying why it cannot be shown (an older or damaged file)."""
    if isinstance(g, str):
        return [message(g, "red")]
    attrs = g.get("_attrs", {}) if isinstance(g, dict) else {}
    try:
        widgets = VIEWS.get(name, view_generic)(g, all_groups)
    except Exception as e:  # noqa: BLE001 - a group this version cannot draw is shown as a message
        widgets = [message(f"cannot show /{name}: {type(e).__name__}: {e} (written by version "
                           f"{attrs.get('version', '?')}?)", "red"), *view_generic(g, all_groups)]
    return widgets


def read_groups(h5: Path) -> dict[str, Any]:
    """Every group of a run's analysis.h5 (a group that fails to read maps to the reason)."""
    out: dict[str, Any] = {}
    for name in groups(h5):
        try:
            out[name] = read_group(h5, name)
        except Exception as e:  # noqa: BLE001
            out[name] = f"cannot read /{name}: {type(e).__name__}: {e}"
    return out


def same(a: Any, b: Any) -> bool:
    """Whether two read groups (dicts of arrays, lists, attrs; or the reason one could not be read) are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:  # non-numeric arrays: NaN does not apply
            return bool(np.array_equal(a, b))
    return type(a) is type(b) and a == b


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode) of a file, None when absent: one stat tells whether analysis.h5 was rewritten (every
    write replaces the file by renaming)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class AnalysisScreen(Screen):
    """The analyses of one run, a tab per group; analysis.h5 is polled (one stat per `poll` seconds) and re-read when
    it changes, so the tabs follow a run that is still writing its analyses."""

    POLL_S = 2.0

    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("n,right_square_bracket", "tab(1)", "Next"),
        Binding("p,left_square_bracket", "tab(-1)", "Previous"),
        Binding("e", "export", "Export figure"),
        Binding("g", "reload", "Reload"),
    ]

    def __init__(self, run_dir: Path, label: str, poll: float | None = POLL_S) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.h5 = self.run_dir / "analysis.h5"
        self.label = label
        self.poll = poll
        self.groups: dict[str, Any] = {}
        self.tabs: list[str] = []
        self.seen: tuple[int, int, int] | None | bool = False  # the file's stamp when last read; False: never read
        self.drawing = asyncio.Lock()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f" {self.label}", style="bold"), id="an-title")
        yield Vertical(message("reading analysis.h5 ..."), id="an-body")
        yield Footer()

    def on_mount(self) -> None:
        self.load()
        if self.poll:
            self.set_interval(self.poll, self.check_file)

    def check_file(self) -> None:
        """Re-read analysis.h5 when it has changed since it was last read."""
        if self.seen is not False and file_stamp(self.h5) != self.seen:
            self.load()

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="analysis", exit_on_error=False)
    def load(self) -> None:
        stamp = file_stamp(self.h5)  # taken before reading: a write during the read shows as a change next poll
        if stamp is None:
            data: dict[str, Any] | str = "no analysis.h5 yet: the analyses run after the last stage " \
                                          f"(or run `repro analyze {self.run_dir} --mode predict`)"
        else:
            try:
                data = read_groups(self.h5)
            except Exception as e:  # noqa: BLE001 - e.g. a truncated or foreign file
                data = f"cannot read analysis.h5: {type(e).__name__}: {e}"
        self.app.call_from_thread(self.show, data, stamp)

    async def show(self, data: dict[str, Any] | str, stamp: tuple[int, int, int] | None = None) -> None:
        """Draw what was read: tabs added, redrawn or removed where groups changed, the selected tab kept (one
        draw at a time: a reload may finish while the previous one is still mounting)."""
        async with self.drawing:
            await self._show(data)
            self.seen = stamp

    async def _show(self, data: dict[str, Any] | str) -> None:
        body = self.query_one("#an-body", Vertical)
        names = [] if isinstance(data, str) else [n for n in VIEWS if n in data] + sorted(n for n in data
                                                                                           if n not in VIEWS)
        old = self.groups
        tabs = self.query("#an-tabs").first(TabbedContent) if self.query("#an-tabs") else None
        if isinstance(data, str) or not names or tabs is None:
            await body.remove_children()
            if isinstance(data, str) or not names:
                self.groups, self.tabs = {}, []
                await body.mount(message(data if isinstance(data, str) else "analysis.h5 holds no groups yet",
                                         "yellow"))
                return
            tabs = TabbedContent(id="an-tabs")
            for n in names:
                tabs.compose_add_child(self._pane(n, data))
            await body.mount(tabs)
        else:
            await self._update(tabs, old, data, names)
        self.groups, self.tabs = data, names
        self.query_one("#an-title", Static).update(Text.assemble(
            (f" {self.label}", "bold"), f"   analysis.h5: {plural(len(names), 'group')}   ",
            ("n/p next/previous tab   e export the figure", "dim")))

    def _pane(self, name: str, data: dict[str, Any]) -> TabPane:
        return TabPane(TITLES.get(name, name), VerticalScroll(*build_view(name, data[name], data)), id=f"tab-{name}")

    async def _update(self, tabs: TabbedContent, old: dict[str, Any], data: dict[str, Any], names: list[str]) -> None:
        """Bring the built tabs in line with `data`: new groups get a tab in registration order, changed ones (or
        ones whose view reads a changed group) are redrawn in place, vanished ones are removed."""
        changed = {n for n in names if n in old
                   and any(not same(old.get(u), data.get(u)) for u in (n, *USES.get(n, ())))}
        for n in [n for n in old if n not in data]:
            await tabs.remove_pane(f"tab-{n}")
        present = [n for n in names if n in old]
        for i, n in enumerate(names):
            if n in changed:
                pane = tabs.get_pane(f"tab-{n}")
                await pane.remove_children()
                await pane.mount(VerticalScroll(*build_view(n, data[n], data)))
            elif n not in old:
                prev = [m for m in names[:i] if m in present]
                nxt = [m for m in names[i + 1:] if m in present]
                where = {"after": f"tab-{prev[-1]}"} if prev else {"before": f"tab-{nxt[0]}"} if nxt else {}
                await tabs.add_pane(self._pane(n, data), **where)
                present.append(n)
    @property
    def active(self) -> str | None:
        try:
            tab = self.query_one("#an-tabs", TabbedContent).active
        except Exception:  # noqa: BLE001 - not built yet
            return None
        return tab.removeprefix("tab-") if tab else None

    def action_tab(self, step: int) -> None:
        cur = self.active
        if cur is None or not self.tabs:
            return
        nxt = self.tabs[(self.tabs.index(cur) + step) % len(self.tabs)]
        self.query_one("#an-tabs", TabbedContent).active = f"tab-{nxt}"

    def action_export(self) -> None:
        mode = self.active
        if mode is None or not isinstance(self.groups.get(mode), dict):
            self.notify("nothing to export", severity="warning")
            return

        def chosen(path: Path | None) -> None:
            if path is not None:
                self.notify(f"drawing /{mode} ...")
                self.export(mode, path)

        self.app.push_screen(ExportDialog(f"/{mode}", self.run_dir / "figures" / f"{mode}.png"), chosen)

    @work(thread=True, group="export", exit_on_error=False)
    def export(self, mode: str, out: Path | None = None) -> None:
        from repro.tui.figures import export  # deferred: it imports matplotlib, needed only once something is exported

        try:
            path = export(self.run_dir, mode, self.groups[mode], out)
        except Exception as e:  # noqa: BLE001
            self.app.call_from_thread(self.notify, f"{type(e).__name__}: {e}", title="export failed",
                                      severity="error")
            return
        self.last_export = path
        self.app.call_from_thread(self.notify, str(path), title=f"/{mode} exported")
