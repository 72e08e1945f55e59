"""The demo's orders as the platforms really send them (issue 16): receivers only as ciphertext
or masked with an OAID, a pre-sale paid in two steps, one whose balance is still due, a ship
date ahead, an order Amazon ships itself, a virtual one, a paid order the platform forbids
shipping until it lifts that, cross-border orders (Amazon and Shopify to US addresses,
Amazon.de to Berlin) that must ship from the overseas warehouse by a local carrier, an order
the buyer has refunded on the platform before it ships, and a backorder that clears by itself
when a delivery is booked in.

Each case says what must come of it; ``./oms demo`` sends them after the burst, sends the
follow-ups (the balance, the lift, the platform's refund, the delivery) once the first answers
are in, checks every outcome on the order records and fails when one is wrong. Lines are
re-pointed at the sample catalogue's plentiful skus, so the burst selling out its hot skus
cannot turn a case into a stock hold (but for the backorder, which has a sku of its own).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from core.kafka import Record
from core.settings import REPO_ROOT, Settings
from streams import topics
from streams.models import make_order_id

SAMPLES = REPO_ROOT / "samples" / "payloads"
PLENTIFUL = ("SKU-CASE-C3", "SKU-CHARGER-65W")  # in every sample warehouse (samples/stock.csv)
# States an order reaches once it is handed to the WMS (the simulator moves it on quickly).
SENT = frozenset(
    {
        "released",
        "accepted",
        "picked",
        "shipped",
        "partially_shipped",
        "delivered",
        "closed",
        "exception",
        "returning",
        "returned",
        "refunded",
        "exchanging",
    }
)
ROUTED = frozenset({"routed"})
ELSEWHERE = frozenset({"fulfilled_elsewhere"})
HELD = frozenset({"held"})
CANCELLED = frozenset({"cancelled"})
# A sku the demo stocks with nothing (samples/stock.csv) and books a delivery of once an order
# for it is held: the backorder retry (agents/timers.py) must then release that order.
BACKORDER_SKU = "SKU-LAMP-D1"
BUNDLE_CODE = "KIT-CASE-CHARGER"  # config/sku_map.csv: SKU-CASE-C3 + SKU-CHARGER-65W
BACKORDER_DELIVERY = ("WH-SH", 20)
US_CARRIERS = frozenset({"USPS", "UPS", "FEDEX"})  # config/carriers.toml, from WH-US-LA
DE_CARRIERS = frozenset({"DHLDE", "DPD"})


class Found(NamedTuple):
    """Where an order stands, as its record says: state, hold reason, and the warehouse and
    carrier of its first outbound command ('' before there is one)."""

    state: str
    reason: str = ""
    warehouse: str = ""
    carrier: str = ""
    reserved: tuple[tuple[str, str], ...] = ()  # (sku, warehouse) of each allocation


@dataclass
class Case:
    """One platform-shaped order: sent, then (optionally) followed by an update."""

    title: str
    channel: str
    shop_id: str
    external_id: str
    first: dict[str, Any]
    expect_first: frozenset[str]
    first_reason: str = ""  # the hold reason the first answer must carry ('' = any)
    then: dict[str, Any] | None = None
    expect_then: frozenset[str] = SENT
    outcome: list[str] = field(default_factory=list)
    restock: tuple[str, str, int] | None = None  # (sku, warehouse, units) booked in before then
    warehouse: str = ""  # the outbound command must name it ('' = any)
    carriers: frozenset[str] = frozenset()  # and one of these carriers (empty = any)
    together: frozenset[str] = frozenset()  # skus all reserved, from one warehouse (a bundle)

    @property
    def order_id(self) -> str:
        return make_order_id(self.channel, self.shop_id, self.external_id)


def _sample(channel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{channel}.json").read_text(encoding="utf-8"))
    return data


def _digits(run_id: str, n: int) -> str:
    return f"{run_id[2:]}{n:03d}"  # 12 + 3 digits: unique per run and case


def _taobao(run_id: str, n: int, **changes: Any) -> dict[str, Any]:
    trade = _sample("taobao")
    for k, sub in enumerate(trade["orders"]["order"]):
        sub["outer_sku_id"] = PLENTIFUL[k % 2]
        sub["oid"] = f"{sub['oid']}{n}"
    trade.update(
        {
            "tid": int(f"5{_digits(run_id, n)}"),
            "tid_str": f"5{_digits(run_id, n)}",
            "buyer_open_uid": f"AAdemo{run_id}{n}",
            "oaid": f"demoOAID{run_id}{n:03d}",
            "receiver_name": "王**",
            "receiver_mobile": "138****8000",
            "receiver_address": f"文三路***号{n}室",
            **changes,
        }
    )
    return trade


def _taobao_presale(run_id: str, n: int, step: str, minutes: int = 0) -> dict[str, Any]:
    paid_in_full = step == "FRONT_PAID_FINAL_PAID"
    trade = _taobao(
        run_id,
        n,
        type="step",
        step_trade_status=step,
        status="WAIT_SELLER_SEND_GOODS" if paid_in_full else "WAIT_BUYER_PAY",
        step_paid_fee="3897.00" if paid_in_full else "300.00",
        modified=f"2024-11-11 {minutes // 60:02d}:{minutes % 60:02d}:30",
    )
    if not paid_in_full:
        trade.pop("pay_time", None)
    return trade


def _douyin(run_id: str, n: int, **changes: Any) -> dict[str, Any]:
    order = _sample("douyin")
    external = f"69{_digits(run_id, n)}0"
    for k, sku in enumerate(order["sku_order_list"]):
        sku["code"] = PLENTIFUL[k % 2]
        sku["order_id"] = f"{external[:-1]}{k + 1}"
        sku["parent_order_id"] = external
    order.update({"order_id": external, "doudian_open_id": f"1@#demo{run_id}{n}", **changes})
    return order


def strip_to_ciphertext(order: dict[str, Any], name: str, tel: str, detail: str) -> None:
    """A Douyin ``shop_order_detail`` as apps on the current privacy scheme get it: the
    receiver only as ciphertext, no masked copy, no plain field (tests use it too)."""
    for key in (
        "post_receiver",
        "post_tel",
        "mask_post_receiver",
        "mask_post_tel",
        "mask_post_addr",
    ):
        order.pop(key, None)
    order["post_addr"].pop("detail", None)
    order["encrypt_post_receiver"] = name
    order["encrypt_post_tel"] = tel
    order["post_addr"]["encrypt_detail"] = detail


def _douyin_ciphertext_only(run_id: str, n: int) -> dict[str, Any]:
    order = _douyin(run_id, n)
    tail = f"{run_id}{n:03d}"
    strip_to_ciphertext(
        order,
        name=f"##qIOpbLPevlQwA6f+yNJ7HgOq{tail}==*CgYIASAHKAESPgo8#1##",
        tel=f"$$KlqdO3S6/9vQsJesewp8R2oBlX{tail}==*CgYIASAH$1$$",
        detail=f"##Gx7Vv1cWq2Lk9pZ3rT8yB0n4mQ{tail}==*CgYIAS#1##",
    )
    return order


def _jd_encrypted(run_id: str, n: int) -> dict[str, Any]:
    order = _sample("jd")
    order["orderId"] = f"3{_digits(run_id, n)}"
    for k, item in enumerate(order["itemInfoList"]):
        item["outerSkuId"] = PLENTIFUL[k % 2]
    order["couponDetailList"] = [c for c in order.get("couponDetailList", []) if not c.get("skuId")]
    order["pin"] = f"jd_demo_{run_id}{n}"
    order["consigneeInfo"].update(
        {
            "fullname": f"AAS/ZFJFpmfveSmeZ0P9i+iPiAVtOMmowMRt{run_id}{n:03d}=",
            "fullAddress": f"AAS/ZFJFpmfveSmeZ0P9i+iPFTw2VsdIkCtv0YhpKHQZAdj5ssES7b{run_id}{n:03d}",
            "mobile": "136*******5",
            "telephone": "136*******5",
            "oaid": f"JDdemo{run_id}{n:03d}",
        }
    )
    return order


def _amazon_afn(run_id: str, n: int) -> dict[str, Any]:
    order = _sample("amazon")
    for k, item in enumerate(order["OrderItems"]):
        item["SellerSKU"] = PLENTIFUL[k % 2]
    order.update(
        {
            "AmazonOrderId": f"C02-{run_id[-7:]}-{n:07d}",
            "FulfillmentChannel": "AFN",
            "OrderStatus": "Shipped",
        }
    )
    return order


def _douyin_refund(order: dict[str, Any], aftersale_id: str) -> dict[str, Any]:
    """The platform's refund message (trade_RefundCreated, tag 200) for an order not shipped
    yet (aftersale_type 2: 未发货仅退款), as samples/payloads/aftersales/douyin.json has it."""
    samples = json.loads((SAMPLES / "aftersales" / "douyin.json").read_text(encoding="utf-8"))
    message: dict[str, Any] = copy.deepcopy(samples[0])
    data = json.loads(message["data"])
    data.update(
        {
            "p_id": int(order["order_id"]),
            "s_id": int(order["order_id"]),
            "aftersale_id": int(aftersale_id),
            "aftersale_type": 2,
            "refund_amount": int(order["pay_amount"]),
        }
    )
    message.update({"msg_id": f"73{aftersale_id}", "data": json.dumps(data)})
    return message


def _bundle(run_id: str, n: int) -> dict[str, Any]:
    """A Taobao order whose second line is the kit KIT-CASE-CHARGER (config/sku_map.csv)."""
    trade = _taobao(run_id, n)
    trade["orders"]["order"][1]["outer_sku_id"] = BUNDLE_CODE
    return trade


def _backordered(run_id: str, n: int) -> dict[str, Any]:
    trade = _taobao(run_id, n)
    for sub in trade["orders"]["order"]:
        sub["outer_sku_id"] = BACKORDER_SKU
    return trade
def _amazon_abroad(
    run_id: str, n: int, marketplace: str, currency: str, address: dict[str, str]
) -> dict[str, Any]:
    """An Amazon MFN order from another marketplace: the seller ships it from its overseas
    warehouse. ShippingAddress as SP-API sends it, no Phone (Amazon often gives none)."""
    order = _sample("amazon")
    for k, item in enumerate(order["OrderItems"]):
        item["SellerSKU"] = PLENTIFUL[k % 2]
        for key, value in item.items():
            if isinstance(value, dict) and "CurrencyCode" in value:
                item[key] = {"CurrencyCode": currency, "Amount": "0.00"}
        item["ItemPrice"] = {"CurrencyCode": currency, "Amount": "19.99"}
    order.update(
        {
            "AmazonOrderId": f"{111 + n}-{run_id[-7:]}-{n:07d}",
            "MarketplaceId": marketplace,
            "OrderTotal": {"CurrencyCode": currency, "Amount": "39.98"},
            "ShippingAddress": {**address, "AddressType": "Residential"},
        }
    )
    return order


def _amazon_us(run_id: str, n: int) -> dict[str, Any]:
    address = {
        "Name": "Jane Doe",
        "AddressLine1": "600 W 7th St",
        "City": "Los Angeles",
        "StateOrRegion": "CA",
        "PostalCode": "90017-2919",
        "CountryCode": "US",
    }
    return _amazon_abroad(run_id, n, "ATVPDKIKX0DER", "USD", address)


def _amazon_de(run_id: str, n: int) -> dict[str, Any]:
    address = {
        "Name": "Max Mustermann",
        "AddressLine1": "Invalidenstraße 117",
        "City": "Berlin",
        "PostalCode": "10115",
        "CountryCode": "DE",
    }
    return _amazon_abroad(run_id, n, "A1PA6795UKMFR9", "EUR", address)


def _shopify_us(run_id: str, n: int) -> dict[str, Any]:
    """A Shopify order in USD to New York: shipping_address with province, province_code,
    zip and country_code, and no phone."""
    order = _sample("shopify")
    for k, item in enumerate(order["line_items"]):
        item["sku"] = PLENTIFUL[k % 2]
        item["id"] = int(f"{item['id']}{n}")
    order.update(
        {
            "id": int(f"7{_digits(run_id, n)}"),
            "currency": "USD",
            "presentment_currency": "USD",
            "customer_locale": "en-US",
            "note": None,
            "shipping_address": {
                "first_name": "John",
                "last_name": "Smith",
                "name": "John Smith",
                "address1": "350 5th Ave",
                "address2": "Floor 21",
                "city": "New York",
                "province": "New York",
                "province_code": "NY",
                "country": "United States",
                "country_code": "US",
                "zip": "10118",
                "phone": None,
            },
        }
    )
    return order


def build_cases(run_id: str) -> list[Case]:
    """The cases of one demo run (ids unique per run)."""
    shop = {
        "taobao": str(_sample("taobao")["seller_nick"]),
        "douyin": str(_sample("douyin")["shop_id"]),
        "jd": str(_sample("jd")["venderId"]),
        "amazon": "amazon-cn",  # the marketplace's shop (the sample has no SellerId)
    }
    id_field = {
        "taobao": "tid_str",
        "douyin": "order_id",
        "jd": "orderId",
        "amazon": "AmazonOrderId",
        "shopify": "id",
    }
    deposit = _taobao_presale(run_id, 8, "FRONT_PAID_FINAL_NOPAID")
    forbid = _taobao(run_id, 11, status="PAID_FORBID_CONSIGN")
    in_3_days = int(time.time()) + 3 * 86400
    table: list[tuple[str, str, dict[str, Any], frozenset[str], str, dict[str, Any] | None]] = [
        *(
            (
                "Douyin, receiver only as ciphertext",
                "douyin",
                _douyin_ciphertext_only(run_id, n),
                SENT,
                "",
                None,
            )
            for n in range(3)
        ),
        *(
            ("Taobao, masked receiver with OAID", "taobao", _taobao(run_id, n), SENT, "", None)
            for n in range(3, 6)
        ),
        *(
            ("JD, encrypted consignee with OAID", "jd", _jd_encrypted(run_id, n), SENT, "", None)
            for n in range(6, 8)
        ),
        (
            "Taobao pre-sale: deposit, then balance",
            "taobao",
            deposit,
            ROUTED,
            "awaiting_balance",
            _taobao_presale(run_id, 8, "FRONT_PAID_FINAL_PAID", minutes=90),
        ),
        (
            "Taobao pre-sale: deposit paid, balance due",
            "taobao",
            _taobao_presale(run_id, 9, "FRONT_PAID_FINAL_NOPAID"),
            ROUTED,
            "awaiting_balance",
            None,
        ),
        (
            "Douyin, ships in 3 days (appointment_ship_time)",
            "douyin",
            _douyin(run_id, 10, appointment_ship_time=in_3_days),
            ROUTED,
            "ship_date",
            None,
        ),
        (
            "Amazon order fulfilled by Amazon (AFN)",
            "amazon",
            _amazon_afn(run_id, 12),
            ELSEWHERE,
            "",
            None,
        ),
        (
            "Douyin voucher (order_type 4): nothing ships",
            "douyin",
            _douyin(run_id, 13, order_type=4, order_type_desc="poi核销"),
            ELSEWHERE,
            "",
            None,
        ),
        (
            "Taobao PAID_FORBID_CONSIGN, then lifted",
            "taobao",
            forbid,
            ROUTED,
            "channel_ship_hold",
            {**forbid, "status": "WAIT_SELLER_SEND_GOODS", "modified": "2024-11-11 03:00:00"},
        ),
    ]
    refunded = _douyin(run_id, 17, appointment_ship_time=in_3_days)
    cases = [
        Case(
            title,
            channel,
            shop[channel],
            str(first[id_field[channel]]),
            first,
            expect,
            reason,
            then,
        )
        for title, channel, first, expect, reason, then in table
    ]
    cases += [
        Case(
            "Douyin, refunded on the platform before it ships",
            "douyin",
            shop["douyin"],
            str(refunded["order_id"]),
            refunded,
            ROUTED,
            "ship_date",
            _douyin_refund(refunded, _digits(run_id, 17)),
            CANCELLED,
        ),
        Case(
            "Taobao backorder, cleared when a delivery is booked in",
            "taobao",
            shop["taobao"],
            f"5{_digits(run_id, 18)}",
            _backordered(run_id, 18),
            HELD,
            "out_of_stock",
            restock=(BACKORDER_SKU, *BACKORDER_DELIVERY),
        ),
        Case(
            "Taobao kit (bundle): both parts reserved from one warehouse",
            "taobao",
            shop["taobao"],
            f"5{_digits(run_id, 19)}",
            _bundle(run_id, 19),
            SENT,
            together=frozenset(PLENTIFUL),
        ),
    ]
    return cases + overseas_cases(run_id, id_field)


def overseas_cases(run_id: str, id_field: dict[str, str]) -> list[Case]:
    """Cross-border orders: each must reach the WMS from the warehouse of its country, with
    a carrier of that country (config/warehouses.toml, config/carriers.toml)."""
    table = [
        (
            "Amazon.com to Los Angeles: WH-US-LA",
            "amazon",
            "amazon-us",
            _amazon_us(run_id, 14),
            "WH-US-LA",
            US_CARRIERS,
        ),
        (
            "Shopify to New York (USD): WH-US-LA",
            "shopify",
            "shopify-default",
            _shopify_us(run_id, 15),
            "WH-US-LA",
            US_CARRIERS,
        ),
        (
            "Amazon.de to Berlin: WH-DE-FRA",
            "amazon",
            "amazon-de",
            _amazon_de(run_id, 16),
            "WH-DE-FRA",
            DE_CARRIERS,
        ),
    ]
    return [
        Case(
            title,
            channel,
            shop,
            str(first[id_field[channel]]),
            first,
            SENT,
            warehouse=warehouse,
            carriers=carriers,
        )
        for title, channel, shop, first, warehouse, carriers in table
    ]


def records_of(
    settings: Settings, payloads: Iterable[tuple[str, str, dict[str, Any]]]
) -> list[Record]:
    """(channel, key, payload) -> raw-topic records, as the ingest writes them."""
    return [
        (
            topics.raw_topic(channel).name(settings.topic_prefix),
            key.encode(),
            json.dumps(payload, ensure_ascii=False).encode(),
            [],
        )
        for channel, key, payload in payloads
    ]


def first_records(settings: Settings, cases: list[Case]) -> list[Record]:
    return records_of(settings, ((c.channel, c.external_id, copy.deepcopy(c.first)) for c in cases))


def follow_up_records(settings: Settings, cases: list[Case]) -> list[Record]:
    return records_of(
        settings, ((c.channel, c.external_id, c.then) for c in cases if c.then is not None)
    )


def check(
    cases: list[Case],
    read: Callable[[list[str]], dict[str, Found]],
    stage: str,
    timeout_s: float = 60.0,
) -> bool:
    """Waits (bounded) until each case's order is where it should be after ``stage``
    ('first' or 'then'); records each outcome on its case. True when all are."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = read([c.order_id for c in cases])
        ok = all(_meets(c, found.get(c.order_id), stage) for c in cases)
        if ok or time.monotonic() > deadline:
            for case in cases:
                verdict = "ok" if _meets(case, found.get(case.order_id), stage) else "WRONG"
                case.outcome.append(f"{_shown(found.get(case.order_id))} {verdict}")
            return ok
        time.sleep(0.5)


def _shown(found: Found | None) -> str:
    if found is None:
        return "missing"
    shown = f"{found.state} ({found.reason})" if found.reason else found.state
    return f"{shown} from {found.warehouse} by {found.carrier}" if found.warehouse else shown


def _meets(case: Case, found: Found | None, stage: str) -> bool:
    if found is None or not _shipped_as_expected(case, found):
        return False
    if stage == "then" and (case.then is not None or case.restock is not None):
        return found.state in case.expect_then
    return found.state in case.expect_first and (
        not case.first_reason or found.reason == case.first_reason
    )


def _shipped_as_expected(case: Case, found: Found) -> bool:
    return (
        (not case.warehouse or found.warehouse == case.warehouse)
        and (not case.carriers or found.carrier in case.carriers)
        and _reserved_together(case.together, found.reserved)
    )


def _reserved_together(skus: frozenset[str], reserved: tuple[tuple[str, str], ...]) -> bool:
    """Every sku of a bundle reserved, all from one warehouse (vacuous without a bundle)."""
    if not skus:
        return True
    of_bundle = [(sku, wh) for sku, wh in reserved if sku in skus]
    return {sku for sku, _ in of_bundle} == skus and len({wh for _, wh in of_bundle}) == 1
