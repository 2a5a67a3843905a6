"""Helpers shared by the model definitions: width scaling and the seeds' weight initialisers.

Kept in one place so every family scales channels and draws its initial weights the same way.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import TypeVar

from torch import nn

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def scaled(channels: int, width: float) -> int:
    """Channel count `channels` multiplied by `width`, rounded, and at least 1."""
    return max(1, int(round(channels * width)))


def check_width(width: float) -> float:
    """Return `width` as a float, or raise ValueError when it is not a positive number."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0 or math.isinf(width):
        raise ValueError(f"width must be a positive number, got {width!r}")
    return float(width)


def fixed_table(table: Mapping[K, V], names: tuple[K, ...], family: str) -> dict[K, V]:
    """A fixed-table family's rows, checked to hold exactly the depths (or names) engine.config.archs lists for
    it: recipes are checked against those without torch, so the two must not drift apart."""
    if tuple(table) != tuple(names):
        raise RuntimeError(f"{family}: the model table defines {tuple(table)}, engine.config.archs lists {names}")
    return dict(table)


def he_normal_fan_out_(conv: nn.Conv2d) -> None:
    """The seeds' `normal_(0, sqrt(2 / (k_h * k_w * c_out)))` conv init (He normal, fan-out mode)."""
    n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))
