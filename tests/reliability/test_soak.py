"""The soak: ``tinyllm serve`` under steady mixed traffic, watched for what grows.

A fast fake OpenAI upstream on loopback (the gateway benchmark's, ``--upstream``), the
gateway in a process of its own with every sink on (metrics, the request log line, the
store on SQLite), and an open-loop client sending ``rate`` requests a second, half of
them streamed (20 chunks and usage). Measured: 5xx answers (goal zero); the gateway's
own overhead at p50 and p99 (goals < 5 ms and < 25 ms), read exactly from the bucket
counts of ``tinyllm_gateway_overhead_seconds`` (5 ms and 25 ms are bucket bounds); the
gateway's resident memory, file descriptors and threads, sampled every few seconds after
a warm-up (RSS drift < 10 %, threads flat; descriptors within the connection pools
bound while the load runs, and no climb: the run's last quarter against its first).

``make soak`` runs it for 30 minutes at 200 req/s (``TINYLLM_SOAK_SECONDS``,
``TINYLLM_SOAK_RATE`` change that); ``make test`` runs a 20-second version at 100 req/s
so the harness itself is always proven.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.support.servers import free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO / "benchmarks" / "bench_gateway.py"
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}


@dataclass
class Gateway:
    url: str
    pid: int


@dataclass
class Usage:
    """One sample of the gateway process: resident memory (kB), descriptors, threads."""

    t: float
    rss_kb: int
    fds: int
    threads: int


@dataclass
class Run:
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    samples: list[Usage] = field(default_factory=list)
    sent: int = 0


def usage(pid: int) -> Usage:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return Usage(time.monotonic(), int(fields["VmRSS"].split()[0]),
                 len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"]))


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    up_port, port = free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"models:\n  - name: m\n    provider: openai\n"
                      f"    base_url: http://127.0.0.1:{up_port}/v1\n    model: up\n")
    env = {**os.environ, "TINYLLM_LOG_FORMAT": "json", "TINYLLM_LOG_LEVEL": "info"}
    upstream = subprocess.Popen([sys.executable, str(UPSTREAM), "--upstream", str(up_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served = subprocess.Popen(
        [sys.executable, "-m", "tinyllm", "serve", "--config", str(config), "--port", str(port),
         "--db", str(tmp_path / "store.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, served, timeout=60)
        yield Gateway(url, served.pid)
    finally:
        for proc in (served, upstream):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def drive(url: str, pid: int, seconds: float, rate: float, sample_every: float) -> Run:
    """Send ``rate`` requests a second for ``seconds`` (open loop: a slow answer does not
    slow the sending), half streamed; sample the gateway's usage as it goes."""
    run = Run()
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(streamed: bool) -> None:
            try:
                async with session.post(f"{url}/v1/chat/completions",
                                        json={**BODY, "stream": streamed}) as response:
                    await response.read()
                    run.statuses[response.status] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                run.failures[type(exc).__name__] += 1

        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        next_sample = start
        while (now := time.monotonic()) - start < seconds:
            if now >= next_sample:
                run.samples.append(usage(pid))
                next_sample += sample_every
            due = int((now - start) * rate) + 1
            while run.sent < due:
                task = asyncio.create_task(one(streamed=run.sent % 2 == 1))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                run.sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        run.samples.append(usage(pid))
    return run


def overhead_share(url: str, bound: str) -> float:
    """The share of timed answers whose overhead was at most ``bound`` seconds (a bucket
    bound of tinyllm_gateway_overhead_seconds: exact, no interpolation)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    within = total = 0.0
    for line in text.splitlines():
        if line.startswith("tinyllm_gateway_overhead_seconds_bucket{"):
            value = float(line.rsplit(" ", 1)[1])
            if f'le="{bound}"' in line:
                within += value
            elif 'le="+Inf"' in line:
                total += value
    assert total > 0, "no gateway overhead observed"
    return within / total


#: Connections the load may hold open at once: the client's pool (64) and the gateway's
#: to the upstream (as many again): descriptors may rise by that much while the load
#: runs (a leak goes past it, or climbs: see CLIMB_CHECKED_AFTER).
CONNECTIONS = 2 * 64

#: The climb rule needs a run long enough for the pools to have settled: in 20 seconds
#: one late burst grows them for the last quarter (seen in CI: +14). A short run's leak
#: check is the peak: one descriptor lost per request would be thousands above idle.
CLIMB_CHECKED_AFTER = 300.0


def soak(gateway: Gateway, figure: Callable[..., None], seconds: float, rate: float) -> None:
    warmup = max(5.0, seconds * 0.1)
    idle = usage(gateway.pid)  # before the load: what the descriptors must come back to
    run = asyncio.run(drive(gateway.url, gateway.pid, seconds, rate,
                            sample_every=max(1.0, seconds / 120)))

    answered = sum(run.statuses.values())
    errors_5xx = sum(n for status, n in run.statuses.items() if status >= 500)
    within_5ms, within_25ms = (overhead_share(gateway.url, b) for b in ("0.005", "0.025"))
    p50_ok, p99_ok = within_5ms >= 0.50, within_25ms >= 0.99
    settled = [s for s in run.samples if s.t - run.samples[0].t >= warmup]
    base, last = settled[0], settled[-1]
    drift = (last.rss_kb - base.rss_kb) / base.rss_kb
    peak = max(s.fds for s in settled) - idle.fds
    # A leak climbs with time; a pool rises and falls with the load: the descriptors of
    # the run's last quarter against its first (medians, past the warm-up).
    quarter = max(1, len(settled) // 4)
    fds = int(statistics.median(s.fds for s in settled[-quarter:])
              - statistics.median(s.fds for s in settled[:quarter]))
    climb_checked = settled[-1].t - settled[0].t >= CLIMB_CHECKED_AFTER
    flat = fds <= 8 or not climb_checked
    threads = max(s.threads for s in settled) - base.threads
    label = f"{seconds:g} s at {rate:g} req/s"
    figure(f"soak {label}: answered / sent", f"{answered}/{run.sent}", "all", answered == run.sent)
    figure(f"soak {label}: 5xx answers", str(errors_5xx), "0", errors_5xx == 0)
    figure(f"soak {label}: overhead <= 5 ms", f"{within_5ms:.2%}", ">= 50 % (p50)", p50_ok)
    figure(f"soak {label}: overhead <= 25 ms", f"{within_25ms:.2%}", ">= 99 % (p99)", p99_ok)
    figure(f"soak {label}: RSS drift after warm-up", f"{drift:+.1%}", "< 10 %", drift < 0.10)
    figure(f"soak {label}: descriptors at the peak, above idle", f"{peak:+d}",
           f"<= {CONNECTIONS} (the pools)", peak <= CONNECTIONS)
    figure(f"soak {label}: descriptors, last quarter against first", f"{fds:+d}",
           "flat (<= 8)" if climb_checked else "(info: run < 5 min)", flat)
    figure(f"soak {label}: threads above warm-up", f"{threads:+d}", "flat (0)", threads <= 0)
    assert not run.failures, run.failures
    assert answered == run.sent and errors_5xx == 0, run.statuses
    assert p50_ok and p99_ok
    assert drift < 0.10, (base, last)
    assert peak <= CONNECTIONS and flat and threads <= 0, (idle, settled)


def test_a_short_soak_proves_the_harness(gateway: Gateway, figure: Callable[..., None]) -> None:
    soak(gateway, figure, seconds=20, rate=100)


@pytest.mark.soak
@pytest.mark.timeout(0)
def test_the_soak(gateway: Gateway, figure: Callable[..., None]) -> None:
    soak(gateway, figure, seconds=float(os.environ.get("TINYLLM_SOAK_SECONDS", "1800")),
         rate=float(os.environ.get("TINYLLM_SOAK_RATE", "200")))
