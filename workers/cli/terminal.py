"""Text from Redis made safe to print on a terminal.

Payloads, headers, error messages and saga memos are written by producers and handlers,
which an operator should not have to trust: an ``ESC [2J`` in a payload would clear the
operator's screen when ``seawall dlq show`` prints it, a ``\\r`` would let a line overwrite
what came before it, an OSC sequence could set the window title or a hyperlink, and bidi
controls could make text read other than it is. Every such character is printed as its
escape (``\\x1b``, ``\\r``, ``\\u202e``) instead; the text is otherwise unchanged.
"""

from __future__ import annotations

import re

_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_MULTILINE = re.compile(f"[{_CONTROLS}]")
"""C0 controls but newline and tab, DEL, C1 controls, and the bidi controls."""
_ONE_LINE = re.compile(f"[{_CONTROLS}\n\t]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` with its terminal control characters escaped; with ``one_line``, newlines
    and tabs too (a table cell)."""
    return (_ONE_LINE if one_line else _MULTILINE).sub(_escape, text)


def _json_escape(found: re.Match[str]) -> str:
    return f"\\u{ord(found.group()):04x}"


def printable_json(document: str) -> str:
    """``json.dumps`` output (``ensure_ascii=False``) with the control characters it
    leaves as they are (DEL, C1, bidi) written as ``\\uXXXX`` escapes: still the same
    JSON, since such characters can only stand inside its strings."""
    return _MULTILINE.sub(_json_escape, document)


__all__ = ["printable", "printable_json"]
