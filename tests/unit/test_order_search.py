"""Finding orders in the facts (analytics/search.py): the phone's search parts, the checks of
a search, and the query itself on current ClickHouse (chdb, through the real sink)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.facts import COLUMNS, ORDERS, phone_keys, rows_for
from analytics.search import (
    MAX_SEARCH_LIMIT,
    OrderSearch,
    SearchError,
    order_search,
    search_orders,
)
from core.privacy import MAX_PHONE_CHARS, PhoneParts, phone_parts
from streams.messages import EventKind, OrderState, WmsEvent, WmsEventKind
from streams.models import Address, Buyer, Order
from tests.analytics_scenario import T0, make_event, make_order
from tests.unit.test_chdb_compat import ChdbClient, db, session, sink_for  # noqa: F401

SALT = "oms-analytics-buyer-v1"  # the sink's default (no OMS_ANALYTICS_SALT in these tests)

# --- a phone's search parts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "parts"),
    [
        ("13800138000", PhoneParts("13800138000", "138|8000")),
        ("+86 138-0013-8000", PhoneParts("13800138000", "138|8000")),
        ("0086 13800138000", PhoneParts("13800138000", "138|8000")),
        ("１３８００１３８０００", PhoneParts("13800138000", "138|8000")),
        ("138****8000", PhoneParts("", "138|8000")),
        ("+86 138*****8000", PhoneParts("", "138|8000")),
    ],
)
def test_plain_and_masked_phones_meet_on_their_3_and_4_digits(
    phone: str, parts: PhoneParts
) -> None:
    assert phone_parts(phone) == parts


@pytest.mark.parametrize(
    "phone",
    [
        "",
        "123",
        "138**8*8000",  # a mask that keeps other digits
        "13****8000",
        "138****800",
        "#MTM4MDAxMzgwMDA=abcdefghij#1##",  # Douyin ciphertext
        "A" * 40,  # bare base64-like ciphertext
        "1" * (MAX_PHONE_CHARS + 1),
    ],
)
def test_what_a_phone_cannot_be_found_by(phone: str) -> None:
    assert phone_parts(phone) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789*+- #abcXYZ١٢３"), max_size=200))
def test_any_text_gives_parts_of_its_digits_or_none(text: str) -> None:
    parts = phone_parts(text)
    if parts is None:
        return
    head, tail = parts.partial.split("|")
    assert len(head) == 3 and len(tail) == 4 and (head + tail).isascii()
    assert (head + tail).isdigit() and (not parts.full or parts.full.isdigit())


def test_phone_parts_stay_fast_on_hostile_input() -> None:
    started = time.perf_counter()
    for text in ("*" * 100_000, "1" * 100_000, "1*" * 50_000, "#" + "A" * 100_000):
        assert phone_parts(text) is None
    assert time.perf_counter() - started < 1.0


def test_phone_keys_never_hold_the_number() -> None:
    full, partial = phone_keys("13800138000", SALT)
    assert full and partial and "13800138000" not in full + partial and "8000" not in partial
    assert phone_keys("138****8000", SALT) == ("", partial)
    assert phone_keys("#MTM4MDAxMzgwMDA=abcdefghij#1##", SALT) == ("", "")
    assert phone_keys("13800138000", "another salt")[1] != partial


def test_the_orders_row_carries_the_phone_keys() -> None:
    order = make_order("own", "P1", [("1", "A", 1, "10", "10")], total="10")
    rows = rows_for([make_event(order, 1, EventKind.RECEIVED, OrderState.RECEIVED, snapshot=order)])
    row = dict(zip(COLUMNS[ORDERS], rows[ORDERS][0], strict=True))
    assert (row["phone_hash"], row["phone_key"]) == phone_keys("13800000000", SALT)


# --- the checks of a search ----------------------------------------------------------------


def test_a_search_needs_a_filter_and_bounds() -> None:
    assert order_search(sku="SKU-A").sku == "SKU-A"
    bad: list[dict[str, Any]] = [
        {},
        {"sku": "   "},
        {"sku": "a b"},
        {"sku": "x" * 200},
        {"buyer": "b\x00"},
        {"phone": "#MTM4MDAxMzgwMDA=abcdefghij#1##"},
        {"phone": "12"},
        {"phone": "138**8*8000"},
        {"shop": "nowhere/shop1"},
        {"since": datetime(2026, 1, 1)},  # naive
        {"since": T0, "until": T0},
        {"sku": "A", "limit": 0},
        {"sku": "A", "limit": MAX_SEARCH_LIMIT + 1},
    ]
    for given_args in bad:
        with pytest.raises(SearchError):
            order_search(**given_args)


def test_an_encrypted_phone_is_refused_saying_why() -> None:
    with pytest.raises(SearchError, match="encrypted"):
        order_search(phone="#MTM4MDAxMzgwMDA=abcdefghij#1##")


# --- the query on current ClickHouse -------------------------------------------------------


def customer_order(
    ext: str,
    *,
    sku: str = "A",
    phone: str = "13800138000",
    buyer: str = "b1",
    shop: str = "shop1",
    hours: int = 0,
) -> Order:
    order = make_order(
        "own", ext, [("1", sku, 1, "10", "10")], total="10", created=T0 + timedelta(hours=hours)
    )
    return order.model_copy(
        update={
            "shop_id": shop,
            "buyer": Buyer(id=buyer),
            "address": Address(province_code="ZJ", city="Hangzhou", phone=phone),
        }
    )


def received(order: Order) -> Any:
    return make_event(order, 1, EventKind.RECEIVED, OrderState.RECEIVED, snapshot=order)


def shipped(order: Order, tracking: str) -> WmsEvent:
    return WmsEvent(
        event_id=f"W-{order.order_id}",
        command_id=f"C-{order.order_id}",
        order_id=order.order_id,
        kind=WmsEventKind.SHIPPED,
        warehouse="WH-SH",
        carrier="SF",
        tracking_number=tracking,
        at=order.created_at + timedelta(hours=1),
    )


ORDERS_FOUND = {
    "plain": customer_order("S1", hours=1),
    "masked": customer_order("S2", phone="138****8000", hours=2),
    "encrypted": customer_order("S3", phone="#MTM4MDAxMzgwMDA=abcdefghij#1##", hours=3),
    "other": customer_order("S4", sku="B", phone="13900139000", buyer="b2", hours=4),
    "other_shop": customer_order("S5", shop="shop2", hours=5),
}


async def loaded(db: ChdbClient) -> dict[str, str]:  # noqa: F811
    facts: list[Any] = [received(o) for o in ORDERS_FOUND.values()]
    facts.append(shipped(ORDERS_FOUND["other"], "SF1234567890"))
    sink = sink_for(db)
    await sink.write(facts)
    await sink.write(facts)  # a replay: still one row per order
    return {o.order_id: name for name, o in ORDERS_FOUND.items()}


def found(db: ChdbClient, names: dict[str, str], **given_args: Any) -> list[str]:  # noqa: F811
    shops = given_args.pop("shops", None)
    rows = search_orders(db, db.database, order_search(**given_args), SALT, shops)
    return [names[r["order_id"]] for r in rows]


async def test_search_by_each_filter_newest_first(db: ChdbClient) -> None:  # noqa: F811
    names = await loaded(db)
    # the plain number finds itself and the masked form with its digits; never the encrypted
    assert found(db, names, phone="+86 138 0013 8000") == ["other_shop", "masked", "plain"]
    assert found(db, names, phone="138****8000") == ["other_shop", "masked", "plain"]
    assert found(db, names, phone="13900139000") == ["other"]
    assert found(db, names, buyer="b2") == ["other"]
    assert found(db, names, sku="B") == ["other"]
    assert found(db, names, tracking="SF1234567890") == ["other"]
    assert found(db, names, tracking="SF0") == []
    window = {"since": T0 + timedelta(hours=2), "until": T0 + timedelta(hours=4)}
    assert found(db, names, **window) == ["encrypted", "masked"]
    assert found(db, names, sku="A", shop="own/shop2") == ["other_shop"]
    assert found(db, names, buyer="b1", limit=2) == ["other_shop", "encrypted"]


async def test_search_keeps_to_the_token_s_shops(db: ChdbClient) -> None:  # noqa: F811
    names = await loaded(db)
    assert found(db, names, buyer="b1", shops=frozenset({"shop2"})) == ["other_shop"]
    assert found(db, names, buyer="b2", shops=frozenset({"shop2"})) == []


async def test_search_rows_hold_no_personal_data(db: ChdbClient) -> None:  # noqa: F811
    await loaded(db)
    rows = search_orders(db, db.database, OrderSearch(buyer="b1"), SALT)
    text = repr(rows)
    assert "13800138000" not in text and "b1'" not in text and "Hangzhou" not in text
    assert rows[0]["created_at"] == (T0 + timedelta(hours=5)).astimezone(UTC).isoformat()
    dump = repr(db.execute("SELECT * FROM orders"))
    assert "13800138000" not in dump and "8000" not in dump.replace("'", " ").split()


def test_a_search_over_the_read_budget_says_to_narrow_it() -> None:
    class OverBudget(Exception):
        code = 158

    class Refusing:
        def execute(self, query: str, params: Any = None, **kwargs: Any) -> Any:
            assert kwargs["settings"]["read_overflow_mode"] == "throw"
            raise OverBudget("Limit for rows to read exceeded")

    with pytest.raises(SearchError, match="narrow it"):
        search_orders(Refusing(), "oms", OrderSearch(sku="A"), SALT)
