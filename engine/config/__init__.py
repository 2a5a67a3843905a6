"""The recipe schema, torch-free: what a valid recipe is, every name it may use, and each method's params.

Loading, `--set`, `--smoke` and `[sweep]` live in `repro.recipe`; this package only says what a valid recipe
is, so the engine takes a typed object and the CLI reports `key.path: what is wrong` without importing torch.
  base     Strict models and the 'did you mean' hint       names   the names of papers, data sets, analyses ...
  archs    architecture names and their grammar           params  each method's typed [stage.params]
  schema   the recipe's tables and the cross-stage checks
"""

from engine.config.archs import UnknownArch, canonical_arch, list_archs, resolve_arch
from engine.config.base import Strict, suggest
from engine.config.names import (
    ANALYSES,
    DATASETS,
    DEFAULT_LOGGERS,
    LOGGERS,
    METRICS,
    NORMALIZATIONS,
    PAPERS,
    SPARSE_INITS,
)
from engine.config.params import PARAMS, MethodParams, params_for
from engine.config.schema import (
    AnalysisOptions,
    DataConfig,
    ExpectConfig,
    ModelConfig,
    OptimizerConfig,
    Recipe,
    RunConfig,
    ScheduleConfig,
    SparseConfig,
    StageConfig,
    TrainDefaults,
    cross_check,
)

__all__ = [
    "ANALYSES", "DATASETS", "DEFAULT_LOGGERS", "LOGGERS", "METRICS", "NORMALIZATIONS", "PAPERS", "PARAMS",
    "SPARSE_INITS",
    "AnalysisOptions", "DataConfig", "ExpectConfig", "MethodParams", "ModelConfig", "OptimizerConfig", "Recipe",
    "RunConfig", "ScheduleConfig", "SparseConfig", "StageConfig", "Strict", "TrainDefaults", "UnknownArch",
    "canonical_arch", "cross_check", "list_archs", "params_for", "resolve_arch", "suggest",
]
