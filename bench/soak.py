"""Soak: the chaos scenarios of ``tests/chaos`` in rotation for as long as asked, under a
steady load, then the same table the chaos tests print, one row per scenario (summed over
its rounds) and a total.

    python bench/soak.py --minutes 45 --rate 400

Each round is one scenario at full length (``SEAWALL_CHAOS_SCALE``, 1 by default) with a
redis-server, fault proxy, witness and ``seawall run`` supervisors of its own, removed
when the round ends. Rows are printed as rounds finish, so a long run shows its progress.
The exit code is 1 if any message or saga was lost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for entry in (str(ROOT / "tests"), str(ROOT)):  # (the repository first: its sagas package)
    if entry not in sys.path:
        sys.path.insert(0, entry)

from chaos.scenarios import SCENARIOS  # noqa: E402
from chaos.world import Row, table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="start no new round after this many minutes")
    parser.add_argument("--rate", type=float, default=None,
                        help="load messages a second (SEAWALL_CHAOS_RATE; default 50)")
    parser.add_argument("--scale", type=float, default=None,
                        help="fault and load durations multiplied by this "
                             "(SEAWALL_CHAOS_SCALE; default 1)")
    parser.add_argument("--processes", type=int, default=None,
                        help="pool processes of the main pool per supervisor")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS),
                        help="run only these scenarios (repeatable)")
    args = parser.parse_args(argv)
    if args.rate is not None:
        os.environ["SEAWALL_CHAOS_RATE"] = str(args.rate)
    if args.scale is not None:
        os.environ["SEAWALL_CHAOS_SCALE"] = str(args.scale)
    if args.processes is not None:
        os.environ["CHAOS_PROCESSES"] = str(args.processes)
    names = args.only or list(SCENARIOS)
    totals = {name: Row(SCENARIOS[name].__name__) for name in names}
    started = time.monotonic()
    rounds = 0
    errors = 0
    print(f"soak: {', '.join(names)} in rotation for {args.minutes:g} min "
          f"at {os.environ.get('SEAWALL_CHAOS_RATE', '50')} msgs/s", flush=True)
    while time.monotonic() - started < args.minutes * 60:
        name = names[rounds % len(names)]
        rounds += 1
        directory = Path(tempfile.mkdtemp(prefix=f"soak-{name}-"))
        try:
            row = SCENARIOS[name](directory)
        except Exception as exc:  # (the harness failed, not seawall: say so, go on)
            row = Row(SCENARIOS[name].__name__, notes=[f"round failed: {exc!r}"[:500]])
            errors += 1
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        totals[name].scenario = row.scenario
        totals[name].add(row)
        elapsed = (time.monotonic() - started) / 60
        print(f"\nround {rounds} ({elapsed:.1f} min): {'; '.join(row.notes)[:2000]}",
              flush=True)
        print(table([row]), flush=True)
    rows = [totals[n] for n in names if totals[n].messages]
    total = Row("total")
    for row in rows:
        total.add(row)
    print(f"\nsoak: {rounds} rounds ({errors} failed to run) in "
          f"{(time.monotonic() - started) / 60:.1f} min", flush=True)
    print(table([*rows, total]), flush=True)
    return 1 if total.lost or errors else 0


if __name__ == "__main__":
    sys.exit(main())
