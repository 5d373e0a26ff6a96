"""The fetch process: it polls the consumer group and forwards raw records.

kafka-python decodes records and checks their CRCs in pure Python, which
takes most of a core. Parsing and the store's own Python work would share
that core under the GIL, so a child process only polls and forwards raw
records while the consumer process (:mod:`vrec.ingest`) parses and stores
them.

Three one-way pipes link the two processes:

- data, child to parent: ``("records", [PartitionRecords, ...])``,
  ``("assigned", partitions)``, ``("revoked", partitions)``,
  ``("error", text)`` and, last, ``("closed", None)``;
- control, parent to child: ``("commit", offsets)`` after each store commit
  (group offsets, for lag monitoring) and ``("stop", None)``;
- seek, parent to child: the store's next offset of each newly assigned
  partition, ``None`` for "from the beginning". The child waits for it inside
  kafka-python's rebalance callback, before the first fetch.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any

from vrec.config import Settings
from vrec.errors import VrecError
from vrec.kafka import GroupConsumer, make_consumer
from vrec.service import setup_logging

logger = logging.getLogger(__name__)

_STOP_WAIT_S = 15.0


class IngestError(VrecError):
    """The fetch process failed or vanished."""


class Fetcher:
    """The parent's end of the fetch process (see :func:`_fetch_records`)."""

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        self._data, data_out = context.Pipe(duplex=False)
        control_in, self._control = context.Pipe(duplex=False)
        seek_in, self._seek = context.Pipe(duplex=False)
        self._lock = threading.Lock()
        self._process = context.Process(
            target=_fetch_records,
            args=(
                settings,
                logging.getLevelName(logging.getLogger().getEffectiveLevel()),
                os.getpid(),
                data_out,
                control_in,
                seek_in,
            ),
            name="vrec-fetch",
            daemon=True,
        )
        self._process.start()
        for end in (data_out, control_in, seek_in):
            end.close()

    def receive(self, timeout_s: float) -> tuple[str, Any] | None:
        """The next message of the fetch process, or None after ``timeout_s``."""
        try:
            if not self._data.poll(timeout_s):
                return None
            message: tuple[str, Any] = self._data.recv()
        except (EOFError, OSError) as exc:
            raise IngestError(
                f"the fetch process ended (exit code {self._process.exitcode})"
            ) from exc
        if message[0] == "error":
            raise IngestError(f"the fetch process failed: {message[1]}")
        return message

    def seek(self, offsets: dict[int, int | None]) -> None:
        """Answer an assignment: the next offset per partition, None = beginning."""
        self._send(self._seek, offsets)

    def commit(self, offsets: dict[int, int]) -> None:
        """Ask the fetch process to commit these next offsets to the group."""
        self._send(self._control, ("commit", offsets))

    def _send(self, pipe: Connection, message: Any) -> None:
        try:
            with self._lock:
                pipe.send(message)
        except OSError as exc:
            raise IngestError(
                f"the fetch process is gone (exit code {self._process.exitcode})"
            ) from exc

    def stop(self, answer_assignment: Callable[[Fetcher, list[int]], None]) -> None:
        """Ask the fetch process to leave the group and exit; kill it if it hangs.

        Records still arriving are dropped: they are not stored, so whoever
        owns their partitions next reads them again.
        """
        try:
            self._send(self._control, ("stop", None))
            deadline = time.monotonic() + _STOP_WAIT_S
            while time.monotonic() < deadline:
                message = self.receive(0.1)
                if message is not None and message[0] == "closed":
                    break
                if message is not None and message[0] == "assigned":
                    answer_assignment(self, message[1])
        except (OSError, VrecError) as exc:
            logger.debug("fetch process stopped uncleanly: %s", exc)
        self._process.join(timeout=_STOP_WAIT_S)
        if self._process.is_alive():
            logger.warning("fetch process did not exit; killing it")
            self._process.kill()
            self._process.join()
        for end in (self._data, self._control, self._seek):
            end.close()


def _fetch_records(
    settings: Settings,
    log_level: str,
    parent_pid: int,
    data: Connection,
    control: Connection,
    seek: Connection,
) -> None:
    """The fetch process: poll the group and forward raw records to the parent.

    It ignores SIGINT and SIGTERM (a terminal sends them to the whole process
    group) and stops when the parent says so or is gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    standard = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    setup_logging(log_level if log_level in standard else "WARNING")
    link = _ParentLink(parent_pid, data, seek)
    consumer: GroupConsumer | None = None
    committed: dict[int, int] = {}
    try:
        consumer = make_consumer(settings, link)
        link.consumer = consumer
        while link.parent_alive() and _obey(control, consumer, committed):
            chunks = consumer.poll_partitions(
                settings.batch_max_records, settings.poll_timeout_ms
            )
            if chunks:
                link.send(("records", chunks))
    except (BrokenPipeError, EOFError):
        pass  # the parent is gone
    except Exception as exc:
        if link.parent_alive():
            logger.exception("fetch process failed")
            link.send_quietly(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if consumer is not None:
            # The last offsets the store committed, so lag reads right after exit.
            consumer.commit(committed, wait=True)
            consumer.close()
        link.send_quietly(("closed", None))


def _obey(
    control: Connection, consumer: GroupConsumer, committed: dict[int, int]
) -> bool:
    """Carry out the parent's queued commands; False once told to stop."""
    while control.poll():
        command, body = control.recv()
        if command == "stop":
            return False
        committed.update(body)
        consumer.commit(body)
    return True


class _ParentLink:
    """The fetch process's side of the pipes; it is also the rebalance listener."""

    def __init__(self, parent_pid: int, data: Connection, seek: Connection) -> None:
        self.consumer: GroupConsumer | None = None
        self._parent_pid = parent_pid
        self._data = data
        self._seek = seek
        # kafka-python calls the listener from its own IO thread.
        self._lock = threading.Lock()

    def parent_alive(self) -> bool:
        return os.getppid() == self._parent_pid

    def send(self, message: tuple[str, Any]) -> None:
        with self._lock:
            self._data.send(message)

    def send_quietly(self, message: tuple[str, Any]) -> None:
        with suppress(OSError):
            self.send(message)

    def assigned(self, partitions: list[int]) -> None:
        """Seek each new partition to the store's offset, as the parent reads it."""
        self.send(("assigned", partitions))
        while not self._seek.poll(0.5):
            if not self.parent_alive():
                raise IngestError("the consumer process is gone")
        offsets: dict[int, int | None] = self._seek.recv()
        assert self.consumer is not None
        for partition in partitions:
            offset = offsets.get(partition)
            if offset is None:
                self.consumer.seek_to_beginning(partition)
            else:
                self.consumer.seek(partition, offset)

    def revoked(self, partitions: list[int]) -> None:
        self.send_quietly(("revoked", partitions))
