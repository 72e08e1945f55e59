"""The order's whole life through the real stack, driven as a user drives it: `./oms` commands
against running workers and the WMS simulator on the real broker, Redis and ClickHouse."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics.ledger import ClickHouseLedger
from core.kafka import read_topic
from core.settings import Settings
from ops import stack
from state.keys import Keys
from state.redis import connect
from state.verify import verify
from streams import topics
from tests.integration.test_end_to_end import SAMPLES, oms, show, wait_for

pytestmark = pytest.mark.integration

OWN = json.loads((SAMPLES / "own.json").read_text())


@pytest.fixture(scope="module")
def wms(running_stack: Settings) -> Iterator[Settings]:
    """Workers plus a fast WMS simulator (no random short picks or exceptions)."""
    settings = running_stack.model_copy(
        update={"wms_sim_delay_s": 0.3, "wms_sim_unsellable_rate": 0.0}
    )
    oms(settings, "stock", "load", "samples/stock.csv")
    stack.start_wms_sim(settings)
    yield settings
    stack.stop_wms_sim(settings)


def own_order(tmp: Path, ext: str, buyer: str = "", **changes: Any) -> Path:
    """The own-shop sample under a new number, bought by its own buyer at its own street
    (``buyer`` shared: the same buyer and address), with any fields changed, as a file."""
    who = buyer or ext
    data = {
        **OWN,
        "external_id": ext,
        "buyer": {**OWN["buyer"], "id": f"member-{who}"},
        "address": {**OWN["address"], "street": f"珞喻路{sum(map(ord, who)) % 9000}号"},
        **changes,
    }
    path = tmp / f"{ext}.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def state_is(settings: Settings, ref: str, *states: str, timeout: float = 60) -> dict[str, Any]:
    view = wait_for(lambda: (v := show(settings, ref)) and v["state"] in states and v, timeout)
    assert view, f"{ref} never reached {states}: {show(settings, ref)}"
    return view


def request(settings: Settings, *args: str, check: bool = True) -> dict[str, Any]:
    result = oms(settings, "aftersales", *args, "--json", check=check)
    return json.loads(result.stdout)


def test_wms_ships_and_delivers_and_the_shop_gets_the_tracking_number(wms: Settings) -> None:
    oms(wms, "ingest", "--channel", "jd", str(SAMPLES / "jd.json"))
    view = state_is(wms, "jd:289345671203", "delivered")
    kinds = [h["kind"] for h in view["history"]]
    for step in ("audited", "reserved", "routed", "released", "wms_accepted", "picked"):
        assert step in kinds
    assert kinds.index("shipped") < kinds.index("delivered")
    [outbound] = [c for c in view["commands"] if c["kind"] == "outbound"]
    assert outbound["status"] == "delivered" and outbound["tracking_number"]
    updates = asyncio.run(read_topic(wms, topics.CHANNEL_UPDATES.name(wms.topic_prefix)))
    mine = [u for r in updates if (u := json.loads(r.value))["order_id"] == view["order_id"]]
    assert [u["status"] for u in mine] == ["shipped"]
    assert mine[0]["tracking_number"] == outbound["tracking_number"]
    assert mine[0]["extra"]["api"] == "jingdong.pop.order.shipment"
    # Signed for: the order's shipped units are no longer in transit (other modules' parcels
    # may be, on this shared stack).
    keys = Keys(wms.redis_prefix)
    for sku in ("SKU-EARBUD-A2", "SKU-CHARGER-65W"):
        assert connect(wms).hget(keys.stock(sku), f"s:{view['order_id']}") == "-"


def stock_of(settings: Settings, sku: str) -> list[dict[str, Any]]:
    data = json.loads(oms(settings, "stock", "show", sku, "--json").stdout)
    return list(data["warehouses"].values())


def on_hand(settings: Settings, sku: str) -> int:
    return sum(row["on_hand"] for row in stock_of(settings, sku))


def test_return_then_refund_through_the_cli(wms: Settings, tmp_path: Path) -> None:
    oms(wms, "ingest", "--channel", "own", str(own_order(tmp_path, "E2E-RET-1")))
    view = state_is(wms, "own:E2E-RET-1", "delivered")
    sku, units = view["lines"][0]["sku"], view["lines"][0]["quantity"]
    before = on_hand(wms, sku)
    asked = request(wms, "return", "own:E2E-RET-1", "--reason", "wrong size")
    assert asked["state"] == "returning" and asked["commands"]
    done = state_is(wms, "own:E2E-RET-1", "refunded")
    assert done["refunded"] not in ("0", "0.00")
    assert on_hand(wms, sku) == before + units  # sellable: back on the shelf
    # A second refund of more than is left is refused, with exit 1.
    again = request(wms, "refund", "own:E2E-RET-1", "--amount", "99999", check=False)
    assert again["last_event"] == "action_refused"


def test_exchange_ships_a_replacement(wms: Settings, tmp_path: Path) -> None:
    oms(wms, "ingest", "--channel", "own", str(own_order(tmp_path, "E2E-EXC-1")))
    view = state_is(wms, "own:E2E-EXC-1", "shipped", "delivered")
    line = view["lines"][0]
    asked = request(wms, "exchange", "own:E2E-EXC-1", "--lines", line["line_id"])
    assert asked["state"] == "exchanging" and len(asked["commands"]) == 2
    done = state_is(wms, "own:E2E-EXC-1", "shipped", "delivered")
    shipments = {c["shipment"] for c in done["commands"] if c["kind"] == "outbound"}
    assert len(shipments) == 2  # the original and the replacement
    assert done["refunded"] in ("0", "0.00")


def test_unpaid_cancel_and_address_fix_before_release(wms: Settings, tmp_path: Path) -> None:
    unpaid = own_order(
        tmp_path,
        "E2E-UNPAID-1",
        channel_status="pending_payment",
        payment={**OWN["payment"], "status": "unpaid", "paid_total": "0", "paid_at": None},
    )
    oms(wms, "ingest", "--channel", "own", str(unpaid))
    state_is(wms, "own:E2E-UNPAID-1", "held")
    cancelled = request(wms, "cancel", "own:E2E-UNPAID-1")
    assert cancelled["state"] == "cancelled" and cancelled["commands"] == []
    no_street = own_order(tmp_path, "E2E-ADDR-1", address={**OWN["address"], "street": ""})
    oms(wms, "ingest", "--channel", "own", str(no_street))
    held = state_is(wms, "own:E2E-ADDR-1", "held")
    assert held["hold_reason"] == "address_incomplete"
    fixed = request(
        wms,
        "address",
        "own:E2E-ADDR-1",
        "--province",
        "广东省",
        "--city",
        "深圳市",
        "--district",
        "南山区",
        "--street",
        "科技园南区 8 栋",
    )
    assert fixed["before"] == "held" and fixed["state"] not in ("held", "rejected")
    shipped = state_is(wms, "own:E2E-ADDR-1", "shipped", "delivered")
    assert shipped["warehouse"] == "WH-GZ"  # routed to the new address
    late = request(
        wms,
        "address",
        "own:E2E-ADDR-1",
        "--province",
        "SH",
        "--city",
        "上海市",
        "--street",
        "南京东路 1 号",
        check=False,
    )
    assert late["last_event"] == "action_refused"


def test_cancel_after_release_is_confirmed_by_the_wms(wms: Settings, tmp_path: Path) -> None:
    oms(wms, "ingest", "--channel", "own", str(own_order(tmp_path, "E2E-INT-1")))
    state_is(wms, "own:E2E-INT-1", "released", "accepted", "picked", "shipped", "delivered")
    asked = request(wms, "cancel", "own:E2E-INT-1", check=False)
    # Before shipment: a stop is sent and the WMS confirms; after: it becomes a return.
    final = state_is(wms, "own:E2E-INT-1", "cancelled", "refunded")
    if final["state"] == "cancelled":
        assert asked["state"] == "intercepting"
        assert final["reservation"]["status"] == "closed"
    kinds = [h["kind"] for h in final["history"]]
    assert "cancelled" in kinds or "intercept_failed" in kinds or "return_requested" in kinds


def test_merge_window_ships_two_orders_of_one_buyer_as_one_parcel(
    wms: Settings, tmp_path: Path
) -> None:
    first = own_order(tmp_path, "E2E-MERGE-1", buyer="MERGE")
    second = own_order(tmp_path, "E2E-MERGE-2", buyer="MERGE")
    oms(wms, "ingest", "--channel", "own", str(first))
    oms(wms, "ingest", "--channel", "own", str(second))
    a = state_is(wms, "own:E2E-MERGE-1", "shipped", "delivered")
    b = state_is(wms, "own:E2E-MERGE-2", "shipped", "delivered")
    assert sorted(a["merged_with"]) == sorted([a["order_id"], b["order_id"]])
    parcels = {c["command_id"] for v in (a, b) for c in v["commands"] if c["kind"] == "outbound"}
    assert len(parcels) == 1
    report = json.loads(oms(wms, "report", "--json").stdout)
    assert report["merged_parcels"] >= 1 and report["lifecycle"].get("merged", 0) >= 2


def test_skus_stocked_apart_split_into_two_parcels(wms: Settings, tmp_path: Path) -> None:
    stock = tmp_path / "apart.csv"
    stock.write_text("sku,warehouse,qty\nSKU-E2E-NORTH,WH-BJ,5\nSKU-E2E-SOUTH,WH-GZ,5\n")
    oms(wms, "stock", "load", str(stock))
    line = OWN["lines"][0]
    lines = [
        {**line, "line_id": "1", "sku": "SKU-E2E-NORTH", "channel_sku": "SKU-E2E-NORTH"},
        {**line, "line_id": "2", "sku": "SKU-E2E-SOUTH", "channel_sku": "SKU-E2E-SOUTH"},
    ]
    oms(wms, "ingest", "--channel", "own", str(own_order(tmp_path, "E2E-SPLIT-1", lines=lines)))
    view = state_is(wms, "own:E2E-SPLIT-1", "shipped", "delivered")
    parcels = {c["warehouse"]: c for c in view["commands"] if c["kind"] == "outbound"}
    assert sorted(parcels) == ["WH-BJ", "WH-GZ"]
    assert all(c["tracking_number"] for c in parcels.values())
    assert "partially_shipped" in [h["kind"] for h in view["history"]]
    for sku in ("SKU-E2E-NORTH", "SKU-E2E-SOUTH"):
        assert sum(r["on_hand"] for r in stock_of(wms, sku)) == 5 - line["quantity"]


def test_stock_still_reconciles_after_every_flow(wms: Settings) -> None:
    from analytics.client import connect as ch_connect

    check = verify(connect(wms), Keys(wms.redis_prefix), ClickHouseLedger(ch_connect(wms)))
    assert check.ok, check.violations[:5]
