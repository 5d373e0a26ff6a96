"""The trainer against a real store and a real redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import implicit.cpu.als
import numpy as np
import pytest
import redis

import vrec.trainer
from tests.modeldata import (
    LATER,
    append_events,
    append_ratings,
    make_settings,
    planted_groups,
    read,
    tutorial_rows,
    wait_until,
)
from vrec.config import Settings
from vrec.errors import ModelError
from vrec.events import Event, EventType
from vrec.model import AlsModel
from vrec.modelfile import rollback, version_names
from vrec.publish import connect
from vrec.schedule import run_trainer
from vrec.store import Store, open_store
from vrec.trainer import Trainer


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with open_store(sqlite_url) as store:
        yield store


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(sqlite_url, redis_url, tmp_path)


@pytest.fixture
def trainer(settings: Settings, store: Store, client: redis.Redis) -> Iterator[Trainer]:
    trainer = Trainer(settings, store, client)
    yield trainer
    trainer.close()


def rated_by(rows: list[tuple[str, str, float]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for user_id, item_id, _ in rows:
        out.setdefault(user_id, set()).add(item_id)
    return out


# -- the tutorial's table -------------------------------------------------


def test_tutorial_table_once(store_url: str, redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(store_url, redis_url, tmp_path)
    rows = tutorial_rows()
    with open_store(store_url) as store:
        append_ratings(store, rows)

    run_trainer(settings, threading.Event(), once=True)

    client = connect(redis_url)
    for user_id, rated in rated_by(rows).items():
        rec = read(client, user_id)
        assert rec.source == "personal"
        assert rec.model_version == "v000001"
        assert rec.items, user_id
        assert not set(rec.items) & rated, user_id
    assert not {"v001", "v002"} & set(read(client, "u001").items)

    stranger = read(client, "nobody")
    assert stranger.source == "popular"
    assert stranger.items == ["v001", "v003", "v004", "v005", "v002"]
    assert version_names(settings.model_dir) == ["v000001"]
    client.close()


# -- orientation and planted taste groups ---------------------------------


def test_planted_groups_get_lists_from_their_own_group(
    sqlite_url: str, redis_url: str, tmp_path: Path, store: Store, client: redis.Redis
) -> None:
    planted = planted_groups()
    append_ratings(store, planted.rows)
    settings = make_settings(sqlite_url, redis_url, tmp_path, factors=4, top_k=3)
    trainer = Trainer(settings, store, client)
    trainer.refit()

    # More users than videos: a transposed fit would fail its shape check,
    # or rank user indices as videos; neither gives these lists.
    model = trainer.served.model
    assert (model.n_users, model.n_items) == (120, 60)
    for user_id, group in planted.group_of_user.items():
        rec = read(client, user_id)
        assert len(rec.items) == 3
        assert {planted.group_of_item[i] for i in rec.items} == {group}, user_id
    trainer.close()


# -- freshness ------------------------------------------------------------


def test_fresh_events_reach_redis_without_a_refit(
    store_url: str, redis_url: str, tmp_path: Path, client: redis.Redis
) -> None:
    settings = make_settings(store_url, redis_url, tmp_path)
    stop = threading.Event()
    with open_store(store_url) as store:
        append_ratings(store, tutorial_rows())
        service = threading.Thread(target=run_trainer, args=(settings, stop))
        service.start()
        try:
            wait_until(lambda: read(client, "u005").source == "personal")
            before = read(client, "u001")
            assert "v003" in before.items
            assert read(client, "u100").source == "popular"

            # A known user rates a video from the list; a new user rates an old
            # and a new video; a known user rates the new video too.
            append_ratings(
                store,
                [
                    ("u001", "v003", 5.0),
                    ("u100", "v001", 5.0),
                    ("u100", "v100", 4.0),
                    ("u002", "v100", 5.0),
                ],
                ts=LATER,
            )
            wait_until(
                lambda: (
                    "v003" not in read(client, "u001").items
                    and read(client, "u100").source == "personal"
                )
            )
            u001, u100 = read(client, "u001"), read(client, "u100")
            assert u001.items != before.items
            assert u001.event_ts == LATER
            assert not {"v001", "v100"} & set(u100.items)
            assert u100.event_ts == LATER + 2
            assert "v100" not in read(client, "u002").items

            # The new video has factors: the next list it may join lists it.
            append_ratings(store, [("u005", "v003", 4.0)], ts=LATER + 10)
            wait_until(lambda: "v100" in read(client, "u005").items)

            assert {u001.model_version, u100.model_version} == {"v000001"}
            assert read(client, "u005").model_version == "v000001"
            assert version_names(settings.model_dir) == ["v000001"]
        finally:
            stop.set()
            service.join()


def test_a_user_with_only_unknown_taste_gets_popular_items(
    trainer: Trainer, store: Store, client: redis.Redis
) -> None:
    append_ratings(store, tutorial_rows())
    trainer.start()
    append_ratings(store, [("u200", "v200", 5.0)], ts=LATER)
    trainer.step()

    rec = read(client, "u200")
    assert rec.source == "popular"  # the user key says so, nothing personal yet
    assert client.exists("vrec:user:u200")
    assert "v200" not in rec.items
    assert rec.items[:2] == ["v001", "v003"]


def test_views_and_likes_count_as_interactions(
    trainer: Trainer, store: Store, client: redis.Redis
) -> None:
    append_ratings(store, tutorial_rows())
    trainer.start()
    append_events(
        store,
        [
            Event("u001", "v003", EventType.VIEW, LATER, watch_fraction=0.9),
            Event("u001", "v004", EventType.LIKE, LATER + 1),
        ],
    )
    trainer.step()
    rec = read(client, "u001")
    assert rec.items == ["v005"]
    assert rec.event_ts == LATER + 1


# -- refits ---------------------------------------------------------------


def test_a_refit_while_events_arrive_loses_none(
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
    store: Store,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planted = planted_groups()
    append_ratings(store, planted.rows)
    settings = make_settings(sqlite_url, redis_url, tmp_path, factors=4)
    trainer = Trainer(settings, store, client)
    assert trainer.start()
    assert trainer.served.version == "v000001"

    # Hold the background fit until events have arrived and been folded in.
    gate = threading.Event()
    fit = AlsModel.fit.__func__

    def held_fit(cls: type[AlsModel], *args: object, **kwargs: object) -> AlsModel:
        gate.wait(30)
        return fit(cls, *args, **kwargs)

    monkeypatch.setattr(AlsModel, "fit", classmethod(held_fit))
    assert trainer.start_refit()

    items = sorted(planted.group_of_item)
    late: list[tuple[str, str, float]] = []
    ts = LATER
    for batch in range(6):
        rows = [
            (f"late{batch}-{n}", items[(batch * 7 + n) % 60], 5.0) for n in range(5)
        ]
        rows += [(f"u{batch % 4}-0{batch}", f"new-{batch}", 4.0)]
        append_ratings(store, rows, ts=ts)
        late += rows
        ts += 100
        trainer.step()
        if batch == 2:
            assert trainer.refit_running
            gate.set()
    assert trainer.wait_for_refit(60)
    trainer.step()

    assert trainer.served.version == "v000002"
    assert trainer.watermark == store.last_seq()
    assert trainer.served.model.n_users == store.stats().users
    assert trainer.served.model.n_items == store.stats().items
    rated = rated_by(planted.rows + late)
    for user_id in {u for u, _, _ in late}:
        rec = read(client, user_id)
        assert rec.model_version == "v000002", user_id
        assert rec.event_ts == max(
            LATER + 100 * b + n
            for b in range(6)
            for n, (u, _, _) in enumerate(late[6 * b : 6 * b + 6])
            if u == user_id
        )
        assert not set(rec.items) & rated[user_id]
    trainer.close()


def test_a_bad_fit_keeps_the_model_in_service(
    trainer: Trainer, store: Store, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_ratings(store, tutorial_rows())
    trainer.start()
    fit = implicit.cpu.als.AlternatingLeastSquares.fit

    def nan_fit(self: object, *args: object, **kwargs: object) -> None:
        fit(self, *args, **kwargs)
        self.user_factors[:] = np.nan  # type: ignore[attr-defined]

    monkeypatch.setattr(implicit.cpu.als.AlternatingLeastSquares, "fit", nan_fit)
    assert trainer.start_refit()
    assert trainer.wait_for_refit(30)
    assert trainer.served.version == "v000001"
    assert version_names(trainer.settings.model_dir) == ["v000001"]
    assert read(client, "u001").model_version == "v000001"


def test_the_schedule_refits_when_enough_new_events_arrive(
    sqlite_url: str, redis_url: str, tmp_path: Path, store: Store, client: redis.Redis
) -> None:
    append_ratings(store, tutorial_rows())
    settings = make_settings(sqlite_url, redis_url, tmp_path, refit_new_share=0.5)
    trainer = Trainer(settings, store, client)
    trainer.start()
    append_ratings(store, [("u001", "v003", 4.0), ("u002", "v004", 2.0)], ts=LATER)
    trainer.step()
    assert not trainer.refit_running  # 2 new events on 10: below half
    append_ratings(
        store,
        [("u003", "v001", 4.0), ("u004", "v001", 5.0), ("u005", "v001", 5.0)],
        ts=LATER + 5,
    )
    trainer.step()
    assert trainer.refit_running
    assert trainer.wait_for_refit(30)
    trainer.step()
    assert trainer.served.version == "v000002"
    assert read(client, "u003").model_version == "v000002"
    trainer.close()


# -- restarts, Redis flushes, rollbacks -------------------------------------


def test_a_restarted_trainer_resumes_from_its_model_file(
    settings: Settings, store: Store, client: redis.Redis
) -> None:
    append_ratings(store, tutorial_rows())
    first = Trainer(settings, store, client)
    first.start()
    append_ratings(store, [("u001", "v003", 4.0)], ts=LATER)
    first.step()
    first.close()
    untouched = read(client, "u004")

    # Events while no trainer runs, then a new one starts.
    append_ratings(store, [("u002", "v004", 5.0), ("u300", "v002", 5.0)], ts=LATER + 10)
    second = Trainer(settings, store, client)
    second.start()
    assert second.served.version == "v000001"
    assert version_names(settings.model_dir) == ["v000001"]  # no refit
    assert second.watermark == store.last_seq()
    assert read(client, "u002").event_ts == LATER + 10
    assert "v004" not in read(client, "u002").items
    assert read(client, "u300").source == "personal"
    assert "v003" not in read(client, "u001").items
    assert read(client, "u004").published_ts == untouched.published_ts  # not redone
    second.close()


def test_a_flushed_redis_gets_every_list_again(
    trainer: Trainer, store: Store, client: redis.Redis
) -> None:
    rows = tutorial_rows()
    append_ratings(store, rows)
    trainer.start()
    client.flushall()
    trainer.step()
    for user_id in rated_by(rows):
        assert read(client, user_id).source == "personal"
    assert client.exists("vrec:model", "vrec:popular") == 2


def test_a_rollback_is_served_by_the_running_trainer(
    trainer: Trainer, store: Store, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_ratings(store, tutorial_rows())
    trainer.start()
    assert trainer.refit().version == "v000002"
    assert read(client, "u001").model_version == "v000002"

    assert rollback(trainer.settings.model_dir).version == "v000001"
    monkeypatch.setattr(vrec.trainer, "MODEL_DIR_CHECK_S", 0.0)
    trainer.step()
    assert trainer.served.version == "v000001"
    assert read(client, "u001").model_version == "v000001"
    assert read(client, "nobody").model_version == "v000001"


# -- the service entry point ----------------------------------------------


def test_python_m_trainer_serves_until_sigterm(
    sqlite_url: str, redis_url: str, tmp_path: Path, store: Store, client: redis.Redis
) -> None:
    append_ratings(store, tutorial_rows())
    env = {k: v for k, v in os.environ.items() if not k.startswith("VREC_")}
    env |= {
        "VREC_STORE_URL": sqlite_url,
        "VREC_REDIS_URL": redis_url,
        "VREC_MODEL_DIR": str(tmp_path / "models"),
        "VREC_FOLD_INTERVAL_S": "0.05",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer"], env=env, cwd=Path(__file__).parent.parent
    )
    try:
        wait_until(lambda: read(client, "u001").source == "personal", timeout_s=60)
        append_ratings(store, [("u001", "v003", 5.0)], ts=LATER)
        wait_until(lambda: "v003" not in read(client, "u001").items)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_once_on_an_empty_store_is_an_error(settings: Settings) -> None:
    with pytest.raises(ModelError, match="no interactions"):
        run_trainer(settings, threading.Event(), once=True)
