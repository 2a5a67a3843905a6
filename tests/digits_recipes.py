"""The tiny digits recipe and its variants as dicts, and recipe files: torch-free, so the TUI's fixture module can
import it without slowing its start."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import tomli_w

# A ResNet-8 of half width on 384 digits images, three epochs: a complete run in seconds on one CPU core.
DIGITS: dict[str, Any] = {
    "name": "tiny",
    "paper": "demo",
    "run": {"seed": 3},
    "data": {"dataset": "digits", "normalize": "digits", "batch_size": 64, "eval_batch_size": 200,
             "train_subset": 384, "test_subset": 200, "crop_pad": 2, "flip": False},
    "model": {"arch": "cifar_resnet_8", "width": 0.5},
    "train": {"epochs": 3, "optimizer": {"lr": 0.05}, "schedule": {"name": "cosine"}},
    "stage": [{"name": "train", "method": "train"}],
}


def with_overrides(raw: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A copy of `raw` with top-level keys replaced; a dict for a table is merged into it one level deep, and None
    removes a key (TOML has no null), so a variant says only how it differs."""
    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in {**out[key], **value}.items() if v is not None}
        else:
            out[key] = value
    return out


def digits_recipe(**overrides: Any) -> dict[str, Any]:
    """The tiny digits recipe (DIGITS) as a fresh dict, with `overrides` applied as in with_overrides."""
    return with_overrides(DIGITS, **overrides)


def sup_recipe(*, epochs: int, update_frequency: int, final_prune_epoch: int, cycle: int, cycle_rate: float,
               **overrides: Any) -> dict[str, Any]:
    """Sup-tickets on the tiny digits recipe, from 30% to 10% density with the reference's two learning rates; the
    schedule (epochs, prune and cycle lengths) is each test's own."""
    params = {"init_density": 0.3, "final_density": 0.1, "final_prune_epoch": final_prune_epoch, "cycle": cycle,
              "cycle_rate": cycle_rate, "lr_1": 0.005, "lr_2": 0.05, "large_death_rate": 0.3}
    raw = digits_recipe(
        name="sup", analyses=[],
        train={"epochs": epochs, "optimizer": {"lr": 0.1}, "schedule": None,
               "sparse": {"init": "ERK", "update_frequency": update_frequency, "prune_rate": 0.3}},
        stage=[{"name": "sup", "method": "suptickets", "params": params}])
    return with_overrides(raw, **overrides)


def write_recipe(folder: Path, raw: dict[str, Any], name: str = "r.toml") -> Path:
    """`raw` written as the TOML recipe file folder/name."""
    p = folder / name
    p.write_text(tomli_w.dumps(raw))
    return p
