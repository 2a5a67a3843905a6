"""The one seed helper keeps every stream's legacy derivation (changing one would change every recipe's results)."""

from __future__ import annotations

from pathlib import Path

from engine.config import Recipe
from engine.runinfo import RunInfo
from engine.seeds import stage_seed, stage_seeds


def test_stage_seeds_are_the_derivations_every_recipe_has_used() -> None:
    for run_seed, own, index in ((1, None, 0), (17, 18, 1), (3, None, 2), (5, 0, 4)):
        base = run_seed if own is None else own
        s = stage_seeds(run_seed, own, index)
        assert s.model == stage_seed(run_seed, own, index) == base + 1000 * index  # runner.build_stage_model
        assert s.loader == base  # the training loader: the stage's seed, no index offset
        assert s.reinit == base + 1000 * index + 17  # Early-Bird retrain's re-initialisation
        assert s.masks == run_seed * 7919 + index  # sparse masks: run.seed only, a stage's own seed ignored


def test_run_info_hands_each_stage_its_seeds() -> None:
    recipe = Recipe.model_validate({
        "name": "r", "paper": "demo", "run": {"seed": 17}, "model": {"arch": "cifar_resnet_8"},
        "stage": [{"name": "dst1", "method": "dst", "epochs": 1, "seed": 17},
                  {"name": "dst2", "method": "dst", "epochs": 2, "seed": 18}]})
    info = RunInfo.of(recipe, 1, Path("run"))
    assert (info.seeds.model, info.seeds.loader, info.seeds.reinit, info.seeds.masks) == (1018, 18, 1035, 17 * 7919 + 1)
    assert info.data is recipe.data
