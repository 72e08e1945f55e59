"""Why an order is held, rejected or cancelled: one vocabulary of codes.

The codes travel as strings (events' ``reason``, the record's ``hold_reason`` and
``reject_reason``, ClickHouse facts, the held list, reports), so each is a ``StrEnum`` member
whose value is the code on the wire. A rule names a member, never a string of its own, so a
typo is a type error and the reports can list every code there is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Reason(StrEnum):
    # Audit rules (order/audit.py, config/audit.toml): each holds or rejects as configured.
    NON_POSITIVE_QUANTITY = "non_positive_quantity"
    IMPLAUSIBLE_QUANTITY = "implausible_quantity"
    BLACKLISTED = "blacklisted"
    UNPAID = "unpaid"
    REFUNDED = "refunded"
    ADDRESS_INCOMPLETE = "address_incomplete"
    ADDRESS_IMPLAUSIBLE = "address_implausible"
    PHONE_IMPLAUSIBLE = "phone_implausible"
    UNKNOWN_SKU = "unknown_sku"
    SCALPER_SUSPECTED = "scalper_suspected"
    PRICE_BELOW_LIST = "price_below_list"
    HIGH_VALUE = "high_value"
    COD = "cod"
    REMARK_REVIEW = "remark_review"
    SHIPPED_AT_CHANNEL = "shipped_at_channel"
    # Not released yet (order/gates.py): reserved and waiting in routed, or, for a pre-sale of a
    # shop that reserves at the balance, held until it is paid.
    AWAITING_BALANCE = "awaiting_balance"  # pre-sale deposit paid, balance due
    CHANNEL_SHIP_HOLD = "channel_ship_hold"  # the channel forbids shipping yet
    SHIP_DATE = "ship_date"  # not before its ship date
    # Stock and the WMS loop (order/decisions.py, order/wms.py).
    OUT_OF_STOCK = "out_of_stock"  # held, or rejected under the shop's reject policy
    RESERVATION_RELEASED = "reservation_released"
    SHORT_PICK = "short_pick"
    WMS_EXCEPTION = "wms_exception"
    # Cancels (kept as the hold reason while the WMS is asked to stop the parcels).
    CANCELLED_AT_CHANNEL = "cancelled_at_channel"
    CANCELLED_BY_BUYER = "cancelled_by_buyer"
    CANCELLED_BY_OPERATOR = "cancelled_by_operator"
    UNPAID_TIMEOUT = "unpaid_timeout"
    CANCELLED = "cancelled"  # a stop confirmed without a reason on record


NoReason = Literal[""]
