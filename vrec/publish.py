"""Top-K lists in Redis: the layout, the writer the trainer uses, the reader apps use.

Layout (``<prefix>`` is ``settings.redis_prefix``, default ``vrec:``); every
value is one JSON object, replaced as a whole (``SET``, or ``MSET`` for many
keys in one command), so a reader sees the old list or the new one, never
half of one:

``<prefix>user:<user_id>``
    ``{"user_id", "items": [item_id, ...] (best first), "scores": [...],
    "source": "personal" | "popular", "model_version", "event_ts",
    "published_ts"}``. ``event_ts`` is the time (epoch ms) of the newest event
    of this user the list reflects; ``source`` is ``popular`` for a known
    user the model cannot rank for yet (popular videos minus the seen ones).
``<prefix>popular``
    ``{"items", "scores", "source": "popular", "model_version",
    "published_ts"}``: the most-liked videos, for users without a key; a
    score is the number of users with a positive interaction.
``<prefix>model``
    the model in service: ``{"version", "trained_at", "trained_seq", "users",
    "items", "interactions", "params", "published_ts"}``. Written after a
    full publish; when it is missing (Redis restarted empty) the trainer
    publishes every user again.

:func:`read_recommendations` reads a user's list in one round trip (``MGET``
of the user key and the popular key) and falls back to the popular list.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import redis

from vrec.errors import PublishError

DEFAULT_PREFIX = "vrec:"
MSET_CHUNK = 1000  # lists per MSET (one round trip)

RedisClient = redis.Redis


def connect(url: str) -> RedisClient:
    """A Redis client for ``url`` (``redis://host:port/db``); connects lazily."""
    try:
        return redis.Redis.from_url(
            url, socket_timeout=10.0, socket_connect_timeout=5.0
        )
    except ValueError as exc:
        raise PublishError(f"bad Redis URL {url!r}: {exc}") from exc


@contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Turn a redis-py error into :class:`PublishError`."""
    try:
        yield
    except redis.RedisError as exc:
        raise PublishError(f"{action} failed: {exc}") from exc


def user_key(prefix: str, user_id: str) -> str:
    """The key holding ``user_id``'s list."""
    return f"{prefix}user:{user_id}"


def popular_key(prefix: str) -> str:
    """The key holding the popular list."""
    return f"{prefix}popular"


def model_key(prefix: str) -> str:
    """The key holding the metadata of the model in service."""
    return f"{prefix}model"


def now_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(time.time() * 1000)


def encode_list(
    user_id: str,
    items: list[str],
    scores: list[float],
    source: str,
    model_version: str,
    event_ts: int,
    published_ts: int,
) -> bytes:
    """The JSON value of one user key."""
    body = {
        "user_id": user_id,
        "items": items,
        "scores": scores,
        "source": source,
        "model_version": model_version,
        "event_ts": event_ts,
        "published_ts": published_ts,
    }
    return json.dumps(body, separators=(",", ":")).encode()


class Publisher:
    """Writes lists and metadata to Redis; safe to share between threads."""

    def __init__(self, client: RedisClient, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def write_lists(self, values: Iterable[tuple[str, bytes]]) -> int:
        """Store each (user_id, encoded list); return the count.

        One ``MSET`` per :data:`MSET_CHUNK` lists: one round trip, and
        about four times faster than as many ``SET`` commands in a pipeline.
        """
        # TODO: Redis Cluster refuses an MSET across hash slots (CROSSSLOT);
        # a cluster needs the keys grouped by slot or one SET each.
        count = 0
        chunk: dict[str, bytes] = {}
        with redis_errors("publishing lists"):
            for user_id, value in values:
                chunk[user_key(self.prefix, user_id)] = value
                if len(chunk) == MSET_CHUNK:
                    self.client.mset(chunk)
                    count += len(chunk)
                    chunk = {}
            if chunk:
                self.client.mset(chunk)
                count += len(chunk)
        return count

    def write_popular(
        self, items: list[str], scores: list[float], model_version: str
    ) -> None:
        """Replace the popular list."""
        body = {
            "items": items,
            "scores": scores,
            "source": "popular",
            "model_version": model_version,
            "published_ts": now_ms(),
        }
        with redis_errors("publishing the popular list"):
            self.client.set(popular_key(self.prefix), json.dumps(body))

    def write_model(self, meta: dict[str, Any]) -> None:
        """Replace the model metadata (call after every user has a list)."""
        body = {**meta, "published_ts": now_ms()}
        with redis_errors("publishing the model metadata"):
            self.client.set(model_key(self.prefix), json.dumps(body))

    def read_model(self) -> dict[str, Any] | None:
        """The model metadata in Redis, or None if there is none."""
        with redis_errors("reading the model metadata"):
            raw = self.client.get(model_key(self.prefix))
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except ValueError:
            return None  # unreadable counts as missing: the trainer republishes
        return meta if isinstance(meta, dict) else None


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What Redis holds for one user, as an app sees it."""

    user_id: str
    items: list[str]
    scores: list[float]
    source: str  # "personal" or "popular"
    model_version: str | None
    event_ts: int | None = None
    published_ts: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``vrec recommend --json``)."""
        return asdict(self)


def read_recommendations(
    client: RedisClient,
    user_id: str,
    k: int | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> Recommendation:
    """The ranked videos for ``user_id``: its own list, else the popular one.

    One round trip. ``source`` says which list it is; with nothing published
    at all the lists are empty and ``model_version`` is None.
    """
    with redis_errors(f"reading the list of {user_id!r}"):
        own, popular = client.mget([user_key(prefix, user_id), popular_key(prefix)])
    value = own if own is not None else popular
    if value is None:
        return Recommendation(user_id, [], [], "popular", None)
    body = _decode(value, user_key(prefix, user_id) if own is not None else "popular")
    items = [str(i) for i in body.get("items", [])]
    scores = [float(s) for s in body.get("scores", [])]
    if k is not None:
        items, scores = items[: max(k, 0)], scores[: max(k, 0)]
    source = str(body.get("source", "personal" if own is not None else "popular"))
    return Recommendation(
        user_id=user_id,
        items=items,
        scores=scores,
        source=source,
        model_version=body.get("model_version"),
        event_ts=body.get("event_ts") if own is not None else None,
        published_ts=body.get("published_ts"),
    )


def _decode(value: Any, key: str) -> dict[str, Any]:
    try:
        body = json.loads(value)
    except ValueError as exc:
        raise PublishError(f"{key} does not hold JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise PublishError(f"{key} does not hold a list object")
    return body
