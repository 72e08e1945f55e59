"""The token store and the API's held pages on a real Redis: a private ``redis-server`` on a free
loopback port (no broker, no workers, the test stack untouched).

- The bootstrap admin (OMS_ADMIN_TOKEN) grants one admin of every shop and is refused from
  then on with what to do; an admin granted from the CLI spends it too; two racing bootstrap
  grants cannot both win.
- Verification: the PBKDF2 runs in the hash pool, never on the event loop's thread; a success
  is cached (no second hash) yet a revoked or expired token is refused at once; failures are
  limited per token id and per client (429 before any hashing), a cached holder unaffected.
- Dashboard sessions: only a hash of the id is stored, the TTL never outlives the token, and
  revoking the token ends them.
- ``GET /held`` pages: bounded pages whose cursors walk every hold exactly once, scope and
  reason applied, the scan budget bounding a page that finds little.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import state.tokens as tokens_module
from core.access import ALL_SHOPS, Principal, Role, TokenRefused, TooManyAttempts
from core.settings import REPO_ROOT, Settings
from ops import stack
from order.record import HistoryEntry, OrderRecord
from state.keys import Keys
from state.tokens import (
    FAILURES_PER_CLIENT,
    FAILURES_PER_TOKEN_ID,
    SESSION_TTL_S,
    TokenStore,
    digest,
)
from streams.channels import adapt
from streams.messages import EventKind, OrderState
from web.api import HELD_SCAN_BUDGET, RedisReads

pytestmark = pytest.mark.integration

BOOTSTRAP = "bootstrap-secret-for-tests-0123456789"
TMALL = "极客数码旗舰店"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_port(base_settings: Settings) -> Iterator[int]:
    """A throw-away redis-server (no persistence) for this module only."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    home: Path = base_settings.home / "tokens-redis"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port = free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(home)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not stack.port_open("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("private redis-server did not start")
        time.sleep(0.1)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
async def client(redis_port: int) -> AsyncIterator[aioredis.Redis]:
    redis_client = aioredis.Redis(port=redis_port, decode_responses=True)
    await redis_client.flushall()
    yield redis_client
    await redis_client.aclose()


def store_for(client: aioredis.Redis, **kw: Any) -> TokenStore:
    return TokenStore(client, Keys("t"), BOOTSTRAP, iterations=1000, **kw)


# --------------------------------------------------------------------------- bootstrap


async def test_the_bootstrap_grants_one_admin_and_is_refused_after(
    client: aioredis.Redis,
) -> None:
    store = store_for(client)
    boot = await store.verify(BOOTSTRAP)
    assert boot is not None and boot.role == "bootstrap" and boot.shops == ALL_SHOPS
    with pytest.raises(ValueError, match="one admin token of every shop"):
        await store.grant("amy", Role.FINANCE, by=boot)
    with pytest.raises(ValueError, match="one admin token of every shop"):
        await store.grant("amy", Role.ADMIN, frozenset({"own-web"}), by=boot)
    granted = await store.grant("root", Role.ADMIN, by=boot)
    admin = await store.verify(granted.token)
    assert admin is not None and admin.role == "admin" and admin.user == "root"
    with pytest.raises(TokenRefused) as spent:
        await store.verify(BOOTSTRAP)
    message = str(spent.value)
    assert "OMS_ADMIN_TOKEN" in message and granted.info.token_id in message
    assert "./oms access grant" in message and "remove OMS_ADMIN_TOKEN" in message
    with pytest.raises(TokenRefused):
        await store.grant("mallory", Role.ADMIN, by=boot)  # a principal verified before
    # Another process (a restarted worker) sees the same: the spend is in Redis.
    with pytest.raises(TokenRefused):
        await store_for(client).verify(BOOTSTRAP)
    status = await store.bootstrap_status()
    assert status is not None and status["token_id"] == granted.info.token_id


async def test_an_admin_granted_from_the_cli_spends_the_bootstrap(
    client: aioredis.Redis,
) -> None:
    store = store_for(client)
    await store.grant("fin", Role.FINANCE)
    await store.grant("scoped", Role.ADMIN, frozenset({"own-web"}))
    assert await store.verify(BOOTSTRAP) is not None  # no admin of every shop yet
    await store.grant("root", Role.ADMIN)
    with pytest.raises(TokenRefused):
        await store.verify(BOOTSTRAP)


async def test_racing_bootstrap_grants_cannot_both_win(client: aioredis.Redis) -> None:
    store = store_for(client)
    boot = await store.verify(BOOTSTRAP)
    results = await asyncio.gather(
        *(store.grant(f"u{i}", Role.ADMIN, by=boot) for i in range(5)), return_exceptions=True
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1 and all(isinstance(r, TokenRefused) for r in results if r not in won)
    assert len(await store.list()) == 1


# --------------------------------------------------------------------------- verification


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread each PBKDF2 ran on."""
    seen: list[str] = []
    real = tokens_module.hash_matches

    def counted(fields: dict[str, str], secret: str) -> bool:
        seen.append(threading.current_thread().name)
        return real(fields, secret)

    monkeypatch.setattr(tokens_module, "hash_matches", counted)
    return seen


async def test_hash_runs_off_the_loop_and_a_success_is_cached(
    client: aioredis.Redis, hashes: list[str]
) -> None:
    store = store_for(client)
    granted = await store.grant("amy", Role.CUSTOMER_SERVICE, frozenset({"own-web"}))
    for _ in range(3):
        principal = await store.verify(granted.token, "10.0.0.1")
        assert principal == Principal(
            "amy", "customer_service", frozenset({"own-web"}), granted.info.token_id
        )
    assert len(hashes) == 1, "a cached token is not hashed again"
    assert hashes[0].startswith("oms-token-hash") and hashes[0] != threading.main_thread().name
    assert await store.revoke(granted.info.token_id)
    assert await store_for(client).verify(granted.token) is None
    assert await store.verify(granted.token) is None  # the cache never outlives a revocation


async def test_an_expired_token_is_refused_even_when_cached(client: aioredis.Redis) -> None:
    store = store_for(client)
    granted = await store.grant("fin", Role.FINANCE, ttl_s=3600)
    assert await store.verify(granted.token) is not None
    key = Keys("t").token(granted.info.token_id)
    assert 0 < await client.ttl(key) <= 3600 + tokens_module.EXPIRED_KEPT_S
    await client.hset(key, "expires_at", f"{time.time() - 1:.3f}")
    assert await store.verify(granted.token) is None


async def test_failures_are_limited_per_token_id_before_any_hash(
    client: aioredis.Redis, hashes: list[str]
) -> None:
    store = store_for(client)
    victim = await store.grant("amy", Role.FINANCE)
    assert await store.verify(victim.token, "10.0.0.1") is not None  # amy's, cached
    hashes.clear()
    wrong = f"oms_{victim.info.token_id}_" + "x" * 43
    for attempt in range(FAILURES_PER_TOKEN_ID):
        assert await store.verify(wrong, f"10.9.9.{attempt}") is None
    with pytest.raises(TooManyAttempts) as limited:
        await store.verify(wrong, "10.9.9.250")
    assert 0 < limited.value.retry_after_s <= tokens_module.FAILURE_WINDOW_S
    assert len(hashes) == FAILURES_PER_TOKEN_ID  # the refused one cost no hash
    assert await store.verify(victim.token, "10.0.0.1") is not None  # the holder, cached


async def test_failures_are_limited_per_client(client: aioredis.Redis) -> None:
    store = store_for(client)
    for _ in range(FAILURES_PER_CLIENT):
        assert await store.verify("garbage", "10.6.6.6") is None
    with pytest.raises(TooManyAttempts):
        await store.verify("garbage", "10.6.6.6")
    assert await store.verify("garbage", "10.7.7.7") is None  # another client is not


# --------------------------------------------------------------------------- sessions


async def test_sessions_are_hashed_bounded_by_the_token_and_end_with_it(
    client: aioredis.Redis,
) -> None:
    store = store_for(client)
    granted = await store.grant("fin", Role.FINANCE, ttl_s=600)
    principal = await store.verify(granted.token)
    assert principal is not None
    session_id, ttl = await store.open_session(principal)
    assert 590 <= ttl <= 600  # the token's expiry, not the 8-hour default
    assert await store.session(session_id) == principal
    assert await store.session(session_id[:-1] + ("A" if session_id[-1] != "A" else "B")) is None
    dumped = [str(k) for k in await client.keys("*")]
    for key in await client.keys("*"):
        kind = await client.type(key)
        if kind == "hash":
            dumped += list((await client.hgetall(key)).values())
        elif kind == "set":
            dumped += list(await client.smembers(key))
    assert not any(session_id in text or granted.token in text for text in dumped)
    assert any(digest(session_id) in text for text in dumped)
    long_lived = await store.grant("fin2", Role.FINANCE)
    other = await store.verify(long_lived.token)
    assert other is not None
    assert (await store.open_session(other))[1] == SESSION_TTL_S
    assert await store.revoke(granted.info.token_id)
    assert await store.session(session_id) is None
    assert await client.exists(store.session_key(session_id)) == 0


async def test_a_revoked_token_opens_no_session(client: aioredis.Redis) -> None:
    store = store_for(client)
    granted = await store.grant("fin", Role.FINANCE)
    principal = await store.verify(granted.token)
    assert principal is not None
    await store.revoke(granted.info.token_id)
    with pytest.raises(TokenRefused):
        await store.open_session(principal)


# --------------------------------------------------------------------------- held pages


def held_record(order_id: str, shop: str, reason: str) -> OrderRecord:
    order = adapt("own", (REPO_ROOT / "samples" / "payloads" / "own.json").read_bytes())
    order = order.model_copy(update={"order_id": order_id, "shop_id": shop})
    at = datetime(2026, 11, 11, tzinfo=UTC)
    return OrderRecord(
        order_id=order_id,
        state=OrderState.HELD,
        order=order,
        fingerprint=order.fingerprint(),
        hold_reason=reason,
        history=[HistoryEntry(seq=1, event_id="e", kind=EventKind.HELD, at=at)],
    )


async def hold(client: aioredis.Redis, keys: Keys, rows: list[tuple[str, str, str, float]]) -> None:
    for order_id, shop, reason, score in rows:
        doc = held_record(order_id, shop, reason).model_dump_json()
        await client.hset(keys.order(order_id), mapping={"version": 1, "doc": doc})
        await client.zadd(keys.held, {order_id: score})


async def walk(reads: RedisReads, **kw: Any) -> tuple[list[str], int]:
    """Every page from the start: the order ids in order, and how many pages it took."""
    seen: list[str] = []
    after, pages = None, 0
    while True:
        page = await reads.held(after=after, **kw)
        pages += 1
        seen += [r["order_id"] for r in page.rows]
        if page.next is None:
            return seen, pages
        after = page.next


async def test_held_pages_walk_every_hold_once(client: aioredis.Redis) -> None:
    settings = Settings(redis_prefix="t")
    keys = Keys("t")
    # Ties on the hold time included: the cursor must order by (time, id).
    rows = [
        (f"O{i:03d}", "own-web" if i % 3 else TMALL, "unpaid" if i % 2 else "remark_review", i // 4)
        for i in range(60)
    ]
    await hold(client, keys, [(o, s, r, float(t)) for o, s, r, t in rows])
    reads = RedisReads(settings, client)
    seen, pages = await walk(reads, limit=7, shops=ALL_SHOPS, reason="", since=0.0)
    assert seen == [o for o, *_ in rows] and pages >= 9
    seen, _ = await walk(
        reads, limit=5, shops=frozenset({TMALL}), reason="remark_review", since=0.0
    )
    assert seen == [o for o, s, r, _ in rows if s == TMALL and r == "remark_review"]
    seen, _ = await walk(reads, limit=50, shops=ALL_SHOPS, reason="", since=10.0)
    assert seen == [o for o, _, _, t in rows if t >= 10]


async def test_a_page_looks_at_no_more_than_the_scan_budget(client: aioredis.Redis) -> None:
    keys = Keys("t")
    count = HELD_SCAN_BUDGET + 50
    await hold(client, keys, [(f"O{i:04d}", "own-web", "unpaid", float(i)) for i in range(count)])
    await hold(client, keys, [("OZZZZ", "rare-shop", "unpaid", float(count))])
    reads = RedisReads(Settings(redis_prefix="t"), client)
    first = await reads.held(
        reason="", limit=10, since=0.0, shops=frozenset({"rare-shop"}), after=None
    )
    last_looked_at = (float(HELD_SCAN_BUDGET - 1), f"O{HELD_SCAN_BUDGET - 1:04d}")
    assert first.rows == [] and first.next == last_looked_at
    second = await reads.held(
        reason="", limit=10, since=0.0, shops=frozenset({"rare-shop"}), after=first.next
    )
    assert [r["order_id"] for r in second.rows] == ["OZZZZ"] and second.next is None
