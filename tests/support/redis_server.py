"""A redis-server of the test's own, on a free loopback port, that can be stopped and
started again on the same port mid-test (an outage), never touching a shared Redis.

Example::

    with RedisServer() as server:
        cache = RedisCache(server.url)
        server.stop()          # the outage: the port now refuses connections
        server.start()         # back, on the same port, empty (no persistence)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import free_port

__all__ = ["RedisServer"]


class RedisServer:
    """``redis-server --port <free> --save "" --appendonly no`` in a temp dir."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="tinyllm-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running server's process id (None while stopped)."""
        return None if self._proc is None else self._proc.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start it (again) on the same port; returns once it accepts connections."""
        if self._proc is not None:
            return
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self._dir,
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL): connections are closed, the port refuses."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(Path(self._dir), ignore_errors=True)
