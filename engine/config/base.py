"""What every schema table shares: strict validation and the 'did you mean' hint of a misspelt name."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict


def suggest(word: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str:
    """A '; did you mean X?' suffix for a misspelt name, or the list of choices."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    if close:
        return f"; did you mean '{close[0]}'?"
    shown = ", ".join(list(choices)[:12])
    return f"; choose from {shown}" + (", ..." if len(choices) > 12 else "")


def known(value: str, choices: list[str] | tuple[str, ...], what: str) -> str:
    """`value` when it is one of `choices`, else a ValueError 'unknown WHAT 'value'; did you mean ...'."""
    if value not in choices:
        raise ValueError(f"unknown {what} '{value}'{suggest(str(value), choices)}")
    return value


class Strict(BaseModel):
    """Unknown keys are errors and no silent type coercion ("3" is not 3)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)
