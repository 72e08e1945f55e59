"""Access through the real stack: tokens granted with `./oms access grant` into the test Redis,
the running workers' order API and a dashboard process checking them. Each role is allowed and
refused where it should be on each route, a release by a customer-service token lands in the
order's history with that user as actor (and the API as its principal), shop scope hides other
shops' orders (a Tmall shop with a Chinese name included), the blacklists' entries reach only
admins, the bootstrap admin token is spent once an admin exists, the dashboard keeps a session
(never a token) and redirects only to itself, control messages that are not signed by a writer
of their topic are dead-lettered and never applied, and no stored record holds a secret."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_api import unpaid_payload
from test_end_to_end import oms, wait_for

from core.kafka import produce, read_topic
from core.settings import Settings
from state.keys import Keys
from state.redis import connect
from state.stock import stock_levels
from streams import topics
from streams.messages import (
    DlqRecord,
    OperatorAction,
    OperatorActionKind,
    WmsEvent,
    WmsEventKind,
)
from streams.signing import OPERATOR, signer_for
from tests.auth import admin_auth, bearer, bootstrap_token
from web.api import api_url

pytestmark = pytest.mark.integration

ROLES = ("customer_service", "warehouse", "finance", "admin")
SHOP = "own-web"  # samples/payloads/own.json
TMALL = "极客数码旗舰店"
# route -> the roles that may use it (core/access.py's table)
READERS = set(ROLES)
RELEASERS = CANCELLERS = {"customer_service", "admin"}
ADJUSTERS = {"warehouse", "admin"}
DASHBOARD = {"finance", "admin"}


def request(
    settings: Settings,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any = None,
    base: str = "",
) -> tuple[int, Any, Any]:
    """(status, JSON body or None, response headers) of one request to worker w0's API."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        (base or api_url(settings)) + path,
        data=data,
        method=method,
        headers={**headers, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw, status, got = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        raw, status, got = exc.read(), exc.code, exc.headers
    try:
        return status, json.loads(raw), got
    except ValueError:
        return status, None, got


def grant(settings: Settings, user: str, role: str, shops: str = "*") -> dict[str, Any]:
    result = oms(
        settings, "access", "grant", "--user", user, "--role", role, "--shops", shops, "--json"
    )
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def stack(running_stack: Settings) -> Settings:
    oms(running_stack, "stock", "load", "samples/stock.csv")
    assert wait_for(lambda: request(running_stack, "GET", "/health", {})[0] == 200)
    return running_stack


@pytest.fixture(scope="module")
def tokens(stack: Settings) -> dict[str, dict[str, Any]]:
    granted = {role: grant(stack, f"it-{role}", role) for role in ROLES}
    granted["scoped_in"] = grant(stack, "it-cs-own", "customer_service", SHOP)
    granted["scoped_out"] = grant(stack, "it-cs-other", "customer_service", "other-shop")
    return granted


def auth(tokens: dict[str, dict[str, Any]], who: str) -> dict[str, str]:
    return bearer(tokens[who]["token"])


@pytest.fixture(scope="module")
def held_order(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One unpaid own-shop order, held; its OMS id."""
    return hold_one(stack, tmp_path_factory.mktemp("held"), "W-ACCESS-HELD-1")


def hold_one(settings: Settings, tmp: Path, external_id: str, shop: str = SHOP) -> str:
    path = unpaid_payload(tmp, external_id)
    if shop != SHOP:
        order = json.loads(path.read_text())
        path.write_text(json.dumps({**order, "shop_id": shop}, ensure_ascii=False))
    oms(settings, "ingest", "--channel", "own", str(path))

    def held() -> str | None:
        status, body, _ = request(settings, "GET", "/held?reason=unpaid", admin_auth(settings))
        ids = [r["order_id"] for r in body["orders"] if r["external_id"] == external_id]
        return ids[0] if status == 200 and ids else None

    order_id = wait_for(held)
    assert order_id, f"{external_id} was not held"
    return order_id


def test_health_is_open_and_everything_else_needs_a_token(stack: Settings) -> None:
    assert request(stack, "GET", "/health", {})[0] == 200
    for method, path in (
        ("GET", "/orders/O1"),
        ("GET", "/orders/own/E1"),
        ("GET", "/held"),
        ("GET", "/rules"),
        ("POST", "/orders/O1/release"),
        ("POST", "/orders/O1/cancel"),
        ("POST", "/stock/adjust"),
        ("POST", "/access/tokens"),
    ):
        for headers in ({}, bearer("oms_0123456789ab_" + "x" * 43), bearer("garbage")):
            status, body, got = request(stack, method, path, headers)
            assert status == 401, (method, path, headers)
            assert got["WWW-Authenticate"] == "Bearer" and "error" in body


@pytest.mark.parametrize("role", ROLES)
def test_each_role_on_each_route(
    stack: Settings, tokens: dict[str, dict[str, Any]], held_order: str, role: str
) -> None:
    """Reads on a real held order; writes on an unknown order (404 shows the permission
    passed, and nothing changes), stock on a real sku with delta +1 then -1."""
    headers = auth(tokens, role)
    for path in (f"/orders/{held_order}", "/orders/own/W-ACCESS-HELD-1", "/held", "/rules"):
        status, body, _ = request(stack, "GET", path, headers)
        assert status == 200, (role, path, body)
    _, rules, _ = request(stack, "GET", "/rules", headers)
    phones = rules["rules"]["blacklist"]["phones"]
    if role == "admin":
        assert rules["blacklist_entries"] is True and isinstance(phones, list), rules
    else:  # config/audit.toml blacklists one phone: only its count is shown
        assert rules["blacklist_entries"] is False and phones == {"hidden": 1}, rules
    grant_body = {"user": f"it-granted-by-{role}", "role": "finance", "expires_in": 600}
    status, body, _ = request(stack, "POST", "/access/tokens", headers, grant_body)
    if role == "admin":
        assert status == 201 and body["token"].startswith("oms_") and body["expires_at"], body
    else:
        assert status == 403 and "manage_tokens" in body["error"], body
    for path, allowed, permission in (
        ("/orders/ONOSUCHORDER/release", RELEASERS, "release_holds"),
        ("/orders/ONOSUCHORDER/cancel", CANCELLERS, "cancel_orders"),
    ):
        status, body, _ = request(stack, "POST", path, headers, {"reason": "test"})
        if role in allowed:
            assert status == 404, (role, path, body)
        else:
            assert status == 403, (role, path, body)
            assert body["error"] == f"forbidden: role {role} lacks permission {permission}"
    sku = "SKU-PHONE-X1"
    client = connect(stack)
    keys = Keys(stack.redis_prefix)
    before = {lv.warehouse: lv.on_hand for lv in stock_levels(client, keys, sku)}
    warehouse = sorted(before)[0]
    for delta in (1, -1):
        change = {"sku": sku, "warehouse": warehouse, "delta": delta, "reason": f"it-{role}"}
        status, body, _ = request(stack, "POST", "/stock/adjust", headers, change)
        if role in ADJUSTERS:
            assert status == 200 and body["actor"] == f"it-{role}", body
        else:
            assert status == 403 and "adjust_stock" in body["error"], body
    after = {lv.warehouse: lv.on_hand for lv in stock_levels(client, keys, sku)}
    assert after == before


def test_release_by_customer_service_lands_in_history_with_its_user(
    stack: Settings, tokens: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    order_id = hold_one(stack, tmp_path, "W-ACCESS-RELEASE-1")
    path = f"/orders/{order_id}/release"
    status, body, _ = request(stack, "POST", path, auth(tokens, "warehouse"), {})
    assert status == 403
    status, body, _ = request(
        stack, "POST", path, auth(tokens, "customer_service"), {"reason": "paid by bank transfer"}
    )
    assert status == 200, body
    assert body["actor"] == "it-customer_service" and body["before"] == "held"
    _, view, _ = request(stack, "GET", f"/orders/{order_id}", auth(tokens, "finance"))
    released = [h for h in view["history"] if h["kind"] == "hold_released"]
    assert released and released[-1]["actor"] == "api:it-customer_service", view["history"]
    cli = json.loads(oms(stack, "orders", "show", order_id, "--json").stdout)
    assert [h["actor"] for h in cli["history"] if h["kind"] == "hold_released"] == [
        "api:it-customer_service"
    ]


def test_cancel_by_admin_lands_in_history(
    stack: Settings, tokens: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    order_id = hold_one(stack, tmp_path, "W-ACCESS-CANCEL-1")
    status, body, _ = request(stack, "POST", f"/orders/{order_id}/cancel", auth(tokens, "admin"))
    assert status == 200 and body["state"] == "cancelled", body
    _, view, _ = request(stack, "GET", f"/orders/{order_id}", auth(tokens, "admin"))
    assert [h["actor"] for h in view["history"] if h["kind"] == "cancelled"] == ["api:it-admin"]


def test_shop_scope_hides_other_shops_orders(
    stack: Settings, tokens: dict[str, dict[str, Any]], held_order: str
) -> None:
    inside, outside = auth(tokens, "scoped_in"), auth(tokens, "scoped_out")
    assert request(stack, "GET", f"/orders/{held_order}", inside)[0] == 200
    assert request(stack, "GET", f"/orders/{held_order}", outside)[0] == 404
    assert request(stack, "GET", "/orders/own/W-ACCESS-HELD-1", outside)[0] == 404
    _, held_in, _ = request(stack, "GET", "/held", inside)
    _, held_out, _ = request(stack, "GET", "/held", outside)
    assert held_order in {r["order_id"] for r in held_in["orders"]}
    assert held_out == {"total": 0, "orders": [], "next": None}
    status, _, _ = request(stack, "POST", f"/orders/{held_order}/cancel", outside)
    assert status == 404  # never acted on, and not even told the order exists
    _, view, _ = request(stack, "GET", f"/orders/{held_order}", inside)
    assert view["state"] == "held"


def test_a_tmall_shop_scope_sees_its_orders(stack: Settings, tmp_path: Path) -> None:
    granted = grant(stack, "it-cs-tmall", "customer_service", f"{TMALL},own-web")
    assert granted["shops"] == f"own-web,{TMALL}"
    order_id = hold_one(stack, tmp_path, "W-ACCESS-TMALL-1", shop=TMALL)
    status, view, _ = request(stack, "GET", f"/orders/{order_id}", bearer(granted["token"]))
    assert status == 200 and view["shop_id"] == TMALL
    only_tmall = grant(stack, "it-cs-tmall-only", "customer_service", TMALL)
    _, held, _ = request(stack, "GET", "/held?limit=500", bearer(only_tmall["token"]))
    assert order_id in {r["order_id"] for r in held["orders"]}
    assert {r["shop_id"] for r in held["orders"]} == {TMALL}


def test_the_bootstrap_admin_is_spent_once_an_admin_exists(
    stack: Settings, tokens: dict[str, dict[str, Any]], held_order: str
) -> None:
    """The tokens fixture granted an admin of every shop from the CLI: OMS_ADMIN_TOKEN is
    refused from then on, saying what to do, everywhere."""
    boot = bearer(bootstrap_token(stack))
    for method, path, body in (
        ("GET", f"/orders/{held_order}", None),
        ("POST", "/access/tokens", {"user": "it-late", "role": "admin"}),
    ):
        status, answer, _ = request(stack, method, path, boot, body)
        assert status == 401, answer
        assert "OMS_ADMIN_TOKEN" in answer["error"] and "./oms access grant" in answer["error"]
    listed = json.loads(oms(stack, "access", "list", "--json").stdout)
    assert listed["bootstrap_spent"]["token_id"]
    assert "it-late" not in {t["user"] for t in listed["tokens"]}


def test_page_limits_are_bounded(stack: Settings, tokens: dict[str, dict[str, Any]]) -> None:
    status, body, _ = request(stack, "GET", "/held?limit=10000", auth(tokens, "admin"))
    assert status == 400 and "from 1 to 500" in body["error"]
    status, body, _ = request(stack, "GET", "/held?limit=1", auth(tokens, "admin"))
    assert status == 200 and len(body["orders"]) <= 1 and "next" in body


def test_revoked_token_is_refused(stack: Settings, held_order: str) -> None:
    granted = grant(stack, "it-revoked", "finance")
    headers = bearer(granted["token"])
    assert request(stack, "GET", f"/orders/{held_order}", headers)[0] == 200
    oms(stack, "access", "revoke", granted["token_id"])
    assert request(stack, "GET", f"/orders/{held_order}", headers)[0] == 401
    listed = json.loads(oms(stack, "access", "list", "--json").stdout)
    [row] = [t for t in listed["tokens"] if t["token_id"] == granted["token_id"]]
    assert row["revoked"] is True and row["user"] == "it-revoked"


def test_redis_never_holds_a_secret(stack: Settings, tokens: dict[str, dict[str, Any]]) -> None:
    client = connect(stack)
    keys = Keys(stack.redis_prefix)
    listed = oms(stack, "access", "list", "--json").stdout
    for granted in tokens.values():
        secret = granted["token"][len(f"oms_{granted['token_id']}_") :]
        stored = client.hgetall(keys.token(granted["token_id"]))
        assert stored["hash"] and stored["salt"] and stored["user"] == granted["user"]
        assert all(secret not in v and granted["token"] not in v for v in stored.values())
        assert secret not in listed
    for key in client.scan_iter(match=f"{stack.redis_prefix}:token*"):
        dumped = json.dumps(client.hgetall(key) if client.type(key) == "hash" else [])
        assert all(g["token"][-20:] not in dumped for g in tokens.values())


def test_cli_refuses_unknown_roles_and_bad_shops(stack: Settings) -> None:
    bad_role = oms(stack, "access", "grant", "--user", "x", "--role", "root", check=False)
    assert bad_role.returncode == 2 and "unknown role 'root'" in bad_role.stderr
    bad_shop = oms(
        stack, "access", "grant", "--user", "x", "--role", "admin", "--shops", "a b", check=False
    )
    assert bad_shop.returncode == 2 and "shop" in bad_shop.stderr
    unknown = oms(stack, "access", "revoke", "ffffffffffff", check=False)
    assert unknown.returncode == 1 and "no token" in unknown.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dashboard(stack: Settings) -> Iterator[str]:
    from ops.dashboard import dashboard_url, start_dashboard, stop_dashboard

    port = free_port()
    start_dashboard(stack, port)
    try:
        yield dashboard_url(port).rstrip("/")
    finally:
        stop_dashboard(stack)


@pytest.mark.parametrize("role", ROLES)
def test_dashboard_per_role(
    stack: Settings, tokens: dict[str, dict[str, Any]], dashboard: str, role: str
) -> None:
    status, body, _ = request(stack, "GET", "/api/session", auth(tokens, role), base=dashboard)
    if role in DASHBOARD:
        assert status == 200 and body["user"] == f"it-{role}"
    else:
        assert status == 403 and "read_dashboard" in body["error"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def login(dashboard: str, target: str) -> urllib.error.HTTPError:
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(NoRedirect).open(dashboard + target, timeout=30)
    return redirect.value


def test_dashboard_trades_the_url_token_for_a_session_that_ends_with_it(
    stack: Settings, dashboard: str
) -> None:
    assert request(stack, "GET", "/health", {}, base=dashboard)[0] == 200
    assert request(stack, "GET", "/", {}, base=dashboard)[0] == 200  # the shell: no data
    status, _, got = request(stack, "GET", "/api/session", {}, base=dashboard)
    assert status == 401 and got["WWW-Authenticate"] == "Bearer"
    granted = grant(stack, "it-dash", "finance")
    token = granted["token"]
    redirect = login(dashboard, f"/?since=1&token={token}")
    assert redirect.code == 303 and redirect.headers["Location"] == "/?since=1"
    cookie = redirect.headers["Set-Cookie"]
    assert token not in cookie and granted["token_id"] not in cookie
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/api/", "Max-Age="):
        assert attribute in cookie, cookie
    pair = cookie.split(";", 1)[0]
    status, who, _ = request(stack, "GET", "/api/session", {"Cookie": pair}, base=dashboard)
    assert status == 200 and who["user"] == "it-dash"
    oms(stack, "access", "revoke", granted["token_id"])
    assert request(stack, "GET", "/api/session", {"Cookie": pair}, base=dashboard)[0] == 401
    log = (stack.log_dir / "dashboard.log").read_text(errors="replace")
    assert token not in log


def test_dashboard_redirects_only_to_itself(
    stack: Settings, tokens: dict[str, dict[str, Any]], dashboard: str
) -> None:
    token = tokens["finance"]["token"]
    port = int(dashboard.rsplit(":", 1)[1])
    for target, location in (
        (f"//evil.example/?token={token}", "/"),
        (f"/\\evil.example/?token={token}", "/"),
        (f"/%2F%2Fevil.example/?token={token}", "/"),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = sock.makefile("rb").read().split(b"\r\n\r\n", 1)[0].decode("latin-1")
        assert head.split(" ", 2)[1] == "303", head
        assert f"\r\nLocation: {location}\r\n" in head + "\r\n", head


def test_control_messages_not_signed_by_a_writer_are_dead_lettered(
    stack: Settings, tmp_path: Path
) -> None:
    """Anyone who can produce to the broker: an unsigned cancel, a cancel signed with a key
    nobody gave out, a WMS event signed by the operator's key. None applies; each is a DLQ
    record with reason unauthorized_control. A signed cancel then applies."""
    order_id = hold_one(stack, tmp_path, "W-ACCESS-FORGED-1")
    now = datetime.now(UTC)

    def cancel(actor: str) -> bytes:
        action = OperatorAction(
            action_id=uuid.uuid4().hex,
            order_id=order_id,
            kind=OperatorActionKind.CANCEL,
            actor=actor,
            at=now,
        )
        return action.model_dump_json().encode()

    shipped = (
        WmsEvent(
            event_id=uuid.uuid4().hex,
            command_id="C-FORGED",
            order_id=order_id,
            kind=WmsEventKind.SHIPPED,
            warehouse="WH-SH",
            at=now,
        )
        .model_dump_json()
        .encode()
    )
    operator_topic = topics.OPERATOR.name(stack.topic_prefix)
    wms_topic = topics.WMS_EVENTS.name(stack.topic_prefix)
    key = order_id.encode()
    operator = signer_for(stack, OPERATOR)
    forged_key = [("oms-signature", b"v1:operator:" + b"0" * 64)]
    records = [
        (operator_topic, key, cancel("mallory"), []),
        (operator_topic, key, cancel("mallory"), forged_key),
        (wms_topic, key, shipped, operator.headers(wms_topic, key, shipped)),
    ]
    asyncio.run(produce(stack, records))

    def refused() -> list[DlqRecord]:
        dlq = asyncio.run(read_topic(stack, topics.DLQ.name(stack.topic_prefix)))
        found = [DlqRecord.model_validate_json(r.value) for r in dlq]
        return [r for r in found if r.key == order_id and r.reason == "unauthorized_control"]

    dead = wait_for(lambda: len(refused()) >= 3 and refused())
    assert dead, "the forged control messages were not dead-lettered"
    details = sorted(r.detail for r in dead)
    assert any("unsigned" in d for d in details) and any("bad signature" in d for d in details)
    assert any("may not write" in d for d in details), details
    _, view, _ = request(stack, "GET", f"/orders/{order_id}", admin_auth(stack))
    assert view["state"] == "held" and "mallory" not in json.dumps(view["history"])
    oms(stack, "held", "cancel", order_id)
    _, view, _ = request(stack, "GET", f"/orders/{order_id}", admin_auth(stack))
    assert view["state"] == "cancelled"
    actors = [h["actor"] for h in view["history"] if h["kind"] == "cancelled"]
    assert len(actors) == 1 and actors[0].startswith("operator:"), actors
