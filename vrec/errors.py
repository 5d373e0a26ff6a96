"""Exceptions raised by vrec.

Every error the package raises derives from :class:`VrecError`::

    VrecError
    ├── ConfigError        a setting is missing or malformed
    ├── InvalidEvent       a record is not a valid event (it goes to the DLQ)
    ├── InputFileError     a row of a CSV or JSON-lines file cannot be produced
    ├── StoreError         the event store failed or holds unexpected data
    ├── ModelError         a fit failed, or a model file is unusable
    │   └── FitCancelled   a refit was stopped by shutdown (vrec.model)
    ├── PublishError       Redis could not be written or read
    ├── BrokerError        Kafka refused or failed a call (vrec.kafka)
    └── IngestError        the consumer's fetch process failed (vrec.fetch)
"""

from __future__ import annotations


class VrecError(Exception):
    """Base class of every error raised by vrec."""


class ConfigError(VrecError):
    """A setting is missing or malformed; the message names it and its env var."""


class InvalidEvent(VrecError):
    """A record that is not a valid event; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InputFileError(VrecError):
    """A row of an input file is bad; the message names the line and column."""


class StoreError(VrecError):
    """The event store failed or holds data it cannot use."""


class ModelError(VrecError):
    """A fit yielded an unusable model, or a model file cannot be loaded."""


class PublishError(VrecError):
    """Recommendations could not be written to or read from Redis."""
