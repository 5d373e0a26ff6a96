"""The users x items confidence matrix, kept equal to the store's current values.

The trainer fills it once from a full read of the store and then applies the
pairs changed since its watermark, so each fold-in gets every touched user's
FULL history (what an exact fold-in needs) without reading it from the store
again. Values are :func:`vrec.model.confidence` of the store's current values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vrec.model import F32Array, IntArray, Matrix, empty_matrix, user_rows
from vrec.store.base import Interactions


class UserItems:
    """The users x items confidence matrix, kept equal to the store's current values.

    Filled once from a full read of the store, then kept current by
    :meth:`apply` with the pairs changed since the last call, so a fold-in
    reads what changed, not every user's history again. Changed rows wait in
    a per-user overlay until :meth:`matrix` merges them; a matrix it returned
    is never changed afterwards (a refit thread may hold it).
    """

    def __init__(self, dislike_below: float) -> None:
        self.dislike_below = dislike_below
        self._base: Matrix = empty_matrix(0, 0)
        self._overlay: dict[int, tuple[npt.NDArray[Any], F32Array]] = {}
        self._last_ts: IntArray = np.zeros(0, dtype=np.int64)
        self.n_users = 0
        self.n_items = 0

    @classmethod
    def from_interactions(cls, inter: Interactions, dislike_below: float) -> UserItems:
        """The matrix of every pair in ``inter`` (a full read of the store)."""
        mirror = cls(dislike_below)
        if len(inter):
            mirror._grow(int(inter.user_idx.max()) + 1, int(inter.item_idx.max()) + 1)
            users = np.arange(mirror.n_users, dtype=np.int64)
            mirror._base = user_rows(inter, users, mirror.n_items, dislike_below)
            np.maximum.at(mirror._last_ts, inter.user_idx, inter.last_ts)
        return mirror

    def _grow(self, n_users: int, n_items: int) -> None:
        self.n_users = max(self.n_users, n_users)
        self.n_items = max(self.n_items, n_items)
        if self._last_ts.size < self.n_users:
            grown = np.zeros(max(self.n_users, 2 * self._last_ts.size), dtype=np.int64)
            grown[: self._last_ts.size] = self._last_ts
            self._last_ts = grown

    def apply(self, changed: Interactions) -> IntArray:
        """Overwrite the pairs in ``changed`` with their current values.

        Pairs are never deleted, so the rows stay whole: each is its user's
        full history. Returns the users whose rows changed.
        """
        if not len(changed):
            return np.zeros(0, dtype=np.int64)
        users = np.unique(changed.user_idx)
        self._grow(int(users[-1]) + 1, int(changed.item_idx.max()) + 1)
        old = self.rows(users)
        new = user_rows(changed, users, self.n_items, self.dislike_below)
        merged = _overwrite(old, new)
        for n, user in enumerate(users.tolist()):
            start, stop = merged.indptr[n], merged.indptr[n + 1]
            self._overlay[user] = (merged.indices[start:stop], merged.data[start:stop])
        np.maximum.at(self._last_ts, changed.user_idx, changed.last_ts)
        if len(self._overlay) > max(10_000, self.n_users // 4):
            self.matrix()  # keeps rows() cheap and the overlay small
        return users

    def rows(self, user_idx: IntArray) -> Matrix:
        """The current rows of ``user_idx``, one per user, in that order."""
        users = np.asarray(user_idx, dtype=np.int64)
        in_overlay = np.fromiter(
            (u in self._overlay for u in users.tolist()), dtype=bool, count=users.size
        )
        from_base = np.flatnonzero(~in_overlay & (users < self._base.shape[0]))
        base = self._base[users[from_base]].tocoo()
        parts_r = [from_base[base.row]]
        parts_c = [base.col]
        parts_d = [base.data]
        for n in np.flatnonzero(in_overlay).tolist():
            cols, data = self._overlay[int(users[n])]
            parts_r.append(np.full(cols.size, n, dtype=np.int64))
            parts_c.append(cols)
            parts_d.append(data)
        return Matrix(
            (
                np.concatenate(parts_d),
                (np.concatenate(parts_r), np.concatenate(parts_c)),
            ),
            shape=(users.size, self.n_items),
        )

    def last_ts(self, user_idx: IntArray) -> IntArray:
        """The newest event time (epoch ms) of each user, 0 if none."""
        return self._last_ts[np.asarray(user_idx, dtype=np.int64)]

    def matrix(self) -> Matrix:
        """The whole users x items matrix, with every changed row merged in."""
        if not self._overlay and self._base.shape == (self.n_users, self.n_items):
            return self._base
        changed = np.fromiter(self._overlay, dtype=np.int64, count=len(self._overlay))
        base = self._base.tocoo()
        keep = ~np.isin(base.row, changed)
        rows = self.rows(changed).tocoo()
        self._base = Matrix(
            (
                np.concatenate([base.data[keep], rows.data]),
                (
                    np.concatenate([base.row[keep], changed[rows.row]]),
                    np.concatenate([base.col[keep], rows.col]),
                ),
            ),
            shape=(self.n_users, self.n_items),
        )
        self._overlay = {}
        return self._base


def _overwrite(old: Matrix, new: Matrix) -> Matrix:
    """``old`` with every entry of ``new`` (same shape) written over it."""
    a, b = old.tocoo(), new.tocoo()
    rows = np.concatenate([a.row, b.row])
    cols = np.concatenate([a.col, b.col])
    data = np.concatenate([a.data, b.data])
    newer = np.concatenate([np.zeros(a.nnz, dtype=bool), np.ones(b.nnz, dtype=bool)])
    order = np.lexsort((newer, cols, rows))
    rows, cols, data = rows[order], cols[order], data[order]

    # The last entry of each (row, col) run is the newest one.
    last = np.ones(rows.size, dtype=bool)
    last[:-1] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    return Matrix((data[last], (rows[last], cols[last])), shape=old.shape)
