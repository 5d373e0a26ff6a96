"""The event format: what is accepted, and the reason given for what is not."""

from __future__ import annotations

import json

import pytest

from vrec.errors import InvalidEvent
from vrec.events import Event, EventRules, EventType, parse_ts

RULES = EventRules(max_id_length=16, max_event_bytes=512)


def _raw(**fields: object) -> bytes:
    body: dict[str, object] = {
        "user_id": "u001",
        "item_id": "v001",
        "rating": 4,
        "ts": 1_700_000_000_000,
    }
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_a_rating_event_round_trips() -> None:
    event = RULES.parse(_raw(event_id="e-1"))
    assert event == Event(
        "u001", "v001", EventType.RATING, 1_700_000_000_000, 4.0, event_id="e-1"
    )
    assert RULES.parse(event.to_json()) == event
    assert event.key() == b"u001"


def test_event_type_defaults_to_rating_and_others_need_no_rating() -> None:
    assert RULES.parse(_raw(event_type=...)).event_type is EventType.RATING
    view = RULES.parse(_raw(event_type="view", rating=..., watch_fraction=0.25))
    assert (view.event_type, view.rating, view.watch_fraction) == (
        EventType.VIEW,
        None,
        0.25,
    )
    assert RULES.parse(_raw(event_type="like", rating=...)).event_type is EventType.LIKE


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1_700_000_000_000, 1_700_000_000_000),
        (1_700_000_000_000.9, 1_700_000_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),  # no zone: UTC
    ],
)
def test_ts_accepts_epoch_ms_and_iso_8601(ts: object, expected: int) -> None:
    assert parse_ts(ts) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (None, "empty record"),
        (_raw(user_id=...), "missing field user_id"),
        (_raw(item_id=...), "missing field item_id"),
        (_raw(ts=...), "missing field ts"),
        (_raw(rating=...), "missing field rating"),
        (_raw(user_id=17), "user_id must be a string"),
        (_raw(rating="4"), "rating must be a number"),
        (_raw(rating=True), "rating must be a number"),
        (_raw(rating=9), "outside"),
        (_raw(rating=0), "outside"),
        (_raw(user_id="u" * 17), "length 17 outside"),
        (_raw(item_id=""), "length 0 outside"),
        (_raw(user_id="u\n1"), "control characters"),
        (_raw(item_id=" v1"), "edge white space"),
        (_raw(event_type="purchase"), "unknown event_type"),
        (_raw(event_type="view", watch_fraction=1.5), "watch_fraction"),
        (_raw(ts="yesterday"), "not ISO 8601"),
        (_raw(ts=-5), "not a plausible epoch"),
        (_raw(ts=True), "not bool"),
        (_raw(event_id="x" * 100), "event_id length"),
        (_raw(pad="x" * 600), "exceeds max_event_bytes=512"),
    ],
)
def test_bad_records_are_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        RULES.parse(raw)
    assert reason in caught.value.reason


def test_unknown_fields_are_ignored() -> None:
    assert RULES.parse(_raw(device="tv")).user_id == "u001"


def test_non_finite_ratings_are_refused() -> None:
    with pytest.raises(InvalidEvent, match="outside"):
        RULES.from_dict(
            {"user_id": "u", "item_id": "v", "rating": float("nan"), "ts": 1}
        )
