"""The consumer process killed mid-stream, and stopped by SIGTERM."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.kafka_helpers import (
    ConsumerProcess,
    assert_exactly_once,
    make_settings,
    produce_events,
    rating_events,
    stored_count,
    stored_rows,
    wait_until,
)
from vrec.config import Settings
from vrec.devservers import LocalServer
from vrec.events import Event
from vrec.kafka import ensure_topics, make_producer
from vrec.store import open_store

EVENTS = 3000
KILLS = 4
MAX_EVENTS = 20_000


@pytest.mark.slow
def test_sigkill_mid_stream_then_restart_stores_every_event_once(
    broker: LocalServer, topic: str, sqlite_url: str, tmp_path: Path
) -> None:
    # Small batches make many transactions, so a kill lands between or inside one.
    # Events keep arriving all the while the consumer dies and restarts.
    settings = make_settings(broker, topic, sqlite_url, batch_max_records=20)
    ensure_topics(settings)
    rng = random.Random(3)
    counts_at_kill = []

    with Trickle(settings, per_second=150) as trickle:
        for run in range(KILLS):
            process = ConsumerProcess(settings, tmp_path / f"consumer-{run}.log")
            try:
                before = stored_count(sqlite_url)
                wait_until(
                    lambda: stored_count(sqlite_url) >= before + 100,  # noqa: B023
                    60,
                    f"progress past {before}",
                )
                time.sleep(rng.uniform(0.0, 0.05))
                counts_at_kill.append(stored_count(sqlite_url))
                process.signal(signal.SIGKILL)
                process.wait(10)
                # Its fetch process sees the parent gone, leaves the group, exits.
                wait_until(
                    lambda: not process.group_alive(),  # noqa: B023
                    20,
                    "the orphan to exit",
                )
            finally:
                process.kill_all()
    events = trickle.sent
    assert counts_at_kill == sorted(counts_at_kill) and counts_at_kill[-1] < len(events)

    process = ConsumerProcess(settings, tmp_path / "consumer-last.log")
    try:
        wait_until(lambda: "assigned" in process.log_tail(), 60, "an assignment")
        wait_until(lambda: stored_count(sqlite_url) >= len(events), 60, "all events")
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_tail()
    finally:
        process.kill_all()
    assert_exactly_once(sqlite_url, events)


class Trickle:
    """Produces rating events in a thread, about ``per_second``, until the block
    ends (at most ``MAX_EVENTS``); ``sent`` lists those delivered."""

    def __init__(self, settings: Settings, per_second: float) -> None:
        self.sent: list[Event] = []
        self._settings = settings
        self._chunk = max(1, int(per_second / 10))
        self._stop = threading.Event()
        self._failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._send, name="trickle")

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive()
        if self._failed:
            raise self._failed[0]

    def _send(self) -> None:
        producer = make_producer(self._settings)
        try:
            while not self._stop.is_set() and len(self.sent) < MAX_EVENTS:
                chunk = rating_events(self._chunk, start=len(self.sent))
                for event in chunk:
                    producer.send(self._settings.topic, event.key(), event.to_json())
                producer.flush(30)
                self.sent += chunk
                self._stop.wait(0.1)
        except BaseException as exc:
            self._failed.append(exc)
        finally:
            producer.close()


def test_sigterm_finishes_the_batch_and_exits_zero(
    broker: LocalServer, topic: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(broker, topic, sqlite_url, batch_max_records=50)
    ensure_topics(settings)
    produce_events(settings, rating_events(EVENTS))
    process = ConsumerProcess(settings, tmp_path / "consumer.log")
    try:
        wait_until(lambda: stored_count(sqlite_url) > 0, 60, "the first batch")
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_tail()
        wait_until(lambda: not process.group_alive(), 20, "the fetch process to exit")
    finally:
        process.kill_all()
    assert "consumer stopped" in process.log_tail(), process.log_tail()

    # Whole batches only: per partition, offsets 0..n-1 and the next offset n.
    rows = stored_rows(sqlite_url)
    with open_store(sqlite_url) as store:
        offsets = store.offsets(topic)
    for partition, next_offset in offsets.items():
        stored = sorted(r[2] for r in rows if r[1] == partition)
        assert stored == list(range(next_offset))
    assert sum(offsets.values()) == len(rows) > 0
