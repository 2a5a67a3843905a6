"""What an analysis gets (the resolved recipe, the run directory, the device and the data, loaded lazily) and
the registry each analysis joins beside its definition (`@register_analysis`)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.config import Recipe
from engine.data import Dataset, DeviceLoader, make_loader, recipe_data
from engine.device import amp_dtype, autocast
from engine.io import load_checkpoint
from engine.models import create_model
from engine.registry import Registry


@dataclass
class AnalysisContext:
    """A finished (or partly finished) run seen by an analysis."""

    recipe: Recipe
    run_dir: Path
    device: torch.device
    _data: Dataset | None = field(default=None, repr=False)

    @property
    def h5(self) -> Path:
        return self.run_dir / "analysis.h5"

    @property
    def meta(self) -> dict[str, str]:
        return {"recipe": self.recipe.name, "run_id": self.run_dir.name}

    @property
    def data(self) -> Dataset:
        if self._data is None:
            self._data = recipe_data(self.recipe)
        return self._data

    def eval_loader(self) -> DeviceLoader:
        d = self.recipe.data
        return make_loader(self.data.test, d.eval_batch_size, device=self.device, train=False,
                           normalize=d.normalize)

    def amp(self) -> Any:
        return autocast(self.device, amp_dtype(self.device, self.recipe.run.precision))

    def members(self, stage: str | None = None) -> list[dict[str, Any]]:
        """The ensemble members (tickets): of `stage`, else of the last stage (all stages of its repeat group)."""
        stages = self.recipe.stage
        if stage:
            names = [stage]
        else:
            last = stages[-1]
            names = [s.name for s in stages if s.group == last.group] if last.group else [last.name]
        out = []
        for name in names:
            path = self.run_dir / name / "tickets.json"
            if not path.exists():
                raise FileNotFoundError(f"{self.run_dir}: stage '{name}' has not finished (no tickets.json)")
            out += json.loads(path.read_text())["members"]
        return out

    def load_member(self, member: dict[str, Any]) -> torch.nn.Module:
        """Build the recipe's model and load a member's weights, in eval mode on the device."""
        torch.manual_seed(0)
        m = self.recipe.model
        model = create_model(m.arch, self.data.num_classes, m.width, **member.get("model_kwargs", {}))
        state = load_checkpoint(self.run_dir / member["path"], "cpu")
        model.load_state_dict(state["model"])
        return model.to(self.device).eval()

    @functools.cached_property
    def labels(self) -> torch.Tensor:
        return self.data.test.y.clone()


Analysis = Callable[[AnalysisContext], dict[str, Any]]
ANALYSES: Registry[Analysis] = Registry("analysis")  # a recipe's `analyses` entry -> the function writing its group
register_analysis = ANALYSES.register  # @register_analysis("name") beside each (one of engine.config.names.ANALYSES)
PREFLIGHT: Registry[Callable[[Recipe], None]] = Registry("analysis check")
"""Analysis name -> a check of what it needs from outside the run (a data release), run before any training so
that a missing file fails in seconds, not after the last epoch; raises a one-line error."""
