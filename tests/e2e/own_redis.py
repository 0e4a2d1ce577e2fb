"""A redis-server of a test's own, configured as the test needs (ACL users, TLS, a
password, an eviction policy, persistence off), on a free loopback port, killed after; and
a self-signed certificate authority made with openssl for the TLS tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from queues.connection import answers
from workers.cli.private_redis import free_port, redis_server_path


@dataclass(frozen=True)
class Tls:
    """A CA and a server certificate it signed, for 127.0.0.1 and localhost."""

    ca: Path
    cert: Path
    key: Path


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
"""P-256 keys: made in milliseconds, where RSA keys take seconds on a loaded machine."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA (certificate, key) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *EC_KEY, "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-subj", f"/CN=seawall test {name}", cwd=directory)
    return directory / f"{name}.crt", directory / f"{name}.key"


def make_tls(directory: Path) -> Tls:
    """A CA and a server certificate signed by it (subject names 127.0.0.1, localhost)."""
    ca, ca_key = make_ca(directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", *EC_KEY, "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=directory)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", ca.name, "-CAkey", ca_key.name,
             "-CAcreateserial", "-days", "2", "-out", "server.crt", "-extfile", "san.ext",
             cwd=directory)
    return Tls(ca, directory / "server.crt", directory / "server.key")


class OwnRedis:
    """``redis-server`` with ``args`` on a free loopback port (its TLS port, with ``tls``,
    the plain port then closed); :attr:`url` reaches it as the default user (with
    ``password``, if it has one); :attr:`log` is its log file."""

    def __init__(self, directory: Path, *args: str, tls: Tls | None = None,
                 password: str | None = None) -> None:
        executable = redis_server_path()
        if executable is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.port = free_port()
        self.tls = tls
        self.password = password
        self.log = directory / f"redis-{self.port}.log"
        ports = (["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls.cert),
                  "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca),
                  "--tls-auth-clients", "no"] if tls is not None
                 else ["--port", str(self.port)])
        secret = ["--requirepass", password] if password is not None else []
        self.process = subprocess.Popen(
            [executable, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory), "--logfile", str(self.log), *secret, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def url_for(self, user: str | None = None, password: str | None = None) -> str:
        scheme = "rediss" if self.tls is not None else "redis"
        auth = f"{user or ''}:{password}@" if password is not None else ""
        query = f"?ssl_ca_certs={self.tls.ca}" if self.tls is not None else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"

    @property
    def url(self) -> str:
        return self.url_for(None, self.password)

    def wait(self, timeout: float = 10.0) -> OwnRedis:
        deadline = time.monotonic() + timeout
        while not answers(self.url, timeout=0.3):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
                self.kill()
                raise RuntimeError(f"redis-server did not start on {self.port}: {tail}")
            time.sleep(0.02)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@contextmanager
def own_redis(directory: Path, *args: str, tls: Tls | None = None,
              password: str | None = None) -> Iterator[OwnRedis]:
    server = OwnRedis(directory, *args, tls=tls, password=password)
    try:
        yield server.wait()
    finally:
        server.kill()
