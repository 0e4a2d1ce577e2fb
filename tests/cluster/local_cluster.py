"""A Redis Cluster of the tests' own: 3 masters and 3 replicas, ``redis-server
--cluster-enabled yes`` processes on free loopback ports, joined with ``redis-cli --cluster
create ... --cluster-replicas 1``, stopped and removed afterwards. Also the operator's
moves the failover tests make on it: a replica's ``CLUSTER FAILOVER``, and migrating one
slot from its master to another with ``CLUSTER SETSLOT`` / ``MIGRATE``."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

START_TIMEOUT = 30.0


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A port free on 127.0.0.1 whose cluster bus port (+10000) is free as well."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port < 55000 and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes] | None
    directory: Path

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)


class LocalCluster:
    """Six nodes, three masters with a replica each. ``url`` is a ``redis+cluster://`` URL
    naming every node as a seed."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            raise FileNotFoundError("redis-server and redis-cli must be on PATH")
        self.server, self.cli = server, cli
        self.directory = Path(tempfile.mkdtemp(prefix="seawall-cluster-"))
        self.nodes: list[Node] = []
        try:
            for _ in range(masters * (1 + replicas)):
                self.nodes.append(self._start_node())
            self._create(replicas)
        except BaseException:
            self.stop()
            raise

    # -- starting and stopping ------------------------------------------------------------

    def _start_node(self) -> Node:
        for _ in range(5):
            port = free_cluster_port()
            directory = self.directory / str(port)
            directory.mkdir()
            process = subprocess.Popen(
                [self.server, "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                 "--dir", str(directory), "--logfile", "redis.log", "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            node = Node(port, process, directory)
            if self._wait_ping(node):
                return node
            process.kill()
            process.wait(5)
        raise RuntimeError("a cluster node did not start")

    @staticmethod
    def _wait_ping(node: Node, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process is not None and node.process.poll() is not None:
                return False
            try:
                with node.client(0.5) as client:
                    if client.ping():
                        return True
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        return False

    def _create(self, replicas: int) -> None:
        hosts = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run([self.cli, "--cluster", "create", *hosts, "--cluster-replicas",
                        str(replicas), "--cluster-yes"], check=True, capture_output=True,
                       timeout=60)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on who serves each
        slot (a replica is attached to every master)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not healthy after {timeout}s:\n"
                                   + self.describe())
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            views = []
            for node in self.live_nodes():
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
                    views.append(self._slot_owners(client))
            if not all(v == views[0] for v in views):
                return False
            for node in self.live_nodes():
                with node.client() as client:
                    info = client.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
            return True
        except (redis.RedisError, OSError):
            return False

    @staticmethod
    def _slot_owners(client: redis.Redis) -> list[tuple[int, int, int]]:
        rows = client.execute_command("CLUSTER", "SLOTS")
        out = []
        for row in rows:
            if isinstance(row, dict):  # RESP3 shape is not used here
                continue
            out.append((int(row[0]), int(row[1]), int(row[2][1])))
        return sorted(out)

    def live_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def stop(self) -> None:
        for node in self.nodes:
            process, node.process = node.process, None
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- what the tests use ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def master_of(self, key: str) -> Node:
        """The node that serves ``key``'s slot now."""
        slot = key_slot(key.encode())
        for node in self.live_nodes():
            with node.client() as client:
                for start, end, port in self._slot_owners(client):
                    if start <= slot <= end:
                        return self.node(port)
        raise LookupError(f"no node serves slot {slot}")

    def node(self, port: int) -> Node:
        [found] = [n for n in self.nodes if n.port == port]
        return found

    def masters(self) -> list[Node]:
        ports = set()
        with self.live_nodes()[0].client() as client:
            for _, _, port in self._slot_owners(client):
                ports.add(port)
        return [self.node(p) for p in sorted(ports)]

    def replica_of(self, master: Node) -> Node:
        with master.client() as client:
            master_id = client.execute_command("CLUSTER", "MYID").decode()
        for node in self.live_nodes():
            with node.client() as client:
                info: Any = client.execute_command("CLUSTER", "NODES")
                text = info.decode() if isinstance(info, bytes) else str(info)
            for line in text.splitlines():
                parts = line.split()
                if "myself" in parts[2] and "slave" in parts[2] and parts[3] == master_id:
                    return node
        raise LookupError(f"no replica of the master on port {master.port}")

    def failover(self, key: str, timeout: float = START_TIMEOUT) -> tuple[Node, Node]:
        """``CLUSTER FAILOVER`` on the replica of the master holding ``key``, waited for
        until the replica serves the slot; returns (old master, new master)."""
        old = self.master_of(key)
        new = self.replica_of(old)
        deadline = time.monotonic() + timeout
        asked = 0.0
        while self.master_of(key).port != new.port:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the failover did not happen:\n{self.describe()}")
            if time.monotonic() - asked > 6:
                # A manual failover gives up after 5 s if the master does not pause in
                # time (it is busy): ask again.
                with new.client() as client:
                    client.execute_command("CLUSTER", "FAILOVER")
                asked = time.monotonic()
            time.sleep(0.05)
        self.wait_healthy(timeout)
        return old, new

    def migrate_slot(self, key: str, timeout: float = START_TIMEOUT,
                     batch: int = 10) -> tuple[Node, Node]:
        """Move ``key``'s slot (every key in it) from its master to another master, the
        way ``redis-cli --cluster reshard`` does: SETSLOT IMPORTING / MIGRATING, MIGRATE the
        keys a few at a time (clients get ASK meanwhile), then SETSLOT NODE everywhere.
        Returns (source, target)."""
        slot = key_slot(key.encode())
        source = self.master_of(key)
        target = next(m for m in self.masters() if m.port != source.port)
        with source.client(30) as src, target.client(30) as dst:
            source_id = src.execute_command("CLUSTER", "MYID").decode()
            target_id = dst.execute_command("CLUSTER", "MYID").decode()
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while True:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10_000,
                                    "REPLACE", "KEYS", *keys)
                time.sleep(0.02)  # let the load run against a half-moved slot
            for node in self.masters():
                with node.client() as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            for node in self.live_nodes():
                with node.client() as client:
                    try:
                        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE",
                                               target_id)
                    except redis.ResponseError:
                        pass  # replicas refuse SETSLOT; they learn it from their master
        deadline = time.monotonic() + timeout
        while self.master_of(key).port != target.port:
            if time.monotonic() > deadline:
                raise RuntimeError(f"slot {slot} did not move:\n{self.describe()}")
            time.sleep(0.05)
        self.wait_healthy(timeout)
        return source, target

    def describe(self) -> str:
        out = []
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                out.append(f"{node.port}: down")
                continue
            try:
                with node.client(1) as client:
                    text = client.execute_command("CLUSTER", "NODES")
                out.append(f"{node.port}:\n{text.decode() if isinstance(text, bytes) else text}")
            except (redis.RedisError, OSError) as exc:
                out.append(f"{node.port}: {exc!r}")
        return "\n".join(out)
