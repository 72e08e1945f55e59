"""JD POP payloads for the load generator: an order as the POP order APIs return it.

Built on samples/payloads/jd.json. Amounts are yuan strings: ``orderTotalPrice`` (list),
``orderSellerPrice`` (goods after discounts), ``orderPayment`` (what the buyer pays, postage
``freightPrice`` included), ``sellerDiscount``; discounts are itemised in ``couponDetailList``
('30-单品促销优惠' per sku, '41-京东券优惠' for the order). ``itemTotal`` is the quantity as a
string and ``outerSkuId`` the merchant's sku code. ``consigneeInfo`` names the province without
its suffix ('浙江') and carries JD's own area ids (``provinceId``, ``cityId``, ``countyId``,
``townId``). Times are Beijing local 'YYYY-MM-DD HH:MM:SS'; unpaid orders are NOT_PAY.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from streams.channels.drafts import Draft, PayloadBuilder, Run, b62, beijing, yuan
from streams.models import Channel
from streams.regions import PROVINCES

# JD's own area ids for provinces (consigneeInfo.provinceId).
JD_PROVINCE_ID = {
    "BJ": 1,
    "SH": 2,
    "TJ": 3,
    "CQ": 4,
    "HE": 5,
    "SX": 6,
    "HA": 7,
    "LN": 8,
    "JL": 9,
    "HL": 10,
    "NM": 11,
    "JS": 12,
    "SD": 13,
    "AH": 14,
    "ZJ": 15,
    "FJ": 16,
    "HB": 17,
    "HN": 18,
    "GD": 19,
    "GX": 20,
    "JX": 21,
    "SC": 22,
    "HI": 23,
    "GZ": 24,
    "YN": 25,
    "XZ": 26,
    "SN": 27,
    "GS": 28,
    "QH": 29,
    "NX": 30,
    "XJ": 31,
}


@lru_cache(maxsize=1024)
def _item_ids(digits: str) -> tuple[str, str]:
    """``skuId`` and ``wareId`` of a catalogue sku (stable: hashed from its code)."""
    return "1000" + digits[2:10], "1000" + digits[10:18]


class JdPayloads(PayloadBuilder):
    """Draft -> JD POP order."""

    channel = Channel.JD

    def order_key(self, run: Run, serial: str) -> str:
        return f"3{run.run7}{serial}"

    def build(self, d: Draft, run: Run, template: Mapping[str, Any]) -> dict[str, Any]:
        prov, city, city_code, _, district, district_code = d.place
        province = PROVINCES[prov][0]
        for suffix in ("壮族自治区", "回族自治区", "维吾尔自治区", "自治区", "省", "市"):
            if province.endswith(suffix):
                province = province[: -len(suffix)]
                break
        items: list[dict[str, Any]] = []
        coupons: list[dict[str, Any]] = []
        list_total = line_disc = 0
        for sku, qty, disc, _, _ in d.lines:
            list_total += sku.price * qty
            line_disc += disc
            sku_id, ware_id = _item_ids(sku.digits)
            items.append(
                {
                    "skuId": sku_id,
                    "outerSkuId": sku.code,
                    "skuName": f"{sku.title} {sku.props.split(':')[-1]}".strip(),
                    "jdPrice": sku.price_s,
                    "itemTotal": str(qty),
                    "wareId": ware_id,
                    "productNo": sku.code.removeprefix("SKU-"),
                    "giftPoint": "0",
                    "serviceName": "",
                    "newStoreId": "0",
                }
            )
            if disc:
                coupons.append(
                    {
                        "orderId": d.key,
                        "skuId": sku_id,
                        "couponType": "30-单品促销优惠",
                        "couponPrice": yuan(disc),
                    }
                )
        if d.order_disc:
            coupons.append(
                {
                    "orderId": d.key,
                    "skuId": None,
                    "couponType": "41-京东券优惠",
                    "couponPrice": yuan(d.order_disc),
                }
            )
        street = "" if d.incomplete == "street" else d.street1 + d.street2
        p = dict(template)
        p.update(
            {
                "orderId": d.key,
                "orderTotalPrice": yuan(list_total),
                "orderSellerPrice": yuan(d.goods),
                "orderPayment": yuan(d.total),
                "freightPrice": yuan(d.shipping),
                "sellerDiscount": yuan(line_disc + d.order_disc),
                "orderState": "NOT_PAY" if d.unpaid else "WAIT_SELLER_STOCK_OUT",
                "orderStateRemark": "等待付款" if d.unpaid else "等待出库",
                "orderRemark": d.remark,
                "orderStartTime": beijing(d.created),
                "paymentConfirmTime": beijing(d.paid) if d.paid else "",
                "modified": beijing(d.modified),
                "pin": f"jd_{d.buyer % 16**4:04x}****{d.buyer % 16**3:03x}",
                "open_id_buyer": b62(d.buyer >> 7, 24),
                "consigneeInfo": {
                    "fullname": "" if d.incomplete == "name" else d.name,
                    "telephone": "",
                    "mobile": "" if d.incomplete == "phone" else d.phone,
                    "fullAddress": f"{province}{city}{district}{d.town[0]}{street}"
                    if street
                    else "",
                    "province": province,
                    "provinceId": str(JD_PROVINCE_ID[prov]),
                    "city": city,
                    "cityId": str(int(city_code[:4])),
                    "county": district,
                    "countyId": district_code,
                    "town": d.town[0],
                    "townId": d.town[1],
                },
                "itemInfoList": items,
                "couponDetailList": coupons,
            }
        )
        return p

    def negative_quantity(self, payload: dict[str, Any], line: int) -> None:
        payload["itemInfoList"][line]["itemTotal"] = "-1"

    def bad_amount(self, payload: dict[str, Any], d: Draft, text: str) -> None:
        payload["orderSellerPrice"] = text.format(yuan(d.goods))
