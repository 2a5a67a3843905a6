"""`earlybird`: when the Early-Bird tickets emerged and what pruning them gives, from an eb_search stage.

/earlybird holds, per pruning ratio p (rows) and observation k = epochs trained (columns, k = 0 is the
initialisation):
  ratios [R], eb_epoch [R] (-1: no ticket), epoch [K], window_distance [R, K] (the detector's statistic: the
  largest distance from mask k to the W-1 masks before it, NaN until the window is full), consecutive_distance
  [R, K] (mask k against mask k-1, NaN at k = 0), kept_fraction [R, K] (channels kept by mask k),
  params_dense, flops_dense, params_pruned [R], flops_pruned [R] (the network pruned from each ticket; -1 when
  there is none; FLOPs per example of the Conv/Linear layers, engine.flops convention);
attrs: stage, window, threshold, channels, prune_ratio (the ratio whose ticket the recipe's last eb_prune stage
takes: its ticket_ratio, else its ratio; NaN without one).

`report_metrics` turns the group into `repro report`'s `eb_epoch`: the epoch (epochs trained) at which the search
drew the ticket at `prune_ratio`, or at its only ratio when the recipe prunes nowhere. One name serves every
ratio because a table sweeps the prune ratio: each sweep point's run reports the epoch of its own ratio.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.analyses.context import AnalysisContext, register_analysis
from engine.config.params import EBPruneParams, EBSearchParams, ratio_tag
from engine.io import load_checkpoint
from engine.models import create_model
from engine.sparse.channel_prune import model_cost, prune_channels
from engine.sparse.channels import channel_mask, detector_trace
from engine.sparse.masks import mask_distance
from engine.store import groups, read_group, write_group


def search_stages(ctx: AnalysisContext) -> list[str]:
    """The recipe's stages that run an Early-Bird search: those whose typed params are the search's
    (decided from the recipe alone, no checkpoint read)."""
    return [s.name for s in ctx.recipe.stage if isinstance(s.params, EBSearchParams)]


def search_state(ctx: AnalysisContext) -> tuple[str, dict[str, Any]]:
    """(stage name, its `earlybird` method state) of the last stage that ran an EB search (final.pt, else last.pt)."""
    for name in reversed(search_stages(ctx)):
        for fname in ("final.pt", "last.pt"):
            path = ctx.run_dir / name / fname
            if path.exists():
                eb = (load_checkpoint(path).get("method") or {}).get("earlybird")
                if eb is not None:
                    return name, eb
                break
    raise FileNotFoundError(f"{ctx.run_dir}: no Early-Bird search stage has run (the analysis needs an eb_search "
                            f"stage's final.pt)")


def prune_ratio(ctx: AnalysisContext) -> float:
    """The ratio whose EB ticket the recipe's last eb_prune stage takes (ticket_ratio, else ratio); NaN if none."""
    prunes = [s.params for s in ctx.recipe.stage if isinstance(s.params, EBPruneParams)]
    return float(prunes[-1].ticket_from) if prunes else float("nan")


def masks_at(scales: torch.Tensor, ratio: float) -> list[torch.Tensor]:
    """The channel mask at `ratio` for every observation (rows of the [K, N] scales)."""
    return [channel_mask(s, ratio) for s in scales]


@register_analysis("earlybird")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /earlybird for the run's EB search."""
    stage, eb = search_state(ctx)
    scales: torch.Tensor = eb["scales"]
    ratios = [float(r) for r in eb["ratios"]]
    window, threshold = int(eb["window"]), float(eb["threshold"])
    k = int(scales.shape[0])
    found = {str(t): int(e) for t, e in eb["found"].items()}
    nan = float("nan")
    win = np.full((len(ratios), k), nan)
    cons = np.full((len(ratios), k), nan)
    kept = np.zeros((len(ratios), k))
    for i, r in enumerate(ratios):
        masks = masks_at(scales, r)
        win[i] = detector_trace(masks, window) if k else []
        for j in range(1, k):
            cons[i, j] = mask_distance(masks[j], masks[j - 1])
        kept[i] = [float(m.float().mean()) for m in masks]
    eb_epoch = np.array([found.get(ratio_tag(r), -1) for r in ratios], dtype=np.int64)

    # what each ticket prunes to
    m = ctx.recipe.model
    nc, shape = ctx.data.num_classes, tuple(ctx.data.train.image_shape)
    torch.manual_seed(0)
    dense = create_model(m.arch, nc, m.width)
    cost = model_cost(dense, shape)
    p_after = np.full(len(ratios), -1, dtype=np.int64)
    f_after = np.full(len(ratios), -1, dtype=np.int64)
    for i, r in enumerate(ratios):
        path = ctx.run_dir / stage / f"eb-{ratio_tag(r)}.pt"
        if not path.exists():
            continue
        state = load_checkpoint(path)
        src = create_model(m.arch, nc, m.width, **(state.get("model_kwargs") or {}))
        src.load_state_dict(state["model"])
        res = prune_channels(src, r, lambda cfg: create_model(m.arch, nc, m.width, cfg=cfg))
        c = model_cost(res.model, shape)
        p_after[i], f_after[i] = c["params"], c["flops"]
    write_group(ctx.h5, "earlybird", {
        "ratios": np.array(ratios, dtype=np.float64),
        "eb_epoch": eb_epoch,
        "epoch": np.arange(k, dtype=np.int64),
        "window_distance": win,
        "consecutive_distance": cons,
        "kept_fraction": kept,
        "params_dense": cost["params"], "flops_dense": cost["flops"],
        "params_pruned": p_after, "flops_pruned": f_after,
    }, attrs={"stage": stage, "window": window, "threshold": threshold, "channels": int(scales.shape[1]) if k else 0,
              "prune_ratio": prune_ratio(ctx)},
        meta=ctx.meta)
    out: dict[str, Any] = {f"eb_epoch_{ratio_tag(r)}": int(e) for r, e in zip(ratios, eb_epoch)}
    out.update({f"params_ratio_{ratio_tag(r)}": float(p) / cost["params"] for r, p in zip(ratios, p_after) if p > 0})
    out.update({f"flops_ratio_{ratio_tag(r)}": float(f) / cost["flops"] for r, f in zip(ratios, f_after) if f > 0})
    return out


def report_metrics(h5: Path) -> dict[str, float]:
    """`eb_epoch` for `repro report`: /earlybird's drawing epoch at its `prune_ratio` (the only ratio when there is
    none); absent without the group, for a ratio the search did not watch, or when no ticket was drawn (-1)."""
    if "earlybird" not in groups(h5):
        return {}
    g = read_group(h5, "earlybird")
    ratios = [float(r) for r in np.atleast_1d(g["ratios"])]
    want = float(g["_attrs"].get("prune_ratio", float("nan")))
    if math.isnan(want):
        if len(ratios) != 1:
            return {}
        want = ratios[0]
    hits = [i for i, r in enumerate(ratios) if abs(r - want) < 1e-9]
    if not hits:
        return {}
    epoch = int(np.atleast_1d(g["eb_epoch"])[hits[0]])
    return {"eb_epoch": float(epoch)} if epoch >= 0 else {}
