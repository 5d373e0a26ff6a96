"""Helpers for the ingest tests: settings, producing, reading back, processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from vrec.config import Settings
from vrec.devservers import LocalServer
from vrec.events import Event, EventType
from vrec.ingest import Consumer, IngestStats
from vrec.kafka import make_producer

REPO = Path(__file__).resolve().parent.parent

# (topic, partition, offset, user_id, item_id, event_type, rating, ts)
StoredRow = tuple[str, int, int, str, str, str, float | None, int]


def make_settings(
    broker: LocalServer, topic: str, store_url: str, **overrides: Any
) -> Settings:
    """Settings for one test: its own topic, group and store."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": broker.address,
        "topic": topic,
        "group_id": f"g-{topic}",
        "store_url": store_url,
        "topic_partitions": 3,
        "poll_timeout_ms": 200,
    }
    values.update(overrides)
    return Settings(**values)


def env_for(settings: Settings) -> dict[str, str]:
    """The environment that gives ``python -m consumers`` these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VREC_")}
    for name in (
        "kafka_bootstrap_servers",
        "topic",
        "group_id",
        "store_url",
        "topic_partitions",
        "batch_max_records",
        "poll_timeout_ms",
    ):
        env[f"VREC_{name.upper()}"] = str(getattr(settings, name))
    return env


def rating_events(count: int, start: int = 0, users: int = 97) -> list[Event]:
    """``count`` distinct rating events with known content."""
    return [
        Event(
            f"u{n % users}",
            f"v{n % 89}",
            EventType.RATING,
            1_700_000_000_000 + n,
            float(1 + n % 5),
        )
        for n in range(start, start + count)
    ]


def produce_events(settings: Settings, events: Sequence[Event]) -> None:
    """Send ``events`` to ``settings.topic``, keyed by user, and wait for them."""
    produce_raw(settings, [(e.key(), e.to_json()) for e in events])


def produce_raw(
    settings: Settings, records: Sequence[tuple[bytes | None, bytes | None]]
) -> None:
    """Send raw (key, value) records; the producer partitions them by key."""
    producer = make_producer(settings)
    try:
        for key, value in records:
            producer.send(settings.topic, key, value)
        producer.flush(30)
    finally:
        producer.close()


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def stored_rows(store_url: str) -> list[StoredRow]:
    """Every stored event with its Kafka position, read straight from the tables."""
    sql = (
        "SELECT e.topic, e.part, e.kafka_offset, u.user_id, i.item_id, "
        "e.event_type, e.rating, e.ts FROM events e "
        "JOIN users u ON u.user_idx = e.user_idx "
        "JOIN items i ON i.item_idx = e.item_idx ORDER BY e.seq"
    )
    if store_url.startswith("postgresql://"):
        with psycopg.connect(store_url) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]  # type: ignore[misc]
    conn = sqlite3.connect(store_url)
    try:
        return [tuple(row) for row in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def _count(store_url: str, table: str) -> int:
    sql = f"SELECT COUNT(*) FROM {table}"
    if store_url.startswith("postgresql://"):
        with psycopg.connect(store_url) as conn:
            row = conn.execute(sql).fetchone()
    else:
        conn = sqlite3.connect(store_url)
        try:
            row = conn.execute(sql).fetchone()
        finally:
            conn.close()
    return int(row[0]) if row else 0


def stored_rejected(store_url: str) -> int:
    """How many rejected records the store holds."""
    return _count(store_url, "rejected")


def stored_count(store_url: str) -> int:
    """How many events the store holds (0 before it exists)."""
    if not store_url.startswith("postgresql://") and not Path(store_url).exists():
        return 0
    try:
        return _count(store_url, "events")
    except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
        return 0


def assert_exactly_once(store_url: str, events: Sequence[Event]) -> None:
    """The store holds each of ``events`` once, at a Kafka position of its own."""
    rows = stored_rows(store_url)
    positions = [(r[0], r[1], r[2]) for r in rows]
    assert len(positions) == len(set(positions)), "a Kafka position stored twice"
    stored = sorted((r[3], r[4], r[6], r[7]) for r in rows)
    expected = sorted((e.user_id, e.item_id, e.rating, e.ts) for e in events)
    assert len(stored) == len(expected)
    assert stored == expected


@dataclass
class Received:
    """One record read back from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_topic(
    settings: Settings, topic: str, count: int, timeout_s: float = 30.0
) -> list[Received]:
    """Read ``count`` records from every partition of ``topic``, from the start."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        got: list[Received] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(
                    Received(r.partition, r.offset, r.key, r.value, dict(r.headers))
                    for r in records
                )
        return got
    finally:
        consumer.close()


@dataclass
class Running:
    """A consumer running in a thread of the test process."""

    consumer: Consumer
    stop: threading.Event
    stats: list[IngestStats]


@contextmanager
def consumer_thread(settings: Settings, **kwargs: Any) -> Iterator[Running]:
    """Run a :class:`Consumer` in a thread; stop it and join it on exit."""
    running = Running(Consumer(settings, **kwargs), threading.Event(), [])
    errors: list[BaseException] = []

    def run() -> None:
        try:
            running.stats.append(running.consumer.run(running.stop))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"consumer-{id(running)}")
    thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        thread.join(60)
    assert not thread.is_alive(), "the consumer did not stop"
    if errors:
        raise errors[0]


class ConsumerProcess:
    """``python -m consumers`` in a process group of its own, logging to a file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumers"],
            cwd=REPO,
            env=env_for(settings),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)

    def group_alive(self) -> bool:
        """Whether any process of its group still runs (zombies do not count)."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == self.pgid and fields[0] != "Z":
                return True
        return False

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill_all(self) -> None:
        """SIGKILL whatever is left of the group and reap the main process."""
        with suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        finally:
            self._out.close()
