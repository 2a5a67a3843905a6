"""`disagreement` (ensemble_freetickets.py --mode disagreement): the fraction of test points on which two
members' top-1 predictions differ, for every pair, and its mean over the pairs (the papers' d_dis).

The original printed the mean plus 0.001 (it added 0.001 to every nonzero entry for its heatmap); here the
mean is that of the off-diagonal entries exactly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine.analyses.context import AnalysisContext, register_analysis
from engine.analyses.ensemble import disagreement_matrix, load_predictions, mean_off_diagonal
from engine.store import groups, read_group, write_group


@register_analysis("disagreement")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /disagreement from /predict (computed first when missing)."""
    pred = load_predictions(ctx)
    probs, names = pred["member_probs"], pred["member_names"]
    if probs.shape[0] < 2:
        raise ValueError(f"{ctx.run_dir}: disagreement needs at least 2 ensemble members, the run has {probs.shape[0]}")
    matrix = disagreement_matrix(probs)
    mean = mean_off_diagonal(matrix)
    write_group(ctx.h5, "disagreement", {
        "matrix": matrix.numpy(),
        "mean": mean,
        "member_names": names,
    }, attrs={"split": "test", "units": "fraction of test points"}, meta=ctx.meta)
    return {"members": len(names), "disagreement": mean}


def report_metrics(h5: Path) -> dict[str, float]:
    """`disagreement_mean` for `repro report`: the mean pairwise disagreement of /disagreement in percent of the
    test points (the papers quote percentages, e.g. FGE's 19.97% for two independent ResNet-164)."""
    if "disagreement" not in groups(h5):
        return {}
    v = 100.0 * float(read_group(h5, "disagreement")["mean"])
    return {"disagreement_mean": v} if math.isfinite(v) else {}
