"""seawall's runtime: declare handlers and pools on an :class:`App`, run them with
``seawall run module:app``."""

from workers.app import App
from workers.breaker import CircuitBreaker
from workers.context import Context
from workers.errors import (
    BreakerOpen,
    ConfigError,
    HandlerError,
    HandlerTimeout,
    NonRetryable,
    Retry,
    SeawallError,
)
from workers.limiter import PoolStatistics
from workers.pool import Pool
from workers.pool_config import PoolConfig

__all__ = [
    "App",
    "BreakerOpen",
    "CircuitBreaker",
    "ConfigError",
    "Context",
    "HandlerError",
    "HandlerTimeout",
    "NonRetryable",
    "Pool",
    "PoolConfig",
    "PoolStatistics",
    "Retry",
    "SeawallError",
]
