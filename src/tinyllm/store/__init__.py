"""The performance-event store: SQLite or PostgreSQL, summary, exports, and (from
``tinyllm.http``) its HTTP routes.

Example:
    >>> import tempfile, os
    >>> from tinyllm.store import MetricsDatabase
    >>> with MetricsDatabase(os.path.join(tempfile.mkdtemp(), "metrics.db")) as db:
    ...     db.record_event("diffusion_generate", 1.5, model_id="dream",
    ...                     metadata={"token_count": 25, "success": True})
    ...     _ = db.flush()
    ...     db.get_summary()["overall"]["total_requests"]
    1
"""

import typing

from tinyllm.store.config import close_store, configure_store, get_store
from tinyllm.store.database import DEFAULT_TARGET, MetricsDatabase
from tinyllm.store.export import CONTENT_TYPES, DEFAULT_PREFIX, FORMATS
from tinyllm.store.observer import StoreObserver
from tinyllm.store.rules import derive_endpoint, estimate_tokens

if typing.TYPE_CHECKING:
    from tinyllm.http.store import DEFAULT_API_PREFIX, store_asgi_app, store_routes

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_API_PREFIX",
    "DEFAULT_PREFIX",
    "DEFAULT_TARGET",
    "FORMATS",
    "MetricsDatabase",
    "StoreObserver",
    "close_store",
    "configure_store",
    "derive_endpoint",
    "estimate_tokens",
    "get_store",
    "store_asgi_app",
    "store_routes",
]


def __getattr__(name: str) -> typing.Any:
    # The store's HTTP routes are a surface (tinyllm.http.store), a layer above
    # this package: re-exported on first use, so that importing the store never imports
    # the HTTP surface, and the surface can import the store.
    if name in ("DEFAULT_API_PREFIX", "store_asgi_app", "store_routes"):
        from tinyllm.http import store as store_http

        return getattr(store_http, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
