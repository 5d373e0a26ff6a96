"""The ALS model: how interactions become confidences, fitting, fold-in and top-K.

A typed adapter over ``implicit`` (CPU ``AlternatingLeastSquares``), which is
untyped. The matrix is always users x items (``user_items``); implicit >= 0.5
wants exactly that, and :meth:`AlsModel.fit` checks the factor shapes after
every fit, so a transposed matrix is an error, not a silently wrong model.

Confidence mapping
------------------
One function, :func:`confidence`, turns the store's current value of a
(user, item) pair into the number in ``user_items``; refits and fold-ins both
use it. With ``d = dislike_below`` (default 3.0):

- a rating ``r >= d`` is positive with confidence ``1 + (r - d)``
  (3 -> 1, 4 -> 2, 5 -> 3);
- a view adds ``1 + watch`` (``watch`` is the largest watch fraction seen,
  0 when none was sent), so a video watched to the end counts like a 4;
- a like adds ``2``;
- a rating ``r < d`` is a dislike: ``-(1 + (d - r))`` (2 -> -2, 1 -> -3),
  whatever views or likes the pair also has. implicit reads a negative value
  as "preference 0 with confidence |value|", pushing the item away from the
  user more firmly than an item never seen (confidence 1).

No pair maps to anything between -1 and 1, so none weighs less than a
video never seen (confidence 1). implicit multiplies every value by ``alpha`` (also the
negative ones) in ``fit`` and in fold-ins alike; alpha=1.0 keeps the numbers
above as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import implicit.cpu.als
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from vrec.config import Settings
from vrec.errors import ModelError
from vrec.store.base import Interactions

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
F32Array = npt.NDArray[np.float32]
Matrix = sp.csr_matrix  # implicit needs csr_matrix, not csr_array

VIEW_BASE = 1.0
LIKE_WEIGHT = 2.0


def limit_blas_threads() -> None:
    """Run BLAS single-threaded in this process; threaded OpenBLAS slows ALS a lot.

    threadpoolctl only sees libraries already loaded, so this is called after
    importing implicit and again before each fit.
    """
    threadpool_limits(limits=1, user_api="blas")


limit_blas_threads()


class FitCancelled(ModelError):
    """A refit was stopped before it finished (the service is shutting down)."""


@dataclass(frozen=True, slots=True)
class ModelParams:
    """What a fit is asked for; the defaults are the original tutorial's."""

    factors: int = 20
    regularization: float = 0.1
    iterations: int = 20
    alpha: float = 1.0
    random_seed: int = 42
    dislike_below: float = 3.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelParams:
        """The model part of ``settings``."""
        return cls(
            factors=settings.factors,
            regularization=settings.regularization,
            iterations=settings.iterations,
            alpha=settings.alpha,
            random_seed=settings.random_seed,
            dislike_below=settings.dislike_below,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


# -- confidences and matrices ---------------------------------------------


def confidence(inter: Interactions, dislike_below: float) -> F32Array:
    """The ``user_items`` value of each pair in ``inter`` (see the module doc)."""
    rated = ~np.isnan(inter.rating)
    rating = np.where(rated, inter.rating, 0.0)

    weight = np.where(
        rated & (rating >= dislike_below), 1.0 + rating - dislike_below, 0.0
    )
    weight += np.where(inter.views > 0, VIEW_BASE + inter.watch, 0.0)
    weight += np.where(inter.liked > 0, LIKE_WEIGHT, 0.0)

    # An explicit low rating outweighs having watched or liked the video.
    disliked = rated & (rating < dislike_below)
    weight = np.where(disliked, -(1.0 + dislike_below - rating), weight)
    return weight.astype(np.float32)


def empty_matrix(n_rows: int, n_cols: int) -> Matrix:
    """An all-zero float32 csr_matrix."""
    nothing = np.zeros(0, dtype=np.int64)
    return Matrix(
        (np.zeros(0, dtype=np.float32), (nothing, nothing)), shape=(n_rows, n_cols)
    )


def rows_matrix(
    keys: IntArray, rows: IntArray, cols: IntArray, data: F32Array, n_cols: int
) -> Matrix:
    """A csr_matrix with one row per entry of ``keys``, in that order.

    Entry ``n`` of ``rows``/``cols``/``data`` lands in the row whose key is
    ``rows[n]``; entries whose key is not in ``keys`` or whose column is not
    below ``n_cols`` are left out.
    """
    keys = np.asarray(keys, dtype=np.int64)
    if keys.size == 0 or rows.size == 0:
        return empty_matrix(keys.size, n_cols)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pos = np.minimum(np.searchsorted(sorted_keys, rows), sorted_keys.size - 1)
    keep = (sorted_keys[pos] == rows) & (cols >= 0) & (cols < n_cols)
    return Matrix(
        (data[keep], (order[pos[keep]], cols[keep])),
        shape=(keys.size, n_cols),
        dtype=np.float32,
    )


def user_rows(
    inter: Interactions, user_idx: IntArray, n_items: int, dislike_below: float
) -> Matrix:
    """The ``user_items`` rows of ``user_idx`` (one row each, in that order)."""
    weights = confidence(inter, dislike_below)
    return rows_matrix(user_idx, inter.user_idx, inter.item_idx, weights, n_items)


def item_rows(
    inter: Interactions, item_idx: IntArray, n_users: int, dislike_below: float
) -> Matrix:
    """The items x users rows of ``item_idx``, as ``partial_fit_items`` wants them."""
    weights = confidence(inter, dislike_below)
    return rows_matrix(item_idx, inter.item_idx, inter.user_idx, weights, n_users)


def _with_columns(matrix: Matrix, n_cols: int) -> Matrix:
    """``matrix`` with ``n_cols`` columns: wider ones lose the columns beyond."""
    if matrix.shape[1] == n_cols:
        return matrix
    if matrix.shape[1] > n_cols:
        return Matrix(matrix[:, :n_cols])
    return Matrix(
        (matrix.data, matrix.indices, matrix.indptr), shape=(matrix.shape[0], n_cols)
    )


def popular_items(user_items: Matrix, k: int) -> tuple[IntArray, F32Array]:
    """The ``k`` items most users rated, viewed or liked positively, most first.

    The score is the number of such users; ties go to the lower item index.
    """
    matrix = user_items.tocsr()
    positive = matrix.indices[matrix.data > 0]
    counts = np.bincount(positive, minlength=matrix.shape[1])
    order = np.lexsort((np.arange(counts.size), -counts))
    order = order[counts[order] > 0][:k]
    return order.astype(np.int64), counts[order].astype(np.float32)


# -- the model ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ranked:
    """Top-K per user: item indices (-1 pads short rows), scores, and whether the
    list is personal (False: the user's factors are all zero, popular items
    stand in)."""

    item_idx: IntArray
    scores: F32Array
    personal: npt.NDArray[np.bool_]


class AlsModel:
    """implicit's CPU ALS with typed methods and factor matrices that grow in place.

    Factors live in buffers with spare rows; implicit sees views of exactly
    ``n_users`` and ``n_items`` rows, so no zero row is ever scored or served.
    """

    def __init__(self, als: Any) -> None:
        self._als = als
        self._users: F32Array = np.ascontiguousarray(als.user_factors, dtype=np.float32)
        self._items: F32Array = np.ascontiguousarray(als.item_factors, dtype=np.float32)
        self._n_users = int(self._users.shape[0])
        self._n_items = int(self._items.shape[0])
        als.user_factors = self._users[: self._n_users]
        als.item_factors = self._items[: self._n_items]

    @classmethod
    def fit(
        cls,
        user_items: Matrix,
        params: ModelParams,
        *,
        n_users: int,
        n_items: int,
        cancel: Callable[[], bool] | None = None,
    ) -> AlsModel:
        """Train a fresh model on ``user_items`` (users x items, never transposed).

        Raises :class:`ModelError` if the matrix is not ``n_users x n_items``
        or the factors come out with the wrong shape or non-finite values, and
        :class:`FitCancelled` once ``cancel()`` turns true (checked per iteration).
        """
        if user_items.shape != (n_users, n_items):
            raise ModelError(
                f"user_items has shape {user_items.shape}, expected users x items "
                f"({n_users}, {n_items})"
            )
        limit_blas_threads()
        als = implicit.cpu.als.AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.random_seed,
            dtype=np.float32,
            num_threads=0,
        )

        def _callback(iteration: int, _seconds: float, _loss: float | None) -> None:
            if cancel is not None and cancel():
                raise FitCancelled(f"refit cancelled at iteration={iteration}")

        try:
            als.fit(user_items, show_progress=False, callback=_callback)
        except FitCancelled:
            raise
        except Exception as exc:  # implicit raises ModelFitError on NaN, and more
            raise ModelError(f"ALS fit failed: {exc}") from exc
        model = cls(als)
        model.check(n_users, n_items)
        return model

    @classmethod
    def load(cls, path: Path) -> AlsModel:
        """Read a model saved by :meth:`save` (implicit's npz, never a pickle)."""
        try:
            als = implicit.cpu.als.AlternatingLeastSquares.load(str(path))
        except Exception as exc:
            raise ModelError(f"cannot load model file {path}: {exc}") from exc
        if getattr(als, "user_factors", None) is None or als.item_factors is None:
            raise ModelError(f"model file {path} has no factors")
        als.num_threads = 0
        return cls(als)

    def save(self, path: Path) -> None:
        """Write implicit's npz file (``np.savez``: arrays and scalars only)."""
        try:
            self._als.save(str(path))
        except OSError as exc:
            raise ModelError(f"cannot write model file {path}: {exc}") from exc

    def check(self, n_users: int, n_items: int) -> None:
        """Raise :class:`ModelError` unless the factors are users x factors and
        items x factors and all finite."""
        factors = int(self._als.factors)
        if self.user_factors.shape != (n_users, factors):
            raise ModelError(
                f"user factors have shape {self.user_factors.shape}, expected "
                f"({n_users}, {factors}): was the matrix transposed?"
            )
        if self.item_factors.shape != (n_items, factors):
            raise ModelError(
                f"item factors have shape {self.item_factors.shape}, expected "
                f"({n_items}, {factors}): was the matrix transposed?"
            )
        if not (
            np.isfinite(self.user_factors).all()
            and np.isfinite(self.item_factors).all()
        ):
            raise ModelError("the fit produced non-finite factors (NaN or inf)")

    @property
    def n_users(self) -> int:
        """Users with factors: rows 0..n_users-1."""
        return self._n_users

    @property
    def n_items(self) -> int:
        """Items with factors: columns 0..n_items-1."""
        return self._n_items

    @property
    def factors(self) -> int:
        """The number of latent factors."""
        return int(self._als.factors)

    @property
    def user_factors(self) -> F32Array:
        """The n_users x factors matrix (a view; do not keep it across fold-ins)."""
        return self._users[: self._n_users]

    @property
    def item_factors(self) -> F32Array:
        """The n_items x factors matrix (a view; do not keep it across fold-ins)."""
        return self._items[: self._n_items]

    def fold_in_users(self, user_idx: IntArray, user_items: Matrix) -> None:
        """Recompute the factors of ``user_idx`` from their rows of ``user_items``.

        The rows must be the users' FULL history, weighted by :func:`confidence`
        (only then does the result match a refit). Columns of items without
        factors are left out; users beyond ``n_users`` are added, and every
        index from ``n_users`` up to the largest new one must be among them.
        """
        users = np.asarray(user_idx, dtype=np.int64)
        if users.size == 0:
            return
        rows = _with_columns(user_items, self._n_items)
        needed = int(users.max()) + 1
        if needed > self._n_users:
            missing = np.setdiff1d(np.arange(self._n_users, needed), users)
            if missing.size:
                raise ModelError(
                    f"fold-in would leave users without factors: {missing[:5].tolist()}"
                )
            self._users = _grown(self._users, needed)
            self._n_users = needed
            self._als.user_factors = self._users[:needed]
        # partial_fit_users writes into our view: no copy, no zero rows left.
        self._als.partial_fit_users(users, rows)

    def fold_in_items(self, item_idx: IntArray, item_users: Matrix) -> None:
        """Compute factors for ``item_idx`` from their items x users rows.

        Columns of users without factors are left out; items beyond ``n_items``
        are added, and every index from ``n_items`` up to the largest new one
        must be among them.
        """
        items = np.asarray(item_idx, dtype=np.int64)
        if items.size == 0:
            return
        rows = _with_columns(item_users, self._n_users)
        needed = int(items.max()) + 1
        if needed > self._n_items:
            missing = np.setdiff1d(np.arange(self._n_items, needed), items)
            if missing.size:
                raise ModelError(
                    f"fold-in would leave items without factors: {missing[:5].tolist()}"
                )
            self._items = _grown(self._items, needed)
            self._n_items = needed
            self._als.item_factors = self._items[:needed]
        self._als.partial_fit_items(items, rows)

    def recommend(
        self,
        user_idx: IntArray,
        seen: Matrix,
        k: int,
        fallback: IntArray | None = None,
        fallback_scores: F32Array | None = None,
        batch_users: int = 1024,
    ) -> Ranked:
        """The top ``k`` items per user, never an item in the user's row of ``seen``.

        ``seen`` has one row per user in ``user_idx`` (any number of columns;
        every stored pair counts, dislikes too). A user whose factors are all
        zero has nothing to rank by and gets ``fallback`` (popular items) minus
        the seen ones instead.
        """
        users = np.asarray(user_idx, dtype=np.int64)
        k_eff = min(k, self._n_items)
        out_idx = np.full((users.size, k), -1, dtype=np.int64)
        out_scores = np.zeros((users.size, k), dtype=np.float32)
        personal = np.ones(users.size, dtype=bool)
        if users.size == 0 or k_eff == 0:
            return Ranked(out_idx, out_scores, personal & (k_eff > 0))
        if users.min() < 0 or users.max() >= self._n_users:
            raise ModelError(f"user indices outside 0..{self._n_users - 1}")
        items_t = np.ascontiguousarray(self.item_factors.T)
        seen = Matrix(seen)

        for start in range(0, users.size, batch_users):
            stop = min(start + batch_users, users.size)
            block = self._users[users[start:stop]]
            scores = block @ items_t
            rows = seen[start:stop]

            # Seen items can never win: -inf, then cut out below.
            counts = np.diff(rows.indptr)
            r = np.repeat(np.arange(stop - start), counts)
            c = rows.indices
            known = c < self._n_items
            scores[r[known], c[known]] = -np.inf

            _top_k(scores, k_eff, out_idx[start:stop], out_scores[start:stop])
            personal[start:stop] = block.any(axis=1)

        if fallback is not None and not personal.all():
            scores_fb = (
                fallback_scores
                if fallback_scores is not None
                else np.zeros(fallback.size, dtype=np.float32)
            )
            for n in np.flatnonzero(~personal):
                row_seen = seen.indices[seen.indptr[n] : seen.indptr[n + 1]]
                mask = ~np.isin(fallback, row_seen)
                chosen = fallback[mask][:k]
                out_idx[n] = -1
                out_scores[n] = 0.0
                out_idx[n, : chosen.size] = chosen
                out_scores[n, : chosen.size] = scores_fb[mask][:k]
        return Ranked(out_idx, out_scores, personal)


def _top_k(scores: F32Array, k: int, out_idx: IntArray, out_scores: F32Array) -> None:
    """Write the ``k`` best finite scores of each row, best first, into the outputs.

    The k-th best value per row comes from ``np.partition`` (values only, about
    twice as fast as ``argpartition``); the entries at or above it are few and
    get sorted. Rows with fewer than ``k`` finite scores keep their -1 padding.
    """
    n_cols = scores.shape[1]
    kth = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k]
    candidates = scores >= kth[:, None]
    short = np.flatnonzero(kth == -np.inf)  # rows with fewer than k unseen items
    if short.size:
        candidates[short] &= scores[short] > -np.inf
    rows, cols = np.nonzero(candidates)
    values = scores[rows, cols]

    # Best first within each row; ties keep the lower item index first.
    order = np.lexsort((-values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows)
    keep = rank < k
    out_idx[rows[keep], rank[keep]] = cols[keep]
    out_scores[rows[keep], rank[keep]] = values[keep]


def _grown(buffer: F32Array, rows: int) -> F32Array:
    """``buffer`` with room for at least ``rows`` rows (capacity doubles)."""
    if buffer.shape[0] >= rows:
        return buffer
    capacity = max(rows, 2 * buffer.shape[0], 64)
    grown = np.zeros((capacity, buffer.shape[1]), dtype=buffer.dtype)
    grown[: buffer.shape[0]] = buffer
    return grown
