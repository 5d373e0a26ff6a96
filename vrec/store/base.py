"""What the event store keeps, and the interface both backends implement."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from vrec.events import Event

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SourcedEvent:
    """A valid event with the Kafka position it was read from."""

    event: Event
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that failed validation, kept with its original bytes."""

    value: bytes | None
    key: bytes | None
    reason: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one :meth:`Store.append` wrote."""

    accepted: int
    rejected: int
    skipped: int  # already stored: at or past the stored offset of their partition
    last_seq: int


@dataclass(frozen=True, slots=True)
class Changes:
    """Users and items whose events have sequence numbers in (since, last_seq]."""

    since: int
    last_seq: int
    user_idx: IntArray
    item_idx: IntArray
    events: int


@dataclass(frozen=True, slots=True)
class Interactions:
    """Current values per (user, item) pair, as parallel arrays.

    ``rating`` is NaN where the pair has no rating event; ``views`` counts
    view events, ``watch`` is the largest watch fraction seen, ``liked`` is 0/1,
    ``last_ts`` the newest event time of the pair (epoch ms).
    """

    user_idx: IntArray
    item_idx: IntArray
    rating: FloatArray
    views: FloatArray
    watch: FloatArray
    liked: FloatArray
    last_ts: IntArray

    def __len__(self) -> int:
        return int(self.user_idx.shape[0])

    @classmethod
    def from_ratings(
        cls,
        user_idx: IntArray,
        item_idx: IntArray,
        rating: FloatArray,
        last_ts: IntArray,
    ) -> Interactions:
        """Pairs with a rating and no view or like."""
        views, watch, liked = (np.zeros(len(user_idx)) for _ in range(3))
        return cls(user_idx, item_idx, rating, views, watch, liked, last_ts)

    @classmethod
    def concat(cls, parts: Sequence[Interactions]) -> Interactions:
        """The pairs of every part, in that order."""
        if len(parts) == 1:
            return parts[0]
        columns = [f.name for f in fields(cls)]
        return cls(*(np.concatenate([getattr(p, c) for p in parts]) for c in columns))

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> Interactions:
        """Build from rows of (user_idx, item_idx, rating, views, watch, liked,
        last_ts)."""
        if not rows:
            empty_i = np.zeros(0, dtype=np.int64)
            empty_f = np.zeros(0, dtype=np.float64)
            return cls(empty_i, empty_i, empty_f, empty_f, empty_f, empty_f, empty_i)
        table = np.array(rows, dtype=np.float64)
        return cls(
            user_idx=table[:, 0].astype(np.int64),
            item_idx=table[:, 1].astype(np.int64),
            rating=table[:, 2],  # NULL became NaN
            views=table[:, 3],
            watch=table[:, 4],
            liked=table[:, 5],
            last_ts=table[:, 6].astype(np.int64),
        )


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts for ``vrec store stats``."""

    events: int
    users: int
    items: int
    interactions: int
    rejected: int
    last_seq: int
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; partition numbers become string keys."""
        return {
            "events": self.events,
            "users": self.users,
            "items": self.items,
            "interactions": self.interactions,
            "rejected": self.rejected,
            "last_seq": self.last_seq,
            "offsets": {
                topic: {str(p): o for p, o in sorted(parts.items())}
                for topic, parts in sorted(self.offsets.items())
            },
        }


class Store(ABC):
    """Durable, append-only event store with current values and dense indices.

    One :meth:`append` call is one transaction: events, rejected records,
    current values, new indices and the next offsets commit together, so a
    consumer that seeks to :meth:`offsets` on start reads every record once.
    """

    @abstractmethod
    def append(
        self, events: Sequence[SourcedEvent], rejected: Sequence[Rejected] = ()
    ) -> AppendResult:
        """Store one polled batch atomically; records below the stored offset
        of their partition are skipped (they were stored before)."""

    @abstractmethod
    def offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read per partition of ``topic``."""

    @abstractmethod
    def last_seq(self) -> int:
        """The newest change sequence number (0 for an empty store)."""

    @abstractmethod
    def changes_since(self, since: int) -> Changes:
        """Users and items touched by events with sequence > ``since``."""

    @abstractmethod
    def interactions(self, user_idx: Sequence[int] | None = None) -> Interactions:
        """Current values of the given users (all users when None)."""

    @abstractmethod
    def item_interactions(self, item_idx: Sequence[int]) -> Interactions:
        """Current values of every pair that involves one of ``item_idx``."""

    @abstractmethod
    def changed_interactions(self, since: int) -> Interactions:
        """Current values of every pair touched by an event with seq > ``since``."""

    @abstractmethod
    def user_ids(self, start: int = 0) -> list[str]:
        """User ids in index order, from index ``start``."""

    @abstractmethod
    def item_ids(self, start: int = 0) -> list[str]:
        """Item ids in index order, from index ``start``."""

    @abstractmethod
    def user_index(self, user_id: str) -> int | None:
        """The dense index of ``user_id``, or None if never seen."""

    @abstractmethod
    def stats(self) -> StoreStats:
        """Counts of events, users, items, rejected records and the offsets."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
