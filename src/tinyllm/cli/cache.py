"""``tinyllm cache-stats``: what the response cache holds and how often it hits.

Example:
    $ tinyllm cache-stats --backend memory
    $ tinyllm cache-stats --backend redis --redis-host localhost --json
"""

from __future__ import annotations

import json
import math
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tinyllm.cli._app import app, check_choice, err_console, fail

__all__ = ["cache_stats"]

_BACKENDS = ("memory", "redis")
_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 6379


def _rate(value: float | None) -> str:
    return "n/a (no lookups yet)" if value is None else f"{value * 100:.1f} %"


def _ttl(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"


def _rows(stats: Any) -> list[tuple[str, str]]:
    rows = [("backend", str(stats["cache_type"]))]
    if stats["cache_type"] == "redis":
        rows += [
            ("address", str(stats["address"])),
            ("prefix", str(stats["prefix"])),
            ("redis version", str(stats["redis_version"])),
            ("redis memory used", f"{stats['used_memory_human']} "
                                  f"({stats['used_memory_bytes']:,} bytes)"),
            ("entries", f"{stats['entries']:,}"),
        ]
    else:
        rows.append(("entries", f"{stats['entries']:,} of {stats['max_entries']:,}"))
    rows += [
        ("ttl", _ttl(stats["ttl"])),
        ("hits", f"{stats['hits']:,}"),
        ("misses", f"{stats['misses']:,}"),
        ("hit rate", _rate(stats["hit_rate"])),
    ]
    for name in ("evictions", "expirations"):
        if name in stats:
            rows.append((name, f"{stats[name]:,}"))
    return rows


def _memory_stats() -> Any:
    from tinyllm.cache import MemoryCache, get_response_cache

    cache = get_response_cache()
    if not isinstance(cache, MemoryCache):  # configured otherwise in this process
        cache = MemoryCache()
    stats = cache.stats()
    if stats["entries"] == 0 and stats["hits"] + stats["misses"] == 0:
        err_console.print(
            "note: a memory cache lives inside the process that uses it; this new process's "
            "cache is empty (use --backend redis for a cache shared across processes)",
            soft_wrap=True,
        )
    return stats


def _redis_stats(host: str, port: int, db: int, prefix: str, timeout: float) -> Any:
    from tinyllm.cache import CacheUnavailableError

    try:
        from tinyllm.cache import RedisCache

        cache = RedisCache(host=host, port=port, db=db, prefix=prefix, socket_timeout=timeout,
                           retry_interval=0)
    except ImportError as exc:
        fail(str(exc))
    try:
        return cache.stats()
    except CacheUnavailableError as exc:
        fail(str(exc))
    finally:
        cache.close()


@app.command("cache-stats")
def cache_stats(
    backend: str = typer.Option(
        "memory", "--backend", metavar="BACKEND",
        help="memory (this process's cache) or redis (the cache shared through Redis).",
    ),
    redis_host: str | None = typer.Option(
        None, "--redis-host", metavar="HOST", help=f"Redis host (default {_DEFAULT_HOST})."),
    redis_port: int | None = typer.Option(
        None, "--redis-port", metavar="PORT", help=f"Redis port (default {_DEFAULT_PORT})."),
    redis_db: int | None = typer.Option(None, "--redis-db", metavar="N",
                                 help="Redis database number (default 0)."),
    prefix: str = typer.Option(
        "tinyllm:cache:", "--prefix", help="Key prefix the cache was configured with (redis)."),
    timeout: float = typer.Option(2.0, "--timeout", help="Seconds to wait for Redis."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Print the response cache's entries, hits, misses and hit rate.

    For redis also the Redis memory used and version; the hits and misses there are
    shared by every process using the cache. Exit 1 when Redis cannot be reached.
    """
    chosen = check_choice("--backend", backend, _BACKENDS)
    redis_options = {"--redis-host": redis_host, "--redis-port": redis_port,
                     "--redis-db": redis_db}
    if chosen == "memory":
        given = [name for name, value in redis_options.items() if value is not None]
        if given:
            fail(f"{', '.join(given)} only apply to --backend redis", 2)
        stats = _memory_stats()
    else:
        if redis_port is not None and not 0 < redis_port < 65536:
            fail(f"--redis-port must be from 1 to 65535, got {redis_port}", 2)
        if redis_db is not None and redis_db < 0:
            fail(f"--redis-db must be >= 0, got {redis_db}", 2)
        if not (math.isfinite(timeout) and timeout > 0):
            fail(f"--timeout must be a positive number of seconds, got {timeout:g}", 2)
        if not prefix:
            fail("--prefix must not be empty", 2)
        host = (redis_host or "").strip() or _DEFAULT_HOST
        stats = _redis_stats(host, redis_port or _DEFAULT_PORT, redis_db or 0, prefix, timeout)
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
        return
    table = Table(title=f"tinyllm cache-stats ({chosen})", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in _rows(stats):
        table.add_row(Text(name), Text(value))
    Console().print(table)
