"""A handler's declaration: the function, what it reads, and how failures are treated.

The first parameter's annotation says how the payload is decoded: a pydantic model (validated
from JSON in one step by pydantic-core) or ``dict``. An optional second parameter receives the
:class:`~workers.context.Context`. Everything is checked here, when the app is built.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter

from queues.keys import HandlerKeys
from workers.context import Context
from workers.errors import ConfigError
from workers.options import positive, reject_unknown

HANDLER_OPTIONS = frozenset(
    {
        "name", "pool", "timeout", "claim_after", "max_deliveries", "stop", "wait", "retry",
        "idempotent", "idempotency_ttl", "breaker", "fallback",
    }
)

Decoder = Callable[[bytes], Any]

DEFAULT_BREAKER = "default"
"""Marks a handler registered without ``breaker=``: it gets a breaker with the defaults."""


def _decoder_for(annotation: Any, what: str) -> tuple[Decoder, type[Any]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.model_validate_json, annotation
    origin = typing.get_origin(annotation) or annotation
    if origin is dict:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        return adapter.validate_json, dict
    raise ConfigError(
        f"{what}: annotate its first parameter with a pydantic model or dict, e.g. "
        "`def charge(order: OrderPlaced, ctx: Context)` where OrderPlaced is a BaseModel; "
        f"got {annotation!r}"
    )


def _wants_context(params: list[inspect.Parameter], hints: dict[str, Any], what: str) -> bool:
    rest = params[1:]
    if not rest:
        return False
    ctx_param = rest[0]
    hint = hints.get(ctx_param.name)
    if not (hint is Context or ctx_param.name == "ctx"):
        raise ConfigError(
            f"{what}: its second parameter {ctx_param.name!r} must be the context: "
            "name it `ctx` or annotate it `Context` (from workers import Context)"
        )
    extra = [p.name for p in rest[1:] if p.default is inspect.Parameter.empty]
    if extra:
        raise ConfigError(
            f"{what}: parameters {extra} have no value to receive; a handler takes "
            "(payload, ctx) only; give them defaults or remove them"
        )
    return True


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One registered handler: everything the runtime needs, decided at registration."""

    name: str
    stream: str
    pool: str
    func: Callable[..., Any]
    decode: Decoder
    payload_type: type[Any]
    wants_context: bool
    is_async: bool
    keys: HandlerKeys
    timeout: float | None = None
    """Overrides the pool's timeout when set."""
    claim_after: float | None = None
    """Overrides the pool's claim_after when set."""
    max_deliveries: int | None = None
    retry_options: dict[str, Any] = field(default_factory=dict)
    """tenacity ``stop``/``wait``/``retry`` strategies given at registration."""
    idempotent: bool = False
    idempotency_ttl: float = 7 * 24 * 3600.0
    breaker: Any = None
    fallback: Callable[..., Any] | None = None


def default_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "handlers"
    return f"{module}.{func.__qualname__}".replace("<locals>.", "")


def build_spec(func: Callable[..., Any], stream: str, options: dict[str, Any]) -> HandlerSpec:
    """Check a handler and its options; raise :class:`ConfigError` naming the fix."""
    what = f"handler {getattr(func, '__qualname__', func)!r}"
    reject_unknown(f"@app.handler({stream!r})", {k: v for k, v in options.items()
                                                 if k not in HANDLER_OPTIONS}, HANDLER_OPTIONS)
    if not callable(func):
        raise ConfigError(f"@app.handler({stream!r}) must decorate a function")
    if not isinstance(stream, str) or not stream:
        raise ConfigError(f"{what}: the stream must be a non-empty string")
    name = options.get("name") or default_name(func)
    try:
        keys = HandlerKeys(stream, name)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    params = list(inspect.signature(func).parameters.values())
    if not params:
        raise ConfigError(
            f"{what}: it takes no parameters; declare the payload, e.g. "
            "`def charge(order: OrderPlaced)`"
        )
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise ConfigError(f"{what}: its annotations cannot be resolved ({exc}); "
                          "import the model at module level") from None
    first = params[0]
    if first.name not in hints:
        raise ConfigError(
            f"{what}: its first parameter {first.name!r} has no annotation; annotate it with a "
            "pydantic model or dict, e.g. `def charge(order: OrderPlaced)`"
        )
    decode, payload_type = _decoder_for(hints[first.name], what)
    wants_context = _wants_context(params, hints, what)
    timeout = options.get("timeout")
    positive(what, "timeout", timeout, allow_none=True)
    claim_after = options.get("claim_after")
    positive(what, "claim_after", claim_after, allow_none=True)
    max_deliveries = options.get("max_deliveries")
    if max_deliveries is not None and (not isinstance(max_deliveries, int) or max_deliveries < 1):
        raise ConfigError(f"{what}: max_deliveries must be an integer >= 1")
    fallback = options.get("fallback")
    if fallback is not None and not callable(fallback):
        raise ConfigError(f"{what}: fallback must be a function taking the same payload")
    return HandlerSpec(
        name=name,
        stream=stream,
        pool=options.get("pool") or "default",
        func=func,
        decode=decode,
        payload_type=payload_type,
        wants_context=wants_context,
        is_async=inspect.iscoroutinefunction(func),
        keys=keys,
        timeout=timeout,
        claim_after=claim_after,
        max_deliveries=max_deliveries,
        retry_options={k: options[k] for k in ("stop", "wait", "retry") if options.get(k)},
        idempotent=bool(options.get("idempotent", False)),
        idempotency_ttl=float(options.get("idempotency_ttl", 7 * 24 * 3600.0)),
        breaker=options.get("breaker", DEFAULT_BREAKER),
        fallback=fallback,
    )
