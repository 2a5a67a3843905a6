"""`kd` (ensemble_freetickets.py --mode KD, a diversity measure, not distillation): the KL divergence between
the members' predictive distributions, averaged over the test points, for every ordered pair (the papers' d_KL).

The original took only the first three members; here every ordered pair of distinct members counts."""

from __future__ import annotations

from typing import Any

from engine.analyses.context import AnalysisContext, register_analysis
from engine.analyses.ensemble import EPS, kl_matrix, load_predictions, mean_off_diagonal
from engine.store import write_group


@register_analysis("kd")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /kd from /predict (computed first when missing)."""
    pred = load_predictions(ctx)
    probs, names = pred["member_probs"], pred["member_names"]
    if probs.shape[0] < 2:
        raise ValueError(f"{ctx.run_dir}: kd needs at least 2 ensemble members, the run has {probs.shape[0]}")
    kl = kl_matrix(probs)
    mean = mean_off_diagonal(kl)
    write_group(ctx.h5, "kd", {
        "kl": kl.numpy(),
        "mean": mean,
        "member_names": names,
    }, attrs={"split": "test", "definition": "kl[i, j] = mean_n KL(p_i || p_j), nats", "eps": EPS}, meta=ctx.meta)
    return {"members": len(names), "kl": mean}
