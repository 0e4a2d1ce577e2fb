"""``seawall acl APP``: the ``ACL SETUSER`` line of a Redis user limited to what APP needs.

The user may send only the commands seawall sends (:data:`COMMANDS`: the redis-py calls
of ``queues``, the commands the Lua scripts call, and what redis-py sends on connecting),
on only the keys of APP (patterns derived in ``queues.keys``): each handler's stream and
the keys seawall derives for that handler, each saga type's keys, the keys every app
shares (registry, heartbeats, outcome counts, restart counts), and ``--stream``s the app
publishes to without reading them. A worker whose host is taken over can then neither
read another app's streams, nor run administrative commands (CONFIG, FLUSHALL, KEYS,
DEBUG, MODULE, SHUTDOWN...), nor subscribe to channels.

The password is never printed. ``--password-env VAR`` or ``--password-prompt`` put its
SHA-256 in the line (``#<hex>``, which Redis stores anyway); without either, the line
leaves the user's passwords as they are (set one with ``ACL SETUSER NAME >...`` typed into
``redis-cli``), so applying it again after the app changed does not rotate the password.
Apply it with ``seawall acl shop.app:app --password-env PW | redis-cli -u "$ADMIN_URL"``
(then ``ACL SAVE`` if the server has an ACL file), or ``--format aclfile`` for a line of
an ACL file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence

import click

from queues.keys import GLOBAL_KEYS, HandlerKeys, check_stream_name, glob_escape
from queues.saga_registry import saga_of
from workers.app import App
from workers.errors import ConfigError
from workers.loader import load_app

CONNECTION = ("auth", "hello", "ping", "select")
"""What redis-py sends on a new connection (AUTH or HELLO, SELECT for a database other than
0) and for its health checks (PING). ``CLIENT SETINFO`` is left out: redis-py ignores its
refusal, and Redis before 7.2 does not know it."""

CLUSTER = ("cluster|slots", "cluster|shards", "command")
"""What redis-py's cluster client sends to learn the slots and where a command's keys are
(``COMMAND``, and ``COMMAND GETKEYS`` for scripts): read-only metadata, granted always, so
that one line serves a single Redis and a Redis Cluster."""

CLIENT_COMMANDS = (
    # streams: producing, consuming, recovery, status, dead letters
    "xadd", "xreadgroup", "xack", "xgroup|create", "xautoclaim", "xclaim", "xpending",
    "xdel", "xrange", "xrevrange", "xlen", "xinfo|groups",
    # hashes: registry, heartbeats, outcome and restart counts, breakers, dead-letter counts
    "hgetall", "hset", "hdel", "hincrby",
    # the rest: saga indexes and stacks, the outbox sweep lease, dead-letter purge, clocks
    "zcard", "zrangebyscore", "lrange", "exists", "del", "set", "time",
    # the Lua scripts (queues/lua): EVALSHA, EVAL on pipelines that must not fail for want
    # of a loaded script, SCRIPT LOAD at start and after NOSCRIPT
    "evalsha", "eval", "script|load",
)
"""What ``queues`` sends through redis-py."""

SCRIPT_COMMANDS = (
    "hget", "hexists", "hkeys", "expire", "persist", "rpush", "rpop", "zadd", "zrem",
    "zrange", "zremrangebyscore",
)
"""What the Lua scripts call besides :data:`CLIENT_COMMANDS` (Redis checks every command a
script calls against the caller's ACL, and its keys too)."""

COMMANDS = tuple(dict.fromkeys((*CONNECTION, *CLUSTER, *CLIENT_COMMANDS, *SCRIPT_COMMANDS)))
"""Every command a pool, a supervisor or a ``seawall`` CLI command sends to Redis;
``tests/workers/test_acl_rules.py`` checks it against the source."""


def default_user(app: App) -> str:
    return f"seawall-{app.name}"


def key_patterns(app: App, streams: Iterable[str] = ()) -> list[str]:
    """The key patterns of ``app``'s user, each once, in a stable order: the shared keys,
    every handler's own keys (every saga type's, for a saga's handlers), then ``streams``."""
    patterns: list[str] = [glob_escape(k) for k in GLOBAL_KEYS]
    for record in app.records():
        saga = saga_of(record.stream)
        if saga is not None:
            patterns.append(saga.pattern)
        else:
            patterns.extend(HandlerKeys(record.stream, record.name).patterns)
    patterns.extend(glob_escape(check_stream_name(s)) for s in streams)
    return list(dict.fromkeys(patterns))


_BARE = re.compile(r'^[^\s"\'\\]+$')


def quote(arg: str) -> str:
    """``arg`` as one argument of a ``redis-cli`` line: bare if it can be, else in double
    quotes with backslash escapes (redis-cli's own syntax)."""
    if _BARE.match(arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def password_hash(password: str) -> str:
    """The rule that sets ``password`` by its SHA-256 (``#<hex>``): the line never holds
    the password itself."""
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def acl_rules(patterns: Sequence[str], *, password: str | None = None,
              commands: Sequence[str] = COMMANDS) -> list[str]:
    """The rules of the user. ``resetkeys``, ``resetchannels``, ``clearselectors`` and
    ``-@all`` drop whatever the user could do before, so the line is the whole truth about
    its permissions; its passwords are replaced only when ``password`` is given."""
    rules = ["on", "resetkeys", "resetchannels", "clearselectors", "-@all"]
    if password is not None:
        rules += ["resetpass", password_hash(password)]
    rules += [f"+{c}" for c in commands]
    rules += [f"~{p}" for p in patterns]
    return rules


def render(user: str, rules: Sequence[str], *, aclfile: bool = False) -> str:
    """``ACL SETUSER user rules...`` for redis-cli, or ``user user rules...`` for an ACL
    file (which takes no quotes: a name that needs them cannot go there)."""
    if aclfile:
        bad = [a for a in (user, *rules) if not _BARE.match(a)]
        if bad:
            raise click.UsageError(f"{bad[0]!r} cannot be written in an ACL file (it holds "
                                   "spaces or quotes); use the default --format command")
        return " ".join(["user", user, *rules])
    return " ".join(["ACL", "SETUSER", quote(user), *(quote(r) for r in rules)])


def _password(env_var: str | None, prompt: bool) -> str | None:
    if env_var is not None and prompt:
        raise click.UsageError("pass either --password-env or --password-prompt, not both")
    if env_var is not None:
        value = os.environ.get(env_var)
        if not value:
            raise click.UsageError(f"${env_var} is not set or empty")
        return value
    if prompt:
        value = click.prompt("Password for the Redis user", hide_input=True,
                             confirmation_prompt=True, err=True)
        return str(value)
    return None


@click.command()
@click.argument("app_path", metavar="APP")
@click.option("--user", default=None, metavar="NAME",
              help="The Redis user's name (default: seawall-<app name>).")
@click.option("--password-env", default=None, metavar="VAR",
              help="Set the user's password from this environment variable (its SHA-256 "
                   "goes in the line, never the password).")
@click.option("--password-prompt", is_flag=True,
              help="Ask for the user's password (hidden), and put its SHA-256 in the line.")
@click.option("--stream", "streams", multiple=True, metavar="NAME",
              help="A stream the app publishes to but does not read (repeatable).")
@click.option("--format", "output", type=click.Choice(["command", "aclfile"]),
              default="command", show_default=True,
              help="`command`: ACL SETUSER for redis-cli; `aclfile`: a line of an ACL file.")
def acl(app_path: str, user: str | None, password_env: str | None, password_prompt: bool,
        streams: tuple[str, ...], output: str) -> None:
    """Print the ACL SETUSER line of a Redis user limited to the commands and keys APP
    needs, e.g. `seawall acl shop.app:app --password-env PW | redis-cli -u "$ADMIN_URL"`."""
    try:
        app = load_app(app_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        patterns = key_patterns(app, streams)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--stream") from None
    password = _password(password_env, password_prompt)
    name = user or default_user(app)
    click.echo(render(name, acl_rules(patterns, password=password),
                      aclfile=output == "aclfile"))
    if password is None:
        click.echo(f"note: this line leaves the passwords of {name} as they are; set one "
                   "with --password-env VAR, or ACL SETUSER " + name + " >PASSWORD in redis-cli",
                   err=True)


__all__ = ["COMMANDS", "acl", "acl_rules", "key_patterns", "password_hash", "quote", "render"]
