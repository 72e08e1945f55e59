"""Operators get one clear line and a non-zero exit, not a traceback, when a server is down or
an argument is wrong. Ports point at nothing here, so no stack is needed."""

from __future__ import annotations

import os
import subprocess

from core.settings import REPO_ROOT

NOWHERE = {
    "OMS_CLICKHOUSE_PORT": "1",
    "OMS_REDIS_URL": "redis://127.0.0.1:1/0",
    "OMS_HOME": "/tmp/oms-nowhere",
}


def oms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO_ROOT / "oms"), *args],
        env={**os.environ, **NOWHERE},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_report_with_clickhouse_down_is_one_clear_error() -> None:
    result = oms("report")
    assert result.returncode == 1
    assert "ClickHouse at 127.0.0.1:1 is not reachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_with_redis_down_is_one_clear_error() -> None:
    result = oms("verify", "--json")
    assert result.returncode == 1
    assert "Redis at redis://127.0.0.1:1/0 is not reachable" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_unknown_channel_and_missing_file_are_refused() -> None:
    unknown = oms("ingest", "--channel", "wish", "samples/payloads/jd.json")
    assert unknown.returncode == 2 and "unknown channel 'wish'" in unknown.stderr
    missing = oms("ingest", "--channel", "jd", "/no/such/file.json")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
