"""Store.changed_interactions: what the trainer's fold-in reads, on both backends."""

from __future__ import annotations

import math

from tests.modeldata import append_events, append_ratings
from vrec.events import Event, EventType
from vrec.store import open_store


def test_changed_interactions_are_the_pairs_touched_since(store_url: str) -> None:
    with open_store(store_url) as store:
        append_ratings(
            store, [("a", "x", 5.0), ("a", "y", 2.0), ("b", "x", 4.0)], ts=10
        )
        since = store.last_seq()
        assert len(store.changed_interactions(since)) == 0

        append_ratings(store, [("a", "y", 4.0), ("c", "z", 3.0)], ts=20)
        append_events(store, [Event("a", "y", EventType.VIEW, 30, watch_fraction=0.5)])

        changed = store.changed_interactions(since)
        pairs = sorted(
            zip(changed.user_idx.tolist(), changed.item_idx.tolist(), strict=True)
        )
        a, c = store.user_index("a"), store.user_index("c")
        assert a is not None and c is not None
        assert [p[0] for p in pairs] == sorted([a, c])
        row = next(n for n in range(len(changed)) if changed.user_idx[n] == a)
        assert changed.rating[row] == 4.0  # the current value, not the event's
        assert changed.views[row] == 1 and changed.watch[row] == 0.5
        assert changed.last_ts[row] == 30

        everything = store.changed_interactions(0)
        assert len(everything) == len(store.interactions()) == 4
        assert not any(math.isnan(r) for r in everything.rating)
