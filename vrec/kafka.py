"""A small typed adapter over kafka-python; the rest of vrec never touches it.

- :func:`make_consumer` joins the consumer group for ``settings.topic`` and
  returns a :class:`GroupConsumer` that polls :class:`PartitionRecords`.
- :func:`make_producer` returns a :class:`Producer` whose :meth:`Producer.flush`
  raises if any record sent since the last flush was not delivered.
- :func:`ensure_topics` creates the topic and its dead-letter topic if missing.

Failures of the client are raised as :class:`BrokerError`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import kafka
import kafka.errors
from kafka.structs import OffsetAndMetadata, TopicPartition

from vrec.config import Settings
from vrec.errors import VrecError

logger = logging.getLogger(__name__)

# The local broker needs short group timeouts to hand out partitions quickly
# (docs: NOTES-kafka-local.md); a real cluster is fine with them too.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
_TOPIC_EXISTS = kafka.errors.TopicAlreadyExistsError.errno


class BrokerError(VrecError):
    """Kafka could not be reached, or refused a request."""


class PartitionRecords(NamedTuple):
    """Records of one partition as parallel lists: cheap to build and to pickle."""

    partition: int
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]


class RebalanceListener(Protocol):
    """Told which partitions of the topic this consumer gains and loses."""

    def assigned(self, partitions: list[int]) -> None:
        """Called before the first fetch from ``partitions``; may seek them."""

    def revoked(self, partitions: list[int]) -> None:
        """Called when ``partitions`` are taken away (also on close)."""


def bootstrap_servers(settings: Settings) -> list[str]:
    """``kafka_bootstrap_servers`` split on commas."""
    return [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]


class GroupConsumer:
    """A member of the consumer group ``settings.group_id`` reading one topic."""

    def __init__(self, settings: Settings, listener: RebalanceListener) -> None:
        self.topic = settings.topic
        self._listener = listener
        try:
            self._consumer = kafka.KafkaConsumer(
                bootstrap_servers=bootstrap_servers(settings),
                client_id="vrec-consumer",
                group_id=settings.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                max_poll_records=settings.batch_max_records,
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
            )
            self._consumer.subscribe([self.topic], listener=_ListenerBridge(listener))
        except kafka.errors.KafkaError as exc:
            raise BrokerError(
                f"cannot join group {settings.group_id!r}: {exc}"
            ) from exc

    def poll_partitions(
        self, max_records: int, timeout_ms: int
    ) -> list[PartitionRecords]:
        """The next records, at most ``max_records``, waiting up to ``timeout_ms``,
        grouped by partition as parallel lists (no object per record)."""
        try:
            fetched = self._consumer.poll(
                timeout_ms=timeout_ms, max_records=max_records
            )
        except kafka.errors.KafkaError as exc:
            raise BrokerError(f"poll of topic {self.topic!r} failed: {exc}") from exc
        return [
            PartitionRecords(
                tp.partition,
                [r.offset for r in records],
                [r.key for r in records],
                [r.value for r in records],
            )
            for tp, records in fetched.items()
        ]

    def assignment(self) -> list[int]:
        """The partitions of the topic this member owns right now."""
        return sorted(tp.partition for tp in self._consumer.assignment())

    def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` on the next poll."""
        self._consumer.seek(TopicPartition(self.topic, partition), offset)

    def seek_to_beginning(self, partition: int) -> None:
        """Read ``partition`` from its oldest record on the next poll."""
        self._consumer.seek_to_beginning(TopicPartition(self.topic, partition))

    def commit(self, offsets: dict[int, int], wait: bool = False) -> None:
        """Commit next offsets of owned partitions to the group; log failures.

        vrec keeps its offsets in the store; the group's copy only feeds lag
        monitoring, so a failed commit (say, after a rebalance) is harmless.
        Without ``wait`` the commit is sent in the background.
        """
        owned = set(self.assignment())
        wanted = {
            TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in offsets.items()
            if p in owned
        }
        if not wanted:
            return
        if not wait:
            self._consumer.commit_async(wanted, callback=_log_commit)
            return
        try:
            self._consumer.commit(wanted, timeout_ms=5000)
        except kafka.errors.KafkaError as exc:
            logger.debug("group offset commit failed offsets=%s error=%s", offsets, exc)

    def close(self) -> None:
        """Leave the group and close connections."""
        try:
            self._consumer.close(autocommit=False)
        except kafka.errors.KafkaError as exc:
            logger.warning("closing the consumer failed: %s", exc)


def _log_commit(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        logger.debug(
            "group offset commit failed offsets=%s error=%s", offsets, response
        )


class _ListenerBridge(kafka.ConsumerRebalanceListener):  # type: ignore[misc]
    """Turns kafka-python's rebalance callbacks into :class:`RebalanceListener`."""

    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._listener.assigned(sorted(tp.partition for tp in assigned))

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._listener.revoked(sorted(tp.partition for tp in revoked))


def make_consumer(settings: Settings, listener: RebalanceListener) -> GroupConsumer:
    """Join the group ``settings.group_id`` on ``settings.topic``."""
    return GroupConsumer(settings, listener)


class Producer:
    """Sends records; :meth:`flush` reports any that could not be delivered."""

    def __init__(self, settings: Settings, **config: Any) -> None:
        self._lock = threading.Lock()
        self._failures: list[BaseException] = []
        try:
            self._producer = kafka.KafkaProducer(
                bootstrap_servers=bootstrap_servers(settings),
                client_id="vrec-producer",
                **config,
            )
        except kafka.errors.KafkaError as exc:
            raise BrokerError(f"cannot connect a producer: {exc}") from exc

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Queue one record; delivery is checked by :meth:`flush`."""
        try:
            future = self._producer.send(
                topic, value=value, key=key, headers=list(headers)
            )
        except kafka.errors.KafkaError as exc:
            raise BrokerError(f"cannot send to topic {topic!r}: {exc}") from exc
        future.add_errback(self._failed)

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failures.append(exc)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued record is delivered; raise if any was not."""
        try:
            self._producer.flush(timeout=timeout_s)
        except kafka.errors.KafkaError as exc:
            raise BrokerError(f"flush failed: {exc}") from exc
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise BrokerError(
                f"{len(failures)} record(s) were not delivered; first: {failures[0]}"
            ) from failures[0]

    def close(self) -> None:
        """Flush what is queued, then close connections."""
        try:
            self._producer.close()
        except kafka.errors.KafkaError as exc:
            logger.warning("closing the producer failed: %s", exc)


def make_producer(settings: Settings, **config: Any) -> Producer:
    """A producer to ``settings.kafka_bootstrap_servers``; ``config`` passes
    kafka-python options (say ``linger_ms``) through."""
    return Producer(settings, **config)


def ensure_topics(settings: Settings, timeout_ms: int = 30_000) -> None:
    """Create ``settings.topic`` and ``settings.dlq`` if missing.

    The topic gets ``settings.topic_partitions`` partitions, the dead-letter
    topic one; both take the broker's default replication factor. A topic
    that already exists is left as it is, whatever its partition count.
    """
    wanted = {
        settings.topic: {
            "num_partitions": settings.topic_partitions,
            "replication_factor": -1,
        },
        settings.dlq: {"num_partitions": 1, "replication_factor": -1},
    }
    try:
        admin = kafka.KafkaAdminClient(
            bootstrap_servers=bootstrap_servers(settings), client_id="vrec-admin"
        )
    except kafka.errors.KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka to create topics: {exc}") from exc
    try:
        result = admin.create_topics(
            wanted, timeout_ms=timeout_ms, raise_errors=False, wait_for_metadata=True
        )
    except kafka.errors.KafkaError as exc:
        raise BrokerError(f"cannot create topics {sorted(wanted)}: {exc}") from exc
    finally:
        admin.close()
    for topic in result["topics"]:
        if topic["error_code"] not in (0, _TOPIC_EXISTS):
            raise BrokerError(
                f"cannot create topic {topic['name']!r}: {topic['error_message']}"
            )
        if topic["error_code"] == 0:
            logger.info(
                "created topic=%s partitions=%s", topic["name"], topic["num_partitions"]
            )
