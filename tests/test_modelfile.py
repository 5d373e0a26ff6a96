"""Model versions on disk: round trip, no pickle, keep count, rollback."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vrec.errors import ModelError
from vrec.model import AlsModel, Matrix, ModelParams
from vrec.modelfile import (
    list_versions,
    load_model,
    prune,
    rollback,
    save_model,
    utc_now,
    version_names,
)

USERS = ["u1", "u2", "u3"]
ITEMS = ["a", "b", "c", "d"]


def tiny_model(seed: int = 1) -> AlsModel:
    ui = Matrix(
        np.array(
            [[3.0, 0, 1.0, 0], [0, 2.0, 0, -2.0], [1.0, 0, 0, 3.0]], dtype=np.float32
        )
    )
    return AlsModel.fit(
        ui, ModelParams(factors=3, random_seed=seed), n_users=3, n_items=4
    )


def save(model_dir: Path, seq: int = 7, model: AlsModel | None = None) -> str:
    info = save_model(
        model_dir,
        model or tiny_model(),
        user_ids=USERS,
        item_ids=ITEMS,
        popular_idx=np.array([0, 3]),
        popular_scores=np.array([2.0, 1.0], dtype=np.float32),
        trained_seq=seq,
        trained_at=utc_now(),
        interactions=6,
        params=ModelParams(factors=3).to_dict(),
        fit_seconds=0.01,
    )
    return info.version


def test_round_trip_keeps_factors_ids_and_metadata(tmp_path: Path) -> None:
    model = tiny_model()
    version = save(tmp_path, seq=42, model=model)
    assert version == "v000001"

    saved = load_model(tmp_path)
    np.testing.assert_array_equal(saved.model.user_factors, model.user_factors)
    np.testing.assert_array_equal(saved.model.item_factors, model.item_factors)
    assert saved.user_ids == USERS
    assert saved.item_ids == ITEMS
    assert saved.popular_idx.tolist() == [0, 3]
    assert saved.info.trained_seq == 42
    assert saved.info.params["factors"] == 3
    assert saved.info.trained_at.endswith("Z")
    assert sorted(p.name for p in (tmp_path / version).iterdir()) == [
        "als.npz",
        "ids.json",
        "meta.json",
    ]


def test_the_npz_needs_no_pickle(tmp_path: Path) -> None:
    version = save(tmp_path)
    with np.load(tmp_path / version / "als.npz", allow_pickle=False) as data:
        assert data["user_factors"].shape == (3, 3)
        assert data["item_factors"].shape == (4, 3)
        assert all(data[name].dtype != object for name in data.files)


def test_a_broken_file_is_a_model_error(tmp_path: Path) -> None:
    version = save(tmp_path)
    (tmp_path / version / "als.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelError):
        load_model(tmp_path)


def test_a_pickled_array_is_refused(tmp_path: Path) -> None:
    version = save(tmp_path)
    path = tmp_path / version / "als.npz"
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["user_factors"] = np.array([object()], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(ModelError):
        load_model(tmp_path)


def test_mismatched_ids_are_refused(tmp_path: Path) -> None:
    version = save(tmp_path)
    (tmp_path / version / "ids.json").write_text('{"user_ids": ["u1"], "item_ids": []}')
    with pytest.raises(ModelError, match="does not match"):
        load_model(tmp_path)


def test_versions_are_listed_newest_first_and_pruned(tmp_path: Path) -> None:
    for seq in range(1, 6):
        save(tmp_path, seq=seq)
    assert version_names(tmp_path) == [f"v00000{n}" for n in range(5, 0, -1)]
    assert [i.trained_seq for i in list_versions(tmp_path)] == [5, 4, 3, 2, 1]

    deleted = prune(tmp_path, keep=2, protect="v000001")
    assert sorted(deleted) == ["v000002", "v000003"]
    assert version_names(tmp_path) == ["v000005", "v000004", "v000001"]


def test_rollback_takes_the_newest_out_of_service(tmp_path: Path) -> None:
    save(tmp_path, seq=1)
    save(tmp_path, seq=2)
    current = rollback(tmp_path)
    assert current.version == "v000001"
    assert version_names(tmp_path) == ["v000001"]
    assert (tmp_path / "v000002.rolled-back" / "als.npz").exists()
    assert load_model(tmp_path).info.version == "v000001"

    # Numbers never repeat, also past a rolled-back version.
    assert save(tmp_path, seq=3) == "v000003"

    rollback(tmp_path)
    with pytest.raises(ModelError, match="nothing to roll back to"):
        rollback(tmp_path)


def test_prune_clears_old_rolled_back_and_stale_temporary_dirs(tmp_path: Path) -> None:
    for seq in range(1, 4):
        save(tmp_path, seq=seq)
    rollback(tmp_path)  # v000003 rolled back
    for seq in range(4, 7):
        save(tmp_path, seq=seq)
    stale = tmp_path / ".tmp-v000099-dead"
    stale.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = tmp_path / ".tmp-v000100-live"
    fresh.mkdir()

    prune(tmp_path, keep=2)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".tmp-v000100-live", "v000005", "v000006"]


def test_a_half_written_version_is_never_listed(tmp_path: Path) -> None:
    save(tmp_path)
    (tmp_path / ".tmp-v000002-abcd").mkdir()
    assert version_names(tmp_path) == ["v000001"]
    assert zipfile.is_zipfile(tmp_path / "v000001" / "als.npz")
