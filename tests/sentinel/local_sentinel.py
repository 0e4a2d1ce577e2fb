"""A primary, a replica and three sentinels of the tests' own (``redis-server --sentinel``
with a config file each), on free loopback ports, stopped and removed afterwards."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from workers.cli.private_redis import free_port

SERVICE = "seawall-primary"


class LocalSentinel:
    """``url`` is a ``redis+sentinel://`` URL naming the three sentinels and the service."""

    def __init__(self, sentinels: int = 3, *, password: str | None = None,
                 sentinel_password: str | None = None) -> None:
        """``password``: the data nodes require it (and the replica and sentinels use it);
        ``sentinel_password``: the sentinels require it of their clients."""
        self.password, self.sentinel_password = password, sentinel_password
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server must be on PATH")
        self.server = server
        self.directory = Path(tempfile.mkdtemp(prefix="seawall-sentinel-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        try:
            self.primary = self._data_node()
            self.replica = self._data_node(replica_of=self.primary)
            self._wait_synced(self.replica)
            self.sentinels = [self._sentinel() for _ in range(sentinels)]
            self._wait_sentinels_agree()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, port: int, args: list[str]) -> None:
        self.processes[port] = subprocess.Popen(
            [self.server, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=port, socket_timeout=0.5) as client:
                    client.ping()
                return
            except redis.AuthenticationError:
                return  # up, and asking for a password
            except (redis.RedisError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server {args} did not start") from None
                time.sleep(0.05)

    def _data_node(self, replica_of: int | None = None) -> int:
        port = free_port()
        directory = self.directory / str(port)
        directory.mkdir()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", str(directory), "--logfile", "redis.log"]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        self._spawn(port, args)
        return port

    def _sentinel(self) -> int:
        port = free_port()
        directory = self.directory / f"sentinel-{port}"
        directory.mkdir()
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile sentinel.log\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
            + (f"sentinel auth-pass {SERVICE} {self.password}\n" if self.password else "")
            + (f"requirepass {self.sentinel_password}\n"
               f"sentinel sentinel-pass {self.sentinel_password}\n"
               if self.sentinel_password else ""))
        self._spawn(port, [str(config), "--sentinel"])
        return port

    def _wait_synced(self, port: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with redis.Redis(port=port, password=self.password) as client:
                if client.info("replication").get("master_link_status") == "up":
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica on {port} did not sync")
            time.sleep(0.05)

    def _wait_sentinels_agree(self, timeout: float = 20) -> None:
        """Until every sentinel knows the replica and the other sentinels."""
        deadline = time.monotonic() + timeout
        while True:
            ready = 0
            for port in self.sentinels:
                with redis.Redis(port=port, decode_responses=True,
                                 password=self.sentinel_password) as client:
                    master = client.sentinel_master(SERVICE)
                    if int(master.get("num-slaves", 0)) >= 1 and \
                            int(master.get("num-other-sentinels", 0)) >= len(self.sentinels) - 1:
                        ready += 1
            if ready == len(self.sentinels):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not discover each other")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{SERVICE}{query}"

    def primary_port(self) -> int:
        """The primary the sentinels name now."""
        with redis.Redis(port=self.sentinels[0], decode_responses=True,
                         password=self.sentinel_password) as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(5)

    def restart_as_replica(self, port: int) -> None:
        """Start the killed node again on its port, empty; the sentinels make it a replica
        of the primary they now name."""
        directory = self.directory / str(port)
        password = ["--requirepass", self.password, "--masterauth", self.password] \
            if self.password else []
        self._spawn(port, ["--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", str(directory), "--logfile",
                           "redis-again.log", *password])

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(5)
        self.processes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
