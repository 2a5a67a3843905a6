"""One module per paper procedure; METHODS maps a recipe's `method` to its class."""

from engine.methods.base import Method
from engine.methods.train import Train

METHODS: dict[str, type[Method]] = {
    "train": Train,
}

__all__ = ["METHODS", "Method"]
