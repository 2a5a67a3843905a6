"""`sparsity`: the layer-wise densities of a sparse stage over training (one row per epoch), from its final.pt.

Mask density counts the active positions; nonzero density (`nonzero_density`, `overall_nonzero`) counts the masked
weights that are not zero. They differ when a topology update lands shortly before an epoch's end: the regrown
weights are active but still exactly zero, and the epoch's evaluation and tickets see the smaller network. Runs
recorded before nonzero counts existed get NaN there."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.analyses.context import AnalysisContext, register_analysis
from engine.io import load_checkpoint
from engine.store import write_group


@register_analysis("sparsity")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /sparsity for the last stage that trained with masks."""
    for stage in reversed(ctx.recipe.stage):
        path = ctx.run_dir / stage.name / "final.pt"
        if not path.exists():
            continue
        method = load_checkpoint(path).get("method", {})
        if "masking" in method and method.get("history"):
            hist = method["history"]
            names = list(method["masking"]["names"])
            nan_row = [float("nan")] * len(names)
            write_group(ctx.h5, "sparsity", {
                "layer_names": names,
                "layer_density": np.array([h["layers"] for h in hist], dtype=np.float64),
                "overall_density": np.array([h["density"] for h in hist], dtype=np.float64),
                "nonzero_density": np.array([h.get("nonzero_layers", nan_row) for h in hist], dtype=np.float64),
                "overall_nonzero": np.array([h.get("nonzero", float("nan")) for h in hist], dtype=np.float64),
                "epoch": np.array([h["epoch"] for h in hist], dtype=np.int64),
                "step": np.array([h["step"] for h in hist], dtype=np.int64),
            }, attrs={"stage": stage.name}, meta=ctx.meta)
            return {"stage": stage.name, "final_density": hist[-1]["density"], "layers": len(names)}
    raise FileNotFoundError(f"{ctx.run_dir}: no finished sparse stage (sparsity needs a stage with masks)")
