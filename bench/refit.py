"""Full refit: vrec's refit against a bare implicit fit of the same matrix.

    .venv/bin/python -m bench.refit [--repeat 3]

On the generated store (bench/trainer_data.py: ~6,000 users, 3,700 videos,
1M ratings, SQLite) with the default parameters (factors=20,
regularization=0.1, iterations=20):

- baseline: ``implicit.cpu.als.AlternatingLeastSquares(...).fit(user_items)``
  on the very matrix vrec trains on, BLAS at one thread, same OpenMP threads;
- (a) a refit from the store: read every current value, build the matrix,
  fit a fresh model, check shape and finiteness, popular items; what
  ``vrec train --once`` and a trainer start without a model file do before
  they publish;
- (b) a refit in the running trainer: merge the in-memory matrix, fit,
  check, popular items, save the model file.

Each figure is the median of ``--repeat`` runs, interleaved. The whole
``vrec train --once`` (with the publish of every user to a private Redis) is
printed for information.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import implicit.cpu.als
import numpy as np

from bench.common import report, timed
from bench.trainer_data import bench_store
from vrec.config import Settings
from vrec.devservers import local_redis
from vrec.model import AlsModel, Matrix, ModelParams, popular_items
from vrec.modelfile import save_model, utc_now
from vrec.publish import connect
from vrec.schedule import run_trainer
from vrec.store import Store, open_store
from vrec.useritems import UserItems


def bare_fit(user_items: Matrix, params: ModelParams) -> float:
    """Seconds of implicit's own fit, nothing else."""
    als = implicit.cpu.als.AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        alpha=params.alpha,
        iterations=params.iterations,
        random_state=params.random_seed,
        dtype=np.float32,
    )
    return timed(lambda: als.fit(user_items, show_progress=False))[1]


def refit_from_store(store: Store, settings: Settings) -> tuple[Matrix, float]:
    """(a): the cold refit, up to the moment the lists would be published."""
    params = ModelParams.from_settings(settings)

    def run() -> Matrix:
        inter = store.interactions()
        _ids = (store.user_ids(0), store.item_ids(0))  # the trainer needs them too
        matrix = UserItems.from_interactions(inter, params.dislike_below).matrix()
        n_users, n_items = matrix.shape
        AlsModel.fit(matrix, params, n_users=n_users, n_items=n_items)
        popular_items(matrix, settings.popular_k)
        return matrix

    return timed(run)


def refit_in_trainer(
    mirror: UserItems, settings: Settings, ids: tuple[list[str], list[str]]
) -> float:
    """(b): the warm refit of a running trainer, with its model file."""
    params = ModelParams.from_settings(settings)

    def run() -> None:
        matrix = mirror.matrix()
        n_users, n_items = matrix.shape
        started = time.perf_counter()
        model = AlsModel.fit(matrix, params, n_users=n_users, n_items=n_items)
        fit_s = time.perf_counter() - started
        popular_idx, popular_scores = popular_items(matrix, settings.popular_k)
        save_model(
            settings.model_dir,
            model,
            user_ids=ids[0][:n_users],
            item_ids=ids[1][:n_items],
            popular_idx=popular_idx,
            popular_scores=popular_scores,
            trained_seq=0,
            trained_at=utc_now(),
            interactions=int(matrix.nnz),
            params=params.to_dict(),
            fit_seconds=fit_s,
        )

    return timed(run)[1]


def median_of(runs: list[Callable[[], float]], repeat: int) -> list[float]:
    """Run each callable ``repeat`` times, interleaved; the median of each."""
    seconds: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for n, run in enumerate(runs):
            seconds[n].append(run())
    return [statistics.median(s) for s in seconds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vrec-bench-refit-") as tmp:
        workdir = Path(tmp)
        url = bench_store(workdir)
        settings = Settings(store_url=url, model_dir=workdir / "models")
        params = ModelParams.from_settings(settings)
        with open_store(url) as store:
            matrix, _ = refit_from_store(store, settings)  # warm-up, and the matrix
            mirror = UserItems.from_interactions(
                store.interactions(), params.dislike_below
            )
            ids = (store.user_ids(0), store.item_ids(0))
            print(
                f"matrix: {matrix.shape[0]:,} users x {matrix.shape[1]:,} videos, "
                f"{matrix.nnz:,} interactions"
            )
            base_s, cold_s, warm_s = median_of(
                [
                    lambda: bare_fit(matrix, params),
                    lambda: refit_from_store(store, settings)[1],
                    lambda: refit_in_trainer(mirror, settings, ids),
                ],
                args.repeat,
            )

        report(
            "(a) refit from the store (read, matrix, fit, checks, popular)",
            "bare implicit fit",
            base_s,
            cold_s,
            "s",
            higher_is_better=False,
            goal=1.2,
        )
        print()
        report(
            "(b) refit in the running trainer (matrix, fit, checks, popular, save)",
            "bare implicit fit",
            base_s,
            warm_s,
            "s",
            higher_is_better=False,
            goal=1.2,
        )

        # For information: the whole `vrec train --once`, publish included.
        with local_redis() as redis_server:
            once = settings.model_copy(
                update={"redis_url": f"redis://{redis_server.address}/0"}
            )
            _, once_s = timed(lambda: run_trainer(once, threading.Event(), once=True))
            client = connect(once.redis_url)
            keys = client.dbsize()
            client.close()
        print()
        print(
            f"vrec train --once (read, fit, save, publish {keys - 2:,} lists): "
            f"{once_s:.3f} s"
        )


if __name__ == "__main__":
    main()
