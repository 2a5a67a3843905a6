"""Small wording helpers shared by the app's screens."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 member', '3 members', '0 members' (`many` for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
