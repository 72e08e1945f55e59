"""Shopify payloads for the load generator: the Order object the ``orders/create`` webhook posts.

Built on samples/payloads/shopify.json. Money is yuan strings (``total_price``,
``subtotal_price``, ``total_discounts``) with ``price_set``/``amount_set`` in shop and
presentment money; discounts come as a ``discount_codes`` entry allocated over the lines
(``discount_allocations``). Times are ISO 8601 with the shop's +08:00 offset. Ids are integers
below 2^53 (with ``admin_graphql_api_id`` gids). ``financial_status`` is pending or paid. The
webhook does not name the shop: the producer sets the oms-shop header (:attr:`shop_header`).
The shop charges SF Express 15 yuan below 500 yuan of goods, whatever the burst does.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from streams.channels.drafts import Draft, PayloadBuilder, Run, iso_beijing, yuan
from streams.models import Channel
from streams.regions import PROVINCES


@lru_cache(maxsize=1024)
def _item_ids(digits: str) -> tuple[int, int]:
    """``product_id`` and ``variant_id`` of a catalogue sku (stable: hashed from its code)."""
    return int("80" + digits[5:16]), int("450" + digits[6:17])


class ShopifyPayloads(PayloadBuilder):
    """Draft -> Shopify webhook Order."""

    channel = Channel.SHOPIFY
    shop_header = "geek-digital.myshopify.com"

    def order_key(self, run: Run, serial: str) -> str:
        return f"5{run.run6}{serial}"

    def shipping(self, goods: int) -> int | None:
        return 1500 if goods < 50000 else 0

    def build(self, d: Draft, run: Run, template: Mapping[str, Any]) -> dict[str, Any]:
        prov, city, _, postcode, district, _ = d.place
        serial = int(d.serial)
        items = []
        list_total = discounts = grams = 0
        for k, (sku, qty, disc, share, _paid) in enumerate(d.lines):
            amount = sku.price * qty
            list_total += amount
            discounts += disc + share
            grams += sku.grams * qty
            product_id, variant_id = _item_ids(sku.digits)
            line_id = int(f"1{run.run6[:5]}{d.serial}{k}")
            money = {"amount": sku.price_s, "currency_code": "CNY"}
            allocation = yuan(disc + share)
            variant = sku.props.split(":")[-1] if sku.props else None
            items.append(
                {
                    "id": line_id,
                    "admin_graphql_api_id": f"gid://shopify/LineItem/{line_id}",
                    "product_id": product_id,
                    "variant_id": variant_id,
                    "sku": sku.code,
                    "title": sku.title,
                    "variant_title": variant,
                    "name": f"{sku.title} - {variant}" if variant else sku.title,
                    "vendor": "Geek Digital",
                    "quantity": qty,
                    "current_quantity": qty,
                    "fulfillable_quantity": qty,
                    "price": sku.price_s,
                    "price_set": {"shop_money": money, "presentment_money": money},
                    "total_discount": "0.00",
                    "discount_allocations": [
                        {
                            "amount": allocation,
                            "discount_application_index": 0,
                            "amount_set": {
                                "shop_money": {"amount": allocation, "currency_code": "CNY"},
                                "presentment_money": {"amount": allocation, "currency_code": "CNY"},
                            },
                        }
                    ]
                    if disc + share
                    else [],
                    "gift_card": False,
                    "requires_shipping": True,
                    "taxable": True,
                    "tax_lines": [],
                    "grams": sku.grams,
                    "fulfillment_service": "manual",
                    "fulfillment_status": None,
                    "product_exists": True,
                }
            )
        shipping = yuan(d.shipping)
        ship_money = {"amount": shipping, "currency_code": "CNY"}
        code = f"PEAK{discounts // 100}" if discounts else ""
        surname, given = d.name[0], d.name[1:]
        email = f"buyer{d.buyer % 10**8:08d}@example.com"
        address = {
            "first_name": given,
            "last_name": surname,
            "name": d.name,
            "address1": district + d.street1,
            "address2": d.street2,
            "city": city,
            "province": PROVINCES[prov][1],
            "province_code": prov,
            "country": "China",
            "country_code": "CN",
            "zip": postcode,
            "phone": f"+86{d.phone}",
            "company": None,
        }
        shipping_address = dict(address)
        if d.incomplete == "name":
            shipping_address.update(first_name="", last_name="", name="")
        elif d.incomplete == "phone":
            shipping_address["phone"] = None
        elif d.incomplete == "street":
            shipping_address.update(address1="", address2=None)
        subtotal = yuan(d.goods)
        total = yuan(d.total)
        p = dict(template)
        p.update(
            {
                "id": int(d.key),
                "admin_graphql_api_id": f"gid://shopify/Order/{d.key}",
                "name": f"#{1001 + serial % 10**8}",
                "order_number": 1001 + serial % 10**8,
                "number": 1 + serial % 10**8,
                "token": f"{d.buyer % 16**32:032x}",
                "created_at": iso_beijing(d.created),
                "updated_at": iso_beijing(d.modified),
                "processed_at": iso_beijing(d.created),
                "current_subtotal_price": subtotal,
                "current_total_discounts": yuan(discounts),
                "current_total_price": total,
                "subtotal_price": subtotal,
                "total_line_items_price": yuan(list_total),
                "total_discounts": yuan(discounts),
                "total_price": total,
                "total_outstanding": total if d.unpaid else "0.00",
                "total_weight": grams,
                "total_shipping_price_set": {
                    "shop_money": ship_money,
                    "presentment_money": ship_money,
                },
                "financial_status": "pending" if d.unpaid else "paid",
                "payment_gateway_names": ["manual"] if d.unpaid else ["shopify_payments"],
                "discount_codes": [
                    {"code": code, "amount": yuan(discounts), "type": "fixed_amount"}
                ]
                if code
                else [],
                "discount_applications": [
                    {
                        "type": "discount_code",
                        "value": f"{discounts / 100:.1f}",
                        "value_type": "fixed_amount",
                        "allocation_method": "across",
                        "target_selection": "all",
                        "target_type": "line_item",
                        "code": code,
                    }
                ]
                if code
                else [],
                "note": d.remark or None,
                "email": email,
                "contact_email": email,
                "browser_ip": f"203.0.113.{d.buyer % 250 + 1}",
                "customer": {
                    "id": 7000000000000 + d.buyer % 10**12,
                    "email": email,
                    "first_name": given,
                    "last_name": surname,
                    "phone": f"+86{d.phone}",
                    "currency": "CNY",
                    "state": "enabled",
                    "verified_email": True,
                },
                "billing_address": address,
                "shipping_address": shipping_address,
                "line_items": items,
                "shipping_lines": [
                    {
                        "id": int(f"44{run.run6[:4]}{d.serial}"),
                        "code": "SF Express",
                        "title": "顺丰标快",
                        "source": "shopify",
                        "price": shipping,
                        "discounted_price": shipping,
                        "discount_allocations": [],
                        "tax_lines": [],
                    }
                ]
                if d.shipping
                else [],
            }
        )
        return p

    def negative_quantity(self, payload: dict[str, Any], line: int) -> None:
        payload["line_items"][line]["quantity"] = -1

    def bad_amount(self, payload: dict[str, Any], d: Draft, text: str) -> None:
        payload["total_price"] = text.format(yuan(d.total))
