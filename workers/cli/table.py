"""Plain-text tables for the CLI (no dependency for something this small). Cells are
printed with their control characters escaped (:mod:`workers.cli.terminal`): they hold
names, payload excerpts and error texts that producers and handlers wrote."""

from __future__ import annotations

from collections.abc import Sequence

from workers.cli.terminal import printable


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    rows = [[printable(cell, one_line=True) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([line.rstrip(), *(b.rstrip() for b in body)])
