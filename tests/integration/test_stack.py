"""The local stack launcher (ops/stack.py).

Unit tests cover the pure parts (address parsing, generated configs, pid files, port
checks). Integration tests run an ISOLATED stack: its own home in a temp dir and its own
ports, so they never touch the developer's stack (.oms/, 19092/16379/19000) nor the one
``./oms test`` starts for the rest of the suite. Workers and the fact sink process are replaced
by a stand-in that speaks the heartbeat protocol, since the real ones are tested elsewhere
(tests/integration/test_sink_process.py for the sink).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.heartbeat import sink_heartbeat_key, worker_heartbeat_key
from core.kafka import bootstrap_servers, ensure_topics, kafka_admin
from core.settings import Settings
from ops import stack

BROKER_PORT = 29392
REDIS_PORT = 26679
CLICKHOUSE_PORT = 29300
CLICKHOUSE_HTTP_PORT = 28423


def isolated_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "kafka_bootstrap": f"127.0.0.1:{BROKER_PORT}",
        "redis_url": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "clickhouse_host": "127.0.0.1",
        "clickhouse_port": CLICKHOUSE_PORT,
        "clickhouse_http_port": CLICKHOUSE_HTTP_PORT,
        "clickhouse_database": "oms_stack_test",
        "redis_prefix": "omsstacktest",
        "workers": 2,
    }
    values.update(overrides)
    return Settings(**values)


def pid_exists(pid: int) -> bool:
    """The pid is still in the process table as a running process (zombies don't count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------------------ unit


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:19092", ("127.0.0.1", 19092)),
        ("kafka://127.0.0.1:19092", ("127.0.0.1", 19092)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:29092", ("::1", 29092)),
        (" 127.0.0.1:9 ", ("127.0.0.1", 9)),
    ],
)
def test_parse_host_port(address: str, expected: tuple[str, int]) -> None:
    assert stack.parse_host_port(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:", ":19092", "h:70000", "[::1"])
def test_parse_host_port_rejects_incomplete_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        stack.parse_host_port(address)


def test_addresses_come_from_settings(tmp_path: Path) -> None:
    settings = isolated_settings(
        tmp_path,
        kafka_bootstrap="127.0.0.1:29392,127.0.0.1:29393",
        redis_url="redis://:s%40cret@127.0.0.1:26679/3",
    )
    assert stack.broker_address(settings) == ("127.0.0.1", 29392)
    assert bootstrap_servers(settings) == ["127.0.0.1:29392", "127.0.0.1:29393"]
    assert stack.redis_address(settings) == ("127.0.0.1", 26679, "s@cret")
    assert stack.component_ports(settings, "clickhouse") == (29300, 28423)
    with pytest.raises(ValueError, match="explicit host and port"):
        stack.redis_address(isolated_settings(tmp_path, redis_url="redis://127.0.0.1/0"))


def test_defaults_use_non_default_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OMS_"):
            monkeypatch.delenv(name)
    settings = Settings(_env_file=None)
    ports = [stack.broker_address(settings)[1], stack.redis_address(settings)[1]]
    ports += list(stack.component_ports(settings, "clickhouse"))
    assert not set(ports) & {9092, 6379, 9000, 8123}


def test_only_loopback_is_accepted(tmp_path: Path) -> None:
    assert stack.loopback_host("localhost") == "127.0.0.1"
    assert stack.loopback_host("127.0.0.5") == "127.0.0.5"
    assert stack.loopback_host("::1") == "::1"
    for host in ("0.0.0.0", "10.1.2.3", "kafka", "192.168.1.1"):
        with pytest.raises(stack.StackError, match="loopback"):
            stack.loopback_host(host)
    remote = isolated_settings(tmp_path, redis_url="redis://10.1.2.3:26679/0")
    with pytest.raises(stack.StackError, match="loopback"):
        stack.up(remote, with_workers=False)
    assert not (tmp_path / "run").exists()  # refused before touching anything


def test_generated_redis_config_has_aof_on_loopback(tmp_path: Path) -> None:
    text = stack.redis_config(isolated_settings(tmp_path))
    lines = set(text.splitlines())
    assert {"bind 127.0.0.1", f"port {REDIS_PORT}", "appendonly yes"} <= lines
    assert {"appendfsync everysec", "daemonize no", 'save ""'} <= lines
    assert f'dir "{tmp_path / "data" / "redis"}"' in lines


def test_generated_clickhouse_config_is_valid_xml(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, clickhouse_user="oms", clickhouse_password="p<w>")
    config = ET.fromstring(stack.clickhouse_config(settings))
    assert config.tag == "yandex"
    assert config.findtext("listen_host") == "127.0.0.1"
    assert config.findtext("tcp_port") == str(CLICKHOUSE_PORT)
    assert config.findtext("http_port") == str(CLICKHOUSE_HTTP_PORT)
    assert config.findtext("path", "").startswith(str(tmp_path))
    users = ET.fromstring(stack.clickhouse_users(settings))
    assert users.findtext("users/oms/password") == "p<w>"
    assert [ip.text for ip in users.findall("users/oms/networks/ip")] == ["127.0.0.1", "::1"]


def test_settings_travel_to_children_through_the_environment(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, workers=5, batch_within_s=0.25)
    env = stack.child_env(settings)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from core.settings import Settings; print(Settings().model_dump_json())",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert Settings.model_validate_json(child.stdout) == settings


def test_worker_names() -> None:
    assert stack.worker_component("w3") == "worker-w3"
    assert stack.worker_name("worker-w3") == "w3"
    with pytest.raises(ValueError):
        stack.worker_name("redis")


def test_stale_and_garbage_pid_files_are_removed(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    settings.run_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stack.pid_file(settings, "broker").write_text(f"{dead.pid}\n")
    stack.pid_file(settings, "redis").write_text("not a pid\n")
    assert stack.read_pid(settings, "broker") is None
    assert stack.read_pid(settings, "redis") is None
    assert not any(settings.run_dir.iterdir())
    stack.pid_file(settings, "clickhouse").write_text(f"{os.getpid()}\n")
    assert stack.read_pid(settings, "clickhouse") == os.getpid()


def test_foreign_process_on_a_port_gives_a_clear_error(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, redis_url="redis://127.0.0.1:26699/0")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 26699))
        squatter.listen()
        assert stack.port_in_use("127.0.0.1", 26699)
        with pytest.raises(stack.StackError) as caught:
            stack.start_component(settings, "redis")
    message = str(caught.value)
    assert "26699" in message and "in use" in message and "OMS_REDIS_URL" in message
    assert f"pid {os.getpid()}" in message
    assert stack.read_pid(settings, "redis") is None


def test_the_sink_runs_with_the_workers_unless_they_run_it(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    assert stack.wanted_aux(settings, 2) == [stack.SINK]
    assert stack.wanted_aux(settings, 0) == []  # no workers: nothing produces facts to sink
    in_worker = isolated_settings(tmp_path, sink_in_worker=True)
    assert stack.wanted_aux(in_worker, 2) == []
    with_sim = isolated_settings(tmp_path, wms_sim=True)
    assert stack.wanted_aux(with_sim, 1) == [stack.SINK, stack.WMS_SIM]
    assert stack.wanted_aux(with_sim, 0) == [stack.WMS_SIM]
    assert stack.AUXILIARY == (stack.SINK, stack.WMS_SIM)


def test_sink_default_is_its_own_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OMS_"):
            monkeypatch.delenv(name)
    assert Settings(_env_file=None).sink_in_worker is False
    monkeypatch.setenv("OMS_SINK_IN_WORKER", "true")
    assert Settings(_env_file=None).sink_in_worker is True


def test_sink_heartbeat_is_not_a_worker_key(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    key = stack.heartbeat_key(settings, stack.SINK)
    assert key == sink_heartbeat_key(settings) == "omsstacktest:sink"
    assert not key.startswith(worker_heartbeat_key(settings, ""))
    assert stack.heartbeat_key(settings, stack.WMS_SIM) == "omsstacktest:wms-sim"


def test_sink_detail_shows_counts_and_failing_writes() -> None:
    beat = {"partitions": 4, "counters": {"facts": 120, "bad_facts": 1}}
    assert stack.sink_detail(beat) == "120 facts, 1 not facts, 4 partitions"
    failing = {"counters": {"facts": 3, "sink_consecutive_failures": 7}}
    detail = stack.sink_detail(failing)
    assert detail.startswith("3 facts, 0 not facts, ? partitions")
    assert "ClickHouse writes failing (7 attempts, retrying)" in detail
    assert stack.sink_detail({"counters": "garbage"}).startswith("0 facts")


def test_unknown_component_names_are_rejected(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    with pytest.raises(ValueError, match="sink, wms-sim or worker-NAME"):
        stack.start_component(settings, "zookeeper")
    with pytest.raises(ValueError):
        stack.stop_component(settings, "zookeeper")
    with pytest.raises(ValueError):
        stack.down(settings, only={"zookeeper"})


# ------------------------------------------------------------------------------ integration

# Stands in for `python -m ops worker --name NAME` and `python -m ops sink`: heartbeats under
# the key it is given like the real process (ready after a moment), exits cleanly on SIGTERM.
FAKE_PROCESS = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import redis

    key = sys.argv[1]
    client = redis.Redis.from_url(os.environ["OMS_REDIS_URL"])
    running = True

    def stop(*_):
        global running
        running = False

    signal.signal(signal.SIGTERM, stop)
    started = time.time()
    while running:
        beat = {"pid": os.getpid(), "ready": time.time() - started > 0.5,
                "partitions": 4, "ts": time.time(), "counters": {"facts": 0}}
        client.set(key, json.dumps(beat), ex=10)
        time.sleep(0.2)
    print("fake process", key, "stopped", flush=True)
    """
)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = isolated_settings(tmp_path_factory.mktemp("stack-home"))
    try:
        stack.up(settings, with_workers=False)
        yield settings
    finally:
        try:
            stack.down(settings)
        finally:  # whatever happened, leave no process behind
            for pid_path in settings.run_dir.glob("*.pid"):
                with contextlib.suppress(ValueError, OSError):
                    os.killpg(int(pid_path.read_text()), signal.SIGKILL)


@pytest.fixture
def fake_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the workers and the fact sink process that `up` starts with them."""

    def worker(settings: Settings, name: str) -> list[str]:
        return [sys.executable, "-c", FAKE_PROCESS, worker_heartbeat_key(settings, name)]

    def sink(settings: Settings) -> list[str]:
        return [sys.executable, "-c", FAKE_PROCESS, sink_heartbeat_key(settings)]

    monkeypatch.setattr(stack, "worker_command", worker)
    monkeypatch.setattr(stack, "sink_argv", sink)


@pytest.mark.integration
@pytest.mark.timeout(180)
class TestLocalStack:
    def test_up_makes_every_component_healthy(self, local_stack: Settings) -> None:
        statuses = stack.status(local_stack)
        assert [s.name for s in statuses] == ["broker", "redis", "clickhouse"]
        for component in statuses:
            assert component.healthy, component
            assert component.pid is not None and pid_exists(component.pid)
            assert stack.log_file(local_stack, component.name).exists()
        ports = {s.name: s.port for s in statuses}
        assert ports == {"broker": BROKER_PORT, "redis": REDIS_PORT, "clickhouse": CLICKHOUSE_PORT}
        assert json.loads(json.dumps(statuses[0].to_dict()))["name"] == "broker"

    def test_second_up_is_a_noop(self, local_stack: Settings) -> None:
        before = {s.name: s.pid for s in stack.status(local_stack)}
        started = time.monotonic()
        after = {s.name: s.pid for s in stack.up(local_stack, with_workers=False)}
        assert after == before
        assert time.monotonic() - started < 10

    def test_topics_can_be_created_and_carry_messages(self, local_stack: Settings) -> None:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        topic = f"stack.probe.{uuid.uuid4().hex[:8]}"
        assert ensure_topics(local_stack, [(topic, 3)]) == [topic]
        assert ensure_topics(local_stack, [(topic, 3)]) == []  # idempotent
        servers = bootstrap_servers(local_stack)
        producer = KafkaProducer(bootstrap_servers=servers)
        try:
            sent = producer.send(topic, key=b"order-1", value=b"hello").get(timeout=10)
        finally:
            producer.close()
        consumer = KafkaConsumer(
            bootstrap_servers=servers, enable_auto_commit=False, consumer_timeout_ms=10_000
        )
        try:
            partition = TopicPartition(topic, sent.partition)
            consumer.assign([partition])
            consumer.seek_to_beginning(partition)
            received = next(iter(consumer))
        finally:
            consumer.close()
        assert (received.key, received.value) == (b"order-1", b"hello")

    def test_redis_runs_with_aof(self, local_stack: Settings) -> None:
        client = stack.redis_client(local_stack)
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert client.config_get("dir")["dir"].startswith(str(local_stack.home))
        finally:
            client.close()

    def test_clickhouse_answers_and_has_the_database(self, local_stack: Settings) -> None:
        client = stack.clickhouse_client(local_stack)
        try:
            assert client.execute("SELECT 1") == [(1,)]
            databases = {row[0] for row in client.execute("SHOW DATABASES")}
        finally:
            client.disconnect()
        assert local_stack.clickhouse_database in databases

    def test_redis_restart_keeps_data(self, local_stack: Settings) -> None:
        client = stack.redis_client(local_stack)
        client.set("omsstacktest:survivor", "42")
        client.close()
        old_pid = stack.read_pid(local_stack, "redis")
        assert stack.stop_component(local_stack, "redis")
        assert old_pid is not None and not pid_exists(old_pid)
        assert not stack.stop_component(local_stack, "redis")  # nothing left to stop
        restarted = stack.start_component(local_stack, "redis")
        assert restarted.healthy and restarted.pid != old_pid
        client = stack.redis_client(local_stack)
        try:
            assert client.get("omsstacktest:survivor") == b"42"
        finally:
            client.close()

    def test_killed_broker_is_reported_and_restarts_empty(self, local_stack: Settings) -> None:
        topic = f"stack.volatile.{uuid.uuid4().hex[:8]}"
        ensure_topics(local_stack, [(topic, 1)])
        old_pid = stack.read_pid(local_stack, "broker")
        assert stack.stop_component(local_stack, "broker", kill=True)
        assert old_pid is not None and not pid_exists(old_pid)
        broker = next(s for s in stack.status(local_stack) if s.name == "broker")
        assert not broker.healthy and broker.pid is None
        assert stack.start_component(local_stack, "broker").healthy
        admin = kafka_admin(local_stack)
        try:
            assert topic not in admin.list_topics()  # memory storage, by design
        finally:
            admin.close()

    def test_workers_start_report_and_stop(self, local_stack: Settings, fake_workers: None) -> None:
        statuses = stack.start_workers(local_stack, 2)
        assert [s.name for s in statuses] == ["worker-w0", "worker-w1"]
        assert all(s.healthy and s.pid for s in statuses)
        assert stack.log_file(local_stack, "worker-w1").exists()
        again = stack.start_workers(local_stack, 2)  # idempotent
        assert [s.pid for s in again] == [s.pid for s in statuses]
        listed = {s.name: s for s in stack.status(local_stack)}
        assert listed["worker-w0"].healthy and listed["worker-w1"].healthy

        # up with fewer workers converges: w1 is stopped, w0 keeps running; the sink follows
        up_statuses = stack.up(local_stack, workers=1)
        assert [s.name for s in up_statuses][-2:] == ["worker-w0", "sink"]
        assert up_statuses[-2].pid == statuses[0].pid
        assert not pid_exists(statuses[1].pid)

        # a killed worker is restarted and only counts as ready once the new pid beats
        assert stack.stop_component(local_stack, "worker-w0", kill=True)
        restarted = stack.start_component(local_stack, "worker-w0")
        assert restarted.healthy and restarted.pid != statuses[0].pid

        sink_pid = up_statuses[-1].pid
        assert stack.stop_workers(local_stack) == ["worker-w0", "sink"]
        assert not pid_exists(restarted.pid) and sink_pid and not pid_exists(sink_pid)
        names = [s.name for s in stack.status(local_stack)]
        assert names == ["broker", "redis", "clickhouse"]  # heartbeats were removed too

    def test_sink_is_a_component_of_its_own(
        self, local_stack: Settings, fake_workers: None
    ) -> None:
        statuses = stack.up(local_stack, workers=1)
        sink = statuses[-1]
        assert (sink.name, sink.port, sink.healthy) == ("sink", None, True)
        assert sink.pid and pid_exists(sink.pid) and "facts" in sink.detail
        assert stack.log_file(local_stack, "sink").exists()
        listed = {s.name: s for s in stack.status(local_stack)}
        assert listed["sink"].healthy and listed["sink"].pid == sink.pid
        assert "worker-sink" not in listed  # its heartbeat is not taken for a worker's
        assert stack.up(local_stack, workers=1)[-1].pid == sink.pid  # idempotent

        # up for workers that run the sink themselves neither starts nor stops the process (the
        # running workers keep the setting they started with)
        in_worker = local_stack.model_copy(update={"sink_in_worker": True})
        assert [s.name for s in stack.up(in_worker, workers=1)][-1] == "worker-w0"
        assert pid_exists(sink.pid)

        # one component like any other: stopped, restarted, killed, stopped by down
        assert stack.stop_component(local_stack, "sink")
        assert not pid_exists(sink.pid)
        assert "sink" not in {s.name for s in stack.status(local_stack)}
        started = stack.start_component(local_stack, "sink")
        assert started.healthy and started.pid != sink.pid
        assert stack.stop_component(local_stack, "sink", kill=True)
        assert not pid_exists(started.pid)
        assert not stack.stop_component(local_stack, "sink")
        assert stack.start_sink(local_stack).healthy
        stack.down(local_stack, only={"sink", "workers"})
        names = [s.name for s in stack.status(local_stack)]
        assert names == ["broker", "redis", "clickhouse"]
        assert all(s.healthy for s in stack.status(local_stack))  # servers left up

    def test_down_leaves_nothing_running(self, local_stack: Settings) -> None:
        pids = [s.pid for s in stack.status(local_stack)]
        assert all(pids)
        stack.down(local_stack)
        for pid in pids:
            assert pid is not None and not pid_exists(pid)
        after = stack.status(local_stack)
        assert [s.healthy for s in after] == [False, False, False]
        assert [s.pid for s in after] == [None, None, None]
        assert not list(local_stack.run_dir.glob("*.pid"))
        stack.down(local_stack)  # a second down is harmless
