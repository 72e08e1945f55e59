"""Douyin shop payloads for the load generator: ``shop_order_detail`` of ``order.orderDetail``.

Built on samples/payloads/douyin.json. Amounts are integers in fen (``pay_amount``,
``order_amount``, ``post_amount``, ``promotion_amount`` and their ``promotion_shop_amount``
shares), times Unix seconds. Lines are ``sku_order_list[]``, each with the merchant's sku code
in ``code``. The platform encrypts the receiver: ``encrypt_post_tel``,
``encrypt_post_receiver`` and ``post_addr.encrypt_detail`` are ciphertext (drawn here, with the
run XORed in), ``mask_post_*`` the masked forms; ``post_addr`` names province, city, district
('town') and street with GB/T 2260 ids. Unpaid orders are status 1 (待支付), paid ones 2
(备货中).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from streams.channels.drafts import Draft, PayloadBuilder, Run
from streams.models import Channel
from streams.regions import PROVINCES

# Provinces' GB/T 2260 codes (post_addr.province.id).
GB_PROVINCE = {
    "BJ": "11",
    "TJ": "12",
    "HE": "13",
    "SX": "14",
    "NM": "15",
    "LN": "21",
    "JL": "22",
    "HL": "23",
    "SH": "31",
    "JS": "32",
    "ZJ": "33",
    "AH": "34",
    "FJ": "35",
    "JX": "36",
    "SD": "37",
    "HA": "41",
    "HB": "42",
    "HN": "43",
    "GD": "44",
    "GX": "45",
    "HI": "46",
    "CQ": "50",
    "SC": "51",
    "GZ": "52",
    "YN": "53",
    "XZ": "54",
    "SN": "61",
    "GS": "62",
    "QH": "63",
    "NX": "64",
    "XJ": "65",
}


@lru_cache(maxsize=1024)
def _item_ids(digits: str) -> tuple[int, int]:
    """``product_id`` and ``sku_id`` of a catalogue sku (stable: hashed from its code)."""
    return int("36" + digits[3:20]), int("17" + digits[4:18])


class DouyinPayloads(PayloadBuilder):
    """Draft -> Douyin ``shop_order_detail``."""

    channel = Channel.DOUYIN
    plain_phone = False  # the receiver's phone is ciphertext: no phone rule can match it
    random_bytes = 96  # the receiver's ciphertext

    def order_key(self, run: Run, serial: str) -> str:
        return f"69{run.run7}{serial}0"

    def build(self, d: Draft, run: Run, template: Mapping[str, Any]) -> dict[str, Any]:
        prov, city, city_code, _, district, district_code = d.place
        status, status_desc = (1, "待支付") if d.unpaid else (2, "备货中")
        skus = []
        list_total = 0
        for k, (sku, qty, _disc, _share, paid) in enumerate(d.lines):
            amount = sku.price * qty
            list_total += amount
            product_id, sku_id = _item_ids(sku.digits)
            skus.append(
                {
                    "order_id": f"{d.key[:-1]}{k + 1}",
                    "parent_order_id": d.key,
                    "order_level": 3,
                    "order_status": status,
                    "order_status_desc": status_desc,
                    "product_id": product_id,
                    "product_id_str": str(product_id),
                    "product_name": sku.title,
                    "sku_id": sku_id,
                    "code": sku.code,
                    "out_sku_id": "0",
                    "out_product_id": "0",
                    "spec": [{"name": "规格", "value": sku.props.split(":")[-1] or "默认"}],
                    "origin_amount": sku.price,
                    "item_num": qty,
                    "sum_amount": amount,
                    "order_amount": amount,
                    "pay_amount": paid,
                    "post_amount": 0,
                    "promotion_amount": amount - paid,
                    "promotion_shop_amount": amount - paid,
                    "promotion_platform_amount": 0,
                    "goods_type": 0,
                    "given_product_type": "MASTER",
                    "is_comment": 0,
                }
            )
        promotion = list_total - d.goods
        tag = "*CgwIARCtHBiqICgDMAESHgh"
        # drawn, then the run XORed in (as ops/loadgen.py does for every buyer)
        drawn = run.rng.randbytes(self.random_bytes)
        xored = bytes(a ^ b for a, b in zip(drawn, run.pad, strict=True))
        cipher = base64.b64encode(xored).decode()  # 128 characters
        tel = (
            ""
            if d.incomplete == "phone"
            else f"#{cipher[:12]}#{cipher[12:44]}=={tag}{cipher[44:52]}#1##"
        )
        receiver = (
            ""
            if d.incomplete == "name"
            else f"#{d.name[0]}*#{cipher[52:68]}=={tag}{cipher[68:72]}#1##"
        )
        no_street = d.incomplete == "street"
        detail = "" if no_street else f"##{cipher[72:100]}=={tag}#1##"
        prov_obj = {"name": PROVINCES[prov][0], "id": GB_PROVINCE[prov]}
        city_obj = {"name": city, "id": city_code}
        town_obj = {"name": district, "id": district_code}
        street_obj = {"name": "", "id": ""} if no_street else {"name": d.town[0], "id": d.town[1]}
        p = dict(template)
        p.update(
            {
                "order_id": d.key,
                "order_status": status,
                "order_status_desc": status_desc,
                "main_status": status,
                "main_status_desc": status_desc,
                "pay_time": d.paid,
                "order_expire_time": d.created + 1800,
                "create_time": d.created,
                "update_time": d.modified,
                "buyer_words": d.remark,
                "pay_type": 1 + d.buyer % 2,
                "channel_payment_no": "" if d.unpaid else f"42000{d.buyer % 10**23:023d}",
                "order_amount": list_total + d.shipping,
                "pay_amount": d.total,
                "post_amount": d.shipping,
                "promotion_amount": promotion,
                "promotion_shop_amount": promotion,
                "shop_cost_amount": promotion,
                "total_promotion_amount": promotion,
                "post_origin_amount": d.shipping,
                "post_tel": tel,
                "encrypt_post_tel": tel,
                "post_receiver": receiver,
                "encrypt_post_receiver": receiver,
                "mask_post_receiver": "" if not receiver else f"{d.name[0]}*",
                "mask_post_tel": "" if not tel else f"{d.phone[0]}*********{d.phone[-1]}",
                "post_addr": {
                    "province": prov_obj,
                    "city": city_obj,
                    "town": town_obj,
                    "street": street_obj,
                    "detail": detail,
                    "encrypt_detail": detail,
                },
                "mask_post_addr": {
                    "province": prov_obj,
                    "city": city_obj,
                    "town": town_obj,
                    "street": street_obj,
                    "detail": "" if no_street else f"{d.street1[:2]}***号",
                },
                "exp_ship_time": d.created + 2 * 86400,
                "doudian_open_id": f"1@#{cipher[100:128]}",
                "sku_order_list": skus,
            }
        )
        return p

    def negative_quantity(self, payload: dict[str, Any], line: int) -> None:
        payload["sku_order_list"][line]["item_num"] = -1

    def bad_amount(self, payload: dict[str, Any], d: Draft, text: str) -> None:
        payload["pay_amount"] = text.format(d.total)
