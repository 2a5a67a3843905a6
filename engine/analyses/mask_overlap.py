"""`mask_overlap`: how different a run's masks are, as the normalised Hamming distance between every pair (the
fraction of the positions where one mask keeps and the other does not; engine.sparse.masks.hamming_matrix).

One group /mask_overlap of one of two kinds (attr `kind`), chosen from the recipe:

- "weight": the tickets' sparse weight masks, one row per member of the last stage with tickets: distance [M, M],
  labels [M] (member names), density [M]; attrs source ("masks": the method kept them; "nonzero weights"),
  positions.
- "channel", for a run with an Early-Bird search (mask_cr.py): the channel masks drawn after every epoch of the
  search, at each of its pruning ratios: distance [K, K] (between the masks after i and j training epochs,
  i, j = 0..K-1, at the ratio in attr `ratio`: 0.5 when the search watched it, as mask_distance.sh, else its
  first ratio), labels [K] (the epochs), ratios [R], distance_by_ratio [R, K, K], eb_epoch [R]; attrs stage,
  ratio, positions, threshold. The original stores the similarity 1 - distance over epochs 1..160
  (ckpt0..ckpt159); row 0 here is the initialisation (all gammas equal: an empty mask).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.analyses.context import AnalysisContext, register_analysis
from engine.analyses.earlybird import masks_at, search_stages, search_state
from engine.analyses.ensemble import mean_off_diagonal
from engine.config.params import ratio_tag
from engine.io import load_checkpoint
from engine.sparse.masks import hamming_matrix
from engine.store import write_group


@register_analysis("mask_overlap")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /mask_overlap: EB channel masks over epochs when the run has an EB search, else weight tickets."""
    return channel_overlap(ctx) if search_stages(ctx) else weight_overlap(ctx)


# ---- weight tickets ----------------------------------------------------------------------------------------


def stored_masks(checkpoint: dict[str, Any]) -> torch.Tensor | None:
    """The masks a checkpoint's method state holds, all layers in `names` order as one flat bool vector."""
    masking = (checkpoint.get("method") or {}).get("masking") or {}
    masks = masking.get("masks")
    if not masks:
        return None
    names = list(masking.get("names") or masks)
    return torch.cat([masks[n].reshape(-1).to(torch.bool) for n in names])


def weight_mask(checkpoint: dict[str, Any]) -> torch.Tensor:
    """(weight != 0) over every conv and linear weight (4-D or 2-D tensors named *weight), state-dict order."""
    parts = [v.reshape(-1) != 0 for k, v in checkpoint["model"].items()
             if k.endswith("weight") and isinstance(v, torch.Tensor) and v.dim() in (2, 4)]
    if not parts:
        raise ValueError("the checkpoint has no conv or linear weight")
    return torch.cat(parts)


def ticket_mask(checkpoint: dict[str, Any]) -> torch.Tensor:
    """A ticket's mask: the stored masks when the method kept them, else the nonzero conv/linear weights."""
    m = stored_masks(checkpoint)
    return weight_mask(checkpoint) if m is None else m


def weight_overlap(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /mask_overlap (kind "weight") over the members of the last stage with tickets."""
    members = ctx.members()
    if len(members) < 2:
        raise ValueError(f"{ctx.run_dir}: mask_overlap needs at least 2 tickets, the run has {len(members)}")
    ckpts = [load_checkpoint(ctx.run_dir / m["path"], "cpu") for m in members]
    stored = [stored_masks(c) for c in ckpts]
    # the same positions for every ticket: stored masks only when every ticket has them
    if all(s is not None for s in stored):
        masks, source = [s for s in stored if s is not None], "masks"
    else:
        masks, source = [weight_mask(c) for c in ckpts], "nonzero weights"
    del ckpts
    dist = hamming_matrix(masks)
    mean = mean_off_diagonal(dist)
    density = [float(m.float().mean()) for m in masks]
    write_group(ctx.h5, "mask_overlap", {
        "distance": dist.numpy(),
        "labels": [m["name"] for m in members],
        "density": density,
    }, attrs={"kind": "weight", "source": source, "positions": int(masks[0].numel())}, meta=ctx.meta)
    return {"tickets": len(members), "mean_distance": mean, "source": source}


# ---- Early-Bird channel masks ------------------------------------------------------------------------------


def channel_overlap(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /mask_overlap (kind "channel") over the epochs of the run's EB search."""
    stage, eb = search_state(ctx)
    scales: torch.Tensor = eb["scales"]
    k = int(scales.shape[0])
    if k < 2:
        raise ValueError(f"{ctx.run_dir}: the EB search recorded {k} mask(s); the overlap needs at least 2")
    ratios = [float(r) for r in eb["ratios"]]
    mats = np.stack([hamming_matrix(masks_at(scales, r)).numpy() for r in ratios])
    main = next((i for i, r in enumerate(ratios) if ratio_tag(r) == "50"), 0)
    found = {str(t): int(e) for t, e in eb["found"].items()}
    write_group(ctx.h5, "mask_overlap", {
        "distance": mats[main],
        "labels": [str(e) for e in range(k)],
        "ratios": np.array(ratios, dtype=np.float64),
        "distance_by_ratio": mats,
        "eb_epoch": np.array([found.get(ratio_tag(r), -1) for r in ratios], dtype=np.int64),
    }, attrs={"kind": "channel", "stage": stage, "ratio": ratios[main], "positions": int(scales.shape[1]),
              "threshold": float(eb["threshold"])}, meta=ctx.meta)
    off = ~np.eye(k, dtype=bool)
    return {"epochs": k, "ratio": ratios[main], "mean_distance": float(mats[main][off].mean()),
            "final_vs_init": float(mats[main][0, -1])}
