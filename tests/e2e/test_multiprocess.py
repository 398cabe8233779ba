"""Multi-worker correctness: 4 processes, one endpoint, exact totals.

Each worker runs with PROMETHEUS_MULTIPROC_DIR set (as gunicorn/uvicorn workers would),
records a known workload, and holds one request open. `tinyllm metrics` in a fifth
process serves the aggregate; counters and histograms must sum exactly, the livesum
gauge must count only live workers, and max/mostrecent gauges must aggregate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_cli_metrics import start_server
from tests.support.servers import free_port

WORKERS, REQUESTS, TOKENS = 4, 250, 8

WORKER = textwrap.dedent(
    f"""
    import sys
    from tinyllm.metrics import InferenceContext, get_metrics_collector
    from tinyllm.lifecycle import get_lifecycle

    worker = int(sys.argv[1])
    metrics = get_metrics_collector()
    lifecycle = get_lifecycle()
    for i in range({REQUESTS}):
        with lifecycle.start("gemma", "default", "stream") as req:
            for _ in range({TOKENS}):
                req.token()
        metrics.increment_cache_hit(cache_type="memory")
    metrics.update_circuit_breaker_state("open" if worker == 0 else "closed", model="gemma")
    ctx = InferenceContext(model="gemma").__enter__()   # one request left in flight
    print("ready", flush=True)
    sys.stdin.readline()
    ctx.__exit__(None, None, None)
    """
)


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def get(all_samples: dict, name: str, **labels: str) -> float | None:  # type: ignore[type-arg]
    return all_samples.get((name, tuple(sorted(labels.items()))))


def test_four_workers_aggregate_exactly(tmp_path: Path) -> None:
    from prometheus_client import multiprocess

    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = [
        subprocess.Popen([sys.executable, str(script), str(i)], env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for i in range(WORKERS)
    ]
    port = free_port()
    server = None
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        server = start_server(port, env={"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)})
        url = f"http://127.0.0.1:{port}/metrics"
        live = samples(url)
        mg = {"model": "gemma", "graph": "default"}
        n = WORKERS * REQUESTS
        assert get(live, "tinyllm_requests_total", request_type="stream", **mg) == n
        assert get(live, "tinyllm_tokens_generated_total", model="gemma") == n * TOKENS
        assert get(live, "tinyllm_inference_inter_token_latency_seconds_count",
                   model="gemma") == n * (TOKENS - 1)
        assert get(live, "tinyllm_inference_ttft_seconds_count", model="gemma") == n
        assert get(live, "tinyllm_cache_hits_total", cache_type="memory") == n
        assert get(live, "tinyllm_active_requests", **mg) == WORKERS  # livesum
        assert get(live, "tinyllm_circuit_breaker_state", model="gemma") == 2  # max
        assert get(live, "tinyllm_tokens_per_request_bucket", model="gemma", le="10.0") == n
        # The dashboard samples the same aggregate (its restricted read must find the
        # workers' files, which describe no names up front).
        base = url.removesuffix("/metrics")
        deadline = time.monotonic() + 10
        while (totals := httpx.get(f"{base}/dashboard/data").json()["totals"])[
                "requests"] < n and time.monotonic() < deadline:
            time.sleep(0.2)
        # a request is counted when it starts: the one each worker holds open too
        assert totals == {"requests": n + WORKERS, "errors": 0.0, "error_rate": 0.0}

        for w in workers:
            assert w.stdin is not None
            w.stdin.write("\n")
            w.stdin.close()
            assert w.wait(timeout=30) == 0
            multiprocess.mark_process_dead(w.pid, str(mp_dir))  # what a worker hook does
        done = samples(url)
        # dead workers' live gauges are gone, so the series is 0 or absent
        assert (get(done, "tinyllm_active_requests", **mg) or 0) == 0
        assert get(done, "tinyllm_requests_total", request_type="generate", **mg) == WORKERS
        assert get(done, "tinyllm_inference_requests_total", model="gemma",
                   status="success") == n + WORKERS
    finally:
        for w in workers:
            w.kill()
        if server is not None:
            server.terminate()
            server.communicate(timeout=15)
