"""Small data sets with answers known in advance; helpers to store them and
to watch the trainer's lists in Redis."""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from vrec.config import Settings
from vrec.events import Event, EventType
from vrec.publish import Recommendation, read_recommendations
from vrec.store import AppendResult, SourcedEvent, Store

RATINGS_CSV = Path(__file__).resolve().parent.parent / "data" / "ratings.csv"
TOPIC = "test-events"

Row = tuple[str, str, float]


def tutorial_rows() -> list[Row]:
    """The original tutorial's table: (userId, videoId, rating)."""
    with open(RATINGS_CSV, newline="") as src:
        return [
            (r["userId"], r["videoId"], float(r["rating"])) for r in csv.DictReader(src)
        ]


def append_ratings(
    store: Store, rows: Iterable[Row], ts: int = 1_700_000_000_000
) -> AppendResult:
    """Append rating events as if consumed from partition 0 of :data:`TOPIC`."""
    start = store.offsets(TOPIC).get(0, 0)
    events = [
        SourcedEvent(
            Event(user_id, item_id, EventType.RATING, ts + n, rating),
            TOPIC,
            0,
            start + n,
        )
        for n, (user_id, item_id, rating) in enumerate(rows)
    ]
    return store.append(events)


def append_events(store: Store, events: Iterable[Event]) -> AppendResult:
    """Append any events as if consumed from partition 0 of :data:`TOPIC`."""
    start = store.offsets(TOPIC).get(0, 0)
    return store.append(
        [SourcedEvent(e, TOPIC, 0, start + n) for n, e in enumerate(events)]
    )


@dataclass(frozen=True)
class Planted:
    """Users who like the videos of their own taste group and nothing else."""

    rows: list[Row]
    group_of_user: dict[str, int]
    group_of_item: dict[str, int]


def planted_groups(
    groups: int = 4,
    users_per_group: int = 30,
    items_per_group: int = 15,
    liked_per_user: int = 6,
    disliked_per_user: int = 2,
    seed: int = 7,
) -> Planted:
    """Each user rates ``liked_per_user`` videos of the own group 4 or 5 and
    ``disliked_per_user`` videos of other groups 1 or 2. Users outnumber
    videos, so a transposed matrix cannot pass for the right one."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    user_group: dict[str, int] = {}
    item_group = {
        f"v{g}-{j:02d}": g for g in range(groups) for j in range(items_per_group)
    }
    for g in range(groups):
        others = [i for i, ig in item_group.items() if ig != g]
        for u in range(users_per_group):
            user_id = f"u{g}-{u:02d}"
            user_group[user_id] = g
            for j in rng.choice(items_per_group, liked_per_user, replace=False):
                rows.append((user_id, f"v{g}-{j:02d}", float(rng.choice([4.0, 5.0]))))
            for j in rng.choice(len(others), disliked_per_user, replace=False):
                rows.append((user_id, others[j], float(rng.choice([1.0, 2.0]))))
    order = rng.permutation(len(rows))
    return Planted([rows[i] for i in order], user_group, item_group)


LATER = 1_800_000_000_000  # event times after the tutorial's


def make_settings(
    store_url: str, redis_url: str, tmp_path: Path, **extra: object
) -> Settings:
    # No scheduled refit unless a test asks for one.
    base: dict[str, object] = {
        "store_url": store_url,
        "redis_url": redis_url,
        "model_dir": tmp_path / "models",
        "fold_interval_s": 0.05,
        "refit_interval_s": 3600.0,
        "refit_new_share": 1000.0,
    }
    return Settings(**{**base, **extra})


def read(client: redis.Redis, user_id: str) -> Recommendation:
    return read_recommendations(client, user_id)


def wait_until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        done.wait(0.05)
    assert check(), "condition not met in time"
