"""Access, pure: every role x every permission exactly per the table, shop scope, the token
format, the stored hash (right secret, wrong secret, revoked, expired), log masking, and each
API route allowed and refused per role with injected reads and actions (no Redis, no Kafka)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.api import Outcome, StockAdjustment, create_api
from ops.access import (
    ALL_SHOPS,
    ROLE_PERMISSIONS,
    AccessError,
    MaskSecrets,
    Permission,
    Principal,
    Role,
    Shops,
    TokenParts,
    authorize,
    format_token,
    hash_secret,
    mask_secrets,
    new_salt,
    new_token,
    parse_role,
    parse_shops,
    parse_token,
    secret_matches,
)
from ops.settings import Settings
from state.tokens import principal_of, token_record

P = Permission
# The table as the issue states it, written out independently of ops/access.py.
EXPECTED: dict[str, set[Permission]] = {
    "customer_service": {P.READ_ORDERS, P.RELEASE_HOLDS, P.CANCEL_ORDERS},
    "warehouse": {P.READ_ORDERS, P.ADJUST_STOCK},
    "finance": {P.READ_ORDERS, P.READ_DASHBOARD},
    "admin": set(Permission),
}
MATRIX = [(role, perm) for role in EXPECTED for perm in Permission]


@pytest.mark.parametrize(("role", "permission"), MATRIX)
def test_every_role_and_permission_exactly_per_the_table(role: str, permission: P) -> None:
    decision = authorize(Principal("u", role), permission)
    assert decision.allowed is (permission in EXPECTED[role])
    if not decision:
        assert decision.reason == f"role {role} lacks permission {permission.value}"


def test_the_table_names_every_role_and_nothing_else() -> None:
    assert {r.value for r in ROLE_PERMISSIONS} == set(EXPECTED) == {r.value for r in Role}
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)


def test_unknown_role_is_refused_with_its_name() -> None:
    decision = authorize(Principal("u", "superuser"), P.READ_ORDERS)
    assert not decision and decision.reason == "unknown role 'superuser'"
    with pytest.raises(AccessError, match="unknown role 'superuser'"):
        parse_role("superuser")


def test_shop_scope() -> None:
    scoped = Principal("amy", "customer_service", frozenset({"own-web", "jd-1"}))
    assert authorize(scoped, P.READ_ORDERS, "own-web")
    out = authorize(scoped, P.READ_ORDERS, "tmall-9")
    assert not out and out.reason == "shop 'tmall-9' is out of amy's scope"
    every = authorize(scoped, P.READ_ORDERS, ALL_SHOPS)
    assert not every and every.reason == "every shop is out of amy's scope"
    assert authorize(Principal("root", "admin"), P.ADJUST_STOCK, ALL_SHOPS)
    assert authorize(Principal("root", "admin"), P.READ_ORDERS, "any-shop")
    # The permission is checked before the scope: the first reason is the one that matters.
    assert authorize(scoped, P.ADJUST_STOCK, "tmall-9").reason.startswith("role ")


@pytest.mark.parametrize(
    ("text", "shops"),
    [("*", ALL_SHOPS), ("", ALL_SHOPS), ("a,b", frozenset({"a", "b"})), (" a , ,b", {"a", "b"})],
)
def test_parse_shops(text: str, shops: Any) -> None:
    assert parse_shops(text) == shops


@pytest.mark.parametrize("bad", ["a b", "x,y/z", ",", "ä"])
def test_parse_shops_refuses_bad_ids(bad: str) -> None:
    with pytest.raises(AccessError):
        parse_shops(bad)


def test_token_format_round_trips() -> None:
    token, parts = new_token()
    assert token.startswith(f"oms_{parts.token_id}_") and token == format_token(parts)
    assert parse_token(token) == parts
    assert len(parts.token_id) == 12 and len(parts.secret) >= 40
    assert new_token()[0] != token


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "oms",
        "oms__secret",
        "xyz_0123456789ab_" + "s" * 43,
        "oms_0123456789AB_" + "s" * 43,  # ids are lower-case hex
        "oms_0123456789a_" + "s" * 43,
        "oms_0123456789ab_short",
        "oms_0123456789ab_" + "s" * 40 + "!",
    ],
)
def test_malformed_tokens_parse_to_none(bad: str) -> None:
    assert parse_token(bad) is None


def test_secret_with_underscores_parses_whole() -> None:
    parts = TokenParts("0123456789ab", "a_b-" * 10)
    assert parse_token(format_token(parts)) == parts


def test_hash_verifies_the_secret_and_nothing_else() -> None:
    _, parts = new_token()
    salt = new_salt()
    stored = hash_secret(parts.secret, salt, 1000)
    assert parts.secret not in stored
    assert secret_matches(parts.secret, salt, stored, 1000)
    assert not secret_matches(parts.secret + "x", salt, stored, 1000)
    assert not secret_matches(parts.secret, new_salt(), stored, 1000)  # salt is per token
    assert hash_secret(parts.secret, new_salt(), 1000) != stored


def record(secret: str, **extra: str) -> dict[str, str]:
    fields = token_record("amy", Role.CUSTOMER_SERVICE, frozenset({"s1"}), secret, 1000, 1.0)
    return {**fields, **extra}


def test_stored_record_has_no_secret_and_verifies() -> None:
    _, parts = new_token()
    fields = record(parts.secret)
    assert set(fields) == {
        "user",
        "role",
        "shops",
        "salt",
        "hash",
        "iterations",
        "created_at",
        "revoked",
    }
    assert all(parts.secret not in value for value in fields.values())
    principal = principal_of(parts.token_id, fields, parts.secret, now=2.0)
    assert principal == Principal("amy", "customer_service", frozenset({"s1"}), parts.token_id)


def test_wrong_secret_revoked_expired_or_missing_stand_for_nobody() -> None:
    _, parts = new_token()
    assert principal_of(parts.token_id, record(parts.secret), "x" * 43, now=2.0) is None
    revoked = record(parts.secret, revoked="1")
    assert principal_of(parts.token_id, revoked, parts.secret, now=2.0) is None
    expiring = record(parts.secret, expires_at="10.0")
    assert principal_of(parts.token_id, expiring, parts.secret, now=9.0) is not None
    assert principal_of(parts.token_id, expiring, parts.secret, now=10.0) is None
    assert principal_of(parts.token_id, {}, parts.secret, now=2.0) is None


def test_secrets_are_masked_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    token, parts = new_token()
    assert mask_secrets(f"GET /?token={token} x") == "GET /?token=*** x"
    assert mask_secrets(f"Authorization: Bearer {token}") == "Authorization: Bearer ***"
    assert mask_secrets(f"saw {token}") == f"saw oms_{parts.token_id}_***"
    logger = logging.getLogger("test.access.mask")
    logger.addFilter(MaskSecrets())
    with caplog.at_level(logging.INFO, logger="test.access.mask"):
        logger.info("token %s used", token)
    assert parts.secret not in caplog.text and parts.token_id in caplog.text


def test_bootstrap_admin_token_is_secret_and_never_dumped(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "b" * 32
    monkeypatch.setenv("OMS_ADMIN_TOKEN", secret)
    settings = Settings()
    assert settings.bootstrap_admin_token is not None
    assert settings.bootstrap_admin_token.get_secret_value() == secret
    assert secret not in repr(settings) and secret not in str(settings.model_dump(mode="json"))
    monkeypatch.delenv("OMS_ADMIN_TOKEN")
    assert Settings().bootstrap_admin_token is None  # no default: no bootstrap admin
    monkeypatch.setenv("OMS_ADMIN_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 24"):
        Settings()


# --------------------------------------------------------------------------- the API per role

SHOP, OTHER_SHOP = "own-web", "jd-77"
VIEW = {"order_id": "O1", "shop_id": SHOP, "state": "held"}
OTHER_VIEW = {"order_id": "O2", "shop_id": OTHER_SHOP, "state": "held"}
TOKENS = {f"tok-{role.value}": Principal(f"user-{role.value}", role.value) for role in Role}
TOKENS["tok-scoped"] = Principal("scoped-cs", "customer_service", frozenset({SHOP}))
TOKENS["tok-scoped-wh"] = Principal("scoped-wh", "warehouse", frozenset({SHOP}))


class Verifier:
    async def verify(self, token: str) -> Principal | None:
        return TOKENS.get(token)


class Reads:
    async def orders(self, ref: str) -> list[dict[str, Any]]:
        by_ref = {"O1": [VIEW], "O2": [OTHER_VIEW], "own:E1": [VIEW, OTHER_VIEW]}
        return by_ref.get(ref, [])

    async def held(
        self, *, reason: str, limit: int, since: float, shops: Shops
    ) -> list[dict[str, Any]]:
        return [VIEW, OTHER_VIEW]  # ignores the scope: the API's own guard must still apply it

    async def rules(self) -> dict[str, Any]:
        return {"unpaid": {"enabled": True}}


class Actions:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def act(self, order_id: str, kind: str, *, actor: str, reason: str) -> Outcome:
        self.calls.append((order_id, kind, actor, reason))
        return Outcome(200, {"order_id": order_id, "actor": actor})

    async def adjust_stock(self, change: StockAdjustment, *, actor: str) -> Outcome:
        self.calls.append((change, actor))
        return Outcome(200, {"ok": True, "actor": actor})


@pytest.fixture
def actions() -> Actions:
    return Actions()


@pytest.fixture
async def client(actions: Actions) -> AsyncIterator[TestClient]:
    app = create_api(Reads(), worker="w0", verifier=Verifier(), actions=actions)
    c = TestClient(TestServer(app))
    await c.start_server()
    yield c
    await c.close()


STOCK_BODY = {"sku": "SKU-1", "warehouse": "WH-SH", "delta": -2, "reason": "damaged"}
ROUTES: list[tuple[str, str, Permission, dict[str, Any] | None]] = [
    ("GET", "/orders/O1", P.READ_ORDERS, None),
    ("GET", "/orders/own/E1", P.READ_ORDERS, None),
    ("GET", "/held", P.READ_ORDERS, None),
    ("GET", "/rules", P.READ_ORDERS, None),
    ("POST", "/orders/O1/release", P.RELEASE_HOLDS, {"reason": "called the buyer"}),
    ("POST", "/orders/O1/cancel", P.CANCEL_ORDERS, None),
    ("POST", "/stock/adjust", P.ADJUST_STOCK, STOCK_BODY),
]


def call(client: TestClient, method: str, path: str, token: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, path, headers=headers, json=body)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("method", "path", "permission", "body"), ROUTES)
async def test_each_route_allowed_or_refused_per_role(
    client: TestClient,
    actions: Actions,
    role: Role,
    method: str,
    path: str,
    permission: Permission,
    body: dict[str, Any] | None,
) -> None:
    resp = await call(client, method, path, f"tok-{role.value}", body)
    if permission in EXPECTED[role.value]:
        assert resp.status == 200, await resp.text()
        if method == "POST":
            assert actions.calls and actions.calls[0][-1 if "stock" in path else 2] == (
                f"user-{role.value}"
            )
    else:
        assert resp.status == 403
        assert (await resp.json())["error"] == (
            f"forbidden: role {role.value} lacks permission {permission.value}"
        )
        assert actions.calls == []


@pytest.mark.parametrize(("method", "path", "permission", "body"), ROUTES)
@pytest.mark.parametrize("token", ["", "tok-nobody"])
async def test_each_route_is_401_without_a_valid_token(
    client: TestClient, token: str, method: str, path: str, permission: P, body: Any
) -> None:
    resp = await call(client, method, path, token, body)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    assert "error" in await resp.json()


async def test_scope_hides_other_shops_orders(client: TestClient, actions: Actions) -> None:
    token = "tok-scoped"
    assert (await call(client, "GET", "/orders/O1", token)).status == 200
    assert (await call(client, "GET", "/orders/O2", token)).status == 404
    listed = await (await call(client, "GET", "/orders/own/E1", token)).json()
    assert [v["order_id"] for v in listed["orders"]] == ["O1"]
    held = await (await call(client, "GET", "/held", token)).json()
    assert held == {"total": 1, "orders": [VIEW]}
    assert (await call(client, "POST", "/orders/O2/release", token)).status == 404
    assert (await call(client, "POST", "/orders/O1/release", token)).status == 200
    assert actions.calls == [("O1", "release_hold", "scoped-cs", "")]


async def test_stock_is_every_shop_s_so_a_scoped_warehouse_token_is_refused(
    client: TestClient, actions: Actions
) -> None:
    resp = await call(client, "POST", "/stock/adjust", "tok-scoped-wh", STOCK_BODY)
    assert resp.status == 403 and "every shop" in (await resp.json())["error"]
    assert actions.calls == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({**STOCK_BODY, "delta": 0}, "delta"),
        ({**STOCK_BODY, "delta": "3"}, "delta"),
        ({**STOCK_BODY, "delta": True}, "delta"),
        ({**STOCK_BODY, "sku": ""}, "sku is required"),
        ({**STOCK_BODY, "field": "reserved"}, "field"),
        ({**STOCK_BODY, "colour": "red"}, "unknown parameter(s) colour"),
        ([1, 2], "JSON object"),
    ],
)
async def test_stock_adjust_body_is_checked(
    client: TestClient, actions: Actions, body: Any, needle: str
) -> None:
    resp = await call(client, "POST", "/stock/adjust", "tok-admin", body)
    assert resp.status == 400 and needle in (await resp.json())["error"]
    assert actions.calls == []


async def test_actions_pass_the_parsed_request(client: TestClient, actions: Actions) -> None:
    assert (await call(client, "POST", "/stock/adjust", "tok-warehouse", STOCK_BODY)).status == 200
    [(change, actor)] = actions.calls
    assert change == StockAdjustment("SKU-1", "WH-SH", -2, "damaged")
    assert actor == "user-warehouse"
