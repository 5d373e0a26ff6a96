"""Bad records land on the dead-letter topic with their reason and position."""

from __future__ import annotations

import json

from tests.kafka_helpers import (
    consumer_thread,
    make_settings,
    produce_raw,
    rating_events,
    read_topic,
    stored_rejected,
    stored_rows,
    wait_until,
)
from vrec.config import Settings
from vrec.devservers import LocalServer
from vrec.ingest import DLQ_MAX_VALUE_BYTES, dead_letter
from vrec.kafka import ensure_topics
from vrec.store import Rejected, open_store

GOOD = {"user_id": "u1", "item_id": "v1", "rating": 4, "ts": 1_700_000_000_000}


def _json(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


# Each kind of bad record, with a fragment of the reason it must carry.
BAD: dict[str, tuple[bytes | None, str]] = {
    "not JSON": (b"{not json", "not JSON"),
    "not an object": (b"[1, 2, 3]", "not a JSON object"),
    "missing field": (_json(item_id=None), "missing field item_id"),
    "mistyped field": (_json(rating="five"), "rating must be a number"),
    "id too long": (_json(user_id="u" * 200), "user_id length 200"),
    "control characters": (_json(item_id="v\x07"), "control characters"),
    "rating out of range": (_json(rating=9), "rating 9 outside"),
    "unknown event type": (_json(event_type="dislike"), "unknown event_type"),
    "oversized value": (_json(event_id="e" * 2000), "exceeds max_event_bytes"),
    "null value": (None, "no value"),
    # Each of these once stopped the consumer with an unexpected exception.
    "nested too deeply": (b"[" * 1020, "nested too deeply"),
    "event type not a string": (_json(event_type=["rating"]), "unknown event_type"),
    "number past the float range": (_json(rating=10**400), "rating 1000"),
    "ts past the float range": (_json(ts=10**400), "not a plausible epoch"),
    "lone surrogate": (_json(user_id="u\ud800"), "control characters"),
}


def test_every_kind_of_bad_record_goes_to_the_dead_letter_topic(
    broker: LocalServer, topic: str, sqlite_url: str
) -> None:
    settings = make_settings(
        broker, topic, sqlite_url, topic_partitions=1, max_event_bytes=1024
    )
    ensure_topics(settings)
    good = [e.to_json() for e in rating_events(len(BAD) + 1)]
    records: list[tuple[bytes | None, bytes | None]] = []
    for n, (value, _) in enumerate(BAD.values()):
        records += [(b"u-good", good[n]), (b"key-%d" % n, value)]
    records.append((b"u-good", good[-1]))
    produce_raw(settings, records)

    with consumer_thread(settings) as running:
        wait_until(
            lambda: stored_rejected(sqlite_url) == len(BAD),
            60,
            "every bad record to be counted",
        )
        dead = read_topic(settings, settings.dlq, len(BAD))

    # The good records around them are stored, in order.
    assert [r[2] for r in stored_rows(sqlite_url)] == list(range(0, len(records), 2))
    assert running.stats[0].accepted == len(good)
    assert running.stats[0].rejected == len(BAD)
    with open_store(sqlite_url) as store:
        assert store.stats().rejected == len(BAD)

    assert len(dead) == len(BAD)
    for n, (record, (kind, (value, reason))) in enumerate(
        zip(dead, BAD.items(), strict=True)
    ):
        assert record.key == b"key-%d" % n, kind
        assert record.value == value, kind
        assert reason in record.headers["reason"].decode(), kind
        assert record.headers["source_topic"] == topic.encode()
        assert record.headers["source_partition"] == b"0"
        assert record.headers["source_offset"] == str(2 * n + 1).encode()
    assert dead[list(BAD).index("null value")].headers["null_value"] == b"1"


def test_a_huge_value_is_cut_and_a_keyless_null_gets_an_empty_value() -> None:
    settings = Settings(max_event_bytes=100)
    huge = Rejected(b"x" * (DLQ_MAX_VALUE_BYTES + 1), b"k", "too big", "t", 2, 9)
    key, value, headers = dead_letter(huge, settings)
    assert key == b"k" and value == b"x" * 100
    assert dict(headers)["truncated_from"] == str(DLQ_MAX_VALUE_BYTES + 1).encode()

    empty = Rejected(None, None, "empty record (no value)", "t", 0, 3)
    key, value, headers = dead_letter(empty, settings)
    assert key is None and value == b""
    assert dict(headers)["null_value"] == b"1"
    assert dict(headers)["source_offset"] == b"3"
