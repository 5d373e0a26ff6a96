"""What both long-running services share: logging set-up and graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

logger = logging.getLogger(__name__)


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger; only entry points call this."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # kafka-python logs every connection step at INFO.
    logging.getLogger("kafka").setLevel(logging.WARNING)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a loop can finish its batch and exit."""
    stop = threading.Event()

    def _handler(signum: int, _frame: FrameType | None) -> None:
        logger.info(
            "signal=%s stopping after the current batch", signal.Signals(signum).name
        )
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop
