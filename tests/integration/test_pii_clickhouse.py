"""No personal data in clear in ClickHouse, through the real pipeline.

Orders of every channel carry names, phones, streets, detail lines and e-mails made for this
run; malformed copies of them go to the DLQ; an address change and a return with a written
reason follow. Once every fact has landed, every String column (String, Nullable, Array) of
every table and view of the namespace's database is read whole and searched for those values
and the phone digits: none may be there, while the orders keep their region fields.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from analytics.client import connect, quote_ident
from core.kafka import Record, produce
from core.settings import REPO_ROOT, Settings
from ops.loadgen import SHOP_HEADER, SHOP_HEADERS
from streams.messages import AfterSalesKind
from streams.models import Address
from streams.topics import raw_topic
from tests.integration.test_bad_input import own_namespace, sample_stock  # noqa: F401
from tests.integration.test_end_to_end import wait_for
from web.views import submit_aftersales

pytestmark = pytest.mark.integration

CHANNELS = ("taobao", "jd", "douyin", "shopify", "amazon", "own")
# Where each channel's sample order (samples/payloads) ships to: the regions must survive.
CITIES = {
    "taobao": "杭州市",
    "jd": "深圳市",
    "douyin": "成都市",
    "shopify": "上海市",
    "amazon": "北京市",
    "own": "武汉市",
}
# The channel's creation-time field: a malformed copy puts personal data there, where a
# parser's error message could quote it.
TIME_FIELDS = {
    "taobao": "created",
    "jd": "orderStartTime",
    "douyin": "create_time",
    "shopify": "created_at",
    "amazon": "PurchaseDate",
    "own": "created_at",
}


@dataclass(frozen=True)
class Person:
    """Personal data of one channel's order, distinctive enough to find in any column."""

    name: str
    phone: str
    street: str
    detail: str
    email: str

    @classmethod
    def make(cls, channel: str, tag: str, index: int) -> Person:
        digits = f"{secrets.randbelow(10**7):07d}"
        return cls(
            name=f"Qz{tag}{channel.title()}Name",
            phone=f"139{index}{digits}",
            street=f"Qz{tag}{channel.title()}Street 77",
            detail=f"Qz{tag}{channel.title()}Room 1203",
            email=f"qz{tag}{channel}@example.org",
        )

    def needles(self) -> list[str]:
        """Every form in which this person's data would be a leak: the values, the phone's
        subscriber digits (a masked phone keeps only 3 + 4), the e-mail's local part."""
        return [
            self.name,
            self.phone,
            self.phone[3:],
            self.street,
            self.detail,
            self.email,
            self.email.split("@")[0],
        ]


def set_path(payload: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = payload
    for key in parents:
        node = node[key]
    node[last] = value


def _taobao(p: Person) -> dict[str, Any]:
    return {
        "receiver_name": p.name,
        "receiver_mobile": p.phone,
        "receiver_address": f"{p.street} {p.detail}",
        "buyer_nick": p.name,
        "buyer_message": f"please call {p.name} on {p.phone}",
    }


def _jd(p: Person) -> dict[str, Any]:
    return {
        "consigneeInfo.fullname": p.name,
        "consigneeInfo.mobile": p.phone,
        "consigneeInfo.fullAddress": f"广东深圳市南山区粤海街道{p.street} {p.detail}",
        "orderRemark": f"call {p.name} {p.phone}",
    }


def _douyin(p: Person) -> dict[str, Any]:
    return {
        "post_receiver": p.name,
        "encrypt_post_receiver": p.name,
        "mask_post_receiver": p.name,
        "post_tel": p.phone,
        "encrypt_post_tel": p.phone,
        "mask_post_tel": p.phone,
        "post_addr.detail": f"{p.street} {p.detail}",
        "post_addr.encrypt_detail": f"{p.street} {p.detail}",
        "mask_post_addr.detail": f"{p.street} {p.detail}",
        "buyer_words": f"for {p.name}",
    }


def _shopify(p: Person) -> dict[str, Any]:
    first, last = p.name[:6], p.name[6:]
    fields: dict[str, Any] = {
        "email": p.email,
        "contact_email": p.email,
        "note": f"ring {p.phone}",
        "customer.email": p.email,
        "customer.first_name": first,
        "customer.last_name": last,
        "customer.phone": f"+86{p.phone}",
    }
    for which in ("billing_address", "shipping_address"):
        fields |= {
            f"{which}.first_name": first,
            f"{which}.last_name": last,
            f"{which}.name": p.name,
            f"{which}.address1": p.street,
            f"{which}.address2": p.detail,
            f"{which}.phone": f"+86{p.phone}",
        }
    return fields


def _amazon(p: Person) -> dict[str, Any]:
    return {
        "ShippingAddress.Name": p.name,
        "ShippingAddress.AddressLine1": p.street,
        "ShippingAddress.AddressLine2": p.detail,
        "ShippingAddress.Phone": p.phone,
        "BuyerInfo.BuyerEmail": p.email,
        "BuyerInfo.BuyerName": p.name,
    }


def _own(p: Person) -> dict[str, Any]:
    return {
        "buyer.name": p.name,
        "buyer.email": p.email,
        "buyer.phone": p.phone,
        "address.street": f"{p.street} {p.detail}",
        "address.name": p.name,
        "address.phone": p.phone,
        "buyer_remark": f"gift for {p.name}",
    }


PERSONAL_FIELDS: dict[str, Callable[[Person], dict[str, Any]]] = {
    "taobao": _taobao,
    "jd": _jd,
    "douyin": _douyin,
    "shopify": _shopify,
    "amazon": _amazon,
    "own": _own,
}
# The channel order id fields, set per run so the orders are new to any Redis.
ID_FIELDS = {
    "taobao": ("tid", "tid_str"),
    "jd": ("orderId",),
    "douyin": ("order_id",),
    "shopify": ("id",),
    "amazon": ("AmazonOrderId",),
    "own": ("external_id",),
}


def external_id(channel: str, run: int, variant: int) -> str:
    return f"{run}{variant}{CHANNELS.index(channel)}"


def order_payload(channel: str, person: Person, order_id: str) -> dict[str, Any]:
    payload = orjson.loads((REPO_ROOT / "samples" / "payloads" / f"{channel}.json").read_bytes())
    for path, value in PERSONAL_FIELDS[channel](person).items():
        set_path(payload, path, value)
    for field in ID_FIELDS[channel]:
        current = payload.get(field)
        payload[field] = int(order_id) if isinstance(current, int) else order_id
    return payload


def records(settings: Settings, people: dict[str, Person], run: int) -> list[Record]:
    """Per channel: the order, a copy whose creation time quotes the person, a copy cut off
    mid-JSON, and a copy without its line list: one order and three DLQ records each."""
    out: list[Record] = []
    for channel, person in people.items():
        topic = raw_topic(channel).name(settings.topic_prefix)
        shop = SHOP_HEADERS.get(channel)
        headers = [(SHOP_HEADER, shop.encode())] if shop else []
        good = order_payload(channel, person, external_id(channel, run, 1))
        bad_time = order_payload(channel, person, external_id(channel, run, 2))
        bad_time[TIME_FIELDS[channel]] = f"{person.name} {person.phone} {person.email}"
        cut = orjson.dumps(order_payload(channel, person, external_id(channel, run, 3)))
        no_lines = order_payload(channel, person, external_id(channel, run, 4))
        for key in ("orders", "itemInfoList", "sku_order_list", "line_items", "OrderItems"):
            no_lines.pop(key, None)
        no_lines.pop("lines", None)
        for i, value in enumerate(
            (
                orjson.dumps(good),
                orjson.dumps(bad_time),
                cut[: len(cut) // 2],
                orjson.dumps(no_lines),
            )
        ):
            out.append((topic, f"{channel}-{run}-{i}".encode(), value, headers))
    return out


def string_columns(client: Any, database: str) -> list[tuple[str, str, str]]:
    """(table, column, type) of every column holding text, in tables and views alike."""
    rows = client.execute(
        "SELECT table, name, type FROM system.columns WHERE database = %(db)s",
        {"db": database},
    )
    return [(t, c, ty) for t, c, ty in rows if "String" in ty]


def column_text(client: Any, database: str, table: str, column: str) -> str:
    values = client.execute(
        f"SELECT {quote_ident(column)} FROM {quote_ident(database)}.{quote_ident(table)}"
    )
    return "\n".join(str(value) for (value,) in values)


@pytest.fixture
def pii_namespace(own_namespace: Settings) -> Iterator[Settings]:  # noqa: F811
    """Workers, topics, Redis keys and a database of their own (test_bad_input.py's)."""
    sample_stock(own_namespace)
    yield own_namespace


def landed(client: Any, database: str, run: int) -> dict[str, int] | None:
    db = quote_ident(database)
    orders = client.execute(
        f"SELECT uniqExact(external_id) FROM {db}.orders WHERE external_id LIKE %(run)s",
        {"run": f"{run}1%"},
    )[0][0]
    dlq = client.execute(f"SELECT uniqExact(dlq_id) FROM {db}.dlq")[0][0]
    wanted = len(CHANNELS)
    return {"orders": orders, "dlq": dlq} if orders >= wanted and dlq >= 3 * wanted else None


def test_no_personal_data_in_any_clickhouse_column(pii_namespace: Settings) -> None:
    settings = pii_namespace
    run = 700000 + secrets.randbelow(100000)
    tag = f"{run:x}"
    people = {c: Person.make(c, tag, i) for i, c in enumerate(CHANNELS)}
    sent = asyncio.run(produce(settings, records(settings, people, run)))
    assert sent == 4 * len(CHANNELS)

    client = connect(settings)
    try:
        counts = wait_for(lambda: landed(client, settings.clickhouse_database, run), timeout=120)
        assert counts, "the orders and DLQ records did not all land in ClickHouse"

        # After-sales on the own-shop order: a new address full of personal data, and a return
        # whose written reason names the buyer (refused: nothing shipped, yet recorded).
        own = people["own"]
        ref = f"own:{external_id('own', run, 1)}"
        new = Address(
            country="CN",
            province="湖北省",
            province_code="HB",
            city="武汉市",
            district="江汉区",
            street=f"{own.street} {own.detail}",
            name=own.name,
            phone=own.phone,
        )
        for kind, fields in (
            (AfterSalesKind.ADDRESS_CHANGE, {"new_address": new}),
            (AfterSalesKind.RETURN, {"reason": f"{own.name} {own.phone} {own.email}"}),
        ):
            asyncio.run(
                submit_aftersales(settings, ref, kind, requested_by="cs-pii-test", **fields)
            )
        db = quote_ident(settings.clickhouse_database)
        assert wait_for(
            lambda: client.execute(f"SELECT count() FROM {db}.aftersales_requests")[0][0] >= 2,
            timeout=60,
        )

        leaks = []
        columns = string_columns(client, settings.clickhouse_database)
        assert {"orders", "order_events", "dlq", "aftersales_requests"} <= {
            t for t, _, _ in columns
        }
        for table, column, _ in columns:
            text = column_text(client, settings.clickhouse_database, table, column)
            leaks += [
                (table, column, needle)
                for person in people.values()
                for needle in person.needles()
                if needle in text
            ]
        assert not leaks, leaks

        # Region-level fields stay for analysis.
        regions = client.execute(
            f"SELECT channel, country, province_code, city FROM {db}.orders "
            "WHERE external_id LIKE %(run)s",
            {"run": f"{run}1%"},
        )
        by_channel = {channel: (country, code, city) for channel, country, code, city in regions}
        assert set(by_channel) == set(CHANNELS)
        for channel, (country, code, city) in by_channel.items():
            assert country and code, channel
            assert city == CITIES[channel], channel
        changed = client.execute(
            f"SELECT new_province_code, new_city FROM {db}.aftersales_requests"
        )
        assert ("HB", "武汉市") in changed
    finally:
        client.disconnect()
