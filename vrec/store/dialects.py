"""SQLite and PostgreSQL connections, schema and transaction handling."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from vrec.errors import StoreError
from vrec.store.base import FloatArray, IntArray, Interactions

# Column types are spelled so that both engines accept them; the PostgreSQL
# schema only differs in its identity column and binary type.
_TABLES = """
CREATE TABLE IF NOT EXISTS users (
    user_idx BIGINT PRIMARY KEY, user_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS items (
    item_idx BIGINT PRIMARY KEY, item_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS events (
    seq {seq_type},
    user_idx BIGINT NOT NULL, item_idx BIGINT NOT NULL,
    event_type TEXT NOT NULL, rating DOUBLE PRECISION,
    watch_fraction DOUBLE PRECISION, ts BIGINT NOT NULL, event_id TEXT,
    topic TEXT, part INTEGER, kafka_offset BIGINT);
CREATE TABLE IF NOT EXISTS interactions (
    user_idx BIGINT NOT NULL, item_idx BIGINT NOT NULL,
    rating DOUBLE PRECISION, rating_ts BIGINT,
    views BIGINT NOT NULL DEFAULT 0, watch DOUBLE PRECISION NOT NULL DEFAULT 0,
    liked INTEGER NOT NULL DEFAULT 0, last_ts BIGINT NOT NULL, seq BIGINT NOT NULL,
    PRIMARY KEY (user_idx, item_idx));
CREATE INDEX IF NOT EXISTS interactions_item ON interactions (item_idx);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, part));
CREATE TABLE IF NOT EXISTS rejected (
    id {seq_type}, topic TEXT, part INTEGER, kafka_offset BIGINT,
    reason TEXT NOT NULL, record_key {blob}, record_value {blob},
    stored_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)
"""


_BUSY_TIMEOUT_S = 30.0
_CACHE_KIB = 64 * 1024  # per connection, taken as pages are read
_CHECKPOINT_PAGES = 10_000  # about 40 MB of WAL


def _retry_busy(statement: Callable[[], object]) -> None:
    """Run ``statement``, retrying with backoff while the database is busy.

    Turning a new file to WAL takes an exclusive lock without waiting for it
    (SQLite skips the busy handler there), so processes opening one fresh file
    at once get "database is locked" unless they try again.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# Interactions' columns, from the interactions table named ``i``.
_INTERACTION_COLUMNS = (
    "i.user_idx, i.item_idx, i.rating, i.views, i.watch, i.liked, i.last_ts"
)
_RATED_ONLY = "i.rating IS NOT NULL AND i.views = 0 AND i.watch = 0 AND i.liked = 0"
_RATED_ROW = np.dtype(
    [
        ("user_idx", np.int64),
        ("item_idx", np.int64),
        ("rating", np.float64),
        ("last_ts", np.int64),
    ]
)


class SQLiteDialect:
    """A SQLite file in WAL mode; writers take the database lock up front."""

    name = "sqlite"
    schema = _TABLES.format(seq_type="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB")

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                path,
                isolation_level=None,
                timeout=_BUSY_TIMEOUT_S,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {path!r}: {exc}") from exc
        try:
            _retry_busy(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
            # FULL: a committed batch survives power loss, not only a crash.
            self._conn.execute("PRAGMA synchronous=FULL")
            # A batch's upserts land on pages all over the interactions table
            # and its index: keep those pages cached, and copy the WAL back
            # into the file less often (each copy rewrites every page touched).
            self._conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            self._conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open SQLite store {path!r}: {exc}") from exc

    def sql(self, text: str) -> str:
        return text

    @contextmanager
    def begin_write(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            yield cur
            cur.execute("COMMIT")
        except BaseException as exc:
            if self._conn.in_transaction:
                self._conn.rollback()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"SQLite write failed: {exc}") from exc
            raise
        finally:
            cur.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN")
            yield cur
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read failed: {exc}") from exc
        finally:
            if self._conn.in_transaction:
                self._conn.rollback()
            cur.close()

    def read_interactions(
        self, cur: sqlite3.Cursor, source: str, where: str, params: Sequence[Any]
    ) -> Interactions:
        if where or params:  # some users, items or changes: one query will do
            clause = f"WHERE {where}" if where else ""
            cur.execute(f"SELECT {_INTERACTION_COLUMNS} {source} {clause}", params)
            return Interactions.from_rows(cur.fetchall())

        # The whole table. The driver's cost is per value, whatever its type:
        # the usual pair, a rating and nothing else, comes as four columns
        # straight into numpy, the others as all seven.
        cur.execute(
            f"SELECT i.user_idx, i.item_idx, i.rating, i.last_ts {source} "
            f"WHERE {_RATED_ONLY}"
        )
        rated = np.fromiter(cur, dtype=_RATED_ROW)
        cur.execute(f"SELECT {_INTERACTION_COLUMNS} {source} WHERE NOT ({_RATED_ONLY})")
        others = Interactions.from_rows(cur.fetchall())
        return Interactions.concat(
            [
                Interactions.from_ratings(
                    np.ascontiguousarray(rated["user_idx"]),
                    np.ascontiguousarray(rated["item_idx"]),
                    np.ascontiguousarray(rated["rating"]),
                    np.ascontiguousarray(rated["last_ts"]),
                ),
                others,
            ]
        )

    def insert_rows(
        self,
        cur: sqlite3.Cursor,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: str = "",
    ) -> None:
        marks = ", ".join("?" * len(columns))
        cur.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) {conflict}",
            rows,
        )

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        # json_each keeps one bound parameter however long the list is.
        import json

        return f"{column} IN (SELECT value FROM json_each(?))", [
            json.dumps(list(values))
        ]

    def close(self) -> None:
        self._conn.close()


# Binary COPY (cheaper for the client than text) needs every column's type.
_PG_TYPES = {
    "user_idx": "int8",
    "item_idx": "int8",
    "user_id": "text",
    "item_id": "text",
    "event_type": "text",
    "rating": "float8",
    "watch_fraction": "float8",
    "ts": "int8",
    "event_id": "text",
    "topic": "text",
    "part": "int4",
    "kafka_offset": "int8",
    "rating_ts": "int8",
    "views": "int8",
    "watch": "float8",
    "liked": "int4",
    "last_ts": "int8",
    "seq": "int8",
}
_LOCK_KEY = 0x76726563  # "vrec": one advisory lock serialises all writers


class PostgresDialect:
    """A PostgreSQL connection; writers hold a transaction advisory lock."""

    name = "postgresql"
    schema = _TABLES.format(seq_type="BIGSERIAL PRIMARY KEY", blob="BYTEA")

    def __init__(self, url: str) -> None:
        try:
            self._conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL store: {exc}") from exc

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    @contextmanager
    def begin_write(self) -> Iterator[psycopg.Cursor[Any]]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                yield cur
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL write failed: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[psycopg.Cursor[Any]]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                yield cur
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL read failed: {exc}") from exc

    def insert_rows(
        self,
        cur: psycopg.Cursor[Any],
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: str = "",
    ) -> None:
        # COPY costs a fraction of executemany per row. With a conflict clause
        # the rows go through a temporary table that empties at commit.
        if not rows:
            return
        names = ", ".join(columns)
        target = table
        if conflict:
            target = f"{table}_staged"
            cur.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {target} "
                f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
        with cur.copy(f"COPY {target} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([_PG_TYPES[c] for c in columns])
            for row in rows:
                copy.write_row(row)
        if conflict:
            cur.execute(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM {target} {conflict}"
            )

    def read_interactions(
        self, cur: psycopg.Cursor[Any], source: str, where: str, params: Sequence[Any]
    ) -> Interactions:
        # One bytea of big-endian values per column, straight into numpy. One
        # aggregate node feeds each row to all seven in the same order; parallel
        # workers could interleave them.
        # TODO: a bytea holds at most 1 GB (~130M pairs); past that, read ranges.
        columns = ", ".join(f"string_agg({c}, '')" for c in _PG_COLUMNS)
        clause = f"WHERE {where}" if where else ""
        cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        query = self.sql(f"SELECT {columns} {source} {clause}")
        cur.execute(query, params, binary=True)
        user, item, rating, views, watch, liked, last_ts = cur.fetchone() or [None] * 7
        return Interactions(
            _int8(user),
            _int8(item),
            _float8(rating),
            _float8(views),
            _float8(watch),
            _float8(liked),
            _int8(last_ts),
        )

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [list(values)]

    def close(self) -> None:
        self._conn.close()


# Interactions' columns in PostgreSQL's binary form: 8 bytes, big-endian.
_PG_COLUMNS = (
    "int8send(i.user_idx)",
    "int8send(i.item_idx)",
    "float8send(COALESCE(i.rating, 'NaN'))",
    "float8send(i.views)",
    "float8send(i.watch)",
    "float8send(i.liked)",
    "int8send(i.last_ts)",
)


def _int8(data: bytes | None) -> IntArray:
    return np.frombuffer(data or b"", dtype=">i8").astype(np.int64)


def _float8(data: bytes | None) -> FloatArray:
    return np.frombuffer(data or b"", dtype=">f8").astype(np.float64)
