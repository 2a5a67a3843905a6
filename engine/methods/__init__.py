"""One module per paper procedure; METHODS maps a recipe's `method` to its class."""

from engine.methods.base import Method
from engine.methods.curve import Curve
from engine.methods.dst import DST
from engine.methods.earlybird import EBPrune, EBRetrain, EBSearch
from engine.methods.edst import EDST
from engine.methods.fge import FGE
from engine.methods.fix import Fix
from engine.methods.gmp import GMP
from engine.methods.granet import GraNet
from engine.methods.suptickets import SupTickets
from engine.methods.train import Train

METHODS: dict[str, type[Method]] = {
    "train": Train,
    "fix": Fix,
    "dst": DST,
    "edst": EDST,
    "granet": GraNet,
    "gmp": GMP,
    "suptickets": SupTickets,
    "eb_search": EBSearch,
    "eb_prune": EBPrune,
    "eb_retrain": EBRetrain,
    "curve": Curve,
    "fge": FGE,
}

__all__ = ["METHODS", "Method"]
