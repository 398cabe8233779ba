"""``tinyllm top``: a live view of a running tinyllm metrics endpoint, redrawn in place.

Every figure comes from ``tinyllm.metrics.window`` over the two latest scrapes, so a
rate or a quantile here is what Prometheus would compute over the same window; the
first frame has no earlier scrape, so its rates are "—". Below the figures, a second
table gives each model's spend per hour (USD; "unpriced" for a model with no price,
never 0) and its goodput: requests/s meeting every SLO objective (the rate of
``slo_requests_total{objective="all", outcome="met"}`` over the window), all judged
requests/s, and the share met against the model's target. The view fits an 80-column
terminal: numbers are right-aligned and short (``12ms``, ``1.25s``, ``3.4k``), a long
model name or URL is cut with "…", and rows past the bottom of the screen are counted,
not drawn.

Keys: when stdin is a terminal it is put in cbreak mode (keys arrive one at a time,
unechoed; Ctrl-C still interrupts) and a daemon thread waits on it with ``select``, so
the refresh loop never blocks on the keyboard; ``q`` quits. When stdin is not a
terminal nothing reads it, and Ctrl-C (or SIGTERM) quits. Either way the terminal is
restored (main screen, cursor, the saved tty modes) and the exit status is 0.
"""

from __future__ import annotations

import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tinyllm.cli._app import app, fail
from tinyllm.cli.metrics import DEFAULT_METRICS_URL, metrics_url
from tinyllm.settings import (
    ENV_METRICS_URL,
    metrics_namespace,
)

if TYPE_CHECKING:
    from tinyllm.metrics.window import Snapshot

DASH = "—"
_HINT = "(start a server with `tinyllm metrics`, or pass --url)"


# -- figures ---------------------------------------------------------------------------
@dataclass
class _Frame:
    """What one redraw shows."""

    url: str
    interval: float
    figures: dict[str, Any] | None = None  # window() of the two latest good scrapes
    gpus: list[dict[str, Any]] = field(default_factory=list)
    gpu_reason: str | None = None  # why there are no GPU figures (asked once)
    error: str | None = None  # why the latest scrape failed; None when it worked
    last_ok: float | None = None  # wall-clock time of the latest good scrape


class _Poller:
    """Scrapes the endpoint and keeps the previous snapshot for the next window."""

    def __init__(self, url: str, namespace: str, timeout: float) -> None:
        self.url, self.namespace, self.timeout = url, namespace, timeout
        self.before: Snapshot | None = None

    def scrape(self, frame: _Frame) -> None:
        """One scrape into ``frame``; raises StatsUnavailable or ValueError."""
        from tinyllm.metrics.gpu import gpu_status
        from tinyllm.metrics.stats import fetch_exposition, summarize
        from tinyllm.metrics.window import Snapshot, window

        text = fetch_exposition(self.url, timeout=self.timeout)
        after = Snapshot.from_text(text, self.namespace, time.monotonic())
        gpus = summarize(text, self.namespace)["gpus"]
        frame.figures = window(self.before, after)
        frame.gpus = gpus
        frame.error, frame.last_ok = None, time.time()
        self.before = after
        if not gpus and frame.gpu_reason is None:
            frame.gpu_reason = gpu_status().reason

    def refresh(self, frame: _Frame) -> None:
        """A scrape while the view runs: a failure is shown, never raised, and the
        next refresh tries again (the window then spans the gap)."""
        from tinyllm.metrics.stats import StatsUnavailable

        try:
            self.scrape(frame)
        except StatsUnavailable as exc:
            frame.error = str(exc)
        except ValueError as exc:
            frame.error = f"{self.url} did not return a Prometheus exposition: {exc}"
        except Exception as exc:  # a connection cut mid-answer, ...: keep the view up
            frame.error = f"reading {self.url} failed: {type(exc).__name__}: {exc}"


# -- formatting --------------------------------------------------------------------------
def _rate(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}%"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if not math.isfinite(seconds):
        return "inf"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.2f}s"
    return f"{seconds:.1f}s" if seconds < 100 else f"{seconds:.0f}s"


def _money(value: float | None) -> str:
    """USD, short: ``1234``, ``12.3``, ``0.42``, ``0.0042`` (two significant figures
    under a cent, at most 8 characters)."""
    if value is None:
        return DASH
    if value >= 1000:
        return f"{value / 1000:.1f}k" if value < 100_000 else f"{value / 1000:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value == 0 or value >= 0.01:
        return f"{value:.2f}"
    return f"{value:.{min(6, 1 - math.floor(math.log10(value)))}f}"


def _count(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f}"


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t is not None else DASH


def _line(*parts: str | tuple[str, str]) -> Text:
    text = Text.assemble(*parts)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _figure(label: str, value: str) -> list[str | tuple[str, str]]:
    return [(label + " ", "dim"), (value, "bold"), "  "]


_UNPRICED = "unpriced"
_BREAKER_STYLES = {"open": "bold red", "half-open": "yellow"}
_BREAKER_WIDTH = len("half-open")
_NUMBER_COLUMNS = (("req/s", 5), ("err%", 6), ("p50", 6), ("p95", 6), ("TTFT95", 6),
                   ("tok/s", 5), ("act", 3))
# The second table: spend and goodput per model (one table would not fit 80 columns).
_MONEY_COLUMNS = (("$/h", len(_UNPRICED)), ("good/s", 6), ("judged/s", 8), ("good%", 6),
                  ("target", 6))


# -- the view ----------------------------------------------------------------------------
def _render(frame: _Frame, width: int, height: int) -> RenderableType:
    figures = frame.figures or {"seconds": 0.0, "totals": {}, "models": {}}
    t = figures["totals"]
    lat, ttft, tok = (t.get("latency_seconds", {}), t.get("ttft_seconds", {}),
                      t.get("tokens_per_s", {}))
    title = _line(("tinyllm top", "bold"), f"  every {frame.interval:g} s  ",
                  ("q", "bold"), " quits  ", (frame.url, "cyan"))
    load = _line(
        *_figure("req/s", _rate(t.get("requests_per_s"))),
        *_figure("errors", _pct(None if t.get("error_rate") is None
                                else 100.0 * t["error_rate"])),
        *_figure("latency p50", _dur(lat.get("p50"))), *_figure("p95", _dur(lat.get("p95"))),
        *_figure("TTFT p95", _dur(ttft.get("p95"))),
    )
    flow = _line(
        *_figure("tokens/s in", _rate(tok.get("input"))), *_figure("out", _rate(tok.get("output"))),
        *_figure("active", _count(t.get("active_requests"))),
        *_figure("queue", _count(t.get("queue_size"))),
        *_figure("cache hits", _pct(None if t.get("cache_hit_rate") is None
                                    else 100.0 * t["cache_hit_rate"])),
    )
    lines: list[RenderableType] = [title, load, flow, _gpu_line(frame), _money_line(t),
                                   *_status(frame, figures)]
    models = figures["models"]
    if not models:
        lines += [Text(""), _line(("no models yet: the endpoint has seen no requests; "
                                   "waiting for traffic", "dim"))]
        return Group(*lines)
    shown = list(models.items())
    # Each table: a blank line and its header; then one row per model in each; "… more".
    room = max(1, (height - len(lines) - 5) // 2)
    hidden = len(shown) - room if len(shown) > room else 0
    shown = shown[: len(shown) - hidden]
    lines += [Text(""), _table(shown, width), Text(""), _money_table(shown, width)]
    if hidden:
        lines.append(_line((f"… {hidden} more model(s): make the terminal taller", "dim")))
    return Group(*lines)


def _spend_per_hour(per_s: float | None, unpriced: bool) -> str:
    return _UNPRICED if unpriced else _money(None if per_s is None else per_s * 3600)


def _share(value: float | None) -> str:
    return _pct(None if value is None else 100.0 * value)


def _money_line(t: dict[str, Any]) -> Text:
    """Spend (USD per hour and per second) and goodput (every model together)."""
    per_s = t.get("cost_usd_per_s")
    parts = [*_figure("spend $/h", _spend_per_hour(per_s, bool(t.get("unpriced")))),
             *_figure("$/s", _money(per_s) if not t.get("unpriced") else _UNPRICED)]
    if t.get("unpriced_requests"):
        parts += _figure("unpriced req", _count(t["unpriced_requests"]))
    parts += [*_figure("goodput/s", _rate(t.get("good_per_s"))),
              *_figure("of judged", _share(t.get("good_share")))]
    return _line(*parts)


def _gpu_line(frame: _Frame) -> Text:
    if not frame.gpus:
        return _line(("GPU ", "dim"), f"none: {frame.gpu_reason or 'no GPU figures'}")
    parts: list[str | tuple[str, str]] = []
    for gpu in frame.gpus:
        used = f"{gpu['used_bytes'] / 2**30:.1f}"
        if gpu.get("reserved_bytes"):
            used += f"/{gpu['reserved_bytes'] / 2**30:.0f}"
        busy = gpu.get("utilization_percent")
        parts += [(f"GPU {gpu['gpu_id']} ", "dim"), (f"{used} GiB", "bold"),
                  f" {_count(busy)}% busy  " if busy is not None else "  "]
    return _line(*parts)


def _status(frame: _Frame, figures: dict[str, Any]) -> list[Text]:
    if frame.error is not None:
        # Two lines: what it means first, so a long reason cannot push it off the edge.
        return [_line((f"! no answer since {_clock(frame.last_ok)} (figures below are from "
                       f"then); retrying every {frame.interval:g} s", "bold red")),
                _line(("  " + frame.error, "red"))]
    if figures["seconds"] <= 0:
        return [_line((f"{_clock(frame.last_ok)}  first scrape: totals since start; rates "
                      "from the next refresh", "dim"))]
    return [_line((f"{_clock(frame.last_ok)}  figures over the last "
                   f"{figures['seconds']:.1f} s", "dim"))]


def _model_width(models: list[tuple[str, dict[str, Any]]], width: int) -> int:
    # The figures keep their widths (the longest each formatter writes); only the
    # model column gives way, cut with "…", so a row never wraps at 80 columns.
    figures = sum(w for _, w in _NUMBER_COLUMNS) + _BREAKER_WIDTH
    room = width - figures - 2 * (len(_NUMBER_COLUMNS) + 1)  # two spaces between columns
    return max(5, min(max(len(model) for model, _ in models), room))


def _table(models: list[tuple[str, dict[str, Any]]], width: int) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold underline")
    table.add_column("model", no_wrap=True, overflow="ellipsis",
                     width=_model_width(models, width))
    for name, width in _NUMBER_COLUMNS:
        table.add_column(name, justify="right", no_wrap=True, min_width=width)
    table.add_column("breaker", no_wrap=True, min_width=_BREAKER_WIDTH)
    for model, m in models:
        breaker = m["breaker"] or DASH
        table.add_row(
            model, _rate(m["requests_per_s"]), _pct(m["error_pct"]),
            _dur(m["latency_p50_seconds"]), _dur(m["latency_p95_seconds"]),
            _dur(m["ttft_p95_seconds"]), _rate(m["tokens_out_per_s"]), _count(m["active"]),
            Text(breaker, style=_BREAKER_STYLES.get(breaker, "")),
        )
    return table


def _money_table(models: list[tuple[str, dict[str, Any]]], width: int) -> Table:
    """Spend per hour and goodput per model: requests/s meeting every objective, all
    judged requests/s, the share met (red under the model's target), the target."""
    table = Table(box=None, pad_edge=False, header_style="bold underline")
    table.add_column("model", no_wrap=True, overflow="ellipsis",
                     width=_model_width(models, width))  # as wide as the first table's
    for name, width in _MONEY_COLUMNS:
        table.add_column(name, justify="right", no_wrap=True, min_width=width)
    for model, m in models:
        share, target = m.get("good_share"), m.get("slo_target")
        below = share is not None and target is not None and share < target
        table.add_row(
            model, _spend_per_hour(m.get("cost_usd_per_s"), bool(m.get("unpriced"))),
            _rate(m.get("good_per_s")), _rate(m.get("judged_per_s")),
            Text(_share(share), style="bold red" if below else ""), _share(target),
        )
    return table


# -- the terminal ------------------------------------------------------------------------
@contextmanager
def _keys(quit_: threading.Event) -> Iterator[None]:
    """Set ``quit_`` when ``q`` is pressed; reads stdin only when it is a terminal."""
    try:
        import termios
        import tty
    except ImportError:  # not a POSIX terminal (Windows): Ctrl-C still quits
        yield
        return
    try:
        fd = sys.stdin.fileno()
        interactive = os.isatty(fd)
    except (AttributeError, ValueError, OSError):  # stdin closed or replaced
        interactive = False
    if not interactive:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)  # one key at a time, unechoed; Ctrl-C still sends SIGINT
    stop = threading.Event()
    reader = threading.Thread(target=_read_keys, args=(fd, quit_, stop), daemon=True,
                              name="tinyllm-top-keys")
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join(timeout=1.0)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _read_keys(fd: int, quit_: threading.Event, stop: threading.Event) -> None:
    # select() with a timeout, so the thread notices ``stop`` and never holds a read
    # that would swallow the first key typed at the shell afterwards.
    while not stop.is_set():
        try:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:  # end of input: the terminal went away
            return
        if b"q" in data.lower():
            quit_.set()
            return


@contextmanager
def _sigterm_quits() -> Iterator[None]:
    """SIGTERM leaves like Ctrl-C, so ``kill`` also restores the terminal."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _watch(poller: _Poller, frame: _Frame) -> None:
    console = Console(highlight=False)
    quit_ = threading.Event()
    with _sigterm_quits(), _keys(quit_), Live(
        _render(frame, console.width, console.height), console=console, screen=True,
        auto_refresh=False,
    ) as live:
        deadline = time.monotonic() + frame.interval
        while not quit_.wait(max(0.0, deadline - time.monotonic())):
            poller.refresh(frame)
            live.update(_render(frame, console.width, console.height), refresh=True)
            deadline += frame.interval
            if deadline < time.monotonic():  # a slow scrape: start the beat again
                deadline = time.monotonic() + frame.interval


# -- the command -------------------------------------------------------------------------
def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        fail(f"--interval must be a number of seconds > 0 (e.g. 1 or 0.5), got {value!r}", 2)
    return seconds


@app.command("top")
def top(
    url: str = typer.Option(
        None, "--url", help=f"Metrics endpoint to watch (default ${ENV_METRICS_URL} or "
        f"{DEFAULT_METRICS_URL}).",
    ),
    interval: str = typer.Option(
        "1", "--interval", metavar="SECONDS", help="Seconds between refreshes (a number > 0).",
    ),
    namespace: str = typer.Option(None, "--namespace", help="Metric name prefix to read."),
) -> None:
    """Watch a running tinyllm metrics endpoint live: totals and one row per model.

    Rates and quantiles are over the time between two refreshes; q or Ctrl-C quits.
    """
    from tinyllm.metrics.stats import StatsUnavailable

    try:
        ns = metrics_namespace(namespace)
    except ValueError as exc:
        fail(str(exc), 2)
    seconds = _interval(interval)
    source = metrics_url(url)
    # A scrape must not hold the view (and the q key) much longer than a refresh.
    poller = _Poller(source, ns, timeout=min(5.0, max(1.0, seconds)))
    frame = _Frame(source, seconds)
    try:
        try:
            poller.scrape(frame)
        except StatsUnavailable as exc:
            fail(f"{exc} {_HINT}")
        except ValueError as exc:
            fail(f"{source} did not return a Prometheus exposition: {exc}")
        except Exception as exc:  # e.g. the connection cut mid-answer
            fail(f"cannot read {source}: {type(exc).__name__}: {exc} {_HINT}")
        _watch(poller, frame)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a user leaves: exit 0
