"""The toolkit's one-line error for a value outside a factory's choice table."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_choice(kind: str, value: object, choices: Iterable[str]) -> ValueError:
    """``unknown optimizer 'adamm'; did you mean 'adam'? accepted: adam, adamw, ...`` (case-insensitive hint)."""
    choices = list(choices)
    by_lower = {str(c).lower(): c for c in choices}
    close = [by_lower[c] for c in difflib.get_close_matches(str(value).lower(), list(by_lower), n=1)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ValueError(f"unknown {kind} {value!r}{hint} accepted: {', '.join(map(str, choices))}")


class ConfigError(ValueError):
    """A recipe or command line that cannot be used, with the reason in one line."""
