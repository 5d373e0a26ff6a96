"""Freshness end to end: Kafka topic -> consumer -> store -> trainer -> Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.modeldata import LATER, make_settings, read, tutorial_rows, wait_until
from vrec.config import Settings
from vrec.devservers import LocalServer
from vrec.events import Event, EventType
from vrec.ingest import run_consumer
from vrec.kafka import ensure_topics, make_producer
from vrec.modelfile import version_names
from vrec.publish import connect
from vrec.schedule import run_trainer


def produce(settings: Settings, events: list[Event]) -> None:
    producer = make_producer(settings)
    try:
        for event in events:
            producer.send(settings.topic, event.key(), event.to_json())
        producer.flush(30)
    finally:
        producer.close()


def ratings(rows: list[tuple[str, str, float]], ts: int) -> list[Event]:
    return [
        Event(user_id, item_id, EventType.RATING, ts + n, rating)
        for n, (user_id, item_id, rating) in enumerate(rows)
    ]


@pytest.fixture
def services(
    broker: LocalServer, topic: str, sqlite_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Settings]:
    """The consumer and the trainer, each in a thread, for one test."""
    settings = make_settings(
        sqlite_url,
        redis_url,
        tmp_path,
        kafka_bootstrap_servers=broker.address,
        topic=topic,
        group_id=f"g-{topic}",
        topic_partitions=2,
    )
    ensure_topics(settings)
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_consumer, args=(settings, stop), name="consumer"),
        threading.Thread(target=run_trainer, args=(settings, stop), name="trainer"),
    ]
    for thread in threads:
        thread.start()
    try:
        yield settings
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads)


def test_produced_events_change_lists_without_a_refit(services: Settings) -> None:
    client: redis.Redis = connect(services.redis_url)
    produce(services, ratings(tutorial_rows(), ts=1_700_000_000_000))
    wait_until(lambda: read(client, "u005").source == "personal", timeout_s=60)
    before = read(client, "u001")
    assert "v003" in before.items

    produce(
        services,
        ratings(
            [
                ("u001", "v003", 5.0),
                ("u100", "v001", 5.0),
                ("u100", "v100", 4.0),
                ("u002", "v100", 5.0),
                ("u005", "v003", 4.0),
            ],
            ts=LATER,
        ),
    )
    wait_until(
        lambda: (
            "v003" not in read(client, "u001").items
            and read(client, "u100").source == "personal"
            and "v100" in read(client, "u005").items
        ),
        timeout_s=60,
    )
    u100 = read(client, "u100")
    assert not {"v001", "v100"} & set(u100.items)
    assert read(client, "u001").model_version == "v000001"
    assert version_names(services.model_dir) == ["v000001"]
    client.close()
