"""`mask_overlap`: how different the tickets' sparse masks are, as the normalised Hamming distance between
every pair (the fraction of weight positions where one keeps a weight and the other does not)."""

from __future__ import annotations

from typing import Any

import torch

from engine.analyses.context import AnalysisContext
from engine.analyses.ensemble import hamming_matrix, mean_off_diagonal
from engine.io import load_checkpoint
from engine.store import write_group


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


def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /mask_overlap over the members of the last stage with tickets."""
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
