"""Response cache for deterministic model calls: in memory, or shared through Redis.

Only non-streamed calls at temperature 0 are cached (``is_cacheable``); the key is a
sha256 of the provider, the model and every request parameter (``cache_key``). Hits and
misses feed ``tinyllm_cache_hits_total`` / ``tinyllm_cache_misses_total``; a Redis outage
makes the cache miss, never the request fail (see docs/cache-and-queue.md).

Example:
    >>> from tinyllm.cache import CachedResponse, cache_key, get_response_cache, is_cacheable
    >>> params = {"prompt": "What is 2+2?", "temperature": 0}
    >>> cache = get_response_cache()
    >>> key = cache_key("local", "gemma-3-270m", params)
    >>> if is_cacheable(params) and cache.get(key) is None:
    ...     cache.set(key, CachedResponse(text="4", model="gemma-3-270m"))
    >>> cache.get(key).text
    '4'
"""

from tinyllm.cache._base import (
    CachedResponse,
    CacheStats,
    CacheUnavailableError,
    NullCache,
    ResponseCache,
)
from tinyllm.cache._config import (
    BACKENDS,
    configure_cache,
    get_response_cache,
    make_cache,
    reset_cache,
)
from tinyllm.cache._keys import cache_key, is_cacheable
from tinyllm.cache.memory import MemoryCache
from tinyllm.cache.redis import RedisCache

__all__ = [
    "BACKENDS",
    "CacheStats",
    "CacheUnavailableError",
    "CachedResponse",
    "MemoryCache",
    "NullCache",
    "RedisCache",
    "ResponseCache",
    "cache_key",
    "configure_cache",
    "get_response_cache",
    "is_cacheable",
    "make_cache",
    "reset_cache",
]
