"""Training-step throughput of the real trainer loop on synthetic data (what `repro bench` prints)."""

from __future__ import annotations

import time
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


def measure(recipe: Recipe, device: torch.device, steps: int, warmup: int) -> float:
    """Images per second over `steps` training steps after `warmup` steps (the loop of Trainer.train_epoch)."""
    data = recipe_data(recipe)
    stage = recipe.stage[0]
    torch.manual_seed(0)
    model = create_model(recipe.model.arch, data.num_classes, recipe.model.width)
    ctx = StageContext(recipe=recipe, stage=stage, index=0, run_dir=Path("/nonexistent"), device=device,
                       data=data, log=RunLog(Path("."), enabled=False))
    trainer = Trainer(ctx, model, METHODS[stage.method])
    trainer.method.setup()
    per_epoch = len(trainer.train_loader)
    bs = recipe.data.batch_size

    def run(n: int) -> None:
        epoch = 0
        while n > 0:
            k = min(n, per_epoch)
            trainer.train_loader.set_epoch(epoch)
            it = iter(trainer.train_loader)
            trainer.model.train()
            for _ in range(k):
                x, y = next(it)
                with trainer.amp():
                    loss = torch.nn.functional.cross_entropy(trainer.method.forward(x), y)
                trainer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                trainer.method.before_step()
                trainer.optimizer.step()
                trainer.method.after_step()
            n -= k
            epoch += 1

    run(warmup)
    _sync(device)
    t0 = time.perf_counter()
    run(steps)
    _sync(device)
    return steps * bs / (time.perf_counter() - t0)


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
