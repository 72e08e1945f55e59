"""Own-shop payloads for the load generator: the canonical Order JSON (streams/schemas/Order.json).

Built on samples/payloads/own.json. The shop front sends the OMS's own contract: ``lines``
with ``unit_price``, ``discount`` and ``paid_amount`` as yuan strings, ``payment.status``
unpaid or paid, times ISO 8601 with +08:00, the province both as the name and its
``province_code``; ``order_id`` is the id the OMS would derive (streams.models.make_order_id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.channels.drafts import Draft, PayloadBuilder, Run, iso_beijing, yuan
from streams.models import Channel, make_order_id
from streams.regions import PROVINCES


class OwnPayloads(PayloadBuilder):
    """Draft -> canonical Order JSON."""

    channel = Channel.OWN

    def order_key(self, run: Run, serial: str) -> str:
        return f"W{run.run7}-{serial}"

    def build(self, d: Draft, run: Run, template: Mapping[str, Any]) -> dict[str, Any]:
        prov, city, _, postcode, district, _ = d.place
        lines = []
        line_disc = 0
        for k, (sku, qty, disc, share, paid) in enumerate(d.lines):
            line_disc += disc + share
            lines.append(
                {
                    "line_id": str(k + 1),
                    "sku": sku.code,
                    "channel_sku": sku.code,
                    "title": f"{sku.title} {sku.props.split(':')[-1]}".strip(),
                    "quantity": qty,
                    "unit_price": sku.price_s,
                    "discount": yuan(disc + share),
                    "paid_amount": yuan(paid),
                    "is_gift": False,
                }
            )
        shop = template["shop_id"]
        total = yuan(d.total)
        p = dict(template)
        p.update(
            {
                "order_id": make_order_id("own", shop, d.key),
                "external_id": d.key,
                "channel_status": "pending_payment" if d.unpaid else "paid",
                "created_at": iso_beijing(d.created),
                "updated_at": iso_beijing(d.modified),
                "buyer": {
                    "id": f"member-{d.buyer % 10**6:06d}",
                    "name": d.name,
                    "email": f"member{d.buyer % 10**8:08d}@example.com",
                    "phone": d.phone,
                },
                "address": {
                    "country": "CN",
                    "province": PROVINCES[prov][0],
                    "province_code": prov,
                    "city": city,
                    "district": district,
                    "street": ""
                    if d.incomplete == "street"
                    else f"{d.town[0]}{d.street1}{d.street2}",
                    "postcode": postcode,
                    "name": "" if d.incomplete == "name" else d.name,
                    "phone": "" if d.incomplete == "phone" else d.phone,
                },
                "lines": lines,
                "payment": {
                    "status": "unpaid" if d.unpaid else "paid",
                    "method": "wechat_pay" if d.buyer % 3 else "alipay",
                    "paid_total": "0.00" if d.unpaid else total,
                    "paid_at": None if d.unpaid else iso_beijing(d.paid),
                    "transaction_id": "" if d.unpaid else f"42000{d.buyer % 10**23:023d}",
                },
                "shipping_fee": yuan(d.shipping),
                "discount_total": yuan(line_disc),
                "total": total,
                "buyer_remark": d.remark,
                "raw": {
                    "source": ("mini-program", "app", "web")[d.buyer % 3],
                    "coupon_codes": [f"PEAK{d.order_disc // 100}"] if d.order_disc else [],
                },
            }
        )
        return p

    def negative_quantity(self, payload: dict[str, Any], line: int) -> None:
        payload["lines"][line]["quantity"] = -1

    def bad_amount(self, payload: dict[str, Any], d: Draft, text: str) -> None:
        payload["total"] = text.format(yuan(d.total))
