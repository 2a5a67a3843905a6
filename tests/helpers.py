"""Helpers the tests share: recipe runs in process and through the CLI, a run stopped at an epoch, and a sparse
trainer on digits. The recipes themselves are in digits_recipes.py, fixtures in conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from digits_recipes import write_recipe
from torch import nn

from engine import trainer as tr
from engine.config import Recipe
from engine.data import recipe_data
from engine.methods import METHODS
from engine.models import create_model
from engine.runinfo import RunInfo
from engine.runlog import RunLog
from repro.launch import Outcome, execute
from repro.recipe import load

REPRO = [sys.executable, "-m", "repro.cli"]


def run_recipe(raw: dict[str, Any], folder: Path, out: Path, *, root: Path, name: str = "r.toml",
               resume: bool = False, sets: Sequence[str] = ()) -> Outcome:
    """Write `raw` to folder/name and run it in this process on the CPU into `out`, as `repro run --out` would."""
    res = load(str(write_recipe(folder, raw, name)), sets=tuple(sets))[0]
    return execute(res, root=root, out=str(out), resume=resume, device="cpu", sets=sets)


def cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """`repro ARGS` in a subprocess, its output captured as text; `env` adds variables to this process's."""
    return subprocess.run([*REPRO, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


@contextmanager
def stopped_at(epoch: int, stage: str | None = None, exc: type[BaseException] = KeyboardInterrupt) -> Iterator[None]:
    """Runs raise `exc` at the start of 0-based `epoch` (of `stage`, or of any stage), as Ctrl-C or a kill leaves a
    run: the epoch's checkpoints are not written. The trainer is restored on leaving."""
    orig = tr.Trainer.train_epoch

    def dying(self: tr.Trainer, e: int) -> Any:
        if e == epoch and (stage is None or self.cfg.name == stage):
            raise exc
        return orig(self, e)

    tr.Trainer.train_epoch = dying  # type: ignore[method-assign]
    try:
        yield
    finally:
        tr.Trainer.train_epoch = orig  # type: ignore[method-assign]


def sparse_digits_recipe(method: str, sparse: dict[str, Any], params: dict[str, Any] | None = None, epochs: int = 2,
                         *, train_subset: int = 320, test_subset: int = 160, val: int = 0,
                         analysis: dict[str, Any] | None = None, record: bool = False) -> Recipe:
    """One stage of `method` on digits with cifar_resnet_8 at half width (batch 32: 10 steps an epoch for 320
    images), validated."""
    return Recipe.model_validate({
        "name": "t", "paper": "demo", "model": {"arch": "cifar_resnet_8", "width": 0.5},
        "data": {"dataset": "digits", "train_subset": train_subset, "test_subset": test_subset, "batch_size": 32,
                 "val_split": val},
        "stage": [{"name": "s", "method": method, "epochs": epochs, "sparse": sparse, "params": params or {},
                   "record_predictions": record}],
        "analysis": analysis or {},
    })


def digits_trainer(tmp_path: Path, method: str, sparse: dict[str, Any], params: dict[str, Any] | None = None,
                   epochs: int = 2, *, train_subset: int = 320, test_subset: int = 160, val: int = 0,
                   analysis: dict[str, Any] | None = None, record: bool = False, seed: int = 0) -> tr.Trainer:
    """A Trainer for the `sparse_digits_recipe` stage, built without a run directory's logs, for tests that drive
    it step by step."""
    recipe = sparse_digits_recipe(method, sparse, params, epochs, train_subset=train_subset, test_subset=test_subset,
                                  val=val, analysis=analysis, record=record)
    torch.manual_seed(seed)
    ctx = tr.StageContext(stage=recipe.stage[0], info=RunInfo.of(recipe, 0, tmp_path), device=torch.device("cpu"),
                          data=recipe_data(recipe), log=RunLog(tmp_path, enabled=False))
    return tr.Trainer(ctx, create_model("cifar_resnet_8", 10, 0.5), METHODS[method])


def n_params(model: nn.Module) -> int:
    """Every parameter of `model`, counted (buffers such as BN statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters())
