"""What both long-running services share: logging, graceful stop, exit codes."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from vrec.config import Settings, load_settings
from vrec.errors import ConfigError, VrecError

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


def run_service(name: str, run: Callable[[Settings, threading.Event], object]) -> int:
    """Entry point body shared by ``python -m consumers`` and ``python -m trainer``.

    Configures logging, reads the settings once and runs until SIGTERM or
    SIGINT. Exit code 0 after a signal, 1 after a failure (logged), so a
    supervisor can restart the service safely.
    """
    setup_logging()
    log = logging.getLogger(name)
    try:
        run(load_settings(), stop_on_signals())
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    except VrecError:
        log.exception("%s failed", name)
        return 1
    return 0
