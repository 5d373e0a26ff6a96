"""docker-compose.yml and the Dockerfile agree with the code they run.

No Docker engine runs here, so the stack itself cannot start; these checks
catch what usually breaks a compose file: a wrong command, an env var the
code does not read, a COPY of a missing path, a service started too early.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vrec.cli import build_parser
from vrec.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_stack_has_its_four_services(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "consumer", "trainer"} <= set(compose["services"])


@pytest.mark.parametrize(
    ("service", "command"), [("consumer", "consume"), ("trainer", "train")]
)
def test_services_run_vrec_commands(
    compose: dict[str, Any], service: str, command: str
) -> None:
    spec = compose["services"][service]
    args = build_parser().parse_args(spec["command"])
    assert args.command == command
    assert set(spec["depends_on"]) >= {"kafka", "redis"}
    assert all(
        dep["condition"] == "service_healthy" for dep in spec["depends_on"].values()
    )


def test_every_vrec_variable_is_a_setting(compose: dict[str, Any]) -> None:
    names = set()
    for spec in compose["services"].values():
        names |= {k for k in spec.get("environment", {}) if k.startswith(ENV_PREFIX)}
    assert {
        "VREC_KAFKA_BOOTSTRAP_SERVERS",
        "VREC_STORE_URL",
        "VREC_REDIS_URL",
        "VREC_TOPIC",
        "VREC_GROUP_ID",
    } <= names
    fields = {ENV_PREFIX + f.upper() for f in Settings.model_fields}
    assert names <= fields


def test_kafka_advertises_the_address_the_services_use(compose: dict[str, Any]) -> None:
    bootstrap = compose["services"]["consumer"]["environment"][
        "VREC_KAFKA_BOOTSTRAP_SERVERS"
    ]
    advertised = compose["services"]["kafka"]["environment"][
        "KAFKA_ADVERTISED_LISTENERS"
    ]
    assert f"://{bootstrap}" in advertised


def test_dockerfile_copies_paths_that_exist() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, flags=re.MULTILINE)
    sources = [src for line in copied for src in line.split()]
    assert "vrec" in sources and "pyproject.toml" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_compose_file_validates_where_docker_compose_is_installed() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed; the checks above still ran")
    result = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
