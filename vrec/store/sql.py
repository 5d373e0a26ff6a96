"""The SQL store: one implementation, two dialects (SQLite and PostgreSQL).

Writers are serialised: SQLite by ``BEGIN IMMEDIATE``, PostgreSQL by a
transaction-scoped advisory lock. That keeps index assignment dense and makes
the change sequence grow in commit order, so "changed since N" never misses a
transaction that committed late. Readers never take the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import numpy as np

from vrec.errors import StoreError
from vrec.events import Event, EventType
from vrec.store.base import (
    AppendResult,
    Changes,
    Interactions,
    Rejected,
    SourcedEvent,
    Store,
    StoreStats,
)

logger = logging.getLogger(__name__)

_EVENT_COLUMNS = (
    "user_idx",
    "item_idx",
    "event_type",
    "rating",
    "watch_fraction",
    "ts",
    "event_id",
    "topic",
    "part",
    "kafka_offset",
)
_UPSERT_COLUMNS = (
    "user_idx",
    "item_idx",
    "rating",
    "rating_ts",
    "views",
    "watch",
    "liked",
    "last_ts",
    "seq",
)
# A later event by event time wins the rating; a late, older one is kept in
# the event log only. Ties go to the event that arrived last.
_ON_CONFLICT_INTERACTION = """
ON CONFLICT (user_idx, item_idx) DO UPDATE SET
    rating = CASE WHEN excluded.rating IS NOT NULL AND (interactions.rating_ts
        IS NULL OR excluded.rating_ts >= interactions.rating_ts)
        THEN excluded.rating ELSE interactions.rating END,
    rating_ts = CASE WHEN excluded.rating IS NOT NULL AND (interactions.rating_ts
        IS NULL OR excluded.rating_ts >= interactions.rating_ts)
        THEN excluded.rating_ts ELSE interactions.rating_ts END,
    views = interactions.views + excluded.views,
    watch = CASE WHEN excluded.watch > interactions.watch
        THEN excluded.watch ELSE interactions.watch END,
    liked = CASE WHEN excluded.liked > interactions.liked
        THEN excluded.liked ELSE interactions.liked END,
    last_ts = CASE WHEN excluded.last_ts > interactions.last_ts
        THEN excluded.last_ts ELSE interactions.last_ts END,
    seq = excluded.seq
"""

_UPSERT_OFFSET = """
INSERT INTO offsets (topic, part, next_offset) VALUES (?, ?, ?)
ON CONFLICT (topic, part) DO UPDATE SET next_offset = excluded.next_offset
"""


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Dialect(Protocol):
    """What differs between SQLite and PostgreSQL."""

    name: str
    schema: str

    def sql(self, text: str) -> str: ...
    def begin_write(self) -> Any: ...
    def read(self) -> Any: ...
    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]: ...
    def read_interactions(
        self, cur: Any, source: str, where: str, params: Sequence[Any]
    ) -> Interactions: ...
    def insert_rows(
        self,
        cur: Any,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: str = "",
    ) -> None: ...
    def close(self) -> None: ...


# One row of current values per event, in _UPSERT_COLUMNS order; a batch's rows
# for one pair are merged by _merge, which mirrors _ON_CONFLICT_INTERACTION.
_ValueRow = tuple[int, int, float | None, int | None, int, float, int, int, int]


def _value_row(user_idx: int, item_idx: int, event: Event, seq: int) -> _ValueRow:
    kind, ts = event.event_type, event.ts
    if kind is EventType.RATING:
        return (user_idx, item_idx, event.rating, ts, 0, 0.0, 0, ts, seq)
    if kind is EventType.VIEW:
        watch = event.watch_fraction or 0.0
        return (user_idx, item_idx, None, None, 1, watch, 0, ts, seq)
    return (user_idx, item_idx, None, None, 0, 0.0, 1, ts, seq)


def _merge(old: _ValueRow, new: _ValueRow) -> _ValueRow:
    """The current values after ``old`` then ``new``, as the upsert would do."""
    rating, rating_ts = old[2], old[3]
    new_ts = new[3]  # set exactly when new carries a rating
    if new_ts is not None and (rating_ts is None or new_ts >= rating_ts):
        rating, rating_ts = new[2], new_ts
    return (
        old[0],
        old[1],
        rating,
        rating_ts,
        old[4] + new[4],
        max(old[5], new[5]),
        max(old[6], new[6]),
        max(old[7], new[7]),
        new[8],
    )


_Record = TypeVar("_Record", SourcedEvent, Rejected)


def _not_stored(
    records: Sequence[_Record], stored: dict[tuple[str, int], int]
) -> Sequence[_Record]:
    """``records`` at or past the stored next offset of their partition."""
    return [r for r in records if r.offset >= stored.get((r.topic, r.partition), 0)]


def _next_offsets(
    *stored: Sequence[SourcedEvent | Rejected],
) -> dict[tuple[str, int], int]:
    """The next offset to read per (topic, partition), after ``stored``."""
    next_offsets: dict[tuple[str, int], int] = {}
    for records in stored:
        for r in records:
            pos = (r.topic, r.partition)
            if r.offset >= next_offsets.get(pos, 0):
                next_offsets[pos] = r.offset + 1
    return next_offsets


class SQLStore(Store):
    """A :class:`Store` over a DB-API connection wrapped by a :class:`Dialect`."""

    def __init__(self, dialect: Dialect) -> None:
        self._db = dialect
        self._user_cache: dict[str, int] = {}
        self._item_cache: dict[str, int] = {}
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        with self._db.begin_write() as cur:
            for statement in self._db.schema.split(";"):
                if statement.strip():
                    cur.execute(statement)

    # -- writing ---------------------------------------------------------

    def append(
        self, events: Sequence[SourcedEvent], rejected: Sequence[Rejected] = ()
    ) -> AppendResult:
        """Store one polled batch in one transaction (see :class:`Store`)."""
        try:
            return self._append(events, rejected)
        except BaseException:
            # Indices cached during a rolled-back transaction were never stored.
            self._user_cache.clear()
            self._item_cache.clear()
            raise

    def _append(
        self, events: Sequence[SourcedEvent], rejected: Sequence[Rejected]
    ) -> AppendResult:
        q = self._db.sql
        with self._db.begin_write() as cur:
            # Drop what an earlier transaction already stored (a restarted or
            # rebalanced consumer may poll the same records again).
            positions = {(r.topic, r.partition) for r in events}
            positions.update((r.topic, r.partition) for r in rejected)
            stored = self._stored_offsets(cur, positions)
            fresh = _not_stored(events, stored)
            fresh_rej = _not_stored(rejected, stored)
            skipped = len(events) + len(rejected) - len(fresh) - len(fresh_rej)

            users = self._assign(
                cur,
                "users",
                "user_id",
                "user_idx",
                self._user_cache,
                {s.event.user_id for s in fresh},
            )
            items = self._assign(
                cur,
                "items",
                "item_id",
                "item_idx",
                self._item_cache,
                {s.event.item_id for s in fresh},
            )

            # The event log: one row per accepted event, in arrival order.
            pairs = [(users[s.event.user_id], items[s.event.item_id]) for s in fresh]
            self._db.insert_rows(
                cur,
                "events",
                _EVENT_COLUMNS,
                [
                    (
                        user_idx,
                        item_idx,
                        e.event_type.value,
                        e.rating,
                        e.watch_fraction,
                        e.ts,
                        e.event_id,
                        s.topic,
                        s.partition,
                        s.offset,
                    )
                    for (user_idx, item_idx), s in zip(pairs, fresh, strict=True)
                    for e in (s.event,)
                ],
            )
            cur.execute(q("SELECT COALESCE(MAX(seq), 0) FROM events"))
            last_seq = int(cur.fetchone()[0])
            self._upsert_interactions(cur, fresh, pairs, last_seq)

            if fresh_rej:
                cur.executemany(
                    q(
                        "INSERT INTO rejected (topic, part, kafka_offset, reason, "
                        "record_key, record_value) VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    [
                        (r.topic, r.partition, r.offset, r.reason, r.key, r.value)
                        for r in fresh_rej
                    ],
                )

            next_offsets = _next_offsets(fresh, fresh_rej)
            cur.executemany(
                q(_UPSERT_OFFSET), [(t, p, o) for (t, p), o in next_offsets.items()]
            )
        return AppendResult(len(fresh), len(fresh_rej), skipped, last_seq)

    def _stored_offsets(
        self, cur: Cursor, positions: set[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        topics = sorted({t for t, _ in positions})
        if not topics:
            return {}
        where, params = self._db.in_list("topic", topics)
        cur.execute(
            self._db.sql(f"SELECT topic, part, next_offset FROM offsets WHERE {where}"),
            params,
        )
        return {(t, int(p)): int(o) for t, p, o in cur.fetchall()}

    def _assign(
        self,
        cur: Cursor,
        table: str,
        id_col: str,
        idx_col: str,
        cache: dict[str, int],
        wanted: set[str],
    ) -> dict[str, int]:
        """Map ids to dense indices, giving unseen ids the next free ones.

        Returns ``cache``, which then holds every id of ``wanted``.
        """
        missing = [i for i in wanted if i not in cache]
        if missing:
            # Another process may have assigned some of them since we cached.
            where, params = self._db.in_list(id_col, missing)
            cur.execute(
                self._db.sql(f"SELECT {id_col}, {idx_col} FROM {table} WHERE {where}"),
                params,
            )
            cache.update((k, int(v)) for k, v in cur.fetchall())
            new = sorted(i for i in missing if i not in cache)
            if new:
                cur.execute(f"SELECT COALESCE(MAX({idx_col}), -1) + 1 FROM {table}")
                start = int(cur.fetchone()[0])
                rows = [(start + n, i) for n, i in enumerate(new)]
                self._db.insert_rows(cur, table, (idx_col, id_col), rows)
                cache.update((i, n) for n, i in rows)
        return cache

    def _upsert_interactions(
        self,
        cur: Cursor,
        fresh: Sequence[SourcedEvent],
        pairs: Sequence[tuple[int, int]],
        seq: int,
    ) -> None:
        rows = [
            _value_row(user_idx, item_idx, s.event, seq)
            for (user_idx, item_idx), s in zip(pairs, fresh, strict=True)
        ]
        # One row per pair: PostgreSQL refuses to update a row twice in one
        # statement. Pairs seldom repeat within a batch.
        if len(set(pairs)) < len(pairs):
            merged: dict[tuple[int, int], _ValueRow] = {}
            for pair, row in zip(pairs, rows, strict=True):
                old = merged.get(pair)
                merged[pair] = row if old is None else _merge(old, row)
            rows = list(merged.values())
        self._db.insert_rows(
            cur,
            "interactions",
            _UPSERT_COLUMNS,
            rows,
            conflict=_ON_CONFLICT_INTERACTION,
        )

    # -- reading ---------------------------------------------------------

    def offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read per partition of ``topic``."""
        with self._db.read() as cur:
            cur.execute(
                self._db.sql("SELECT part, next_offset FROM offsets WHERE topic = ?"),
                (topic,),
            )
            return {int(p): int(o) for p, o in cur.fetchall()}

    def last_seq(self) -> int:
        """The newest change sequence number (0 for an empty store)."""
        with self._db.read() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM events")
            return int(cur.fetchone()[0])

    def changes_since(self, since: int) -> Changes:
        """Users and items touched by events with sequence > ``since``."""
        q = self._db.sql
        with self._db.read() as cur:
            cur.execute(
                q("SELECT COUNT(*), COALESCE(MAX(seq), ?) FROM events WHERE seq > ?"),
                (since, since),
            )
            count, last = cur.fetchone()
            window = (since, int(last))
            cur.execute(
                q("SELECT DISTINCT user_idx FROM events WHERE seq > ? AND seq <= ?"),
                window,
            )
            users = np.array([r[0] for r in cur.fetchall()], dtype=np.int64)
            cur.execute(
                q("SELECT DISTINCT item_idx FROM events WHERE seq > ? AND seq <= ?"),
                window,
            )
            items = np.array([r[0] for r in cur.fetchall()], dtype=np.int64)
        return Changes(since, int(last), np.sort(users), np.sort(items), int(count))

    def interactions(self, user_idx: Sequence[int] | None = None) -> Interactions:
        """Current values of the given users (all users when None)."""
        return self._read_interactions("i.user_idx", user_idx)

    def item_interactions(self, item_idx: Sequence[int]) -> Interactions:
        """Current values of every pair that involves one of ``item_idx``."""
        return self._read_interactions("i.item_idx", item_idx)

    def changed_interactions(self, since: int) -> Interactions:
        """Current values of every pair touched by an event with seq > ``since``."""
        # The events' sequence key finds the pairs, the interactions key their
        # values: the cost follows the changes, not the size of the store.
        source = (
            "FROM interactions i JOIN (SELECT DISTINCT user_idx, item_idx FROM "
            "events WHERE seq > ?) e "
            "ON i.user_idx = e.user_idx AND i.item_idx = e.item_idx"
        )
        with self._db.read() as cur:
            return self._db.read_interactions(cur, source, "", (since,))

    def _read_interactions(
        self, column: str, values: Sequence[int] | None
    ) -> Interactions:
        where = ""
        params: list[Any] = []
        if values is not None:
            if len(values) == 0:
                return Interactions.from_rows([])
            where, params = self._db.in_list(column, [int(v) for v in values])
        with self._db.read() as cur:
            return self._db.read_interactions(cur, "FROM interactions i", where, params)

    def user_ids(self, start: int = 0) -> list[str]:
        """User ids in index order, from index ``start``."""
        return self._ids("users", "user_id", "user_idx", start)

    def item_ids(self, start: int = 0) -> list[str]:
        """Item ids in index order, from index ``start``."""
        return self._ids("items", "item_id", "item_idx", start)

    def _ids(self, table: str, id_col: str, idx_col: str, start: int) -> list[str]:
        with self._db.read() as cur:
            cur.execute(
                self._db.sql(
                    f"SELECT {idx_col}, {id_col} FROM {table} "
                    f"WHERE {idx_col} >= ? ORDER BY {idx_col}"
                ),
                (start,),
            )
            rows = cur.fetchall()
        if any(int(idx) != start + n for n, (idx, _) in enumerate(rows)):
            raise StoreError(f"{table} indices are not dense from {start}")
        return [str(i) for _, i in rows]

    def user_index(self, user_id: str) -> int | None:
        """The dense index of ``user_id``, or None if never seen."""
        with self._db.read() as cur:
            cur.execute(
                self._db.sql("SELECT user_idx FROM users WHERE user_id = ?"), (user_id,)
            )
            row = cur.fetchone()
        return None if row is None else int(row[0])

    def stats(self) -> StoreStats:
        """Counts of events, users, items, rejected records and the offsets."""
        counts = {}
        offsets: dict[str, dict[int, int]] = {}
        with self._db.read() as cur:
            for table in ("events", "users", "items", "interactions", "rejected"):
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                counts[table] = int(cur.fetchone()[0])
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM events")
            last_seq = int(cur.fetchone()[0])
            cur.execute("SELECT topic, part, next_offset FROM offsets")
            for topic, part, nxt in cur.fetchall():
                offsets.setdefault(str(topic), {})[int(part)] = int(nxt)
        return StoreStats(last_seq=last_seq, offsets=offsets, **counts)

    def close(self) -> None:
        """Release the connection."""
        self._db.close()


@contextmanager
def transaction_error(action: str) -> Iterator[None]:
    """Turn a driver's exception into :class:`StoreError`."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"{action} failed: {exc}") from exc
