"""Draw docs/demo-metrics.png: the example shop through a payment outage, as ``/metrics``
saw it.

    pip install -e '.[charts]'          # matplotlib
    python docs/chart_demo.py [--out docs/demo-metrics.png] [--samples run.json]
    python docs/chart_demo.py --replot run.json      # draw saved samples again

It runs what ``seawall demo`` runs, with the metrics port on: ``seawall run
examples.shop.app:app --metrics-port PORT`` (the supervisor and its pool processes, every
pool of the shop) and the shop's producer (``python -m examples.shop.producer``), which
starts ``--rate`` checkout sagas a second for ``--duration`` seconds. The shop's payment
provider is down from ``--outage-at`` for ``--outage-for`` seconds (``SHOP_PAYMENT_OUTAGE_*``,
as the demo sets them), and a checkout not through within ``--deadline`` seconds is
compensated. Time 0 is when the producer starts, once every pool is ready (``/readyz``).

``/metrics`` is scraped every second from then until the backlog is drained (every saga
final, nothing pending) or ``--drain`` seconds after the producer stopped, and the
samples become four charts over time: messages settled per second by outcome (from the
counters ``seawall_messages_processed_total``, over a 5 s window), the backlog by handler
(``seawall_consumer_group_lag`` and ``_pending``), the circuit breakers' states
(``seawall_circuit_breaker_state``) and the checkout sagas by state (``seawall_sagas``).
The figures read from Redis (backlog, sagas) are sampled by the supervisor every 5 s, so
they move in steps.

Without ``--redis-url`` it runs a private redis-server on a free port (as ``seawall demo``
does when none answers), so the shop's streams never meet anyone else's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from workers.cli.private_redis import PrivateRedis, die_with_parent, free_port

ROOT = Path(__file__).resolve().parent.parent

SHOP = "examples.shop.app:app"
PRODUCER = "examples.shop.producer"
WINDOW = 5.0
"""Seconds over which messages/s are counted (the pools report about once a second)."""
OUTCOMES = {"ok": "tab:green", "retry": "tab:orange", "parked": "tab:purple",
            "dead_letter": "tab:red", "fallback": "tab:blue", "skipped": "tab:gray"}
SAGA_STATES = {"running": "tab:blue", "completed": "tab:green",
               "compensating": "tab:orange", "timed_out": "gold",
               "compensated": "tab:purple", "failed": "tab:red"}
IN_FLIGHT = ("running", "compensating", "timed_out")
BREAKER_STATES = ("closed", "half-open", "open")

Sample = dict[str, Any]


# -- scraping ------------------------------------------------------------------------------

def parse(text: str) -> Sample:
    """The figures the chart draws, out of one scrape."""
    out: Sample = {"processed": {}, "lag": {}, "pending": {}, "breakers": {}, "sagas": {}}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if s.name == "seawall_messages_processed_total":
                kind = labels["outcome"]
                out["processed"][kind] = out["processed"].get(kind, 0.0) + s.value
            elif s.name == "seawall_consumer_group_lag":
                out["lag"][labels["handler"]] = s.value
            elif s.name == "seawall_consumer_group_pending":
                out["pending"][labels["handler"]] = s.value
            elif s.name == "seawall_circuit_breaker_state":
                out["breakers"][labels["handler"]] = s.value
            elif s.name == "seawall_sagas":
                out["sagas"][labels["state"]] = out["sagas"].get(labels["state"], 0) + s.value
    return out


def get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def drained(sample: Sample) -> bool:
    """Every saga final and nothing waiting (as of the supervisor's last read of Redis)."""
    if not sample["sagas"]:
        return False
    return (not any(sample["sagas"].get(s, 0) for s in IN_FLIGHT)
            and not any(sample["lag"].values()) and not any(sample["pending"].values()))


# -- the run -------------------------------------------------------------------------------

def record(args: argparse.Namespace) -> dict[str, Any]:
    """Run the shop through the outage; the scraped samples and the run's parameters."""
    with ExitStack() as stack:
        url = args.redis_url
        if url is None:
            url = stack.enter_context(PrivateRedis()).url
        logs = Path(tempfile.mkdtemp(prefix="seawall-chart-"))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        start_wall = time.time() + args.warmup
        env = dict(os.environ, PYTHONUNBUFFERED="1", SEAWALL_REDIS_URL=url,
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   SHOP_PAYMENT_OUTAGE_START=repr(start_wall + args.outage_at),
                   SHOP_PAYMENT_OUTAGE_SECONDS=repr(args.outage_for),
                   SHOP_CHECKOUT_DEADLINE=repr(args.deadline))
        workers = start(stack, [sys.executable, "-m", "workers", "run", SHOP,
                                "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                                "--log-format", "json", "--log-level", "WARNING",
                                "--grace", "5"], env, logs / "workers.log")
        print(f"seawall run {SHOP} --metrics-port {port} (pid {workers.pid}); logs in {logs}")
        while get(f"{base}/readyz")[0] != 200:
            if workers.poll() is not None or time.time() > start_wall:
                raise SystemExit(f"the workers were not ready within {args.warmup:g} s "
                                 f"(--warmup); their log: {logs / 'workers.log'}")
            time.sleep(0.2)
        time.sleep(max(0.0, start_wall - time.time()))
        t0 = time.monotonic()
        producer = start(stack, [sys.executable, "-m", PRODUCER, "--rate", str(args.rate),
                                 "--duration", str(args.duration)], env,
                         logs / "producer.log")
        print(f"producing {args.rate:g} checkouts/s for {args.duration:g} s; payment "
              f"provider down from {args.outage_at:g} s to "
              f"{args.outage_at + args.outage_for:g} s")
        samples: list[Sample] = []
        ends = t0 + args.duration + args.drain
        tick = t0
        while True:
            code, text = get(f"{base}/metrics")
            now = time.monotonic() - t0
            if code == 200:
                samples.append({"t": round(now, 3), **parse(text)})
            if workers.poll() is not None:
                raise SystemExit(f"the workers exited early; their log: {logs}/workers.log")
            produced = now >= args.duration and producer.poll() is not None
            if produced and samples and drained(samples[-1]):
                tail = now + WINDOW  # a few flat seconds after the drain
                ends = min(ends, t0 + tail)
            if time.monotonic() >= ends:
                break
            tick += 1.0
            time.sleep(max(0.0, tick - time.monotonic()))
        stop(workers)
        print(f"{len(samples)} scrapes over {samples[-1]['t']:.0f} s")
        return {"rate": args.rate, "duration": args.duration, "outage_at": args.outage_at,
                "outage_for": args.outage_for, "deadline": args.deadline,
                "samples": samples}


def start(stack: ExitStack, argv: list[str], env: dict[str, str],
          log_path: Path) -> subprocess.Popen[bytes]:
    log = stack.enter_context(log_path.open("ab"))
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent)
    stack.callback(stop, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a deployment's stop), then SIGKILL if it is still there after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the chart -----------------------------------------------------------------------------

def rates(times: list[float], totals: list[float]) -> list[float]:
    """Per second over the last ``WINDOW`` seconds at each sample."""
    out, j = [], 0
    for i, t in enumerate(times):
        while times[j] < t - WINDOW:
            j += 1
        span = t - times[j]
        out.append((totals[i] - totals[j]) / span if span > 0 else 0.0)
    return out


def draw(run: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples: list[Sample] = run["samples"]
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 1.6, 3]})
    msgs, backlog, breakers, sagas = axes
    outage = (run["outage_at"], run["outage_at"] + run["outage_for"])
    for ax in axes:
        ax.axvspan(*outage, color="tab:red", alpha=0.08, lw=0)
        ax.axvline(run["duration"], color="0.4", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    msgs.text(sum(outage) / 2, 0.97, "payment provider down",
              transform=msgs.get_xaxis_transform(), ha="center", va="top", color="tab:red",
              fontsize=9)
    msgs.text(run["duration"] + 0.5, 0.97, "orders stop", transform=msgs.get_xaxis_transform(),
              ha="left", va="top", color="0.3", fontsize=9)

    for kind, colour in OUTCOMES.items():
        totals = [s["processed"].get(kind, 0.0) for s in samples]
        if totals and totals[-1] > totals[0]:
            msgs.plot(t, rates(t, totals), label=kind, color=colour, lw=1.6)
    # Logarithmic above 1/s, so that a few retries show beside hundreds handled.
    msgs.set_yscale("symlog", linthresh=1.0)
    msgs.set_ylim(0, None)
    msgs.set_ylabel("messages/s")
    msgs.set_title(f"Messages settled per second by outcome, every handler ({WINDOW:g} s "
                   "window)", loc="left", fontsize=10)
    msgs.legend(loc="center left", fontsize=8)

    handlers = sorted({h for s in samples for h in s["lag"]} | {h for s in samples
                                                                 for h in s["pending"]})
    shown = [h for h in handlers
             if max(s["lag"].get(h, 0) + s["pending"].get(h, 0) for s in samples) >= 5]
    for i, h in enumerate(shown):
        colour = f"C{i}"
        backlog.plot(t, [s["lag"].get(h, float("nan")) for s in samples], color=colour,
                     lw=1.6, label=f"{h} lag")
        backlog.plot(t, [s["pending"].get(h, float("nan")) for s in samples], color=colour,
                     lw=1.0, ls="--", label=f"{h} pending")
    backlog.set_ylabel("entries")
    backlog.set_title("Backlog by handler: not yet delivered (lag) and delivered, not acked "
                      "(pending)", loc="left", fontsize=10)
    if shown:
        backlog.legend(loc="upper right", fontsize=8, ncol=2)

    moved = sorted({h for s in samples for h, v in s["breakers"].items() if v})
    for i, h in enumerate(moved):
        offset = 0.06 * (i - (len(moved) - 1) / 2)
        breakers.step(t, [s["breakers"].get(h, 0) + offset for s in samples], where="post",
                      lw=1.8, label=h, color=f"C{i + 3}")
    breakers.set_yticks(range(len(BREAKER_STATES)), BREAKER_STATES)
    breakers.set_ylim(-0.4, 2.4)
    breakers.set_title("Circuit breakers (those that left closed)", loc="left", fontsize=10)
    if moved:
        breakers.legend(loc="upper right", fontsize=8)

    for state, colour in SAGA_STATES.items():
        values = [s["sagas"].get(state, float("nan")) for s in samples]
        if any(v > 0 for v in values):
            sagas.plot(t, values, label=state, color=colour, lw=1.6)
    sagas.set_ylabel("sagas")
    sagas.set_title(f"Checkout sagas by state (deadline {run['deadline']:g} s)", loc="left",
                    fontsize=10)
    sagas.legend(loc="center left", fontsize=8)
    sagas.set_xlabel("seconds since the first order")
    sagas.set_xlim(0, t[-1])

    fig.suptitle(f"The example shop through a payment outage: {run['rate']:g} checkouts/s for "
                 f"{run['duration']:g} s, scraped from /metrics every second", fontsize=12)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "demo-metrics.png")
    parser.add_argument("--samples", type=Path, default=None,
                        help="also write the scraped samples here (JSON)")
    parser.add_argument("--replot", type=Path, default=None, metavar="SAMPLES",
                        help="draw samples written by --samples instead of running")
    parser.add_argument("--rate", type=float, default=20.0, help="checkouts per second")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds the producer runs")
    parser.add_argument("--outage-at", type=float, default=15.0)
    parser.add_argument("--outage-for", type=float, default=20.0)
    parser.add_argument("--deadline", type=float, default=12.0,
                        help="seconds a checkout may take before it is compensated")
    parser.add_argument("--drain", type=float, default=40.0,
                        help="seconds after the producer stops to wait for the backlog")
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="seconds the workers get to be ready before time 0")
    parser.add_argument("--redis-url", default=None,
                        help="default: a private redis-server on a free port")
    args = parser.parse_args(argv)
    if args.replot is not None:
        run = json.loads(args.replot.read_text())
    else:
        run = record(args)
        if args.samples is not None:
            args.samples.write_text(json.dumps(run))
    draw(run, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
