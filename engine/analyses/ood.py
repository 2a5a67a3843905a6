"""`ood`: out-of-distribution detection by the ensemble's maximum softmax probability, on the run's test
split (the positives) against the test split of `[analysis].ood_dataset` (normalised as the training data),
as AUROC and AUPR."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.analyses.context import AnalysisContext, register_analysis
from engine.analyses.ensemble import max_softmax, ood_metrics
from engine.data import Split, load_dataset, make_loader, make_synthetic
from engine.evaluate import predict_probs
from engine.store import write_group


def ood_split(ctx: AnalysisContext) -> Split:
    """The OOD data set's test split, cut to `[data].test_subset` like the in-distribution one."""
    name, trained_on = ctx.recipe.analysis.ood_dataset, ctx.recipe.data.dataset
    if name == trained_on:
        raise ValueError(f"analysis.ood_dataset: '{name}' is the training dataset; choose another for ood")
    d = ctx.recipe.data
    want = tuple(ctx.data.test.image_shape)
    if name == "synthetic" or (name.startswith("synthetic-") and name[10:].isdigit()):
        # generated at the model's image shape, so any recipe can smoke-test its OOD analysis
        classes = 10 if name == "synthetic" else int(name.split("-")[1])
        test = make_synthetic(num_classes=classes, shape=want).test  # type: ignore[arg-type]
    else:
        test = load_dataset(name, d.root or None, image_size=d.image_size, resize=d.resize, workers=d.workers,
                            decoder=d.decoder).test
    if d.test_subset:
        test = test.subset(d.test_subset)
    if tuple(test.image_shape) != want:
        raise ValueError(f"analysis.ood_dataset: '{name}' images are {tuple(test.image_shape)}, the model takes {want}")
    return test


@register_analysis("ood")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /ood: the ensemble's max-softmax scores on both test splits and how well they separate them."""
    name = ctx.recipe.analysis.ood_dataset
    out_split = ood_split(ctx)
    d = ctx.recipe.data
    in_loader = ctx.eval_loader()
    out_loader = make_loader(out_split, d.eval_batch_size, device=ctx.device, train=False, normalize=d.normalize)
    members = ctx.members()
    p_in: torch.Tensor | None = None
    p_out: torch.Tensor | None = None
    for m in members:
        model = ctx.load_member(m)
        a, b = predict_probs(model, in_loader, ctx.amp), predict_probs(model, out_loader, ctx.amp)
        p_in = a if p_in is None else p_in + a
        p_out = b if p_out is None else p_out + b
    assert p_in is not None and p_out is not None, "ctx.members() returned no member"
    s_in = max_softmax(p_in / len(members)).numpy().astype(np.float32)
    s_out = max_softmax(p_out / len(members)).numpy().astype(np.float32)
    res = ood_metrics(s_in, s_out)
    write_group(ctx.h5, "ood", {
        "auroc": res["auroc"],
        "aupr": res["aupr"],
        "scores_in": s_in,
        "scores_out": s_out,
    }, attrs={"ood_dataset": name, "score": "max softmax of the ensemble mean", "positive": "in-distribution",
              "members": len(members)}, meta=ctx.meta)
    return {"ood_dataset": name, "auroc": res["auroc"], "aupr": res["aupr"], "members": len(members)}
