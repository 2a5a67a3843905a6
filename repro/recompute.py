"""`repro verify`'s recomputation: each stored analysis of analysis.h5 computed again from the stored predictions
(and masks) by an independent route (numpy in float64, loops and masks rather than the engine's tensor formulas,
scikit-learn for the OOD scores), compared entry by entry with what is stored.

Tolerance: |stored - recomputed| <= RTOL * max(|stored|, |recomputed|) + ATOL (the predictions are stored as float32,
the engine sums in float32 or float64). An accuracy differs only when a float32 and a float64 ensemble mean rank two
near-equal classes differently, which would show as a whole point (1/N) of difference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.analyses.mask_overlap import stored_masks, weight_mask
from engine.io import load_checkpoint
from engine.store import groups, read_group

RTOL = 1e-5
ATOL = 1e-7
EPS = 1e-12  # the engine's clamp inside every logarithm (engine.analyses.ensemble.EPS)


class Skip(Exception):
    """A group that cannot be recomputed from this copy of the run (what it needs is not here); the reason."""


@dataclass
class Check:
    """One recomputed quantity: its largest difference from the stored one and where it is."""

    analysis: str
    quantity: str
    stored: float
    recomputed: float
    diff: float
    ok: bool


def compare(analysis: str, quantity: str, stored: Any, recomputed: Any, rtol: float = RTOL,
            atol: float = ATOL) -> Check:
    """The entry of largest |difference| of two equal-shaped arrays (or scalars); a shape mismatch fails."""
    s = np.asarray(stored, dtype=np.float64)
    r = np.asarray(recomputed, dtype=np.float64)
    if s.shape != r.shape:
        return Check(analysis, f"{quantity} (shape {s.shape} vs {r.shape})", float("nan"), float("nan"),
                     float("inf"), False)
    if s.size == 0:
        return Check(analysis, quantity, float("nan"), float("nan"), 0.0, True)
    both_nan = np.isnan(s) & np.isnan(r)
    d = np.where(both_nan, 0.0, np.abs(s - r))
    d = np.where(np.isnan(d), np.inf, d)
    bad = d > rtol * np.maximum(np.abs(np.nan_to_num(s)), np.abs(np.nan_to_num(r))) + atol
    # the entry shown: the first one out of tolerance, else the largest difference, else the largest value
    i = int(np.argmax(bad.ravel())) if bad.any() else int(np.argmax(d.ravel())) if d.max() > 0 else \
        int(np.argmax(np.abs(np.nan_to_num(s)).ravel()))
    name = quantity if s.ndim == 0 else f"{quantity}[{', '.join(str(int(k)) for k in np.unravel_index(i, s.shape))}]"
    return Check(analysis, name, float(s.ravel()[i]), float(r.ravel()[i]), float(d.max()), not bool(bad.any()))


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(p, EPS))


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-_log(p[np.arange(len(y)), y]).mean())


def _acc(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(-1) == y).mean() * 100.0)


def _ece(p: np.ndarray, y: np.ndarray, n_bins: int, binning: str) -> tuple[float, np.ndarray]:
    """Top-label ECE (a fraction) and the per-bin counts of the diagram, bin by bin with boolean masks."""
    conf = p.max(-1)
    correct = (p.argmax(-1) == y).astype(np.float64)
    c64 = conf.astype(np.float64)
    total, counts = 0.0, []
    if binning == "original":  # edges linspace(0, 1, B+1): a term for c <= 0, then (e_(k-1), e_k]; c > 1 in none
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        for k in range(n_bins + 1):
            sel = conf <= edges[0] if k == 0 else (conf > edges[k - 1]) & (conf <= edges[k])
            total += abs(float((correct[sel] - c64[sel]).sum()))
            if k:
                counts.append(int(sel.sum()))
    else:  # B equal bins i/B < c <= (i+1)/B with edges in the confidences' precision; c <= 0 in the first, > 1 last
        edges = np.arange(n_bins + 1, dtype=conf.dtype) / conf.dtype.type(n_bins)
        for i in range(n_bins):
            lo = conf > edges[i] if i else np.ones(len(conf), dtype=bool)
            hi = conf <= edges[i + 1] if i < n_bins - 1 else np.ones(len(conf), dtype=bool)
            sel = lo & hi
            total += abs(float((correct[sel] - c64[sel]).sum()))
            counts.append(int(sel.sum()))
    return total / max(len(y), 1), np.array(counts)


def _off_mean(m: np.ndarray) -> float:
    off = ~np.eye(len(m), dtype=bool)
    return float(m[off].mean()) if len(m) > 1 else float("nan")


# ---- one function per stored group ---------------------------------------------------------------------------


def check_predict(g: dict[str, Any], pred: dict[str, Any], ctx: Any) -> list[Check]:
    probs, y = pred["probs"], pred["labels"]
    p64 = probs.astype(np.float64)
    ens = p64.mean(0)
    return [
        compare("predict", "member_acc", g["member_acc"], [_acc(p, y) for p in probs]),
        compare("predict", "member_nll", g["member_nll"], [_nll(p, y) for p in p64]),
        compare("predict", "ensemble_acc", g["ensemble_acc"], _acc(ens, y)),
        compare("predict", "ensemble_nll", g["ensemble_nll"], _nll(ens, y)),
    ]


def check_disagreement(g: dict[str, Any], pred: dict[str, Any], ctx: Any) -> list[Check]:
    top = pred["probs"].argmax(-1)
    m = len(top)
    matrix = np.array([[float((top[i] != top[j]).mean()) for j in range(m)] for i in range(m)])
    return [compare("disagreement", "matrix", g["matrix"], matrix),
            compare("disagreement", "mean", g["mean"], _off_mean(matrix))]


def check_kd(g: dict[str, Any], pred: dict[str, Any], ctx: Any) -> list[Check]:
    p = pred["probs"].astype(np.float64)
    m = len(p)
    kl = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if i != j:
                kl[i, j] = max(0.0, float((p[i] * (_log(p[i]) - _log(p[j]))).sum(-1).mean()))
    return [compare("kd", "kl", g["kl"], kl), compare("kd", "mean", g["mean"], _off_mean(kl))]


def check_calibration(g: dict[str, Any], pred: dict[str, Any], ctx: Any) -> list[Check]:
    probs, y = pred["probs"], pred["labels"]
    attrs = g["_attrs"]
    binning = str(attrs.get("ece_binning", "equal"))
    n_bins = int(attrs["n_bins"])  # the diagram's bins: B for "equal", B - 1 (edges B) for "original"
    ens = probs.mean(0, dtype=np.float32)  # the engine's ensemble mean is float32, so are its bin edges
    models = [*probs, ens]
    eces = [_ece(p, y, n_bins, binning)[0] for p in models]
    counts = _ece(ens, y, n_bins, binning)[1]
    return [compare("calibration", "ece", g["ece"], eces),
            compare("calibration", "nll", g["nll"], [_nll(p.astype(np.float64), y) for p in models]),
            compare("calibration", "bin_count", g["bin_count"], counts)]


def check_ood(g: dict[str, Any], pred: dict[str, Any] | None, ctx: Any) -> list[Check]:
    from sklearn.metrics import average_precision_score, roc_auc_score  # deferred: sklearn is slow to import

    s_in, s_out = np.asarray(g["scores_in"], np.float64), np.asarray(g["scores_out"], np.float64)
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    s = np.r_[s_in, s_out]
    out = [compare("ood", "auroc", g["auroc"], roc_auc_score(y, s)),
           compare("ood", "aupr", g["aupr"], average_precision_score(y, s))]
    if pred is not None and len(pred["probs"]) == int(g["_attrs"].get("members", -1)):
        # the in-distribution scores are the ensemble's max softmax on the test split that /predict stores
        out.append(compare("ood", "scores_in vs /predict", g["scores_in"], pred["probs"].mean(0).max(-1)))
    return out


def check_sparsity(g: dict[str, Any], pred: Any, ctx: Any) -> list[Check]:
    stage = str(g["_attrs"]["stage"])
    if not (ctx.run_dir / stage / "final.pt").is_file():
        raise Skip(f"no {stage}/final.pt in this copy: bundled without weights?")
    ck = load_checkpoint(ctx.run_dir / stage / "final.pt")
    masking = ck["method"]["masking"]
    names = list(g["layer_names"])
    masks = [masking["masks"][n].numpy().astype(bool) for n in names]
    sizes = np.array([m.size for m in masks], dtype=np.float64)
    weights = [ck["model"][n].float().numpy() for n in names]
    nonzero = [float((m & (w != 0)).sum() / m.size) for m, w in zip(masks, weights, strict=True)]
    layer = np.asarray(g["layer_density"], np.float64)
    out = [compare("sparsity", "layer_density (last epoch, final.pt masks)", layer[-1], [m.mean() for m in masks]),
           compare("sparsity", "overall_density (last epoch, final.pt masks)", g["overall_density"][-1],
                   sum(m.sum() for m in masks) / sizes.sum()),
           compare("sparsity", "overall_density (layers, every epoch)", g["overall_density"],
                   layer @ sizes / sizes.sum())]
    if np.isfinite(g["overall_nonzero"][-1]):
        out.append(compare("sparsity", "nonzero_density (last epoch, final.pt)", g["nonzero_density"][-1], nonzero))
    return out


def check_mask_overlap(g: dict[str, Any], pred: Any, ctx: Any) -> list[Check]:
    attrs = g["_attrs"]
    if attrs.get("kind") != "weight":
        raise Skip("Early-Bird channel masks are not recomputed")
    members = ctx.members()
    absent = [m["path"] for m in members if not (ctx.run_dir / m["path"]).is_file()]
    if absent:
        raise Skip(f"no {absent[0]} in this copy: bundled without weights?")
    masks = []
    for m in members:
        ck = load_checkpoint(ctx.run_dir / m["path"])
        mask = stored_masks(ck) if attrs.get("source") == "masks" else weight_mask(ck)
        if mask is None:
            raise ValueError(f"{m['path']}: no stored masks, though /mask_overlap says source 'masks'")
        masks.append(mask.numpy().astype(bool))
    k = len(masks)
    dist = np.array([[float((masks[i] != masks[j]).mean()) for j in range(k)] for i in range(k)])
    return [compare("mask_overlap", "distance", g["distance"], dist),
            compare("mask_overlap", "mean distance", _off_mean(np.asarray(g["distance"])), _off_mean(dist)),
            compare("mask_overlap", "density", g["density"], [m.mean() for m in masks])]


CHECKS: dict[str, Callable[[dict[str, Any], Any, Any], list[Check]]] = {
    "predict": check_predict, "disagreement": check_disagreement, "kd": check_kd,
    "calibration": check_calibration, "ood": check_ood, "sparsity": check_sparsity,
    "mask_overlap": check_mask_overlap,
}
NEEDS_PREDICT = {"predict", "disagreement", "kd", "calibration"}


def recompute(run_dir: Path, ctx: Any) -> tuple[list[Check], list[str]]:
    """Every check of every group in the run's analysis.h5, and a line for each group not recomputed (why)."""
    h5 = Path(run_dir) / "analysis.h5"
    present = groups(h5)
    pred = None
    if "predict" in present:
        g = read_group(h5, "predict")
        pred = {"probs": np.asarray(g["member_probs"]), "labels": np.asarray(g["labels"]).astype(np.int64)}
    checks: list[Check] = []
    skipped: list[str] = []
    for name in present:
        fn = CHECKS.get(name)
        if fn is None:
            skipped.append(f"{name}: not recomputed (covered by its hash only)")
            continue
        if name in NEEDS_PREDICT and pred is None:
            skipped.append(f"{name}: not recomputed (no /predict to recompute it from)")
            continue
        try:
            checks += fn(read_group(h5, name), pred, ctx)
        except Skip as e:
            skipped.append(f"{name}: not recomputed ({e})")
        except (OSError, RuntimeError, KeyError, ValueError) as e:  # CheckpointError is a RuntimeError
            checks.append(Check(name, f"cannot recompute: {' '.join(str(e).split())}", float("nan"), float("nan"),
                                float("inf"), False))
    return checks, skipped
