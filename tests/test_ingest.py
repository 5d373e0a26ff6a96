"""The consumer against the real broker: end to end on both stores, and a group."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.kafka_helpers import (
    REPO,
    assert_exactly_once,
    consumer_thread,
    make_settings,
    produce_events,
    rating_events,
    stored_count,
    stored_rows,
    wait_until,
)
from vrec.devservers import LocalServer
from vrec.kafka import ensure_topics
from vrec.produce import produce_file
from vrec.store import open_store

TUTORIAL = REPO / "data" / "ratings.csv"


def _tutorial_rows() -> list[tuple[str, str, float]]:
    lines = TUTORIAL.read_text().split()[1:]
    return [(u, v, float(r)) for u, v, r in (line.split(",") for line in lines)]


def test_end_to_end_the_store_holds_exactly_what_was_produced(
    broker: LocalServer, topic: str, store_url: str
) -> None:
    settings = make_settings(broker, topic, store_url, batch_max_records=500)
    generated = rating_events(3000)
    before = time.time_ns() // 1_000_000
    assert produce_file(settings, TUTORIAL, progress=False) == 10
    after = time.time_ns() // 1_000_000
    produce_events(settings, generated)

    with consumer_thread(settings) as running:
        wait_until(lambda: stored_count(store_url) >= 3010, 60, "3010 stored events")
    assert running.stats[0].accepted == 3010 and running.stats[0].rejected == 0

    rows = stored_rows(store_url)
    tutorial = [r for r in rows if r[3] in {u for u, _, _ in _tutorial_rows()}]
    assert sorted((r[3], r[4], r[6]) for r in tutorial) == sorted(_tutorial_rows())
    # The table has no time column: each row got the time it was sent.
    assert all(before <= r[7] <= after for r in tutorial)
    generated_rows = [r for r in rows if r not in tutorial]
    assert sorted((r[3], r[4], r[6], r[7]) for r in generated_rows) == sorted(
        (e.user_id, e.item_id, e.rating, e.ts) for e in generated
    )
    positions = {(r[0], r[1], r[2]) for r in rows}
    assert len(positions) == len(rows) == 3010

    # The next offsets, in the store and (for monitoring) in the group.
    with open_store(store_url) as store:
        offsets = store.offsets(topic)
    assert sum(offsets.values()) == 3010
    group = KafkaConsumer(
        bootstrap_servers=broker.address,
        group_id=settings.group_id,
        enable_auto_commit=False,
    )
    try:
        for partition, offset in offsets.items():
            assert group.committed(TopicPartition(topic, partition)) == offset
    finally:
        group.close()


def test_a_restarted_consumer_reads_only_what_is_new(
    broker: LocalServer, topic: str, sqlite_url: str
) -> None:
    settings = make_settings(broker, topic, sqlite_url)
    first, second = rating_events(400), rating_events(300, start=400)
    produce_events(settings, first)
    with consumer_thread(settings):
        wait_until(lambda: stored_count(sqlite_url) >= 400, 60, "400 stored events")

    produce_events(settings, second)
    with consumer_thread(settings) as running:
        wait_until(lambda: stored_count(sqlite_url) >= 700, 60, "700 stored events")
    assert running.stats[0].records == 300 and running.stats[0].skipped == 0
    assert_exactly_once(sqlite_url, first + second)


@pytest.mark.slow
def test_two_consumers_in_one_group_store_every_event_once(
    broker: LocalServer, topic: str, pg_url: str
) -> None:
    settings = make_settings(broker, topic, pg_url, batch_max_records=100)
    ensure_topics(settings)
    events = rating_events(6000)
    produce_events(settings, events[:2000])

    with consumer_thread(settings) as first:
        wait_until(lambda: stored_count(pg_url) > 0, 60, "the first member to store")
        # A second member joins mid-stream: the partitions are split.
        with consumer_thread(settings) as second:
            wait_until(
                lambda: (
                    second.consumer.partitions and len(first.consumer.partitions) < 3
                ),
                60,
                "the partitions to be split",
            )
            produce_events(settings, events[2000:4000])
            wait_until(lambda: stored_count(pg_url) >= 4000, 60, "4000 events")
            produce_events(settings, events[4000:5000])
        # The second member left: the first takes its partitions back.
        produce_events(settings, events[5000:])
        wait_until(lambda: stored_count(pg_url) >= 6000, 60, "6000 stored events")

    accepted = (first.stats[0].accepted, second.stats[0].accepted)
    assert all(accepted) and sum(accepted) == 6000
    assert_exactly_once(pg_url, events)
