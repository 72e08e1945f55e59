"""Canonical order model: the one shape every channel adapter produces.

Money is Decimal (never float), times are timezone-aware, and validation is strict so a
channel quirk is caught at the edge (-> DLQ) instead of deep in the pipeline. Fields a channel
sends that the model has no place for are kept in ``raw`` rather than dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainSerializer,
    PrivateAttr,
    model_validator,
)
from pydantic_core import core_schema

SCHEMA_VERSION: Final = 1

# Largest amount one order can carry; anything above is a parse error, not a sale.
MAX_MONEY = Decimal("99999999999.99")
# Bounds of the canonical fields, named so adapters clip to them and messages reuse them.
MAX_TEXT_CHARS = 2000  # free text: names, streets, titles, remarks, details
MAX_CODE_CHARS = 128  # ids and codes: order, line, sku, shop, warehouse
MAX_PROVINCE_CODE_CHARS = 8  # 'ZJ': an ISO 3166-2 suffix (streams/regions.py), or ''
MAX_ORDER_LINES = 500
MAX_LINE_QUANTITY = 1_000_000


def check_money(value: Decimal) -> Decimal:
    """A money amount as every message carries it (finite, 4 places at most, bounded), or
    ValueError: shared by the pydantic models and the sink's decoders."""
    if not value.is_finite():
        raise ValueError("money must be a finite number")
    if value.as_tuple().exponent < -4:  # type: ignore[operator]
        raise ValueError("money has more than 4 decimal places")
    if abs(value) > MAX_MONEY:
        raise ValueError("money amount is implausibly large")
    if value.is_zero():
        return value.copy_abs()  # '-0.00' is 0: one form, so a re-push is not an 'update'
    return value


# Serialised as a string so JSON consumers never see a float.
Money = Annotated[
    Decimal,
    AfterValidator(check_money),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
]
NonNegativeMoney = Annotated[Money, Field(ge=0)]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Code = Annotated[str, Field(min_length=1, max_length=MAX_CODE_CHARS)]


class Channel(StrEnum):
    TAOBAO = "taobao"
    JD = "jd"
    DOUYIN = "douyin"
    SHOPIFY = "shopify"
    AMAZON = "amazon"
    OWN = "own"


_CHANNELS = frozenset(c.value for c in Channel)
POOL: Final = "*"  # the shop of a channel pool key "CHANNEL/*": every shop not listed itself
SHOP_KEY_FORM: Final = '"CHANNEL/SHOP" or "CHANNEL/*"'
_CHANNEL_NAMES = ", ".join(c.value for c in Channel)
_CONFIG_FORBIDDEN = frozenset("|\x7f") | {chr(c) for c in range(32)}


class ShopKeyError(ValueError):
    """Text that is not a shop key; the message says what a shop key is."""


class ShopKey(str):
    """The selling shop as quotas, shop rules, promotions and their Redis fields name it:
    ``CHANNEL/SHOP`` (``taobao/极客数码旗舰店``), or ``CHANNEL/*`` for a channel's pool.

    A str, so its wire and stored form is the key itself (config keys, ``quota:KEY`` fields,
    script arguments). Build one with :meth:`of` or :meth:`parse`, never by hand; either way the
    channel is a known one and the shop id is 1-128 characters, as an order's ``shop_id``
    (anything else, '/' included after the first: the key splits at its first '/').
    """

    __slots__ = ()

    def __new__(cls, text: str) -> ShopKey:
        channel, slash, shop = text.partition("/")
        problem = ""
        if not slash:
            problem = "no '/' between channel and shop"
        elif channel not in _CHANNELS:
            problem = f"unknown channel {channel!r} (known: {_CHANNEL_NAMES})"
        elif not 1 <= len(shop) <= MAX_CODE_CHARS:
            problem = f"the shop id must be 1-{MAX_CODE_CHARS} characters"
        if problem:
            raise ShopKeyError(f"{text!r} is not a shop key {SHOP_KEY_FORM}: {problem}")
        return super().__new__(cls, text)

    @classmethod
    def of(cls, channel: Channel | str, shop: str) -> ShopKey:
        """The key of ``shop`` selling on ``channel``."""
        return cls(f"{channel}/{shop}")

    @classmethod
    def parse(cls, text: str) -> ShopKey:
        """``text`` as a key; raises :class:`ShopKeyError` (a ValueError) saying what is wrong."""
        return text if isinstance(text, ShopKey) else cls(text)

    @classmethod
    def pool_of(cls, channel: Channel | str) -> ShopKey:
        """``CHANNEL/*``: the key of every shop of the channel not listed itself, together."""
        return cls.of(channel, POOL)

    @property
    def channel(self) -> Channel:
        return Channel(self.partition("/")[0])

    @property
    def shop(self) -> str:
        """The shop id (``*`` for a pool)."""
        return self.partition("/")[2]

    @property
    def is_pool(self) -> bool:
        return self.shop == POOL

    @property
    def pool(self) -> ShopKey:
        """The key of this shop's channel pool."""
        return ShopKey.pool_of(self.channel)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """A str in, a ShopKey out (a bad one: a validation error saying why); a str in JSON."""
        return core_schema.no_info_after_validator_function(
            cls.parse,
            core_schema.str_schema(),
            serialization=core_schema.to_string_ser_schema(),
        )


def check_config_shop_key(key: ShopKey) -> ShopKey:
    """What a config file may name besides an order's shop: no spaces around the shop id and
    no '|' or control characters (quota arguments are "KEY|mode|value")."""
    shop = key.shop
    if shop != shop.strip() or _CONFIG_FORBIDDEN.intersection(shop):
        raise ShopKeyError(
            f"shop id {shop!r} has a forbidden character: '|', a control character or spaces "
            "around it"
        )
    return key


# A shop key in a config file: "CHANNEL/SHOP" or "CHANNEL/*" (order/shops.py refuses pools).
ConfigShopKey = Annotated[ShopKey, AfterValidator(check_config_shop_key)]


class PaymentStatus(StrEnum):
    UNPAID = "unpaid"
    PAID = "paid"
    COD = "cod"  # cash on delivery: nothing paid yet, but shippable
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class ChannelStatus(StrEnum):
    """The channel's own view of the order, folded to what the OMS acts on."""

    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"  # ready to ship
    SHIPPED = "shipped"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Room for one platform ciphertext: Douyin's run to ~300 characters, JD's to ~250.
Cipher = Annotated[str, Field(max_length=1024)]


class ProtectedReceiver(_Model):
    """The receiver as the platform protects it (the platforms' privacy rules): ciphertexts and
    the handle its waybill and decrypt services take, and the key it matches receivers by.

    The OMS never decrypts: the WMS's waybill call does, with these and the platform order id
    (Douyin ``order.batchDecrypt`` takes the ciphertexts, Cainiao's waybill and Taobao/JD
    decrypts take the OAID). ``match_key`` is equal for two orders exactly when the platform
    says the receiver (name, phone and address) is the same: Taobao/Tmall and JD's OAID,
    Douyin's search indexes; '' when the platform gives none, and then nothing merges on it.
    """

    name: Cipher = ""
    phone: Cipher = ""
    street: Cipher = ""
    oaid: Annotated[str, Field(max_length=256)] = ""  # Open Addressee ID (Taobao/Tmall, JD)
    match_key: Annotated[str, Field(max_length=256)] = ""


class Address(_Model):
    """Ship-to address. ``province_code`` is the routing key (ISO 3166-2:CN suffix for China).

    ``name``, ``phone`` and ``street`` are what the channel shows: plain, masked ('李*',
    '138****1234') or, when it sends nothing else, ciphertext. ``protected`` carries the
    platform's encrypted receiver when there is one (see ProtectedReceiver)."""

    country: Annotated[str, Field(min_length=2, max_length=2)] = "CN"
    province: Text = ""
    province_code: Annotated[str, Field(max_length=MAX_PROVINCE_CODE_CHARS)] = ""
    city: Text = ""
    district: Text = ""
    street: Text = ""
    postcode: Annotated[str, Field(max_length=32)] = ""
    name: Text = ""
    # Room for platform ciphertext (Douyin encrypts receiver phones until label printing).
    phone: Annotated[str, Field(max_length=256)] = ""
    protected: ProtectedReceiver | None = None

    @property
    def receiver_key(self) -> str:
        """The platform's key for this receiver, '' without one (see ProtectedReceiver)."""
        return self.protected.match_key if self.protected is not None else ""


class Buyer(_Model):
    id: Annotated[str, Field(max_length=256)] = ""
    name: Text = ""
    email: Annotated[str, Field(max_length=320)] = ""
    phone: Annotated[str, Field(max_length=64)] = ""


class Payment(_Model):
    status: PaymentStatus
    method: Annotated[str, Field(max_length=64)] = ""
    paid_total: NonNegativeMoney
    paid_at: AwareDatetime | None = None
    transaction_id: Annotated[str, Field(max_length=256)] = ""


class PresaleStage(StrEnum):
    """Where a pre-sale (预售: deposit, then balance) stands; the channels' step status
    (Taobao ``step_trade_status``, Douyin ``order_phase_list``) folded."""

    DEPOSIT_UNPAID = "deposit_unpaid"  # 定金未付: an unpaid order like any other
    DEPOSIT_PAID = "deposit_paid"  # 定金已付, 尾款未付: the buyer is committed, the balance due
    BALANCE_PAID = "balance_paid"  # 定金和尾款都付


class Presale(_Model):
    """A deposit-then-balance order. ``paid`` is what the buyer has paid so far (the deposit
    while the balance is due); ``payment.paid_total`` stays 0 until the whole is paid."""

    stage: PresaleStage
    paid: NonNegativeMoney = Decimal("0")


class BundleRef(_Model):
    """The bundle (组合商品) a component line was expanded from: the channel's code and line
    id, and how many bundles that line bought (docs/decisions/0026-bundles.md)."""

    code: Code  # the merchant code the channel sent for the bundle
    line_id: Code  # the bundle line's id at the channel: an after-sales request may name it
    quantity: Annotated[int, Field(gt=0, le=MAX_LINE_QUANTITY)]


class OrderLine(_Model):
    line_id: Code
    sku: Code  # OMS sku after mapping
    channel_sku: Annotated[str, Field(max_length=128)] = ""  # merchant code as the channel sent it
    title: Text = ""
    quantity: Annotated[int, Field(gt=0, le=MAX_LINE_QUANTITY)]
    unit_price: NonNegativeMoney  # list price of one unit before discounts
    discount: NonNegativeMoney = Decimal("0")  # discount on the whole line
    paid_amount: NonNegativeMoney  # what the buyer paid for the whole line
    is_gift: bool = False
    # Added after the first release (LATER_LINE_FIELDS): set on a bundle's component lines.
    bundle: BundleRef | None = None


class Order(_Model):
    """One channel order in canonical form; the value of ``oms.orders``-like messages."""

    schema_version: Literal[1] = SCHEMA_VERSION
    order_id: Code
    channel: Channel
    shop_id: Code
    external_id: Code
    channel_status: ChannelStatus
    created_at: AwareDatetime
    updated_at: AwareDatetime
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    buyer: Buyer
    address: Address
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=MAX_ORDER_LINES)]
    payment: Payment
    shipping_fee: NonNegativeMoney = Decimal("0")
    discount_total: NonNegativeMoney = Decimal("0")
    total: NonNegativeMoney  # what the buyer pays for the order, shipping included
    buyer_remark: Text = ""
    seller_remark: Text = ""
    raw: dict[str, Any] = Field(default_factory=dict)  # channel fields with no canonical home
    # Added after the first release (left out of the fingerprint while unset, see fingerprint):
    presale: Presale | None = None
    # Not to be handed to a carrier before this time: a pre-sale's ship date, Douyin's
    # appointment_ship_time (预约发货).
    ship_after: AwareDatetime | None = None
    # The channel's own reason the order must not ship yet, '' when it may: Taobao
    # PAID_FORBID_CONSIGN, JD LOCKED / POP_ORDER_PAUSE.
    ship_hold: Annotated[str, Field(max_length=64)] = ""
    # Who ships it: '' the merchant (through the OMS and its WMS); 'platform' the platform
    # from its own warehouses (Amazon AFN/FBA, JD 京仓); 'virtual' nothing ships (services,
    # vouchers). Either of the last two is recorded and counted, never reserved or sent.
    fulfilled_by: Literal["", "platform", "virtual"] = ""
    # The channel's own latest ship time (Amazon LatestShipDate, Douyin exp_ship_time); None:
    # the shop's promise applies (order/deadlines.py).
    ship_by: AwareDatetime | None = None
    # The buyer chose an expedited shipping service (Amazon ShipmentServiceLevelCategory).
    expedited: bool = False
    _fingerprint: str | None = PrivateAttr(default=None)
    _json_size: int = PrivateAttr(default=0)
    _shop_key: ShopKey | None = PrivateAttr(default=None)
    _json: str | None = PrivateAttr(default=None)
    _v1_fingerprint: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_lines(self) -> Order:
        ids = [line.line_id for line in self.lines]
        if len(ids) != len(set(ids)):
            raise ValueError("order has duplicate line_id values")
        return self

    @property
    def shop_key(self) -> ShopKey:
        """``CHANNEL/SHOP``: how quotas, shop rules and promotions name the selling shop (built
        once per order: the decisions ask for it several times per input)."""
        if self._shop_key is None:
            self._shop_key = ShopKey.of(self.channel, self.shop_id)
        return self._shop_key

    @property
    def quantity_by_sku(self) -> dict[str, int]:
        """Lines of the same sku are reserved together."""
        totals: dict[str, int] = {}
        for line in self.lines:
            totals[line.sku] = totals.get(line.sku, 0) + line.quantity
        return totals

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Order:
        """A copy with changed content must not keep what was cached of the original."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy._fingerprint = None
            copy._v1_fingerprint = None
            copy._shop_key = None
            copy._json = None
        return copy

    def json_text(self) -> str:
        """``model_dump_json()``, made once per order (the model is frozen): the record saved
        on every step and the events that carry a snapshot embed it (``json_with_order``)."""
        if self._json is None:
            self._json = self.model_dump_json()
        return self._json

    def fingerprint(self) -> str:
        """Content hash that tells a re-push (same content) from an update (changed content).

        Computed once per order (the model is frozen): dedupe, the input id and the record all
        need it on the hot path, and a full dump + hash is the costliest step after parsing.
        """
        if self._fingerprint is None:
            data = self.model_dump(mode="json")
            unset = _drop_later_fields(data, only_unset=True)
            canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
            self._fingerprint = hashlib.blake2b(canonical, digest_size=16).hexdigest()
            self._json_size = len(canonical) + unset  # the unset fields are sent all the same
        return self._fingerprint

    def v1_fingerprint(self) -> str:
        """The fingerprint without the fields added after the first release (LATER_FIELDS):
        what a record saved before them holds for this content, so an upgrade does not take
        every re-push of an order it already has for an update. Equal to ``fingerprint()`` for
        an order that sets none of them; computed once, like it."""
        if self._v1_fingerprint is None:
            if self._sets_later_fields():
                data = self.model_dump(mode="json")
                _drop_later_fields(data, only_unset=False)
                canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
                self._v1_fingerprint = hashlib.blake2b(canonical, digest_size=16).hexdigest()
            else:
                self._v1_fingerprint = self.fingerprint()
        return self._v1_fingerprint

    def json_size(self) -> int:
        """Bytes of the order as compact JSON (what the fingerprint hashes, so it comes free):
        what every message carrying a snapshot of it must make room for."""
        self.fingerprint()
        return self._json_size

    def _sets_later_fields(self) -> bool:
        node: Any
        for path, unset in LATER_FIELDS:
            node = self
            for name in path:
                node = getattr(node, name)
            if node != unset:
                return True
        return any(
            getattr(line, name) != unset for line in self.lines for name, unset in LATER_LINE_FIELDS
        )

    @property
    def has_bundles(self) -> bool:
        """Whether any line is a bundle's component (they ship from one warehouse)."""
        return any(line.bundle is not None for line in self.lines)


# Fields added after the first release, with their unset value: an order that leaves them
# unset hashes exactly as that release hashed it (Order.fingerprint). (path, unset value)
LATER_FIELDS: Final = (
    (("address", "protected"), None),
    (("presale",), None),
    (("ship_after",), None),
    (("ship_hold",), ""),
    (("fulfilled_by",), ""),
    (("ship_by",), None),
    (("expedited",), False),
)
# The same for fields of every line: (name, unset value).
LATER_LINE_FIELDS: Final = (("bundle", None),)


def _drop_later_fields(data: dict[str, Any], *, only_unset: bool) -> int:
    """Removes LATER_FIELDS from a JSON-mode Order dump (all, or only the unset ones); returns
    the bytes they take in the compact JSON, for json_size."""
    size = 0
    for path, unset in LATER_FIELDS:
        *parents, name = path
        node = data
        for parent in parents:
            node = node[parent]
        value = node[name]
        if only_unset and value != unset:
            continue
        del node[name]
        size += len(name) + 4 + len(orjson.dumps(value))  # ',"name":value'
    for line in data["lines"]:
        for name, unset in LATER_LINE_FIELDS:
            value = line[name]
            if only_unset and value != unset:
                continue
            del line[name]
            size += len(name) + 4 + len(orjson.dumps(value))
    return size


_ORDER_FIELD: Final = {"order"}


def json_with_order(model: BaseModel) -> str:
    """``model.model_dump_json()``, with the cached JSON of its ``order`` field (an Order) spliced
    in instead of serialising the snapshot again (the same JSON value; the field comes first).
    A model without an order snapshot is dumped as it is."""
    order = getattr(model, "order", None)
    if not isinstance(order, Order):
        return model.model_dump_json()
    rest = model.model_dump_json(exclude=_ORDER_FIELD)
    return f'{{"order":{order.json_text()}{"," if len(rest) > 2 else ""}{rest[1:]}'


def make_order_id(channel: str, shop_id: str, external_id: str) -> str:
    """Deterministic OMS id: a replayed or re-pushed order always maps to the same id."""
    digest = hashlib.blake2b(f"{channel}\x1f{shop_id}\x1f{external_id}".encode(), digest_size=8)
    return f"O{digest.hexdigest().upper()}"


def is_aware(value: datetime) -> bool:
    return value.tzinfo is not None and value.tzinfo.utcoffset(value) is not None
