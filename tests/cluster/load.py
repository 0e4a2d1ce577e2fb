"""Load for the failover tests: a producer thread that publishes numbered messages at a
steady pace, retrying each one until Redis took it (a failover or a slot migration makes
some publishes fail for a moment), and the check that every message it published was
handled, with nothing left pending."""

from __future__ import annotations

import os
import threading
import time

import redis
from e2e.support import E2E, Proc, wait_until

from queues.connection import connect_sync

LONG = os.environ.get("SEAWALL_LONG_FAILOVER") == "1"
"""The long form (``SEAWALL_LONG_FAILOVER=1``): more messages over a longer time. CI runs
the bounded form, which still keeps the load running across the whole operation."""
MESSAGES = 6000 if LONG else 1200
RATE = 400.0 if LONG else 240.0
"""Messages per second the producer aims for."""

APP = """
app.pool("busy", processes=2, concurrency=16, claim_after=5)


@app.handler({stream!r}, pool="busy", name={handler!r})
async def work(msg: Msg) -> None:
    await aredis().hincrby(PREFIX + "handled", str(msg.n), 1)
"""


class Producer(threading.Thread):
    """Publishes messages 0..count-1 to ``stream``; ``published`` holds those Redis
    confirmed; ``failures`` counts the attempts that failed (and were tried again).

    With ``replicas``, a message counts as published only once that many replicas have it
    (WAIT): a primary killed outright loses what it had not replicated yet, which no
    failover can bring back; the producer sends such a message again."""

    def __init__(self, url: str, stream: str, count: int = MESSAGES, rate: float = RATE,
                 *, replicas: int = 0) -> None:
        super().__init__(daemon=True)
        self.replicas = replicas
        self.client = connect_sync(url, timeout=2.0)
        self.stream, self.count, self.rate = stream, count, rate
        self.published: list[int] = []
        self.failures = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for n in range(self.count):
                delay = start + n / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                while not self._publish(n):
                    self.failures += 1
                    time.sleep(0.05)
                self.published.append(n)
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc
        finally:
            self.client.close()

    def _publish(self, n: int) -> bool:
        try:
            self.client.xadd(self.stream, {"payload": f'{{"n": {n}}}'})
            while self.replicas:
                # (no replica yet after a failover: wait for one rather than send again)
                if int(self.client.execute_command("WAIT", self.replicas, 1000)) >= \
                        self.replicas:
                    break
        except (redis.RedisError, OSError):
            return False
        return True

    def finish(self, timeout: float = 120) -> list[int]:
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        assert self.error is None, repr(self.error)
        return self.published


def handled(e2e: E2E) -> dict[int, int]:
    return {int(k): int(v) for k, v in e2e.client.hgetall(e2e.key("handled")).items()}


def every_message_handled(e2e: E2E, run: Proc, stream: str, handler: str,
                          published: list[int]) -> dict[int, int]:
    """Waits until every published message was handled and nothing is pending; returns
    message -> times handled."""
    wait_until(lambda: set(handled(e2e)) >= set(published), timeout=90, interval=0.2,
               what="every published message handled", details=lambda: (
                   f"missing {len(set(published) - set(handled(e2e)))}\n{run.logs(80)}"))
    wait_until(lambda: int(e2e.client.xpending(stream, handler)["pending"]) == 0,
               timeout=30, interval=0.2, what="nothing pending")
    return handled(e2e)
