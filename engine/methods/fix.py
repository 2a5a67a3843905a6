"""Static sparse training (random pruning at initialisation, `--sparse --fix`).

    masks <- layer-wise ratio rule (uniform, ERK, SNIP ratios, ...) drawn at random, once
    for each step: SGD step; weights *= masks (momentum too)
"""

from __future__ import annotations

from engine.methods.base import register_method
from engine.methods.sparse_base import SparseMethod


@register_method("fix")
class Fix(SparseMethod):
    """The mask never changes after initialisation."""
