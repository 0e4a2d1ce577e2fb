"""Registration fails when the app is built, and the message names the fix.

``from workers.app import App`` rather than ``from workers import App``: inside pytest the
``tests/workers`` directory can shadow the package's ``__init__`` (see
tests/test_exported_members.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel

from queues.envelope import Envelope
from workers.app import App
from workers.context import Context
from workers.errors import ConfigError
from workers.handler import HandlerFunc, HandlerSpec
from workers.middleware import Call, Next
from workers.outcome import Outcome
from workers.runtime.stack import Invoke


class OrderPlaced(BaseModel):
    order_id: str


@pytest.fixture
def app() -> App:
    return App("shop")


def test_a_well_formed_app_registers(app: App) -> None:
    app.pool("payments", concurrency=8, processes=2, claim_after=5.0)

    @app.handler("orders", pool="payments", name="billing.charge", timeout=10)
    async def charge(order: OrderPlaced, ctx: Context) -> None: ...

    @app.handler("orders")
    def receipt(order: dict[str, Any]) -> None: ...

    default = f"{__name__}.test_a_well_formed_app_registers.receipt"  # module + qualname
    assert set(app.handlers) == {"billing.charge", default}
    spec = app.handlers["billing.charge"]
    assert (spec.stream, spec.pool, spec.timeout) == ("orders", "payments", 10)
    assert spec.handler.is_async and spec.handler.wants_context
    assert app.handlers[default].pool == "default"
    assert app.pools["payments"].concurrency == 8


def test_first_parameter_without_annotation(app: App) -> None:
    with pytest.raises(ConfigError) as info:
        @app.handler("orders")
        def charge(order) -> None: ...  # type: ignore[no-untyped-def]

    message = str(info.value)
    assert message.startswith("handler '") and ".charge'" in message
    assert "first parameter 'order' has no annotation" in message
    assert "annotate it with a pydantic model or dict" in message
    assert "def charge(order: OrderPlaced)" in message


@pytest.mark.parametrize("annotation", [int, str, list[int], OrderPlaced | None])
def test_first_parameter_neither_pydantic_nor_dict(app: App, annotation: Any) -> None:
    def charge(order: Any) -> None: ...
    charge.__annotations__["order"] = annotation

    with pytest.raises(ConfigError) as info:
        app.handler("orders")(charge)

    message = str(info.value)
    assert "annotate its first parameter with a pydantic model or dict" in message
    assert "OrderPlaced is a BaseModel" in message
    assert repr(annotation) in message
    assert app.handlers == {}


def test_no_parameters(app: App) -> None:
    with pytest.raises(ConfigError) as info:
        @app.handler("orders")
        def charge() -> None: ...

    assert "takes no parameters; declare the payload" in str(info.value)
    assert "def charge(order: OrderPlaced)" in str(info.value)


def test_duplicate_handler_names(app: App) -> None:
    @app.handler("orders", name="billing.charge")
    def charge(order: OrderPlaced) -> None: ...

    with pytest.raises(ConfigError) as info:
        @app.handler("refunds", name="billing.charge")
        def refund(order: OrderPlaced) -> None: ...

    message = str(info.value)
    assert "handler name 'billing.charge' is used twice" in message
    assert "'orders'" in message and "'refunds'" in message
    assert "@app.handler('refunds', name='...')" in message
    assert app.handlers["billing.charge"].handler.func is charge


def test_same_function_name_twice_collides_on_the_default_name(app: App) -> None:
    def make() -> Any:
        def charge(order: OrderPlaced) -> None: ...
        return charge

    app.handler("orders")(make())
    with pytest.raises(ConfigError, match="is used twice"):
        app.handler("orders")(make())


def test_unknown_pool_option_suggests_the_right_one(app: App) -> None:
    with pytest.raises(ConfigError) as info:
        app.pool("payments", concurency=4)

    message = str(info.value)
    assert "app.pool('payments')" in message
    assert "unknown option 'concurency'" in message
    assert "did you mean 'concurrency'?" in message
    assert "known options:" in message and "claim_after" in message
    assert "payments" not in app.pools


def test_unknown_pool_option_without_a_close_match_lists_the_known_ones(app: App) -> None:
    with pytest.raises(ConfigError) as info:
        app.pool("payments", colour="blue")

    message = str(info.value)
    assert "unknown option 'colour'" in message
    assert "did you mean" not in message
    assert "batch_size, claim_after, concurrency, max_deliveries, processes, timeout" in message


def test_unknown_handler_option_suggests_the_right_one(app: App) -> None:
    with pytest.raises(ConfigError) as info:
        @app.handler("orders", timout=5)
        def charge(order: OrderPlaced) -> None: ...

    message = str(info.value)
    assert "@app.handler('orders')" in message
    assert "unknown option 'timout'" in message
    assert "did you mean 'timeout'?" in message


def test_bad_second_parameter(app: App) -> None:
    with pytest.raises(ConfigError) as info:
        @app.handler("orders")
        def charge(order: OrderPlaced, session: str) -> None: ...

    message = str(info.value)
    assert "second parameter 'session' must be the context" in message
    assert "name it `ctx` or annotate it `Context`" in message
    assert "from workers import Context" in message


def test_second_parameter_named_ctx_or_typed_context_is_accepted(app: App) -> None:
    @app.handler("orders")
    def by_name(order: OrderPlaced, ctx) -> None: ...  # type: ignore[no-untyped-def]

    @app.handler("orders")
    def by_type(order: OrderPlaced, context: Context) -> None: ...

    assert all(spec.handler.wants_context for spec in app.handlers.values())


def test_extra_parameters_without_defaults(app: App) -> None:
    with pytest.raises(ConfigError) as info:
        @app.handler("orders")
        def charge(order: OrderPlaced, ctx: Context, retries: int) -> None: ...

    assert "parameters ['retries'] have no value to receive" in str(info.value)
    assert "give them defaults or remove them" in str(info.value)


@pytest.mark.parametrize("concurrency", [0, -1, 2.5, "4", True])
def test_bad_concurrency(app: App, concurrency: Any) -> None:
    with pytest.raises(ConfigError) as info:
        app.pool("payments", concurrency=concurrency)

    assert f"pool 'payments': concurrency must be an integer >= 1, got {concurrency!r}" == str(
        info.value)


@pytest.mark.parametrize(("option", "value", "fix"), [
    ("processes", 0, "processes must be an integer >= 1"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("max_deliveries", 0, "max_deliveries must be an integer >= 1"),
    ("claim_after", 0, "claim_after must be a positive number"),
    ("timeout", -1, "timeout must be a positive number"),
])
def test_bad_pool_numbers(app: App, option: str, value: Any, fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        app.pool("payments", **{option: value})


@pytest.mark.parametrize(("option", "value", "fix"), [
    ("timeout", 0, "timeout must be a positive number"),
    ("claim_after", -2, "claim_after must be a positive number"),
    ("max_deliveries", 0, "max_deliveries must be an integer >= 1"),
    ("breaker", "on", "breaker must be a CircuitBreaker"),
])
def test_bad_handler_numbers(app: App, option: str, value: Any, fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        app.handler("orders", **{option: value})(_charge)


def _charge(order: OrderPlaced) -> None: ...


def test_a_pool_declared_twice(app: App) -> None:
    app.pool("payments")

    with pytest.raises(ConfigError, match="declared twice; declare each pool once"):
        app.pool("payments", concurrency=2)


def test_braces_in_the_stream_name(app: App) -> None:
    with pytest.raises(ConfigError, match="must not contain"):
        app.handler("{orders}")(_charge)


def test_an_app_needs_a_name() -> None:
    with pytest.raises(ConfigError, match=r"App\('shop'\)"):
        App("")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)



# -- generic signatures (*args, **kwargs) --------------------------------------------------


async def _invoke(spec: HandlerSpec, func: HandlerFunc) -> Outcome:
    """Call the handler or its fallback with one message, as the runtime's innermost
    layer does."""
    call = Call(spec.name, "default", spec.stream,
                Envelope(spec.stream, "1-0", {b"payload": b'{"order_id":"o1"}'}), 0.0)
    with ThreadPoolExecutor(max_workers=1) as executor:
        return await Invoke(spec, func, executor, timeout=None,
                            fallback=func is spec.fallback)(call)


async def test_a_handler_taking_args_and_kwargs_is_accepted_and_gets_the_context(
        app: App) -> None:
    received: list[tuple[Any, ...]] = []

    @app.handler("orders", name="audit")
    async def audit(order: OrderPlaced, *args: Any, **kwargs: Any) -> None:
        received.append((order, args, kwargs))

    spec = app.handlers["audit"]
    assert spec.handler.wants_context and spec.handler.is_async
    assert spec.payload_type is OrderPlaced
    assert (await _invoke(spec, spec.handler)).error is None
    [(order, args, kwargs)] = received
    assert order == OrderPlaced(order_id="o1")
    assert [type(a) for a in args] == [Context] and kwargs == {}


async def test_a_handler_taking_only_kwargs_gets_no_context(app: App) -> None:
    received: list[tuple[Any, ...]] = []

    @app.handler("orders", name="audit")
    def audit(order: OrderPlaced, **kwargs: Any) -> None:
        received.append((order, kwargs))

    spec = app.handlers["audit"]
    assert not spec.handler.wants_context and not spec.handler.is_async
    assert (await _invoke(spec, spec.handler)).error is None
    assert received == [(OrderPlaced(order_id="o1"), {})]


async def test_a_fallback_taking_args_and_kwargs_is_accepted_and_gets_the_context(
        app: App) -> None:
    received: list[tuple[Any, ...]] = []

    async def park(msg, *args, **kwargs):  # type: ignore[no-untyped-def]
        received.append((msg, args, kwargs))

    @app.handler("orders", name="charge", fallback=park)
    async def charge(order: OrderPlaced) -> None: ...

    spec = app.handlers["charge"]
    assert spec.fallback is not None
    assert spec.fallback.wants_context and spec.fallback.is_async
    assert not spec.handler.wants_context  # the handler's own signature decides for it
    outcome = await _invoke(spec, spec.fallback)
    assert outcome.error is None and outcome.kind.value == "fallback"
    [(msg, args, kwargs)] = received
    assert msg == OrderPlaced(order_id="o1")  # decoded as the handler's payload
    assert [type(a) for a in args] == [Context] and kwargs == {}


@pytest.mark.parametrize(("signature", "wants_context"), [
    ("def park(msg): ...", False),
    ("def park(msg, ctx): ...", True),
    ("def park(*args): ...", True),
    ("def park(msg, **kwargs): ...", False),
    ("async def park(msg, ctx=None): ...", True),
])
def test_what_a_fallback_receives_follows_its_signature(app: App, signature: str,
                                                        wants_context: bool) -> None:
    namespace: dict[str, Any] = {}
    exec(signature, namespace)

    app.handler("orders", name="charge", fallback=namespace["park"])(_charge)

    fallback = app.handlers["charge"].fallback
    assert fallback is not None and fallback.wants_context is wants_context


@pytest.mark.parametrize("signature", ["def park(): ...", "def park(a, b, c): ...",
                                       "def park(*, msg): ..."])
def test_a_fallback_that_cannot_take_the_payload_is_refused(app: App, signature: str) -> None:
    namespace: dict[str, Any] = {}
    exec(signature, namespace)

    with pytest.raises(ConfigError, match=r"fallback must take \(payload\) or "
                                          r"\(payload, ctx\), like the handler"):
        app.handler("orders", fallback=namespace["park"])(_charge)
    assert app.handlers == {}


# -- middleware= ---------------------------------------------------------------------------


async def _layer(call: Call, call_next: Next) -> Outcome:
    return await call_next(call)


def test_middleware_is_accepted_for_the_app_and_for_a_handler(app: App) -> None:
    class Timing:
        async def __call__(self, call: Call, call_next: Next) -> Outcome:
            return await call_next(call)

    async def with_option(call: Call, call_next: Next, label: str = "x") -> Outcome:
        return await call_next(call)

    timing = Timing()
    assert app.middleware(_layer) is _layer  # usable as a decorator
    app.middleware(timing)

    @app.handler("orders", name="charge", middleware=[with_option, _layer])
    def charge(order: OrderPlaced) -> None: ...

    @app.handler("orders", name="refund", middleware=_layer)
    def refund(order: OrderPlaced) -> None: ...

    assert app.middleware_stack == [_layer, timing]
    assert app.handlers["charge"].middleware == (with_option, _layer)
    assert app.handlers["refund"].middleware == (_layer,)


def _sync_layer(call: Call, call_next: Next) -> Outcome:
    raise AssertionError("never called")


async def _one_parameter(call: Call) -> Outcome:
    raise AssertionError("never called")


async def _three_parameters(call: Call, call_next: Next, extra: str) -> Outcome:
    raise AssertionError("never called")


ASYNC_DEF_FIX = ("must be an `async def layer(call, call_next) -> Outcome` that returns "
                 "`await call_next(call)`")
TWO_PARAMETERS_FIX = "must take two parameters (call, call_next)"


@pytest.mark.parametrize(("layer", "fix"), [
    (_sync_layer, ASYNC_DEF_FIX),
    (lambda call, call_next: None, ASYNC_DEF_FIX),
    (None, ASYNC_DEF_FIX),
    (_one_parameter, TWO_PARAMETERS_FIX),
    (_three_parameters, TWO_PARAMETERS_FIX),
], ids=["sync", "lambda", "none", "one-parameter", "three-parameters"])
def test_a_wrong_middleware_is_refused_naming_the_fix(app: App, layer: Any, fix: str) -> None:
    with pytest.raises(ConfigError) as on_app:
        app.middleware(layer)
    with pytest.raises(ConfigError) as on_handler:
        app.handler("orders", middleware=[layer])(_charge)

    assert fix in str(on_app.value) and str(on_app.value).startswith("app.middleware: ")
    assert fix in str(on_handler.value)
    assert str(on_handler.value).startswith("handler '_charge'")
    assert app.middleware_stack == [] and app.handlers == {}


def test_middleware_that_is_not_a_list_is_refused(app: App) -> None:
    with pytest.raises(ConfigError, match="middleware= takes a list of middleware functions"):
        app.handler("orders", middleware="audit")(_charge)
