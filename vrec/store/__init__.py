"""The durable event store: SQLite by default, PostgreSQL for shared use.

``open_store(url)`` picks the backend from the URL: ``postgresql://`` or
``postgres://`` for PostgreSQL, ``sqlite:///path`` or a plain path for SQLite.
"""

from __future__ import annotations

from vrec.store.base import (
    AppendResult,
    Changes,
    Interactions,
    Rejected,
    SourcedEvent,
    Store,
    StoreStats,
)
from vrec.store.dialects import PostgresDialect, SQLiteDialect
from vrec.store.sql import SQLStore

__all__ = [
    "AppendResult",
    "Changes",
    "Interactions",
    "Rejected",
    "SourcedEvent",
    "Store",
    "StoreStats",
    "open_store",
]


def open_store(url: str) -> Store:
    """Open (and create if needed) the store at ``url``."""
    if url.startswith(("postgresql://", "postgres://")):
        return SQLStore(PostgresDialect(url))
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return SQLStore(SQLiteDialect(path))
