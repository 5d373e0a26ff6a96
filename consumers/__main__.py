"""``python -m consumers``: run the consumer service until SIGTERM or SIGINT.

Settings come from ``VREC_*`` variables; the exit code is 0 after a signal,
1 after a failure (logged), so a supervisor can restart it safely.
"""

from __future__ import annotations

import logging
import sys

from vrec.config import load_settings
from vrec.errors import ConfigError, VrecError
from vrec.ingest import run_consumer
from vrec.service import setup_logging, stop_on_signals

logger = logging.getLogger("consumers")


def main() -> int:
    """Configure logging, read settings, ingest until stopped."""
    setup_logging()
    try:
        run_consumer(load_settings(), stop_on_signals())
    except ConfigError as exc:
        logger.error("%s", exc)
        return 1
    except VrecError:
        logger.exception("consumer failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
