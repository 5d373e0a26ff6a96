"""Ingest throughput: vrec's consumer into each store against a plain poll loop.

    .venv/bin/python -m bench.ingest [--events N] [--repeat R]

Starts a local broker, produces N small rating events (20,000 users, 5,000
videos) to a 3-partition topic, then reads them R times each, interleaved:
(a) a plain kafka-python poll loop (assigned partitions, same batch size, no
parsing, no store), (b) vrec's Consumer into a fresh SQLite file and (c) into
PostgreSQL in a fresh schema. Rates are steady-state: the clock starts once
the first batch is in hand (polled, or committed to the store) and stops at
the last record, so process start-up and the group join (a few seconds
against the local broker) are left out; they are printed separately. The
ratios compare medians.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from bench.common import report
from vrec.config import Settings
from vrec.devservers import local_broker
from vrec.ingest import Consumer
from vrec.kafka import ensure_topics, make_producer
from vrec.store import Rejected, SourcedEvent, open_store

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def produce(settings: Settings, events: int, seed: int = 7) -> None:
    """Send ``events`` rating events with a few thousand users and items."""
    rng = random.Random(seed)
    producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024)
    for n in range(events):
        user_id = f"u{rng.randrange(20_000)}"
        body = {
            "user_id": user_id,
            "item_id": f"v{rng.randrange(5_000)}",
            "event_type": "rating",
            "rating": rng.choice((1, 2, 3, 3.5, 4, 4.5, 5)),
            "ts": 1_700_000_000_000 + n,
        }
        producer.send(settings.topic, user_id.encode(), json.dumps(body).encode())
    producer.flush()
    producer.close()


def plain_poll(settings: Settings, events: int) -> tuple[float, float]:
    """(a): records per second of a bare poll loop, and its start-up seconds."""
    start = time.perf_counter()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    partitions = [
        TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen, first, clock = 0, 0, 0.0
    while seen < events:
        fetched = consumer.poll(timeout_ms=500, max_records=settings.batch_max_records)
        got = sum(len(records) for records in fetched.values())
        if got and not seen:
            first, clock = got, time.perf_counter()
        seen += got
    rate = (seen - first) / (time.perf_counter() - clock)
    consumer.close()
    return rate, clock - start


def vrec_consumer(settings: Settings, events: int) -> tuple[float, float]:
    """(b), (c): events per second stored by vrec's Consumer, and start-up seconds."""
    store = open_store(settings.store_url)
    stop = threading.Event()
    marks: dict[str, Any] = {"done": 0}
    append = store.append

    def timed_append(
        batch: Sequence[SourcedEvent], rejected: Sequence[Rejected] = ()
    ) -> Any:
        result = append(batch, rejected)
        marks["done"] += result.accepted + result.rejected
        if "first" not in marks:
            marks["first"], marks["clock"] = marks["done"], time.perf_counter()
        if marks["done"] >= events:
            marks["end"] = time.perf_counter()
            stop.set()
        return result

    store.append = timed_append  # type: ignore[method-assign]
    start = time.perf_counter()
    try:
        Consumer(settings, store=store).run(stop)
    finally:
        store.close()
    rate = (marks["done"] - marks["first"]) / (marks["end"] - marks["clock"])
    return rate, marks["clock"] - start


@contextmanager
def pg_schema() -> Iterator[str]:
    """A store URL in a fresh PostgreSQL schema, dropped afterwards."""
    name = f"vrec_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
        try:
            yield f"{PG_URL}?options=-csearch_path%3D{name}"
        finally:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each, interleaved; medians"
    )
    args = parser.parse_args(argv)

    rates: dict[str, list[float]] = {"plain": [], "sqlite": [], "postgresql": []}
    start_up: dict[str, list[float]] = {name: [] for name in rates}
    with local_broker() as broker, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            kafka_bootstrap_servers=broker.address,
            topic="bench-ratings",
            topic_partitions=3,
        )
        ensure_topics(settings)
        produce(settings, args.events)

        # Interleaved, so a busy spell on the machine hits all three alike.
        for run in range(args.repeat):
            rate, seconds = plain_poll(settings, args.events)
            rates["plain"].append(rate)
            start_up["plain"].append(seconds)

            sqlite = settings.model_copy(
                update={
                    "group_id": f"bench-sqlite-{run}",
                    "store_url": str(Path(tmp) / f"store-{run}.db"),
                }
            )
            rate, seconds = vrec_consumer(sqlite, args.events)
            rates["sqlite"].append(rate)
            start_up["sqlite"].append(seconds)

            with pg_schema() as url:
                pg = settings.model_copy(
                    update={"group_id": f"bench-pg-{run}", "store_url": url}
                )
                rate, seconds = vrec_consumer(pg, args.events)
            rates["postgresql"].append(rate)
            start_up["postgresql"].append(seconds)

    print(f"events: {args.events:,} per run, {args.repeat} run(s) of each")
    for name, values in rates.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(
            f"{name}: events/s per run [{runs}]; start-up seconds (left out) "
            f"{statistics.median(start_up[name]):.1f}"
        )
    base = statistics.median(rates["plain"])
    for name, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        report(
            f"ingest into {label} (median)",
            "plain kafka-python poll loop, median",
            base,
            statistics.median(rates[name]),
            "events/s",
            goal=0.8,
        )


if __name__ == "__main__":
    main()
