"""The ensemble metrics as pure functions over tensors, so that each can be checked by hand.

Shapes: `probs` [M, N, C] are the members' softmax probabilities on N test points, `p` [N, C] one model's,
`labels` [N] int64. Probabilities are clamped at `EPS` inside every logarithm. Fractions stay fractions here
(the disagreement, ECE); the analyses decide the units they store.

`load_predictions` is the one helper that touches a run: it reads /predict, computing it first when missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.analyses import predict
from engine.analyses.context import AnalysisContext
from engine.store import groups, read_group

EPS = 1e-12


# ---- diversity ---------------------------------------------------------------------------------------------


def disagreement_matrix(probs: torch.Tensor) -> torch.Tensor:
    """[M, M] float64: d[i, j] = fraction of the N points where argmax p_i != argmax p_j (zero diagonal)."""
    pred = probs.argmax(-1)
    return (pred[:, None, :] != pred[None, :, :]).to(torch.float64).mean(-1)


def kl_matrix(probs: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """[M, M] float64: kl[i, j] = mean over points of KL(p_i || p_j) = sum_c p_i (log p_i - log p_j).

    Computed as (sum p_i log p_i) - (sum p_i log p_j), the cross terms of all pairs in one matrix product,
    so memory stays O(M N C) rather than O(M^2 N C). The diagonal is exactly zero.
    """
    p = probs.to(torch.float64)
    m, n = p.shape[0], p.shape[1]
    logp = p.clamp_min(eps).log()
    own = (p * logp).sum((1, 2))  # [M]
    cross = p.reshape(m, -1) @ logp.reshape(m, -1).T  # cross[i, j] = sum_{n,c} p_i log p_j
    kl = (own[:, None] - cross) / n
    kl.fill_diagonal_(0.0)
    return kl.clamp_min(0.0)  # rounding can leave -1e-17 between identical members


def mean_off_diagonal(matrix: torch.Tensor) -> float:
    """The mean of the M(M-1) off-diagonal entries of a square matrix (NaN when M < 2)."""
    m = matrix.shape[0]
    if m < 2:
        return float("nan")
    off = ~torch.eye(m, dtype=torch.bool, device=matrix.device)
    return float(matrix[off].to(torch.float64).mean())


# ---- calibration -------------------------------------------------------------------------------------------


def bin_edges(n_bins: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[B+1] equal-width edges over [0, 1], edge k computed as k / B in `dtype`."""
    return torch.arange(n_bins + 1, dtype=dtype) / n_bins


def confidence_bin(conf: torch.Tensor, n_bins: int) -> torch.Tensor:
    """The bin of each confidence: bin i holds i/B < c <= (i+1)/B, and c = 0 falls in bin 0.

    The edges are built in the confidences' dtype, so a confidence equal to k/B in that precision lands
    in bin k-1. Values above 1 (rounding) go to the last bin.
    """
    if conf.dtype not in (torch.float32, torch.float64):
        conf = conf.to(torch.float32)
    edges = bin_edges(n_bins, conf.dtype).to(conf.device)
    idx = torch.searchsorted(edges, conf.contiguous(), right=False) - 1  # first edge >= c, minus one
    return idx.clamp_(0, n_bins - 1)


def calibration_bins(p: torch.Tensor, labels: torch.Tensor, n_bins: int) -> dict[str, Any]:
    """Top-label reliability of one model's probabilities [N, C]: per-bin count, mean confidence and accuracy
    (fractions, 0 for empty bins), the edges, and ECE = sum_b (n_b / N) |acc_b - conf_b|."""
    conf, pred = p.max(-1)
    correct = (pred == labels.to(pred.device)).to(torch.float64)
    b = confidence_bin(conf, n_bins)
    conf64 = conf.to(torch.float64)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, b.cpu(), torch.ones_like(conf64).cpu())
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, b.cpu(), conf64.cpu())
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, b.cpu(), correct.cpu())
    safe = count.clamp_min(1.0)
    n = max(int(conf.numel()), 1)
    ece = float((conf_sum - acc_sum).abs().sum() / n)  # sum_b |sum_{n in b}(conf - correct)| / N
    return {"edges": bin_edges(n_bins), "confidence": conf_sum / safe, "accuracy": acc_sum / safe,
            "count": count.to(torch.int64), "ece": ece}


def ece(p: torch.Tensor, labels: torch.Tensor, n_bins: int) -> float:
    """Top-label expected calibration error of probabilities [N, C] with B equal-width bins (a fraction)."""
    return calibration_bins(p, labels, n_bins)["ece"]


def nll(p: torch.Tensor, labels: torch.Tensor, eps: float = EPS) -> float:
    """Mean of -log p[y] over the points of probabilities [N, C]."""
    py = p.to(torch.float64).gather(-1, labels.view(-1, 1).to(p.device)).squeeze(-1)
    return float(-py.clamp_min(eps).log().mean())


# ---- out of distribution -----------------------------------------------------------------------------------


def max_softmax(p: torch.Tensor) -> torch.Tensor:
    """The maximum-softmax-probability score of each point of probabilities [N, C]."""
    return p.max(-1).values


def ood_metrics(scores_in: np.ndarray, scores_out: np.ndarray) -> dict[str, float]:
    """AUROC and AUPR (average precision) of telling in-distribution points (the positives) from others."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # deferred: sklearn is slow to import

    s_in, s_out = np.asarray(scores_in, np.float64).ravel(), np.asarray(scores_out, np.float64).ravel()
    if not len(s_in) or not len(s_out):
        raise ValueError(f"OOD metrics need points on both sides (got {len(s_in)} in, {len(s_out)} out)")
    y = np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])
    s = np.concatenate([s_in, s_out])
    return {"auroc": float(roc_auc_score(y, s)), "aupr": float(average_precision_score(y, s))}


# ---- t-SNE -------------------------------------------------------------------------------------------------


def tsne_perplexity(requested: float, n_points: int) -> float:
    """sklearn needs perplexity < n_points: the requested one, capped at (P - 1) / 3 but never below 1."""
    return float(min(requested, max((n_points - 1) / 3.0, 1.0)))


def tsne_embed(points: np.ndarray, perplexity: float) -> np.ndarray:
    """A 2-D t-SNE embedding [P, 2] of points [P, D] (PCA init, random_state 0: deterministic)."""
    from sklearn.manifold import TSNE  # deferred: sklearn is slow to import

    x = np.asarray(points, dtype=np.float64)
    tsne = TSNE(n_components=2, perplexity=tsne_perplexity(perplexity, len(x)), init="pca", random_state=0)
    return tsne.fit_transform(x).astype(np.float64)


# ---- reading /predict --------------------------------------------------------------------------------------


def load_predictions(ctx: AnalysisContext) -> dict[str, Any]:
    """/predict of the run as {member_probs [M,N,C] tensor, labels [N] tensor, member_names}; it runs the
    `predict` analysis first when the group is missing."""
    if "predict" not in groups(ctx.h5):
        predict.run(ctx)
    g = read_group(ctx.h5, "predict")
    return {"member_probs": torch.from_numpy(np.asarray(g["member_probs"])),
            "labels": torch.from_numpy(np.asarray(g["labels"])).to(torch.int64),
            "member_names": list(g["member_names"])}
