"""Fixtures for tests that talk to real services: a Prometheus server and metric workloads.

- ``free_port``: a callable returning a TCP port that was free a moment ago.
- ``prometheus``: a factory. ``prometheus(targets=[...] or jobs={job: [...]},
  rule_files=[...])`` writes a config (1 s scrape and evaluation interval) into a temp dir,
  starts ``prometheus`` on a free port with ``--web.enable-lifecycle``, waits for
  ``/-/ready`` and returns a ``Prometheus`` handle (``query``, ``wait_for``, ``rules``,
  ``wait_for_rules``, ``reload``); every server started is stopped and its files removed at
  the end of the session.
- ``workload``: a factory. ``workload(namespace="ryot")`` runs ``examples/metrics_example.py``
  as a subprocess on a free port and returns a ``Workload`` handle (``target``, ``url``,
  ``stop()``); every one still running is stopped at the end of the session.
- ``promtool``: the path of ``promtool``.
- ``influxdb``: a running InfluxDB 1.x (``InfluxDB``: ``create_database``, ``write``,
  ``query``) in a temp dir, for the session.

Prometheus and promtool come from scripts/ensure-services.sh; when they are missing the
tests fail (they never skip) and say so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "metrics_example.py"
ENSURE = "scripts/ensure-services.sh"


def find_binary(name: str) -> str:
    """The path of ``name``, or a test failure that says how to install it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found on PATH; run {ENSURE} (installs Prometheus and promtool)",
                    pytrace=False)
    return found


def get_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no output)"


def _stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


class PromQLError(RuntimeError):
    """Prometheus answered ``status: error``; the message is its ``errorType: error``."""

    def __init__(self, promql: str, error_type: str, error: str) -> None:
        super().__init__(f"{error_type}: {error}\n  query: {promql}")
        self.error_type = error_type
        self.error = error


@dataclass
class Prometheus:
    """A running Prometheus server started by the ``prometheus`` fixture."""

    url: str
    workdir: Path  # holds prometheus.yml, prometheus.log and data/
    proc: subprocess.Popen[bytes]
    client: httpx.Client = field(repr=False)

    @property
    def config(self) -> Path:
        """The config file; rewrite it (``write_prometheus_config``) and ``reload()``."""
        return self.workdir / "prometheus.yml"

    @property
    def log(self) -> str:
        return _tail(self.workdir / "prometheus.log")

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` member, or PromQLError on status error."""
        response = self.client.get(f"{self.url}/api/v1/{path}", params=params)
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(
                f"{path}: HTTP {response.status_code}, not JSON: {response.text[:500]}"
            ) from None
        if body.get("status") != "success":
            raise PromQLError(str(params.get("query", path)), body.get("errorType", "?"),
                              body.get("error", response.text[:500]))
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Evaluate an instant query now: the result list (``metric`` and ``value`` each).

        A scalar or string result comes back as a one-element list with empty ``metric``.
        """
        data = self.api("query", query=promql)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Poll ``promql`` until ``predicate(result)`` holds; the result, or a failure."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"after {timeout:g}s, {promql!r} still gives {result!r}\n"
                            f"prometheus log:\n{self.log}", pytrace=False)
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited ({self.proc.returncode}):\n{self.log}",
                            pytrace=False)
            time.sleep(interval)

    def rules(self) -> list[dict[str, Any]]:
        """The rule groups of ``/api/v1/rules``."""
        return list(self.api("rules")["groups"])

    def wait_for_rules(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll ``/api/v1/rules`` until ``predicate(groups)`` holds; the groups, or a failure."""
        deadline = time.monotonic() + timeout
        while True:
            groups = self.rules()
            if predicate(groups):
                return groups
            if time.monotonic() > deadline:
                pytest.fail(f"after {timeout:g}s the rules are still {groups!r}\n"
                            f"prometheus log:\n{self.log}", pytrace=False)
            time.sleep(0.25)

    def reload(self) -> None:
        """Re-read the config file (``POST /-/reload``; needs --web.enable-lifecycle)."""
        response = self.client.post(f"{self.url}/-/reload")
        assert response.status_code == 200, f"reload failed: {response.text}\n{self.log}"

    def stop(self) -> None:
        _stop_process(self.proc)
        self.client.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Workload:
    """``examples/metrics_example.py`` running as a subprocess."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    namespace: str
    log_path: Path

    @property
    def target(self) -> str:
        """``host:port``, as a Prometheus static target."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    @property
    def log(self) -> str:
        return _tail(self.log_path)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the workload, wait for it, return its exit status."""
        return _stop_process(self.proc, sig)


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A callable: ``free_port()`` gives a TCP port free a moment ago."""
    return get_free_port


@pytest.fixture(scope="session")
def promtool() -> str:
    return find_binary("promtool")


def write_prometheus_config(
    path: Path,
    jobs: Mapping[str, Sequence[str]],
    rule_files: Sequence[str | Path] = (),
    interval: str = "1s",
) -> None:
    """A Prometheus config scraping ``jobs`` (job name -> ``host:port`` targets)."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in jobs.items()
        ],
    }
    if rule_files:
        config["rule_files"] = [str(Path(f).resolve()) for f in rule_files]
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="session")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]
) -> Iterator[Callable[..., Prometheus]]:
    """Factory: ``prometheus(targets=[...] | jobs={...}, rule_files=[...])`` -> Prometheus."""
    binary = find_binary("prometheus")
    started: list[Prometheus] = []

    def start(
        targets: Sequence[str] = (),
        *,
        jobs: Mapping[str, Sequence[str]] | None = None,
        rule_files: Sequence[str | Path] = (),
        interval: str = "1s",
        ready_timeout: float = 30.0,
    ) -> Prometheus:
        workdir = tmp_path_factory.mktemp("prometheus")
        config = workdir / "prometheus.yml"
        write_prometheus_config(config, jobs or {"tinyllm": targets}, rule_files, interval)
        port = free_port()
        with (workdir / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
            )
        prom = Prometheus(f"http://127.0.0.1:{port}", workdir, proc, httpx.Client(timeout=10))
        started.append(prom)
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited ({proc.returncode}) before it was ready:\n"
                            f"{prom.log}", pytrace=False)
            try:
                if prom.client.get(f"{prom.url}/-/ready").status_code == 200:
                    return prom
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready after {ready_timeout:g}s:\n{prom.log}",
                            pytrace=False)
            time.sleep(0.1)

    yield start
    for prom in started:
        prom.stop()


@pytest.fixture(scope="session")
def workload(
    tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]
) -> Iterator[Callable[..., Workload]]:
    """Factory: ``workload(namespace=None, requests=12, interval=0.05)`` -> Workload.

    ``namespace`` sets ``TINYLLM_METRICS_NAMESPACE`` (None: the default, tinyllm). Returns
    once the example has printed where to curl and ``/metrics`` answers.
    """
    running: list[Workload] = []

    def start(
        namespace: str | None = None,
        *,
        requests: int = 12,
        interval: float = 0.05,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 20.0,
    ) -> Workload:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("TINYLLM_METRICS_NAMESPACE", None)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if namespace is not None:
            env["TINYLLM_METRICS_NAMESPACE"] = namespace
        host, port = "127.0.0.1", free_port()
        log_path = tmp_path_factory.mktemp("workload") / "stderr.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--host", host, "--port", str(port),
                 "--requests", str(requests), "--interval", str(interval), *extra_args],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=env,
                cwd=REPO,
            )
        wl = Workload(proc, host, port, namespace or "tinyllm", log_path)
        running.append(wl)
        hint = f"curl {wl.url}/metrics"
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{EXAMPLE.name} exited ({proc.returncode}):\n{wl.log}",
                            pytrace=False)
            if hint in wl.log:
                try:
                    if httpx.get(f"{wl.url}/metrics", timeout=5).status_code == 200:
                        return wl
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail(f"{EXAMPLE.name} did not print {hint!r} and serve /metrics "
                            f"within {ready_timeout:g}s:\n{wl.log}", pytrace=False)
            time.sleep(0.05)

    yield start
    for wl in running:
        wl.stop()


# -- PostgreSQL ------------------------------------------------------------------------

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin(sql: str) -> None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc}); run {ENSURE}",
                    pytrace=False)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test; dropped afterwards."""
    name = f"tinyllm_store_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- InfluxDB ----------------------------------------------------------------------------


@dataclass
class InfluxDB:
    """A running ``influxd`` 1.x started by the ``influxdb`` fixture."""

    url: str
    workdir: Path  # holds influxdb.conf, influxd.log and the data
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        return _tail(self.workdir / "influxd.log")

    def create_database(self, name: str) -> None:
        response = httpx.post(f"{self.url}/query", params={"q": f'CREATE DATABASE "{name}"'},
                              timeout=10)
        assert response.status_code == 200, response.text

    def write(self, database: str, lines: str) -> None:
        """``POST /write``: line protocol, nanosecond timestamps."""
        response = httpx.post(f"{self.url}/write", params={"db": database},
                              content=lines.encode(), timeout=10)
        assert response.status_code == 204, response.text

    def query(self, database: str, influxql: str) -> list[dict[str, Any]]:
        """The series of one InfluxQL statement (``name``, ``tags``, ``columns``,
        ``values``); an AssertionError carrying InfluxDB's message if it fails."""
        body = httpx.get(f"{self.url}/query", params={"db": database, "q": influxql,
                                                      "epoch": "ns"}, timeout=10).json()
        result = body["results"][0] if "results" in body else body
        assert "error" not in result, f"{result.get('error')}\n  query: {influxql}"
        return list(result.get("series", []))


def _influxdb_config(workdir: Path, influxd: str, http_port: int, meta_port: int) -> Path:
    text = subprocess.run([influxd, "config"], capture_output=True, text=True, check=True,
                          timeout=30).stdout
    text = text.replace("/var/lib/influxdb", str(workdir))
    text = re.sub(r'(?m)^bind-address = ".*"$', f'bind-address = "127.0.0.1:{meta_port}"',
                  text)
    text = re.sub(r'(?ms)(^\[http\].*?^\s*bind-address = )"[^"]*"',
                  rf'\1"127.0.0.1:{http_port}"', text, count=1)
    text = re.sub(r'(?ms)(^\[ifql\].*?^\s*enabled = )\w+', r"\1false", text, count=1)
    text = re.sub(r'(?m)^reporting-enabled = \w+', "reporting-enabled = false", text)
    text = re.sub(r'(?ms)(^\[monitor\].*?^\s*store-enabled = )\w+', r"\1false", text, count=1)
    path = workdir / "influxdb.conf"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def influxdb(
    tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]
) -> Iterator[InfluxDB]:
    """A running InfluxDB 1.x on free loopback ports (HTTP and meta), in a temp dir, with
    reporting, self-monitoring and IFQL off; stopped at the end of the session."""
    influxd = shutil.which("influxd")
    if influxd is None:
        pytest.fail(f"influxd not found on PATH; run {ENSURE} (installs influxdb)",
                    pytrace=False)
    workdir = tmp_path_factory.mktemp("influxdb")
    http_port = free_port()
    config = _influxdb_config(workdir, influxd, http_port, free_port())
    with (workdir / "influxd.log").open("wb") as log:
        proc = subprocess.Popen([influxd, "-config", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    db = InfluxDB(f"http://127.0.0.1:{http_port}", workdir, proc)
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"influxd exited ({proc.returncode}):\n{db.log}", pytrace=False)
            try:
                if httpx.get(f"{db.url}/ping", timeout=2).status_code == 204:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"influxd not ready after 30s:\n{db.log}", pytrace=False)
            time.sleep(0.1)
        yield db
    finally:
        _stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``)
    serving the embedded model's GGUF as ``gemma3-270m``; yields its ``/v1`` URL."""
    from tinyllm.models import default_model_path

    port = get_free_port()
    # The server logs a lot while loading: to a file, since an unread pipe fills and
    # blocks it.
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    sink = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model",
         str(default_model_path(progress=False)), "--model_alias", "gemma3-270m",
         "--chat_format", "gemma",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512"],
        stdout=sink, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start within 90 s: "
                                   f"{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        sink.close()


@pytest.fixture(scope="session")
def tinyllm_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tinyllm serve`` (the embedded model as ``gemma3-270m``) in a process of its own;
    yields its base URL (``/v1`` for OpenAI clients, the URL itself for Ollama ones)."""
    from tests.support.servers import wait_ready

    port = get_free_port()
    log = tmp_path_factory.mktemp("gateway") / "serve.log"
    sink = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tinyllm", "serve", "--port", str(port)],
        stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, timeout=120)
        yield url
    finally:
        _stop_process(process)  # type: ignore[arg-type]
        sink.close()
