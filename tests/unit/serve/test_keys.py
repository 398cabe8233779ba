"""API keys through the gateway, as the official SDK meets them: 401, 403, 429, and the
models a key may see; /metrics and /health stay open for scrapers and probes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.fault_server import FaultServer, Reply
from tinyllm.metrics import MetricsCollector
from tinyllm.serve.config import parse_config

from .conftest import gateway, sample
from .test_openai_api import MESSAGES, completion


@pytest.fixture
def keyed(upstream: FaultServer, default_collector: MetricsCollector) -> Iterator[str]:
    config = parse_config(f"""
models:
  - name: small
    provider: openai
    base_url: {upstream.url}/v1
  - name: big
    provider: openai
    base_url: {upstream.url}/v1
keys:
  - alias: team-a
    key_env: TEAM_A_KEY
    models: [small]
    rpm: 2
  - alias: team-b
    key_sha256: {hashlib.sha256(b"key-b").hexdigest()}
""", environ={"TEAM_A_KEY": "key-a"})
    with gateway(config) as url:
        yield url


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_no_key_or_a_wrong_one_is_401_before_anything_reaches_the_upstream(
    keyed: str, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    r = httpx.post(f"{keyed}/v1/chat/completions", json={"model": "small",
                                                          "messages": MESSAGES})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    with sdk(keyed, "key-wrong") as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="small", messages=MESSAGES)
    assert upstream.requests == 0
    assert sample(default_collector)("tinyllm_gateway_requests_total",
                                     route="/v1/chat/completions", status="401") == 2


def test_a_key_uses_its_models_and_sees_only_them(
    keyed: str, upstream: FaultServer,
) -> None:
    upstream.script(Reply(body=completion()), Reply(body=completion()))
    with sdk(keyed, "key-a") as a, sdk(keyed, "key-b") as b:
        assert a.chat.completions.create(model="small", messages=MESSAGES).choices
        with pytest.raises(openai.PermissionDeniedError, match="may use: small"):
            a.chat.completions.create(model="big", messages=MESSAGES)
        assert [m.id for m in a.models.list()] == ["small"]
        assert [m.id for m in b.models.list()] == ["small", "big"]
        with pytest.raises(openai.NotFoundError):
            a.models.retrieve("big")
        assert b.chat.completions.create(model="big", messages=MESSAGES).choices
    with pytest.raises(openai.AuthenticationError), sdk(keyed, "nope") as c:
        c.models.list()


def test_a_key_over_its_rate_gets_429_with_retry_after(
    keyed: str, upstream: FaultServer,
) -> None:
    upstream.script(Reply(body=completion()), Reply(body=completion()))
    with sdk(keyed, "key-a") as client:
        client.chat.completions.create(model="small", messages=MESSAGES)
        client.chat.completions.create(model="small", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="small", messages=MESSAGES)
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 30
    assert upstream.requests == 2


def test_scrapers_and_probes_need_no_key(keyed: str) -> None:
    assert httpx.get(f"{keyed}/metrics").status_code == 200
    assert httpx.get(f"{keyed}/health").status_code == 200
    assert httpx.get(f"{keyed}/ready").status_code == 200


def test_with_keys_the_store_needs_one(
    upstream: FaultServer, default_collector: MetricsCollector, tmp_path: object,
) -> None:
    from tinyllm.http.store import store_routes
    from tinyllm.store import MetricsDatabase

    config = parse_config(f"""
models:
  - name: small
    provider: openai
    base_url: {upstream.url}/v1
keys:
  - alias: team-b
    key_sha256: {hashlib.sha256(b"key-b").hexdigest()}
""")
    with MetricsDatabase(f"{tmp_path}/store.db", collector=default_collector) as db, \
            gateway(config, routes=store_routes(db)) as url:
        assert httpx.get(f"{url}/api/metrics").status_code == 401
        r = httpx.get(f"{url}/api/metrics", headers={"Authorization": "Bearer key-b"})
        assert r.status_code == 200 and "overall" in r.json()


def test_per_key_counters_under_the_alias_and_rejections_by_reason(
    keyed: str, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    upstream.script(Reply(body=completion()))
    with sdk(keyed, "key-a") as a:
        a.chat.completions.create(model="small", messages=MESSAGES)
        with pytest.raises(openai.PermissionDeniedError):
            a.chat.completions.create(model="big", messages=MESSAGES)
    with sdk(keyed, "wrong") as w, pytest.raises(openai.AuthenticationError):
        w.chat.completions.create(model="small", messages=MESSAGES)
    v = sample(default_collector)
    assert v("tinyllm_gateway_key_requests_total", key="team-a") == 1
    assert v("tinyllm_gateway_key_tokens_total", key="team-a", direction="input") == 9
    assert v("tinyllm_gateway_key_tokens_total", key="team-a", direction="output") == 2
    assert v("tinyllm_gateway_key_rejections_total", key="team-a",
             reason="model_not_allowed") == 1
    assert v("tinyllm_gateway_key_rejections_total", key="none", reason="invalid_key") == 1
    metrics = httpx.get(f"{keyed}/metrics").text
    assert "key-a" not in metrics and "key-b" not in metrics  # aliases only, never keys


def test_a_key_over_its_tokens_per_minute_waits_for_the_refill(
    upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    config = parse_config(f"""
models:
  - name: small
    provider: openai
    base_url: {upstream.url}/v1
keys:
  - alias: t
    key_sha256: '{hashlib.sha256(b"key-t").hexdigest()}'
    tpm: 10
""")
    upstream.script(Reply(body=completion()))  # 9 + 2 tokens: over the 10 a minute
    with gateway(config) as url, sdk(url, "key-t") as client:
        client.chat.completions.create(model="small", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError, match="tokens per minute"):
            client.chat.completions.create(model="small", messages=MESSAGES)
    assert upstream.requests == 1
    assert sample(default_collector)("tinyllm_gateway_key_rejections_total", key="t",
                                     reason="tpm") == 1


SHARED = """
models:
  - name: small
    provider: openai
    base_url: {url}/v1
keys:
  - alias: shared
    key_sha256: '{digest}'
    rpm: 3
"""


def _redis_clean(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for name in client.scan_iter("tinyllm:limits:*"):
        client.delete(name)
    client.close()


def test_two_instances_sharing_redis_enforce_one_limit(
    upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    # Real Redis (the set-up starts it at 127.0.0.1:6379): three requests a minute for
    # the key, whichever instance serves them.
    redis_url = "redis://127.0.0.1:6379/0"
    _redis_clean(redis_url)
    digest = hashlib.sha256(b"key-s").hexdigest()
    config = parse_config(SHARED.format(url=upstream.url, digest=digest))
    upstream.script(*(Reply(body=completion()) for _ in range(3)))
    try:
        with gateway(config, redis_url=redis_url) as one, \
                gateway(config, redis_url=redis_url) as two:
            answers = []
            for url in (one, two, one, two):
                with sdk(url, "key-s") as client:
                    try:
                        client.chat.completions.create(model="small", messages=MESSAGES)
                        answers.append(200)
                    except openai.RateLimitError:
                        answers.append(429)
        assert answers == [200, 200, 200, 429]
        assert upstream.requests == 3
    finally:
        _redis_clean(redis_url)


def test_redis_down_each_instance_limits_on_its_own_and_it_is_counted(
    upstream: FaultServer, default_collector: MetricsCollector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.support.servers import free_port

    digest = hashlib.sha256(b"key-s").hexdigest()
    config = parse_config(SHARED.format(url=upstream.url, digest=digest))
    upstream.script(*(Reply(body=completion()) for _ in range(3)))
    with gateway(config, redis_url=f"redis://127.0.0.1:{free_port()}/0") as url, \
            sdk(url, "key-s") as client:
        for _ in range(3):
            client.chat.completions.create(model="small", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="small", messages=MESSAGES)
    errors = sample(default_collector)("tinyllm_gateway_limit_backend_errors_total")
    assert errors >= 1
    assert caplog.text.count("each instance keeps its own limits") == 1
