"""The one registry kind: a name -> definition table filled by a decorator beside each definition (timm's
`@register_model` style), so a name registered twice fails at import instead of silently replacing the first."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """A dict of what is registered under each name; `kind` names the things in the duplicate error."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, name: str, obj: T) -> T:
        """Register `obj` under `name`; a name taken already is an error."""
        if name in self:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self[name] = obj
        return obj

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: register the decorated definition under each of `names`."""

        def add_all(obj: T) -> T:
            for name in names:
                self.add(name, obj)
            return obj

        return add_all
