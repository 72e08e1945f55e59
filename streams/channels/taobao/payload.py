"""Taobao / Tmall payloads for the load generator: the ``trade`` of ``taobao.trade.fullinfo.get``.

Built on samples/payloads/taobao.json. Sub-orders go in ``orders.order[]`` as TOP JSON nests
them, each with ``divide_order_fee`` (the platform's allocation of shop-wide discounts) and
``part_mjz_discount``; the trade carries ``payment`` (postage included), ``post_fee`` and the
shop-wide discount in ``promotion_details``. Times are Beijing local 'YYYY-MM-DD HH:MM:SS';
``tid`` is also sent as ``tid_str``, exact where the number exceeds 2^53. Unpaid trades are
WAIT_BUYER_PAY with no ``pay_time``; paid ones WAIT_SELLER_SEND_GOODS with an ``alipay_no``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from streams.channels.drafts import SURNAMES, Draft, PayloadBuilder, Run, b62, beijing, yuan
from streams.models import Channel
from streams.regions import PROVINCES


@lru_cache(maxsize=1024)
def _item_ids(digits: str) -> tuple[int, str]:
    """``num_iid`` and ``sku_id`` of a catalogue sku (stable: hashed from its code)."""
    return int("7" + digits[:11]), "5" + digits[1:13]


class TaobaoPayloads(PayloadBuilder):
    """Draft -> ``taobao.trade.fullinfo.get`` trade."""

    channel = Channel.TAOBAO

    def order_key(self, run: Run, serial: str) -> str:
        return f"40{run.run7}{serial}0"

    def build(self, d: Draft, run: Run, template: Mapping[str, Any]) -> dict[str, Any]:
        prov, city, _, postcode, district, _ = d.place
        tid = d.key
        subs = []
        list_total = line_disc = 0
        for k, (sku, qty, disc, share, paid) in enumerate(d.lines):
            amount = sku.price * qty
            list_total += amount
            line_disc += disc
            status = "WAIT_BUYER_PAY" if d.unpaid else "WAIT_SELLER_SEND_GOODS"
            num_iid, sku_id = _item_ids(sku.digits)
            sub = {
                "oid": int(f"{tid[:-1]}{k + 1}"),
                "num_iid": num_iid,
                "sku_id": sku_id if sku.variants else "",
                "outer_sku_id": sku.code if sku.variants else "",
                "outer_iid": sku.code,
                "title": sku.title,
                "sku_properties_name": sku.props,
                "num": qty,
                "price": sku.price_s,
                "total_fee": yuan(amount - disc),
                "discount_fee": yuan(disc),
                "adjust_fee": "0.00",
                "payment": yuan(paid + (d.shipping if len(d.lines) == 1 else 0)),
                "divide_order_fee": yuan(paid),
                "part_mjz_discount": yuan(share),
                "refund_status": "NO_REFUND",
                "status": status,
                "cid": 1512 + sku.index,
                "is_oversold": False,
            }
            subs.append(sub)
        p = dict(template)
        p.update(
            {
                "tid": int(tid),
                "tid_str": tid,
                "status": "WAIT_BUYER_PAY" if d.unpaid else "WAIT_SELLER_SEND_GOODS",
                "buyer_nick": f"{SURNAMES[d.buyer % len(SURNAMES)]}**{d.buyer % 10}",
                "buyer_open_uid": "AAH" + b62(d.buyer, 21),
                "created": beijing(d.created),
                "pay_time": beijing(d.paid) if d.paid else "",
                "modified": beijing(d.modified),
                "total_fee": yuan(list_total),
                "payment": yuan(d.total),
                "post_fee": yuan(d.shipping),
                "discount_fee": yuan(line_disc + d.order_disc),
                "alipay_no": ""
                if d.unpaid
                else f"{beijing(d.paid)[:10].replace('-', '')}22001{d.buyer % 10**15:015d}",
                "alipay_id": 2088000000000000 + d.buyer % 10**12,
                "receiver_name": "" if d.incomplete == "name" else d.name,
                "receiver_mobile": "" if d.incomplete == "phone" else d.phone,
                "receiver_phone": "",
                "receiver_state": PROVINCES[prov][0],
                "receiver_city": city,
                "receiver_district": district,
                "receiver_town": "" if d.incomplete == "street" else d.town[0],
                "receiver_address": "" if d.incomplete == "street" else d.street1 + d.street2,
                "receiver_zip": postcode,
                "buyer_message": d.remark,
                "promotion_details": {
                    "promotion_detail": [
                        {
                            "id": int(tid),
                            "promotion_name": "店铺满减"
                            if d.order_disc % 4000 == 0
                            else "店铺优惠券",
                            "discount_fee": yuan(d.order_disc),
                            "promotion_id": f"shopbonus-{d.buyer % 10**10:010d}_{d.order_disc}",
                        }
                    ]
                }
                if d.order_disc
                else {"promotion_detail": []},
                "orders": {"order": subs},
            }
        )
        p["has_buyer_message"] = bool(p["buyer_message"])
        if d.unpaid:
            del p["pay_time"]
        return p

    def negative_quantity(self, payload: dict[str, Any], line: int) -> None:
        payload["orders"]["order"][line]["num"] = -1

    def bad_amount(self, payload: dict[str, Any], d: Draft, text: str) -> None:
        payload["payment"] = text.format(yuan(d.total))
