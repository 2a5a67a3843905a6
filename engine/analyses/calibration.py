"""`calibration` (ensemble_freetickets.py --mode calibration): top-label ECE and NLL of each member and of
the ensemble (the mean of the members' probabilities), with the ensemble's reliability diagram.

ECE bins, `[analysis].ece_binning`: "equal" uses `[analysis].bins` equal-width bins over [0, 1] (bin i holds
i/B < c <= (i+1)/B, c = 0 in bin 0). "original" is the original's `expected_calibration_error`
(ensemble_freetickets.py:165-179): np.digitize(c, np.linspace(0, 1, B), right=True), i.e. B - 1 bins of width
1/(B - 1) (14 for its B = 15) plus a bin of its own for c = 0, and a c above 1 in no bin at all. NLL is over the
whole test set (the original's "individual NLL" was the last batch's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from engine.analyses.context import AnalysisContext, register_analysis
from engine.analyses.ensemble import calibration_bins, load_predictions, nll
from engine.store import groups, read_group, write_group


def original_bins(p: torch.Tensor, labels: torch.Tensor, n_edges: int) -> dict[str, Any]:
    """The original's reliability bins: edges linspace(0, 1, n_edges), point n in bin k when e_(k-1) < c_n <= e_k
    (np.digitize, right=True). ECE = sum over k = 0..n_edges-1 of |sum_(n in k)(correct_n - c_n)| / N, so a c of
    exactly 0 is a term of its own (k = 0) and a c above 1 (k = n_edges) is in none, though it counts in N.

    The diagram is returned over the n_edges - 1 bins (e_(k-1), e_k], k = 1..n_edges-1 (per-bin count, mean
    confidence and accuracy as fractions, 0 for empty bins); a softmax's top probability, at least 1/C, never
    falls in bin 0."""
    conf, pred = p.max(-1)
    c = conf.to(torch.float64).cpu().numpy()
    correct = (pred == labels.to(pred.device)).cpu().numpy().astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_edges)
    k = np.digitize(c, edges, right=True)
    diff = np.bincount(k, weights=correct - c, minlength=n_edges + 1)[:n_edges]
    n = max(len(c), 1)
    count = np.bincount(k, minlength=n_edges + 1)[1:n_edges]
    safe = np.maximum(count, 1)
    conf_b = np.bincount(k, weights=c, minlength=n_edges + 1)[1:n_edges] / safe
    acc_b = np.bincount(k, weights=correct, minlength=n_edges + 1)[1:n_edges] / safe
    return {"edges": torch.from_numpy(edges), "confidence": torch.from_numpy(conf_b),
            "accuracy": torch.from_numpy(acc_b), "count": torch.from_numpy(count.astype(np.int64)),
            "ece": float(np.abs(diff).sum() / n)}


def reliability(p: torch.Tensor, labels: torch.Tensor, n_bins: int,
                binning: Literal["equal", "original"] = "equal") -> dict[str, Any]:
    """Reliability bins and ECE (a fraction) of probabilities [N, C] under either binning (module docstring)."""
    if binning == "original":
        return original_bins(p, labels, n_bins)
    return calibration_bins(p, labels, n_bins)


@register_analysis("calibration")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /calibration from /predict (computed first when missing)."""
    pred = load_predictions(ctx)
    probs, labels, names = pred["member_probs"], pred["labels"], pred["member_names"]
    opts = ctx.recipe.analysis
    n_bins, binning = opts.bins, opts.ece_binning
    ens = probs.mean(0)
    models = [*probs.unbind(0), ens]
    eces = np.array([reliability(p, labels, n_bins, binning)["ece"] for p in models[:-1]] + [0.0], dtype=np.float64)
    bins = reliability(ens, labels, n_bins, binning)
    eces[-1] = bins["ece"]
    nlls = np.array([nll(p, labels) for p in models], dtype=np.float64)
    shown = len(bins["count"])  # diagram bins: B, or B - 1 for the original's edges
    write_group(ctx.h5, "calibration", {
        "ece": eces,
        "nll": nlls,
        "bin_edges": bins["edges"].numpy(),
        "bin_confidence": bins["confidence"].numpy(),
        "bin_accuracy": bins["accuracy"].numpy(),
        "bin_count": bins["count"].numpy(),
        "member_names": names,
    }, attrs={"n_bins": shown, "ece_binning": binning, "split": "test",
              "units": "ECE and bin accuracy as fractions, NLL in nats", "rows": "members, then the ensemble"},
        meta=ctx.meta)
    return {"ece": float(eces[-1]), "member_ece_mean": float(eces[:-1].mean()), "ensemble_nll": float(nlls[-1]),
            "n_bins": shown}


def report_metrics(h5: Path) -> dict[str, float]:
    """`repro report`'s ensemble_ece: the ensemble's ECE from /calibration, in percent (a one-member run's is
    its model's)."""
    if "calibration" not in groups(h5):
        return {}
    return {"ensemble_ece": 100.0 * float(read_group(h5, "calibration")["ece"][-1])}
