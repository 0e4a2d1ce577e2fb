"""Operating an app on a Redis Cluster: ``seawall run`` warns at start about streams that
share a slot (one node serves them together), and ``seawall status`` shows the node each
stream lives on, the one the cluster says serves its slot."""

from __future__ import annotations

import signal
from itertools import count

import pytest
from e2e.support import E2E, wait_until

from cluster.local_cluster import LocalCluster
from queues.commit import slot_of

pytestmark = pytest.mark.slow

APP = """
app.pool("ops", concurrency=4, claim_after=30)


@app.handler({a!r}, pool="ops", name={ha!r})
async def first(msg: Msg) -> None:
    await aredis().hincrby(PREFIX + "handled", f"a{{msg.n}}", 1)


@app.handler({b!r}, pool="ops", name={hb!r})
async def second(msg: Msg) -> None:
    await aredis().hincrby(PREFIX + "handled", f"b{{msg.n}}", 1)
"""


def test_status_shows_each_streams_node_and_run_warns_of_streams_sharing_a_slot(
        e2e: E2E, cluster: LocalCluster) -> None:
    # Given two streams whose names hash to the same slot,
    a = e2e.stream("hot")
    b = next(name for i in count() if slot_of(name := f"{a}-{i}") == slot_of(a))
    e2e.streams.append(b)
    ha, hb = e2e.handler("first"), e2e.handler("second")
    app_path = e2e.write_app(APP.format(a=a, b=b, ha=ha, hb=hb))
    e2e.app.publish_many(a, ({"n": n} for n in range(20)))
    e2e.app.publish_many(b, ({"n": n} for n in range(20)))

    # when the app runs on the cluster,
    run = e2e.run(app_path)
    e2e.wait_pool_ready("ops", timeout=60)
    wait_until(lambda: len(e2e.client.hgetall(e2e.key("handled"))) == 40, timeout=20,
               what="every message handled", details=run.logs)

    # then its start warned that one node will always serve both,
    assert f"share hash slot {slot_of(a)}" in run.logs(200)
    # and status names, for each handler, the master serving its stream's slot.
    report = e2e.status()
    nodes = {h["name"]: h["node"] for h in report["handlers"] if h["name"] in (ha, hb)}
    expected = f"127.0.0.1:{cluster.master_of(a).port}"
    assert nodes == {ha: expected, hb: expected}

    run.signal(signal.SIGTERM)
    assert run.wait(timeout=20) == 0
