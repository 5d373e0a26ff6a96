"""The trainer benchmarks' data: a generated store with taste groups, cached in /tmp.

About 6,000 users, 3,700 videos and 1M ratings. Each user belongs to one of
40 taste groups, rates mostly videos of that group (4 or 5) and some popular
videos of other groups (1 to 3); video popularity is skewed. Generating and
storing it takes a minute or so; the SQLite file is kept under /tmp and
reused while its event count matches.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import implicit.cpu.als
import numpy as np

from vrec.config import Settings
from vrec.devservers import local_redis
from vrec.events import Event, EventType
from vrec.publish import RedisClient, connect
from vrec.store import SourcedEvent, Store, open_store
from vrec.trainer import Trainer

USERS = 6_000
ITEMS = 3_700
RATINGS = 1_000_000
GROUPS = 40
TOPIC = "bench"
CACHE = Path("/tmp/vrec-bench-trainer") / f"store-{USERS}-{ITEMS}-{RATINGS}.db"


def _ratings(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    item_group = rng.integers(0, GROUPS, ITEMS)
    popularity = rng.zipf(1.3, ITEMS).astype(np.float64).clip(max=1000)
    per_user = RATINGS // USERS
    users, items, ratings = [], [], []
    for user in range(USERS):
        group = user % GROUPS
        weight = popularity * np.where(item_group == group, 30.0, 1.0)
        chosen = rng.choice(ITEMS, per_user, replace=False, p=weight / weight.sum())
        own = item_group[chosen] == group
        stars = np.where(
            own, rng.integers(4, 6, per_user), rng.integers(1, 4, per_user)
        )
        users.append(np.full(per_user, user))
        items.append(chosen)
        ratings.append(stars)
    extra = RATINGS - per_user * USERS  # top up to exactly RATINGS events
    order = rng.permutation(RATINGS - extra)
    u, i, r = (np.concatenate(x)[order] for x in (users, items, ratings))
    if extra:
        u = np.concatenate([u, np.arange(extra) % USERS])
        i = np.concatenate([i, rng.integers(0, ITEMS, extra)])
        r = np.concatenate([r, rng.integers(1, 6, extra)])
    return u, i, r


def fill(store: Store, seed: int = 11, batch: int = 50_000) -> None:
    """Append the generated ratings as events from one partition."""
    u, i, r = _ratings(seed)
    ts0 = 1_700_000_000_000
    for start in range(0, RATINGS, batch):
        stop = min(start + batch, RATINGS)
        store.append(
            [
                SourcedEvent(
                    Event(
                        f"u{u[n]:05d}",
                        f"v{i[n]:05d}",
                        EventType.RATING,
                        ts0 + n,
                        float(r[n]),
                    ),
                    TOPIC,
                    0,
                    n,
                )
                for n in range(start, stop)
            ]
        )


def bench_store(workdir: Path) -> str:
    """A copy of the cached generated store in ``workdir`` (generated if needed)."""
    if not _valid(CACHE):
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{CACHE}{suffix}").unlink(missing_ok=True)
        print(f"generating {RATINGS:,} ratings into {CACHE} (once) ...", flush=True)
        started = time.perf_counter()
        with open_store(str(CACHE)) as store:
            fill(store)
        print(f"generated in {time.perf_counter() - started:.0f}s", flush=True)
    target = workdir / "store.db"
    shutil.copyfile(CACHE, target)
    return str(target)


def _valid(path: Path) -> bool:
    if not path.exists():
        return False
    with open_store(str(path)) as store:
        return store.stats().events == RATINGS


@dataclass
class StartedTrainer:
    """A trainer serving a refit of the bench store, and implicit on its factors."""

    settings: Settings
    store: Store
    client: RedisClient
    trainer: Trainer
    bare: Any  # implicit's AlternatingLeastSquares holding copies of the factors


@contextmanager
def started_trainer(name: str) -> Iterator[StartedTrainer]:
    """Refit the bench store into a trainer that publishes to a private Redis."""
    with (
        tempfile.TemporaryDirectory(prefix=f"vrec-bench-{name}-") as tmp,
        local_redis() as redis_server,
    ):
        workdir = Path(tmp)
        settings = Settings(
            store_url=bench_store(workdir),
            redis_url=f"redis://{redis_server.address}/0",
            model_dir=workdir / "models",
        )
        client = connect(settings.redis_url)
        with open_store(settings.store_url) as store:
            trainer = Trainer(settings, store, client)
            trainer.start()
            assert trainer.served is not None
            model = trainer.served.model
            bare = implicit.cpu.als.AlternatingLeastSquares(factors=model.factors)
            bare.user_factors = model.user_factors.copy()
            bare.item_factors = model.item_factors.copy()
            try:
                yield StartedTrainer(settings, store, client, trainer, bare)
            finally:
                trainer.close()
                client.close()
