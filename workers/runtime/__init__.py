"""The process runtime: what runs a pool inside one OS process, and the supervisor that
keeps the pool processes running. The declaration API (``workers``: ``App``, ``Context``,
``CircuitBreaker``, the errors) imports without loading any of it."""

from workers.runtime.limiter import PoolStatistics
from workers.runtime.pool import Pool

__all__ = ["Pool", "PoolStatistics"]
