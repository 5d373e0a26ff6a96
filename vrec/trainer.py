"""The trainer: refits, fold-ins and publishing, as steps a scheduler calls.

:class:`Trainer` holds the model in service and a copy of the store's current
values (:class:`vrec.useritems.UserItems`). The service (:mod:`vrec.schedule`) calls
:meth:`Trainer.step` in a loop; an offline replay can drive the same object.

One :meth:`Trainer.step`:

1. swaps in a finished background refit: the new model serves, its lists are
   already in Redis, and the watermark goes back to the store sequence the
   refit trained up to, so events that arrived during the refit are folded
   into the new model in this same step (none is lost);
2. notices a rollback (the version in service left ``model_dir``) and loads
   the newest version left;
3. folds in every user with events since the watermark, with the user's
   FULL history; videos that are new since the last refit get (or refresh)
   factors from their full column first; then publishes those users' lists;
4. republishes every user if Redis does not hold the model in service
   (the ``model`` key is missing: Redis restarted empty);
5. starts a background refit when ``refit_interval_s`` has passed or the
   events since the last refit reach ``refit_new_share`` of the events it
   trained on (both counted in store change sequence numbers).

A refit trains a fresh model on a snapshot of the in-memory matrix, saves a
model version, and publishes every user, all in its own thread; fold-ins go
on meanwhile. A user whose events arrive during that publish may, for one
step, see the new model's list without them: the fold-in after the swap
publishes that user again. On start the newest saved version is loaded and everything
after its sequence is folded in; without a usable version it refits.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import numpy as np

from vrec.config import Settings
from vrec.errors import StoreError
from vrec.model import (
    IntArray,
    Matrix,
    ModelParams,
    item_rows,
    limit_blas_threads,
)
from vrec.modelfile import (
    ModelInfo,
    SavedModel,
    newest_usable,
    prune,
    version_names,
)
from vrec.publish import Publisher, RedisClient
from vrec.refit import RefitJob, Snapshot, train
from vrec.serving import BoolArray, Served, publish_all, publish_users
from vrec.store import Store
from vrec.useritems import UserItems

logger = logging.getLogger(__name__)

MODEL_DIR_CHECK_S = 2.0  # how often a running trainer looks for a rollback


class Trainer:
    """Keeps an ALS model and the Redis lists in step with the event store.

    ``store`` is used from the calling thread only (background refits train
    on a snapshot and need no store); ``redis_client`` is shared with the
    refit thread, which redis-py allows.
    """

    def __init__(self, settings: Settings, store: Store, redis_client: RedisClient):
        limit_blas_threads()
        self.settings = settings
        self.store = store
        self.publisher = Publisher(redis_client, settings.redis_prefix)
        self.params = ModelParams.from_settings(settings)
        self.served: Served | None = None
        self.watermark = 0  # every event with a sequence up to this is folded in
        self._mirror: UserItems | None = None
        self._user_ids: list[str] = []
        self._item_ids: list[str] = []
        self._job: RefitJob | None = None
        self._base_time = time.monotonic()  # when the refit schedule last restarted
        self._base_seq = 0
        self._dir_checked = 0.0
        self._said_empty = False
        self._mirror_seq = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> bool:
        """Load the newest usable model (or refit), catch up, fill Redis if needed.

        Returns False while the store holds no interactions yet.
        """
        self._load_mirror()
        saved = newest_usable(self.settings.model_dir, self.store)
        if saved is not None:
            self._install(saved, hold=False)
            logger.info(
                "resumed version=%s trained_seq=%d store_seq=%d",
                saved.info.version,
                saved.info.trained_seq,
                self._mirror_seq,
            )
        elif self._matrix_is_empty():
            if not self._said_empty:
                logger.info("store holds no interactions yet; waiting for events")
                self._said_empty = True
            return False
        else:
            self.refit()
        self.fold_in_step()
        self.ensure_published()
        return True

    def step(self) -> None:
        """One round of the service loop (see the module docstring)."""
        if self.served is None:
            self.start()
            return
        self._collect_refit()
        self._check_model_dir()
        self.fold_in_step()
        self.ensure_published()
        if self._job is None:
            reason = self._refit_due()
            if reason is not None:
                self.start_refit(reason)

    def close(self) -> None:
        """Stop a running refit (it ends within one ALS iteration) and wait for it."""
        job, self._job = self._job, None
        if job is not None:
            job.cancel()

    # -- refits ------------------------------------------------------------

    def refit(self) -> ModelInfo:
        """Refit from scratch now: train, save, publish every user, serve it."""
        self.close()
        if self._mirror is None:
            self._load_mirror()
        served = train(self._snapshot(), self.settings, self.publisher)
        self._swap(served, republish=False)
        return served.info

    def start_refit(self, reason: str = "requested") -> bool:
        """Start a refit in a background thread; False if one is running."""
        if self._job is not None or self._mirror is None:
            return False
        snapshot = self._snapshot()
        self._job = RefitJob(snapshot, self.settings, self.publisher)
        logger.info(
            "refit started reason=%s seq=%d users=%d interactions=%d",
            reason,
            snapshot.seq,
            snapshot.user_items.shape[0],
            snapshot.user_items.nnz,
        )
        self._job.start()
        return True

    def user_items(self) -> Matrix:
        """The current users x items matrix: what the next refit trains on."""
        if self._mirror is None:
            self._load_mirror()
        assert self._mirror is not None
        return self._mirror.matrix()

    @property
    def refit_running(self) -> bool:
        """True while a background refit has not been swapped in (or dropped)."""
        return self._job is not None

    def wait_for_refit(self, timeout_s: float | None = None) -> bool:
        """Wait for a background refit and swap it in; False if it is still running."""
        if self._job is not None and not self._job.join(timeout_s):
            return False
        self._collect_refit()
        return True

    def _collect_refit(self) -> None:
        job = self._job
        if job is None or not job.done:
            return
        self._job = None
        if job.result is None:
            # Failed: wait a whole interval (or share) before trying again.
            self._base_time, self._base_seq = time.monotonic(), self.watermark
            return
        self._swap(job.result, republish=job.republished)

    def _swap(self, served: Served, republish: bool) -> None:
        """Serve ``served``; fold in from the sequence it was trained up to."""
        previous = self.served.version if self.served else None
        self.served = served
        self.watermark = served.info.trained_seq
        self._base_time, self._base_seq = time.monotonic(), served.info.trained_seq
        if republish:
            self.republish_all()
        else:
            self.publisher.write_model(served.meta())
        prune(
            self.settings.model_dir, self.settings.keep_models, protect=served.version
        )
        logger.info("serving version=%s previous=%s", served.version, previous)

    def _refit_due(self) -> str | None:
        if self.served is None:
            return None
        if time.monotonic() - self._base_time >= self.settings.refit_interval_s:
            return "interval"
        new = self.watermark - self._base_seq
        trained = max(self.served.info.trained_seq, 1)
        if new > 0 and new >= self.settings.refit_new_share * trained:
            return "new_events"
        return None

    # -- fold-in -----------------------------------------------------------

    def fold_in_step(self) -> int:
        """Fold in everything since the watermark and publish the users it touched.

        Returns the number of lists published.
        """
        served, mirror = self.served, self._mirror
        if served is None or mirror is None:
            return 0
        changes = self.store.changes_since(self.watermark)
        if changes.events == 0 or changes.last_seq <= self.watermark:
            return 0
        started = time.perf_counter()
        model = served.model
        dislike_below = self.params.dislike_below

        # The changed pairs make each touched row whole again (full history);
        # any user index the model has not seen yet is folded in too (no gaps).
        changed = mirror.apply(self.store.changed_interactions(self.watermark))
        users = np.union1d(changes.user_idx, changed)
        if users.size and int(users[-1]) >= model.n_users:
            users = np.union1d(users, np.arange(model.n_users, int(users[-1]) + 1))
        new_users = int(np.count_nonzero(users >= model.n_users))
        rows = mirror.rows(users)
        model.fold_in_users(users, rows)

        # Videos the last fit did not see get factors from their full column,
        # then their users are folded again to use them.
        young = changes.item_idx[changes.item_idx >= served.base_items]
        if mirror.n_items > model.n_items:
            young = np.union1d(young, np.arange(model.n_items, mirror.n_items))
        new_items = max(mirror.n_items - model.n_items, 0)
        if young.size:
            columns = self.store.item_interactions(young.tolist())
            model.fold_in_items(
                young, item_rows(columns, young, model.n_users, dislike_below)
            )
            touched = _rows_touching(rows, young)
            model.fold_in_users(users[touched], Matrix(rows[touched]))

        published = self._publish_users(served, users, rows)
        self.watermark = changes.last_seq
        logger.info(
            "fold-in users=%d new_users=%d items=%d new_items=%d events=%d seq=%d "
            "seconds=%.3f",
            users.size,
            new_users,
            young.size,
            new_items,
            changes.events,
            changes.last_seq,
            time.perf_counter() - started,
        )
        return published

    def _publish_users(self, served: Served, users: IntArray, rows: Matrix) -> int:
        assert self._mirror is not None
        self._sync_ids(served.model.n_users, served.model.n_items)
        return publish_users(
            served,
            self.publisher,
            users,
            rows,
            self._mirror.last_ts(users),
            self._user_ids,
            self._item_ids,
            self.settings.top_k,
        )

    # -- Redis -------------------------------------------------------------

    def ensure_published(self) -> bool:
        """Republish every user unless Redis holds the model in service.

        Returns True if it republished.
        """
        if self.served is None:
            return False
        meta = self.publisher.read_model()
        if meta is not None and meta.get("version") == self.served.version:
            return False
        # TODO: Redis emptied again while this runs leaves the keys written
        # before that missing until their users change (the model key is back).
        logger.info(
            "redis holds model=%s, serving %s: republishing every user",
            None if meta is None else meta.get("version"),
            self.served.version,
        )
        if self._job is not None:
            self._job.republished = True
        self.republish_all()
        return True

    def republish_all(self) -> int:
        """Publish every user's list, the popular list and the model metadata."""
        served, mirror = self.served, self._mirror
        if served is None or mirror is None:
            return 0
        started = time.perf_counter()
        matrix = mirror.matrix()
        n_users = min(matrix.shape[0], served.model.n_users)
        self._sync_ids(n_users, served.model.n_items)
        published = publish_all(
            served,
            self.publisher,
            Matrix(matrix[:n_users]),
            self._user_ids,
            self._item_ids,
            mirror.last_ts(np.arange(n_users, dtype=np.int64)),
            self.settings.top_k,
        )
        self.publisher.write_model(served.meta())
        logger.info(
            "republished users=%d version=%s seconds=%.3f",
            published,
            served.version,
            time.perf_counter() - started,
        )
        return published

    # -- the store and model files ------------------------------------------

    def _load_mirror(self) -> None:
        """Read every current value from the store (start-up only)."""
        started = time.perf_counter()
        # TODO: a start reads every pair (SQLite: about 2.5 s per 1M) and keeps
        # the matrix in memory; a saved copy of it would make restarts cheap.
        seq = self.store.last_seq()  # before reading: the copy holds at least this
        inter = self.store.interactions()
        self._mirror = UserItems.from_interactions(inter, self.params.dislike_below)
        self._mirror_seq = seq
        if self.served is None:
            self.watermark = seq
        if len(inter):
            logger.info(
                "read store interactions=%d users=%d items=%d seq=%d seconds=%.3f",
                len(inter),
                self._mirror.n_users,
                self._mirror.n_items,
                seq,
                time.perf_counter() - started,
            )

    def _matrix_is_empty(self) -> bool:
        return self._mirror is None or self._mirror.matrix().nnz == 0

    def _snapshot(self) -> Snapshot:
        assert self._mirror is not None
        matrix = self._mirror.matrix()
        n_users, n_items = matrix.shape
        self._sync_ids(n_users, n_items)
        return Snapshot(
            user_items=matrix,
            user_ids=self._user_ids[:n_users],
            item_ids=self._item_ids[:n_items],
            last_ts=self._mirror.last_ts(np.arange(n_users, dtype=np.int64)),
            seq=self.watermark,
        )

    def _sync_ids(self, n_users: int, n_items: int) -> None:
        """Make sure the user and item ids of indices below these counts are known."""
        if len(self._user_ids) < n_users:
            self._user_ids.extend(self.store.user_ids(len(self._user_ids)))
        if len(self._item_ids) < n_items:
            self._item_ids.extend(self.store.item_ids(len(self._item_ids)))
        if len(self._user_ids) < n_users or len(self._item_ids) < n_items:
            raise StoreError(
                f"the store knows {len(self._user_ids)} users and "
                f"{len(self._item_ids)} items, the model needs {n_users} and {n_items}"
            )

    def _install(self, saved: SavedModel, hold: bool) -> None:
        """Serve a loaded version; fold in from its sequence on the next step.

        ``hold`` (after a rollback) restarts the refit schedule now; otherwise
        the schedule counts from when the version was trained.
        """
        self.served = Served(
            saved.model,
            saved.info,
            saved.info.items,
            saved.popular_idx,
            saved.popular_scores,
        )
        self.watermark = saved.info.trained_seq
        self._user_ids, self._item_ids = list(saved.user_ids), list(saved.item_ids)
        if hold:
            self._base_time, self._base_seq = time.monotonic(), self.store.last_seq()
        else:
            age = max(0.0, time.time() - _epoch_s(saved.info.trained_at))
            self._base_time = time.monotonic() - age
            self._base_seq = saved.info.trained_seq

    def _check_model_dir(self) -> None:
        """Serve the newest version left if the one in service was rolled back."""
        now = time.monotonic()
        if self.served is None or self._job is not None:
            return
        if now - self._dir_checked < MODEL_DIR_CHECK_S:
            return
        self._dir_checked = now
        names = version_names(self.settings.model_dir)
        if not names or self.served.version in names:
            return
        saved = newest_usable(self.settings.model_dir, self.store)
        if saved is None:
            return
        logger.info(
            "version=%s left model_dir (rolled back); serving version=%s",
            self.served.version,
            saved.info.version,
        )
        self._install(saved, hold=True)


def _rows_touching(rows: Matrix, items: IntArray) -> BoolArray:
    """Which rows have an entry in one of ``items``."""
    hit = np.isin(rows.indices, items)
    row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    touched = np.zeros(rows.shape[0], dtype=bool)
    touched[row_of[hit]] = True
    return touched


def _epoch_s(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()
