"""The consumer service: rating events from Kafka into the store, exactly once.

One polled batch goes through three steps::

    fetch process --records--> parse --bad--> dead-letter topic (flushed first)
                                     \\--good--> store.append, one transaction
                                                   --> group offset commit

Exactly once: the store commits a batch's events, rejected records and next
offsets in one transaction, and skips records below the offset it holds. On
every partition assignment the fetch process asks for the store's offsets,
once every batch it forwarded earlier is committed, and seeks there. Kafka's
group offsets are written after the store commit for lag monitoring only.

Records come from a fetch process (:mod:`vrec.fetch`) that only polls, so
kafka-python's decoding has a core of its own. The store commit runs in a
thread, overlapping the database's work with the parsing of the next batch.

Failures: bad input is never fatal; it is counted, logged per batch and sent
to ``settings.dlq`` with headers ``reason``, ``source_topic``,
``source_partition`` and ``source_offset``. A failure of the store, of the
dead-letter producer or of the fetch process is not retried here: ``run``
stops the fetch process and raises, the service exits non-zero and is meant
to be restarted by its supervisor; a restart resumes at the stored offsets.
(kafka-python itself reconnects to a broker with backoff.) A crash between
the dead-letter flush and the store commit sends those records to the
dead-letter topic again on restart: that topic is at-least-once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial

from vrec.config import Settings
from vrec.errors import InvalidEvent
from vrec.events import EventRules
from vrec.fetch import Fetcher
from vrec.kafka import PartitionRecords, Producer, ensure_topics, make_producer
from vrec.store import Rejected, SourcedEvent, Store, open_store

logger = logging.getLogger(__name__)

# A dead-letter copy larger than this is cut to max_event_bytes: common broker
# and producer limits are 1 MiB, and a record that cannot be parked would stop
# ingest for good.
DLQ_MAX_VALUE_BYTES = 900_000
_WAKE_S = 0.2  # how often the loop looks at the stop event when idle


@dataclass
class IngestStats:
    """What one :meth:`Consumer.run` did."""

    batches: int = 0
    records: int = 0
    accepted: int = 0
    rejected: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in vars(self).items())


@dataclass
class _Batch:
    """One polled batch, parsed, on its way to the store."""

    events: list[SourcedEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    records: int = 0
    received: float = 0.0


class Consumer:
    """Reads ``settings.topic`` in the group ``settings.group_id`` into a store.

    ``store`` defaults to ``open_store(settings.store_url)``, closed by
    :meth:`run`; a store passed in is left open. :meth:`run` starts the fetch
    process with multiprocessing's "spawn" method, so a script that calls it
    must guard its entry point with ``if __name__ == "__main__":``.
    """

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self._settings = settings
        self._topic = settings.topic
        self._owns_store = store is None
        self._store = store if store is not None else open_store(settings.store_url)
        self._rules = EventRules(
            max_id_length=settings.max_id_length,
            max_event_bytes=settings.max_event_bytes,
            rating_min=settings.rating_min,
            rating_max=settings.rating_max,
        )
        self._stats = IngestStats()
        self.partitions: frozenset[int] = frozenset()
        """The partitions assigned to this consumer, as its last rebalance left them."""

    def run(self, stop: threading.Event, max_batches: int | None = None) -> IngestStats:
        """Ingest until ``stop`` is set (or ``max_batches`` were polled).

        The batches in hand are committed before it returns.
        """
        logger.info("consumer starting settings=%s", self._settings.masked())
        # Unwound in reverse: commit what is queued, stop the fetch process,
        # close the dead-letter producer, close the store.
        with ExitStack() as cleanup:
            if self._owns_store:
                cleanup.callback(self._store.close)
            ensure_topics(self._settings)
            dlq = make_producer(self._settings)
            cleanup.callback(dlq.close)
            fetcher = Fetcher(self._settings)
            cleanup.callback(fetcher.stop, self._answer_assignment)
            committer = _Committer(partial(self._commit, dlq=dlq, fetcher=fetcher))
            cleanup.callback(committer.close)
            self._loop(
                stop, fetcher, committer, partial(self._parse, dlq=dlq), max_batches
            )
            committer.close()
            committer.check()
        logger.info("consumer stopped %s", self._stats)
        return replace(self._stats)

    def _loop(
        self,
        stop: threading.Event,
        fetcher: Fetcher,
        committer: _Committer,
        parse: Callable[[Sequence[PartitionRecords]], _Batch],
        max_batches: int | None,
    ) -> None:
        polled = 0
        while not stop.is_set() and (max_batches is None or polled < max_batches):
            message = fetcher.receive(_WAKE_S)
            committer.check()
            if message is None:
                continue
            kind, body = message
            if kind == "records":
                committer.submit(parse(body))
                polled += 1
            elif kind == "assigned":
                committer.drain()
                self._answer_assignment(fetcher, body)
            elif kind == "revoked" and body:
                self.partitions = self.partitions.difference(body)
                logger.info("revoked topic=%s partitions=%s", self._topic, body)

    def _answer_assignment(self, fetcher: Fetcher, partitions: list[int]) -> None:
        """Tell the fetch process where the store left off in ``partitions``."""
        stored = self._store.offsets(self._topic)
        offsets = {p: stored.get(p) for p in partitions}
        fetcher.seek(offsets)
        self.partitions = self.partitions.union(partitions)
        logger.info(
            "assigned topic=%s partitions=%s offsets=%s",
            self._topic,
            partitions,
            {p: "beginning" if o is None else o for p, o in offsets.items()},
        )

    def _parse(self, chunks: Sequence[PartitionRecords], dlq: Producer) -> _Batch:
        """Validate a polled batch; send the bad records to the dead-letter topic."""
        batch = _Batch(received=time.perf_counter())
        parse, topic = self._rules.parse, self._topic
        for partition, offsets, keys, values in chunks:
            for offset, key, value in zip(offsets, keys, values, strict=True):
                try:
                    event = parse(value)
                except InvalidEvent as exc:
                    bad = Rejected(value, key, exc.reason, topic, partition, offset)
                    batch.rejected.append(bad)
                    self._dead_letter(bad, dlq)
                    continue
                batch.events.append(SourcedEvent(event, topic, partition, offset))
            batch.records += len(offsets)
            if offsets:
                batch.next_offsets[partition] = offsets[-1] + 1
        return batch

    def _dead_letter(self, bad: Rejected, dlq: Producer) -> None:
        logger.debug(
            "rejected topic=%s partition=%s offset=%s reason=%s",
            bad.topic,
            bad.partition,
            bad.offset,
            bad.reason,
        )
        dlq.send(self._settings.dlq, *dead_letter(bad, self._settings))

    def _commit(self, batch: _Batch, dlq: Producer, fetcher: Fetcher) -> None:
        """Store one batch (the committer thread runs this, batches in order)."""
        # Flush first: a rejected record must be on the dead-letter topic before
        # the store moves past its offset.
        if batch.rejected:
            dlq.flush()
        result = self._store.append(batch.events, batch.rejected)
        fetcher.commit(batch.next_offsets)

        stats = self._stats
        stats.batches += 1
        stats.records += batch.records
        stats.accepted += result.accepted
        stats.rejected += result.rejected
        stats.skipped += result.skipped
        logger.info(
            "batch records=%d accepted=%d rejected=%d skipped=%d seconds=%.3f",
            batch.records,
            result.accepted,
            result.rejected,
            result.skipped,
            time.perf_counter() - batch.received,
        )
        if batch.rejected:
            first = batch.rejected[0]
            logger.warning(
                "rejected=%d first: topic=%s partition=%s offset=%s reason=%s",
                len(batch.rejected),
                first.topic,
                first.partition,
                first.offset,
                first.reason,
            )


def dead_letter(
    bad: Rejected, settings: Settings
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The key, value and headers of the dead-letter copy of ``bad``."""
    headers = [
        ("reason", bad.reason.encode()),
        ("source_topic", bad.topic.encode()),
        ("source_partition", str(bad.partition).encode()),
        ("source_offset", str(bad.offset).encode()),
    ]
    value = bad.value
    if value is not None and len(value) > DLQ_MAX_VALUE_BYTES:
        headers.append(("truncated_from", str(len(value)).encode()))
        value = value[: settings.max_event_bytes]
    if value is None:
        headers.append(("null_value", b"1"))
        # Kafka refuses a record with neither key nor value.
        if bad.key is None:
            value = b""
    return bad.key, value, headers


class _Committer:
    """Runs ``commit`` on batches in a thread of its own, one at a time, in order.

    One batch waits while another commits: memory stays bounded and the
    store's work overlaps with the parsing of the next batch. After a failed
    commit the rest are dropped and the error is raised to the caller.
    """

    def __init__(self, commit: Callable[[_Batch], None]) -> None:
        self._commit = commit
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vrec-commit")
        self._thread.start()

    def submit(self, batch: _Batch) -> None:
        """Queue ``batch``; wait while another one is already waiting."""
        self.check()
        self._queue.put(batch)

    def drain(self) -> None:
        """Wait until every queued batch is committed."""
        self._queue.join()
        self.check()

    def check(self) -> None:
        """Raise the error of a failed commit, if any."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Commit what is queued (unless a commit failed) and end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self._commit(batch)
            except BaseException as exc:
                self._error = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()


def run_consumer(settings: Settings, stop: threading.Event) -> IngestStats:
    """The service: ingest until ``stop`` is set; what ``vrec consume`` runs."""
    return Consumer(settings).run(stop)
