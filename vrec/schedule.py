"""The trainer service's schedule: one :meth:`Trainer.step` every interval.

This is all ``trainer/`` and ``vrec train`` run; the fold-in and refit logic
lives in :mod:`vrec.trainer`, so an offline replay can drive the same object
on its own clock.
"""

from __future__ import annotations

import logging
import threading
import time

from vrec.config import Settings
from vrec.errors import StoreError, VrecError
from vrec.publish import connect
from vrec.store import Store, open_store
from vrec.trainer import Trainer

logger = logging.getLogger(__name__)

MAX_RETRY_S = 30.0


def run_trainer(settings: Settings, stop: threading.Event, once: bool = False) -> None:
    """The trainer service: step every ``fold_interval_s`` until ``stop`` is set.

    ``once``: one full refit from the store, publish every user, save the
    model, return. Otherwise errors are logged and retried with back-off (a
    store that cannot be opened yet, a failed step); the model in service
    stays.
    """
    logger.info("trainer starting once=%s settings=%s", once, settings.masked())
    client = connect(settings.redis_url)
    try:
        store = open_store(settings.store_url) if once else _open_store(settings, stop)
        if store is None:
            return
        with store:
            trainer = Trainer(settings, store, client)
            try:
                if once:
                    info = trainer.refit()
                    logger.info("trained once version=%s", info.version)
                else:
                    _loop(trainer, settings, stop)
            finally:
                trainer.close()
    finally:
        client.close()
        logger.info("trainer stopped")


def _open_store(settings: Settings, stop: threading.Event) -> Store | None:
    delay = settings.fold_interval_s
    while not stop.is_set():
        try:
            return open_store(settings.store_url)
        except StoreError as exc:
            logger.error("cannot open the store error=%s retry_in_s=%.1f", exc, delay)
            stop.wait(delay)
            delay = min(2 * delay, MAX_RETRY_S)
    return None


def _loop(trainer: Trainer, settings: Settings, stop: threading.Event) -> None:
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            trainer.step()
            failures = 0
        except VrecError as exc:
            failures += 1
            delay = min(settings.fold_interval_s * 2**failures, MAX_RETRY_S)
            logger.error("trainer step failed error=%s retry_in_s=%.1f", exc, delay)
            stop.wait(delay)
            continue
        stop.wait(max(0.0, settings.fold_interval_s - (time.monotonic() - started)))
