"""Gift promotions (order/promotions.py): the shipped config/promotions.toml, rule semantics
(buy X get Y, amount over N, shop scope, window at the order's created_at, gifts never earn
gifts) and files that must be refused."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from order.promotions import (
    PromotionConfigError,
    Promotions,
    gift_lines,
    load_promotions,
)
from streams.models import (
    Address,
    Buyer,
    Channel,
    ChannelStatus,
    Order,
    OrderLine,
    Payment,
    PaymentStatus,
    make_order_id,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "promotions.toml"
T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
PRICES = {"SKU-PHONE-X1": "3999.00", "SKU-CASE-C3": "59.00", "SKU-TEA-LONGJING": "268.00"}


def line(sku: str, quantity: int = 1, paid: str | None = None, *, gift: bool = False) -> OrderLine:
    price = Decimal(PRICES.get(sku, "10.00"))
    amount = Decimal(0) if gift else Decimal(paid) if paid else price * quantity
    return OrderLine(
        line_id=f"L-{sku}-{quantity}-{gift}",
        sku=sku,
        quantity=quantity,
        unit_price=Decimal(0) if gift else price,
        paid_amount=amount,
        is_gift=gift,
    )


def order(
    *lines: OrderLine,
    channel: Channel = Channel.OWN,
    shop: str = "own-web",
    at: datetime = T0,
    currency: str = "CNY",
) -> Order:
    paid = sum((ln.paid_amount for ln in lines), Decimal(0))
    return Order(
        order_id=make_order_id(channel.value, shop, "E1"),
        channel=channel,
        shop_id=shop,
        external_id="E1",
        channel_status=ChannelStatus.PAID,
        created_at=at,
        updated_at=at,
        currency=currency,
        buyer=Buyer(),
        address=Address(province_code="SH", city="c", street="s"),
        lines=list(lines),
        payment=Payment(status=PaymentStatus.PAID, paid_total=paid),
        total=paid,
    )


def gifts(o: Order, promotions: Promotions) -> list[tuple[str, str, int]]:
    return [(g.line_id, g.sku, g.quantity) for g in gift_lines(o, promotions)]


@pytest.fixture(scope="module")
def shipped() -> Promotions:
    return load_promotions(CONFIG)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "promotions.toml"
    path.write_text(text, encoding="utf-8")
    return path


def promotions(tmp_path: Path, *rules: str) -> Promotions:
    return load_promotions(write(tmp_path, "".join(f"[[promotions]]\n{r}\n" for r in rules)))


# --- the shipped config -------------------------------------------------------------------


def test_shipped_gifts_are_stocked_sample_skus(shipped: Promotions) -> None:
    with (ROOT / "samples" / "stock.csv").open(newline="") as fh:
        stocked = {row["sku"] for row in csv.DictReader(fh)}
    assert {r.gift_sku for r in shipped.promotions} <= stocked
    assert len(shipped.promotions) >= 2


def test_shipped_phone_gets_a_case_and_the_sticker(shipped: Promotions) -> None:
    assert gifts(order(line("SKU-PHONE-X1")), shipped) == [
        ("GIFT-X1-CASE", "SKU-CASE-C3", 1),
        ("GIFT-OVER500-STICKER", "SKU-GIFT-STICKER", 1),
    ]
    assert gifts(order(line("SKU-PHONE-X1", 5)), shipped)[0] == ("GIFT-X1-CASE", "SKU-CASE-C3", 3)


def test_shipped_small_order_gets_nothing(shipped: Promotions) -> None:
    assert gift_lines(order(line("SKU-CASE-C3", 2)), shipped) == []


def test_shipped_double_11_tea_is_for_the_tmall_store_on_the_day(shipped: Promotions) -> None:
    d11 = datetime(2026, 11, 11, 10, tzinfo=UTC)
    tea = line("SKU-TEA-LONGJING", 4, "400.00")  # below 500: only the tea rule can apply
    tmall = {"channel": Channel.TAOBAO, "shop": "极客数码旗舰店"}
    assert gifts(order(tea, at=d11, **tmall), shipped) == [
        ("GIFT-D11-TEA-TOTE", "SKU-GIFT-TOTE", 2)
    ]
    assert gifts(order(tea, at=d11 + timedelta(days=1), **tmall), shipped) == []
    assert gifts(order(tea, at=d11), shipped) == []  # own shop


# --- rule semantics -----------------------------------------------------------------------

BUY = 'id = "B"\nkind = "buy"\nsku = "SKU-A"\ngift_sku = "SKU-G"'
AMOUNT = 'id = "M"\nkind = "amount"\nmin_amount = "100"\ncurrency = "CNY"\ngift_sku = "SKU-H"'


def test_gift_line_shape(tmp_path: Path) -> None:
    (gift,) = gift_lines(order(line("SKU-A")), promotions(tmp_path, BUY + '\ntitle = "free"'))
    assert gift == OrderLine(
        line_id="GIFT-B",
        sku="SKU-G",
        title="free",
        quantity=1,
        unit_price=Decimal(0),
        paid_amount=Decimal(0),
        is_gift=True,
    )


@pytest.mark.parametrize(
    ("extra", "bought", "expected"),
    [
        ("", 1, 1),
        ("", 7, 1),  # once per order without per_multiple
        ("min_quantity = 3", 2, 0),
        ("min_quantity = 3", 3, 1),
        ("min_quantity = 3\nper_multiple = true", 8, 2),
        ("min_quantity = 2\nper_multiple = true\ngift_quantity = 3", 5, 6),
        ("per_multiple = true\nmax_gift_quantity = 4", 9, 4),
    ],
)
def test_buy_x_get_y(tmp_path: Path, extra: str, bought: int, expected: int) -> None:
    rules = promotions(tmp_path, f"{BUY}\n{extra}")
    got = gifts(order(line("SKU-A", bought)), rules)
    assert got == ([("GIFT-B", "SKU-G", expected)] if expected else [])


def test_lines_of_one_sku_add_up(tmp_path: Path) -> None:
    rules = promotions(tmp_path, BUY + "\nmin_quantity = 3")
    assert gifts(order(line("SKU-A", 1), line("SKU-A", 2)), rules) == [("GIFT-B", "SKU-G", 1)]


@pytest.mark.parametrize(
    ("paid", "currency", "earns"),
    [("100.00", "CNY", True), ("99.99", "CNY", False), ("500", "USD", False), ("100", "cny", True)],
)
def test_amount_over_n(tmp_path: Path, paid: str, currency: str, earns: bool) -> None:
    o = order(line("SKU-X", 1, paid), currency=currency)
    assert bool(gift_lines(o, promotions(tmp_path, AMOUNT))) is earns


def test_a_gift_never_earns_a_gift(tmp_path: Path) -> None:
    """The channel's own free lines count neither as bought units nor as paid amount, and the
    gifts added here are not fed back (buy SKU-G gets SKU-G does not cascade)."""
    rules = promotions(
        tmp_path,
        BUY.replace('sku = "SKU-A"', 'sku = "SKU-G"').replace('"B"', '"GG"'),
        AMOUNT,
    )
    free_g = line("SKU-G", 5, gift=True)
    assert gift_lines(order(free_g), rules) == []
    assert gifts(order(line("SKU-G")), rules) == [("GIFT-GG", "SKU-G", 1)]


def test_shop_scope(tmp_path: Path) -> None:
    rules = promotions(tmp_path, BUY + '\nshops = ["jd/10086123", "douyin/*"]')
    a = line("SKU-A")
    assert gift_lines(order(a, channel=Channel.JD, shop="10086123"), rules)
    assert not gift_lines(order(a, channel=Channel.JD, shop="999"), rules)
    assert gift_lines(order(a, channel=Channel.DOUYIN, shop="any"), rules)
    assert not gift_lines(order(a), rules)


def test_window_is_judged_at_created_at_start_inclusive_end_exclusive(tmp_path: Path) -> None:
    window = "\nstarts = 2026-11-11T00:00:00+08:00\nends = 2026-11-12T00:00:00+08:00"
    rules = promotions(tmp_path, BUY + window)
    start = datetime(2026, 11, 10, 16, tzinfo=UTC)  # 00:00 in Beijing
    for at, earns in [
        (start - timedelta(seconds=1), False),
        (start, True),
        (start + timedelta(hours=23, minutes=59), True),
        (start + timedelta(days=1), False),
    ]:
        assert bool(gift_lines(order(line("SKU-A"), at=at), rules)) is earns, at


def test_every_matching_rule_gives_one_line_in_file_order(tmp_path: Path) -> None:
    second = BUY.replace('"B"', '"A2"').replace("SKU-G", "SKU-G2")
    rules = promotions(tmp_path, AMOUNT, BUY, second)
    got = [g.line_id for g in gift_lines(order(line("SKU-A", 1, "150")), rules)]
    assert got == ["GIFT-M", "GIFT-B", "GIFT-A2"]


def test_no_rules_no_gifts(tmp_path: Path) -> None:
    assert gift_lines(order(line("SKU-A")), load_promotions(write(tmp_path, ""))) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["SKU-PHONE-X1", "SKU-CASE-C3", "SKU-TEA-LONGJING", "SKU-X"]),
            st.integers(1, 9),
            st.booleans(),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda t: (t[0], t[1], t[2]),
    ),
    st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2029, 1, 1), timezones=st.just(UTC)
    ),
)
def test_gifts_are_deterministic_free_and_unique(
    shipped: Promotions, spec: list[tuple[str, int, bool]], at: datetime
) -> None:
    o = order(*(line(sku, qty, gift=gift) for sku, qty, gift in spec), at=at)
    first = gift_lines(o, shipped)
    assert gift_lines(o, shipped) == first
    ids = [g.line_id for g in first]
    assert len(ids) == len(set(ids)) and all(i.startswith("GIFT-") for i in ids)
    assert all(g.is_gift and g.paid_amount == 0 and g.unit_price == 0 for g in first)
    # Adding the gifts to the order as free lines changes nothing: a gift never earns a gift.
    with_gifts = o.model_copy(update={"lines": [*o.lines, *first]})
    assert gift_lines(with_gifts, shipped) == first


# --- files that must be refused -----------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (['id = "B"\nkind = "bogo"\ngift_sku = "G"'], r"promotions\[0\]: .*'buy', 'amount'"),
        ([BUY, BUY], r"promotions: .*\['B'\] are used more than once"),
        ([BUY.replace('"B"', '"bad id"')], r"promotions\[0\]\.buy\.id"),
        ([BUY + "\nmin_quantity = 0"], r"promotions\[0\]\.buy\.min_quantity"),
        ([BUY + "\ngift_quantity = -1"], r"promotions\[0\]\.buy\.gift_quantity"),
        ([BUY.replace('\nsku = "SKU-A"', "")], r"promotions\[0\]\.buy\.sku: Field required"),
        (
            [BUY + "\nmin_amount = '5'"],
            r"promotions\[0\]\.buy\.min_amount: unknown field \(known here: id, title,",
        ),
        ([AMOUNT.replace('"100"', "100.5")], r"amount\.min_amount: .*string"),
        ([AMOUNT.replace('"100"', '"-1"')], r"amount\.min_amount: .*greater than"),
        ([AMOUNT.replace('"100"', '"0"')], r"amount\.min_amount: .*greater than 0"),
        ([AMOUNT.replace('"CNY"', '"yuan"')], r"amount\.currency"),
        ([AMOUNT.replace('currency = "CNY"\n', "")], r"amount\.currency: Field required"),
        ([BUY + '\nshops = ["tmall/x"]'], r"buy\.shops\[0\]: .*CHANNEL/SHOP.*unknown channel"),
        ([BUY + '\nshops = ["jd/1", "jd"]'], r"buy\.shops\[1\]: .*CHANNEL/SHOP"),
        ([BUY + '\nshops = ["jd/ 1"]'], r"buy\.shops\[0\]: shop id ' 1' has a forbidden"),
        ([BUY + "\nshops = []"], r"buy\.shops: is empty"),
        ([BUY + '\nshops = ["jd/1", "jd/1"]'], r"buy\.shops: .*more than once"),
        ([BUY + "\nstarts = 2026-11-11T00:00:00"], r"buy\.starts: .*timezone"),
        ([BUY + "\nstarts = 2026-11-11"], r"buy\.starts"),
        (
            [BUY + "\nstarts = 2026-11-12T00:00:00Z\nends = 2026-11-11T00:00:00Z"],
            r"promotions\[0\]\.buy: .*ends must be after starts",
        ),
    ],
)
def test_bad_file_is_refused_naming_file_and_field(
    tmp_path: Path, rules: list[str], message: str
) -> None:
    path = write(tmp_path, "".join(f"[[promotions]]\n{r}\n" for r in rules))
    with pytest.raises(PromotionConfigError, match=message) as exc:
        load_promotions(path)
    assert str(path) in str(exc.value)


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        PromotionConfigError, match=r"gifts: unknown field \(known here: promotions\)"
    ):
        load_promotions(write(tmp_path, "[gifts]\n"))


def test_invalid_toml_and_missing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PromotionConfigError, match=r"promotions\.toml"):
        load_promotions(write(tmp_path, "[[promotions]\n"))
    with pytest.raises(PromotionConfigError, match="absent"):
        load_promotions(tmp_path / "absent.toml")
