"""A refit: a fresh model from a snapshot of the matrix, saved, every user published.

:func:`train` touches nothing but its arguments, the model directory and
Redis, so :class:`RefitJob` can run it in a thread while the trainer keeps
folding in events with the model in service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vrec.config import Settings
from vrec.errors import ModelError, VrecError
from vrec.model import (
    AlsModel,
    FitCancelled,
    IntArray,
    Matrix,
    ModelParams,
    popular_items,
)
from vrec.modelfile import save_model, utc_now
from vrec.publish import Publisher
from vrec.serving import Served, publish_all

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What a refit trains on: taken in the trainer's thread, never changed."""

    user_items: Matrix
    user_ids: list[str]
    item_ids: list[str]
    last_ts: IntArray  # per user, for the lists' event_ts
    seq: int  # every event up to this store sequence is in user_items


def train(
    snapshot: Snapshot,
    settings: Settings,
    publisher: Publisher,
    cancel: Callable[[], bool] | None = None,
) -> Served:
    """Fit a fresh model, save it as a new version, publish every user's list.

    The model metadata key is left to the caller, who puts the model in
    service. Raises :class:`ModelError` (the caller keeps its model) or
    :class:`FitCancelled`.
    """
    started = time.perf_counter()
    trained_at = utc_now()
    params = ModelParams.from_settings(settings)
    matrix = snapshot.user_items
    n_users, n_items = matrix.shape
    if matrix.nnz == 0:
        raise ModelError("the store holds no interactions to train on")
    model = AlsModel.fit(
        matrix, params, n_users=n_users, n_items=n_items, cancel=cancel
    )
    fit_s = time.perf_counter() - started

    popular_idx, popular_scores = popular_items(matrix, settings.popular_k)
    info = save_model(
        settings.model_dir,
        model,
        user_ids=snapshot.user_ids,
        item_ids=snapshot.item_ids,
        popular_idx=popular_idx,
        popular_scores=popular_scores,
        trained_seq=snapshot.seq,
        trained_at=trained_at,
        interactions=int(matrix.nnz),
        params=params.to_dict(),
        fit_seconds=fit_s,
    )
    served = Served(model, info, n_items, popular_idx, popular_scores)

    saved_at = time.perf_counter()
    published = publish_all(
        served,
        publisher,
        matrix,
        snapshot.user_ids,
        snapshot.item_ids,
        snapshot.last_ts,
        settings.top_k,
        cancel,
    )
    logger.info(
        "refit version=%s users=%d items=%d interactions=%d seq=%d published=%d "
        "fit_s=%.3f publish_s=%.3f seconds=%.3f",
        info.version,
        n_users,
        n_items,
        info.interactions,
        snapshot.seq,
        published,
        fit_s,
        time.perf_counter() - saved_at,
        time.perf_counter() - started,
    )
    return served


class RefitJob:
    """:func:`train` in a background thread; the result waits to be collected."""

    def __init__(self, snapshot: Snapshot, settings: Settings, publisher: Publisher):
        self.snapshot = snapshot
        self.result: Served | None = None
        self.republished = False  # Redis was refilled from the old model meanwhile
        self._cancel = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(settings, publisher), name="vrec-refit", daemon=True
        )

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def _run(self, settings: Settings, publisher: Publisher) -> None:
        try:
            self.result = train(self.snapshot, settings, publisher, self._cancel.is_set)
        except FitCancelled:
            logger.info("refit cancelled")
        except VrecError as exc:
            logger.error("refit failed error=%s; the model in service stays", exc)
        except Exception:
            logger.exception("refit crashed; the model in service stays")

    @property
    def done(self) -> bool:
        """True once the thread has ended, with or without a result."""
        return not self._thread.is_alive()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the thread; True if it has ended."""
        self._thread.join(timeout_s)
        return self.done

    def cancel(self) -> None:
        """Stop the fit at its next iteration (or the publish at its next round)."""
        self._cancel.set()
        self._thread.join()
