"""Publishing every user's top-K to Redis, against implicit's batch recommend alone.

    .venv/bin/python -m bench.publish [--repeat 3]

On the generated store (bench/trainer_data.py: ~6,000 users, 3,700 videos,
1M ratings) after one refit (defaults: factors=20, top_k=10):

- baseline: ``model.recommend(all_users, user_items, N=top_k,
  filter_already_liked_items=True)`` of implicit on the same factors, the
  ranking alone (no ids, no JSON, no Redis);
- vrec: ``Trainer.republish_all()``, what a refit or an emptied Redis costs:
  rank every user (seen videos excluded), encode the JSON values, write
  them to a private redis-server in pipelined rounds, then the popular list
  and the model key.

Users per second, median of ``--repeat`` runs each, interleaved.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from bench.common import report, timed
from bench.trainer_data import started_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with started_trainer("publish") as bench:
        settings, trainer, bare = bench.settings, bench.trainer, bench.bare
        assert trainer.served is not None
        model = trainer.served.model
        user_items = trainer.user_items()
        users = np.arange(model.n_users)
        base_s: list[float] = []
        ours_s: list[float] = []
        for _ in range(args.repeat):
            base_s.append(
                timed(
                    lambda: bare.recommend(
                        users,
                        user_items,
                        N=settings.top_k,
                        filter_already_liked_items=True,
                    )
                )[1]
            )
            ours_s.append(timed(trainer.republish_all)[1])
        lists = bench.client.dbsize() - 2

    n = len(users)
    print(
        f"{n:,} users x {model.n_items:,} videos, top_k={settings.top_k}, "
        f"{lists:,} lists in Redis"
    )
    report(
        "publish every user's top-K to Redis",
        "implicit batch recommend, filtered, no Redis",
        n / statistics.median(base_s),
        n / statistics.median(ours_s),
        "users/s",
        goal=0.8,
    )


if __name__ == "__main__":
    main()
