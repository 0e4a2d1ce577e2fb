"""What ``dlq show`` and ``saga show`` print of payloads, headers, errors and memos has its
terminal control characters escaped: a payload holding ``ESC [2J`` shows as ``\\x1b[2J``
and clears nobody's screen; ``--json`` keeps the same text, escaped the JSON way."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner

from queues.connection import connect
from queues.dead_letters import dead_letter, dead_letter_fields
from queues.keys import REGISTRY, SagaKeys
from queues.streams import ensure_group, read_group
from workers.cli.main import cli
from workers.cli.table import render_table
from workers.cli.terminal import printable, printable_json
from workers.registry import HandlerRecord, registry_mapping

CLEAR = "\x1b[2J"
TITLE = "\x1b]0;pwned\x07"
HOSTILE = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


def assert_harmless(output: str) -> None:
    for char in HOSTILE:
        assert char not in output, f"{char!r} printed as is"


@pytest.mark.parametrize(("text", "shown"), [
    ("plain text, é, 日本", "plain text, é, 日本"),
    (f"a{CLEAR}b", "a\\x1b[2Jb"),
    (TITLE, "\\x1b]0;pwned\\x07"),
    ("over\rwrite", "over\\rwrite"),
    ("csi \x9b2J, del \x7f, nul \x00", "csi \\x9b2J, del \\x7f, nul \\x00"),
    ("bidi \u202egnp.exe", "bidi \\u202egnp.exe"),
    ("two\nlines\tand a tab", "two\nlines\tand a tab"),
])
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_one_line_escapes_newlines_and_tabs_too() -> None:
    assert printable("a\nb\tc\x1b", one_line=True) == "a\\nb\\tc\\x1b"


def test_printable_json_is_the_same_json() -> None:
    value = {"payload": f"{CLEAR} \x9b \u202e é", "n": 1}
    document = printable_json(json.dumps(value, ensure_ascii=False))
    assert_harmless(document)
    assert json.loads(document) == value
    assert "é" in document


def test_table_cells_are_escaped() -> None:
    table = render_table(["a", "b"], [[f"x{CLEAR}", "two\nlines"]])
    assert_harmless(table)
    assert "x\\x1b[2J" in table and "two\\nlines" in table


@pytest.fixture
def record(sync_redis: redis.Redis, uid: str) -> Iterator[HandlerRecord]:
    rec = HandlerRecord(name=f"esc.handle-{uid}", stream=f"esc-orders-{uid}", pool="default",
                        app="esc")
    sync_redis.hset(REGISTRY, mapping=registry_mapping([rec]))  # type: ignore[arg-type]
    yield rec
    sync_redis.hdel(REGISTRY, rec.name)
    sync_redis.delete(rec.stream, rec.keys.dlq, rec.keys.dlq_counts)


def hostile_dead_letter(url: str, rec: HandlerRecord) -> str:
    """A dead letter, made by the real scripts, whose payload, header and error carry
    terminal control sequences; its id."""

    async def main() -> str:
        client = connect(url)
        keys = rec.keys
        try:
            await ensure_group(client, keys.stream, keys.group)
            await client.xadd(keys.stream, {
                "payload": json.dumps({"note": f"hello{CLEAR}\x9b", "title": TITLE},
                                      ensure_ascii=False),
                "id": "m1", "attempt": "1", "x-agent": "over\rwritten"})
            [env] = await read_group(client, keys.group, "c1", [keys.stream], count=1,
                                     block_ms=None)
            fields = dead_letter_fields(
                env.fields, handler=rec.name, stream=rec.stream, origin_entry_id=env.entry_id,
                attempts=1, error_type="ValueError", error=f"bad {CLEAR}value\x9b",
                traceback=f"Traceback: {TITLE}", first_failed_at_ms=1, failed_at_ms=2,
                consumer="c1", host="h", reason="non-retryable")
            assert await dead_letter(client, source_stream=env.source, group=keys.group,
                                     entry_id=env.entry_id, dlq_key=keys.dlq, fields=fields)
            return str((await client.xrange(keys.dlq))[0][0].decode())
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_dlq_show_and_list_escape_what_the_message_carries(record: HandlerRecord,
                                                          redis_url: str) -> None:
    entry_id = hostile_dead_letter(redis_url, record)
    runner = CliRunner()
    shown = runner.invoke(cli, ["dlq", "show", entry_id, "--handler", record.name,
                                "--redis-url", redis_url])
    assert shown.exit_code == 0, shown.output
    assert_harmless(shown.output)
    assert '"hello\\u001b[2J\\u009b"' in shown.output  # the payload (JSON), visible
    assert "x-agent: over\\rwritten" in shown.output  # a header
    assert "bad \\x1b[2Jvalue\\x9b" in shown.output   # the error
    assert "Traceback: \\x1b]0;pwned\\x07" in shown.output

    as_json = runner.invoke(cli, ["dlq", "show", entry_id, "--handler", record.name, "--json",
                                  "--redis-url", redis_url])
    assert as_json.exit_code == 0, as_json.output
    assert_harmless(as_json.output)
    assert json.loads(as_json.output)["payload"]["note"] == f"hello{CLEAR}\x9b"

    listed = runner.invoke(cli, ["dlq", "list", "--handler", record.name,
                                 "--redis-url", redis_url])
    assert listed.exit_code == 0, listed.output
    assert_harmless(listed.output)
    assert "bad \\x1b[2Jvalue" in listed.output


def test_saga_show_escapes_causes_errors_memos_and_timeline(sync_redis: redis.Redis, uid: str,
                                                            redis_url: str) -> None:
    keys = SagaKeys(f"esc{uid}")
    saga_id = "s1"
    sync_redis.hset(keys.ledger(saga_id), mapping={
        "state": "compensated", "started_at": "1000", "updated_at": "2000",
        "cause": f"aborted: {CLEAR}", "failed_step": "charge",
        "step:charge": "failed", "at:charge": "1500", "error:charge": f"boom{TITLE}",
        "memo:charge": json.dumps({"note": f"memo{CLEAR}"}, ensure_ascii=False)})
    sync_redis.xadd(keys.timeline(saga_id), {"event": "failed", "step": "charge",
                                             "detail": "over\rwrite\u202e", "at": "1500"})
    try:
        runner = CliRunner()
        shown = runner.invoke(cli, ["saga", "show", saga_id, "--saga", keys.saga,
                                    "--redis-url", redis_url])
        assert shown.exit_code == 0, shown.output
        assert_harmless(shown.output)
        assert "aborted: \\x1b[2J" in shown.output
        assert "boom\\x1b]0;pwned\\x07" in shown.output
        assert "memo\\u001b[2J" in shown.output  # (a memo is JSON)
        assert "over\\rwrite\\u202e" in shown.output

        as_json = runner.invoke(cli, ["saga", "show", saga_id, "--saga", keys.saga, "--json",
                                      "--redis-url", redis_url])
        assert as_json.exit_code == 0, as_json.output
        assert_harmless(as_json.output)
        assert json.loads(as_json.output)["cause"] == f"aborted: {CLEAR}"
    finally:
        sync_redis.delete(keys.ledger(saga_id), keys.timeline(saga_id))
