"""Access tokens in Redis: one hash per token id (user, role, shops, salt, hash, iterations,
created_at, revoked), never the secret. The rules (roles, scope, the token format and its hash)
are ``ops/access.py``'s; this module only stores and looks up.

Besides stored tokens, ``OMS_ADMIN_TOKEN`` (``Settings.bootstrap_admin_token``) is accepted as
an admin of every shop, compared in constant time, so the first real tokens can be granted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ops.access import (
    ALL_SHOPS,
    HASH_ITERATIONS,
    Principal,
    Role,
    Shops,
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
from ops.settings import Settings
from state.keys import Keys

BOOTSTRAP_USER = "bootstrap-admin"
EXPIRED_KEPT_S = 86400  # an expired token's record stays this long, for `./oms access list`


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


def principal_of(
    token_id: str, fields: dict[str, str], secret: str, now: float
) -> Principal | None:
    """The principal a stored record grants to ``secret``; None when revoked, expired or
    wrong."""
    if not fields or fields.get("revoked") != "0":
        return None
    if fields.get("expires_at") and float(fields["expires_at"]) <= now:
        return None
    iterations = int(fields.get("iterations") or HASH_ITERATIONS)
    if not secret_matches(secret, fields.get("salt", ""), fields.get("hash", ""), iterations):
        return None
    try:
        shops = parse_shops(fields.get("shops", ""))
    except ValueError:
        return None
    return Principal(fields.get("user", ""), fields.get("role", ""), shops, token_id)


@dataclass(frozen=True)
class TokenStore:
    client: aioredis.Redis
    keys: Keys
    bootstrap_admin: str | None = None  # the secret value of OMS_ADMIN_TOKEN, if set
    iterations: int = HASH_ITERATIONS

    async def grant(
        self, user: str, role: Role, shops: Shops = ALL_SHOPS, *, ttl_s: float | None = None
    ) -> Granted:
        """A new token; with ``ttl_s`` it is refused after that many seconds (and its record
        dropped from Redis a day later)."""
        now = time.time()
        token, parts = new_token()
        record = token_record(check_user(user), role, shops, parts.secret, self.iterations, now)
        if ttl_s is not None:
            record["expires_at"] = f"{now + ttl_s:.3f}"
        key = self.keys.token(parts.token_id)
        await self.client.hset(key, mapping=record)
        if ttl_s is not None:
            await self.client.expire(key, int(ttl_s) + EXPIRED_KEPT_S)
        await self.client.sadd(self.keys.tokens, parts.token_id)
        return Granted(token, info_of(parts.token_id, record))

    async def revoke(self, token_id: str) -> bool:
        """Revoke (kept for the audit trail, never accepted again); False when unknown."""
        key = self.keys.token(token_id)
        if not await self.client.exists(key):
            return False
        await self.client.hset(key, mapping={"revoked": "1", "revoked_at": f"{time.time():.3f}"})
        return True

    async def list(self) -> list[TokenInfo]:
        ids = sorted(await self.client.smembers(self.keys.tokens))
        pipe = self.client.pipeline(transaction=False)
        for token_id in ids:
            pipe.hgetall(self.keys.token(token_id))
        rows = await pipe.execute()
        found = [info_of(tid, fields) for tid, fields in zip(ids, rows, strict=True) if fields]
        return sorted(found, key=lambda info: (info.created_at, info.token_id))

    async def verify(self, token: str) -> Principal | None:
        """The principal ``token`` stands for, or None (unknown, revoked, wrong secret)."""
        if self.bootstrap_admin and same_secret(token, self.bootstrap_admin):
            return Principal(BOOTSTRAP_USER, Role.ADMIN.value, ALL_SHOPS, "bootstrap")
        parts = parse_token(token)
        if parts is None:
            return None
        fields = await self.client.hgetall(self.keys.token(parts.token_id))
        return principal_of(parts.token_id, fields, parts.secret, time.time())


def token_store(settings: Settings, client: aioredis.Redis) -> TokenStore:
    """The store for ``settings`` on ``client``."""
    secret = settings.bootstrap_admin_token
    return TokenStore(
        client,
        Keys(settings.redis_prefix),
        secret.get_secret_value() if secret is not None else None,
        settings.token_hash_iterations,
    )
