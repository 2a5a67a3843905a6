"""Analyses over a finished run, each writing one group of analysis.h5. ANALYSES maps mode -> function."""

from collections.abc import Callable
from typing import Any

from engine.analyses import calibration, disagreement, kd, mask_overlap, ood, predict, sparsity, tsne
from engine.analyses.context import AnalysisContext

ANALYSES: dict[str, Callable[[AnalysisContext], dict[str, Any]]] = {
    "predict": predict.run,
    "disagreement": disagreement.run,
    "kd": kd.run,
    "calibration": calibration.run,
    "ood": ood.run,
    "mask_overlap": mask_overlap.run,
    "tsne": tsne.run,
    "sparsity": sparsity.run,
}

__all__ = ["ANALYSES", "AnalysisContext"]
