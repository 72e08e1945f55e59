"""Load generator: a realistic peak-sale burst of native channel payloads (demo and bench).

Every message is what the platform team would put on ``oms.raw.<channel>``: the channel's own
order payload (Taobao ``trade``, JD ``orderInfo``, Douyin ``shop_order_detail``, Shopify webhook
Order, Amazon SP-API Order + OrderItems, own-shop canonical Order), keyed by the channel order id.
Payloads are built from the samples in ``samples/payloads/`` as templates (their static fields are
kept, ids, times, lines, amounts, address and buyer are generated), in each platform's units and
time formats. This module decides the burst and each order in it (a channel-free
``streams.channels.drafts.Draft``); the channel's payload generator,
``streams/channels/<channel>/payload.py``, dresses it in the platform's payload.

The burst looks like the first minutes of a Chinese peak sale:

- channel mix taobao 35%, jd 25%, douyin 20%, own 8%, shopify 6%, amazon 6% (:data:`CHANNEL_MIX`);
- skus Zipf-distributed over the catalogue, whose order is the popularity rank: with the default
  catalogue the earbuds and the phone are so hot that a 3000-order burst sells out their stock in
  ``samples/stock.csv`` (1200 and 300 units) while the other skus stay in stock;
- 1-3 distinct skus per order, mostly one unit (expensive items almost always one), single-item
  promotions on some lines, shop-wide 满减 / coupons on some orders, postage on some small orders;
- ship-to addresses over all 31 mainland provinces weighted by e-commerce volume, with plausible
  city, district, sub-district and street, fake recipient names and mobile numbers;
- created within the last few minutes (ascending through the burst), paid seconds later.

Mixed in, each at its rate: unpaid orders (native unpaid status: audit holds them as ``unpaid``),
orders with an incomplete address (held as ``address_incomplete``), re-pushes of the exact bytes
of an earlier order a little later in the stream (dedupe must drop them) and malformed payloads
(broken JSON, no order id, negative quantity, non-numeric amount, invalid UTF-8, a JSON array),
all of which must land in the DLQ.

Also mixed in, for the audit rules of ``config/audit.toml`` (as shipped, :data:`DEFAULT_RULES`):
``flagged_rate`` of the orders are built to trip one rule each, in turn: shipped to the demo's
blacklisted phone (rejected as ``blacklisted``), a buyer remark a person must act on (invoice,
address change, rush: held as ``remark_review``), a line priced at a tenth of its list price
(held as ``price_below_list``). And ``scalper_bursts`` bursts (default two, in bursts of 200
orders or more): one Taobao buyer ordering three more times than the rule allows within a
minute, then several Taobao and own-shop accounts shipping to one address; the orders beyond the
limit are held as ``scalper_suspected`` (state/velocity.py counts them by creation time). A
flagged order is paid and complete, so only its rule speaks; :attr:`BurstPlan.flagged` counts
them by reason code.

External ids embed a 7-digit hash of ``run_id`` (6 for Shopify, whose ids stay below 2^53, as
JavaScript clients need), so bursts with different run ids do not collide (the odds are 1e-7 per
pair of runs, 1e-6 for Shopify). Generation is deterministic for (seed, run_id, now).

:func:`generate_burst` materialises the stream and its bookkeeping, by default filled in by running
the real adapters once on every distinct valid order, so the expected GMV and units are exactly
what the OMS will compute. :func:`iter_burst` streams the same messages in constant memory for
large benchmarks, without that check.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from order.audit import DEFAULT_RULES, DEMO_BLACKLISTED_PHONE
from streams.channels import CHANNELS
from streams.channels.drafts import SURNAMES, Draft, PayloadBuilder, Run, Sku, yuan
from streams.keys import ORDER_ID_FIELDS, channel_order_key

__all__ = [
    "CHANNEL_MIX",
    "DEFAULT_CATALOGUE",
    "MALFORMED_KINDS",
    "SHOP_HEADER",
    "SHOP_HEADERS",
    "BurstMessage",
    "BurstPlan",
    "generate_burst",
    "iter_burst",
]

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples" / "payloads"

CHANNEL_MIX: dict[str, float] = {
    "taobao": 0.35,
    "jd": 0.25,
    "douyin": 0.20,
    "own": 0.08,
    "shopify": 0.06,
    "amazon": 0.06,
}

# Shopify webhooks and Amazon orders do not name the shop: the producer sets it as a header
# (streams.normalise.SHOP_HEADER), so every order of the burst belongs to one stable shop
# (each channel's payload generator names it: PayloadBuilder.shop_header).
SHOP_HEADER = "oms-shop"
SHOP_HEADERS: dict[str, str] = {
    channel.value: spec.payloads.shop_header
    for channel, spec in CHANNELS.items()
    if spec.payloads.shop_header
}

# Popularity order (Zipf rank 1 first); prices as in samples/payloads/README.md.
DEFAULT_CATALOGUE: tuple[tuple[str, Decimal], ...] = (
    ("SKU-EARBUD-A2", Decimal("299.00")),
    ("SKU-PHONE-X1", Decimal("3999.00")),
    ("SKU-CASE-C3", Decimal("59.00")),
    ("SKU-CHARGER-65W", Decimal("149.00")),
    ("SKU-MASK-N95-10", Decimal("39.90")),
    ("SKU-TSHIRT-L", Decimal("89.00")),
    ("SKU-TEA-LONGJING", Decimal("268.00")),
    ("SKU-SNEAKER-42", Decimal("699.00")),
)
ZIPF_EXPONENT = 1.0

MALFORMED_KINDS = (
    "broken_json",
    "missing_order_id",
    "negative_quantity",
    "non_numeric_amount",
    "invalid_utf8",
    "json_array",
)

BURST_SPAN_S = 300  # orders were created over the last five minutes...
BURST_END_S = 60  # ...up to a minute ago (then paid and updated within seconds)

_TITLES = {
    "SKU-PHONE-X1": ("X1 5G 智能手机 8GB+256GB 曜石黑", "机身颜色:曜石黑;存储容量:8GB+256GB"),
    "SKU-EARBUD-A2": ("A2 真无线降噪蓝牙耳机 白色", "颜色分类:白色"),
    "SKU-CASE-C3": ("X1 手机壳 液态硅胶 全包防摔", ""),
    "SKU-CHARGER-65W": ("65W 氮化镓快充充电器 多口", "规格:65W 三口"),
    "SKU-TEA-LONGJING": ("2024新茶 明前特级西湖龙井 250g 礼盒装", ""),
    "SKU-MASK-N95-10": ("N95 防护口罩 独立包装 10只装", ""),
    "SKU-SNEAKER-42": ("Air Runner 跑鞋", "尺码:42"),
    "SKU-TSHIRT-L": ("纯棉圆领T恤", "尺码:L"),
}
_GRAMS = {
    "SKU-PHONE-X1": 450,
    "SKU-SNEAKER-42": 900,
    "SKU-TSHIRT-L": 250,
    "SKU-TEA-LONGJING": 600,
    "SKU-CHARGER-65W": 200,
}

# --- geography -------------------------------------------------------------------------------

# Province -> rough share of online retail orders (percent), and a few cities each:
# (city, GB/T 2260 code, postcode, ((district, code), ...)).
_City = tuple[str, str, str, tuple[tuple[str, str], ...]]
_GEO: tuple[tuple[str, float, tuple[_City, ...]], ...] = (
    (
        "GD",
        16.0,
        (
            (
                "广州市",
                "440100",
                "510000",
                (("天河区", "440106"), ("越秀区", "440104"), ("番禺区", "440113")),
            ),
            (
                "深圳市",
                "440300",
                "518000",
                (("南山区", "440305"), ("福田区", "440304"), ("宝安区", "440306")),
            ),
            ("佛山市", "440600", "528000", (("南海区", "440605"), ("顺德区", "440606"))),
            ("珠海市", "440400", "519000", (("香洲区", "440402"),)),
        ),
    ),
    (
        "ZJ",
        12.0,
        (
            (
                "杭州市",
                "330100",
                "310000",
                (("西湖区", "330106"), ("余杭区", "330110"), ("滨江区", "330108")),
            ),
            ("宁波市", "330200", "315000", (("鄞州区", "330212"),)),
            ("温州市", "330300", "325000", (("鹿城区", "330302"),)),
            ("金华市", "330700", "322000", (("义乌市", "330782"),)),
        ),
    ),
    (
        "JS",
        9.0,
        (
            ("南京市", "320100", "210000", (("鼓楼区", "320106"), ("江宁区", "320115"))),
            (
                "苏州市",
                "320500",
                "215000",
                (("姑苏区", "320508"), ("吴中区", "320506"), ("昆山市", "320583")),
            ),
            ("无锡市", "320200", "214000", (("梁溪区", "320213"),)),
        ),
    ),
    (
        "SH",
        7.0,
        (
            (
                "上海市",
                "310100",
                "200000",
                (
                    ("浦东新区", "310115"),
                    ("徐汇区", "310104"),
                    ("静安区", "310106"),
                    ("闵行区", "310112"),
                ),
            ),
        ),
    ),
    (
        "BJ",
        6.0,
        (
            (
                "北京市",
                "110100",
                "100000",
                (
                    ("朝阳区", "110105"),
                    ("海淀区", "110108"),
                    ("东城区", "110101"),
                    ("丰台区", "110106"),
                ),
            ),
        ),
    ),
    (
        "SD",
        6.0,
        (
            ("济南市", "370100", "250000", (("历下区", "370102"),)),
            ("青岛市", "370200", "266000", (("市南区", "370202"), ("崂山区", "370212"))),
            ("烟台市", "370600", "264000", (("芝罘区", "370602"),)),
        ),
    ),
    (
        "SC",
        4.5,
        (
            (
                "成都市",
                "510100",
                "610000",
                (("武侯区", "510107"), ("锦江区", "510104"), ("成华区", "510108")),
            ),
            ("绵阳市", "510700", "621000", (("涪城区", "510703"),)),
        ),
    ),
    (
        "FJ",
        4.0,
        (
            ("福州市", "350100", "350000", (("鼓楼区", "350102"),)),
            ("厦门市", "350200", "361000", (("思明区", "350203"), ("湖里区", "350206"))),
            ("泉州市", "350500", "362000", (("丰泽区", "350503"),)),
        ),
    ),
    (
        "HA",
        4.0,
        (
            ("郑州市", "410100", "450000", (("金水区", "410105"), ("二七区", "410103"))),
            ("洛阳市", "410300", "471000", (("洛龙区", "410311"),)),
        ),
    ),
    (
        "HB",
        3.5,
        (
            (
                "武汉市",
                "420100",
                "430000",
                (("洪山区", "420111"), ("武昌区", "420106"), ("江汉区", "420103")),
            ),
            ("宜昌市", "420500", "443000", (("西陵区", "420502"),)),
        ),
    ),
    (
        "HN",
        3.0,
        (
            ("长沙市", "430100", "410000", (("岳麓区", "430104"), ("天心区", "430103"))),
            ("株洲市", "430200", "412000", (("天元区", "430211"),)),
        ),
    ),
    (
        "AH",
        3.0,
        (
            ("合肥市", "340100", "230000", (("蜀山区", "340104"), ("包河区", "340111"))),
            ("芜湖市", "340200", "241000", (("镜湖区", "340202"),)),
        ),
    ),
    (
        "HE",
        3.0,
        (
            ("石家庄市", "130100", "050000", (("长安区", "130102"), ("裕华区", "130108"))),
            ("保定市", "130600", "071000", (("竞秀区", "130602"), ("莲池区", "130606"))),
            ("唐山市", "130200", "063000", (("路北区", "130203"),)),
        ),
    ),
    (
        "CQ",
        2.5,
        (
            (
                "重庆市",
                "500100",
                "400000",
                (("渝中区", "500103"), ("江北区", "500105"), ("渝北区", "500112")),
            ),
        ),
    ),
    (
        "SN",
        2.0,
        (
            ("西安市", "610100", "710000", (("雁塔区", "610113"), ("碑林区", "610103"))),
            ("咸阳市", "610400", "712000", (("秦都区", "610402"),)),
        ),
    ),
    (
        "LN",
        2.0,
        (
            ("沈阳市", "210100", "110000", (("和平区", "210102"), ("浑南区", "210112"))),
            ("大连市", "210200", "116000", (("中山区", "210202"), ("甘井子区", "210211"))),
        ),
    ),
    (
        "JX",
        2.0,
        (
            ("南昌市", "360100", "330000", (("东湖区", "360102"), ("红谷滩区", "360113"))),
            ("赣州市", "360700", "341000", (("章贡区", "360702"),)),
        ),
    ),
    (
        "GX",
        2.0,
        (
            ("南宁市", "450100", "530000", (("青秀区", "450103"), ("西乡塘区", "450107"))),
            ("桂林市", "450300", "541000", (("秀峰区", "450302"),)),
        ),
    ),
    (
        "YN",
        1.5,
        (
            ("昆明市", "530100", "650000", (("五华区", "530102"), ("盘龙区", "530103"))),
            ("大理白族自治州", "532900", "671000", (("大理市", "532901"),)),
        ),
    ),
    (
        "TJ",
        1.5,
        (
            (
                "天津市",
                "120100",
                "300000",
                (("和平区", "120101"), ("南开区", "120104"), ("滨海新区", "120116")),
            ),
        ),
    ),
    (
        "SX",
        1.2,
        (
            ("太原市", "140100", "030000", (("小店区", "140105"), ("迎泽区", "140106"))),
            ("大同市", "140200", "037000", (("平城区", "140213"),)),
        ),
    ),
    (
        "GZ",
        1.2,
        (
            ("贵阳市", "520100", "550000", (("南明区", "520102"), ("观山湖区", "520115"))),
            ("遵义市", "520300", "563000", (("红花岗区", "520302"),)),
        ),
    ),
    (
        "HL",
        1.0,
        (
            ("哈尔滨市", "230100", "150000", (("南岗区", "230103"), ("道里区", "230102"))),
            ("大庆市", "230600", "163000", (("萨尔图区", "230602"),)),
        ),
    ),
    (
        "JL",
        0.8,
        (
            ("长春市", "220100", "130000", (("朝阳区", "220104"), ("南关区", "220102"))),
            ("吉林市", "220200", "132000", (("船营区", "220204"),)),
        ),
    ),
    (
        "NM",
        0.7,
        (
            ("呼和浩特市", "150100", "010000", (("赛罕区", "150105"), ("新城区", "150102"))),
            ("包头市", "150200", "014000", (("昆都仑区", "150203"),)),
        ),
    ),
    (
        "XJ",
        0.6,
        (("乌鲁木齐市", "650100", "830000", (("天山区", "650102"), ("沙依巴克区", "650103"))),),
    ),
    ("GS", 0.6, (("兰州市", "620100", "730000", (("城关区", "620102"), ("七里河区", "620103"))),)),
    (
        "HI",
        0.6,
        (
            ("海口市", "460100", "570000", (("美兰区", "460108"), ("龙华区", "460106"))),
            ("三亚市", "460200", "572000", (("吉阳区", "460203"),)),
        ),
    ),
    ("NX", 0.25, (("银川市", "640100", "750000", (("金凤区", "640106"), ("兴庆区", "640104"))),)),
    ("QH", 0.15, (("西宁市", "630100", "810000", (("城西区", "630104"),)),)),
    ("XZ", 0.08, (("拉萨市", "540100", "850000", (("城关区", "540102"),)),)),
)

_TOWNS = (
    "新华街道",
    "东风街道",
    "建设街道",
    "和平街道",
    "城南街道",
    "城北街道",
    "中心街道",
    "长安街道",
    "南湖街道",
    "花园街道",
)
_ROADS = (
    "人民路",
    "解放路",
    "中山路",
    "建设路",
    "和平路",
    "新华路",
    "文化路",
    "长江路",
    "黄河路",
    "胜利路",
    "青年路",
    "光明路",
    "朝阳路",
    "学府路",
    "科技路",
    "南京路",
    "北京路",
    "工业大道",
    "滨江大道",
    "世纪大道",
)
_HOMES = (
    "阳光花园",
    "翠苑小区",
    "锦绣华庭",
    "万科城",
    "碧桂园",
    "保利花园",
    "金地名郡",
    "华润城",
    "绿城桂花园",
    "龙湖春江郦城",
    "世纪新城",
    "幸福里",
    "融创壹号院",
    "招商雍景湾",
)
_OFFICES = ("科技园", "软件园", "国际大厦", "创新中心", "金融中心", "时代广场")
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉晨浩宇欣怡子涵梓萱一诺思远佳琪雨轩俊杰文博晓东建国海燕志强丹丹婷婷"  # noqa: E501
_MOBILE = (
    "130",
    "131",
    "132",
    "133",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "176",
    "177",
    "180",
    "181",
    "182",
    "183",
    "185",
    "186",
    "187",
    "188",
    "189",
    "191",
    "198",
    "199",
)
_REMARKS = (
    "请尽快发货，谢谢",
    "送礼用，不要放发票",
    "周末不在家，请工作日配送",
    "麻烦发顺丰",
    "放快递柜就行",
    "包装好一点，谢谢",
    "到了打电话",
)
# Remarks a person must act on (config/audit.toml [remark_review] keywords).
_REVIEW_REMARKS = (
    "麻烦开发票，抬头写公司名称",
    "地址写错了，请帮我改地址",
    "加急！周五之前一定要到",
    "Please include an invoice",
    "I need to change the address",
)
# The kinds of flagged single orders, in turn; scalper bursts are placed on their own.
FLAGGED_KINDS = ("blacklisted", "remark_review", "price_below_list")
SCALPER_KINDS = ("buyer", "address")  # one buyer ordering again and again; many to one address
SCALPER_EXTRA = 3  # orders per burst beyond what the scalper rule allows
SCALPER_MIN_ORDERS = 200  # smaller bursts get no scalper bursts


# --- public types ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BurstMessage:
    channel: str  # taobao | jd | douyin | shopify | amazon | own
    key: bytes | None  # channel order id (streams.keys.channel_order_key), None if it has none
    value: bytes  # the raw native payload bytes (JSON, or deliberately broken bytes)
    headers: list[tuple[str, bytes]]  # [("oms-shop", b"...")] for shopify/amazon; else []
    kind: str  # "order" | "duplicate" | "malformed"


@dataclass(frozen=True)
class BurstPlan:
    messages: list[BurstMessage]  # in send order (a duplicate comes a little after its original)
    orders: int  # distinct valid orders
    duplicates: int  # re-pushes of identical bytes
    malformed: int  # messages that must end in the DLQ
    units_by_sku: dict[str, int]  # units asked for over the distinct valid orders
    gmv: Decimal  # sum of the distinct valid orders' paid totals (as the adapters compute them)
    by_channel: dict[str, int]  # distinct valid orders per channel
    unpaid: int  # valid orders still unpaid (they will be held)
    incomplete_address: int  # valid orders missing address parts (they will be held)
    # reason code -> valid orders the shipped audit rules will flag with it (module docstring)
    flagged: dict[str, int] = field(default_factory=dict)


def generate_burst(
    n_orders: int,
    *,
    seed: int = 11,
    run_id: str = "demo",
    duplicate_rate: float = 0.03,
    malformed_rate: float = 0.01,
    unpaid_rate: float = 0.02,
    incomplete_rate: float = 0.01,
    flagged_rate: float = 0.01,
    scalper_bursts: int = 2,
    catalogue: Sequence[tuple[str, Decimal]] | None = None,
    now: datetime | None = None,
    adapt_check: bool = True,
) -> BurstPlan:
    """The whole burst in memory with its bookkeeping.

    With ``adapt_check`` (the default) every distinct valid order is run once through the real
    adapter (with the shop header the message carries), and ``gmv``, ``units_by_sku`` and
    ``by_channel`` are what the adapters computed; an order the adapter refuses raises its
    AdapterError (a generator bug). Without it they come from the generator's own bookkeeping,
    which the unit tests hold equal. ``now`` (default: the current time) anchors the order times.
    """
    from streams.channels import AdapterContext, adapt

    contexts: dict[str, AdapterContext] = {}
    messages: list[BurstMessage] = []
    units: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    gmv_fen = 0
    gmv = Decimal(0)
    counts = {"order": 0, "duplicate": 0, "malformed": 0}
    unpaid = incomplete = 0
    flagged: dict[str, int] = {}
    for message, info in _burst(
        n_orders,
        seed=seed,
        run_id=run_id,
        duplicate_rate=duplicate_rate,
        malformed_rate=malformed_rate,
        unpaid_rate=unpaid_rate,
        incomplete_rate=incomplete_rate,
        flagged_rate=flagged_rate,
        scalper_bursts=scalper_bursts,
        catalogue=catalogue,
        now=now,
    ):
        messages.append(message)
        counts[message.kind] += 1
        if info is None:
            continue
        unpaid += info.unpaid
        incomplete += bool(info.incomplete)
        if info.flagged:
            flagged[info.flagged] = flagged.get(info.flagged, 0) + 1
        if adapt_check:
            shop = SHOP_HEADERS.get(message.channel, "")
            ctx = contexts.get(shop) or contexts.setdefault(shop, AdapterContext(shop_id=shop))
            order = adapt(message.channel, message.value, ctx)
            gmv += order.payment.paid_total
            for sku, qty in order.quantity_by_sku.items():
                units[sku] = units.get(sku, 0) + qty
            channel = order.channel.value
        else:
            gmv_fen += info.paid_fen
            for sku, qty in info.units:
                units[sku] = units.get(sku, 0) + qty
            channel = message.channel
        by_channel[channel] = by_channel.get(channel, 0) + 1
    if not adapt_check:
        gmv = Decimal(gmv_fen).scaleb(-2)
    return BurstPlan(
        messages=messages,
        orders=counts["order"],
        duplicates=counts["duplicate"],
        malformed=counts["malformed"],
        units_by_sku=units,
        gmv=gmv,
        by_channel=by_channel,
        unpaid=unpaid,
        incomplete_address=incomplete,
        flagged=flagged,
    )


def iter_burst(
    n_orders: int,
    *,
    seed: int = 11,
    run_id: str = "demo",
    duplicate_rate: float = 0.03,
    malformed_rate: float = 0.01,
    unpaid_rate: float = 0.02,
    incomplete_rate: float = 0.01,
    flagged_rate: float = 0.01,
    scalper_bursts: int = 2,
    catalogue: Sequence[tuple[str, Decimal]] | None = None,
    now: datetime | None = None,
) -> Iterator[BurstMessage]:
    """The same messages as :func:`generate_burst`, streamed in constant memory (no adapter)."""
    for message, _ in _burst(
        n_orders,
        seed=seed,
        run_id=run_id,
        duplicate_rate=duplicate_rate,
        malformed_rate=malformed_rate,
        unpaid_rate=unpaid_rate,
        incomplete_rate=incomplete_rate,
        flagged_rate=flagged_rate,
        scalper_bursts=scalper_bursts,
        catalogue=catalogue,
        now=now,
    ):
        yield message


# --- generation ------------------------------------------------------------------------------


class _Info:
    """Bookkeeping of one distinct valid order, as the generator meant it."""

    __slots__ = ("flagged", "incomplete", "paid_fen", "units", "unpaid")

    def __init__(
        self,
        paid_fen: int,
        units: list[tuple[str, int]],
        unpaid: bool,
        incomplete: str,
        flagged: str = "",
    ) -> None:
        self.paid_fen = paid_fen
        self.units = units
        self.unpaid = unpaid
        self.incomplete = incomplete
        self.flagged = flagged  # the reason code the shipped audit rules will give, or ''


def _burst(
    n_orders: int,
    *,
    seed: int,
    run_id: str,
    duplicate_rate: float,
    malformed_rate: float,
    unpaid_rate: float,
    incomplete_rate: float,
    flagged_rate: float,
    scalper_bursts: int,
    catalogue: Sequence[tuple[str, Decimal]] | None,
    now: datetime | None,
) -> Iterator[tuple[BurstMessage, _Info | None]]:
    if n_orders < 0 or n_orders >= 10**8:
        raise ValueError("n_orders must be in [0, 10**8)")
    for name, rate in (
        ("duplicate_rate", duplicate_rate),
        ("malformed_rate", malformed_rate),
        ("unpaid_rate", unpaid_rate),
        ("incomplete_rate", incomplete_rate),
        ("flagged_rate", flagged_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be within [0, 1]")
    if scalper_bursts < 0:
        raise ValueError("scalper_bursts must not be negative")
    if unpaid_rate + incomplete_rate > 1.0:
        raise ValueError("unpaid_rate + incomplete_rate must not exceed 1")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")

    gen = _Generator(seed, run_id, _catalogue(catalogue), int(now.timestamp()), n_orders)
    rng = gen.rng
    scalpers = _scalper_slots(n_orders, scalper_bursts)
    # A separate stream decides the flagged orders, so every other order is drawn as before.
    flag_rng = random.Random(f"flagged:{seed}")
    flagged_count = 0
    pending: list[tuple[int, int, BurstMessage]] = []  # (due position, sequence, duplicate)
    sent = 0
    malformed = 0
    for index in range(n_orders):
        while pending and pending[0][0] <= sent:
            yield heapq.heappop(pending)[2], None
            sent += 1
        r = rng.random()
        unpaid = r < unpaid_rate
        incomplete = (
            ""
            if unpaid or r >= unpaid_rate + incomplete_rate
            else rng.choice(("phone", "street", "name"))
        )
        slot = scalpers.get(index)
        kind = ""
        if flag_rng.random() < flagged_rate and slot is None:
            kind = FLAGGED_KINDS[flagged_count % len(FLAGGED_KINDS)]
            flagged_count += 1
        if slot is not None or kind:  # a flagged order is paid and complete: one rule speaks
            unpaid, incomplete = False, ""
        draft = gen.draft(index, unpaid=unpaid, incomplete=incomplete)
        if slot is not None:
            kind = gen.join_scalper_burst(draft, *slot)
        elif kind:
            gen.flag(draft, kind)
        payload = gen.payload(draft)
        value = orjson.dumps(payload)
        message = BurstMessage(
            draft.channel, draft.key.encode(), value, _headers(draft.channel), "order"
        )
        info = _Info(0 if unpaid else draft.total, draft.units(), unpaid, incomplete, kind)
        yield message, info
        sent += 1
        if rng.random() < duplicate_rate:
            duplicate = BurstMessage(
                message.channel, message.key, value, _headers(message.channel), "duplicate"
            )
            heapq.heappush(pending, (sent + rng.randint(3, 200), index, duplicate))
        if rng.random() < malformed_rate:
            yield gen.malformed(malformed), None
            malformed += 1
            sent += 1
    while pending:
        yield heapq.heappop(pending)[2], None


def _headers(channel: str) -> list[tuple[str, bytes]]:
    shop = SHOP_HEADERS.get(channel)
    return [(SHOP_HEADER, shop.encode())] if shop else []


def scalper_limit(kind: str) -> int:
    """Orders the shipped scalper rule lets through per buyer or per address in its window."""
    rule = DEFAULT_RULES.scalper
    return rule.max_orders_per_buyer if kind == "buyer" else rule.max_orders_per_address


def _scalper_slots(n_orders: int, bursts: int) -> dict[int, tuple[int, int]]:
    """Order index -> (burst, member) for the scalper bursts, spread evenly over the stream.

    Members of a burst sit ``gap`` indices apart, at least 4 seconds of creation time, so each
    member is created strictly after the previous one (creation times jitter by up to 2 s): the
    k-th member counts k orders, and exactly the last SCALPER_EXTRA exceed the limit. Slots
    that would overlap an earlier burst are left out.
    """
    if n_orders < SCALPER_MIN_ORDERS or bursts == 0:
        return {}
    gap = -(-4 * n_orders // (BURST_SPAN_S - BURST_END_S))
    slots: dict[int, tuple[int, int]] = {}
    for burst in range(bursts):
        size = scalper_limit(SCALPER_KINDS[burst % len(SCALPER_KINDS)]) + SCALPER_EXTRA
        start = max(0, (burst + 1) * n_orders // (bursts + 1) - size * gap // 2)
        for member in range(size):
            index = start + member * gap
            if index < n_orders and index not in slots:
                slots[index] = (burst, member)
    return slots


def _sku(index: int, code: str, price: Decimal) -> Sku:
    fen = price * 100
    if fen != fen.to_integral_value() or fen <= 0:
        raise ValueError(f"catalogue price of {code} must be positive with at most 2 decimals")
    title, props = _TITLES.get(code, (code, ""))
    return Sku(
        index=index,
        code=code,
        price=int(fen),
        price_s=yuan(int(fen)),
        title=title,
        props=props,
        variants=bool(props) or code not in _TITLES,
        grams=_GRAMS.get(code, 100),
        # where each channel derives its item ids from (streams/channels/<channel>/payload.py)
        digits=str(
            int.from_bytes(hashlib.blake2b(code.encode(), digest_size=8).digest(), "big")
        ).zfill(20),
    )


def _catalogue(catalogue: Sequence[tuple[str, Decimal]] | None) -> list[Sku]:
    items = list(DEFAULT_CATALOGUE if catalogue is None else catalogue)
    if not items:
        raise ValueError("catalogue is empty")
    codes = [code for code, _ in items]
    if len(set(codes)) != len(codes):
        raise ValueError("catalogue skus must be distinct")
    return [_sku(i, code, Decimal(str(price))) for i, (code, price) in enumerate(items)]


def _cut_price(d: Draft) -> None:
    """The first line sold at a tenth of its list price, as when a promotion's price is typed
    one digit short; the difference is a line discount, so every total still adds up."""
    sku, qty, disc, share, paid = d.lines[0]
    cheap = max(1, sku.price * qty // 10)
    cut = paid - cheap
    d.lines[0] = (sku, qty, disc + cut, share, cheap)
    d.total -= cut


def _spread(amounts: list[int], discount: int) -> list[int]:
    """Share an order discount over lines in proportion, exactly (largest remainder, in fen)."""
    total = sum(amounts)
    if discount <= 0 or total <= 0:
        return [0] * len(amounts)
    shares = [discount * a // total for a in amounts]
    left = discount - sum(shares)
    if left:
        ranked = sorted(range(len(amounts)), key=lambda i: -(discount * amounts[i] % total))
        for i in ranked[:left]:
            shares[i] += 1
    return shares


@lru_cache(maxsize=1)
def _templates() -> dict[str, dict[str, Any]]:
    return {
        channel: orjson.loads((SAMPLES_DIR / f"{channel}.json").read_bytes())
        for channel in CHANNEL_MIX
    }


def _cumulative(weights: Sequence[float]) -> list[float]:
    total, result = 0.0, []
    for weight in weights:
        total += weight
        result.append(total)
    return [c / total for c in result]


class _Generator:
    def __init__(
        self, seed: int, run_id: str, skus: list[Sku], now_ts: int, n_orders: int
    ) -> None:
        self.rng = random.Random(seed)
        run = int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "big")
        self.run_bits = int.from_bytes(hashlib.blake2b(run_id.encode()).digest()[:32], "big")
        run7 = f"{run % 10**7:07d}"
        self.run = Run(
            rng=self.rng,
            run7=run7,
            run6=run7[1:],
            pad=hashlib.blake2b(run_id.encode(), digest_size=48).digest() * 2,
        )
        self.skus = skus
        self.zipf = _cumulative([1 / (rank**ZIPF_EXPONENT) for rank in range(1, len(skus) + 1)])
        self.channels = list(CHANNEL_MIX)
        self.channel_cum = _cumulative(list(CHANNEL_MIX.values()))
        spots, weights = [], []
        for code, weight, cities in _GEO:
            n_spots = sum(len(c[3]) for c in cities)
            for city, city_code, postcode, districts in cities:
                for district, district_code in districts:
                    spots.append((code, city, city_code, postcode, district, district_code))
                    weights.append(weight / n_spots)
        self.spots = spots
        self.spot_cum = _cumulative(weights)
        self.start = now_ts - BURST_SPAN_S
        self.step = (BURST_SPAN_S - BURST_END_S) / max(n_orders, 1)
        self.now = now_ts
        self.tpl = _templates()
        # each channel's payload generator (streams/channels/<channel>/payload.py)
        self.builders: dict[str, PayloadBuilder] = {
            channel.value: spec.payloads for channel, spec in CHANNELS.items()
        }
        self.ringleaders: dict[int, Draft] = {}  # scalper burst -> its first order

    # --- orders built to trip an audit rule (module docstring) --------------------------

    def _recast(self, d: Draft, channel: str) -> None:
        """Move a draft to another channel (its id follows; amounts stay valid anywhere)."""
        drawn = self.builders[d.channel].random_bytes
        if drawn:  # what the old channel's payload would draw (Douyin's cipher): keep in step
            self.rng.randbytes(drawn)
        d.channel = channel
        d.key = self.builders[channel].order_key(self.run, d.serial)

    def join_scalper_burst(self, d: Draft, burst: int, member: int) -> str:
        """Make the draft one more order of the burst's buyer (same Taobao account, new
        address each time) or to its address (new Taobao or own-shop account each time).
        Returns the reason the rule will give, '' while the member is within the limit."""
        kind = SCALPER_KINDS[burst % len(SCALPER_KINDS)]
        first = self.ringleaders.setdefault(burst, d)
        if kind == "buyer":
            self._recast(d, "taobao")
            d.buyer = first.buyer
        else:
            self._recast(d, ("taobao", "own")[member % 2])
            d.place, d.town = first.place, first.town
            d.street1, d.street2 = first.street1, first.street2
            d.name, d.phone = first.name, first.phone
        return "scalper_suspected" if member >= scalper_limit(kind) else ""

    def flag(self, d: Draft, kind: str) -> None:
        """Build the draft to trip one rule; channels that cannot carry the trip (Douyin
        encrypts phones, Amazon has no remark) hand the order to Taobao."""
        if kind == "blacklisted":
            if not self.builders[d.channel].plain_phone:
                self._recast(d, "taobao")
            d.phone = DEMO_BLACKLISTED_PHONE
        elif kind == "remark_review":
            if not self.builders[d.channel].buyer_remark:
                self._recast(d, "taobao")
            d.remark = _REVIEW_REMARKS[d.buyer % len(_REVIEW_REMARKS)]
        else:
            _cut_price(d)

    # --- the order itself ---------------------------------------------------------------

    def draft(
        self, index: int, *, unpaid: bool, incomplete: str, serial: str = "", channel: str = ""
    ) -> Draft:
        rng = self.rng
        r = rng.random
        d = Draft()
        d.channel = channel or self.channels[bisect(self.channel_cum, r())]
        # ids: 7 (Shopify 6) hash digits of the run + a 9-digit serial ('0'+index, '9'+n
        # malformed), in the platform's shape (PayloadBuilder.order_key)
        d.serial = serial or f"0{index:08d}"
        builder = self.builders[d.channel]
        d.key = builder.order_key(self.run, d.serial)
        d.unpaid = unpaid
        d.incomplete = incomplete

        # lines: 1-3 distinct skus, Zipf by popularity
        x = r()
        n_lines = min(1 if x < 0.62 else 2 if x < 0.9 else 3, len(self.skus))
        chosen: list[Sku] = []
        while len(chosen) < n_lines:
            sku = self.skus[bisect(self.zipf, r())]
            if sku not in chosen:
                chosen.append(sku)
        lines: list[tuple[Sku, int, int, int]] = []  # sku, qty, line discount, net
        for sku in chosen:
            x = r()
            if sku.price >= 100000:  # 1000 yuan and more: one per order, rarely two
                qty = 1 if x < 0.97 else 2
            elif sku.price < 5000:  # consumables
                qty = 1 if x < 0.6 else 2 if x < 0.85 else 3
            else:
                qty = 1 if x < 0.85 else 2 if x < 0.96 else 3
            amount = sku.price * qty
            disc = 0
            if r() < 0.3:  # single-item promotion (单品优惠 / 直降)
                if sku.price >= 100000:
                    disc = (10000, 20000, 30000)[int(r() * 3)]
                else:
                    disc = amount * (5, 10, 15, 20)[int(r() * 4)] // 100 // 100 * 100
                disc = min(disc, amount // 2)
            lines.append((sku, qty, disc, amount - disc))
        goods = sum(line[3] for line in lines)

        # order-level discount: cross-store 满300减40, or a shop coupon
        x = r()
        order_disc = 0
        if x < 0.35 and goods >= 30000:
            order_disc = goods // 30000 * 4000
        elif x < 0.5 and goods >= 5000:
            order_disc = min((300, 500, 1000, 2000)[int(r() * 4)], goods // 10)
        shares = _spread([line[3] for line in lines], order_disc)
        d.lines = [
            (sku, qty, disc, share, net - share)
            for (sku, qty, disc, net), share in zip(lines, shares, strict=True)
        ]
        d.order_disc = order_disc
        goods -= order_disc

        # postage: free over 99 yuan (包邮), sometimes charged below, unless the channel has its
        # own rule (the Shopify shop charges SF Express)
        own_rule = builder.shipping(goods)
        if own_rule is not None:
            d.shipping = own_rule
        elif goods < 9900 and r() < 0.6:
            d.shipping = (600, 800, 1000)[int(r() * 3)]
        else:
            d.shipping = 0
        d.total = goods + d.shipping

        # times: ascending through the burst, paid seconds after creation
        if serial:  # a malformed payload: any time in the burst
            d.created = self.now - BURST_END_S - int(r() * (BURST_SPAN_S - BURST_END_S))
        else:
            d.created = int(self.start + index * self.step) + int(r() * 3)
        delay = 2 + int(r() * 39)  # drawn even when unpaid: a flagged order is made paid
        d.paid = 0 if unpaid else d.created + delay
        d.modified = min(self.now, (d.paid or d.created) + 1 + int(r() * 20))

        # ship-to and buyer: one draw of random bits sliced into the choices (fast)
        d.place = self.spots[bisect(self.spot_cum, r())]
        # XOR the run in: another run's burst has other buyers and addresses (runs within the
        # audit's scalper window must not add up), while the draws stay in step.
        bits = rng.getrandbits(256) ^ self.run_bits
        bits, town = divmod(bits, len(_TOWNS))
        bits, road = divmod(bits, len(_ROADS))
        bits, number = divmod(bits, 999)
        bits, form = divmod(bits, 4)
        bits, building = divmod(bits, len(_HOMES))
        bits, block = divmod(bits, 30)
        bits, unit = divmod(bits, 4)
        bits, floor = divmod(bits, 33)
        bits, room = divmod(bits, 8)
        bits, surname = divmod(bits, len(SURNAMES))
        bits, given1 = divmod(bits, len(_GIVEN))
        bits, given2 = divmod(bits, len(_GIVEN) * 10 // 7)  # 30%: a one-character given name
        bits, mobile = divmod(bits, len(_MOBILE))
        d.buyer, subscriber = divmod(bits, 10**8)
        d.town = (_TOWNS[town], f"{d.place[5]}{town + 1:03d}")
        if form:  # 3 in 4 ship home
            d.street1 = f"{_ROADS[road]}{number + 1}号{_HOMES[building]}"
            d.street2 = f"{block + 1}栋{unit + 1}单元{floor + 1}{room + 1:02d}室"
        else:
            d.street1 = f"{_ROADS[road]}{number + 1}号{_OFFICES[building % len(_OFFICES)]}"
            d.street2 = f"{'ABCD'[unit]}座{floor + 1}{room + 1:02d}室"
        given = _GIVEN[given1] + (_GIVEN[given2] if given2 < len(_GIVEN) else "")
        d.name = SURNAMES[surname] + given
        d.phone = f"{_MOBILE[mobile]}{subscriber:08d}"
        # drawn here for every channel (Amazon carries none), so a draft moved to another
        # channel (a flagged order) draws as many numbers as before and shifts no other order
        x = r()
        d.remark = _REMARKS[int(x * 100) % len(_REMARKS)] if x < 0.08 else ""
        return d

    def payload(self, d: Draft) -> dict[str, Any]:
        return self.builders[d.channel].build(d, self.run, self.tpl[d.channel])

    # --- malformed ----------------------------------------------------------------------

    def malformed(self, number: int) -> BurstMessage:
        """A payload that must end in the DLQ; the six kinds take turns."""
        rng = self.rng
        kind = MALFORMED_KINDS[number % len(MALFORMED_KINDS)]
        d = self.draft(0, unpaid=False, incomplete="", serial=f"9{number:08d}")
        payload = self.payload(d)
        channel = d.channel
        if kind == "missing_order_id":
            for name in ORDER_ID_FIELDS[channel]:
                payload.pop(name, None)
        elif kind == "negative_quantity":
            self.builders[channel].negative_quantity(payload, rng.randrange(len(d.lines)))
        elif kind == "non_numeric_amount":
            text = rng.choice(("¥{}", "{}元", "N/A", "1,{}"))
            self.builders[channel].bad_amount(payload, d, text)
        good = orjson.dumps(payload)
        if kind == "broken_json":  # cut short, as by a dropped connection
            cut = rng.randrange(len(good) // 4, len(good) * 3 // 4)
            while good[cut] & 0xC0 == 0x80:  # on a character boundary: broken JSON, valid UTF-8
                cut -= 1
            value = good[:cut]
        elif kind == "invalid_utf8":  # a legacy system re-encoded it as GB18030
            value = good.decode().encode("gb18030")
            try:
                value.decode("utf-8")
                value = b"\xff" + value
            except UnicodeDecodeError:
                pass
        elif kind == "json_array":  # a batch export pushed as one message
            value = b"[" + good + b"]"
        else:
            value = good
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = None
        key = channel_order_key(channel, parsed)
        return BurstMessage(
            channel, key.encode() if key else None, value, _headers(channel), "malformed"
        )
