"""`predict` (ensemble_freetickets.py --mode predict, fge.py's running ensemble): each member's softmax
on the evaluation split, the ensemble as the mean of the members' probabilities, accuracy and NLL of both."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.analyses.context import AnalysisContext, register_analysis
from engine.evaluate import predict_probs
from engine.store import groups, read_group, write_group

TICKET = re.compile(r"ticket\d+")  # Sup-tickets' cheap tickets (ticket1..K), not the superposed network


def ensemble_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Per-member and mean-probability ensemble accuracy (percent) and NLL from probs [M, N, C]."""
    eps = 1e-12
    idx = labels.view(1, -1, 1).expand(probs.shape[0], -1, 1)
    member_acc = (probs.argmax(2) == labels).float().mean(1) * 100
    member_nll = -torch.log(probs.gather(2, idx).squeeze(2).clamp_min(eps)).mean(1)
    ens = probs.mean(0)
    ens_acc = (ens.argmax(1) == labels).float().mean() * 100
    ens_nll = -torch.log(ens.gather(1, labels.view(-1, 1)).squeeze(1).clamp_min(eps)).mean()
    return {"member_acc": member_acc, "member_nll": member_nll, "ensemble_acc": float(ens_acc),
            "ensemble_nll": float(ens_nll)}


@register_analysis("predict")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /predict and return its headline numbers."""
    members = ctx.members()
    loader = ctx.eval_loader()
    probs = []
    for m in members:
        model = ctx.load_member(m)
        probs.append(predict_probs(model, loader, ctx.amp))
    p = torch.stack(probs)
    labels = ctx.labels
    res = ensemble_metrics(p, labels)
    write_group(ctx.h5, "predict", {
        "labels": labels.numpy(),
        "member_probs": p.numpy().astype(np.float32),
        "member_names": [m["name"] for m in members],
        "member_acc": res["member_acc"].numpy(),
        "member_nll": res["member_nll"].numpy(),
        "ensemble_acc": res["ensemble_acc"],
        "ensemble_nll": res["ensemble_nll"],
    }, attrs={"split": "test", "units": "accuracy in percent"}, meta=ctx.meta)
    return {"members": len(members), "ensemble_acc": res["ensemble_acc"], "ensemble_nll": res["ensemble_nll"],
            "member_acc_mean": float(res["member_acc"].mean())}


def report_metrics(h5: Path) -> dict[str, float]:
    """`ticket_ensemble_acc` for `repro report`: accuracy (%) of the mean softmax over the cheap tickets in /predict
    (members named ticket1..K, the superposed network left out): Sup-tickets' "prediction ensemble" (Table 17)."""
    if "predict" not in groups(h5):
        return {}
    g = read_group(h5, "predict")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in g["member_names"]]
    idx = [i for i, n in enumerate(names) if TICKET.fullmatch(n)]
    if not idx or "superposed" not in names:  # EDST's members are ticket1..K too; its ensemble is ensemble_acc
        return {}
    probs = torch.from_numpy(np.asarray(g["member_probs"])[idx].astype(np.float64))
    return {"ticket_ensemble_acc": float(ensemble_metrics(probs, torch.from_numpy(np.asarray(g["labels"])).long())[
        "ensemble_acc"])}
