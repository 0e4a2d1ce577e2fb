"""Connecting: the URL's precedence, and a password that is never shown."""

from __future__ import annotations

import pytest

from queues.connection import (
    DEFAULT_URL,
    ENV_VAR,
    answers,
    connect,
    connect_sync,
    ping_sync,
    redact,
    resolve_url,
    server_time_ms_sync,
)


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
    ("redis://alice:s3cret@db:6379/2", "redis://alice:***@db:6379/2"),
    ("rediss://alice:s3cret@db.example.com/0?ssl_cert_reqs=none",
     "rediss://alice:***@db.example.com/0?ssl_cert_reqs=none"),
])
def test_redact_hides_the_password(url: str, expected: str) -> None:
    out = redact(url)

    assert out == expected
    assert "s3cret" not in out


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "redis://alice@db/0",
                                 "unix:///tmp/redis.sock"])
def test_redact_leaves_urls_without_a_password_alone(url: str) -> None:
    assert redact(url) == url


def test_redact_an_unparsable_url_shows_nothing_of_it() -> None:
    out = redact("redis://:s3cret@[::1")

    assert "s3cret" not in out


def test_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_url() == DEFAULT_URL == "redis://localhost:6379/0"
    assert resolve_url(None, "redis://app/0") == "redis://app/0"

    monkeypatch.setenv(ENV_VAR, "redis://env/0")
    assert resolve_url(None, "redis://app/0") == "redis://env/0"
    assert resolve_url("redis://cli/0", "redis://app/0") == "redis://cli/0"


def test_an_empty_env_var_falls_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "")

    assert resolve_url(None, "redis://app/0") == "redis://app/0"


def test_an_invalid_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ValueError) as info:
        connect_sync("nosuch://:s3cret@db/0")

    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)


def test_clients_answer_in_bytes(redis_url: str) -> None:
    client = connect_sync(redis_url)
    try:
        assert client.ping() is True
        assert client.echo("x") == b"x"
    finally:
        client.close()


async def test_async_client_answers_in_bytes(redis_url: str) -> None:
    client = connect(redis_url, max_connections=2)
    try:
        assert await client.echo("x") == b"x"
    finally:
        await client.aclose()


def test_answers_tells_a_live_redis_from_nothing_listening(redis_url: str) -> None:
    assert answers(redis_url) is True
    assert answers("redis://127.0.0.1:1/0", timeout=0.2) is False
    assert answers("not a url") is False


def test_the_server_clock_and_ping(redis_url: str) -> None:
    import time

    client = connect_sync(redis_url, timeout=2.0)
    try:
        ping_sync(client)
        assert abs(server_time_ms_sync(client) - time.time() * 1000) < 60_000
    finally:
        client.close()


PACKED = [
    ("XACK", "orders", "billing.charge", *(f"17000000{i:05d}-0" for i in range(100))),
    ("XINFO GROUPS", "orders"),
    (b"CONFIG GET", b"maxmemory-policy"),
    ("SET", "k\u2713", b"\x00\xff\r\n", 7, 2**70, 1.5, 0.1 + 0.2),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", b"x" * 10_000),
]


@pytest.mark.parametrize("command", PACKED)
async def test_the_async_client_packs_commands_as_redis_py_does(
        redis_url: str, command: tuple[object, ...]) -> None:
    from redis.asyncio.connection import Connection

    client = connect(redis_url, max_connections=1)
    try:
        pool = client.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        assert isinstance(connection, Connection)
        assert type(connection).pack_command is not Connection.pack_command
        # (hiredis packs the whole command into one buffer; redis-py in pieces)
        assert b"".join(connection.pack_command(*command)) == b"".join(
            Connection().pack_command(*command))
    finally:
        await client.aclose()


async def test_an_argument_hiredis_does_not_pack_fails_as_redis_py_says(
        redis_url: str) -> None:
    from redis.exceptions import DataError

    client = connect(redis_url, max_connections=1)
    try:
        with pytest.raises(DataError, match="Invalid input of type: 'bool'"):
            await client.set("seawall-test-never-written", True)  # type: ignore[arg-type]
        assert await client.exists("seawall-test-never-written") == 0
    finally:
        await client.aclose()
