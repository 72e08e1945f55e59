"""Stage 3: audit rules. Each rule looks at one order and may hold or reject it.

Pure functions over the Order and a small context, so rules are tested without any server.
Holds wait for a person or an event (payment, address fix); rejects are final.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from streams.models import ChannelStatus, Order, PaymentStatus


class Verdict(StrEnum):
    PASS = "pass"
    HOLD = "hold"
    REJECT = "reject"


@dataclass(frozen=True)
class AuditResult:
    verdict: Verdict
    reason: str = ""
    detail: str = ""


PASS = AuditResult(Verdict.PASS)


@dataclass(frozen=True)
class AuditContext:
    known_skus: frozenset[str]
    max_line_quantity: int = 999


Rule = Callable[[Order, AuditContext], AuditResult | None]

REQUIRED_ADDRESS_PARTS = ("name", "phone", "province", "city", "street")


def check_quantities(order: Order, ctx: AuditContext) -> AuditResult | None:
    bad = [line.line_id for line in order.lines if line.quantity <= 0]
    if bad:
        return AuditResult(Verdict.REJECT, "non_positive_quantity", f"lines {', '.join(bad)}")
    big = [line.line_id for line in order.lines if line.quantity > ctx.max_line_quantity]
    if big:
        return AuditResult(
            Verdict.HOLD,
            "implausible_quantity",
            f"lines {', '.join(big)} exceed {ctx.max_line_quantity} units",
        )
    return None


def check_address(order: Order, ctx: AuditContext) -> AuditResult | None:
    missing = [part for part in REQUIRED_ADDRESS_PARTS if not getattr(order.address, part).strip()]
    if missing:
        return AuditResult(Verdict.HOLD, "address_incomplete", f"missing {', '.join(missing)}")
    return None


def check_payment(order: Order, ctx: AuditContext) -> AuditResult | None:
    if order.payment.status is PaymentStatus.UNPAID:
        return AuditResult(Verdict.HOLD, "unpaid", "waiting for the channel to confirm payment")
    if order.payment.status is PaymentStatus.REFUNDED:
        return AuditResult(Verdict.REJECT, "refunded", "refunded before fulfilment")
    return None


def check_skus(order: Order, ctx: AuditContext) -> AuditResult | None:
    unknown = sorted({line.sku for line in order.lines} - ctx.known_skus)
    if unknown:
        return AuditResult(Verdict.HOLD, "unknown_sku", f"no stock record for {', '.join(unknown)}")
    return None


def check_channel_status(order: Order, ctx: AuditContext) -> AuditResult | None:
    """An order the channel already calls shipped must not be fulfilled twice unseen."""
    if order.channel_status in (ChannelStatus.SHIPPED, ChannelStatus.COMPLETED):
        return AuditResult(
            Verdict.HOLD, "shipped_at_channel", "channel says shipped; check before fulfilling"
        )
    return None


# Among holds the first rule speaks: the channel-status check comes last.
RULES: tuple[Rule, ...] = (
    check_quantities,
    check_payment,
    check_address,
    check_skus,
    check_channel_status,
)


def audit(order: Order, ctx: AuditContext, rules: Iterable[Rule] = RULES) -> AuditResult:
    """A reject anywhere wins over any hold (a hold would only delay the same answer); among
    holds, the first rule in order speaks."""
    results = [r for r in (rule(order, ctx) for rule in rules) if r is not None]
    rejects = [r for r in results if r.verdict is Verdict.REJECT]
    return (rejects or results or [PASS])[0]
