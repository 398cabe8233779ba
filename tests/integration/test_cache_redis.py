"""``RedisCache`` against real Redis servers: the shared one at 127.0.0.1:6379, and ones
this module starts and kills itself to play an outage.

Each test writes under a prefix of its own and deletes its keys afterwards. A Redis
that is not running at 127.0.0.1:6379 is a failure, not a skip (scripts/ensure-services.sh
starts one).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from tests.support.servers import free_port

from tinyllm.cache import CachedResponse, CacheUnavailableError, RedisCache
from tinyllm.logging import capture_logs
from tinyllm.metrics import MetricsCollector

pytestmark = pytest.mark.integration

ENSURE = "scripts/ensure-services.sh"
SHARED_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def response(text: str) -> CachedResponse:
    return CachedResponse(text=text, model="m", input_tokens=3, output_tokens=1,
                          finish_reason="stop", created=1.0)


def errors(registry: CollectorRegistry, operation: str) -> float:
    labels = {"cache_type": "redis", "operation": operation}
    return registry.get_sample_value("tinyllm_cache_errors_total", labels) or 0.0


def counter(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(f"tinyllm_cache_{name}_total", {"cache_type": "redis"}) or 0.0


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == name]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(SHARED_URL, socket_timeout=5)
    try:
        conn.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at 127.0.0.1:6379 ({exc}); run {ENSURE}",
                    pytrace=False)
    yield conn
    conn.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own (with glob characters, to keep SCAN honest)."""
    name = f"tinyllm-test:{uuid.uuid4().hex}:[x]*?"
    yield name
    escaped = "".join("\\" + c if c in "\\*?[]" else c for c in name)
    keys = list(client.scan_iter(match=escaped + "*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def make(collector: MetricsCollector, prefix: str) -> Iterator[Any]:
    made: list[RedisCache] = []

    def build(**kwargs: Any) -> RedisCache:
        options: dict[str, Any] = {"collector": collector, "prefix": prefix}
        if not {"host", "port", "db"} & kwargs.keys():
            options["url"] = SHARED_URL
        cache = RedisCache(**{**options, **kwargs})
        made.append(cache)
        return cache

    yield build
    for cache in made:
        cache.close()


class RedisProcess:
    """A redis-server of the test's own on a free port, nothing kept on disk."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                probe.ping()
                break
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)
            finally:
                probe.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.kill()


# -- a working Redis ----------------------------------------------------------------------


def test_set_then_get_round_trips(make: Any, registry: CollectorRegistry) -> None:
    cache = make()
    assert cache.get("k") is None
    cache.set("k", response("4"))
    assert cache.get("k") == response("4")
    assert (counter(registry, "hits"), counter(registry, "misses")) == (1, 1)
    assert errors(registry, "get") == 0


def test_entries_are_json_with_the_ttl(make: Any, client: redis.Redis, prefix: str) -> None:
    make(ttl=120).set("a", response("a"))
    make(ttl=None).set("b", response("b"))
    assert client.get(f"{prefix}entry:a") == (
        b'{"text":"a","model":"m","input_tokens":3,"output_tokens":1,'
        b'"finish_reason":"stop","created":1.0}')
    assert 0 < client.pttl(f"{prefix}entry:a") <= 120_000
    assert client.pttl(f"{prefix}entry:b") == -1  # no expiry


def test_entries_expire_in_redis(make: Any) -> None:
    cache = make(ttl=0.05)
    cache.set("k", response("4"))
    deadline = time.monotonic() + 10
    while cache.get("k") is not None:  # Redis expires it; we only wait for that to happen
        assert time.monotonic() < deadline, "the entry never expired"
        time.sleep(0.02)


def test_stats_are_shared_by_every_process(make: Any, client: redis.Redis, prefix: str) -> None:
    one, two = make(), make()
    one.set("a", response("a"))
    two.set("b", response("b"))
    assert two.get("a") is not None and one.get("b") is not None and one.get("c") is None
    client.set(f"{prefix}unrelated", b"x")  # under the prefix, but not an entry
    make(prefix=prefix + "other:").set("z", response("z"))  # another cache's: not counted
    stats = one.stats()
    assert (stats["entries"], stats["hits"], stats["misses"]) == (2, 2, 1)
    assert stats["hit_rate"] == 2 / 3
    assert stats["cache_type"] == "redis" and stats["prefix"] == prefix
    assert stats["address"] == "127.0.0.1:6379" and stats["ttl"] == 3600.0
    assert stats["redis_version"].count(".") >= 1 and stats["used_memory_bytes"] > 0
    assert stats["max_entries"] is None


def test_clear_deletes_entries_and_keeps_the_counts(make: Any) -> None:
    cache = make()
    for key in "abc":
        cache.set(key, response(key))
    cache.get("a")
    cache.clear()
    assert cache.get("a") is None
    stats = cache.stats()
    assert (stats["entries"], stats["hits"], stats["misses"]) == (0, 1, 1)


def test_a_corrupt_entry_is_dropped_counted_and_logged_once(
    make: Any, client: redis.Redis, prefix: str, registry: CollectorRegistry
) -> None:
    cache = make()
    client.set(f"{prefix}entry:bad", b"{not json")
    client.set(f"{prefix}entry:worse", b'{"text": 5}')
    with capture_logs() as logs:
        assert cache.get("bad") is None
        assert cache.get("worse") is None
    assert len(events(logs, "redis_cache_bad_entry")) == 1
    assert errors(registry, "get") == 2
    assert client.exists(f"{prefix}entry:bad", f"{prefix}entry:worse") == 0


# -- outages ------------------------------------------------------------------------------


def test_a_closed_port_degrades_to_no_cache(make: Any, registry: CollectorRegistry) -> None:
    port = free_port()
    cache = make(host="127.0.0.1", port=port, retry_interval=0)
    with capture_logs() as logs:
        for _ in range(3):
            assert cache.get("k") is None
            cache.set("k", response("4"))
    assert errors(registry, "get") == 3 and errors(registry, "set") == 3
    assert counter(registry, "misses") == 0  # an outage is not a miss
    warned = events(logs, "redis_cache_unavailable")
    assert len(warned) == 1
    assert warned[0]["level"] == "warning" and warned[0]["address"] == f"127.0.0.1:{port}"
    assert warned[0]["error"] == "Connection refused"
    with pytest.raises(CacheUnavailableError,
                       match=f"^cannot reach Redis at 127.0.0.1:{port}: Connection refused$"):
        cache.stats()
    with pytest.raises(CacheUnavailableError):
        cache.clear()
    assert errors(registry, "stats") == 1 and errors(registry, "clear") == 1


def test_redis_killed_mid_run_then_restarted(make: Any, own_redis: RedisProcess,
                                             registry: CollectorRegistry) -> None:
    clock = FakeClock()
    cache = make(host="127.0.0.1", port=own_redis.port, retry_interval=5, clock=clock)
    cache.set("k", response("before"))
    assert cache.get("k") == response("before")

    with capture_logs() as logs:
        own_redis.kill()
        assert cache.get("k") is None  # the pooled connection is dead: no cache, no error
        cache.set("k", response("during"))  # skipped: within the retry interval
        assert cache.get("k") is None
        clock.now += 5
        assert cache.get("k") is None  # tried again, still down: counted, not logged
        assert errors(registry, "get") == 3 and errors(registry, "set") == 1
        assert len(events(logs, "redis_cache_unavailable")) == 1

        own_redis.start()  # same port, empty (nothing was kept on disk)
        assert cache.get("k") is None  # still inside the retry interval: not asked
        assert errors(registry, "get") == 4
        assert not events(logs, "redis_cache_recovered")
        clock.now += 5
        assert cache.get("k") is None  # asked: a real miss, and the recovery is logged
        cache.set("k", response("after"))
        assert cache.get("k") == response("after")
    recovered = events(logs, "redis_cache_recovered")
    assert len(recovered) == 1 and recovered[0]["address"] == f"127.0.0.1:{own_redis.port}"
    assert len(events(logs, "redis_cache_unavailable")) == 1
    assert errors(registry, "get") == 4 and errors(registry, "set") == 1
    assert (counter(registry, "hits"), counter(registry, "misses")) == (2, 1)
    assert cache.stats()["errors"] == 5


def test_a_second_outage_is_logged_again(make: Any, own_redis: RedisProcess) -> None:
    clock = FakeClock()
    cache = make(host="127.0.0.1", port=own_redis.port, retry_interval=1, clock=clock)
    with capture_logs() as logs:
        for _ in range(2):
            own_redis.kill()
            cache.get("k")
            own_redis.start()
            clock.now += 1
            cache.get("k")
    assert len(events(logs, "redis_cache_unavailable")) == 2
    assert len(events(logs, "redis_cache_recovered")) == 2


def test_bad_arguments_are_named(collector: MetricsCollector) -> None:
    with pytest.raises(ValueError, match="url or host/port/db"):
        RedisCache("redis://h:1/0", port=2, collector=collector)
    with pytest.raises(ValueError, match="url must start with"):
        RedisCache("http://h:1", collector=collector)
    with pytest.raises(ValueError, match="port"):
        RedisCache(port=70000, collector=collector)
    with pytest.raises(ValueError, match="db"):
        RedisCache(db=-1, collector=collector)
    with pytest.raises(ValueError, match="socket_timeout"):
        RedisCache(socket_timeout=0, collector=collector)
    with pytest.raises(ValueError, match="prefix"):
        RedisCache(prefix="", collector=collector)
    with pytest.raises(TypeError, match="ttl"):
        RedisCache(ttl="1h", collector=collector)  # type: ignore[arg-type]
