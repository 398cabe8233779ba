"""The cache's rules and wiring: keys, cacheability, the cached value, backends by name."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyllm.cache as cache_pkg
from tinyllm.cache import (
    CachedResponse,
    CacheUnavailableError,
    MemoryCache,
    NullCache,
    RedisCache,
    ResponseCache,
    cache_key,
    configure_cache,
    get_response_cache,
    is_cacheable,
    make_cache,
    reset_cache,
)
from tinyllm.errors import TinyLLMError
from tinyllm.metrics import MetricsCollector

BASE: dict[str, Any] = {
    "prompt": "What is 2+2?",
    "system": "Answer briefly.",
    "temperature": 0,
    "top_p": 1.0,
    "max_tokens": 16,
    "stop": ["\n"],
    "seed": 7,
}


@pytest.fixture(autouse=True)
def _fresh_global_cache() -> Any:
    reset_cache()
    yield
    reset_cache()


# -- cache_key ------------------------------------------------------------------------


def test_key_is_sha256_hex() -> None:
    key = cache_key("ollama", "gemma3:270m", BASE)
    assert len(key) == 64 and int(key, 16) >= 0


def test_key_ignores_parameter_order() -> None:
    reordered = dict(reversed(list(BASE.items())))
    assert list(reordered) != list(BASE)
    assert cache_key("ollama", "m", reordered) == cache_key("ollama", "m", BASE)


def test_key_ignores_order_inside_nested_mappings_but_not_lists() -> None:
    a = {"messages": [{"role": "user", "content": "hi"}], "options": {"a": 1, "b": 2}}
    b = {"messages": [{"content": "hi", "role": "user"}], "options": {"b": 2, "a": 1}}
    assert cache_key("p", "m", a) == cache_key("p", "m", b)
    two = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    assert cache_key("p", "m", {"messages": two}) != cache_key(
        "p", "m", {"messages": list(reversed(two))})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("prompt", "What is 3+3?"),
        ("system", "Answer at length."),
        ("temperature", 0.5),
        ("top_p", 0.9),
        ("max_tokens", 17),
        ("stop", ["\n\n"]),
        ("seed", 8),
        ("stream", False),  # a new parameter is a change too
    ],
)
def test_any_parameter_change_changes_the_key(name: str, value: Any) -> None:
    assert cache_key("ollama", "m", {**BASE, name: value}) != cache_key("ollama", "m", BASE)


def test_provider_and_model_are_part_of_the_key() -> None:
    key = cache_key("ollama", "m", BASE)
    assert cache_key("openai", "m", BASE) != key
    assert cache_key("ollama", "m2", BASE) != key


def test_equal_values_written_differently_share_a_key() -> None:
    assert cache_key("p", "m", {"temperature": 0}) == cache_key("p", "m", {"temperature": 0.0})
    assert cache_key("p", "m", {"stop": ("a",)}) == cache_key("p", "m", {"stop": ["a"]})
    # None is "not given": the backend's default either way.
    assert cache_key("p", "m", {"prompt": "x", "stop": None}) == cache_key(
        "p", "m", {"prompt": "x"})
    # ... but True is not 1.
    assert cache_key("p", "m", {"echo": True}) != cache_key("p", "m", {"echo": 1})


@given(st.dictionaries(st.text(max_size=8), st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.booleans()), max_size=6))
def test_key_is_a_function_of_content_not_order(params: dict[str, Any]) -> None:
    shuffled = dict(sorted(params.items(), reverse=True))
    assert cache_key("p", "m", shuffled) == cache_key("p", "m", params)


@pytest.mark.parametrize(
    ("args", "error", "names"),
    [
        (("", "m", {}), TypeError, "provider"),
        (("p", None, {}), TypeError, "model"),
        (("p", "m", [("prompt", "x")]), TypeError, "request"),
        (("p", "m", {"x": object()}), TypeError, "request['x']"),
        (("p", "m", {"o": {1: "a"}}), TypeError, "request['o'] keys"),
        (("p", "m", {"temperature": math.nan}), ValueError, "request['temperature']"),
    ],
)
def test_key_rejects_bad_arguments_by_name(args: tuple[Any, ...], error: type[Exception],
                                           names: str) -> None:
    with pytest.raises(error, match=names.replace("[", r"\[")):
        cache_key(*args)


# -- is_cacheable ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"prompt": "x", "temperature": 0}, True),
        ({"prompt": "x", "temperature": 0.0}, True),
        ({"prompt": "x", "options": {"temperature": 0}}, True),  # Ollama's shape
        ({"prompt": "x"}, False),  # the backend's default temperature samples
        ({"prompt": "x", "temperature": None}, False),
        ({"prompt": "x", "temperature": 0.01}, False),
        ({"prompt": "x", "temperature": 1}, False),
        ({"prompt": "x", "temperature": 0, "stream": True}, False),
        ({"prompt": "x", "temperature": 0, "stream": False}, True),
    ],
)
def test_only_temperature_zero_non_streamed_calls_are_cacheable(
    params: dict[str, Any], expected: bool
) -> None:
    assert is_cacheable(params) is expected


@pytest.mark.parametrize("bad", ["0", True, [0]])
def test_is_cacheable_rejects_a_non_number_temperature(bad: Any) -> None:
    with pytest.raises(TypeError, match="temperature"):
        is_cacheable({"temperature": bad})


def test_is_cacheable_rejects_non_mappings() -> None:
    with pytest.raises(TypeError, match="params"):
        is_cacheable([("temperature", 0)])  # type: ignore[arg-type]


# -- CachedResponse -------------------------------------------------------------------


def test_cached_response_round_trips_through_json() -> None:
    value = CachedResponse(text="4", model="m", input_tokens=9, output_tokens=1,
                           finish_reason="stop", created=1700000000.5)
    assert CachedResponse.from_dict(json.loads(json.dumps(value.to_dict()))) == value


def test_cached_response_from_dict_ignores_unknown_keys_and_fills_defaults() -> None:
    value = CachedResponse.from_dict({"text": "t", "model": "m", "future_field": 1})
    assert (value.input_tokens, value.output_tokens, value.finish_reason) == (None, None, None)


@pytest.mark.parametrize(
    "data", [None, [], {"text": "t"}, {"text": 1, "model": "m"},
             {"text": "t", "model": "m", "input_tokens": "3"}],
)
def test_cached_response_from_dict_rejects_malformed_data(data: Any) -> None:
    with pytest.raises(ValueError):
        CachedResponse.from_dict(data)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"text": None}, TypeError, "text"),
        ({"input_tokens": -1}, ValueError, "input_tokens"),
        ({"output_tokens": 1.5}, TypeError, "output_tokens"),
        ({"output_tokens": True}, TypeError, "output_tokens"),
        ({"created": math.inf}, ValueError, "created"),
    ],
)
def test_cached_response_checks_its_fields(kwargs: dict[str, Any], error: type[Exception],
                                           name: str) -> None:
    with pytest.raises(error, match=name):
        CachedResponse(**{"text": "t", "model": "m", **kwargs})


def test_cached_response_is_frozen() -> None:
    value = CachedResponse(text="t", model="m")
    with pytest.raises(AttributeError):
        value.text = "other"  # type: ignore[misc]


# -- backends by name, and the process-wide cache -------------------------------------


def test_make_cache_builds_each_backend(collector: MetricsCollector) -> None:
    memory = make_cache("memory", max_entries=3, ttl=None, collector=collector)
    assert isinstance(memory, MemoryCache) and memory.max_entries == 3
    redis = make_cache("Redis", port=6390, collector=collector)
    assert isinstance(redis, RedisCache) and redis.address == "127.0.0.1:6390"
    assert isinstance(make_cache("none"), NullCache)


def test_make_cache_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="memory, redis"):
        make_cache("disk")
    with pytest.raises(TypeError, match="backend"):
        make_cache(None)  # type: ignore[arg-type]


def test_every_backend_is_a_response_cache(collector: MetricsCollector) -> None:
    for cache in (MemoryCache(collector=collector), RedisCache(collector=collector),
                  NullCache()):
        assert isinstance(cache, ResponseCache)


def test_process_wide_cache_defaults_to_memory_and_can_be_replaced(
    collector: MetricsCollector,
) -> None:
    default = get_response_cache()
    assert isinstance(default, MemoryCache) and get_response_cache() is default
    configured = configure_cache("memory", max_entries=5, collector=collector)
    assert get_response_cache() is configured is not default
    mine = MemoryCache(collector=collector)
    assert configure_cache(mine) is mine and get_response_cache() is mine
    with pytest.raises(TypeError, match="options"):
        configure_cache(mine, ttl=3)  # type: ignore[arg-type]
    assert configure_cache("none").cache_type == "none"
    reset_cache()
    assert isinstance(get_response_cache(), MemoryCache)


def test_null_cache_never_hits_and_counts_nothing(collector: MetricsCollector) -> None:
    cache = NullCache()
    cache.set("k", CachedResponse(text="t", model="m"))
    assert cache.get("k") is None
    assert cache.stats()["hits"] == cache.stats()["misses"] == 0
    assert collector.registry.get_sample_value(
        "tinyllm_cache_misses_total", {"cache_type": "none"}) is None


def test_cache_unavailable_is_a_tinyllm_error() -> None:
    assert issubclass(CacheUnavailableError, TinyLLMError)


def test_facade_all_is_sorted_and_complete() -> None:
    names = cache_pkg.__all__
    kind = [(0 if n.isupper() else 1 if n[0].isupper() else 2, n) for n in names]
    assert kind == sorted(kind)
    assert all(hasattr(cache_pkg, n) for n in names)
