"""Health decisions, pure: is a pool process stuck, is the supervisor alive, is the
deployment ready. Everything takes ``now`` (``time.monotonic()``) and the supervisor's
views of its slots (``workers.observability.totals.SlotView``); nothing here reads a clock,
a pipe or Redis.

* **stuck** (the supervisor kills the process, then restarts it as after a crash): no
  report on its pipe for ``stuck_after`` seconds (``START_ALLOWANCE`` before its first,
  while the app loads), or a report saying its event loop stalled that long; never after
  its last report (it is stopping);
* **live** (``/livez``): the supervisor's own loop turned recently, and no pool slot is
  crash-looping. Never fails because Redis is down or a breaker is open: restarting the
  container cures neither;
* **ready** (``/readyz``): Redis answers, and every slot has a process that reported
  recently, whose loop is not lagging, and that read from Redis recently (or waits for
  its own handlers: saturated is busy, not broken). A read that returned nothing counts:
  an idle pool blocks on XREADGROUP for a second at a time.
"""

from __future__ import annotations

from collections.abc import Iterable

from workers.observability.totals import SlotView

STUCK_AFTER = 10.0
"""Default seconds of silence (or of one loop stall) before a pool process is killed."""
START_ALLOWANCE = 60.0
"""Seconds a new process has for its first report (importing the app may be slow)."""
SUPERVISOR_STALL = 10.0
"""``/livez`` fails when the supervisor's loop (it turns every 50 ms) has not for this long."""
CRASH_LOOP = 5
"""Consecutive crashes, each within ``STABLE_AFTER`` of its start, that make a crash loop."""
STABLE_AFTER = 30.0
"""A process that has run this long is no longer part of a crash loop (the supervisor's
restart backoff starts afresh after it, too)."""
REPORTED_WITHIN = 3.0
"""Ready: each process reported within this many seconds (it reports every second): a
blocked loop shows here well before it counts as stuck."""
READ_WITHIN = 15.0
"""Ready: each process read from Redis within this many seconds (reads block 1 s at most)."""
MAX_READY_LAG = 2.0
"""Ready: no process's event loop stalled longer than this since its last report."""


def stuck(view: SlotView, now: float, stuck_after: float = STUCK_AFTER) -> str | None:
    """Why the slot's process counts as stuck, or None."""
    if not view.running or view.killed is not None or view.stopping:
        return None
    if view.heard_at is None:
        silent = now - view.started_at
        if silent > max(stuck_after, START_ALLOWANCE):
            return f"no report since it started {silent:.0f}s ago"
        return None
    silent = now - view.heard_at
    if silent > stuck_after:
        return f"no report for {silent:.1f}s: its event loop is blocked"
    if view.lag > stuck_after:
        return f"its event loop stalled for {view.lag:.1f}s"
    return None


def crash_looping(view: SlotView, now: float) -> bool:
    """``CRASH_LOOP`` crashes in a row, and no process of the slot has stayed up since."""
    if view.failures < CRASH_LOOP:
        return False
    return not view.running or now - view.started_at < STABLE_AFTER


def liveness(slots: Iterable[SlotView], *, ticked_at: float, now: float) -> list[str]:
    """What makes the supervisor not alive (empty: alive)."""
    problems = []
    if now - ticked_at > SUPERVISOR_STALL:
        problems.append(f"the supervisor's loop has not run for {now - ticked_at:.0f}s")
    for view in slots:
        if crash_looping(view, now):
            problems.append(f"{view.pool}[{view.index}] is crash-looping "
                            f"({view.failures} crashes in a row)")
    return problems


def readiness(slots: Iterable[SlotView], *, redis_error: str | None, stopping: bool,
              now: float) -> list[str]:
    """What keeps the deployment from being ready (empty: ready)."""
    problems = []
    if stopping:
        problems.append("stopping")
    if redis_error is not None:
        problems.append(f"Redis does not answer: {redis_error}")
    for view in slots:
        label = f"{view.pool}[{view.index}]"
        if not view.running:
            problems.append(f"{label} has no process (restarting)")
            continue
        if view.heard_at is None:
            problems.append(f"{label} has not reported yet")
            continue
        if now - view.heard_at > REPORTED_WITHIN:
            problems.append(f"{label} has not reported for {now - view.heard_at:.1f}s")
            continue
        if view.lag > MAX_READY_LAG:
            problems.append(f"{label}'s event loop stalled for {view.lag:.1f}s")
        read_age = view.read_age_at(now)
        if not view.saturated and (read_age is None or read_age > READ_WITHIN):
            since = "never" if read_age is None else f"not for {read_age:.0f}s"
            problems.append(f"{label} has read from Redis {since}")
    return problems
