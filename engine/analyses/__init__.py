"""Analyses over a finished run, each writing one group of analysis.h5. ANALYSES maps mode -> function."""

from collections.abc import Callable
from typing import Any

from engine.analyses import (
    calibration,
    curve,
    disagreement,
    earlybird,
    eb_overlap,
    kd,
    ood,
    plane,
    predict,
    sparsity,
    tsne,
)
from engine.analyses.context import AnalysisContext

ANALYSES: dict[str, Callable[[AnalysisContext], dict[str, Any]]] = {
    "predict": predict.run,
    "disagreement": disagreement.run,
    "kd": kd.run,
    "calibration": calibration.run,
    "ood": ood.run,
    "mask_overlap": eb_overlap.run_any,  # weight tickets, or Early-Bird channel masks over epochs
    "tsne": tsne.run,
    "sparsity": sparsity.run,
    "earlybird": earlybird.run,
    "curve": curve.run,
    "plane": plane.run,
    "bn_eval": curve.run_bn_eval,  # the run's networks after BN re-estimation, as eval_curve scores endpoints
}

__all__ = ["ANALYSES", "AnalysisContext"]
