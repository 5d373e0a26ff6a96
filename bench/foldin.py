"""Fold-in plus publish: users per second, against implicit's fold-in and recommend.

    .venv/bin/python -m bench.foldin [--repeat 3]

On the generated store (bench/trainer_data.py: ~6,000 users, 3,700 videos,
1M ratings, ~167 ratings per user) after one refit: each round, ``batch``
random users each rate one more video (stored first, not timed), then:

- vrec: ``Trainer.fold_in_step()``: read the changes since the watermark,
  read those users' full histories from the store, fold them in, rank them
  and write their lists to a private redis-server;
- baseline: the same users' full rows already in memory, implicit's
  ``partial_fit_users`` plus batch ``recommend`` (seen videos filtered) on
  the same factors: no store, no Redis.

Users per second, median of ``--repeat`` rounds, for a large batch (the
default ``fold_batch_users``, a trainer catching up) and a small one (a
quiet 0.2 s interval).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from bench.common import report, timed
from bench.trainer_data import TOPIC, started_trainer
from vrec.events import Event, EventType
from vrec.model import Matrix
from vrec.store import SourcedEvent, Store


def rate_one_more(store: Store, users: np.ndarray, seed: int) -> None:
    """Each user rates a random known video (store time, not measured)."""
    rng = np.random.default_rng(seed)
    item_ids = store.item_ids(0)
    start = store.offsets(TOPIC).get(0, 0)
    ts = 1_800_000_000_000 + start
    store.append(
        [
            SourcedEvent(
                Event(
                    f"u{u:05d}",
                    item_ids[rng.integers(len(item_ids))],
                    EventType.RATING,
                    ts + n,
                    float(rng.integers(4, 6)),
                ),
                TOPIC,
                0,
                start + n,
            )
            for n, u in enumerate(users.tolist())
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    results: dict[int, tuple[float, float]] = {}
    with started_trainer("foldin") as bench:
        settings, store, trainer, bare = (
            bench.settings,
            bench.store,
            bench.trainer,
            bench.bare,
        )
        assert trainer.served is not None
        model = trainer.served.model
        rng = np.random.default_rng(5)

        for batch in (settings.fold_batch_users, 100):
            ours, base = [], []
            for round_ in range(args.repeat):
                users = np.sort(rng.choice(model.n_users, batch, replace=False))
                rate_one_more(store, users, seed=round_)
                published, seconds = timed(trainer.fold_in_step)
                assert published == batch, (published, batch)
                ours.append(batch / seconds)

                rows = Matrix(trainer.user_items()[users])

                def baseline(users: np.ndarray = users, rows: Matrix = rows) -> None:
                    bare.partial_fit_users(users, rows)
                    bare.recommend(users, rows, N=settings.top_k)

                base.append(batch / timed(baseline)[1])
            results[batch] = (statistics.median(base), statistics.median(ours))

    for batch, (base, ours) in results.items():
        report(
            f"fold-in + publish, batches of {batch} users",
            "implicit partial_fit_users + recommend, rows in memory, no Redis",
            base,
            ours,
            "users/s",
        )
        print()


if __name__ == "__main__":
    main()
