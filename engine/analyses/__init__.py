"""Analyses over a finished run, each writing one group of analysis.h5; each registers itself beside its
definition (`@register_analysis`), and importing the modules here fills ANALYSES (name -> function)."""

from engine.analyses import (  # noqa: F401  (each module registers its analyses)
    calibration,
    corruption,
    curve,
    disagreement,
    earlybird,
    kd,
    mask_overlap,
    ood,
    plane,
    predict,
    sparsity,
    tsne,
)
from engine.analyses.context import ANALYSES, PREFLIGHT, AnalysisContext, register_analysis

__all__ = ["ANALYSES", "PREFLIGHT", "AnalysisContext", "register_analysis"]
