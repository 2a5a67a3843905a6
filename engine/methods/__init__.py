"""One module per paper procedure; each registers its class beside its definition (`@register_method`), and
importing them here fills METHODS, which maps a recipe's `method` to its class."""

from engine.methods import (  # noqa: F401  (each module registers its methods)
    curve,
    dst,
    earlybird,
    edst,
    fge,
    fix,
    gmp,
    granet,
    suptickets,
    train,
)
from engine.methods.base import METHODS, Method, register_method

__all__ = ["METHODS", "Method", "register_method"]
