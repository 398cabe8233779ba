"""The store's fixtures (a SQLite store in the test's temp dir) for its routes' tests."""

from tests.unit.store.conftest import db, make_db, store_collector

__all__ = ["db", "make_db", "store_collector"]
