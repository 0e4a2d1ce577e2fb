"""A ``redis+sentinel://`` URL carries the data nodes' password (``:pass@``) and the
sentinels' own (``sentinel_password=``): the blocking and asyncio clients built from it find
the primary and write to it, and neither password shows in the redacted URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from queues.connection import connect, connect_sync, redact
from sentinel.local_sentinel import LocalSentinel


@pytest.fixture
def guarded() -> Iterator[LocalSentinel]:
    local = LocalSentinel(password="data-secret", sentinel_password="sentinel-secret")
    try:
        yield local
    finally:
        local.stop()


async def test_both_passwords_reach_their_servers_and_stay_hidden(
        guarded: LocalSentinel, uid: str) -> None:
    url = guarded.url
    assert ":data-secret@" in url and "sentinel_password=sentinel-secret" in url

    sync = connect_sync(url)
    try:
        sync.xadd(f"auth-{uid}", {"payload": "{}"})
    finally:
        sync.close()
    client = connect(url)
    try:
        assert await client.xlen(f"auth-{uid}") == 1
        info = await client.info("replication")
        assert info["role"] == "master" and int(info["connected_slaves"]) == 1
    finally:
        await client.aclose()

    shown = redact(url)
    assert "data-secret" not in shown and "sentinel-secret" not in shown
