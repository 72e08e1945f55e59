"""Access tokens in Redis: one hash per token id (user, role, shops, salt, hash, iterations,
created_at, revoked), never the secret. The rules (roles, scope, the token format and its hash)
are ``core/access.py``'s; this module stores, looks up and verifies.

**The bootstrap admin** (``OMS_ADMIN_TOKEN``, ``Settings.bootstrap_admin_token``) is a secret
every deployment has in its environment, which no revocation or expiry can reach. So it is a
one-time key: it may grant one admin token of every shop (``grant(..., by=bootstrap)``) and is
refused from the moment any admin token of every shop exists (granted by it or by
``./oms access grant --role admin``): ``<prefix>:token-bootstrap`` records when and for whom.

**Verification stays off the event loop's budget.** A token's PBKDF2 (20,000 iterations,
~6 ms) runs in a small thread pool with bounded concurrency and a bounded queue; a success is
cached for ``CACHE_TTL_S`` under a SHA-256 of the whole token (the record is still read on every
request, so a revoked or expired token is refused at once, cache or not); failures are counted
per token id and per client address (``core.access.FailureLimiter``) and a client or id over its
limit is refused before any hashing (``TooManyAttempts``, HTTP 429).

**Dashboard sessions**: the dashboard never puts a token in a cookie. It trades a verified
token for a random session id, stored here only as its SHA-256 with a TTL that never outlives
the token, listed under the token so that revoking the token ends its sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from core.access import (
    ALL_SHOPS,
    HASH_ITERATIONS,
    AccessError,
    FailureLimiter,
    Principal,
    Role,
    Shops,
    TokenRefused,
    TooManyAttempts,
    check_user,
    format_shops,
    hash_secret,
    new_salt,
    new_token,
    parse_shops,
    parse_token,
    same_secret,
    secret_matches,
)
from core.settings import Settings
from state.keys import Keys
from state.redis import text, text_fields, texts

BOOTSTRAP_USER = "bootstrap-admin"
BOOTSTRAP_ID = "bootstrap"
EXPIRED_KEPT_S = 86400  # an expired token's record stays this long, for `./oms access list`
CACHE_TTL_S = 60.0  # a verified token skips its PBKDF2 this long (revocation is still seen)
CACHE_ENTRIES = 4096
HASH_THREADS = 2  # concurrent PBKDF2s per process: the order path keeps the other core
MAX_PENDING_HASHES = 32  # queued beyond that: 429 instead of an ever longer queue
FAILURES_PER_TOKEN_ID = 10  # failed checks per token id per window ...
FAILURES_PER_CLIENT = 30  # ... and per client address
FAILURE_WINDOW_S = 60.0
SESSION_TTL_S = 8 * 3600  # a dashboard session, at most (never beyond the token's expiry)
SESSION_BYTES = 32
_HASH_POOL = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="oms-token-hash")


@dataclass(frozen=True)
class TokenInfo:
    """A stored token as `./oms access list` shows it: everything but salt and hash."""

    token_id: str
    user: str
    role: str
    shops: str
    created_at: float
    revoked: bool
    expires_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "user": self.user,
            "role": self.role,
            "shops": self.shops,
            "created_at": self.created_at,
            "revoked": self.revoked,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class Granted:
    """A new token: ``token`` is shown once and never stored."""

    token: str
    info: TokenInfo


def token_record(
    user: str, role: Role, shops: Shops, secret: str, iterations: int, now: float
) -> dict[str, str]:
    """The Redis hash of a new token: salted hash only, never ``secret`` itself."""
    salt = new_salt()
    return {
        "user": user,
        "role": role.value,
        "shops": format_shops(shops),
        "salt": salt,
        "hash": hash_secret(secret, salt, iterations),
        "iterations": str(iterations),
        "created_at": f"{now:.3f}",
        "revoked": "0",
    }


def info_of(token_id: str, fields: dict[str, str]) -> TokenInfo:
    return TokenInfo(
        token_id=token_id,
        user=fields.get("user", ""),
        role=fields.get("role", ""),
        shops=fields.get("shops", ""),
        created_at=float(fields.get("created_at") or 0),
        revoked=fields.get("revoked") == "1",
        expires_at=float(fields["expires_at"]) if fields.get("expires_at") else None,
    )


def usable(fields: dict[str, str], now: float) -> bool:
    """A stored record that may still stand for someone: present, not revoked, not expired."""
    if not fields or fields.get("revoked") != "0":
        return False
    return not (fields.get("expires_at") and float(fields["expires_at"]) <= now)


def principal_from(token_id: str, fields: dict[str, str]) -> Principal | None:
    """The principal of a usable record (its secret already checked); None for bad shops."""
    try:
        shops = parse_shops(fields.get("shops", ""))
    except ValueError:
        return None
    return Principal(fields.get("user", ""), fields.get("role", ""), shops, token_id)


def hash_matches(fields: dict[str, str], secret: str) -> bool:
    iterations = int(fields.get("iterations") or HASH_ITERATIONS)
    return secret_matches(secret, fields.get("salt", ""), fields.get("hash", ""), iterations)


def principal_of(
    token_id: str, fields: dict[str, str], secret: str, now: float
) -> Principal | None:
    """The principal a stored record grants to ``secret``; None when revoked, expired or
    wrong (blocking: the hash is computed here)."""
    if not usable(fields, now) or not hash_matches(fields, secret):
        return None
    return principal_from(token_id, fields)


def digest(text: str) -> str:
    """A fast, non-reversible name for a secret (cache and session keys)."""
    return hashlib.sha256(text.encode()).hexdigest()


def bootstrap_used_message(used: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(used.get("at") or 0)))
    granted = used.get("token_id") or "?"
    return (
        f"the bootstrap admin token (OMS_ADMIN_TOKEN) is spent: an admin token ({granted}, "
        f"user {used.get('user') or '?'}) exists since {when}. Use an admin token "
        "(./oms access grant --role admin, or POST /access/tokens with an admin token) and "
        "remove OMS_ADMIN_TOKEN from the environment"
    )


@dataclass
class _Verified:
    stored_hash: str
    token_id: str
    until: float


class TokenStore:
    """Tokens, the bootstrap admin and dashboard sessions of one Redis namespace. One per
    process (it holds the verification cache, the failure counters and the hash slots)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        bootstrap_admin: str | None = None,  # the secret value of OMS_ADMIN_TOKEN, if set
        iterations: int = HASH_ITERATIONS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.keys = client, keys
        self.bootstrap_admin, self.iterations = bootstrap_admin, iterations
        self._clock = clock
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._by_id = FailureLimiter(FAILURES_PER_TOKEN_ID, FAILURE_WINDOW_S, clock=clock)
        self._by_client = FailureLimiter(FAILURES_PER_CLIENT, FAILURE_WINDOW_S, clock=clock)
        self._hash_slots: asyncio.Semaphore | None = None
        self._pending = 0

    # ------------------------------------------------------------------ keys

    @property
    def bootstrap_key(self) -> str:
        return f"{self.keys.prefix}:token-bootstrap"

    def session_key(self, session_id: str) -> str:
        return f"{self.keys.prefix}:dashboard-session:{digest(session_id)}"

    def sessions_of(self, token_id: str) -> str:
        return f"{self.keys.prefix}:token-sessions:{token_id}"

    # ------------------------------------------------------------------ granting

    async def grant(
        self,
        user: str,
        role: Role,
        shops: Shops = ALL_SHOPS,
        *,
        ttl_s: float | None = None,
        by: Principal | None = None,
    ) -> Granted:
        """A new token; with ``ttl_s`` it is refused after that many seconds (and its record
        dropped from Redis a day later). ``by`` the bootstrap admin: only an admin of every
        shop, and only while no such admin exists (claimed atomically, so two racing
        bootstrap grants cannot both win)."""
        user = check_user(user)
        bootstrap = by is not None and by.role == Role.BOOTSTRAP.value
        first_admin = role is Role.ADMIN and shops == ALL_SHOPS
        if bootstrap and not first_admin:
            raise AccessError(
                "the bootstrap admin token grants one admin token of every shop "
                "(role admin, shops *), nothing else"
            )
        if bootstrap:
            claim = {"at": round(time.time(), 3), "user": user, "by": "OMS_ADMIN_TOKEN"}
            if not await self.client.set(self.bootstrap_key, orjson.dumps(claim), nx=True):
                raise TokenRefused(bootstrap_used_message(await self.bootstrap_status() or {}))
        try:
            granted = await self._store(user, role, shops, ttl_s)
        except BaseException:
            if bootstrap:
                await self.client.delete(self.bootstrap_key)
            raise
        if first_admin:
            used = {"at": granted.info.created_at, "user": user, "token_id": granted.info.token_id}
            # The first admin of every shop spends the bootstrap, whoever granted it.
            if bootstrap:
                await self.client.set(self.bootstrap_key, orjson.dumps(used), xx=True)
            else:
                await self.client.set(self.bootstrap_key, orjson.dumps(used), nx=True)
        return granted

    async def _store(self, user: str, role: Role, shops: Shops, ttl_s: float | None) -> Granted:
        now = time.time()
        token, parts = new_token()
        record = await asyncio.to_thread(
            token_record, user, role, shops, parts.secret, self.iterations, now
        )
        if ttl_s is not None:
            record["expires_at"] = f"{now + ttl_s:.3f}"
        key = self.keys.token(parts.token_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={name: value for name, value in record.items()})  # redis-py's type
        if ttl_s is not None:
            pipe.expire(key, int(ttl_s) + EXPIRED_KEPT_S)
        pipe.sadd(self.keys.tokens, parts.token_id)
        await pipe.execute()
        return Granted(token, info_of(parts.token_id, record))

    async def bootstrap_status(self) -> dict[str, Any] | None:
        """When the bootstrap admin was spent and on which token; None while it is not."""
        raw = await self.client.get(self.bootstrap_key)
        return dict(orjson.loads(raw)) if raw else None

    async def revoke(self, token_id: str) -> bool:
        """Revoke (kept for the audit trail, never accepted again) and end its dashboard
        sessions; False when unknown."""
        key = self.keys.token(token_id)
        if not await self.client.exists(key):
            return False
        await self.client.hset(key, mapping={"revoked": "1", "revoked_at": f"{time.time():.3f}"})
        sessions = self.sessions_of(token_id)
        names = texts(await self.client.smembers(sessions))
        prefix = f"{self.keys.prefix}:dashboard-session:"
        await self.client.delete(sessions, *(prefix + name for name in names))
        for cache_key in [k for k, v in self._cache.items() if v.token_id == token_id]:
            del self._cache[cache_key]
        return True

    async def list(self) -> list[TokenInfo]:
        ids = sorted(texts(await self.client.smembers(self.keys.tokens)))
        pipe = self.client.pipeline(transaction=False)
        for token_id in ids:
            pipe.hgetall(self.keys.token(token_id))
        rows = await pipe.execute()
        found = [info_of(tid, fields) for tid, fields in zip(ids, rows, strict=True) if fields]
        return sorted(found, key=lambda info: (info.created_at, info.token_id))

    # ------------------------------------------------------------------ verifying

    async def verify(self, token: str, client: str = "") -> Principal | None:
        """The principal ``token`` stands for, or None (unknown, revoked, expired, wrong
        secret). Raises ``TokenRefused`` for the spent bootstrap token (with what to do) and
        ``TooManyAttempts`` for a client or token id over its failure limit."""
        if self.bootstrap_admin and same_secret(token, self.bootstrap_admin):
            used = await self.bootstrap_status()
            if used is not None:
                raise TokenRefused(bootstrap_used_message(used))
            return Principal(BOOTSTRAP_USER, Role.BOOTSTRAP.value, ALL_SHOPS, BOOTSTRAP_ID)
        parts = parse_token(token)
        name = digest(token)
        cached = self._cache.get(name)
        if cached is None:
            self._refuse_if_limited(parts.token_id if parts else "", client)
        if parts is None:
            self._failed("", client)
            return None
        fields = text_fields(await self.client.hgetall(self.keys.token(parts.token_id)))
        if not usable(fields, time.time()):
            self._cache.pop(name, None)
            self._failed("", client)
            return None
        if (
            cached is not None
            and cached.stored_hash == fields.get("hash")
            and (cached.until > self._clock())
        ):
            return principal_from(parts.token_id, fields)
        if not await self._hash_matches(fields, parts.secret):
            self._failed(parts.token_id, client)
            return None
        self._remember(name, parts.token_id, fields.get("hash", ""))
        return principal_from(parts.token_id, fields)

    def _refuse_if_limited(self, token_id: str, client: str) -> None:
        wait = max(
            self._by_id.retry_after(token_id) if token_id else 0.0,
            self._by_client.retry_after(client),
        )
        if wait > 0:
            raise TooManyAttempts(wait, "too many failed token checks: retry later")

    def _failed(self, token_id: str, client: str) -> None:
        """Count a failure: per client always, per token id when its secret was hashed."""
        if token_id:
            self._by_id.failed(token_id)
        self._by_client.failed(client)

    async def _hash_matches(self, fields: dict[str, str], secret: str) -> bool:
        """PBKDF2 in the hash pool, never on the loop; a full queue is a 429, not a wait."""
        if self._pending >= MAX_PENDING_HASHES:
            raise TooManyAttempts(1.0, "token checks are queued up: retry in a second")
        if self._hash_slots is None:
            self._hash_slots = asyncio.Semaphore(HASH_THREADS)
        self._pending += 1
        try:
            async with self._hash_slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(_HASH_POOL, hash_matches, fields, secret)
        finally:
            self._pending -= 1

    def _remember(self, name: str, token_id: str, stored_hash: str) -> None:
        self._cache[name] = _Verified(stored_hash, token_id, self._clock() + CACHE_TTL_S)
        self._cache.move_to_end(name)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------ dashboard sessions

    async def open_session(
        self, principal: Principal, ttl_s: float = SESSION_TTL_S
    ) -> tuple[str, int]:
        """A session for a principal verified just now: (session id, seconds it lasts). The
        id is returned once (for the cookie) and stored only as its SHA-256; it lasts at most
        ``ttl_s`` and never beyond the token's own expiry."""
        fields = text_fields(await self.client.hgetall(self.keys.token(principal.token_id)))
        now = time.time()
        if not usable(fields, now):
            raise TokenRefused("invalid, unknown or revoked token")
        if fields.get("expires_at"):
            ttl_s = min(ttl_s, float(fields["expires_at"]) - now)
        ttl = max(1, int(ttl_s))
        session_id = secrets.token_urlsafe(SESSION_BYTES)
        key = self.session_key(session_id)
        sessions = self.sessions_of(principal.token_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={"token_id": principal.token_id, "created_at": f"{now:.3f}"})
        pipe.expire(key, ttl)
        pipe.sadd(sessions, digest(session_id))
        pipe.expire(sessions, SESSION_TTL_S + EXPIRED_KEPT_S)
        await pipe.execute()
        return session_id, ttl

    async def session(self, session_id: str) -> Principal | None:
        """The principal of a live session: its token still usable (a revoked or expired
        token ends every session at once); None otherwise."""
        if not 16 <= len(session_id) <= 128:
            return None
        key = self.session_key(session_id)
        found = await self.client.hget(key, "token_id")
        if not found:
            return None
        token_id = text(found)
        fields = text_fields(await self.client.hgetall(self.keys.token(token_id)))
        if not usable(fields, time.time()):
            await self.client.delete(key)
            return None
        return principal_from(token_id, fields)

    async def close_session(self, session_id: str) -> None:
        await self.client.delete(self.session_key(session_id))


def token_store(settings: Settings, client: aioredis.Redis) -> TokenStore:
    """The store for ``settings`` on ``client``."""
    secret = settings.bootstrap_admin_token
    return TokenStore(
        client,
        Keys(settings.redis_prefix),
        secret.get_secret_value() if secret is not None else None,
        settings.token_hash_iterations,
    )
