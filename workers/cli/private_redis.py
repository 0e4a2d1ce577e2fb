"""A throwaway redis-server for ``seawall demo`` (and for tests that need a Redis of their
own): a free loopback port, no persistence, files in a temporary directory, stopped and
removed afterwards.

Why here and not in ``queues``: it does not talk to Redis as a transport, it runs a server
process; only the demo and tests use it. (Whether a Redis answers is asked through
``queues.connection.answers``.)
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from queues.connection import answers

START_TIMEOUT = 5.0


def redis_server_path() -> str | None:
    """The ``redis-server`` executable on PATH, or None."""
    return shutil.which("redis-server")


def die_with_parent() -> None:
    """For ``Popen(preexec_fn=...)``: on Linux, the child gets SIGTERM when the process that
    started it dies, even by SIGKILL, so a demo killed hard leaves no server or workers
    behind (they run in sessions of their own, out of reach of the terminal's Ctrl-C).
    Elsewhere it does nothing."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server child process on ``127.0.0.1:<port>``; use as a context manager or
    call :meth:`stop`."""

    def __init__(self, executable: str | None = None, *, timeout: float = START_TIMEOUT) -> None:
        found = executable or redis_server_path()
        if found is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.directory = Path(tempfile.mkdtemp(prefix="seawall-redis-"))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self._start(found, timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _start(self, executable: str, timeout: float) -> None:
        # Another process may take the port between free_port() and the bind: try again.
        for _ in range(3):
            self.port = free_port()
            self.process = subprocess.Popen(
                [executable, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                 "--logfile", str(self.directory / "redis.log"), "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                # Its own session: a Ctrl-C meant for the demo must not kill Redis before
                # the workers have acked their last messages.
                start_new_session=True, preexec_fn=die_with_parent,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if answers(self.url, timeout=0.2):
                    return
                time.sleep(0.02)
            self._terminate()
        log = self.directory / "redis.log"
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        raise RuntimeError(f"redis-server did not start on a free port; its log: {tail}")

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop the server and delete its directory (idempotent)."""
        self._terminate()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
