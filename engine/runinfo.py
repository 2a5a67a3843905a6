"""What a stage may read about the run around it, handed to its trainer and method (they never reach for the
recipe): the recipe's data, model, run and analysis settings, the run directory, the stage's place and its seeds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.checkpoints import checkpoint_path
from engine.config import AnalysisOptions, DataConfig, ModelConfig, Recipe, RunConfig
from engine.seeds import StageSeeds, stage_seeds


@dataclass(frozen=True)
class RunInfo:
    """The run as one stage sees it."""

    data: DataConfig
    model: ModelConfig
    run: RunConfig
    analysis: AnalysisOptions
    run_dir: Path
    seeds: StageSeeds

    @classmethod
    def of(cls, recipe: Recipe, index: int, run_dir: Path) -> RunInfo:
        """Stage `index` of `recipe`, run in `run_dir`."""
        stage = recipe.stage[index]
        return cls(data=recipe.data, model=recipe.model, run=recipe.run, analysis=recipe.analysis, run_dir=run_dir,
                   seeds=stage_seeds(recipe.run.seed, stage.seed, index))

    def checkpoint(self, ref: str) -> Path:
        """The file a stage reference (`STAGE` or `STAGE@E`) names in this run."""
        return checkpoint_path(self.run_dir, ref)
