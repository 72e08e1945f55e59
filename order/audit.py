"""Stage 3: audit rules. Each rule looks at one order and may hold or reject it.

Pure functions over the Order and a small context, so rules are tested without any server.
Holds wait for a person or an event (payment, address fix); rejects are final.

What each rule checks, its threshold and its action come from ``config/audit.toml``, validated
at start-up by :func:`load_audit_rules` (a pydantic schema that refuses unknown fields, so a
typo never silently switches a rule off). :data:`DEFAULT_RULES` is what the shipped file says
and serves when there is no file. Counts that need state (scalper velocity) are computed in
Redis by ``state/velocity.py`` and handed in through :class:`AuditContext`; the rule itself
stays pure.

Reason codes, in the order the rules speak (:data:`RULES`):

=======================  =====================================================  ============
reason                   when                                                   action
=======================  =====================================================  ============
non_positive_quantity    a line with quantity <= 0                              reject
implausible_quantity     a line above ``quantity.max_line_quantity``            hold
blacklisted              buyer id, phone or street on a blacklist               reject (cfg)
unpaid                   payment not confirmed (a pre-sale's paid deposit is)     hold
refunded                 refunded before fulfilment                             reject
address_incomplete       a part the country needs is missing (greater China:    hold
                         name, phone, province, city, street; US, DE, JP, GB
                         their postcode too; elsewhere no phone needed)
address_implausible      street too short or without any letter, or a postcode  hold (cfg)
                         not in the country's form (order/address_rules.py)
phone_implausible        not a phone number of the ship-to country              hold (cfg)
unknown_sku              a sku with no stock record                             hold
scalper_suspected        too many recent orders from one buyer or address       hold (cfg)
price_below_list         a line paid below ratio x list price                   hold (cfg)
high_value               order total at or above the currency's threshold       hold (cfg)
cod                      cash on delivery above the currency's limit            hold (cfg)
remark_review            buyer remark asks for something a person must do       hold (cfg)
shipped_at_channel       the channel already calls the order shipped            hold
=======================  =====================================================  ============

"(cfg)": ``action = "hold" | "reject"`` in the rule's section. Every rule has ``enabled``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from core.config import ConfigError, load_config
from core.privacy import is_protected, normalise_phone
from order.address_rules import CHINA_PARTS, postcode_problem, rules_for
from order.gates import awaits_balance
from order.reasons import NoReason, Reason
from streams.models import Address, ChannelStatus, Order, PaymentStatus

# --- verdicts -------------------------------------------------------------------------------


class Verdict(StrEnum):
    PASS = "pass"
    HOLD = "hold"
    REJECT = "reject"


@dataclass(frozen=True)
class AuditResult:
    verdict: Verdict
    reason: Reason | NoReason = ""
    detail: str = ""


PASS = AuditResult(Verdict.PASS)

# --- normalisation shared by rules and the velocity keys ------------------------------------

_PHONE_NOISE = re.compile(r"[\s()（）.]")
_CN_PHONE = re.compile(
    r"(?:\+?86-?|0086-?)?"
    r"(?:1[3-9]\d{9}|0\d{2,3}-?\d{7,8})"  # mobile, or area code + landline
    r"(?:(?:-|转|,|#|ext|x)\d{1,6})?",  # extension of a platform privacy number
    re.IGNORECASE,
)


def normalise_text(text: str) -> str:
    """Letters and digits only, case-folded, full-width folded (NFKC): the form two spellings
    of one address share ('文三路 90 号' and '文三路９０号')."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in folded if c.isalnum())


def is_plausible_phone(phone: str, country: str) -> bool:
    """A CN number is a mobile (1[3-9] + 9 digits) or a landline with its area code, either
    possibly with a privacy-number extension; elsewhere 6 to 15 digits (E.164)."""
    if country.upper() == "CN":
        cleaned = _PHONE_NOISE.sub("", unicodedata.normalize("NFKC", phone))
        # dashes group digits ('138-0013-8000') or set off an extension ('...8000-1234')
        return any(_CN_PHONE.fullmatch(c) for c in (cleaned, cleaned.replace("-", "")))
    return 6 <= sum(c.isdigit() for c in phone) <= 15


def _normalise_words(text: str) -> str:
    """Case-folded, NFKC, runs of whitespace as one space: how remarks and keywords compare."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


# --- configuration schema -------------------------------------------------------------------


class AuditConfigError(ConfigError):
    """The audit rules file cannot be used; the message names the file and the field."""


Action = Literal["hold", "reject"]


def _refuse_float(value: Any) -> Any:
    if isinstance(value, bool | float):
        raise ValueError(
            'write amounts as strings, e.g. "5000.00" (a TOML float is binary, not exact money)'
        )
    return value


ConfigMoney = Annotated[
    Decimal, BeforeValidator(_refuse_float), Field(ge=0, le=Decimal("99999999999.99"))
]


def _check_currency(code: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError("a currency is an ISO 4217 code in capitals, e.g. CNY")
    return code


CurrencyCode = Annotated[str, AfterValidator(_check_currency)]
Amounts = dict[CurrencyCode, ConfigMoney]


class RuleSwitch(BaseModel):
    """A rule with nothing to tune but whether it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


class ActionRule(RuleSwitch):
    """A rule whose finding may hold the order for a person or reject it outright."""

    action: Action = "hold"


class QuantityRule(RuleSwitch):
    max_line_quantity: Annotated[int, Field(ge=1, le=1_000_000)] = 999


class AddressImplausibleRule(ActionRule):
    min_street_chars: Annotated[int, Field(ge=0, le=100)] = 4


class CodRule(ActionRule):
    """Cash on delivery risks a refused parcel: hold those above ``max_amount`` (per currency;
    a currency not listed is not limited)."""

    max_amount: Amounts = Field(default_factory=lambda: {"CNY": Decimal("2000.00")})


class HighValueRule(ActionRule):
    """Orders at or above ``thresholds`` (per currency; unlisted currencies are not checked)."""

    thresholds: Amounts = Field(
        default_factory=lambda: {"CNY": Decimal("20000.00"), "USD": Decimal("3000.00")}
    )


class BlacklistRule(ActionRule):
    """Phones are kept normalised (digits, no +86), streets normalised (normalise_text); a
    street matches when it contains a listed one."""

    action: Action = "reject"
    buyer_ids: frozenset[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]] = (
        frozenset()
    )
    phones: frozenset[str] = frozenset()
    addresses: tuple[str, ...] = ()

    @field_validator("phones", mode="before")
    @classmethod
    def _normalise_phones(cls, value: Any) -> Any:
        return _normalised_entries(value, normalise_phone, "a phone number with digits")

    @field_validator("addresses", mode="before")
    @classmethod
    def _normalise_addresses(cls, value: Any) -> Any:
        return _normalised_entries(value, normalise_text, "a street with letters or digits")


class ScalperRule(ActionRule):
    """More than ``max_orders_per_*`` orders created within ``window_s`` seconds."""

    window_s: Annotated[float, Field(gt=0, le=30 * 86400)] = 3600.0
    max_orders_per_buyer: Annotated[int, Field(ge=1)] = 5
    max_orders_per_address: Annotated[int, Field(ge=1)] = 10


class PriceBelowListRule(ActionRule):
    """A line paid below ``min_paid_ratio`` x its list price is most often a pricing mistake."""

    min_paid_ratio: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.3")


class RemarkReviewRule(ActionRule):
    """``ignore`` phrases are cut out of the remark before ``keywords`` are looked for, so a
    negation ('不要发票', no invoice wanted) does not send the order to a person."""

    keywords: tuple[str, ...] = (
        "发票",
        "开票",
        "改地址",
        "修改地址",
        "换地址",
        "地址错",
        "加急",
        "invoice",
        "change address",
        "change the address",
        "wrong address",
        "urgent",
    )
    ignore: tuple[str, ...] = ("不要发票", "不要放发票", "不用发票", "不需要发票", "无需发票")

    @field_validator("keywords", "ignore", mode="before")
    @classmethod
    def _normalise_phrases(cls, value: Any) -> Any:
        return _normalised_entries(value, _normalise_words, "a word or phrase")


def _normalised_entries(value: Any, normalise: Callable[[str], str], what: str) -> Any:
    """Entries in the form they are compared in; an entry that normalises to nothing would
    match everything (or nothing), so it is an error naming its position."""
    if not isinstance(value, list | tuple | set | frozenset):
        return value  # the field's own type check reports it
    out = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            raise ValueError(f"entry {index} must be a string")
        normalised = normalise(entry)
        if not normalised:
            raise ValueError(f"entry {index} ({entry!r}) is not {what}")
        out.append(normalised)
    return out


class AuditRules(BaseModel):
    """Every audit rule's switch and settings; a section left out of the file keeps the values
    below (blacklists: empty)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: QuantityRule = QuantityRule()
    blacklist: BlacklistRule = BlacklistRule()
    payment: RuleSwitch = RuleSwitch()
    address_incomplete: RuleSwitch = RuleSwitch()
    address_implausible: AddressImplausibleRule = AddressImplausibleRule()
    phone_implausible: ActionRule = ActionRule()
    unknown_sku: RuleSwitch = RuleSwitch()
    scalper: ScalperRule = ScalperRule()
    price_below_list: PriceBelowListRule = PriceBelowListRule()
    high_value: HighValueRule = HighValueRule()
    cod: CodRule = CodRule()
    remark_review: RemarkReviewRule = RemarkReviewRule()
    shipped_at_channel: RuleSwitch = RuleSwitch()


# The demo's blacklisted number (ops/loadgen.py ships a few orders to it); config/audit.toml
# lists the same one, and a test holds DEFAULT_RULES equal to that file.
DEMO_BLACKLISTED_PHONE = "13000000666"

DEFAULT_RULES = AuditRules(blacklist=BlacklistRule(phones=frozenset({DEMO_BLACKLISTED_PHONE})))


def load_audit_rules(path: Path) -> AuditRules:
    """Read and validate the rules file; no file means :data:`DEFAULT_RULES`.

    Raises :class:`AuditConfigError` naming the file and each bad field, so a worker refuses to
    start on a broken file instead of auditing with half of it.
    """
    return load_config(
        path, AuditRules, what="audit rules", error=AuditConfigError, default=DEFAULT_RULES
    )


# --- context --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Velocity:
    """Orders created within the scalper window from the order's buyer and to its address,
    the order itself included (state/velocity.py counts them); 0 when not counted."""

    buyer: int = 0
    address: int = 0


@dataclass(frozen=True)
class AuditContext:
    """What the rules need besides the order.

    ``max_line_quantity`` given explicitly (as the worker does from OMS_MAX_LINE_QUANTITY)
    wins; left out (None), ``rules.quantity.max_line_quantity`` applies. ``velocity`` maps
    order id -> counts; an order missing from it is not checked for scalping.
    """

    known_skus: frozenset[str]
    max_line_quantity: int | None = None
    rules: AuditRules = DEFAULT_RULES
    velocity: Mapping[str, Velocity] = field(default_factory=dict)

    @property
    def line_limit(self) -> int:
        if self.max_line_quantity is None:
            return self.rules.quantity.max_line_quantity
        return self.max_line_quantity


Rule = Callable[[Order, AuditContext], AuditResult | None]

REQUIRED_ADDRESS_PARTS = CHINA_PARTS  # greater China's; other countries': order/address_rules.py
PROTECTED_PARTS = frozenset({"name", "phone", "street"})  # the region is always plain


def _flag(rule: ActionRule, reason: Reason, detail: str) -> AuditResult:
    return AuditResult(Verdict(rule.action), reason, detail)


def _line_ids(ids: Iterable[str]) -> str:
    return f"lines {', '.join(ids)}"


# --- rules ----------------------------------------------------------------------------------


def check_quantities(order: Order, ctx: AuditContext) -> AuditResult | None:
    if not ctx.rules.quantity.enabled:
        return None
    bad = [line.line_id for line in order.lines if line.quantity <= 0]
    if bad:
        return AuditResult(Verdict.REJECT, Reason.NON_POSITIVE_QUANTITY, _line_ids(bad))
    limit = ctx.line_limit
    big = [line.line_id for line in order.lines if line.quantity > limit]
    if big:
        return AuditResult(
            Verdict.HOLD, Reason.IMPLAUSIBLE_QUANTITY, f"{_line_ids(big)} exceed {limit} units"
        )
    return None


def check_blacklist(order: Order, ctx: AuditContext) -> AuditResult | None:
    """Says which list matched, never the value: the detail lands in the order's history."""
    rule = ctx.rules.blacklist
    if not rule.enabled:
        return None
    if order.buyer.id.strip() in rule.buyer_ids:
        return _flag(rule, Reason.BLACKLISTED, "buyer id is on the blacklist")
    phones = {normalise_phone(order.address.phone), normalise_phone(order.buyer.phone)} - {""}
    if phones & rule.phones:
        return _flag(rule, Reason.BLACKLISTED, "phone is on the blacklist")
    street = normalise_text(order.address.street)
    if street and any(entry in street for entry in rule.addresses):
        return _flag(rule, Reason.BLACKLISTED, "address is on the blacklist")
    return None


def check_payment(order: Order, ctx: AuditContext) -> AuditResult | None:
    if not ctx.rules.payment.enabled:
        return None
    if order.payment.status is PaymentStatus.UNPAID and not awaits_balance(order):
        return AuditResult(
            Verdict.HOLD, Reason.UNPAID, "waiting for the channel to confirm payment"
        )
    if order.payment.status is PaymentStatus.REFUNDED:
        return AuditResult(Verdict.REJECT, Reason.REFUNDED, "refunded before fulfilment")
    return None


def check_address(order: Order, ctx: AuditContext) -> AuditResult | None:
    """The parts the ship-to country needs, named as that country calls them ('missing
    state, ZIP code' for a US address)."""
    if not ctx.rules.address_incomplete.enabled:
        return None
    rules = rules_for(order.address.country)
    missing = [rules.label(p) for p in rules.parts if not _has_part(order.address, p)]
    if missing:
        return AuditResult(Verdict.HOLD, Reason.ADDRESS_INCOMPLETE, f"missing {', '.join(missing)}")
    return None


def _has_part(address: Address, part: str) -> bool:
    """A receiver part the platform encrypted is there: its ciphertext, or the OAID that
    stands for name, phone and address, is what the waybill call prints from."""
    if getattr(address, part).strip():
        return True
    protected = address.protected
    if protected is None or part not in PROTECTED_PARTS:
        return False
    return bool(protected.oaid or getattr(protected, part))


def check_address_plausible(order: Order, ctx: AuditContext) -> AuditResult | None:
    """A street a courier cannot find, or a postcode not in the ship-to country's form."""
    rule = ctx.rules.address_implausible
    if not rule.enabled:
        return None
    problem = _street_problem(order.address.street, rule) or postcode_problem(order.address)
    return _flag(rule, Reason.ADDRESS_IMPLAUSIBLE, problem) if problem else None


def _street_problem(street: str, rule: AddressImplausibleRule) -> str:
    """Masked or encrypted streets are the platform's to judge; an empty one is
    address_incomplete's."""
    street = street.strip()
    if not street or is_protected(street):
        return ""
    chars = normalise_text(street)
    if len(chars) < rule.min_street_chars:
        return f"street has {len(chars)} characters, at least {rule.min_street_chars} expected"
    if not any(c.isalpha() for c in chars):
        return "street has no letters, only digits"
    return ""


def check_phone_plausible(order: Order, ctx: AuditContext) -> AuditResult | None:
    """Masked ('138****1234') and encrypted (Douyin) phones pass: the platform vouches for
    them and decrypts them when the label is printed."""
    rule = ctx.rules.phone_implausible
    phone = order.address.phone.strip()
    if not rule.enabled or not phone or is_protected(phone):
        return None
    country = order.address.country
    if not is_plausible_phone(phone, country):
        return _flag(
            rule, Reason.PHONE_IMPLAUSIBLE, f"ship-to phone is not a plausible {country} number"
        )
    return None


def check_skus(order: Order, ctx: AuditContext) -> AuditResult | None:
    if not ctx.rules.unknown_sku.enabled:
        return None
    unknown = sorted({line.sku for line in order.lines} - ctx.known_skus)
    if unknown:
        return AuditResult(
            Verdict.HOLD, Reason.UNKNOWN_SKU, f"no stock record for {', '.join(unknown)}"
        )
    return None


def check_scalper(order: Order, ctx: AuditContext) -> AuditResult | None:
    rule = ctx.rules.scalper
    velocity = ctx.velocity.get(order.order_id)
    if not rule.enabled or velocity is None:
        return None
    window = f"within {rule.window_s:g}s"
    if velocity.buyer > rule.max_orders_per_buyer:
        return _flag(
            rule, Reason.SCALPER_SUSPECTED, f"{velocity.buyer} orders from the buyer {window}"
        )
    if velocity.address > rule.max_orders_per_address:
        return _flag(
            rule, Reason.SCALPER_SUSPECTED, f"{velocity.address} orders to the address {window}"
        )
    return None


def check_price_below_list(order: Order, ctx: AuditContext) -> AuditResult | None:
    """Gifts and lines without a list price have nothing to compare with."""
    rule = ctx.rules.price_below_list
    if not rule.enabled:
        return None
    cheap = [
        line.line_id
        for line in order.lines
        if not line.is_gift
        and line.unit_price > 0
        and line.paid_amount < rule.min_paid_ratio * line.unit_price * line.quantity
    ]
    if cheap:
        return _flag(
            rule,
            Reason.PRICE_BELOW_LIST,
            f"{_line_ids(cheap)} paid below {rule.min_paid_ratio:%} of list price",
        )
    return None


def check_high_value(order: Order, ctx: AuditContext) -> AuditResult | None:
    rule = ctx.rules.high_value
    threshold = rule.thresholds.get(order.currency.upper())
    if not rule.enabled or threshold is None or order.total < threshold:
        return None
    return _flag(
        rule, Reason.HIGH_VALUE, f"total {order.total} {order.currency} at or above {threshold}"
    )


def check_cod(order: Order, ctx: AuditContext) -> AuditResult | None:
    rule = ctx.rules.cod
    limit = rule.max_amount.get(order.currency.upper())
    if (
        not rule.enabled
        or order.payment.status is not PaymentStatus.COD
        or limit is None
        or order.total <= limit
    ):
        return None
    return _flag(
        rule, Reason.COD, f"cash on delivery of {order.total} {order.currency} above {limit}"
    )


def check_remark(order: Order, ctx: AuditContext) -> AuditResult | None:
    """Names the keyword, not the remark (which may carry a name or an address)."""
    rule = ctx.rules.remark_review
    if not rule.enabled or not order.buyer_remark.strip():
        return None
    text = _normalise_words(order.buyer_remark)
    for phrase in rule.ignore:
        text = text.replace(phrase, " ")
    hit = next((word for word in rule.keywords if word in text), None)
    if hit is None:
        return None
    return _flag(rule, Reason.REMARK_REVIEW, f"buyer remark mentions {hit!r}")


def check_channel_status(order: Order, ctx: AuditContext) -> AuditResult | None:
    """An order the channel already calls shipped must not be fulfilled twice unseen."""
    if not ctx.rules.shipped_at_channel.enabled:
        return None
    if order.channel_status in (ChannelStatus.SHIPPED, ChannelStatus.COMPLETED):
        return AuditResult(
            Verdict.HOLD, Reason.SHIPPED_AT_CHANNEL, "channel says shipped; check before fulfilling"
        )
    return None


# Among holds the first rule speaks, so the order is what an operator should see first: a
# waiting payment before a fixable address before stock and risk checks; the channel-status
# check comes last.
RULES: tuple[Rule, ...] = (
    check_quantities,
    check_blacklist,
    check_payment,
    check_address,
    check_address_plausible,
    check_phone_plausible,
    check_skus,
    check_scalper,
    check_price_below_list,
    check_high_value,
    check_cod,
    check_remark,
    check_channel_status,
)


# About shipping it ourselves: an order the platform ships, or a virtual one, skips them (the
# platform holds the address and the stock; Amazon calls an AFN order shipped on its own).
SHIPPING_RULES: frozenset[Rule] = frozenset(
    {
        check_address,
        check_address_plausible,
        check_phone_plausible,
        check_skus,
        check_cod,
        check_channel_status,
    }
)


def audit(order: Order, ctx: AuditContext, rules: Iterable[Rule] = RULES) -> AuditResult:
    """A reject anywhere wins over any hold (a hold would only delay the same answer); among
    holds, the first rule in order speaks."""
    if order.fulfilled_by:
        rules = [rule for rule in rules if rule not in SHIPPING_RULES]
    results = [r for r in (rule(order, ctx) for rule in rules) if r is not None]
    rejects = [r for r in results if r.verdict is Verdict.REJECT]
    return (rejects or results or [PASS])[0]
