"""The ``vrec`` command as a user types it: exit codes and what it prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.modeldata import append_ratings, tutorial_rows
from vrec.cli import main
from vrec.store import open_store


@pytest.fixture
def flags(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Settings flags for a store with the tutorial's table and a private Redis."""
    for name in ("VREC_STORE_URL", "VREC_REDIS_URL", "VREC_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    store_url = str(tmp_path / "store.db")
    with open_store(store_url) as store:
        append_ratings(store, tutorial_rows())
    return [
        "--store-url",
        store_url,
        "--redis-url",
        redis_url,
        "--model-dir",
        str(tmp_path / "models"),
    ]


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_store_stats_json(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "stats", "--json", *flags]) == 0
    stats = _json(capsys)
    assert isinstance(stats, dict)
    assert (stats["events"], stats["users"], stats["items"]) == (10, 5, 5)
    assert stats["offsets"] == {"test-events": {"0": 10}}


def test_train_once_then_recommend(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--once", *flags]) == 0
    capsys.readouterr()

    assert main(["recommend", "u001", "--json", *flags]) == 0
    rec = _json(capsys)
    assert isinstance(rec, dict)
    assert rec["user_id"] == "u001" and rec["source"] == "personal"
    assert rec["items"] and not {"v001", "v002"} & set(rec["items"])
    assert len(rec["scores"]) == len(rec["items"])
    assert rec["model_version"]

    assert main(["recommend", "stranger", "-k", "2", "--json", *flags]) == 0
    fallback = _json(capsys)
    assert isinstance(fallback, dict)
    assert fallback["source"] == "popular" and len(fallback["items"]) == 2

    assert main(["recommend", "u001", *flags]) == 0
    assert "u001: personal list" in capsys.readouterr().out


def test_model_list_and_a_refused_rollback(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--once", *flags]) == 0
    capsys.readouterr()
    assert main(["model", "list", "--json", *flags]) == 0
    versions = _json(capsys)
    assert isinstance(versions, list) and len(versions) == 1

    # One version: nothing to roll back to, said plainly, exit 1.
    assert main(["model", "rollback", *flags]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err


def test_a_bad_file_is_named_with_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,videoId,rating\nu001,v001,5\nu002,v002,lots\n")
    # Nothing listens on this port: the file is refused before any connection.
    code = main(["produce", str(bad), "--bootstrap-servers", "127.0.0.1:9"])
    assert code == 1
    err = capsys.readouterr().err
    assert "line 3" in err and "rating" in err


def test_a_bad_setting_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VREC_TOP_K", "0")
    assert main(["store", "stats"]) == 2
    assert "VREC_TOP_K" in capsys.readouterr().err
