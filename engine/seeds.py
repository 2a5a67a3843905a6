"""Every seed a stage draws from, derived in one place from the recipe's `run.seed`, the stage's own `seed` and its
position in the recipe. The numbers are those every recipe has always used: changing one changes results."""

from __future__ import annotations

from dataclasses import dataclass

STAGE_STRIDE = 1000  # stage i's model seed is its base seed + 1000·i, so stages of one run draw different inits
REINIT_OFFSET = 17  # Early-Bird retrain re-initialises the pruned network from the model seed + 17
MASK_MULTIPLIER = 7919  # a prime: mask draws of runs with neighbouring seeds do not line up across stages


def base_seed(run_seed: int, stage_seed: int | None) -> int:
    """The stage's own `seed` when it sets one (a repeated stage's copies do), else the run's."""
    return run_seed if stage_seed is None else stage_seed


def stage_seed(run_seed: int, stage_seed: int | None, index: int) -> int:
    """The seed of stage `index`'s fresh model initialisation: its base seed + 1000·index."""
    return base_seed(run_seed, stage_seed) + STAGE_STRIDE * index


@dataclass(frozen=True)
class StageSeeds:
    """The named random streams of one stage.

    model:  the fresh model initialisation (torch.manual_seed before the model is built)
    loader: the training data's order and augmentation draws (the base seed, no stage offset)
    reinit: Early-Bird retrain's fresh weights for the pruned architecture
    masks:  sparse training's mask draws, SNIP re-initialisation and random regrowth. Derived from `run.seed` and
            the index only, ignoring a stage's own seed: repeated sparse stages (FreeTickets' dst1..dst3 with seeds
            17, 18, 19) have always drawn their masks this way, and honouring the stage seed would change them.
    """

    model: int
    loader: int
    reinit: int
    masks: int


def stage_seeds(run_seed: int, stage_seed_: int | None, index: int) -> StageSeeds:
    """Every stream's seed for stage `index` of a run seeded `run_seed` whose stage sets `stage_seed_` (or None)."""
    model = stage_seed(run_seed, stage_seed_, index)
    return StageSeeds(model=model, loader=base_seed(run_seed, stage_seed_), reinit=model + REINIT_OFFSET,
                      masks=run_seed * MASK_MULTIPLIER + index)
