"""seawall's transport: the only package that talks to Redis (keys, envelope, streams,
Lua scripts). It imports nothing from ``workers`` or ``sagas``."""

from queues.connection import connect, connect_sync, redact, resolve_url
from queues.envelope import Envelope, EnvelopeError, encode
from queues.keys import HandlerKeys

__all__ = [
    "Envelope",
    "EnvelopeError",
    "HandlerKeys",
    "connect",
    "connect_sync",
    "encode",
    "redact",
    "resolve_url",
]
