"""``python -m trainer``: keep the model and the Redis lists fresh until stopped.

Settings come from ``VREC_*`` variables; the exit code is 0 after SIGTERM or
SIGINT, 1 after a failure (logged), so a supervisor can restart it safely.
"""

from __future__ import annotations

import logging
import sys

from vrec.config import load_settings
from vrec.errors import ConfigError, VrecError
from vrec.schedule import run_trainer
from vrec.service import setup_logging, stop_on_signals

logger = logging.getLogger("trainer")


def main() -> int:
    """Configure logging, read settings, train and publish until stopped."""
    setup_logging()
    try:
        run_trainer(load_settings(), stop_on_signals())
    except ConfigError as exc:
        logger.error("%s", exc)
        return 1
    except VrecError:
        logger.exception("trainer failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
