"""Dynamic sparse training at constant density: SET (random growth) and RigL (gradient growth);
FreeTickets' `main_DST.py`, Sup-tickets' `--method DST`.

    masks <- ERK at the density
    for each step: SGD step; weights *= masks
        every update_frequency steps: prune rate·active weights per layer by magnitude,
                                      regrow as many by |grad| (RigL) / at random (SET), new weights at zero
"""

from __future__ import annotations

from engine.methods.base import register_method
from engine.methods.sparse_base import SparseMethod


@register_method("dst")
class DST(SparseMethod):
    """Prune-and-grow every `update_frequency` steps; the growth rule comes from `[sparse].growth`."""

    topology_updates = True
