"""Authentication for tests that call the order API or the dashboard: a real admin token of
every shop, granted straight into the test Redis once per stack and namespace. The bootstrap
admin (tests/conftest.py sets a random OMS_ADMIN_TOKEN per run) only grants the first admin
and is spent by then (state/tokens.py), so it is no credential for the routes."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from core.access import Role
from core.settings import Settings

_GRANTED: dict[tuple[str, str], tuple[str, str]] = {}  # (redis url, prefix) -> (id, token)


def bootstrap_token(settings: Settings) -> str:
    token = settings.bootstrap_admin_token
    assert token is not None, "OMS_ADMIN_TOKEN is not set (tests/conftest.py sets one)"
    return token.get_secret_value()


async def _grant_admin(settings: Settings, known: str) -> tuple[str, str] | None:
    from state.keys import Keys
    from state.redis import connect_async
    from state.tokens import token_store

    client = connect_async(settings)
    try:
        if known and await client.exists(Keys(settings.redis_prefix).token(known)):
            return None  # still there (the test Redis was not flushed since)
        granted = await token_store(settings, client).grant("test-admin", Role.ADMIN)
        return granted.info.token_id, granted.token
    finally:
        await client.aclose()


def admin_token(settings: Settings) -> str:
    """An admin token of every shop for ``settings``' Redis (granted on first use)."""
    key = (settings.redis_url, settings.redis_prefix)
    known = _GRANTED.get(key, ("", ""))
    with ThreadPoolExecutor(1) as pool:  # callable from inside a running event loop too
        fresh = pool.submit(asyncio.run, _grant_admin(settings, known[0])).result()
    if fresh is not None:
        _GRANTED[key] = fresh
    return _GRANTED[key][1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_auth(settings: Settings) -> dict[str, str]:
    """The Authorization header of an admin of every shop (every API and dashboard route)."""
    return bearer(admin_token(settings))
