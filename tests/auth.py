"""Authentication for tests that call the order API or the dashboard: the test stack's bootstrap
admin token (tests/conftest.py sets a random OMS_ADMIN_TOKEN per run)."""

from __future__ import annotations

from ops.settings import Settings


def admin_token(settings: Settings) -> str:
    token = settings.bootstrap_admin_token
    assert token is not None, "OMS_ADMIN_TOKEN is not set (tests/conftest.py sets one)"
    return token.get_secret_value()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_auth(settings: Settings) -> dict[str, str]:
    """The Authorization header of the bootstrap admin (every API and dashboard route)."""
    return bearer(admin_token(settings))
