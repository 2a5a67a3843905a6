"""`mask_overlap` for Early-Bird runs (mask_cr.py): the pairwise distance between the channel masks drawn after
every epoch of the search, at each of the search's pruning ratios.

/mask_overlap (attr kind = "channel"): distance [K, K] (normalised Hamming distance between the masks after i
and j training epochs, i, j = 0..K-1, at the ratio in attr `ratio`: 0.5 when the search watched it, as
mask_distance.sh, else its first ratio), labels [K] (the epochs), ratios [R], distance_by_ratio [R, K, K],
eb_epoch [R]. The original stores the similarity 1 - distance over epochs 1..160 (ckpt0..ckpt159); row 0 here
is the initialisation (all gammas equal: an empty mask).

`run_any` is the `mask_overlap` mode that serves both kinds: the channel matrix when the run has an EB search,
else the weight-ticket matrix of engine/analyses/mask_overlap.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.analyses import mask_overlap
from engine.analyses.context import AnalysisContext, register_analysis
from engine.analyses.earlybird import masks_at, search_stages, search_state
from engine.earlybird import distance_matrix, ratio_tag
from engine.store import write_group


def has_search(ctx: AnalysisContext) -> bool:
    """Whether the recipe has an Early-Bird search stage (decided from the recipe, no checkpoint read)."""
    return bool(search_stages(ctx))


def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /mask_overlap (kind "channel") over the epochs of the run's EB search."""
    stage, eb = search_state(ctx)
    scales: torch.Tensor = eb["scales"]
    k = int(scales.shape[0])
    if k < 2:
        raise ValueError(f"{ctx.run_dir}: the EB search recorded {k} mask(s); the overlap needs at least 2")
    ratios = [float(r) for r in eb["ratios"]]
    mats = np.stack([distance_matrix(torch.stack(masks_at(scales, r))).numpy() for r in ratios])
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


@register_analysis("mask_overlap")
def run_any(ctx: AnalysisContext) -> dict[str, Any]:
    """`mask_overlap` for any run: EB channel masks over epochs when there is an EB search, else weight tickets."""
    return run(ctx) if has_search(ctx) else mask_overlap.run(ctx)
