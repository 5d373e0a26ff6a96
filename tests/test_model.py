"""The ALS adapter on tiny matrices with answers known in advance (no servers)."""

from __future__ import annotations

import implicit.cpu.als
import numpy as np
import pytest
import scipy.sparse as sp

from tests.modeldata import Planted, planted_groups
from vrec.errors import ModelError
from vrec.model import (
    AlsModel,
    Matrix,
    ModelParams,
    confidence,
    item_rows,
    popular_items,
    rows_matrix,
    user_rows,
)
from vrec.store import Interactions
from vrec.useritems import UserItems

NAN = float("nan")
PLANTED_PARAMS = ModelParams(factors=4)  # the rank of the planted structure


def interactions(*rows: tuple[int, int, float, int, float, int, int]) -> Interactions:
    """(user_idx, item_idx, rating, views, watch, liked, last_ts) rows."""
    return Interactions.from_rows(list(rows))


def planted_matrix(planted: Planted) -> tuple[Matrix, list[str], list[str]]:
    users = sorted(planted.group_of_user)
    items = sorted(planted.group_of_item)
    u_idx = {u: n for n, u in enumerate(users)}
    i_idx = {i: n for n, i in enumerate(items)}
    inter = interactions(
        *((u_idx[u], i_idx[i], r, 0, 0.0, 0, 0) for u, i, r in planted.rows)
    )
    ui = user_rows(inter, np.arange(len(users)), len(items), dislike_below=3.0)
    return ui, users, items


@pytest.fixture(scope="module")
def planted() -> tuple[Planted, Matrix, list[str], list[str], AlsModel]:
    data = planted_groups()
    ui, users, items = planted_matrix(data)
    model = AlsModel.fit(ui, PLANTED_PARAMS, n_users=len(users), n_items=len(items))
    return data, ui, users, items, model


# -- confidences ----------------------------------------------------------


def test_confidence_mapping() -> None:
    inter = interactions(
        (0, 0, 5.0, 0, 0.0, 0, 1),  # loved
        (0, 1, 3.0, 0, 0.0, 0, 1),  # at the threshold: still positive
        (0, 2, 2.0, 0, 0.0, 0, 1),  # dislike
        (0, 3, 1.0, 0, 0.0, 1, 1),  # dislike wins over a like
        (0, 4, NAN, 2, 0.5, 0, 1),  # viewed half
        (0, 5, NAN, 1, 0.0, 0, 1),  # viewed, no fraction
        (0, 6, NAN, 0, 0.0, 1, 1),  # liked only
        (0, 7, 4.0, 1, 1.0, 1, 1),  # everything positive adds up
    )
    got = confidence(inter, dislike_below=3.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [3.0, 1.0, -2.0, -3.0, 1.5, 1.0, 2.0, 6.0])
    assert (np.abs(got) >= 1).all()


def test_rows_matrix_follows_the_order_of_keys_and_drops_unknown_columns() -> None:
    rows = np.array([5, 2, 5, 9])
    cols = np.array([0, 1, 3, 0])
    data = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    m = rows_matrix(np.array([5, 2]), rows, cols, data, n_cols=3)
    assert isinstance(m, sp.csr_matrix)
    np.testing.assert_array_equal(m.toarray(), [[1.0, 0, 0], [0, 2.0, 0]])


def test_item_rows_are_items_by_users() -> None:
    inter = interactions((0, 1, 5.0, 0, 0.0, 0, 1), (2, 1, 4.0, 0, 0.0, 0, 1))
    m = item_rows(inter, np.array([1]), n_users=3, dislike_below=3.0)
    np.testing.assert_array_equal(m.toarray(), [[3.0, 0.0, 2.0]])


def test_user_items_keeps_full_rows_from_changed_pairs() -> None:
    first = interactions(
        (0, 0, 5.0, 0, 0.0, 0, 10),
        (1, 1, 4.0, 0, 0.0, 0, 20),
        (2, 2, 3.0, 0, 0.0, 0, 30),
    )
    mirror = UserItems.from_interactions(first, 3.0)
    assert mirror.matrix().shape == (3, 3)
    snapshot = mirror.matrix()

    # User 1 rates item 0 low, then also item 4 (new); user 3 is new.
    assert mirror.apply(interactions((1, 0, 2.0, 0, 0.0, 0, 25))).tolist() == [1]
    changed = mirror.apply(
        interactions(
            (1, 4, 5.0, 0, 0.0, 0, 40),
            (3, 2, 4.0, 0, 0.0, 0, 50),
            (1, 1, 4.0, 1, 0.5, 0, 45),
        )
    )
    assert changed.tolist() == [1, 3]
    rows = mirror.rows(np.array([3, 1, 0]))
    np.testing.assert_array_equal(
        rows.toarray(),
        [[0, 0, 2.0, 0, 0], [-2.0, 3.5, 0, 0, 3.0], [3.0, 0, 0, 0, 0]],
    )
    expected = np.array(
        [
            [3.0, 0, 0, 0, 0],
            [-2.0, 3.5, 0, 0, 3.0],
            [0, 0, 1.0, 0, 0],
            [0, 0, 2.0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(mirror.matrix().toarray(), expected)
    np.testing.assert_array_equal(mirror.last_ts(np.arange(4)), [10, 45, 30, 50])
    np.testing.assert_array_equal(mirror.matrix().toarray(), expected)  # idempotent
    assert (snapshot[1, 0], snapshot[1, 1]) == (0.0, 2.0)  # a snapshot never changes


def test_user_items_matches_a_full_read_after_many_changes() -> None:
    rng = np.random.default_rng(3)
    rows = [
        (
            int(rng.integers(40)),
            int(rng.integers(30)),
            float(rng.integers(1, 6)),
            0,
            0.0,
            0,
            n,
        )
        for n in range(600)
    ]
    current: dict[tuple[int, int], tuple[int, int, float, int, float, int, int]] = {}
    for row in rows[:200]:
        current[row[:2]] = row
    mirror = UserItems.from_interactions(interactions(*current.values()), 3.0)
    for start in range(200, 600, 50):  # like the store: current values of the pairs
        batch = {}
        for row in rows[start : start + 50]:
            current[row[:2]] = batch[row[:2]] = row
        mirror.apply(interactions(*batch.values()))
    full = UserItems.from_interactions(interactions(*current.values()), 3.0)
    np.testing.assert_array_equal(mirror.matrix().toarray(), full.matrix().toarray())


def test_popular_items_count_positive_users() -> None:
    ui = Matrix(np.array([[3.0, -2.0, 1.0], [2.0, -3.0, 0.0], [0.0, 1.0, 1.0]]))
    idx, scores = popular_items(ui, 2)
    np.testing.assert_array_equal(idx, [0, 2])  # item 1: one fan, two dislikes
    np.testing.assert_array_equal(scores, [2.0, 2.0])


# -- orientation and fit checks --------------------------------------------


def test_fit_is_users_by_items_and_ranks_items(planted) -> None:
    data, ui, users, items, model = planted
    assert len(users) != len(items)
    assert model.user_factors.shape == (len(users), 4)
    assert model.item_factors.shape == (len(items), 4)

    ranked = model.recommend(np.arange(len(users)), ui, 3)
    for n, user_id in enumerate(users):
        own = data.group_of_user[user_id]
        recommended = [items[i] for i in ranked.item_idx[n]]
        assert all(data.group_of_item[i] == own for i in recommended), user_id


def test_a_transposed_matrix_is_refused(planted) -> None:
    _, ui, users, items, _ = planted
    with pytest.raises(ModelError, match="expected users x items"):
        AlsModel.fit(
            Matrix(ui.T.tocsr()), PLANTED_PARAMS, n_users=len(users), n_items=len(items)
        )

    # Even if the shape slipped through, the factor check catches the swap.
    als = implicit.cpu.als.AlternatingLeastSquares(factors=4, random_state=1)
    als.fit(Matrix(ui.T.tocsr()), show_progress=False)
    with pytest.raises(ModelError, match="transposed"):
        AlsModel(als).check(len(users), len(items))


def test_non_finite_factors_are_an_error(planted) -> None:
    _, ui, users, items, _ = planted
    als = implicit.cpu.als.AlternatingLeastSquares(factors=4, random_state=1)
    als.fit(ui, show_progress=False)
    als.item_factors[3, 2] = np.nan
    with pytest.raises(ModelError, match="non-finite"):
        AlsModel(als).check(len(users), len(items))


def test_cancel_stops_a_fit(planted) -> None:
    _, ui, users, items, _ = planted
    from vrec.model import FitCancelled

    with pytest.raises(FitCancelled):
        AlsModel.fit(
            ui,
            PLANTED_PARAMS,
            n_users=len(users),
            n_items=len(items),
            cancel=lambda: True,
        )


# -- fold-in ----------------------------------------------------------------


def test_fold_in_with_full_history_matches_the_fit(planted) -> None:
    _, ui, users, items, _ = planted
    model = AlsModel.fit(ui, PLANTED_PARAMS, n_users=len(users), n_items=len(items))
    all_users = np.arange(len(users))
    before = model.recommend(all_users, ui, 5).item_idx
    model.fold_in_users(all_users, ui)
    after = model.recommend(all_users, ui, 5).item_idx
    overlap = np.mean(
        [len(set(a) & set(b)) / 5 for a, b in zip(before, after, strict=True)]
    )
    assert overlap >= 0.9


def test_new_users_grow_the_model_without_zero_rows(planted) -> None:
    data, ui, users, items, _ = planted
    model = AlsModel.fit(ui, PLANTED_PARAMS, n_users=len(users), n_items=len(items))
    n = len(users)
    group0 = [i for i, item in enumerate(items) if data.group_of_item[item] == 0]

    # A gap would leave a zero row that gets served: refused.
    row = Matrix(
        (np.ones(3, dtype=np.float32), ([0, 0, 0], group0[:3])), shape=(1, len(items))
    )
    with pytest.raises(ModelError, match="without factors"):
        model.fold_in_users(np.array([n + 1]), row)
    assert model.n_users == n

    two = Matrix(sp.vstack([row, row]))
    for _ in range(40):  # grows past the first spare capacity too
        model.fold_in_users(np.array([model.n_users, model.n_users + 1]), two)
    assert model.n_users == n + 80
    assert model.user_factors.shape == (n + 80, 4)
    assert np.abs(model.user_factors[n:]).sum(axis=1).min() > 0

    # The new users like group 0, and get the rest of group 0 recommended.
    ranked = model.recommend(np.array([n]), row, 3)
    assert ranked.personal.all()
    assert all(data.group_of_item[items[i]] == 0 for i in ranked.item_idx[0])
    assert not set(ranked.item_idx[0]) & set(group0[:3])


def test_new_items_get_factors_and_are_never_read_out_of_bounds(planted) -> None:
    data, ui, users, items, _ = planted
    model = AlsModel.fit(ui, PLANTED_PARAMS, n_users=len(users), n_items=len(items))
    n_items = len(items)
    fans = [n for n, u in enumerate(users) if data.group_of_user[u] == 1][:10]

    # A row naming a video the model has no factors for: left out, no crash.
    wide = Matrix(
        (np.full(2, 3.0, dtype=np.float32), ([0, 0], [0, n_items + 5])),
        shape=(1, n_items + 6),
    )
    model.fold_in_users(np.array([fans[0]]), wide)
    ranked = model.recommend(np.array([fans[0]]), wide, n_items + 10)
    assert ranked.item_idx.max() < n_items

    # The new video, liked by group 1, gets factors and ranks for group 1.
    column = Matrix(
        (
            np.full(len(fans), 3.0, dtype=np.float32),
            (np.zeros(len(fans), dtype=int), fans),
        ),
        shape=(1, len(users)),
    )
    model.fold_in_items(np.array([n_items]), column)
    assert model.n_items == n_items + 1
    assert np.isfinite(model.item_factors).all()
    group1_user = next(
        n for n, u in enumerate(users) if data.group_of_user[u] == 1 and n not in fans
    )
    scores = model.user_factors[group1_user] @ model.item_factors.T
    group2_item = next(n for n, i in enumerate(items) if data.group_of_item[i] == 2)
    assert scores[n_items] > scores[group2_item]

    with pytest.raises(ModelError, match="without factors"):
        model.fold_in_items(np.array([n_items + 2]), column)


def test_recommend_excludes_every_seen_item_and_pads_short_lists() -> None:
    ui = Matrix(
        np.array([[3.0, -2.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    )
    als = implicit.cpu.als.AlternatingLeastSquares(factors=2, random_state=3)
    als.fit(ui, show_progress=False)
    model = AlsModel(als)
    ranked = model.recommend(np.array([0]), ui[0], 10)
    assert ranked.item_idx.shape == (1, 10)
    assert ranked.item_idx[0, 0] == 2  # the only item user 0 has not seen
    assert (ranked.item_idx[0, 1:] == -1).all()


def test_users_without_taste_get_popular_items_minus_seen() -> None:
    ui = Matrix(np.array([[3.0, 0.0, 1.0], [0.0, 2.0, 1.0]], dtype=np.float32))
    als = implicit.cpu.als.AlternatingLeastSquares(factors=2, random_state=3)
    als.fit(ui, show_progress=False)
    als.user_factors[1] = 0.0
    model = AlsModel(als)
    popular = np.array([2, 0, 1])
    ranked = model.recommend(
        np.array([0, 1]), ui, 2, popular, np.array([2.0, 1.0, 1.0], dtype=np.float32)
    )
    assert ranked.personal.tolist() == [True, False]
    assert ranked.item_idx[1].tolist() == [0, -1]
    assert ranked.scores[1, 0] == 1.0
