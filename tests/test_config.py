"""Settings: environment names, CLI overrides, masked secrets, clear errors."""

from __future__ import annotations

import pytest

from vrec.config import load_settings
from vrec.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("VREC_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_tutorials() -> None:
    settings = load_settings()
    assert (settings.factors, settings.regularization, settings.iterations) == (
        20,
        0.1,
        20,
    )
    assert settings.topic == "ratings"
    assert settings.dlq == "ratings.dlq"


def test_environment_then_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VREC_TOPIC", "plays")
    monkeypatch.setenv("VREC_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("VREC_STORE_URL", "postgresql://vrec@db/vrec")
    settings = load_settings(group_id="g2", store_url=None)
    assert settings.topic == "plays"
    assert settings.dlq == "plays.dlq"
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.store_url == "postgresql://vrec@db/vrec"
    assert settings.group_id == "g2"


def test_passwords_are_masked_for_logs() -> None:
    settings = load_settings(
        redis_url="redis://app:s3cret@cache:6379/0",
        store_url="postgresql://vrec:pw@db:5432/vrec",
    )
    masked = settings.masked()
    assert "s3cret" not in str(masked) and "pw@" not in str(masked)
    assert masked["redis_url"] == "redis://app:***@cache:6379/0"


def test_a_bad_value_names_the_setting_and_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VREC_FACTORS", "many")
    with pytest.raises(ConfigError, match=r"factors \(VREC_FACTORS\)"):
        load_settings()


def test_rating_range_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="rating_min"):
        load_settings(rating_min=5, rating_max=1)
