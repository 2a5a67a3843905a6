"""Training-step throughput of the real trainer loop on synthetic data, and the wall time of one topology update
(prune and regrow over every masked layer), which is what `repro bench` prints."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.bench_original import OriginalMasking
from engine.config import Recipe
from engine.data import Dataset, make_synthetic
from engine.flops import dense_forward_flops
from engine.methods import METHODS
from engine.models import create_model
from engine.provenance import cpu_model
from engine.runinfo import RunInfo
from engine.runlog import RunLog
from engine.throughput import device_name
from engine.trainer import StageContext, Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_label(device: torch.device) -> str:
    """The hardware a figure was measured on: the CUDA device's name, else the CPU's model name (or "cpu")."""
    return device_name(device) if device.type == "cuda" else (cpu_model() or "cpu")


def bench_data(recipe: Recipe) -> Dataset:
    """The synthetic data set of a bench recipe, its images `data.image_size` pixels square (32: CIFAR shape)."""
    side = recipe.data.image_size
    return make_synthetic(shape=(3, side, side))


def _trainer(recipe: Recipe, device: torch.device) -> Trainer:
    """The real Trainer of the recipe's first stage, its method set up, writing nothing anywhere."""
    data = bench_data(recipe)
    stage = recipe.stage[0]
    torch.manual_seed(0)
    model = create_model(recipe.model.arch, data.num_classes, recipe.model.width)
    ctx = StageContext(stage=stage, info=RunInfo.of(recipe, 0, Path("/nonexistent")), device=device, data=data,
                       log=RunLog(Path("."), enabled=False))
    trainer = Trainer(ctx, model, METHODS[stage.method])
    trainer.method.setup()
    return trainer


class Stepper:
    """Runs n training steps of a bench recipe's first stage: as Trainer.train_epoch does, or with `baseline` the
    way the original scripts do (main_individual.py:79-103: eager fp32 forward, `loss.item()` and an accuracy
    `.item()` every step, torch.optim.SGD (main_individual.py:250) with foreach=False, the per-tensor loop of the
    PyTorch those scripts ran on, same hyperparameters as ours, and for a sparse recipe masks multiplied in by a
    Python loop, engine.bench_original)."""

    def __init__(self, recipe: Recipe, device: torch.device, baseline: bool = False) -> None:
        self.trainer = trainer = _trainer(recipe, device)
        self.baseline = baseline
        self.masking: OriginalMasking | None = None
        if baseline:
            sparse = getattr(trainer.method, "masking", None)
            if sparse is not None:  # the masks our method drew, applied the original way from now on
                self.masking = OriginalMasking(trainer.model, sparse.masks)
            opt = trainer.optimizer
            trainer.optimizer = torch.optim.SGD(
                [{k: v for k, v in g.items() if k not in ("foreach", "fused", "differentiable", "capturable")}
                 for g in opt.param_groups], foreach=False)
        self._epoch, self._left, self._it = 0, 0, iter(())
        self.loss_sum, self.correct = 0.0, 0  # the baseline's host-side running sums, as the originals keep

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        loader = self.trainer.train_loader
        if self._left == 0:
            loader.set_epoch(self._epoch)
            self._it, self._left, self._epoch = iter(loader), len(loader), self._epoch + 1
        self._left -= 1
        return next(self._it)

    def __call__(self, n: int) -> None:
        t = self.trainer
        t.model.train()
        for _ in range(n):
            x, y = self._batch()
            if self.baseline:
                self._baseline_step(x, y)
                continue
            with t.amp():
                loss = torch.nn.functional.cross_entropy(t.method.forward(x), y)
            t.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t.method.before_step()
            t.optimizer.step()
            t.step += 1
            t.method.after_step()

    def _baseline_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        t = self.trainer
        t.optimizer.zero_grad()
        out = t.model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        self.loss_sum += loss.item()
        self.correct += out.argmax(dim=1).eq(y).sum().item()
        loss.backward()
        t.optimizer.step()
        t.step += 1
        if self.masking is not None:
            self.masking.apply()


def measure(
    recipes: dict[str, Recipe], device: torch.device, steps: int, warmup: int, repeats: int = 3,
    baselines: dict[str, Recipe] | None = None,
) -> dict[str, float]:
    """Images/s of each recipe's training step (and of each of `baselines` stepped the original way): timed windows
    of `steps` steps, alternating between all of them `repeats` times so drift (clocks, caches, other load) hits all
    alike; the best window of each is kept."""
    baselines = baselines or {}
    clash = set(recipes) & set(baselines)
    if clash:
        raise ValueError(f"a variant is both ours and a baseline: {sorted(clash)[0]}")
    runs = {k: Stepper(r, device) for k, r in recipes.items()}
    runs |= {k: Stepper(r, device, baseline=True) for k, r in baselines.items()}
    batch = {k: r.data.batch_size for k, r in (recipes | baselines).items()}
    best = dict.fromkeys(runs, 0.0)
    for run in runs.values():
        run(warmup)
    for _ in range(repeats):
        for k, run in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            run(steps)
            _sync(device)
            best[k] = max(best[k], steps * batch[k] / (time.perf_counter() - t0))
    return best


def bench_recipe(arch: str, batch_size: int, precision: str, method: str = "train",
                 params: dict[str, Any] | None = None, compile: bool = False,
                 sparse: dict[str, Any] | None = None, image_size: int = 32, channels_last: bool = True,
                 compile_mode: str = "default") -> Recipe:
    """A one-stage recipe on synthetic data sized for the benchmark (`sparse`: the stage's [sparse] table;
    `image_size`: the side of the square synthetic images, 32 for CIFAR shape)."""
    stage: dict[str, Any] = {"name": "bench", "method": method, "epochs": 1, "params": params or {}}
    if sparse is not None:
        stage["sparse"] = sparse
    return Recipe.model_validate({
        "name": "bench", "paper": "demo", "analyses": [],
        "run": {"precision": precision, "compile": compile, "compile_mode": compile_mode,
                "channels_last": channels_last},
        "data": {"dataset": "synthetic", "batch_size": batch_size, "crop_pad": 4, "flip": True,
                 "image_size": image_size, "resize": max(image_size, 256)},
        "model": {"arch": arch},
        "stage": [stage],
    })


def train_flops_per_image(recipe: Recipe) -> float:
    """Dense training FLOPs per image of the recipe's model at its input size (3 forward passes, engine.flops),
    what achieved TFLOP/s and the fraction of a GPU's peak are computed from (WRN-28-10 at 32x32: 31.46 GFLOP)."""
    side = recipe.data.image_size
    model = create_model(recipe.model.arch, 10, recipe.model.width)
    return 3.0 * dense_forward_flops(model, (3, side, side))


def baseline_recipe(arch: str, batch_size: int, sparse: bool = False, image_size: int = 32) -> Recipe:
    """The bench recipe as the original scripts run it: fp32, eager, no channels_last (dense, or static masks)."""
    return bench_recipe(arch, batch_size, "fp32", method="fix" if sparse else "train", image_size=image_size,
                        compile=False, channels_last=False)


# ---- topology updates ----------------------------------------------------------------------------------------
@dataclass
class TopologyTiming:
    """Wall times of full topology updates, with the masks before the first one and after the last."""

    times_ms: list[float]
    initial: dict[str, torch.Tensor]  # the masks the sparse init drew, before any update
    method: Any  # what was timed: the SparseMethod (method.masking.masks), or the OriginalMasking of the baseline
    masks: dict[str, torch.Tensor]  # bool masks after the timed updates

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
                  precision: str = "fp32", seed: int = 0, baseline: bool = False) -> TopologyTiming:
    """Time `updates` prune-and-regrow updates over all masked layers (RigL: magnitude prune, gradient growth) of the
    real DST method on `arch` with ERK masks at `density`, after `warmup` untimed ones; fresh fake gradients before
    each, outside the timed window, and momentum buffers made by one SGD step, as in training. With `baseline`, the
    same masks, weights and gradients updated the original way instead (engine.bench_original, magnitude/gradient
    only)."""
    if baseline and (prune, growth) != ("magnitude", "gradient"):
        raise ValueError("the baseline topology update is magnitude prune with gradient growth only")
    recipe = bench_recipe(arch, 8, precision, method="dst",
                          sparse={"density": density, "init": "ERK", "prune": prune, "growth": growth})
    recipe.model.width = width
    trainer = _trainer(recipe, device)
    method, masking = trainer.method, trainer.method.masking
    names, params = list(masking.names), list(masking.params)
    initial = {n: m.clone() for n, m in masking.masks.items()}
    gen = torch.Generator(device=device).manual_seed(seed)
    _fake_gradients(params, gen)
    trainer.optimizer.step()  # creates the momentum buffers a topology update also masks
    masking.apply()
    rate = method.scfg.prune_rate
    timed: Any = OriginalMasking(trainer.model, initial) if baseline else method
    update = (lambda: timed.update(rate)) if baseline else (lambda: method.update_topology(rate))
    times = []
    for i in range(warmup + updates):
        _fake_gradients(params, gen)
        _sync(device)
        t0 = time.perf_counter()
        update()
        _sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    final = timed.bool_masks() if baseline else {n: masking.masks[n].clone() for n in names}
    return TopologyTiming(times_ms=times, initial=initial, method=timed, masks=final)
