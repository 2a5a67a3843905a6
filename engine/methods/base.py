"""The hooks a paper procedure fills in; the trainer calls them around its loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from engine.config import StageConfig
from engine.config.params import PARAMS, MethodParams
from engine.optim import build_optimizer
from engine.registry import Registry
from engine.runinfo import RunInfo
from engine.schedules import lr_at

if TYPE_CHECKING:
    from engine.trainer import Trainer


METHODS: Registry[type[Method]] = Registry("method")  # a recipe's `method` -> its class


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """@register_method("name") beside each class: registers it and gives it its params class, PARAMS[name]."""

    def register(cls: type[Method]) -> type[Method]:
        cls.Params = PARAMS[name]
        return METHODS.add(name, cls)

    return register


class Method:
    """Default behaviour: plain supervised training of the stage's model. Subclasses override hooks.

    A method is handed its stage's config (`stage`, with its typed `params`) and what it may read of the run
    (`info`: the recipe's data/model/run/analysis settings, the run directory, the stage's index and seeds); the
    trainer it runs in holds the live objects (model, optimizer, loaders, data set, log, step and epoch counters).
    """

    Params: type[MethodParams] = MethodParams  # the method's own `[stage.params]` (engine.config.params)
    trains = True  # False: a measure-only stage, whose epochs only evaluate the model (no training pass, no step)

    def __init__(self, trainer: Trainer, stage: StageConfig, info: RunInfo) -> None:
        self.trainer = trainer
        self.stage = stage
        self.info = info
        self.params = self.Params.model_validate(stage.params)

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    def log(self, message: str) -> None:
        """A line in the run's log."""
        self.trainer.log.log(message)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the stage trains, built around the recipe's model (a curve wraps it); the model itself here."""
        return model

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The stage's optimizer; a method that trains other parameters (curves) builds its own."""
        return build_optimizer(self.stage.optimizer, self.model)

    def lr(self, epoch: int, frac: float) -> float:
        """The learning rate at fraction `frac` of 0-based `epoch`: the stage's `[schedule]` here; methods that
        prescribe their own (EDST's phases, Sup-tickets' cycles) call their rule in engine.schedules."""
        return lr_at(self.stage.schedule, self.stage.optimizer.lr, epoch, frac, self.stage.epochs)

    def setup(self) -> None:
        """Called once before the first epoch (and before a checkpoint is restored on resume)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training forward pass."""
        return self.trainer.forward_model(x)

    def eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation forward pass."""
        return self.trainer.forward_model(x)

    def extra_loss(self) -> torch.Tensor | None:
        """A term added to the cross-entropy (e.g. a curve's L2 at the sampled t); None for none."""
        return None

    def stop_requested(self) -> bool:
        """True to end the stage early (Early-Bird's search once every ratio has its ticket)."""
        return False

    def start_epoch(self, epoch: int) -> None:
        """Before the epoch's first step (e.g. Sup-tickets' re-exploration at a cycle's start)."""

    def before_step(self) -> None:
        """After backward, before the optimizer step (e.g. an L1 subgradient on BN scales)."""

    def after_step(self) -> None:
        """After the optimizer step (e.g. re-apply masks, update the topology)."""

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """After the epoch's evaluation; may add keys to the metrics record or save tickets."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def densities(self) -> dict[str, float] | None:
        """Per-layer densities of the masked weights for cost accounting; None for a dense model."""
        return None

    def growth_cost(self) -> tuple[str | None, int | None]:
        """(growth rule, update interval) when topology updates need extra gradient work (RigL), else (None, None)."""
        return None, None

    def current_member(self) -> int:
        """Which ensemble member the current weights belong to (EDST: the refinement phase); 0 by default."""
        return 0

    def members(self) -> list[dict[str, Any]]:
        """The ensemble members this stage leaves, as {name, path} with paths relative to the run dir: the stage's
        final weights, or with `keep = "best"` its best-evaluated checkpoint (best.pt, written by the trainer)."""
        name = self.stage.name
        kept = "best.pt" if self.stage.keep == "best" else "final.pt"
        member: dict[str, Any] = {"name": name, "path": f"{name}/{kept}"}
        if self.trainer.model_kwargs:
            member["model_kwargs"] = self.trainer.model_kwargs
        return [member]
