"""Registration fails when the app is built, and the message names the fix.

``from workers.app import App`` rather than ``from workers import App``: inside pytest the
``tests/workers`` directory can shadow the package's ``__init__`` (see
tests/test_exported_members.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from workers.app import App
from workers.context import Context
from workers.errors import ConfigError


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
