"""The hooks a paper procedure fills in; the trainer calls them around its loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from engine.config.params import MethodParams

if TYPE_CHECKING:
    from engine.trainer import Trainer


METHODS: dict[str, type[Method]] = {}  # a recipe's `method` -> its class, filled by @register_method


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Register a method class under its recipe name (its params class is engine.config.params.PARAMS[name])."""

    def register(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method '{name}' is registered twice")
        METHODS[name] = cls
        return cls

    return register


class Method:
    """Default behaviour: plain supervised training of the stage's model. Subclasses override hooks."""

    Params: type[MethodParams] = MethodParams  # the method's own `[stage.params]` (engine.config.params)

    def __init__(self, trainer: Trainer, params: dict[str, Any]) -> None:
        self.trainer = trainer
        self.params = self.Params.model_validate(params)

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the stage trains, built around the recipe's model (a curve wraps it); the model itself here."""
        return model

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The stage's optimizer; a method that trains other parameters (curves) builds its own."""
        from engine.trainer import build_optimizer

        return build_optimizer(self.trainer.cfg.optimizer, self.model)

    def lr(self, epoch: int, frac: float) -> float | None:
        """A learning rate the procedure itself prescribes (EDST's phases), or None for the recipe's schedule."""
        return None

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
        name = self.trainer.cfg.name
        kept = "best.pt" if self.trainer.cfg.keep == "best" else "final.pt"
        member: dict[str, Any] = {"name": name, "path": f"{name}/{kept}"}
        if self.trainer.model_kwargs:
            member["model_kwargs"] = self.trainer.model_kwargs
        return [member]
