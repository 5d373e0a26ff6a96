"""``vrec produce FILE``: a user's file of ratings, as events on the topic.

Two formats, told apart by the extension (``.jsonl``, ``.ndjson``, ``.json``
for JSON lines, ``.csv`` or ``.tsv`` for a table) or else by the first
character of the file:

- CSV with a header. Column names are matched without regard to case or
  underscores: ``userId``/``user_id``; ``videoId``/``video_id``/``item_id``
  (also ``movieId``); ``rating``; ``event_type``; ``watch_fraction``;
  ``event_id``; and the time as ``ts`` (epoch milliseconds or ISO 8601, as in
  the event format) or ``timestamp`` (epoch seconds, as in MovieLens, or ISO
  8601). Other columns are ignored.
- JSON lines: one event object per line, in the event format; the CSV
  column names above are accepted as keys too.

A row without a time gets the time it is sent. The whole file is validated
with the consumer's rules before anything is sent; a bad row raises
:class:`InputFileError` naming the file, line, column and reason (the first
20 bad rows), and then nothing has been produced.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vrec.config import Settings
from vrec.errors import InputFileError, InvalidEvent
from vrec.events import Event, EventRules
from vrec.kafka import ensure_topics, make_producer

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
JSON_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})

# Column or key names, lower-cased without underscores -> event field.
# "timestamp" stays apart: it holds seconds, "ts" holds milliseconds.
_FIELDS = {
    "userid": "user_id",
    "videoid": "item_id",
    "itemid": "item_id",
    "movieid": "item_id",
    "rating": "rating",
    "eventtype": "event_type",
    "watchfraction": "watch_fraction",
    "eventid": "event_id",
    "ts": "ts",
    "timestamp": "timestamp",
}
_NUMBER_FIELDS = ("rating", "watch_fraction")
_FIELD_IN_REASON = re.compile(
    r"\b(user_id|item_id|event_type|watch_fraction|event_id|rating|ts)\b"
)


@dataclass(frozen=True, slots=True)
class _Row:
    """One row of the file as event fields; ``columns`` names their source."""

    line: int
    body: dict[str, Any]
    columns: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Problem:
    """Why one row cannot be produced."""

    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.column:
            where += f", column {self.column}"
        return f"{where}: {self.reason}"


def produce_file(
    settings: Settings, path: Path, rate: float | None = None, progress: bool = True
) -> int:
    """Validate every row of ``path``, then send them to ``settings.topic``.

    ``rate`` caps the events per second; ``progress`` shows a bar on a
    terminal. Returns the number of events sent, after they are delivered.
    """
    if rate is not None and rate <= 0:
        raise InputFileError(f"rate must be positive, got {rate}")
    rules = EventRules(
        max_id_length=settings.max_id_length,
        max_event_bytes=settings.max_event_bytes,
        rating_min=settings.rating_min,
        rating_max=settings.rating_max,
    )
    count = validate_file(path, rules)

    ensure_topics(settings)
    producer = make_producer(settings, linger_ms=10, batch_size=128 * 1024)
    start = time.monotonic()
    bar = tqdm(
        total=count,
        unit="event",
        desc=path.name,
        disable=not progress or not sys.stderr.isatty(),
    )
    sent = 0
    try:
        for row in _rows(path):
            event = _event(row, rules, _now_ms())
            if isinstance(event, _Problem):
                raise InputFileError(f"{path}: changed while producing: {event}")
            if rate is not None:
                _pace(start, sent, rate)
            producer.send(settings.topic, event.key(), event.to_json())
            sent += 1
            bar.update()
        producer.flush()
    finally:
        bar.close()
        producer.close()
    logger.info(
        "produced events=%d file=%s topic=%s seconds=%.1f",
        sent,
        path,
        settings.topic,
        time.monotonic() - start,
    )
    return sent


def validate_file(path: Path, rules: EventRules) -> int:
    """Count the rows of ``path``; raise :class:`InputFileError` if any is bad."""
    problems: list[_Problem] = []
    bad = count = 0
    now = _now_ms()
    for row in _rows(path):
        checked = _event(row, rules, now)
        if isinstance(checked, _Problem):
            bad += 1
            if len(problems) < MAX_REPORTED_ERRORS:
                problems.append(checked)
        else:
            count += 1
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        more = f"\n  ... and {bad - len(problems)} more" if bad > len(problems) else ""
        raise InputFileError(
            f"{path}: {bad} bad row(s), nothing was produced:\n{lines}{more}"
        )
    return count


def _event(row: _Row | _Problem, rules: EventRules, now_ms: int) -> Event | _Problem:
    """The event of ``row``, validated as the consumer will, or why not."""
    if isinstance(row, _Problem):
        return row
    body = row.body
    if body.get("ts") is None:
        body = {**body, "ts": now_ms}
    try:
        event = rules.from_dict(body)
    except InvalidEvent as exc:
        found = _FIELD_IN_REASON.search(exc.reason)
        column = row.columns.get(found.group(1), found.group(1)) if found else None
        return _Problem(row.line, column, exc.reason)
    size = len(event.to_json())
    if size > rules.max_event_bytes:
        return _Problem(
            row.line,
            None,
            f"event of {size} bytes exceeds max_event_bytes={rules.max_event_bytes}",
        )
    return event


def _rows(path: Path) -> Iterator[_Row | _Problem]:
    """The rows of ``path``, in the format its name or first character says."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            if _is_json_lines(path, handle.read(4096)):
                handle.seek(0)
                yield from _json_rows(handle)
            else:
                handle.seek(0)
                delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
                yield from _csv_rows(handle, delimiter)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text: {exc}") from exc


def _is_json_lines(path: Path, head: str) -> bool:
    if path.suffix.lower() in JSON_SUFFIXES:
        return True
    if path.suffix.lower() in (".csv", ".tsv"):
        return False
    return head.lstrip().startswith("{")


def _json_rows(handle: Any) -> Iterator[_Row | _Problem]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            yield _Problem(line, str(exc.colno), f"not JSON: {exc.msg}")
            continue
        if not isinstance(body, dict):
            reason = f"not a JSON object but {type(body).__name__}"
            if isinstance(body, list) and line == 1:
                reason += " (write one object per line: JSON lines)"
            yield _Problem(line, None, reason)
            continue
        yield _convert(line, {str(k): v for k, v in body.items()}, from_text=False)


def _csv_rows(handle: Any, delimiter: str) -> Iterator[_Row | _Problem]:
    reader = csv.reader(handle, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    known = {_FIELDS.get(_normal(name)) for name in header}
    if not {"user_id", "item_id"} <= known:
        yield _Problem(
            1,
            None,
            f"the header {header!r} needs a user column (userId or user_id) and "
            "a video column (videoId, video_id or item_id)",
        )
        return
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                yield _Problem(
                    reader.line_num,
                    None,
                    f"{len(cells)} cells, the header has {len(header)}",
                )
                continue
            yield _convert(
                reader.line_num, dict(zip(header, cells, strict=True)), from_text=True
            )
    except csv.Error as exc:
        yield _Problem(reader.line_num, None, f"not CSV: {exc}")


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "")


def _convert(line: int, cells: dict[str, Any], from_text: bool) -> _Row | _Problem:
    """Rename the known columns to event fields; CSV cells become numbers."""
    body: dict[str, Any] = {}
    columns: dict[str, str] = {}
    for name, value in cells.items():
        field = _FIELDS.get(_normal(name))
        if field is None:
            if not from_text:
                body.setdefault(name, value)  # JSON: unknown keys pass through
            continue
        columns["ts" if field == "timestamp" else field] = name
        if from_text and value == "":
            continue
        try:
            value = _cell_value(field, value) if from_text else value
            if field == "timestamp":
                field, value = "ts", _seconds_to_ms(value)
        except ValueError as exc:
            return _Problem(line, name, str(exc))
        body[field] = value
    return _Row(line, body, columns)


def _cell_value(field: str, text: str) -> Any:
    """A CSV cell as the event format wants it."""
    if field in _NUMBER_FIELDS:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{field} {text!r} is not a number") from None
    if field in ("ts", "timestamp") and re.fullmatch(r"-?\d+(\.\d+)?", text.strip()):
        return float(text) if "." in text else int(text)
    return text


def _seconds_to_ms(value: Any) -> Any:
    """``timestamp`` holds epoch seconds; ISO strings pass through unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if not math.isfinite(value):
        raise ValueError(f"timestamp {value!r} is not a number of seconds")
    return round(value * 1000)


def _pace(start: float, sent: int, rate: float) -> None:
    """Sleep until sending event number ``sent + 1`` keeps to ``rate`` per second."""
    delay = start + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
