"""Training-step throughput of the real trainer loop on synthetic data, and the wall time of one topology update
(prune and regrow over every masked layer), which is what `repro bench` prints."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.config import Recipe
from engine.data import recipe_data
from engine.methods import METHODS
from engine.models import create_model
from engine.runinfo import RunInfo
from engine.runlog import RunLog
from engine.trainer import StageContext, Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _trainer(recipe: Recipe, device: torch.device) -> Trainer:
    """The real Trainer of the recipe's first stage, its method set up, writing nothing anywhere."""
    data = recipe_data(recipe)
    stage = recipe.stage[0]
    torch.manual_seed(0)
    model = create_model(recipe.model.arch, data.num_classes, recipe.model.width)
    ctx = StageContext(stage=stage, info=RunInfo.of(recipe, 0, Path("/nonexistent")), device=device, data=data,
                       log=RunLog(Path("."), enabled=False))
    trainer = Trainer(ctx, model, METHODS[stage.method])
    trainer.method.setup()
    return trainer


def stepper(recipe: Recipe, device: torch.device) -> Callable[[int], None]:
    """A function running n training steps of the recipe's first stage exactly as Trainer.train_epoch does."""
    trainer = _trainer(recipe, device)
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
                 params: dict[str, Any] | None = None, compile: bool = False,
                 sparse: dict[str, Any] | None = None) -> Recipe:
    """A one-stage recipe on synthetic data sized for the benchmark (`sparse`: the stage's [sparse] table)."""
    stage: dict[str, Any] = {"name": "bench", "method": method, "epochs": 1, "params": params or {}}
    if sparse is not None:
        stage["sparse"] = sparse
    return Recipe.model_validate({
        "name": "bench", "paper": "demo", "analyses": [],
        "run": {"precision": precision, "compile": compile},
        "data": {"dataset": "synthetic", "batch_size": batch_size, "crop_pad": 4, "flip": True},
        "model": {"arch": arch},
        "stage": [stage],
    })


# ---- topology updates ----------------------------------------------------------------------------------------
@dataclass
class TopologyTiming:
    """Wall times of full topology updates, with the masks before the first one and the method holding the last."""

    times_ms: list[float]
    initial: dict[str, torch.Tensor]  # the masks the sparse init drew, before any update
    method: Any  # the SparseMethod; method.masking.masks are the masks after the timed updates

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)


def _fake_gradients(params: list[torch.Tensor], generator: torch.Generator) -> None:
    """Deterministic N(0, 1) gradients on the masked weights (what gradient growth ranks), drawn on their device."""
    for p in params:
        if p.grad is None:
            p.grad = torch.empty_like(p)
        p.grad.normal_(generator=generator)


def time_topology(arch: str, device: torch.device, *, width: float = 1.0, density: float = 0.2,
                  updates: int = 20, warmup: int = 2, prune: str = "magnitude", growth: str = "gradient",
                  precision: str = "fp32", seed: int = 0) -> TopologyTiming:
    """Time `updates` prune-and-regrow updates over all masked layers (RigL: magnitude prune, gradient growth) of the
    real DST method on `arch` with ERK masks at `density`, after `warmup` untimed ones; fresh fake gradients before
    each, outside the timed window, and momentum buffers made by one SGD step, as in training."""
    recipe = bench_recipe(arch, 8, precision, method="dst",
                          sparse={"density": density, "init": "ERK", "prune": prune, "growth": growth})
    recipe.model.width = width
    trainer = _trainer(recipe, device)
    method, masking = trainer.method, trainer.method.masking
    initial = {n: m.clone() for n, m in masking.masks.items()}
    gen = torch.Generator(device=device).manual_seed(seed)
    _fake_gradients(masking.params, gen)
    trainer.optimizer.step()  # creates the momentum buffers a topology update also masks
    masking.apply()
    rate = method.scfg.prune_rate
    times = []
    for i in range(warmup + updates):
        _fake_gradients(masking.params, gen)
        _sync(device)
        t0 = time.perf_counter()
        method.update_topology(rate)
        _sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return TopologyTiming(times_ms=times, initial=initial, method=method)
