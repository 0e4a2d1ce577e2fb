"""``seawall acl``'s rules as pure functions: every command seawall's source sends is in
the list, key patterns come from ``queues.keys``, quoting survives odd names, and the
password never appears in the line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from queues.keys import GLOBAL_KEYS, HandlerKeys, SagaKeys, glob_escape
from sagas import Saga
from workers.app import App
from workers.cli.acl import COMMANDS, acl_rules, key_patterns, password_hash, quote, render
from workers.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
REDIS_METHODS = {n for n in dir(redis.Redis) if not n.startswith("_")}
NOT_COMMANDS = {"pipeline", "register_script", "close", "aclose", "execute_command", "get",
                "set_response_callback", "from_url", "from_pool", "keys", "sort", "info",
                "wait", "echo", "lock", "append", "copy", "digest", "publish", "shutdown",
                "reset", "json"}
"""redis-py names that are also ordinary methods in ``queues`` (``dict.get``,
``list.sort``, ``list.append``, hmac's ``copy`` and ``digest``, a logger's ``info``,
``app.publish``, an executor's ``shutdown``...) or not commands: a match on them says
nothing."""
NOT_GRANTED = {"config_get"}
"""Sent, and refused on purpose: ``CONFIG GET`` would also show ``requirepass``; the start-up
check (``queues.server_config``) says it could not check instead."""
RENAMED = {"xgroup_create": "xgroup|create", "xinfo_groups": "xinfo|groups",
           "xpending_range": "xpending", "script_load": "script|load", "delete": "del"}


def _client_calls() -> set[str]:
    """Commands named by redis-py calls (``client.xadd(`` ...) in ``queues``, and in the
    CLI and runtime modules that call a client directly."""
    found: set[str] = set()
    paths = [p for package in ("queues", "workers", "sagas")
             for p in (ROOT / package).rglob("*.py")]
    for path in paths:
        text = path.read_text()
        for name in re.findall(r"\.(\w+)\(", text):
            if name in RENAMED:
                found.add(RENAMED[name])
            elif name in REDIS_METHODS and name not in NOT_COMMANDS:
                found.add(name)
        found.update(c.lower() for c in re.findall(r'execute_command\(\s*"(\w+)"', text))
    return found


def _script_calls() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "queues" / "lua").glob("*.lua"):
        text = path.read_text()
        assert not re.search(r"redis\.p?call\(\s*[^'\"\s]", text), \
            f"{path.name} calls a command named by a variable: list it by hand"
        found.update(c.lower() for c in re.findall(r"redis\.p?call\(\s*['\"](\w+)['\"]", text))
    return found


def test_every_command_the_source_sends_is_allowed() -> None:
    sent = _client_calls() | _script_calls()
    assert sent - set(COMMANDS) - NOT_GRANTED == set(), "add these to workers.cli.acl"
    assert {"xadd", "xreadgroup", "evalsha", "eval", "script|load", "hincrby", "zadd"} <= sent


def test_nothing_administrative_is_allowed() -> None:
    for command in ("config|get", "config|set", "flushall", "flushdb", "keys", "scan",
                    "debug", "shutdown", "acl|setuser", "module|load", "subscribe",
                    "script|flush", "function|load", "client|kill", "monitor"):
        assert command not in COMMANDS


def test_key_patterns_come_from_the_key_builders(uid: str) -> None:
    app = App(f"acl{uid}")
    stream = f"orders-{uid}"

    @app.handler(stream, name=f"billing.charge.{uid}")
    async def charge(payload: dict[str, int]) -> None: ...

    saga = Saga(app, f"checkout{uid}")

    @saga.step(f"pay-{uid}", name="pay")
    async def pay(payload: dict[str, int]) -> None: ...

    patterns = key_patterns(app, [f"emails-{uid}"])
    handler = HandlerKeys(stream, f"billing.charge.{uid}")
    assert patterns[: len(GLOBAL_KEYS)] == list(GLOBAL_KEYS)
    assert set(handler.patterns) <= set(patterns)
    assert SagaKeys(f"checkout{uid}").pattern in patterns
    assert f"emails-{uid}" in patterns
    assert len(patterns) == len(set(patterns))
    # a saga's handlers need nothing beyond their saga's pattern
    assert not [p for p in patterns if p.startswith(f"seawall:{{saga:checkout{uid}}}:")
                and p != SagaKeys(f"checkout{uid}").pattern]


def test_glob_characters_in_names_are_escaped() -> None:
    assert glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"
    keys = HandlerKeys("ord*", "h?")
    assert keys.patterns[0] == "ord\\*"
    assert keys.patterns[-1] == "seawall:{ord\\*}:done:h\\?:*"


def test_quoting_follows_redis_cli() -> None:
    assert quote("~seawall:{orders}:*") == "~seawall:{orders}:*"
    assert quote("~my stream") == '"~my stream"'
    assert quote('a"b\\c') == '"a\\"b\\\\c"'


def test_the_password_is_hashed_never_written() -> None:
    rules = acl_rules(["x"], password="hunter2-test")
    line = render("u", rules)
    assert "hunter2-test" not in line
    assert password_hash("hunter2-test") in rules
    assert rules.index("resetpass") < rules.index(password_hash("hunter2-test"))
    # without a password, the user's passwords are left alone
    assert "resetpass" not in acl_rules(["x"])


def test_cli_reads_the_password_from_the_environment(tmp_path: Path, uid: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / f"aclapp_{uid}.py").write_text(
        "from workers import App\napp = App('aclapp')\n"
        "@app.handler('orders', name='h')\nasync def h(p: dict[str, int]) -> None: ...\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACL_TEST_PW", "p4ss-word-test")
    result = CliRunner().invoke(cli, ["acl", f"aclapp_{uid}:app", "--password-env",
                                      "ACL_TEST_PW", "--user", "worker"])
    assert result.exit_code == 0, result.output
    assert "p4ss-word-test" not in result.output
    assert result.output.startswith("ACL SETUSER worker on ")
    assert password_hash("p4ss-word-test") in result.output
    missing = CliRunner().invoke(cli, ["acl", f"aclapp_{uid}:app", "--password-env", "NOPE_X"])
    assert missing.exit_code == 2


def test_cli_asks_for_the_password_and_prints_only_its_hash(
        tmp_path: Path, uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / f"aclprompt_{uid}.py").write_text(
        "from workers import App\napp = App('aclprompt')\n"
        "@app.handler('orders', name='h')\nasync def h(p: dict[str, int]) -> None: ...\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["acl", f"aclprompt_{uid}:app", "--password-prompt"],
                                input="typed-pw-test\ntyped-pw-test\n")
    assert result.exit_code == 0, result.output
    assert "typed-pw-test" not in result.output
    assert password_hash("typed-pw-test") in result.output
    both = CliRunner().invoke(cli, ["acl", f"aclprompt_{uid}:app", "--password-prompt",
                                    "--password-env", "X"])
    assert both.exit_code == 2
