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
from workers.breaker import CircuitBreaker
from workers.context import Context
from workers.errors import ConfigError
from workers.middleware import Middleware
from workers.options import positive, reject_unknown
from workers.plugin import HandlerPlugin
from workers.retry import RetryPolicy, make_policy

HANDLER_OPTIONS = frozenset(
    {
        "name", "pool", "timeout", "claim_after", "max_deliveries", "stop", "wait", "retry",
        "idempotent", "idempotency_ttl", "breaker", "fallback", "middleware", "plugin",
    }
)

Decoder = Callable[[bytes], Any]



@dataclass(frozen=True, slots=True)
class HandlerFunc:
    """A function the runtime calls with a payload: the handler, or its fallback."""

    func: Callable[..., Any]
    wants_context: bool
    is_async: bool


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


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _unfilled(params: list[inspect.Parameter]) -> list[str]:
    """Parameters that would get no value: no default, and not ``*args``/``**kwargs``."""
    return [p.name for p in params
            if p.default is inspect.Parameter.empty and p.kind not in _VARIADIC]


def _takes_second_positional(params: list[inspect.Parameter]) -> bool:
    """Whether a call with (payload, ctx) has somewhere to put ctx."""
    rest = params[1:]
    return bool(rest) and (rest[0].kind in _POSITIONAL
                           or rest[0].kind is inspect.Parameter.VAR_POSITIONAL)


def _wants_context(params: list[inspect.Parameter], hints: dict[str, Any], what: str) -> bool:
    rest = params[1:]
    if not rest:
        return False
    ctx_param = rest[0]
    if ctx_param.kind in _VARIADIC:
        # (payload, *args, **kwargs): a generic wrapper; give it the context if it can take it.
        extra = _unfilled(rest[1:])
        if extra:
            raise ConfigError(
                f"{what}: parameters {extra} have no value to receive; a handler takes "
                "(payload, ctx) only; give them defaults or remove them")
        return ctx_param.kind is inspect.Parameter.VAR_POSITIONAL
    hint = hints.get(ctx_param.name)
    if not (hint is Context or ctx_param.name == "ctx"):
        raise ConfigError(
            f"{what}: its second parameter {ctx_param.name!r} must be the context: "
            "name it `ctx` or annotate it `Context` (from workers import Context)"
        )
    extra = _unfilled(rest[1:])
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
    handler: HandlerFunc
    decode: Decoder
    payload_type: type[Any]
    keys: HandlerKeys
    timeout: float | None = None
    """Overrides the pool's timeout when set."""
    claim_after: float | None = None
    """Overrides the pool's claim_after when set."""
    max_deliveries: int | None = None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    """Built from the tenacity ``stop``/``wait``/``retry`` strategies given at registration."""
    idempotent: bool = False
    idempotency_ttl: float = 7 * 24 * 3600.0
    breaker: CircuitBreaker | None = field(default_factory=CircuitBreaker)
    """Every handler has a breaker with the defaults unless registered with breaker=None."""
    fallback: HandlerFunc | None = None
    """Called instead of the handler while its breaker is open; its success acks."""
    middleware: tuple[Middleware, ...] = ()
    """This handler's own middleware, outermost first (inside the app's)."""
    plugin: HandlerPlugin | None = None
    """Set by packages built on workers (sagas): settles some outcomes its own way."""


def _fallback(func: Any, what: str) -> HandlerFunc | None:
    """A fallback takes the handler's payload, and optionally the context."""
    if func is None:
        return None
    if not callable(func):
        raise ConfigError(f"{what}: fallback must be a function taking the same payload")
    params = list(inspect.signature(func).parameters.values())
    takes_payload = bool(params) and (params[0].kind in _POSITIONAL
                                      or params[0].kind is inspect.Parameter.VAR_POSITIONAL)
    if not takes_payload or len(_unfilled(params)) > 2:
        raise ConfigError(f"{what}: fallback must take (payload) or (payload, ctx), like the "
                          "handler")
    wants_context = (_takes_second_positional(params)
                     or params[0].kind is inspect.Parameter.VAR_POSITIONAL)
    return HandlerFunc(func, wants_context, inspect.iscoroutinefunction(func))


def check_middleware(layer: Any, what: str) -> Middleware:
    """A middleware is an ``async def layer(call, call_next) -> Outcome``."""
    method = layer if inspect.isfunction(layer) else type(layer).__call__
    if not callable(layer) or not (inspect.iscoroutinefunction(layer)
                                   or inspect.iscoroutinefunction(method)):
        raise ConfigError(f"{what}: middleware {layer!r} must be an `async def "
                          "layer(call, call_next) -> Outcome` that returns "
                          "`await call_next(call)` (or another Outcome)")
    try:
        inspect.signature(layer).bind(None, None)
    except TypeError:
        raise ConfigError(f"{what}: middleware {getattr(layer, '__qualname__', layer)!r} must "
                          "take two parameters (call, call_next)") from None
    return layer  # type: ignore[no-any-return]


def _middleware(value: Any, what: str) -> tuple[Middleware, ...]:
    if value is None:
        return ()
    if callable(value):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{what}: middleware= takes a list of middleware functions")
    return tuple(check_middleware(layer, what) for layer in value)


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
    breaker = options.get("breaker", CircuitBreaker())
    if breaker is not None and not isinstance(breaker, CircuitBreaker):
        raise ConfigError(f"{what}: breaker must be a CircuitBreaker(...) or None, "
                          f"got {breaker!r}")
    fallback = _fallback(options.get("fallback"), what)
    if fallback is not None and breaker is None:
        raise ConfigError(f"{what}: a fallback runs while the breaker is open; with "
                          "breaker=None it would never run. Give the handler a breaker")
    middleware = _middleware(options.get("middleware"), what)
    return HandlerSpec(
        name=name,
        stream=stream,
        pool=options.get("pool") or "default",
        handler=HandlerFunc(func, wants_context, inspect.iscoroutinefunction(func)),
        decode=decode,
        payload_type=payload_type,
        keys=keys,
        timeout=timeout,
        claim_after=claim_after,
        max_deliveries=max_deliveries,
        retry_policy=make_policy(options.get("stop"), options.get("wait"), options.get("retry")),
        idempotent=bool(options.get("idempotent", False)),
        idempotency_ttl=float(options.get("idempotency_ttl", 7 * 24 * 3600.0)),
        breaker=breaker,
        fallback=fallback,
        middleware=middleware,
        plugin=options.get("plugin"),
    )
