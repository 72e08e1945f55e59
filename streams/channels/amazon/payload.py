"""Amazon payloads for the load generator: SP-API ``getOrder`` with ``getOrderItems`` attached.

Built on samples/payloads/amazon.json. ``AmazonOrderId`` is '3-7-7' digits; money is
``{"CurrencyCode", "Amount"}`` objects (``OrderTotal``, per item ``ItemPrice``,
``ShippingPrice``, ``PromotionDiscount``); times are ISO 8601 UTC. The items go in
``OrderItems`` as ``getOrderItems`` returns them, each with the merchant's ``SellerSKU`` and the
``ASIN``. A Pending (unpaid) order has no ``OrderTotal`` and no ``ShippingAddress`` yet. The
order has no place for a buyer's remark and does not name the shop (the producer sets the
oms-shop header, :attr:`shop_header`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from streams.channels.drafts import Draft, PayloadBuilder, Run, b62, iso_utc, yuan
from streams.models import Channel
from streams.regions import PROVINCES

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@lru_cache(maxsize=1024)
def _asin(digits: str) -> str:
    """The ASIN of a catalogue sku (stable: hashed from its code)."""
    return "B0" + "".join(_ALNUM[int(digits[i : i + 2]) % 36] for i in range(0, 16, 2))


class AmazonPayloads(PayloadBuilder):
    """Draft -> SP-API Order with its OrderItems."""

    channel = Channel.AMAZON
    shop_header = "amazon-cn"
    buyer_remark = False

    def order_key(self, run: Run, serial: str) -> str:
        digits = f"4{run.run7}{serial}"
        return f"{digits[:3]}-{digits[3:10]}-{digits[10:]}"

    def build(self, d: Draft, run: Run, template: Mapping[str, Any]) -> dict[str, Any]:
        prov, city, _, postcode, district, _ = d.place
        zero = {"CurrencyCode": "CNY", "Amount": "0.00"}
        items = []
        units = 0
        for k, (sku, qty, disc, share, _paid) in enumerate(d.lines):
            units += qty
            promo = disc + share
            items.append(
                {
                    "ASIN": _asin(sku.digits),
                    "SellerSKU": sku.code,
                    "OrderItemId": f"6{run.run7[:2]}{d.serial}{k:02d}",
                    "Title": f"{sku.title} {sku.props.split(':')[-1]}".strip(),
                    "QuantityOrdered": qty,
                    "QuantityShipped": 0,
                    "ProductInfo": {"NumberOfItems": "1"},
                    "ItemPrice": {"CurrencyCode": "CNY", "Amount": yuan(sku.price * qty)},
                    "ShippingPrice": {
                        "CurrencyCode": "CNY",
                        "Amount": yuan(d.shipping if k == 0 else 0),
                    },
                    "ItemTax": zero,
                    "ShippingTax": zero,
                    "ShippingDiscount": zero,
                    "PromotionDiscount": {"CurrencyCode": "CNY", "Amount": yuan(promo)},
                    "PromotionDiscountTax": zero,
                    "PromotionIds": [f"A{d.buyer % 10**12:012d} Peak-{promo // 100}off"]
                    if promo
                    else [],
                    "IsGift": "false",
                    "ConditionId": "New",
                    "ConditionSubtypeId": "New",
                    "IsTransparency": False,
                }
            )
        address: dict[str, Any] = {
            "Name": d.name,
            "AddressLine1": d.street1,
            "AddressLine2": d.street2,
            "City": city,
            "District": district,
            "StateOrRegion": PROVINCES[prov][0],
            "PostalCode": postcode,
            "CountryCode": "CN",
            "Phone": d.phone,
            "AddressType": "Residential",
        }
        if d.incomplete == "name":
            del address["Name"]
        elif d.incomplete == "phone":
            del address["Phone"]
        elif d.incomplete == "street":
            del address["AddressLine1"], address["AddressLine2"]
        p = dict(template)
        p.update(
            {
                "AmazonOrderId": d.key,
                "SellerOrderId": d.key,
                "PurchaseDate": iso_utc(d.created),
                "LastUpdateDate": iso_utc(d.modified),
                "OrderStatus": "Pending" if d.unpaid else "Unshipped",
                "OrderTotal": {"CurrencyCode": "CNY", "Amount": yuan(d.total)},
                "NumberOfItemsShipped": 0,
                "NumberOfItemsUnshipped": units,
                "EarliestShipDate": iso_utc(d.created),
                "LatestShipDate": iso_utc(d.created + 2 * 86400),
                "ShippingAddress": address,
                "BuyerInfo": {
                    "BuyerEmail": f"{b62(d.buyer, 16).lower()}@marketplace.amazon.cn",
                    "BuyerName": d.name,
                },
                "OrderItems": items,
            }
        )
        if d.unpaid:  # SP-API: a Pending order has no total and no address yet
            del p["OrderTotal"], p["ShippingAddress"]
        return p

    def negative_quantity(self, payload: dict[str, Any], line: int) -> None:
        payload["OrderItems"][line]["QuantityOrdered"] = -1

    def bad_amount(self, payload: dict[str, Any], d: Draft, text: str) -> None:
        payload["OrderTotal"] = {"CurrencyCode": "CNY", "Amount": text.format(yuan(d.total))}
