"""The load generator: deterministic, realistic, and its bookkeeping is what the OMS computes."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path

import orjson
import pytest

from ops import loadgen
from ops.loadgen import (
    CHANNEL_MIX,
    DEFAULT_CATALOGUE,
    SCALPER_EXTRA,
    SHOP_HEADER,
    SHOP_HEADERS,
    BurstMessage,
    BurstPlan,
    generate_burst,
    iter_burst,
)
from order.audit import (
    DEFAULT_RULES,
    DEMO_BLACKLISTED_PHONE,
    AuditContext,
    Velocity,
    Verdict,
    audit,
    normalise_phone,
)
from state.velocity import address_digest, buyer_digest
from streams.channels import AdapterContext, AdapterError, adapt
from streams.keys import channel_order_key
from streams.messages import DlqReason
from streams.models import Order, PaymentStatus
from streams.regions import PROVINCES

NOW = datetime(2024, 11, 10, 16, 5, tzinfo=UTC)  # Beijing 2024-11-11 00:05, Double 11
STOCK = Path(__file__).resolve().parents[2] / "samples" / "stock.csv"
SKUS = frozenset(sku for sku, _ in DEFAULT_CATALOGUE)
# Busy enough that every kind of message shows up many times in a few hundred orders.
BUSY = {"duplicate_rate": 0.1, "malformed_rate": 0.1, "unpaid_rate": 0.1, "incomplete_rate": 0.1}


@cache
def busy_plan() -> BurstPlan:
    return generate_burst(800, seed=5, run_id="busy", now=NOW, **BUSY)


@cache
def demo_plan() -> BurstPlan:
    return generate_burst(3000, now=NOW, adapt_check=False)  # the busy plan checks bookkeeping


@cache
def adapted(which: str) -> list[tuple[BurstMessage, Order]]:
    """Every distinct valid order of a plan with what the adapter makes of it."""
    plan = busy_plan() if which == "busy" else demo_plan()
    return [(m, to_order(m)) for m in plan.messages if m.kind == "order"]


def to_order(message: BurstMessage) -> Order:
    """What streams.normalise does: the shop header (if any) goes into the adapter context."""
    shop = dict(message.headers).get(SHOP_HEADER, b"").decode()
    return adapt(message.channel, message.value, AdapterContext(shop_id=shop))


def test_deterministic_for_a_seed() -> None:
    first = generate_burst(300, now=NOW, **BUSY)
    again = generate_burst(300, now=NOW, **BUSY)
    assert first == again
    other = generate_burst(300, seed=12, now=NOW, **BUSY)
    assert [m.value for m in other.messages] != [m.value for m in first.messages]


def test_iter_burst_yields_the_same_messages() -> None:
    plan = busy_plan()
    streamed = list(iter_burst(800, seed=5, run_id="busy", now=NOW, **BUSY))
    assert streamed == plan.messages


def test_counts_add_up() -> None:
    plan = busy_plan()
    kinds = Counter(m.kind for m in plan.messages)
    assert plan.orders == kinds["order"] == 800
    assert plan.duplicates == kinds["duplicate"] > 40
    assert plan.malformed == kinds["malformed"] > 40
    assert set(kinds) == {"order", "duplicate", "malformed"}
    assert sum(plan.by_channel.values()) == plan.orders


def test_every_order_and_duplicate_adapts_and_every_malformed_one_is_refused() -> None:
    reasons: Counter[DlqReason] = Counter()
    for message in busy_plan().messages:
        if message.kind == "malformed":
            with pytest.raises(AdapterError) as caught:
                to_order(message)
            reasons[caught.value.reason] += 1
        else:
            order = to_order(message)
            assert order.external_id == message.key.decode()  # type: ignore[union-attr]
    assert set(reasons) == {
        DlqReason.MALFORMED_JSON,
        DlqReason.MISSING_FIELD,
        DlqReason.INVALID_FIELD,
        DlqReason.INVALID_UTF8,
        DlqReason.NOT_AN_OBJECT,
    }


def test_keys_are_the_channel_order_ids() -> None:
    for message in busy_plan().messages:
        try:
            payload = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            assert message.key is None
            continue
        expected = channel_order_key(message.channel, payload)
        assert message.key == (expected.encode() if expected else None)
        if message.kind != "malformed":
            assert message.key


def test_headers_pin_the_shop_of_shopify_and_amazon() -> None:
    for message in busy_plan().messages:
        if message.channel in SHOP_HEADERS:
            assert message.headers == [(SHOP_HEADER, SHOP_HEADERS[message.channel].encode())]
        else:
            assert message.headers == []
    shops = {order.shop_id for m, order in adapted("busy") if m.channel in SHOP_HEADERS}
    assert shops == set(SHOP_HEADERS.values())


def test_bookkeeping_equals_what_the_adapters_compute() -> None:
    plan = busy_plan()
    gmv, units, by_channel = Decimal(0), Counter[str](), Counter[str]()
    for _, order in adapted("busy"):
        gmv += order.payment.paid_total
        units.update(order.quantity_by_sku)
        by_channel[order.channel.value] += 1
    assert plan.gmv == gmv > 0
    assert plan.units_by_sku == dict(units)
    assert plan.by_channel == dict(by_channel)

    # The generator's own bookkeeping (what the bench uses, without adapters) agrees.
    unchecked = generate_burst(800, seed=5, run_id="busy", now=NOW, adapt_check=False, **BUSY)
    assert unchecked == plan


def test_duplicates_repeat_the_bytes_of_an_earlier_order_a_little_later() -> None:
    messages = busy_plan().messages
    first_seen: dict[tuple[str, bytes], int] = {}
    repeated: set[tuple[str, bytes]] = set()
    for position, message in enumerate(messages):
        assert message.key is not None or message.kind == "malformed"
        ident = (message.channel, message.key or b"")
        if message.kind == "order":
            assert ident not in first_seen, "two distinct orders share an id"
            first_seen[ident] = position
        elif message.kind == "duplicate":
            assert ident in first_seen
            original = messages[first_seen[ident]]
            assert message.value == original.value and message.headers == original.headers
            assert 0 < position - first_seen[ident] <= 250
            assert ident not in repeated
            repeated.add(ident)


def simulated_velocity(orders: Iterable[Order], window_s: float) -> dict[str, Velocity]:
    """What state/velocity.record_recent counts, without Redis: per buyer and per address
    (the same digests), the orders created within the window that ends at each order."""
    created: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
    keyed = []
    for order in orders:
        ident = {"buyer": buyer_digest(order), "address": address_digest(order)}
        for kind, digest in ident.items():
            if digest:
                created[kind, digest].append(order.created_at.timestamp())
        keyed.append((order, ident))

    def count(kind: str, digest: str, at: float) -> int:
        return sum(at - window_s <= t <= at for t in created[kind, digest]) if digest else 0

    return {
        order.order_id: Velocity(
            **{kind: count(kind, d, order.created_at.timestamp()) for kind, d in ident.items()}
        )
        for order, ident in keyed
    }


def judged(orders: list[Order]) -> Counter[str]:
    """Reason code (or 'pass') -> orders, as the shipped rules judge them in one stream."""
    velocity = simulated_velocity(orders, DEFAULT_RULES.scalper.window_s)
    ctx = AuditContext(known_skus=SKUS, velocity=velocity)
    return Counter(audit(order, ctx).reason or "pass" for order in orders)


def audit_plan(which: str) -> Counter[str]:
    return judged([order for _, order in adapted(which)])


def test_audit_verdicts_match_the_plan() -> None:
    plan = busy_plan()
    verdicts = audit_plan("busy")
    expected = Counter(
        {"unpaid": plan.unpaid, "address_incomplete": plan.incomplete_address, **plan.flagged}
    )
    expected["pass"] = plan.orders - sum(expected.values())
    assert verdicts == expected
    assert plan.unpaid > 40 and plan.incomplete_address > 40
    assert set(plan.flagged) == {
        "blacklisted",
        "remark_review",
        "price_below_list",
        "scalper_suspected",
    }
    assert plan.flagged["scalper_suspected"] == 2 * SCALPER_EXTRA


def test_only_the_blacklist_rejects_and_unpaid_orders_are_unpaid() -> None:
    ctx = AuditContext(known_skus=SKUS)
    for _, order in adapted("busy"):
        result = audit(order, ctx)
        if result.verdict is Verdict.REJECT:
            assert result.reason == "blacklisted"
            phones = {normalise_phone(order.address.phone), normalise_phone(order.buyer.phone)}
            assert DEMO_BLACKLISTED_PHONE in phones
        if result.reason == "unpaid":
            assert order.payment.status is PaymentStatus.UNPAID
            assert order.payment.paid_total == 0


def test_the_demo_burst_mostly_passes_and_shows_every_new_rule() -> None:
    plan = demo_plan()
    verdicts = audit_plan("demo")
    assert verdicts["pass"] > 0.9 * plan.orders
    flagged = sum(plan.flagged.values())
    assert 0.005 * plan.orders < flagged < 0.03 * plan.orders
    for reason in ("blacklisted", "remark_review", "price_below_list", "scalper_suspected"):
        assert verdicts[reason] == plan.flagged[reason] > 0, reason


def test_scalper_bursts_are_one_buyer_and_one_address() -> None:
    orders = [order for _, order in adapted("busy")]
    by_buyer = Counter(buyer_digest(o) for o in orders if buyer_digest(o))
    by_address = Counter(address_digest(o) for o in orders if address_digest(o))
    (buyer, buyer_orders), (_, runner_up) = by_buyer.most_common(2)
    assert buyer_orders == DEFAULT_RULES.scalper.max_orders_per_buyer + SCALPER_EXTRA
    assert runner_up <= 2  # everyone else is an ordinary buyer
    address, address_orders = by_address.most_common(1)[0]
    assert address_orders == DEFAULT_RULES.scalper.max_orders_per_address + SCALPER_EXTRA
    burst = [o for o in orders if address_digest(o) == address]
    assert {o.channel.value for o in burst} == {"taobao", "own"}  # counted across channels
    assert len({buyer_digest(o) for o in burst}) == len(burst)  # a new account each time
    created = sorted(o.created_at for o in burst)
    assert created[-1] - created[0] < timedelta(minutes=2)
    assert len(set(created)) == len(created)  # strictly one after another
    assert all(o.channel.value == "taobao" for o in orders if buyer_digest(o) == buyer)


def test_flagged_orders_carry_what_trips_their_rule() -> None:
    ctx = AuditContext(known_skus=SKUS)
    seen: Counter[str] = Counter()
    for _, order in adapted("busy"):
        reason = audit(order, ctx).reason
        seen[reason] += 1
        if reason == "price_below_list":
            first = order.lines[0]
            assert first.paid_amount <= first.unit_price * first.quantity / 10
        elif reason == "remark_review":
            assert order.buyer_remark and order.channel.value != "amazon"
        elif reason == "blacklisted":
            assert order.channel.value != "douyin"  # its phones are encrypted
    assert all(seen[kind] > 0 for kind in ("price_below_list", "remark_review", "blacklisted"))


def test_flagged_orders_shift_no_other_order() -> None:
    plain = generate_burst(
        800, seed=5, run_id="busy", now=NOW, flagged_rate=0, scalper_bursts=0, **BUSY
    )
    busy = busy_plan()
    assert plain.flagged == {}
    assert [m.kind for m in plain.messages] == [m.kind for m in busy.messages]
    pairs = list(zip(plain.messages, busy.messages, strict=True))
    changed_orders = sum(p != b for p, b in pairs if p.kind == "order")
    rule = DEFAULT_RULES.scalper
    scalper_members = rule.max_orders_per_buyer + rule.max_orders_per_address + 2 * SCALPER_EXTRA
    singles = sum(busy.flagged.values()) - busy.flagged["scalper_suspected"]
    assert changed_orders == singles + scalper_members
    assert all(p == b for p, b in pairs if p.kind == "malformed")


def test_no_flagged_orders_when_asked_for_none() -> None:
    plan = generate_burst(800, seed=5, run_id="busy", now=NOW, flagged_rate=0, scalper_bursts=0)
    assert plan.flagged == {}
    verdicts = judged([to_order(m) for m in plan.messages if m.kind == "order"])
    assert verdicts == {
        "pass": plan.orders - plan.unpaid - plan.incomplete_address,
        "unpaid": plan.unpaid,
        "address_incomplete": plan.incomplete_address,
    }


def test_small_bursts_have_no_scalper_bursts() -> None:
    assert "scalper_suspected" not in generate_burst(150, now=NOW, flagged_rate=0.1).flagged


def test_ids_have_each_platform_shape() -> None:
    shapes = {
        "taobao": r"\d{19}",
        "jd": r"\d{12,19}",
        "douyin": r"\d{19}",
        "shopify": r"\d{13,16}",
        "amazon": r"\d{3}-\d{7}-\d{7}",
        "own": r"W\d{7}-\d{9}",
    }
    for message in busy_plan().messages:
        if message.kind == "order":
            assert message.key is not None
            assert re.fullmatch(shapes[message.channel], message.key.decode()), message.key
            if message.channel == "shopify":
                assert int(message.key) < 2**53  # JavaScript clients read it exactly
                assert isinstance(orjson.loads(message.value)["id"], int)


def test_run_ids_keep_runs_apart() -> None:
    def keys(run_id: str) -> set[bytes | None]:
        return {m.key for m in iter_burst(300, run_id=run_id, now=NOW) if m.kind == "order"}

    first, second = keys("20241111000000"), keys("20241111000100")
    assert len(first) == len(second) == 300
    assert not first & second


def test_times_are_recent_and_in_each_platform_format() -> None:
    orders = [order for _, order in adapted("busy")]
    for order in orders:
        assert NOW - timedelta(minutes=5) <= order.created_at <= NOW
        assert order.created_at <= order.updated_at <= NOW
        if order.payment.paid_at is not None:
            assert order.created_at <= order.payment.paid_at <= NOW
    created = [o.created_at for o in orders]
    assert created[-1] - created[0] > timedelta(minutes=3)  # spread over the burst

    raw = {m.channel: orjson.loads(m.value) for m in busy_plan().messages if m.kind == "order"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", raw["taobao"]["created"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", raw["jd"]["orderStartTime"])
    assert isinstance(raw["douyin"]["create_time"], int)
    assert raw["shopify"]["created_at"].endswith("+08:00")
    assert raw["amazon"]["PurchaseDate"].endswith("Z")


def test_amounts_in_native_units() -> None:
    for message, order in adapted("busy"):
        payload = orjson.loads(message.value)
        if message.channel == "douyin":  # fen
            assert payload["pay_amount"] == int(order.total * 100)
            assert (
                sum(s["pay_amount"] for s in payload["sku_order_list"]) + payload["post_amount"]
                == payload["pay_amount"]
            )
        elif message.channel == "taobao":
            assert Decimal(payload["payment"]) == order.total
        # every channel: lines + shipping = total, discounts never negative
        paid = sum((line.paid_amount for line in order.lines), Decimal(0))
        assert paid + order.shipping_fee == order.total
        assert all(line.discount >= 0 and line.paid_amount > 0 for line in order.lines)


def test_lines_are_distinct_skus_with_small_quantities() -> None:
    quantities: Counter[int] = Counter()
    line_counts: Counter[int] = Counter()
    discounted = shipped = orders = 0
    for _, order in adapted("demo"):
        orders += 1
        skus = [line.sku for line in order.lines]
        assert len(skus) == len(set(skus)) and 1 <= len(skus) <= 3
        line_counts[len(skus)] += 1
        quantities.update(line.quantity for line in order.lines)
        discounted += order.discount_total > 0
        shipped += order.shipping_fee > 0
    assert set(quantities) <= {1, 2, 3}
    assert quantities[1] > 0.7 * sum(quantities.values())
    assert line_counts[1] > line_counts[2] > line_counts[3] > 0
    assert 0.2 * orders < discounted < 0.8 * orders
    assert 0.02 * orders < shipped < 0.4 * orders


def test_channel_mix_is_a_chinese_peak_sale() -> None:
    plan = demo_plan()
    for channel, share in CHANNEL_MIX.items():
        assert abs(plan.by_channel[channel] / plan.orders - share) < 0.03, channel


def test_hot_skus_sell_out_the_sample_stock_and_the_rest_do_not() -> None:
    stock: Counter[str] = Counter()
    with STOCK.open(newline="") as fh:
        for row in csv.DictReader(fh):
            stock[row["sku"]] += int(row["qty"])
    units = demo_plan().units_by_sku
    assert units["SKU-EARBUD-A2"] == max(units.values())
    assert units["SKU-EARBUD-A2"] > stock["SKU-EARBUD-A2"]
    assert units["SKU-PHONE-X1"] > stock["SKU-PHONE-X1"]
    for sku in SKUS - {"SKU-EARBUD-A2", "SKU-PHONE-X1"}:
        assert units[sku] < stock[sku], sku
    top_two = sorted(units, key=units.__getitem__, reverse=True)[:2]
    assert set(top_two) == {"SKU-EARBUD-A2", "SKU-PHONE-X1"}


def test_addresses_cover_china_weighted_by_volume() -> None:
    mainland = set(PROVINCES) - {"HK", "MO", "TW"}
    assert {code for code, _, _ in loadgen._GEO} == mainland  # all 31 are possible
    provinces: Counter[str] = Counter()
    for message, order in adapted("demo"):
        address = order.address
        if address.province:
            assert address.province_code in mainland
            assert address.city
            assert address.district or message.channel == "shopify"  # no district field
        provinces[address.province_code] += 1
    big = sum(provinces[c] for c in ("GD", "ZJ", "JS", "SH", "BJ", "SD", "SC"))
    assert provinces.most_common(1)[0][0] == "GD"
    assert big > 0.5 * sum(provinces.values())
    assert provinces["XZ"] + provinces["QH"] < 0.01 * sum(provinces.values())
    assert len(provinces) > 25


def test_custom_catalogue() -> None:
    catalogue = [("SKU-A", Decimal("12.50")), ("SKU-B", Decimal("3")), ("SKU-C", Decimal("80"))]
    plan = generate_burst(200, now=NOW, catalogue=catalogue)
    assert set(plan.units_by_sku) == {"SKU-A", "SKU-B", "SKU-C"}
    assert plan.units_by_sku["SKU-A"] > plan.units_by_sku["SKU-C"]
    one = generate_burst(50, now=NOW, catalogue=[("ONLY", Decimal("9.99"))])
    assert set(one.units_by_sku) == {"ONLY"}


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_burst(-1)
    with pytest.raises(ValueError):
        generate_burst(10, duplicate_rate=1.5)
    with pytest.raises(ValueError):
        generate_burst(10, unpaid_rate=0.6, incomplete_rate=0.6)
    with pytest.raises(ValueError):
        generate_burst(10, catalogue=[("X", Decimal("1.001"))])
    with pytest.raises(ValueError):
        generate_burst(10, now=datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        generate_burst(10, flagged_rate=1.5)
    with pytest.raises(ValueError):
        generate_burst(10, scalper_bursts=-1)
    assert generate_burst(0).messages == []


def test_separate_runs_have_other_buyers_and_addresses() -> None:
    """Two demo runs within the scalper window must not look like the same buyers again."""

    def people(run_id: str) -> tuple[set[str], set[str]]:
        plan = generate_burst(300, run_id=run_id, now=NOW, flagged_rate=0, scalper_bursts=0)
        orders = [to_order(m) for m in plan.messages if m.kind == "order"]
        return {buyer_digest(o) for o in orders}, {address_digest(o) for o in orders}

    (buyers_a, places_a), (buyers_b, places_b) = people("run-a"), people("run-b")
    assert len(buyers_a & buyers_b) <= 3 and len(places_a & places_b) <= 3
    assert people("run-a") == (buyers_a, places_a)  # still deterministic per run
