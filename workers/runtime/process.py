"""The entry point of one pool process, started by the supervisor:

    python -m workers.runtime.process APP POOL SLOT [--grace S] [--concurrency N]

The Redis URL comes in ``SEAWALL_REDIS_URL`` (never on the command line, where ``ps`` would
show its password). The process runs in its own session so that a Ctrl-C on the terminal
reaches only the supervisor, which forwards it once; if the supervisor disappears, the
process stops as if told to.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys

from workers import logs
from workers.errors import ConfigError
from workers.loader import load_app
from workers.observability.reporter import Reporter
from workers.runtime.pool import Pool, PoolCrashed, apply_clock_offset
from workers.runtime.signals import StopSignals


async def _watch_parent(signals: StopSignals, parent: int) -> None:
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            signals.request("supervisor gone")
            return


async def serve(pool: Pool, grace: float) -> None:
    signals = StopSignals()
    signals.install()
    watcher = asyncio.create_task(_watch_parent(signals, os.getppid()))
    try:
        await pool.run(signals.stop, signals.cancel, grace)
    finally:
        watcher.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seawall-pool")
    parser.add_argument("app")
    parser.add_argument("pool")
    parser.add_argument("slot", type=int)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--log-level", default=os.environ.get("SEAWALL_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-format", choices=("json", "text"),
                        default=os.environ.get("SEAWALL_LOG_FORMAT") or None)
    args = parser.parse_args(argv)
    apply_clock_offset()
    logs.configure(args.log_level, log_format=args.log_format, pool=args.pool, slot=args.slot)
    try:
        app = load_app(args.app)
        if args.pool not in app.pools:
            raise ConfigError(f"app has no pool {args.pool!r}; pools: {sorted(app.pools)}")
    except ConfigError as exc:
        print(f"seawall: {exc}", file=sys.stderr)
        return 2
    config = app.pools[args.pool].with_concurrency(args.concurrency)
    # What start-up made (modules, the app, pydantic's validators) lives as long as the
    # process: moved out of the collector's generations, it is not traversed again by
    # every full collection, which a flood of failures (each leaving an exception behind)
    # triggers again and again. A message's objects die young, mostly by reference
    # counting: a larger first generation runs the collector less often for the same
    # garbage (bench/throughput.py: CPU per message down by about a sixth, either path).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    code = 0
    try:
        pool = Pool(app, config, slot=args.slot, reporter=Reporter.from_env())
        asyncio.run(serve(pool, args.grace))
    except PoolCrashed:
        code = 1
    # A sync handler still blocking its thread past the grace period would keep the
    # interpreter alive (it joins executor threads at exit); the bookkeeping is done.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
