"""The store, run against both backends: SQLite and the machine's PostgreSQL."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vrec.events import Event, EventType
from vrec.store import Rejected, SourcedEvent, Store, open_store


def _rating(
    user: str,
    item: str,
    rating: float,
    ts: int,
    offset: int,
    partition: int = 0,
    topic: str = "ratings",
) -> SourcedEvent:
    event = Event(user, item, EventType.RATING, ts, rating)
    return SourcedEvent(event, topic, partition, offset)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def test_an_empty_store(store: Store) -> None:
    stats = store.stats()
    assert (stats.events, stats.users, stats.items, stats.last_seq) == (0, 0, 0, 0)
    assert store.offsets("ratings") == {}
    assert store.changes_since(0).events == 0
    assert len(store.interactions()) == 0


def test_append_keeps_events_indices_and_offsets(store: Store) -> None:
    result = store.append(
        [
            _rating("u1", "v1", 4, 1000, 0),
            _rating("u2", "v1", 5, 1001, 1),
            _rating("u1", "v2", 3, 1002, 0, partition=1),
        ]
    )
    assert (result.accepted, result.rejected, result.skipped) == (3, 0, 0)
    assert store.user_ids() == ["u1", "u2"]
    assert store.item_ids() == ["v1", "v2"]
    assert store.item_ids(start=1) == ["v2"]
    assert store.user_index("u2") == 1 and store.user_index("nobody") is None
    assert store.offsets("ratings") == {0: 2, 1: 1}
    stats = store.stats().to_dict()
    assert stats["events"] == 3 and stats["users"] == 2 and stats["items"] == 2
    assert stats["offsets"] == {"ratings": {"0": 2, "1": 1}}


def test_indices_are_stable_and_never_reused(store: Store, store_url: str) -> None:
    store.append([_rating("u1", "v1", 4, 1, 0), _rating("u2", "v2", 4, 1, 1)])
    store.append([_rating("u3", "v1", 4, 1, 2), _rating("u1", "v3", 4, 1, 3)])
    assert store.user_ids() == ["u1", "u2", "u3"]
    assert store.item_ids() == ["v1", "v2", "v3"]

    # A second process (here: a second connection) sees and extends the same map.
    other = open_store(store_url)
    other.append([_rating("u4", "v1", 4, 1, 4), _rating("u2", "v4", 4, 1, 5)])
    store.append([_rating("u5", "v5", 4, 1, 6)])
    other.close()
    assert store.user_ids() == ["u1", "u2", "u3", "u4", "u5"]
    assert store.item_ids() == ["v1", "v2", "v3", "v4", "v5"]


def test_newest_rating_by_event_time_wins(store: Store) -> None:
    store.append([_rating("u1", "v1", 4, 2000, 0)])
    store.append([_rating("u1", "v1", 1, 1000, 1)])  # older, arrives late
    store.append([_rating("u1", "v1", 2, 3000, 2), _rating("u1", "v1", 5, 2500, 3)])
    current = store.interactions()
    assert current.rating.tolist() == [2.0]
    assert current.last_ts.tolist() == [3000]
    assert store.stats().events == 4  # the log keeps every event


def test_a_tie_in_event_time_goes_to_the_later_arrival(store: Store) -> None:
    store.append([_rating("u1", "v1", 2, 1000, 0), _rating("u1", "v1", 3, 1000, 1)])
    assert store.interactions().rating.tolist() == [3.0]
    store.append([_rating("u1", "v1", 4, 1000, 2)])
    assert store.interactions().rating.tolist() == [4.0]


def test_one_batch_merges_every_kind_of_event_of_a_pair(store: Store) -> None:
    view = Event("u1", "v1", EventType.VIEW, 6, watch_fraction=0.5)
    like = Event("u1", "v1", EventType.LIKE, 4)
    store.append(
        [
            _rating("u1", "v1", 4, 5, 0),
            SourcedEvent(view, "ratings", 0, 1),
            SourcedEvent(like, "ratings", 0, 2),
            _rating("u1", "v1", 2, 3, 3),  # older: kept in the log only
        ]
    )
    current = store.interactions()
    assert (current.rating.tolist(), current.views.tolist()) == ([4.0], [1.0])
    assert (current.watch.tolist(), current.liked.tolist()) == ([0.5], [1.0])
    assert current.last_ts.tolist() == [6]


def test_views_and_likes_accumulate_beside_the_rating(store: Store) -> None:
    view = Event("u1", "v1", EventType.VIEW, 10, watch_fraction=0.4)
    like = Event("u1", "v1", EventType.LIKE, 12)
    store.append([SourcedEvent(view, "t", 0, 0), SourcedEvent(view, "t", 0, 1)])
    store.append(
        [
            SourcedEvent(like, "t", 0, 2),
            SourcedEvent(Event("u1", "v2", EventType.VIEW, 11), "t", 0, 3),
        ]
    )
    current = store.interactions()
    order = np.argsort(current.item_idx)
    assert current.views[order].tolist() == [2, 1]
    assert current.watch[order].tolist() == [0.4, 0.0]
    assert current.liked[order].tolist() == [1, 0]
    assert all(math.isnan(r) for r in current.rating)


def test_records_below_the_stored_offset_are_skipped(store: Store) -> None:
    batch = [_rating("u1", "v1", 4, 1, 0), _rating("u1", "v2", 4, 1, 1)]
    store.append(batch)
    again = store.append([*batch, _rating("u1", "v3", 4, 1, 2)])
    assert (again.accepted, again.skipped) == (1, 2)
    assert store.stats().events == 3
    assert store.offsets("ratings") == {0: 3}


def test_rejected_records_are_kept_and_move_the_offset(store: Store) -> None:
    bad = Rejected(b"\xff", b"k", "not JSON", "ratings", 0, 0)
    result = store.append([_rating("u1", "v1", 4, 1, 1)], [bad])
    assert (result.accepted, result.rejected) == (1, 1)
    assert store.stats().rejected == 1
    assert store.offsets("ratings") == {0: 2}
    assert store.append([], [bad]).skipped == 1


def test_changes_since_a_sequence(store: Store) -> None:
    first = store.append([_rating("u1", "v1", 4, 1, 0), _rating("u2", "v2", 4, 1, 1)])
    store.append([_rating("u3", "v1", 4, 1, 2)])
    changes = store.changes_since(first.last_seq)
    assert changes.user_idx.tolist() == [2]
    assert changes.item_idx.tolist() == [0]
    assert changes.events == 1 and changes.last_seq == store.last_seq()
    assert store.changes_since(changes.last_seq).events == 0


def test_interactions_by_user_and_by_item(store: Store) -> None:
    store.append(
        [
            _rating("u1", "v1", 4, 1, 0),
            _rating("u2", "v2", 5, 1, 1),
            _rating("u2", "v1", 3, 1, 2),
        ]
    )
    by_user = store.interactions([1])
    assert sorted(by_user.item_idx.tolist()) == [0, 1]
    by_item = store.item_interactions([0])
    assert sorted(by_item.user_idx.tolist()) == [0, 1]
    assert len(store.interactions([])) == 0


def test_concurrent_writers_keep_every_event_once(store_url: str) -> None:
    """Two connections appending at once: dense indices, nothing lost."""

    def write(partition: int) -> None:
        own = open_store(store_url)
        for start in range(0, 200, 20):
            own.append(
                [
                    _rating(f"u{partition}-{n % 7}", f"v{n % 11}", 3, n, n, partition)
                    for n in range(start, start + 20)
                ]
            )
        own.close()

    threads = [threading.Thread(target=write, args=(p,)) for p in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = open_store(store_url)
    stats = reader.stats()
    assert stats.events == 400
    assert reader.offsets("ratings") == {0: 200, 1: 200}
    assert len(reader.user_ids()) == 14 and len(reader.item_ids()) == 11
    reader.close()


def test_connections_opening_one_new_sqlite_file_at_once_all_succeed(
    tmp_path: Path,
) -> None:
    """The first connections to a new file race to turn on WAL; none may fail."""
    openers = 6
    for round_ in range(50):  # the race is lost in a few rounds out of a hundred
        url = str(tmp_path / f"store-{round_}.db")
        ready = threading.Barrier(openers)
        failures: list[BaseException] = []

        def open_and_write(n: int) -> None:
            ready.wait()  # noqa: B023
            try:
                with open_store(url) as store:  # noqa: B023
                    store.append([_rating(f"u{n}", "v1", 4, 1, n, partition=n)])
            except BaseException as exc:
                failures.append(exc)  # noqa: B023

        threads = [
            threading.Thread(target=open_and_write, args=(n,)) for n in range(openers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures[0]
        with open_store(url) as store:
            assert store.stats().events == openers
