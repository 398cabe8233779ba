"""The performance-event store (seed 004): SQLite or PostgreSQL, summary, exports, routes.

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

from tinyllm.store.asgi import store_asgi_app
from tinyllm.store.config import close_store, configure_store, get_store
from tinyllm.store.database import DEFAULT_TARGET, MetricsDatabase
from tinyllm.store.export import CONTENT_TYPES, DEFAULT_PREFIX, FORMATS
from tinyllm.store.observer import StoreObserver
from tinyllm.store.routes import DEFAULT_API_PREFIX, store_routes
from tinyllm.store.rules import derive_endpoint, estimate_tokens

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
