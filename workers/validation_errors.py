"""What a payload's validation error says, made once per shape of error.

A flood of invalid messages (a producer deployed with a wrong schema) fails the same way
thousands of times: the same fields, the same error types, only the inputs differ. The
inputs are in the dead letter already (its payload, kept byte for byte), so the text a dead
letter carries leaves them out, in pydantic's own layout::

    1 validation error for Order
    n
      Input should be a valid integer, unable to parse string as an integer [type=int_parsing]

Without inputs the text is the same for every message of a shape: it is made once and
looked up after that (``str()`` of a pydantic error costs more than the rest of a dead
letter). Both the retry decision (:func:`workers.retry.decide`, which tells an undecodable
payload from an invalid one) and the dead letter ask, one right after the other, about the
same error object: the last answer is kept for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

SHAPES_KEPT = 512
"""Distinct shapes remembered (a bound on memory; one more shape is described anew)."""


@dataclass(frozen=True, slots=True)
class Described:
    """One shape of validation error."""

    text: str
    """The error without its inputs, in pydantic's layout."""
    undecodable: bool
    """The payload is not JSON at all (``json_invalid``), as opposed to the wrong JSON."""


_SHAPES: dict[tuple[str, str], Described] = {}
_last: tuple[ValidationError | None, Described | None] = (None, None)


def describe(error: ValidationError) -> Described:
    """``error``'s text without its inputs, and whether the payload was not JSON."""
    global _last
    last_error, last = _last
    if last_error is error and last is not None:
        return last
    key = (error.title, error.json(include_url=False, include_input=False))
    described = _SHAPES.get(key)
    if described is None:
        described = _describe(key[0], json.loads(key[1]))
        if len(_SHAPES) < SHAPES_KEPT:
            _SHAPES[key] = described
    _last = (error, described)
    return described


def _describe(title: str, errors: list[dict[str, object]]) -> Described:
    count = len(errors)
    lines = [f"{count} validation error{'s' if count != 1 else ''} for {title}"]
    for e in errors:
        loc = e.get("loc")
        if isinstance(loc, list) and loc:
            lines.append(".".join(str(part) for part in loc))
        lines.append(f"  {e.get('msg')} [type={e.get('type')}]")
    return Described("\n".join(lines),
                     any(e.get("type") == "json_invalid" for e in errors))
