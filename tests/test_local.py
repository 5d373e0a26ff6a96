"""``vrec up``: the whole stack on one machine, as ``scripts/run`` starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrec.devservers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_up_starts_a_broker_runs_both_services_and_prints_lists(
    tmp_path: Path, redis_url: str, topic: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VREC_")}
    env.update(
        {
            # Nothing listens there, so `up` starts its own broker.
            "VREC_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "VREC_REDIS_URL": redis_url,
            "VREC_STORE_URL": str(tmp_path / "store.db"),
            "VREC_MODEL_DIR": str(tmp_path / "models"),
            "VREC_TOPIC": topic,
        }
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vrec.cli",
            "up",
            "--demo",
            "--sample",
            str(ROOT / "data" / "ratings.csv"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lists = dict(
        line.split(": ", 1)
        for line in result.stdout.splitlines()
        if line.startswith("u0")
    )
    assert sorted(lists) == ["u001", "u002", "u003", "u004", "u005"]
    u001 = lists["u001"].split("  (model")[0].split(", ")
    assert u001 and not {"v001", "v002"} & set(u001)
    assert "started a local broker" in result.stderr
    assert "stopped service=consumer exit=0" in result.stderr
    assert "stopped service=trainer exit=0" in result.stderr
