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
    NonRetryable,
    Retry,
    SeawallError,
)
from workers.pool_config import PoolConfig

__all__ = [
    "App",
    "CircuitBreaker",
    "ConfigError",
    "Context",
    "HandlerError",
    "HandlerTimeout",
    "NonRetryable",
    "PoolConfig",
    "Retry",
    "SeawallError",
]
