"""Training-step throughput of the real trainer loop on synthetic data (what `repro bench` prints)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from engine.config import Recipe
from engine.methods import METHODS
from engine.models import create_model
from engine.runlog import RunLog
from engine.trainer import StageContext, Trainer, recipe_data


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def stepper(recipe: Recipe, device: torch.device) -> Callable[[int], None]:
    """A function running n training steps of the recipe's first stage exactly as Trainer.train_epoch does."""
    data = recipe_data(recipe)
    stage = recipe.stage[0]
    torch.manual_seed(0)
    model = create_model(recipe.model.arch, data.num_classes, recipe.model.width)
    ctx = StageContext(recipe=recipe, stage=stage, index=0, run_dir=Path("/nonexistent"), device=device,
                       data=data, log=RunLog(Path("."), enabled=False))
    trainer = Trainer(ctx, model, METHODS[stage.method])
    trainer.method.setup()
    per_epoch = len(trainer.train_loader)
    state = {"epoch": 0, "it": None, "left": 0}

    def run(n: int) -> None:
        trainer.model.train()
        for _ in range(n):
            if state["left"] == 0:
                trainer.train_loader.set_epoch(state["epoch"])
                state.update(it=iter(trainer.train_loader), left=per_epoch, epoch=state["epoch"] + 1)
            x, y = next(state["it"])
            state["left"] -= 1
            with trainer.amp():
                loss = torch.nn.functional.cross_entropy(trainer.method.forward(x), y)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.method.before_step()
            trainer.optimizer.step()
            trainer.step += 1
            trainer.method.after_step()

    return run


def measure(
    recipes: dict[str, Recipe], device: torch.device, steps: int, warmup: int, repeats: int = 3
) -> dict[str, float]:
    """Images/s of each recipe's training step: timed windows of `steps` steps, alternating between the recipes
    `repeats` times so drift (clocks, caches, other load) hits all alike; the best window of each is kept."""
    runs = {k: stepper(r, device) for k, r in recipes.items()}
    best = dict.fromkeys(recipes, 0.0)
    for run in runs.values():
        run(warmup)
    for _ in range(repeats):
        for k, run in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            run(steps)
            _sync(device)
            best[k] = max(best[k], steps * recipes[k].data.batch_size / (time.perf_counter() - t0))
    return best


def bench_recipe(arch: str, batch_size: int, precision: str, method: str = "train",
                 params: dict[str, Any] | None = None, compile: bool = False) -> Recipe:
    """A one-stage recipe on synthetic data sized for the benchmark."""
    return Recipe.model_validate({
        "name": "bench", "paper": "demo", "analyses": [],
        "run": {"precision": precision, "compile": compile},
        "data": {"dataset": "synthetic", "batch_size": batch_size, "crop_pad": 4, "flip": True},
        "model": {"arch": arch},
        "stage": [{"name": "bench", "method": method, "epochs": 1, "params": params or {}}],
    })
