"""`tinyllm cache-stats` as a user runs it: the installed script, a real Redis, real exits."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.e2e.test_cli_debug import assert_no_traceback, clean_env
from tests.support.servers import free_port
from tinyllm.cache import CachedResponse, RedisCache
from tinyllm.metrics import MetricsCollector

TINYLLM = str(Path(sys.executable).with_name("tinyllm"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TINYLLM, "cache-stats", *args], capture_output=True, text=True,
                          timeout=60, env=clean_env())


@pytest.fixture
def filled_prefix(collector: MetricsCollector) -> Iterator[str]:
    """A prefix in the real Redis holding 3 entries, 2 hits and 1 miss; deleted after."""
    prefix = f"tinyllm-cli-test:{uuid.uuid4().hex}:"
    cache = RedisCache(prefix=prefix, collector=collector)
    for key in "abc":
        cache.set(key, CachedResponse(text=key, model="m"))
    cache.get("a"), cache.get("b"), cache.get("missing")
    cache.close()
    yield prefix
    client = redis.Redis()
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_memory_prints_a_table_and_says_it_is_empty() -> None:
    result = run("--backend", "memory")
    assert result.returncode == 0, result.stderr
    for row in ("backend", "memory", "entries", "0 of 1,024", "ttl", "3600 s", "hits",
                "misses", "hit rate", "n/a"):
        assert row in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "empty" in lines[0]


def test_memory_json_is_one_object_on_stdout() -> None:
    result = run("--json")  # memory is the default backend
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {"cache_type": "memory", "entries": 0, "max_entries": 1024, "ttl": 3600.0,
                    "hits": 0, "misses": 0, "hit_rate": None, "errors": 0, "evictions": 0,
                    "expirations": 0}


def test_redis_json_reports_the_shared_counts(filled_prefix: str) -> None:
    result = run("--backend", "redis", "--redis-host", "127.0.0.1", "--redis-port", "6379",
                 "--redis-db", "0", "--prefix", filled_prefix, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert (data["entries"], data["hits"], data["misses"]) == (3, 2, 1)
    assert data["hit_rate"] == pytest.approx(2 / 3)
    assert data["address"] == "127.0.0.1:6379" and data["prefix"] == filled_prefix
    assert data["redis_version"] and data["used_memory_bytes"] > 0


def test_redis_table_as_in_seed_003(filled_prefix: str) -> None:
    result = run("--backend", "redis", "--redis-host", "localhost", "--prefix", filled_prefix)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in ("redis version", "redis memory used", "localhost:6379", "66.7 %"):
        assert row in out
    assert "entries" in out and " 3 " in out


def test_unreachable_redis_is_one_line_naming_host_and_port() -> None:
    port = free_port()
    result = run("--backend", "redis", "--redis-port", str(port))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: cannot reach Redis at 127.0.0.1:{port}: Connection refused"]
    assert_no_traceback(result)


def test_unknown_backend_is_a_usage_error_listing_the_valid_ones() -> None:
    result = run("--backend", "disk")
    assert result.returncode == 2
    assert "memory, redis" in result.stderr and "'disk'" in result.stderr
    assert result.stdout == ""
    assert_no_traceback(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redis-port", "6379"], "--redis-port only apply to --backend redis"),
        (["--backend", "redis", "--redis-port", "0"], "--redis-port must be from 1 to 65535"),
        (["--backend", "redis", "--redis-db", "-1"], "--redis-db must be >= 0"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert_no_traceback(result)
