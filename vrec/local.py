"""``vrec up``: the whole stack on one machine without Docker.

Starts what is missing (a Kafka-protocol broker, a private Redis), runs the
consumer and the trainer as child processes, optionally produces a sample
file and prints the lists it leads to. Everything it started is stopped on
exit. With Docker, ``docker compose up`` does the same with real Kafka.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import redis

from vrec.config import ENV_PREFIX, Settings
from vrec.devservers import local_broker, local_redis, stop_process
from vrec.errors import VrecError

logger = logging.getLogger(__name__)

SHOWN_USERS = 10


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _first_server(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return host or "localhost", int(port or 9092)


def _redis_reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0)
        return bool(client.ping())
    except (redis.RedisError, ValueError):
        return False


def child_environment(settings: Settings) -> dict[str, str]:
    """The process environment that hands ``settings`` to a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for name, value in settings.model_dump().items():
        env[ENV_PREFIX + name.upper()] = str(value)
    return env


@contextmanager
def _child(
    name: str, module: str, settings: Settings
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", module], env=child_environment(settings)
    )
    logger.info("started service=%s pid=%d", name, process.pid)
    try:
        yield process
    finally:
        stop_process(process)
        logger.info("stopped service=%s exit=%s", name, process.returncode)


def _with_servers(stack: ExitStack, settings: Settings) -> Settings:
    """Start a broker and a Redis where the settings point at nothing running."""
    updates: dict[str, str] = {}
    host, port = _first_server(settings.kafka_bootstrap_servers)
    if not _reachable(host, port):
        broker = stack.enter_context(local_broker())
        updates["kafka_bootstrap_servers"] = broker.address
        logger.info(
            "no Kafka at %s:%d; started a local broker at %s",
            host,
            port,
            broker.address,
        )
    if not _redis_reachable(settings.redis_url):
        server = stack.enter_context(local_redis())
        updates["redis_url"] = f"redis://{server.address}/0"
        where = urlsplit(settings.redis_url).netloc
        logger.info(
            "no Redis at %s; started a private one at %s", where, server.address
        )
    return settings.model_copy(update=updates)


def _print_lists(settings: Settings, produced: int, timeout_s: float) -> bool:
    """Wait until the store holds what was produced and the first users have
    lists in Redis, then print those lists."""
    from vrec.publish import connect, read_recommendations
    from vrec.store import open_store

    client = connect(settings.redis_url)
    deadline = time.monotonic() + timeout_s
    with open_store(settings.store_url) as store:
        while store.stats().events < produced and time.monotonic() < deadline:
            time.sleep(0.25)
        user_ids = store.user_ids()[:SHOWN_USERS]
    while time.monotonic() < deadline:
        recs = [
            read_recommendations(client, u, prefix=settings.redis_prefix)
            for u in user_ids
        ]
        if recs and all(r.source == "personal" for r in recs):
            for rec in recs:
                listed = ", ".join(rec.items)
                print(f"{rec.user_id}: {listed}  (model {rec.model_version})")
            return True
        time.sleep(0.25)
    return False


def run_stack(
    settings: Settings,
    stop: threading.Event,
    sample: Path | None = None,
    demo: bool = False,
    timeout_s: float = 120.0,
) -> int:
    """Run broker, Redis, consumer and trainer until ``stop`` (or the demo ends)."""
    with ExitStack() as stack:
        settings = _with_servers(stack, settings)
        from vrec.kafka import ensure_topics

        ensure_topics(settings)
        children = [
            stack.enter_context(_child("consumer", "consumers", settings)),
            stack.enter_context(_child("trainer", "trainer", settings)),
        ]
        if sample is not None:
            from vrec.produce import produce_file

            count = produce_file(settings, sample, progress=False)
            if not _print_lists(settings, count, timeout_s):
                raise VrecError(f"no lists in Redis {timeout_s:.0f}s after producing")
        if demo:
            return 0
        print("vrec is running: Ctrl-C stops it", flush=True)
        while not stop.wait(0.5):
            for child in children:
                if child.poll() is not None:
                    raise VrecError(f"a service exited with code {child.returncode}")
    return 0
