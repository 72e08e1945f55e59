"""What every channel's payload generator shares: the order as the load generator decided it, and
the platforms' money and time formats.

ops/loadgen.py decides each order once, channel-free (a :class:`Draft`: lines of :class:`Sku`,
amounts in fen, Unix times, a ship-to and a buyer), then hands it to the channel's
:class:`PayloadBuilder` (``streams/channels/<channel>/payload.py``), which dresses it in that
platform's payload: its field names, units (Douyin counts fen, the others send yuan strings) and
time formats (Taobao and JD Beijing local 'YYYY-MM-DD HH:MM:SS', Douyin Unix seconds, Shopify
ISO 8601 with the shop's offset, Amazon ISO 8601 UTC).

Generation is deterministic for a seed: a builder draws from :attr:`Run.rng` only what its
:attr:`PayloadBuilder.random_bytes` says, so the burst stays in step whichever channel an order
lands on, and the demo, bench and tests get the same bytes for the same arguments.
"""

from __future__ import annotations

import base64
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from streams.models import Channel

CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

# Common Chinese surnames: the load generator's buyers, and Taobao's masked buyer nicks.
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"  # noqa: E501


@dataclass(frozen=True, slots=True, eq=False)
class Sku:
    """A catalogue item as the load generator sells it. ``digits`` (20 decimal digits hashed
    from the code) is where each channel derives its own stable item ids from."""

    index: int  # popularity rank, 0 first
    code: str  # the OMS sku, which the merchant also uses as its sku code on every channel
    price: int  # list price in fen
    price_s: str  # the same as the platforms send it ('3999.00')
    title: str
    props: str  # the variant as Taobao writes it ('颜色分类:白色'), '' for none
    variants: bool  # the item has variants (Taobao then fills sku_id and outer_sku_id)
    grams: int
    digits: str


class Draft:
    """One order as decided, before it is dressed in a channel's payload."""

    __slots__ = (
        "buyer",
        "channel",
        "created",
        "incomplete",
        "key",
        "lines",
        "modified",
        "name",
        "order_disc",
        "paid",
        "phone",
        "place",
        "remark",
        "serial",
        "shipping",
        "street1",
        "street2",
        "total",
        "town",
        "unpaid",
    )

    channel: str
    serial: str
    key: str
    lines: list[tuple[Sku, int, int, int, int]]  # sku, qty, line discount, order share, paid
    order_disc: int
    shipping: int
    total: int
    created: int
    paid: int
    modified: int
    unpaid: bool
    incomplete: str
    place: tuple[str, str, str, str, str, str]  # prov, city, city code, postcode, district, code
    town: tuple[str, str]
    street1: str
    street2: str
    name: str
    phone: str
    buyer: int
    remark: str  # the buyer's remark ('' mostly)

    def units(self) -> list[tuple[str, int]]:
        return [(line[0].code, line[1]) for line in self.lines]

    @property
    def goods(self) -> int:
        return self.total - self.shipping


@dataclass(frozen=True)
class Run:
    """What a builder may use of the burst: its random stream and the run's hash digits."""

    rng: random.Random
    run7: str  # 7 decimal digits hashed from the run id (every channel's order ids embed them)
    run6: str  # the last 6 of them (Shopify's ids stay below 2^53)
    pad: bytes  # 96 bytes hashed from the run id, XORed into drawn ciphertext


class PayloadBuilder(ABC):
    """A channel's payload generator. The defaults suit a channel whose payload names its shop,
    carries the buyer's phone in clear and has a field for the buyer's remark."""

    channel: Channel
    # The oms-shop header the producer sets when the payload does not name its shop (the shop
    # of config/shops.toml the burst's orders belong to); '' when the payload names it.
    shop_header = ""
    plain_phone = True  # False: the platform encrypts the phone, no phone rule can match it
    buyer_remark = True  # False: the payload has no place for a buyer's remark
    random_bytes = 0  # bytes build() draws from Run.rng

    @abstractmethod
    def order_key(self, run: Run, serial: str) -> str:
        """The channel order id for a 9-digit serial, in the platform's shape."""

    def shipping(self, goods: int) -> int | None:
        """The channel's own postage in fen for goods worth ``goods``, or None for the burst's
        usual rule (free over 99 yuan, sometimes charged below)."""
        return None

    @abstractmethod
    def build(self, d: Draft, run: Run, template: Mapping[str, Any]) -> dict[str, Any]:
        """The payload: a shallow copy of ``template`` (the sample payload: keys in the
        platform's order, static fields as the sample has them) with everything order-specific
        replaced. Nested objects of the template are shared between orders and never mutated:
        every nested object that changes is built fresh."""

    @abstractmethod
    def negative_quantity(self, payload: dict[str, Any], line: int) -> None:
        """Break the payload: the line's quantity is -1."""

    @abstractmethod
    def bad_amount(self, payload: dict[str, Any], d: Draft, text: str) -> None:
        """Break the payload: its paid amount is ``text`` formatted with the amount in the
        platform's unit ('¥{}' -> '¥3999.00')."""


def b62(number: int, width: int) -> str:
    """Opaque platform ids (open uids, pins): alphanumeric digits of a random number."""
    raw = (number & ((1 << (6 * width)) - 1)).to_bytes((6 * width + 7) // 8, "big")
    return base64.b64encode(raw, altchars=b"xy").decode()[:width]


def yuan(fen: int) -> str:
    """Fen -> the yuan string the platforms send ('3999.00')."""
    return "%d.%02d" % divmod(fen, 100)  # noqa: UP031 (twice as fast as the f-string)


@lru_cache(maxsize=4096)
def beijing(ts: int) -> str:
    """Beijing local time as Taobao and JD send it ('2024-11-11 00:05:00')."""
    return datetime.fromtimestamp(ts, CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


@lru_cache(maxsize=4096)
def iso_beijing(ts: int) -> str:
    """ISO 8601 with the +08:00 offset (Shopify, own shop)."""
    return datetime.fromtimestamp(ts, CHINA_TZ).isoformat()


@lru_cache(maxsize=4096)
def iso_utc(ts: int) -> str:
    """ISO 8601 UTC with a Z (Amazon SP-API)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
