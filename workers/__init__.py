"""seawall's declaration API: declare handlers and pools on an :class:`App`, run them with
``seawall run module:app``. The process runtime lives in :mod:`workers.runtime` and is not
imported here."""

from workers.app import App
from workers.breaker import CircuitBreaker
from workers.context import Context
from workers.errors import (
    ConfigError,
    HandlerError,
    HandlerTimeout,
    MessageRejected,
    MessageTooLarge,
    NonRetryable,
    PayloadTooLarge,
    Retry,
    SeawallError,
    SignatureError,
    StepAborted,
)
from workers.middleware import Call, Next
from workers.outcome import Outcome
from workers.pool_config import PoolConfig

__all__ = [
    "App",
    "Call",
    "CircuitBreaker",
    "ConfigError",
    "Context",
    "HandlerError",
    "HandlerTimeout",
    "MessageRejected",
    "MessageTooLarge",
    "Next",
    "NonRetryable",
    "Outcome",
    "PayloadTooLarge",
    "PoolConfig",
    "Retry",
    "SeawallError",
    "SignatureError",
    "StepAborted",
]
