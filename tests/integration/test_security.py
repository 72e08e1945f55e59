"""Redis and ClickHouse with passwords, for real: a private redis-server with ``requirepass``
and an ACL user, and a private clickhouse-server whose users file (ops/stack.py) gives its
users a password, each on free loopback ports with a data dir of its own under the test
home. The OMS connect functions work with the password settings and fail clearly without.
The test stack's own servers are never touched.

Kafka TLS/SASL is not here: the local Tansu broker speaks neither, so its wiring is checked
up to the client arguments in tests/unit/test_security_settings.py.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from analytics.client import connect as clickhouse_connect
from analytics.client import ensure_database
from core.settings import Settings
from ops import stack
from state.redis import connect, connect_async, connect_batched

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "redis-test-pw-9d2f"
ACL_USER, ACL_PASSWORD = "oms_acl", "acl-test-pw-5e1b"
CLICKHOUSE_USER, CLICKHOUSE_PASSWORD = "oms_sec", "ch-test-pw-7a3c"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        if stack.port_open("127.0.0.1", port):
            return
        time.sleep(0.2)
    pytest.fail(f"nothing listening on {port} after {START_TIMEOUT_S:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Only the server this module started, by its own handle."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def secure_redis(base_settings: Settings) -> Iterator[int]:
    """redis-server with requirepass and an ACL user; yields its port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    home = base_settings.home / "sec-redis"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port = free_port()
    conf = home / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f'dir "{home}"',
                f'unixsocket "{home}/redis.sock"',
                "unixsocketperm 700",
                'save ""',
                "appendonly no",
                f'requirepass "{REDIS_PASSWORD}"',
                f"user {ACL_USER} on >{ACL_PASSWORD} ~* &* +@all",
            ]
        )
        + "\n"
    )
    conf.chmod(0o600)
    log = home / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["redis-server", str(conf)], stdout=out, stderr=out)
    try:
        wait_listening(port, process, log)
        yield port
    finally:
        stop(process)
        shutil.rmtree(home, ignore_errors=True)


def redis_settings(port: int, **overrides: object) -> Settings:
    return Settings(redis_url=f"redis://127.0.0.1:{port}/0", **overrides)  # type: ignore[arg-type]


def test_redis_password_setting(secure_redis: int) -> None:
    settings = redis_settings(secure_redis, redis_password=REDIS_PASSWORD)
    assert connect(settings).ping()
    assert stack.redis_health(settings)[0]

    async def both() -> None:
        for client in (connect_async(settings), connect_batched(settings)):
            try:
                assert await client.ping()
            finally:
                await client.aclose()

    asyncio.run(both())


def test_redis_over_a_unix_socket(secure_redis: int, base_settings: Settings) -> None:
    """OMS_REDIS_URL=unix://...: every client, the hot path's too (it once passed a TCP
    keepalive option the unix connection refuses: a TypeError at the first command)."""
    sock = base_settings.home / "sec-redis" / "redis.sock"
    settings = Settings(redis_url=f"unix://{sock}?db=0", redis_password=REDIS_PASSWORD)
    assert connect(settings).ping()

    async def both() -> None:
        for client in (connect_async(settings), connect_batched(settings)):
            try:
                script = client.register_script("return ARGV[1]")
                pipe = client.pipeline(transaction=False)
                await script(keys=[], args=["over the socket"], client=pipe)
                assert await pipe.execute() == ["over the socket"]
            finally:
                await client.aclose()

    asyncio.run(both())


def test_redis_acl_user(secure_redis: int) -> None:
    settings = redis_settings(secure_redis, redis_username=ACL_USER, redis_password=ACL_PASSWORD)
    client = connect(settings)
    assert client.ping()
    assert client.acl_whoami() == ACL_USER


def test_redis_password_in_the_url_still_works(secure_redis: int) -> None:
    url = f"redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{secure_redis}/0"
    assert connect(Settings(redis_url=url)).acl_whoami() == ACL_USER


def test_redis_without_or_with_a_wrong_password_fails_clearly(secure_redis: int) -> None:
    with pytest.raises(redis.AuthenticationError, match=r"(?i)auth"):
        connect(redis_settings(secure_redis)).ping()
    with pytest.raises(redis.AuthenticationError):
        connect(redis_settings(secure_redis, redis_password="not-it")).ping()
    healthy, detail = stack.redis_health(redis_settings(secure_redis, redis_password="not-it"))
    assert not healthy and "not-it" not in detail


@pytest.fixture(scope="module")
def secure_clickhouse(base_settings: Settings) -> Iterator[Settings]:
    """A private clickhouse-server started from ops/stack.py's own config, whose users
    (``default`` and the configured one) have a password; yields the settings to reach it."""
    if shutil.which("clickhouse-server") is None:
        pytest.skip("clickhouse-server not installed")
    home = base_settings.home / "sec-clickhouse"
    shutil.rmtree(home, ignore_errors=True)
    settings = Settings(
        home=home,
        clickhouse_host="127.0.0.1",
        clickhouse_port=free_port(),
        clickhouse_http_port=free_port(),
        clickhouse_user=CLICKHOUSE_USER,
        clickhouse_password=CLICKHOUSE_PASSWORD,
        clickhouse_database="oms_sec",
    )
    settings.log_dir.mkdir(parents=True)
    stack.conf_dir(settings).mkdir(parents=True, exist_ok=True)
    command = stack.clickhouse_command(settings)
    log = settings.log_dir / "clickhouse.out"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, cwd=home)
    try:
        wait_listening(settings.clickhouse_port, process, log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not stack.clickhouse_health(settings)[0] and time.monotonic() < deadline:
            time.sleep(0.3)
        yield settings
    finally:
        stop(process)
        shutil.rmtree(home, ignore_errors=True)


def test_clickhouse_password_user(secure_clickhouse: Settings) -> None:
    ensure_database(secure_clickhouse)
    client = clickhouse_connect(secure_clickhouse)
    try:
        assert client.execute("SELECT currentDatabase()") == [("oms_sec",)]
    finally:
        client.disconnect()
    assert stack.clickhouse_health(secure_clickhouse)[0]


def test_clickhouse_without_or_with_a_wrong_password_fails_clearly(
    secure_clickhouse: Settings,
) -> None:
    from clickhouse_driver import errors

    for wrong_part in (
        {"clickhouse_password": ""},
        {"clickhouse_password": "not-it"},
        {"clickhouse_user": "nobody"},
    ):
        wrong = secure_clickhouse.model_copy(update=wrong_part)
        client = clickhouse_connect(wrong, database="default")
        with pytest.raises(errors.ServerException) as caught:
            client.execute("SELECT 1")
        client.disconnect()
        # 192 unknown user, 193 wrong password, 194 password required, 516 authentication failed
        assert caught.value.code in (192, 193, 194, 516)
        assert CLICKHOUSE_PASSWORD not in str(caught.value)
