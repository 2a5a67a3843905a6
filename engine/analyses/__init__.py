"""Analyses over a finished run, each writing one group of analysis.h5. ANALYSES maps mode -> function."""

from collections.abc import Callable
from typing import Any

from engine.analyses import predict, sparsity
from engine.analyses.context import AnalysisContext

ANALYSES: dict[str, Callable[[AnalysisContext], dict[str, Any]]] = {
    "predict": predict.run,
    "sparsity": sparsity.run,
}

__all__ = ["ANALYSES", "AnalysisContext"]
