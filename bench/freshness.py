"""Freshness: from an event produced to Kafka to its user's changed list in Redis.

    .venv/bin/python -m bench.freshness [--events N]

The product promise: an event produced to Kafka changes that user's list in
Redis within a second. Starts a local broker, a private redis-server and a
SQLite store in a temporary directory; runs the consumer and the trainer as
child processes, as ``vrec up`` does, with default settings; seeds 300 users
x 300 videos (30 ratings a user) and waits until every seeded user's list is
published. Then N times, interleaved:

- vrec: produce one new rating (a video the user has not rated, a unique and
  increasing ``ts``) for a random known user, or for a brand-new user (a few
  of the N), and time from just before the produce until the user's key
  ``vrec:user:<user_id>`` shows ``event_ts >= ts`` (Redis polled every 2 ms);
- baseline: the raw Kafka round trip; produce one record of the same kind to
  a topic of its own and time until a plain kafka-python consumer receives
  it. That consumer polls all the time in a thread (assigned partitions, no
  group, default fetch settings, vrec's poll timeout), as vrec's fetch
  process does, so both wait alike for a fetch that is already at the broker.

Both produce the same way (one send, then flush), each after a random pause
of up to 0.4 s, so events land anywhere in the trainer's 0.2 s fold-in cycle
and the broker's fetch cycle. Two warm-up rounds of each are left out.
Latencies are p50 / p95 / max in milliseconds; an event whose list does not
change within 5 s counts as missed (infinitely late).

The local broker answers a fetch that waits for records about every
``fetch_max_wait_ms / 2`` (250 ms with kafka-python's default 500), not when
a record arrives, as Kafka does; both figures carry that wait here.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from bench.common import report
from vrec.config import Settings
from vrec.devservers import local_broker, local_redis, stop_process
from vrec.events import Event, EventType
from vrec.kafka import Producer, ensure_topics, make_producer
from vrec.local import child_environment
from vrec.publish import RedisClient, connect, now_ms, user_key
from vrec.store import open_store

SEED_USERS = 300
SEED_ITEMS = 300
RATINGS_PER_USER = 30
NEW_USERS = 5  # at most, and at most one in ten of the N, from brand-new users
WARM_UP = 2  # rounds of each, not counted
POLL_S = 0.002  # how often Redis is read while waiting for a list
EVENT_TIMEOUT_S = 5.0  # a list unchanged after this counts as missed
PAUSE_S = 0.4  # at most this long, at random, before each produce
MEASURE_BUDGET_S = 90.0  # all measured rounds together
START_TIMEOUT_S = 60.0  # seed stored, lists published
PROMISE_MS = 1000.0
RATINGS = (1.0, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0)


@dataclass
class Catalogue:
    """Who rated what, so a new rating is for a video the user has not rated."""

    item_ids: list[str]
    rated: dict[str, set[str]] = field(default_factory=dict)
    last_ts: dict[str, int] = field(default_factory=dict)


def rating(user_id: str, item_id: str, ts: int, rng: random.Random) -> Event:
    """One rating event."""
    return Event(user_id, item_id, EventType.RATING, ts, rng.choice(RATINGS))


def seed(producer: Producer, settings: Settings, rng: random.Random) -> Catalogue:
    """Produce the seed ratings, all older than any measured event."""
    catalogue = Catalogue([f"v{i:03d}" for i in range(SEED_ITEMS)])
    ts = now_ms() - SEED_USERS * RATINGS_PER_USER
    for u in range(SEED_USERS):
        user_id = f"u{u:03d}"
        items = rng.sample(catalogue.item_ids, RATINGS_PER_USER)
        for item_id in items:
            event = rating(user_id, item_id, ts, rng)
            producer.send(settings.topic, event.key(), event.to_json())
            ts += 1
        catalogue.rated[user_id] = set(items)
        catalogue.last_ts[user_id] = ts - 1
    producer.flush()
    return catalogue


class Services:
    """The consumer and trainer child processes, each logging to a file."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    @contextmanager
    def run(self, name: str, module: str) -> Iterator[None]:
        """Run ``python -m module`` for the block; stop it (TERM, then KILL)."""
        with open(self.log_dir / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module],
                env=child_environment(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.children[name] = process
            try:
                yield
            finally:
                stop_process(process)

    def check(self) -> None:
        """Raise, with the end of its log, if a child has exited."""
        for name, process in self.children.items():
            if process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text().splitlines()[-15:]
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; its log ends:\n"
                    + "\n".join(tail)
                )


def wait_for_store(settings: Settings, services: Services, events: int) -> None:
    """Block until the consumer has stored ``events`` events."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with open_store(settings.store_url) as store:
        while store.stats().events < events:
            services.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"seed not stored in {START_TIMEOUT_S:.0f}s")
            time.sleep(0.1)


def wait_for_lists(
    client: RedisClient, settings: Settings, services: Services, catalogue: Catalogue
) -> None:
    """Block until every seeded user's list reflects their newest seed rating."""
    user_ids = list(catalogue.last_ts)
    keys = [user_key(settings.redis_prefix, u) for u in user_ids]
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        values = client.mget(keys)
        behind = [
            u
            for u, raw in zip(user_ids, values, strict=True)
            if event_ts(raw) < catalogue.last_ts[u]
        ]
        if not behind:
            return
        services.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(behind)} seeded users have no list yet")
        time.sleep(0.1)


def event_ts(raw: bytes | str | None) -> int:
    """The ``event_ts`` of a user key's value; 0 when there is none."""
    if raw is None:
        return 0
    return int(json.loads(raw).get("event_ts") or 0)


def poll_list(client: RedisClient, key: str, ts: int, deadline: float) -> float:
    """The perf_counter time the key first shows ``event_ts >= ts``; inf if never."""
    while True:
        if event_ts(client.get(key)) >= ts:
            return time.perf_counter()
        if time.perf_counter() >= deadline:
            return math.inf
        time.sleep(POLL_S)


class RawRoundTrip:
    """The baseline: a plain consumer that polls all the time, in a thread.

    It polls as vrec's fetch process does (assigned partitions instead of a
    group, default fetch settings, the same poll timeout), so a record can
    arrive while a fetch is waiting at the broker, as it does for vrec.
    """

    def __init__(self, settings: Settings, producer: Producer) -> None:
        self.topic = f"{settings.topic}.freshness-raw"
        self.producer = producer
        ensure_topics(settings.model_copy(update={"topic": self.topic}))
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,  # as vrec's consumer
        )
        partitions = [
            TopicPartition(self.topic, p) for p in range(settings.topic_partitions)
        ]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)
        self.received: dict[bytes, float] = {}  # record value -> perf_counter
        self.arrived = threading.Condition()
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self.poll, args=(settings.poll_timeout_ms,), name="raw-poll"
        )
        self.thread.start()

    def poll(self, timeout_ms: int) -> None:
        """The thread: poll until told to stop, noting when each record came."""
        while not self.stopping.is_set():
            fetched = self.consumer.poll(timeout_ms=timeout_ms)
            now = time.perf_counter()
            with self.arrived:
                for records in fetched.values():
                    self.received.update((r.value, now) for r in records)
                self.arrived.notify_all()

    def measure(self, event: Event) -> float:
        """Milliseconds from just before the produce until the record is polled."""
        value = event.to_json()
        started = time.perf_counter()
        self.producer.send(self.topic, event.key(), value)
        self.producer.flush()
        with self.arrived:
            if not self.arrived.wait_for(
                lambda: value in self.received, timeout=EVENT_TIMEOUT_S
            ):
                return math.inf
            return (self.received.pop(value) - started) * 1000

    def close(self) -> None:
        """Stop the thread (within one poll timeout), then close the consumer."""
        self.stopping.set()
        self.thread.join()
        self.consumer.close()


@dataclass
class Latencies:
    """Milliseconds per measured event; inf for a missed one."""

    vrec: list[float] = field(default_factory=list)
    new_users: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)


def measure(
    settings: Settings,
    producer: Producer,
    client: RedisClient,
    catalogue: Catalogue,
    events: int,
    rng: random.Random,
) -> Latencies:
    """Interleave vrec rounds and raw Kafka rounds; warm-up rounds left out."""
    latencies = Latencies()
    raw = RawRoundTrip(settings, producer)
    new_at = set(rng.sample(range(events), min(NEW_USERS, max(1, events // 10))))
    known = list(catalogue.last_ts)
    last_ts = max(catalogue.last_ts.values())
    budget_end = time.monotonic() + MEASURE_BUDGET_S
    try:
        for n in range(-WARM_UP, events):
            if time.monotonic() > budget_end:
                print(f"time budget spent after {n} of {events} events")
                break

            # A unique, increasing event time, close to the wall clock.
            last_ts = max(now_ms(), last_ts + 1)
            is_new = n in new_at
            user_id = f"new{n:03d}" if is_new else rng.choice(known)
            unrated = set(catalogue.item_ids) - catalogue.rated.get(user_id, set())
            item_id = rng.choice(sorted(unrated))
            catalogue.rated.setdefault(user_id, set()).add(item_id)
            event = rating(user_id, item_id, last_ts, rng)

            # A random pause first: an event comes at any point of the trainer's
            # and the fetch cycles, not right after the previous list changed.
            time.sleep(rng.uniform(0, PAUSE_S))
            raw_ms = raw.measure(rating(f"raw{n}", item_id, last_ts, rng))
            time.sleep(rng.uniform(0, PAUSE_S))
            vrec_ms = produce_and_wait(settings, producer, client, event)
            if n < 0:
                continue
            latencies.raw.append(raw_ms)
            latencies.vrec.append(vrec_ms)
            if is_new:
                latencies.new_users.append(vrec_ms)
    finally:
        raw.close()
    return latencies


def produce_and_wait(
    settings: Settings, producer: Producer, client: RedisClient, event: Event
) -> float:
    """Milliseconds from just before the produce until the user's list shows it."""
    key = user_key(settings.redis_prefix, event.user_id)
    started = time.perf_counter()
    producer.send(settings.topic, event.key(), event.to_json())
    producer.flush()
    seen = poll_list(client, key, event.ts, started + EVENT_TIMEOUT_S)
    return (seen - started) * 1000


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> str:
    """``p50 / p95 / max`` of ``values`` and how many were missed."""
    missed = sum(1 for v in values if math.isinf(v))
    return (
        f"p50 {percentile(values, 50):,.1f}  p95 {percentile(values, 95):,.1f}  "
        f"max {max(values):,.1f}  (n={len(values)}, missed={missed})"
    )


def print_results(latencies: Latencies) -> None:
    """The latencies, the ratios against the raw round trip, the promise."""
    seeded = SEED_USERS * RATINGS_PER_USER
    print(
        f"seed: {seeded:,} ratings, {SEED_USERS} users x {SEED_ITEMS} videos; "
        f"measured events: {len(latencies.vrec)} "
        f"({len(latencies.new_users)} from new users), {WARM_UP} warm-up left out"
    )
    print(f"vrec produce -> Redis list, ms: {summary(latencies.vrec)}")
    if latencies.new_users:
        print(f"  new users only, ms:           {summary(latencies.new_users)}")
    print(f"raw Kafka produce -> poll, ms:  {summary(latencies.raw)}")
    for q in (50, 95):
        report(
            f"vrec produce-to-list latency p{q}",
            f"plain kafka-python consumer, produce-to-receive p{q}",
            percentile(latencies.raw, q),
            percentile(latencies.vrec, q),
            "ms",
            higher_is_better=False,
        )
    p95 = percentile(latencies.vrec, 95)
    verdict = "met" if p95 < PROMISE_MS else "NOT met"
    print(f"product promise (p95 < {PROMISE_MS:.0f} ms): {verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100, help="1..1000")
    args = parser.parse_args(argv)
    if not 1 <= args.events <= 1000:
        parser.error("--events must be within 1..1000")
    rng = random.Random(7)
    # SIGTERM unwinds like Ctrl-C, so every server and child is stopped.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vrec-")))
        broker = stack.enter_context(local_broker())
        redis_server = stack.enter_context(local_redis())
        settings = Settings(
            kafka_bootstrap_servers=broker.address,
            store_url=str(tmp / "store.db"),
            redis_url=f"redis://{redis_server.address}/0",
            model_dir=tmp / "models",
        )
        ensure_topics(settings)
        producer = make_producer(settings)
        stack.callback(producer.close)
        client = connect(settings.redis_url)
        stack.callback(client.close)
        services = Services(settings, tmp)

        # The seed is stored before the trainer starts, so its first refit
        # covers all of it and no refit falls due while measuring.
        stack.enter_context(services.run("consumer", "consumers"))
        catalogue = seed(producer, settings, rng)
        wait_for_store(settings, services, SEED_USERS * RATINGS_PER_USER)
        stack.enter_context(services.run("trainer", "trainer"))
        wait_for_lists(client, settings, services, catalogue)

        latencies = measure(settings, producer, client, catalogue, args.events, rng)
        services.check()
    print_results(latencies)


if __name__ == "__main__":
    main()
