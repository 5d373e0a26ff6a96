"""The model in service and how its lists reach Redis: rank, encode, write.

Both the trainer's loop (a few users per fold-in) and a refit thread (every
user) publish through :func:`publish_users`; the JSON layout itself lives in
:mod:`vrec.publish`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from vrec.model import AlsModel, F32Array, FitCancelled, IntArray, Matrix
from vrec.modelfile import ModelInfo
from vrec.publish import Publisher, encode_list, now_ms

PUBLISH_CHUNK_USERS = 5000  # users ranked and written per round in a full publish

BoolArray = np.ndarray[tuple[int], np.dtype[np.bool_]]


@dataclass(frozen=True)
class Served:
    """The model in service and what belongs to it."""

    model: AlsModel
    info: ModelInfo
    base_items: int  # items the fit saw; later ones get factors by fold-in
    popular_idx: IntArray
    popular_scores: F32Array

    @property
    def version(self) -> str:
        """The model version."""
        return self.info.version

    def meta(self) -> dict[str, object]:
        """The ``<prefix>model`` value: what Redis says is in service."""
        info = self.info
        return {
            "version": info.version,
            "trained_at": info.trained_at,
            "trained_seq": info.trained_seq,
            "users": info.users,
            "items": info.items,
            "interactions": info.interactions,
            "params": info.params,
        }


def encode_lists(
    version: str,
    users: IntArray,
    item_idx: IntArray,
    scores: F32Array,
    personal: BoolArray,
    last_ts: IntArray,
    user_ids: list[str],
    item_ids: list[str],
) -> Iterator[tuple[str, bytes]]:
    """(user_id, JSON value) per user, from ranked item indices (-1 pads)."""
    published = now_ms()
    rounded = np.round(scores.astype(np.float64), 5).tolist()
    ranked = item_idx.tolist()
    for n, user in enumerate(users.tolist()):
        row = ranked[n]
        cut = row.index(-1) if -1 in row else len(row)
        user_id = user_ids[user]
        yield (
            user_id,
            encode_list(
                user_id,
                [item_ids[i] for i in row[:cut]],
                rounded[n][:cut],
                "personal" if personal[n] else "popular",
                version,
                int(last_ts[n]),
                published,
            ),
        )


def publish_users(
    served: Served,
    publisher: Publisher,
    users: IntArray,
    seen: Matrix,
    last_ts: IntArray,
    user_ids: list[str],
    item_ids: list[str],
    top_k: int,
) -> int:
    """Rank ``users`` (``seen``: their rows) and write their lists; the count."""
    ranked = served.model.recommend(
        users, seen, top_k, served.popular_idx, served.popular_scores
    )
    values = encode_lists(
        served.version,
        users,
        ranked.item_idx,
        ranked.scores,
        ranked.personal,
        last_ts,
        user_ids,
        item_ids,
    )
    return publisher.write_lists(values)


def publish_all(
    served: Served,
    publisher: Publisher,
    user_items: Matrix,
    user_ids: list[str],
    item_ids: list[str],
    last_ts: IntArray,
    top_k: int,
    cancel: Callable[[], bool] | None = None,
) -> int:
    """Publish the list of every row of ``user_items``, then the popular list.

    ``cancel()`` is checked between rounds (:class:`FitCancelled` if true).
    """
    n_users = user_items.shape[0]
    published = 0
    for start in range(0, n_users, PUBLISH_CHUNK_USERS):
        if cancel is not None and cancel():
            raise FitCancelled("publish cancelled")
        users = np.arange(start, min(start + PUBLISH_CHUNK_USERS, n_users))
        published += publish_users(
            served,
            publisher,
            users,
            Matrix(user_items[start : start + users.size]),
            last_ts[users],
            user_ids,
            item_ids,
            top_k,
        )
    publisher.write_popular(
        [item_ids[i] for i in served.popular_idx.tolist()],
        np.round(served.popular_scores.astype(np.float64), 5).tolist(),
        served.version,
    )
    return published
