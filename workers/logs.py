"""Logs: JSON lines (one object per line) or text (coloured on a terminal), the same
setup for the supervisor and its pool processes.

Every line written while a message is being handled, by seawall or by the handler's own
loggers, also carries that message's ids (message, correlation, causation, saga and step,
handler, pool, attempt, trace): the runner puts the message's :class:`~workers.middleware.
Call` in a context variable (:data:`CURRENT_CALL`), which asyncio copies into every task
and the runtime copies into the threads of plain ``def`` handlers, and a filter on the
handler reads it."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.middleware import Call

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

CURRENT_CALL: ContextVar[Call | None] = ContextVar("seawall_call", default=None)
"""The message being handled in this task or thread, if any."""

_IDS = (("message_id", b"id"), ("correlation_id", b"correlation_id"),
        ("causation_id", b"causation_id"), ("saga", b"saga"), ("saga_id", b"saga_id"),
        ("step", b"step"))


def message_ids(call: Call) -> dict[str, Any]:
    """The ids a log line about ``call``'s message carries."""
    fields = call.envelope.fields
    out: dict[str, Any] = {"handler": call.handler, "pool": call.pool,
                           "attempt": call.attempt, "entry_id": call.entry_id}
    for name, field in _IDS:
        raw = fields.get(field)
        if raw:
            out[name] = raw.decode("utf-8", "replace")
    out.setdefault("message_id", call.message_id)
    out.setdefault("correlation_id", call.correlation_id)
    parent = fields.get(b"traceparent")
    if parent and parent.count(b"-") >= 3:
        out["trace_id"] = parent.split(b"-")[1].decode("ascii", "replace")
    return out


class MessageContext(logging.Filter):
    """Adds the ids of the message being handled (if any) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = CURRENT_CALL.get()
        if call is not None:
            for key, value in message_ids(call).items():
                if key not in record.__dict__:
                    setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(self._static)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


_COLOURS = {"DEBUG": "\033[2m", "INFO": "", "WARNING": "\033[33m", "ERROR": "\033[31m",
            "CRITICAL": "\033[1;31m"}


class TextFormatter(logging.Formatter):
    """``time level logger message key=value...``, coloured by level on a terminal."""

    def __init__(self, *, colour: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._colour = colour

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in record.__dict__.items()
                         if k not in _STANDARD and not k.startswith("_"))
        if extra:
            line = f"{line}  {extra}"
        if self._colour and _COLOURS.get(record.levelname):
            line = f"{_COLOURS[record.levelname]}{line}\033[0m"
        return line


def default_format() -> str:
    """``text`` on a terminal, ``json`` otherwise (a log collector)."""
    return "text" if sys.stderr.isatty() else "json"


def configure(level: str = "INFO", *, log_format: str | None = None,
              json_logs: bool | None = None, **static: Any) -> None:
    """Send seawall's logs, and the handlers' own (the root logger's), to stderr: JSON lines
    or text (``log_format``; default: text on a terminal, JSON otherwise)."""
    if json_logs is not None:
        log_format = "json" if json_logs else "text"
    log_format = log_format or default_format()
    if log_format not in ("json", "text"):
        raise ValueError(f"log format must be 'json' or 'text', got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(static))
    else:
        handler.setFormatter(TextFormatter(colour=sys.stderr.isatty()))
    handler.addFilter(MessageContext())
    for name in ("seawall", ""):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
    seawall = logging.getLogger("seawall")
    seawall.setLevel(level.upper())
    seawall.propagate = False
    logging.getLogger().setLevel(level.upper())
