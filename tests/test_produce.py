"""``vrec produce``: reading CSV and JSON-lines files, validating, sending."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from tests.kafka_helpers import REPO, make_settings, read_topic
from vrec.config import Settings
from vrec.devservers import LocalServer
from vrec.errors import InputFileError
from vrec.events import EventRules
from vrec.produce import produce_file, validate_file

RULES = EventRules()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_tutorial_table_is_valid() -> None:
    assert validate_file(REPO / "data" / "ratings.csv", RULES) == 10


def test_a_bad_row_names_file_line_column_and_reason(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "bad.csv",
        "userId,videoId,rating,timestamp\n"
        "u1,v1,5,964982703\n"
        "u2,v2,five,964982703\n"
        "u3,v3,9,\n"
        "u4,,3,\n"
        "u\x075,v5,3,\n",
    )
    with pytest.raises(InputFileError) as caught:
        validate_file(path, RULES)
    message = str(caught.value)
    assert str(path) in message and "4 bad row(s), nothing was produced" in message
    assert "line 3, column rating: rating 'five' is not a number" in message
    assert "line 4, column rating: rating 9.0 outside [0.5, 5]" in message
    assert "line 5, column videoId: missing field item_id" in message
    assert "line 6, column userId: user_id has control characters" in message


def test_only_the_first_twenty_problems_are_listed(tmp_path: Path) -> None:
    rows = "".join(f"u{n},v{n},0\n" for n in range(30))
    path = _write(tmp_path, "low.csv", "user_id,item_id,rating\n" + rows)
    with pytest.raises(InputFileError) as caught:
        validate_file(path, RULES)
    message = str(caught.value)
    assert "30 bad row(s)" in message and "... and 10 more" in message
    assert "line 21," in message and "line 22," not in message


def test_a_header_without_user_or_video_column_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "odd.csv", "who,what,rating\nu1,v1,4\n")
    with pytest.raises(InputFileError, match="line 1: the header"):
        validate_file(path, RULES)


def test_json_lines_are_told_by_content_and_checked_per_line(tmp_path: Path) -> None:
    good = json.dumps({"user_id": "u1", "item_id": "v1", "rating": 4.5, "ts": 1})
    path = _write(tmp_path, "events.txt", f"{good}\n\n{{oops\n[1]\n")
    with pytest.raises(InputFileError) as caught:
        validate_file(path, RULES)
    message = str(caught.value)
    assert "line 3, column 2: not JSON" in message
    assert "line 4: not a JSON object but list" in message
    assert "2 bad row(s)" in message


def test_a_json_array_file_gets_a_hint(tmp_path: Path) -> None:
    path = _write(tmp_path, "events.json", '[{"user_id": "u1"}]\n')
    with pytest.raises(InputFileError, match="one object per line"):
        validate_file(path, RULES)


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="cannot read"):
        validate_file(tmp_path / "nope.csv", RULES)


def _settings(broker: LocalServer, topic: str, tmp_path: Path) -> Settings:
    return make_settings(broker, topic, str(tmp_path / "unused.db"))


def test_rows_are_sent_keyed_by_user_with_their_times(
    broker: LocalServer, topic: str, tmp_path: Path
) -> None:
    settings = _settings(broker, topic, tmp_path)
    path = _write(
        tmp_path,
        "mixed.ndjson",
        '{"userId": "u1", "videoId": "v1", "rating": 4, "timestamp": 964982703}\n'
        '{"user_id": "u2", "item_id": "v2", "event_type": "view", '
        '"watch_fraction": 0.5, "ts": "2024-05-01T12:00:00Z"}\n'
        '{"user_id": "u3", "item_id": "v3", "event_type": "like"}\n',
    )
    before = time.time_ns() // 1_000_000
    assert produce_file(settings, path, rate=1000.0, progress=False) == 3
    after = time.time_ns() // 1_000_000

    records = read_topic(settings, topic, 3)
    bodies = {r.key: json.loads(r.value or b"") for r in records}
    assert set(bodies) == {b"u1", b"u2", b"u3"}
    assert bodies[b"u1"] == {
        "user_id": "u1",
        "item_id": "v1",
        "event_type": "rating",
        "ts": 964_982_703_000,
        "rating": 4.0,
    }
    assert bodies[b"u2"]["ts"] == 1_714_564_800_000
    assert bodies[b"u2"]["watch_fraction"] == 0.5
    assert before <= bodies[b"u3"]["ts"] <= after


def test_a_bad_file_produces_nothing(
    broker: LocalServer, topic: str, tmp_path: Path
) -> None:
    settings = _settings(broker, topic, tmp_path)
    path = _write(tmp_path, "half.csv", "user_id,item_id,rating\nu1,v1,4\nu2,v2,x\n")
    with pytest.raises(InputFileError, match="line 3"):
        produce_file(settings, path, progress=False)
    consumer = KafkaConsumer(bootstrap_servers=broker.address)
    try:
        assert topic not in consumer.topics()
    finally:
        consumer.close()
