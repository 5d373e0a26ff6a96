"""Settings: one frozen object, read once at the edge from ``VREC_*`` variables.

Core code receives a :class:`Settings` and never reads the environment itself.
CLI flags override the environment by passing keyword arguments to
:func:`load_settings`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vrec.errors import ConfigError

ENV_PREFIX = "VREC_"
_URL_PASSWORD = re.compile(r"(?P<head>://[^:/@]*:)[^@]*(?P<tail>@)")


class Settings(BaseSettings):
    """Every knob of vrec, with its default; each field is read from ``VREC_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid"
    )

    # Kafka
    kafka_bootstrap_servers: str = "localhost:9092"
    topic: str = "ratings"
    dlq_topic: str = ""  # empty means "<topic>.dlq"
    group_id: str = "vrec-consumer"
    topic_partitions: int = Field(default=3, ge=1)
    batch_max_records: int = Field(default=2000, ge=1)
    poll_timeout_ms: int = Field(default=500, ge=1)
    # How long the broker may hold a fetch that has no new records: an upper
    # bound on produce-to-consume latency with brokers that wait it out.
    fetch_max_wait_ms: int = Field(default=100, ge=0, le=10_000)

    # Event validation
    max_id_length: int = Field(default=128, ge=1, le=1024)
    max_event_bytes: int = Field(default=16384, ge=64)
    rating_min: float = 0.5
    rating_max: float = 5.0

    # Store and Redis
    store_url: str = "vrec.db"
    redis_url: str = "redis://localhost:6379/0"
    redis_prefix: str = "vrec:"

    # Model: defaults are the original tutorial's
    factors: int = Field(default=20, ge=1)
    regularization: float = Field(default=0.1, ge=0.0)
    iterations: int = Field(default=20, ge=1)
    alpha: float = Field(default=1.0, gt=0.0)
    dislike_below: float = 3.0
    random_seed: int = 42
    top_k: int = Field(default=10, ge=1, le=1000)
    popular_k: int = Field(default=100, ge=1)

    # Trainer
    model_dir: Path = Path("models")
    keep_models: int = Field(default=5, ge=1)
    fold_interval_s: float = Field(default=0.2, gt=0.0)
    refit_interval_s: float = Field(default=3600.0, gt=0.0)
    refit_new_share: float = Field(default=0.2, gt=0.0)
    fold_batch_users: int = Field(default=2000, ge=1)

    @model_validator(mode="after")
    def _check_ranges(self) -> Settings:
        if self.rating_min >= self.rating_max:
            raise ValueError("rating_min must be below rating_max")
        return self

    @property
    def dlq(self) -> str:
        """The dead-letter topic: ``dlq_topic`` if set, else ``<topic>.dlq``."""
        return self.dlq_topic or f"{self.topic}.dlq"

    def masked(self) -> dict[str, Any]:
        """The settings as a dict for a start-up log line, passwords in URLs hidden."""
        out = self.model_dump()
        for key, value in out.items():
            if isinstance(value, str):
                out[key] = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", value)
            elif isinstance(value, Path):
                out[key] = str(value)
        return out


def load_settings(**overrides: Any) -> Settings:
    """Read the environment, apply non-None ``overrides``, and validate.

    Raises :class:`ConfigError` naming the setting and its env var.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"]) or "settings"
            env = f"{ENV_PREFIX}{name.upper()}" if err["loc"] else "VREC_*"
            problems.append(f"{name} ({env}): {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from exc
