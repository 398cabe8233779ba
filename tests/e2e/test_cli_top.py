"""`tinyllm top` as a user runs it: a real terminal (tmux, 80x24), a real metrics endpoint
fed with lifecycle traffic from this process, and `top` in a process of its own.

The pane runs a small script: it saves the tty modes, runs `tinyllm top`, then prints
`top exited RC, terminal restored|changed` and keeps the pane open, so a test reads the
exit status and whether the modes came back from the screen itself.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.support.servers import free_port
from tinyllm.accounting import configure_prices, configure_slo
from tinyllm.http import MetricsServer, start_metrics_server
from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.metrics.gpu import update_gpu_metrics
from tinyllm.pricing import ModelPrice, PriceTable
from tinyllm.slo import Objectives, SLOConfig

CLI = [sys.executable, "-m", "tinyllm"]
WIDTH, HEIGHT = 80, 24
COLUMNS = ("model", "req/s", "err%", "p50", "p95", "TTFT95", "tok/s", "act", "breaker")
LONG_NAME = "a-model-name-far-too-long-for-one-row-of-an-80-column-terminal"
HINT = "(start a server with `tinyllm metrics`, or pass --url)"

Screen = list[str]


# -- the endpoint and its traffic --------------------------------------------------------
@dataclass
class Endpoint:
    registry: CollectorRegistry
    collector: MetricsCollector
    lifecycle: RequestLifecycle
    server: MetricsServer

    @property
    def url(self) -> str:
        return f"{self.server.url}/metrics"

    def restart(self) -> None:
        """Serve the same registry on the same port again."""
        self.server = start_metrics_server(port=self.server.port, registry=self.registry)


#: chat-a's price, USD per million tokens: each of its requests (10 in, 4 out) costs
#: 0.0018 USD, so its spend is 6.48 USD an hour per request a second. chat-b is unpriced.
PRICE = ModelPrice(input=100.0, output=200.0)
USD_PER_HOUR_PER_REQUEST_PER_S = (10 * 100.0 + 4 * 200.0) / 1e6 * 3600
MONEY_COLUMNS = ("model", "$/h", "good/s", "judged/s", "good%", "target")


@pytest.fixture
def accounting() -> Iterator[None]:
    """Before the endpoint's collector exists: chat-a priced, every model held to
    TTFT <= 0.5 s and e2e <= 5 s with a 99 % target (chat-b, always failing, misses)."""
    configure_prices(PriceTable({"chat-a": PRICE}))
    configure_slo(SLOConfig(Objectives(ttft=0.5, e2e=5.0, target=0.99)))
    yield
    configure_prices(None)
    configure_slo(None)


@pytest.fixture
def endpoint(accounting: None) -> Iterator[Endpoint]:
    registry = CollectorRegistry()
    collector = MetricsCollector(registry=registry, namespace="tinyllm")
    served = Endpoint(registry, collector, RequestLifecycle(collector),
                      start_metrics_server(port=0, registry=registry))
    yield served
    served.server.stop()


class Traffic:
    """``chat-a`` at 20 requests/s (5 ms each, 4 tokens out), ``chat-b`` at 10/s, every
    one failing with a timeout; one ``chat-a`` request stays open throughout."""

    def __init__(self, lifecycle: RequestLifecycle) -> None:
        self.lifecycle = lifecycle
        self.stop = threading.Event()
        self.held = lifecycle.start("chat-a")
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        tick = 0
        deadline = time.monotonic()
        while not self.stop.is_set():
            request = self.lifecycle.start("chat-a")
            time.sleep(0.005)
            request.token()
            request.token(3)
            request.usage(input_tokens=10, output_tokens=4)
            request.end()
            if tick % 2 == 0:
                self.lifecycle.start("chat-b").end(error=TimeoutError("upstream too slow"))
            tick += 1
            deadline += 0.05  # a steady beat: the average rate is exact
            self.stop.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.held.end()


@pytest.fixture
def traffic(endpoint: Endpoint) -> Iterator[Traffic]:
    endpoint.collector.update_circuit_breaker_state("open", model="chat-b")
    update_gpu_metrics("all", 0, 3 * 2**30, 80 * 2**30, 42, collector=endpoint.collector)
    endpoint.lifecycle.start(LONG_NAME).end()
    driven = Traffic(endpoint.lifecycle)
    yield driven
    driven.close()


# -- the terminal ------------------------------------------------------------------------
class Terminal:
    """A tmux server of the test's own (its own socket, no config file) with one 80x24
    window running ``tinyllm top``."""

    def __init__(self, tmp_path: Path, *top_args: str, stdin_tty: bool = True) -> None:
        tmux = shutil.which("tmux")
        assert tmux, "tmux is missing: run scripts/ensure-services.sh (apt-get install tmux)"
        self.tmux = [tmux, "-u", "-f", "/dev/null", "-L", f"tinyllm-top-{os.getpid()}-"
                     f"{tmp_path.name}"]
        command = " ".join(shlex.quote(a) for a in [*CLI, "top", *top_args])
        script = tmp_path / "pane.sh"
        # COLUMNS/LINES from the test's environment would override the pane's real size.
        script.write_text(
            "saved=$(stty -g)\n"
            f"env -u COLUMNS -u LINES {command}{'' if stdin_tty else ' < /dev/null'}\n"
            "rc=$?\n"
            'if [ "$(stty -g)" = "$saved" ]; then t=restored; else t=changed; fi\n'
            'echo "top exited $rc, terminal $t"\n'
            "exec sleep 600\n"
        )
        self.tmux_run("new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), "-s", "top",
                      f"bash {shlex.quote(str(script))}")
        self.socket = Path(self.display("#{socket_path}"))
        assert self.display("#{window_width}x#{window_height}") == f"{WIDTH}x{HEIGHT}"

    def tmux_run(self, *args: str) -> str:
        done = subprocess.run([*self.tmux, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done
        return done.stdout

    def display(self, fmt: str) -> str:
        return self.tmux_run("display-message", "-p", "-t", "top", fmt).strip()

    def screen(self) -> Screen:
        # -J joins a line the terminal wrapped, so a row wider than the pane shows up
        # as one line longer than 80 columns instead of two that fit.
        return self.tmux_run("capture-pane", "-p", "-J", "-t", "top").splitlines()

    def keys(self, *keys: str) -> None:
        self.tmux_run("send-keys", "-t", "top", *keys)

    def wait_for(self, what: str, check: Callable[[Screen], bool],
                 timeout: float = 30.0) -> Screen:
        deadline = time.monotonic() + timeout
        screen: Screen = []
        while time.monotonic() < deadline:
            screen = self.screen()
            if check(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; the screen:\n" + "\n".join(screen))

    def wait_for_text(self, text: str, timeout: float = 30.0) -> Screen:
        return self.wait_for(repr(text), lambda s: any(text in line for line in s), timeout)

    def quit_with(self, *keys: str) -> Screen:
        """Press ``keys``; the screen once the pane's script has reported."""
        self.keys(*keys)
        return self.wait_for_text("top exited")

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=30)
        self.socket.unlink(missing_ok=True)  # tmux leaves its socket file behind


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def rows(screen: Screen) -> dict[str, dict[str, str]]:
    """The model table: model name -> column -> the figure as shown."""
    at = next((i for i, line in enumerate(screen) if line.split()[:2] == ["model", "req/s"]),
              None)
    if at is None:
        return {}
    assert tuple(screen[at].split()) == COLUMNS, screen[at]
    found = {}
    for line in screen[at + 1:]:
        fields = line.split()
        if len(fields) == len(COLUMNS):
            found[fields[0]] = dict(zip(COLUMNS, fields, strict=True))
    return found


def money_rows(screen: Screen) -> dict[str, dict[str, str]]:
    """The spend and goodput table: model name -> column -> the figure as shown."""
    at = next((i for i, line in enumerate(screen) if line.split()[:2] == ["model", "$/h"]),
              None)
    if at is None:
        return {}
    assert tuple(screen[at].split()) == MONEY_COLUMNS, screen[at]
    found = {}
    for line in screen[at + 1:]:
        fields = line.split()
        if len(fields) == len(MONEY_COLUMNS):
            found[fields[0]] = dict(zip(MONEY_COLUMNS, fields, strict=True))
    return found


def number(figure: str) -> float:
    """A figure as shown, as a number ("—", no figure: NaN, which compares false)."""
    return float("nan") if figure == "—" else float(figure.rstrip("%k"))


def header_figure(screen: Screen, label: str) -> str:
    """The figure after ``label`` in the totals lines (``req/s 12.3`` -> ``12.3``)."""
    for line in screen[:5]:
        if f"{label} " in line:
            return line.split(f"{label} ", 1)[1].split()[0]
    raise AssertionError(f"no {label!r} in the header:\n" + "\n".join(screen[:7]))


def assert_fits(screen: Screen) -> None:
    too_wide = [line for line in screen if len(line) > WIDTH]
    assert not too_wide, "lines wider than the terminal:\n" + "\n".join(too_wide)


def assert_restored(terminal: Terminal, screen: Screen) -> None:
    assert any(line.strip() == "top exited 0, terminal restored" for line in screen), (
        "\n".join(screen))
    assert terminal.display("#{alternate_on} #{cursor_flag}") == "0 1"  # main screen, cursor
    assert not any("req/s" in line for line in screen)  # the view is gone with its screen
    assert "Traceback" not in "\n".join(screen)


# -- the tests ---------------------------------------------------------------------------
def test_live_rows_match_the_traffic_and_q_quits(
    endpoint: Endpoint, traffic: Traffic, terminals: list[Terminal], tmp_path: Path
) -> None:
    terminal = Terminal(tmp_path, "--url", endpoint.url, "--interval", "0.5")
    terminals.append(terminal)

    def live(screen: Screen) -> bool:
        table = rows(screen)
        return ({"chat-a", "chat-b"} <= table.keys()
                and 10 <= number(table["chat-a"]["req/s"]) <= 40
                and 5 <= number(table["chat-b"]["req/s"]) <= 20)

    screen = terminal.wait_for("rates near the driven 20/s and 10/s", live)
    assert_fits(screen)
    table = rows(screen)
    a, b = table["chat-a"], table["chat-b"]
    assert a["err%"] == "0.0%" and b["err%"] == "100.0%"
    assert a["p50"].endswith("ms") and a["p95"].endswith("ms") and a["TTFT95"].endswith("ms")
    assert b["TTFT95"] == "—"  # no token ever came back
    assert 20 <= number(a["tok/s"]) <= 160  # 4 tokens a request at about 20 requests/s
    assert b["tok/s"] == "0.00"
    assert number(a["act"]) >= 1  # the request held open
    assert a["breaker"] == "—" and b["breaker"] == "open"
    cut = [name for name in table if name.endswith("…")]
    assert len(cut) == 1 and LONG_NAME.startswith(cut[0].rstrip("…"))
    assert number(header_figure(screen, "req/s")) > 0
    assert 0 < number(header_figure(screen, "errors")) < 100  # chat-b's share of all
    assert header_figure(screen, "tokens/s in") != "—"
    assert screen[3].startswith("GPU 0 3.0/80 GiB 42% busy")
    assert any("figures over the last" in line for line in screen)

    # Spend and goodput, from the same two scrapes: chat-a's spend per hour follows its
    # request rate at its price; chat-b has no price, so it is "unpriced", never 0.
    money = money_rows(screen)
    assert {"chat-a", "chat-b"} <= money.keys(), "\n".join(screen)
    ma, mb = money["chat-a"], money["chat-b"]
    expected = number(a["req/s"]) * USD_PER_HOUR_PER_REQUEST_PER_S
    assert 0.75 * expected <= number(ma["$/h"]) <= 1.25 * expected, (ma, a)
    assert mb["$/h"] == "unpriced"
    # Goodput: every chat-a request meets the objectives, no chat-b request does.
    assert 0.75 <= number(ma["good/s"]) / number(a["req/s"]) <= 1.25, (ma, a)
    assert ma["good%"] == "100.0%" and ma["target"] == "99.0%"
    assert mb["good/s"] == "0.00" and mb["good%"] == "0.0%"
    assert 5 <= number(mb["judged/s"]) <= 20
    assert number(header_figure(screen, "spend $/h")) > 0
    assert number(header_figure(screen, "$/s")) > 0
    assert number(header_figure(screen, "unpriced req")) >= 1
    assert 50 <= number(header_figure(screen, "of judged")) <= 80  # 20 good of 30 a second

    traffic.close()  # no traffic: the next windows show no requests and no error rate
    screen = terminal.wait_for("an idle window", lambda s: {
        r["req/s"] for r in rows(s).values()} == {"0.00"})
    assert {r["err%"] for r in rows(screen).values()} == {"—"}
    assert rows(screen)["chat-a"]["act"] == "0"
    idle = money_rows(screen)
    assert idle["chat-a"]["$/h"] == "0.00" and idle["chat-b"]["$/h"] == "unpriced"
    assert {r["good%"] for r in idle.values()} == {"—"}  # nothing judged in the window

    assert_restored(terminal, terminal.quit_with("q"))


def test_first_frame_has_no_rates_and_q_does_not_wait_for_the_interval(
    endpoint: Endpoint, terminals: list[Terminal], tmp_path: Path
) -> None:
    for _ in range(3):
        endpoint.lifecycle.start("chat-a").end()
    # A minute between refreshes: everything seen here is the first frame.
    terminal = Terminal(tmp_path, "--url", endpoint.url, "--interval", "60")
    terminals.append(terminal)
    screen = terminal.wait_for("the chat-a row", lambda s: "chat-a" in rows(s))
    row = rows(screen)["chat-a"]
    assert row["req/s"] == "—" and row["tok/s"] == "—"
    assert row["err%"] == "0.0%"  # since the server started
    assert header_figure(screen, "req/s") == "—"
    assert any("first scrape" in line for line in screen)
    assert money_rows(screen)["chat-a"]["$/h"] == "—"  # a rate needs two scrapes
    assert header_figure(screen, "spend $/h") == "—"
    assert_restored(terminal, terminal.quit_with("q"))


def test_no_traffic_is_shown_as_text_and_ctrl_c_quits_without_a_tty_stdin(
    endpoint: Endpoint, terminals: list[Terminal], tmp_path: Path
) -> None:
    terminal = Terminal(tmp_path, "--url", endpoint.url, "--interval", "0.5", stdin_tty=False)
    terminals.append(terminal)
    # Past the first frame, so the empty state holds across refreshes.
    screen = terminal.wait_for_text("figures over the last")
    assert any("no models yet" in line for line in screen)
    assert screen[3].startswith("GPU none: ")  # and why (this machine's NVML says)
    assert header_figure(screen, "req/s") == "0.00"
    assert_fits(screen)
    assert_restored(terminal, terminal.quit_with("C-c"))


def test_an_endpoint_that_stops_answering_is_shown_and_retried(
    endpoint: Endpoint, terminals: list[Terminal], tmp_path: Path
) -> None:
    endpoint.lifecycle.start("chat-a").end()
    terminal = Terminal(tmp_path, "--url", endpoint.url, "--interval", "0.5")
    terminals.append(terminal)
    terminal.wait_for_text("figures over the last")

    endpoint.server.stop()
    screen = terminal.wait_for_text("no answer since")
    assert any(f"cannot reach {endpoint.url}" in line for line in screen)
    assert "chat-a" in rows(screen)  # the last figures stay up
    assert_fits(screen)

    endpoint.restart()
    endpoint.lifecycle.start("chat-a").end()
    terminal.wait_for("the view back", lambda s: not any("no answer" in line for line in s)
                      and any("figures over the last" in line for line in s))
    assert_restored(terminal, terminal.quit_with("q"))


def run_top(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "top", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"})


def test_a_dead_url_is_one_line_and_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = run_top("--url", url, "--interval", "0.5")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot reach {url}")
    assert lines[0].endswith(HINT)


@pytest.mark.parametrize(("args", "named"), [
    (["--interval", "0"], "--interval"),
    (["--interval", "-1"], "--interval"),
    (["--interval", "soon"], "--interval"),
    (["--interval", "nan"], "--interval"),
    (["--url", "127.0.0.1:9090/metrics"], "--url"),
])
def test_a_bad_option_is_one_line_and_exit_2(args: list[str], named: str) -> None:
    result = run_top(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named} must"), result.stderr
    assert "> 0" in lines[0] if named == "--interval" else "http://" in lines[0]
