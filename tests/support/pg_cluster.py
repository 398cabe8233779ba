"""A PostgreSQL server of the test's own: ``initdb`` into a temp dir, started on a free
127.0.0.1 port with trust auth, stopped and removed afterwards. It never touches the
machine's shared server at :5432, so a test may stop and restart it at will.

Debian's binaries live in ``/usr/lib/postgresql/<version>/bin``; PostgreSQL refuses to
run as root, so as root the cluster belongs to the ``postgres`` user.

Example:
    >>> with pg_cluster() as pg:  # doctest: +SKIP
    ...     pg.url            # postgresql://postgres@127.0.0.1:54321/postgres
    ...     pg.stop(); pg.start()
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["PgCluster", "pg_bin", "pg_cluster"]


def pg_bin() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` that has ``pg_ctl``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise RuntimeError("no /usr/lib/postgresql/*/bin/pg_ctl: run scripts/ensure-services.sh")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgCluster:
    """A running cluster: ``url``, ``port``, ``stop(mode)``, ``start()``, ``ready()``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._bin = pg_bin()
        self._user: list[str] = []
        if os.geteuid() == 0:
            self._user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self._user, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): "
                               f"{(done.stdout + done.stderr)[-2000:]}")

    def init(self) -> None:
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        """Start the server on its port and wait until it accepts connections."""
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.root} -c fsync=off "
                f"-c full_page_writes=off -c max_connections=50")
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-o", opts, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode`` (``fast``: sessions ended, ``immediate``: a crash)."""
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                  "-t", "30", "stop")

    def ready(self) -> bool:
        """Whether the server accepts connections now (``pg_isready``)."""
        done = subprocess.run([str(self._bin / "pg_isready"), "-q", "-h", "127.0.0.1",
                               "-p", str(self.port)], check=False)
        return done.returncode == 0

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A fresh cluster on a free port for the ``with`` block; stopped and removed after."""
    root = Path(tempfile.mkdtemp(prefix="tinyllm-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    root.chmod(0o700)
    cluster = PgCluster(root, _free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
