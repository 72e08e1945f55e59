"""The worker's order query API (web/api.py) with its reads injected: routing, parameter
validation, error statuses, masking of the order view, the port rule and the server's life.
Every request carries an admin token (tests/unit/test_access.py covers who may do what)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from core.access import ALL_SHOPS, Principal, Shops
from core.settings import REPO_ROOT, Settings
from order.record import AfterSalesEntry, CommandRef, HistoryEntry, OrderRecord
from state.redis import connect_async
from streams.channels import adapt
from streams.messages import AfterSalesKind, CommandKind, CommandLine, EventKind, OrderState
from streams.models import Address, OrderLine
from web.api import (
    MAX_HELD_LIMIT,
    ApiServer,
    HeldCursor,
    HeldPage,
    RedisReads,
    api_port,
    api_url,
    create_api,
    worker_index,
)
from web.views import order_view

T0 = datetime(2026, 11, 11, tzinfo=UTC)
JD_NAME, JD_MOBILE = "王小明", "13912345678"  # samples/payloads/jd.json consignee
NEW_NAME, NEW_PHONE, NEW_STREET = "李雷", "13800001111", "科苑路 99 号 7 栋 501"


def jd_record() -> OrderRecord:
    """The JD sample after a life: gift added, shipped, an address change and a refund."""
    order = adapt("jd", (REPO_ROOT / "samples" / "payloads" / "jd.json").read_bytes())
    return OrderRecord(
        order_id=order.order_id,
        state=OrderState.RELEASED,
        order=order,
        fingerprint=order.fingerprint(),
        warehouse="WH-GZ",
        carrier="SF",
        ship_to=Address(
            province="广东", province_code="GD", street=NEW_STREET, name=NEW_NAME, phone=NEW_PHONE
        ),
        gift_lines=[
            OrderLine(
                line_id="G1",
                sku="SKU-GIFT",
                quantity=1,
                unit_price=Decimal("0"),
                paid_amount=Decimal("0"),
                is_gift=True,
            )
        ],
        commands=[
            CommandRef(
                command_id="C1",
                kind=CommandKind.OUTBOUND,
                warehouse="WH-GZ",
                shipment=order.order_id,
                carrier="SF",
                tracking_number="SF123",
                lines=[CommandLine(line_id="G1", sku="SKU-GIFT", quantity=1, is_gift=True)],
            )
        ],
        merged_with=[order.order_id, "O0000000000000001"],
        aftersales=[
            AfterSalesEntry(request_id="R1", kind=AfterSalesKind.REFUND, amount=Decimal("5"))
        ],
        refunded=Decimal("5"),
        history=[
            HistoryEntry(
                seq=1,
                event_id="e1",
                kind=EventKind.RECEIVED,
                to_state=OrderState.RECEIVED,
                at=T0,
            )
        ],
    )


HELD_ROW = {
    "order_id": "O1",
    "channel": "own",
    "shop_id": "s",
    "external_id": "E",
    "reason": "unpaid",
    "held_at": "",
    "total": "1",
}


ADMIN_TOKEN = "admin-token-for-unit-tests"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class FakeVerifier:
    """Tokens from a dict: token -> principal."""

    def __init__(self, tokens: dict[str, Principal] | None = None) -> None:
        self.tokens = tokens or {ADMIN_TOKEN: Principal("root", "admin")}

    async def verify(self, token: str, client: str = "") -> Principal | None:
        return self.tokens.get(token)


class FakeReads:
    """Stands in for Redis: answers from a dict and records what the API asked for."""

    def __init__(self, orders: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.by_ref = orders or {}
        self.refs: list[str] = []
        self.held_calls: list[dict[str, Any]] = []

    async def orders(self, ref: str) -> list[dict[str, Any]]:
        self.refs.append(ref)
        return self.by_ref.get(ref, [])

    async def held(
        self, *, reason: str, limit: int, since: float, shops: Shops, after: HeldCursor | None
    ) -> HeldPage:
        call = {"reason": reason, "limit": limit, "since": since, "shops": shops}
        self.held_calls.append(call if after is None else {**call, "after": after})
        return HeldPage([HELD_ROW], None)

    async def rules(self) -> dict[str, Any]:
        return {"unpaid": {"enabled": True}}


class BrokenReads(FakeReads):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    async def orders(self, ref: str) -> list[dict[str, Any]]:
        raise self.exc


@pytest.fixture
def view() -> dict[str, Any]:
    return order_view((jd_record(), {"status": "reserved", "allocations": []}))


@pytest.fixture
def reads(view: dict[str, Any]) -> FakeReads:
    return FakeReads({view["order_id"]: [view], "jd:289345671203": [view, view]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_for(reads: Any, worker: str = "w0") -> web.Application:
    return create_api(reads, worker=worker, verifier=FakeVerifier())


async def client_for(app: web.Application, headers: dict[str, str] | None = None) -> TestClient:
    client = TestClient(TestServer(app), headers=AUTH if headers is None else headers)
    await client.start_server()
    return client


@pytest.fixture
async def client(reads: FakeReads) -> AsyncIterator[TestClient]:
    c = await client_for(api_for(reads, "w1"))
    yield c
    await c.close()


async def test_health_names_the_worker(client: TestClient) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"ok": True, "worker": "w1"}


async def test_order_by_id_is_the_order_view(
    client: TestClient, reads: FakeReads, view: dict[str, Any]
) -> None:
    resp = await client.get(f"/orders/{view['order_id']}")
    assert resp.status == 200
    assert await resp.json() == view
    assert reads.refs == [view["order_id"]]


async def test_order_by_channel_id_lists_every_shop_s_order(
    client: TestClient, reads: FakeReads, view: dict[str, Any]
) -> None:
    resp = await client.get("/orders/JD/289345671203")
    assert resp.status == 200
    assert await resp.json() == {"orders": [view, view]}
    assert reads.refs == ["jd:289345671203"]  # channel folded to lower case


@pytest.mark.parametrize(
    ("path", "needle"),
    [("/orders/ONOSUCH", "ONOSUCH"), ("/orders/jd/404404", "404404"), ("/nowhere", "/nowhere")],
)
async def test_unknown_orders_and_routes_are_json_404(
    client: TestClient, path: str, needle: str
) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    assert needle in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/orders/jd:289345671203", "/orders/{channel}/{external_id}"),
        ("/orders/" + "O" * 129, "order id longer"),
        ("/orders/ebay/1", "unknown channel 'ebay'"),
        ("/orders/jd/" + "9" * 129, "external id longer"),
        ("/held?limit=0", "limit must be"),
        ("/held?limit=abc", "limit must be"),
        (f"/held?limit={MAX_HELD_LIMIT + 1}", "limit must be"),
        ("/held?since=-1", "since must be"),
        ("/held?since=nan", "since must be"),
        ("/held?since=yesterday", "since must be"),
        ("/held?reason=Out%20Of%20Stock", "reason 'Out Of Stock'"),
        ("/held?limt=5", "unknown parameter(s) limt"),
    ],
)
async def test_bad_parameters_are_400_saying_which(
    client: TestClient, reads: FakeReads, path: str, needle: str
) -> None:
    resp = await client.get(path)
    assert resp.status == 400
    assert needle in (await resp.json())["error"]
    assert reads.refs == [] and reads.held_calls == []  # refused before any read


async def test_held_passes_the_parsed_filters(client: TestClient, reads: FakeReads) -> None:
    resp = await client.get("/held?reason=out_of_stock&limit=5&since=1700000000.5")
    assert resp.status == 200
    assert await resp.json() == {"total": 1, "orders": [HELD_ROW], "next": None}
    assert reads.held_calls == [
        {"reason": "out_of_stock", "limit": 5, "since": 1700000000.5, "shops": ALL_SHOPS}
    ]


async def test_held_defaults_to_a_page_of_100(client: TestClient, reads: FakeReads) -> None:
    assert (await client.get("/held")).status == 200
    assert reads.held_calls == [{"reason": "", "limit": 100, "since": 0.0, "shops": ALL_SHOPS}]


async def test_held_reads_apply_the_token_s_shop_scope(reads: FakeReads) -> None:
    """The scope goes to the read, so ``limit`` counts the shop's own holds, not everyone's."""
    shop_token = "shop-scoped-token-for-unit-tests"
    scoped = Principal("cs1", "customer_service", frozenset({"shop-a"}))
    verifier = FakeVerifier({shop_token: scoped})
    app = create_api(reads, worker="w0", verifier=verifier)
    c = await client_for(app, {"Authorization": f"Bearer {shop_token}"})
    try:
        assert (await c.get("/held?limit=3")).status == 200
    finally:
        await c.close()
    assert reads.held_calls[-1]["shops"] == frozenset({"shop-a"})
    assert reads.held_calls[-1]["limit"] == 3


async def test_view_is_masked_and_shows_the_whole_life(client: TestClient) -> None:
    order_id = jd_record().order_id
    body = await (await client.get(f"/orders/{order_id}")).text()
    for clear in (JD_NAME, JD_MOBILE, NEW_NAME, NEW_PHONE, NEW_STREET):
        assert clear not in body
    data = await (await client.get(f"/orders/{order_id}")).json()
    assert data["order"]["address"]["phone"] == "139****5678"
    assert data["ship_to"]["phone"] == "138****1111" and data["ship_to"]["name"] == "李**"
    assert data["carrier"] == "SF" and data["refunded"] == "5"
    assert [c["tracking_number"] for c in data["commands"]] == ["SF123"]
    assert [g["sku"] for g in data["gift_lines"]] == ["SKU-GIFT"]
    assert data["merged_with"] == [order_id, "O0000000000000001"]
    assert [a["kind"] for a in data["aftersales"]] == ["refund"]
    assert [h["kind"] for h in data["history"]] == ["received"]


async def test_redis_down_is_503() -> None:
    """The worker's kind of client, to a port nothing listens on: the error it would see."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    redis_client = connect_async(settings)
    reads = RedisReads(settings, redis_client)
    c = await client_for(api_for(reads))
    try:
        for path in ("/orders/O1", "/orders/jd/1", "/held"):
            resp = await c.get(path)
            assert resp.status == 503, path
            assert "Redis" in (await resp.json())["error"]
        assert (await c.get("/health")).status == 200
    finally:
        await c.close()
        await redis_client.aclose()


async def test_unexpected_failure_is_500_without_details() -> None:
    c = await client_for(api_for(BrokenReads(RuntimeError("13912345678"))))
    try:
        resp = await c.get("/orders/O1")
        assert resp.status == 500
        assert "13912345678" not in await resp.text()
    finally:
        await c.close()


async def test_redis_error_from_reads_is_503() -> None:
    c = await client_for(api_for(BrokenReads(RedisConnectionError("refused"))))
    try:
        assert (await c.get("/orders/O1")).status == 503
    finally:
        await c.close()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "x"}])
async def test_without_a_valid_token_all_but_health_is_401(
    reads: FakeReads, headers: dict[str, str]
) -> None:
    c = await client_for(api_for(reads), headers)
    try:
        for path in ("/orders/O1", "/orders/jd/1", "/held", "/rules", "/nowhere"):
            resp = await c.get(path)
            assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer", path
            assert "error" in await resp.json()
        assert (await c.post("/orders/O1/release")).status == 401
        assert (await c.get("/health")).status == 200
        assert reads.refs == [] and reads.held_calls == []
    finally:
        await c.close()


@pytest.mark.parametrize(("name", "index"), [("w0", 0), ("w1", 1), ("w12", 12), ("alpha", 0)])
def test_port_is_base_plus_worker_index(name: str, index: int) -> None:
    settings = Settings(worker_web_port=20000)
    assert worker_index(name) == index
    assert api_port(settings, name) == 20000 + index
    assert api_url(settings, name) == f"http://127.0.0.1:{20000 + index}"


async def test_server_serves_until_stopped_and_survives_a_port_clash(reads: FakeReads) -> None:
    port = free_port()
    first = ApiServer(api_for(reads), port)
    clash = ApiServer(api_for(reads, "w1"), port)
    assert await first.start() and first.serving
    try:
        assert not await clash.start() and not clash.serving  # logged, not raised
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.0\r\n\r\n")
        assert b'"worker":"w0"' in await reader.read()
        writer.close()
    finally:
        await first.stop()
        await clash.stop()
    assert not first.serving
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
