"""Gradual magnitude pruning (Zhu & Gupta; Sup-tickets' `--method GMP`): dense start, cubic schedule, no regrowth.

    masks <- all ones
    every update_frequency steps in the pruning window: global magnitude pruning to the cubic target density
"""

from __future__ import annotations

from engine.methods.base import register_method
from engine.methods.granet import GraNet


@register_method("gmp")
class GMP(GraNet):
    """GraNet's schedule without neuroregeneration, starting dense (init_density 1.0)."""

    regrow = False

    def initial_masks(self):  # noqa: ANN201 - dense start whatever the init rule
        return {n: m.new_ones(m.shape, dtype=m.dtype).cpu() for n, m in self.masking.masks.items()}
