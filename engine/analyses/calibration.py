"""`calibration` (ensemble_freetickets.py --mode calibration): top-label ECE and NLL of each member and of
the ensemble (the mean of the members' probabilities), with the ensemble's reliability diagram.

ECE uses `[analysis].bins` equal-width bins over [0, 1] (bin i holds i/B < c <= (i+1)/B, c = 0 in bin 0);
the original asked for 15 but its edges gave 14 effective bins. NLL is over the whole test set (the original's
"individual NLL" was the last batch's)."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.analyses.context import AnalysisContext
from engine.analyses.ensemble import calibration_bins, ece, load_predictions, nll
from engine.store import write_group


def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /calibration from /predict (computed first when missing)."""
    pred = load_predictions(ctx)
    probs, labels, names = pred["member_probs"], pred["labels"], pred["member_names"]
    n_bins = ctx.recipe.analysis.bins
    ens = probs.mean(0)
    models = [*probs.unbind(0), ens]
    eces = np.array([ece(p, labels, n_bins) for p in models[:-1]] + [0.0], dtype=np.float64)
    bins = calibration_bins(ens, labels, n_bins)
    eces[-1] = bins["ece"]
    nlls = np.array([nll(p, labels) for p in models], dtype=np.float64)
    write_group(ctx.h5, "calibration", {
        "ece": eces,
        "nll": nlls,
        "bin_edges": bins["edges"].numpy(),
        "bin_confidence": bins["confidence"].numpy(),
        "bin_accuracy": bins["accuracy"].numpy(),
        "bin_count": bins["count"].numpy(),
        "member_names": names,
    }, attrs={"n_bins": n_bins, "split": "test", "units": "ECE and bin accuracy as fractions, NLL in nats",
              "rows": "members, then the ensemble"}, meta=ctx.meta)
    return {"ece": float(eces[-1]), "member_ece_mean": float(eces[:-1].mean()), "ensemble_nll": float(nlls[-1]),
            "n_bins": n_bins}
