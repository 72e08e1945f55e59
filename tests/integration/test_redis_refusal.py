"""A real Redis refusing writes is an outage: the batch runner waits it out, dead-letters nothing,
and lands the batch once writes are accepted again (agents/batches.py, core/retry.py).

Each test runs redis-server processes of its own (no persistence, a free loopback port): one is
made to refuse writes the way production ones do, which the shared test Redis must not be.
- no replicas: ``min-replicas-to-write 1`` with none connected (NOREPLICAS);
- memory full: ``maxmemory 1`` under ``noeviction`` (OOM);
- a replica: ``REPLICAOF`` a second server, as after a failover (READONLY).
The work does to Redis what the order path does: a stock-like script (EVALSHA) and a MULTI.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from agents.batches import POISON_ATTEMPTS, BatchRunner
from order.plan import BatchResult
from order.record import Output

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


def start_server(directory: Path) -> Server:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory.mkdir(parents=True, exist_ok=True)
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        ["redis-server", *args, "--dir", str(directory)], stdout=subprocess.DEVNULL
    )
    server = Server(port, process)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.ConnectionError):
            if server.client().ping():
                return server
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[[], Server]]:
    started: list[Server] = []

    def start() -> Server:
        started.append(start_server(tmp_path / str(len(started))))
        return started[-1]

    yield start
    for server in started:
        server.process.terminate()
        server.process.wait(timeout=10)


def refuse_no_replicas(target: Server, _start: Callable[[], Server]) -> Callable[[], None]:
    target.client().config_set("min-replicas-to-write", 1)
    return lambda: target.client().config_set("min-replicas-to-write", 0)


def refuse_out_of_memory(target: Server, _start: Callable[[], Server]) -> Callable[[], None]:
    admin = target.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    return lambda: admin.config_set("maxmemory", 0)


def refuse_as_replica(target: Server, start: Callable[[], Server]) -> Callable[[], None]:
    master = start()
    target.client().replicaof("127.0.0.1", master.port)
    return lambda: target.client().replicaof("NO", "ONE")


# A stock script's shape: read, write the figure, append the movement (EVALSHA, one slot).
WRITE_SCRIPT = """
local on_hand = tonumber(redis.call('HGET', KEYS[1], 'on_hand:W1') or '0')
redis.call('HSET', KEYS[1], 'on_hand:W1', on_hand + tonumber(ARGV[1]))
redis.call('XADD', KEYS[2], '*', 'wh', 'W1', 'on_hand', ARGV[1])
return 1
"""


@dataclass
class Event:
    """The one attribute of a Faust event the runner touches."""

    message: Any


@dataclass
class Message:
    acked: bool = False


@pytest.mark.parametrize(
    "refuse",
    [refuse_no_replicas, refuse_out_of_memory, refuse_as_replica],
    ids=["noreplicas", "oom", "readonly"],
)
async def test_refused_writes_are_waited_out_and_nothing_is_dead_lettered(
    servers: Callable[[], Server],
    refuse: Callable[[Server, Callable[[], Server]], Callable[[], None]],
) -> None:
    target = servers()
    client = aioredis.Redis(port=target.port, decode_responses=True)
    script = client.register_script(WRITE_SCRIPT)
    sent: list[Output] = []
    dead: list[BaseException] = []
    counters: Counter[str] = Counter()

    async def send(outputs: Sequence[Output]) -> None:
        sent.extend(outputs)

    async def dead_letter(event: Any, exc: BaseException) -> Output:
        dead.append(exc)
        return ("dlq", "input", repr(exc))

    async def work(batch: Sequence[Any]) -> BatchResult:
        await script(keys=["refusal:stock:{SKU1}", "refusal:ledger:{SKU1}"], args=[5])
        pipe = client.pipeline(transaction=True)
        pipe.hset("refusal:order", "state", "reserved")
        await pipe.execute()
        result = BatchResult()
        result.outputs.extend(("out", str(i), "ok") for i in range(len(batch)))
        return result

    async def short_sleep(_seconds: float) -> None:
        await asyncio.sleep(0.01)  # the schedule is test_retry's; here only what is retried

    runner = BatchRunner("intake", send, counters, dead_letter, short_sleep)
    lift = refuse(target, servers)
    task = asyncio.create_task(runner.run([Event(Message()), Event(Message())], work))
    try:
        # Far past the attempts after which an input counts as poison (as a batch, then alone).
        async with asyncio.timeout(30):
            while counters["intake_retries"] < 4 * POISON_ATTEMPTS and not task.done():
                await asyncio.sleep(0.02)
        assert not task.done() and not dead and not sent, dead[:1]
        lift()
        async with asyncio.timeout(30):
            await task
    finally:
        task.cancel()
        await client.aclose()
    assert not dead and counters["dlq"] == 0
    assert sent == [("out", "0", "ok"), ("out", "1", "ok")]
    stock = target.client()
    assert stock.hget("refusal:stock:{SKU1}", "on_hand:W1") == "5"
    assert stock.hget("refusal:order", "state") == "reserved"
