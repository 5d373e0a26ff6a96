"""The Redis layout and the reader, against a real redis-server."""

from __future__ import annotations

import json

import pytest
import redis

from vrec.devservers import free_port
from vrec.errors import PublishError
from vrec.publish import (
    Publisher,
    connect,
    encode_list,
    read_recommendations,
    user_key,
)


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    client = connect(redis_url)
    yield client
    client.close()


def put(
    publisher: Publisher, user_id: str, items: list[str], version: str = "v1"
) -> None:
    value = encode_list(
        user_id,
        items,
        [1.0 - n / 10 for n in range(len(items))],
        "personal",
        version,
        1234,
        5678,
    )
    publisher.write_lists([(user_id, value)])


def test_a_known_user_reads_the_own_list(client: redis.Redis) -> None:
    publisher = Publisher(client, "t:")
    put(publisher, "u1", ["a", "b", "c"])
    publisher.write_popular(["p", "q"], [9.0, 8.0], "v1")

    rec = read_recommendations(client, "u1", prefix="t:")
    assert rec.source == "personal"
    assert rec.items == ["a", "b", "c"]
    assert rec.scores == [1.0, 0.9, 0.8]
    assert rec.model_version == "v1"
    assert rec.event_ts == 1234

    assert read_recommendations(client, "u1", k=2, prefix="t:").items == ["a", "b"]
    body = json.loads(client.get("t:user:u1"))
    assert set(body) >= {"items", "scores", "model_version", "event_ts", "source"}


def test_an_unknown_user_gets_the_popular_list(client: redis.Redis) -> None:
    publisher = Publisher(client)
    put(publisher, "u1", ["a"])
    publisher.write_popular(["p", "q", "r"], [3.0, 2.0, 1.0], "v7")

    rec = read_recommendations(client, "stranger", k=2)
    assert rec.source == "popular"
    assert rec.items == ["p", "q"]
    assert rec.model_version == "v7"
    assert rec.to_dict()["user_id"] == "stranger"


def test_nothing_published_gives_an_empty_popular_answer(client: redis.Redis) -> None:
    rec = read_recommendations(client, "u1")
    assert (rec.items, rec.source, rec.model_version) == ([], "popular", None)


def test_many_lists_go_out_in_pipelined_rounds(client: redis.Redis) -> None:
    publisher = Publisher(client)
    values = [
        (f"u{n}", encode_list(f"u{n}", ["x"], [1.0], "personal", "v1", n, 0))
        for n in range(2500)
    ]
    assert publisher.write_lists(values) == 2500
    assert client.exists(*(user_key("vrec:", f"u{n}") for n in range(2500))) == 2500
    assert read_recommendations(client, "u2499").event_ts == 2499


def test_model_metadata_round_trip(client: redis.Redis) -> None:
    publisher = Publisher(client)
    assert publisher.read_model() is None
    publisher.write_model({"version": "v3", "users": 5})
    meta = publisher.read_model()
    assert meta is not None and meta["version"] == "v3" and "published_ts" in meta
    client.set("vrec:model", b"garbage")
    assert publisher.read_model() is None  # unreadable counts as missing


def test_redis_errors_become_publish_errors(client: redis.Redis) -> None:
    client.set("vrec:user:bad", b"{not json")
    with pytest.raises(PublishError, match="JSON"):
        read_recommendations(client, "bad")

    nowhere = connect(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(PublishError):
        read_recommendations(nowhere, "u1")
    with pytest.raises(PublishError):
        Publisher(nowhere).write_lists([("u1", b"{}")])
