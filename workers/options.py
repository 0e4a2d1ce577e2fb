"""Checking keyword options at registration, so a typo fails when the app is built."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from workers.errors import ConfigError


def reject_unknown(what: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise :class:`ConfigError` naming each unknown option and the closest known one."""
    known = sorted(known)
    for key in options:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{what}: unknown option {key!r}; {hint}known options: {', '.join(known)}"
        )


def positive(what: str, name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{what}: {name} must be a positive number, got {value!r}")
