"""Who may do what: roles, permissions, data scope per shop, and the token format. Pure: no
Redis, no HTTP (``state/tokens.py`` stores tokens, ``agents/api.py`` and ``ops/dashboard.py``
ask ``authorize``).

Roles are those of an OMS back office. The table ``ROLE_PERMISSIONS`` is the one place that
says what each may do, and why:

* ``customer_service`` reads orders and works the held queue (release a hold after a call to
  the buyer, cancel on the buyer's request): that is the desk's whole job. It never touches
  stock (a count correction is the warehouse's word) nor the audit rules.
* ``warehouse`` reads orders (to find what a parcel is) and adjusts stock (damage, recounts,
  found units). It does not decide about holds or cancels: those are promises to a buyer.
* ``finance`` reads orders and the sales dashboard (GMV, orders per second): it answers for
  figures, not for operations, so it changes nothing.
* ``admin`` may do everything, including editing the audit rules (config file, checked with
  ``./oms rules check``): a rule change moves every future order, so it is nobody else's.

Data scope: a principal names the shops it may see (``ALL_SHOPS`` for every shop). An order of
another shop is refused as out of scope. Views that sum over every shop (the dashboard, the
audit rules, stock, which is shared by all shops) ask for ``ALL_SHOPS`` scope, so a token
limited to some shops never sees other shops' figures through them.

Tokens look like ``oms_<token id>_<secret>``: the id names the stored record, the secret is
256 random bits shown once at grant. Only a salted PBKDF2-SHA256 hash of the secret is stored;
verification compares in constant time. The secret's entropy (not the iteration count) is what
makes guessing hopeless; the iterations are defence in depth should the hashes leak.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

ALL_SHOPS: Final = "*"
Shops = frozenset[str] | Literal["*"]
TOKEN_PREFIX: Final = "oms"
TOKEN_ID_BYTES: Final = 6  # 12 hex digits: names the record, is not secret
SECRET_BYTES: Final = 32
SALT_BYTES: Final = 16
HASH_ITERATIONS: Final = 20_000
TOKEN_ID_PATTERN: Final = re.compile(r"[0-9a-f]{12}")
SECRET_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{32,128}")
USER_PATTERN: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
SHOP_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class Role(StrEnum):
    CUSTOMER_SERVICE = "customer_service"
    WAREHOUSE = "warehouse"
    FINANCE = "finance"
    ADMIN = "admin"


class Permission(StrEnum):
    READ_ORDERS = "read_orders"
    RELEASE_HOLDS = "release_holds"
    CANCEL_ORDERS = "cancel_orders"
    ADJUST_STOCK = "adjust_stock"
    EDIT_RULES = "edit_rules"
    READ_DASHBOARD = "read_dashboard"


P = Permission
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.CUSTOMER_SERVICE: frozenset({P.READ_ORDERS, P.RELEASE_HOLDS, P.CANCEL_ORDERS}),
    Role.WAREHOUSE: frozenset({P.READ_ORDERS, P.ADJUST_STOCK}),
    Role.FINANCE: frozenset({P.READ_ORDERS, P.READ_DASHBOARD}),
    Role.ADMIN: frozenset(Permission),
}


class AccessError(ValueError):
    """A grant request that cannot be honoured (unknown role, bad user or shop name)."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user, the role granted to them, and the shops they may see."""

    user: str
    role: str  # a Role value; kept as given so a stale record is refused, not crashed on
    shops: Shops = ALL_SHOPS
    token_id: str = ""

    def shops_text(self) -> str:
        return format_shops(self.shops)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED: Final = Decision(True)


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise AccessError(f"unknown role {value!r} (known: {known})") from None


def parse_shops(value: str) -> Shops:
    """``*`` or empty -> every shop; ``S1,S2`` -> those shops."""
    text = value.strip()
    if text in ("", ALL_SHOPS):
        return ALL_SHOPS
    shops = frozenset(part.strip() for part in text.split(",") if part.strip())
    bad = sorted(s for s in shops if not SHOP_PATTERN.fullmatch(s))
    if bad or not shops:
        raise AccessError(f"bad shop id(s) {bad or [value]}: letters, digits, . _ : - only")
    return shops


def format_shops(shops: Shops) -> str:
    return ALL_SHOPS if shops == ALL_SHOPS else ",".join(sorted(shops))


def check_user(user: str) -> str:
    if not USER_PATTERN.fullmatch(user):
        raise AccessError(f"bad user name {user!r}: 1-64 of letters, digits, . _ @ -")
    return user


def in_scope(shops: Shops, shop: str) -> bool:
    """Whether ``shops`` covers ``shop``; asking for ``ALL_SHOPS`` needs every shop."""
    if shops == ALL_SHOPS:
        return True
    return shop != ALL_SHOPS and shop in shops


def authorize(principal: Principal, permission: Permission, shop: str | None = None) -> Decision:
    """May ``principal`` use ``permission`` (on an order of ``shop``, when given)? Refusals
    say why: an unknown role, a permission the role lacks, a shop out of scope."""
    try:
        role = Role(principal.role)
    except ValueError:
        return Decision(False, f"unknown role {principal.role!r}")
    if permission not in ROLE_PERMISSIONS[role]:
        return Decision(False, f"role {role.value} lacks permission {permission.value}")
    if shop is not None and not in_scope(principal.shops, shop):
        what = "every shop" if shop == ALL_SHOPS else f"shop {shop!r}"
        return Decision(False, f"{what} is out of {principal.user}'s scope")
    return ALLOWED


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenParts:
    token_id: str
    secret: str


def new_token() -> tuple[str, TokenParts]:
    """A fresh token (shown once) and its parts."""
    parts = TokenParts(secrets.token_hex(TOKEN_ID_BYTES), secrets.token_urlsafe(SECRET_BYTES))
    return format_token(parts), parts


def format_token(parts: TokenParts) -> str:
    return f"{TOKEN_PREFIX}_{parts.token_id}_{parts.secret}"


def parse_token(token: str) -> TokenParts | None:
    """``oms_<id>_<secret>`` -> its parts; None for anything else (never raises)."""
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not TOKEN_ID_PATTERN.fullmatch(token_id):
        return None
    if not SECRET_PATTERN.fullmatch(secret):
        return None
    return TokenParts(token_id, secret)


def new_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def hash_secret(secret: str, salt: str, iterations: int = HASH_ITERATIONS) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), bytes.fromhex(salt), iterations)
    return digest.hex()


def secret_matches(secret: str, salt: str, stored_hash: str, iterations: int) -> bool:
    """Constant-time comparison of the secret's hash with the stored one."""
    return hmac.compare_digest(hash_secret(secret, salt, iterations), stored_hash)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality of two secrets (the bootstrap admin token)."""
    return hmac.compare_digest(given.encode(), expected.encode())


BEARER: Final = "bearer "


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; '' when there is none."""
    if header[: len(BEARER)].lower() != BEARER:
        return ""
    return header[len(BEARER) :].strip()


def token_id_of(text: str) -> str:
    """The id part of a token, for logs: never the secret."""
    parts = parse_token(text)
    return parts.token_id if parts else "?"


BEARER_PATTERN: Final = re.compile(r"\boms_([0-9a-f]{12})_[A-Za-z0-9_-]+")
HEADER_PATTERN: Final = re.compile(r"(?i)(bearer\s+)\S+|(token=)[^&\s;]+")


def mask_secrets(text: str) -> str:
    """Tokens in ``text`` (a log line, a URL) with their secret replaced: ``oms_<id>_***``;
    any other bearer value or ``token=`` query value becomes ``***``."""
    text = BEARER_PATTERN.sub(lambda m: f"oms_{m.group(1)}_***", text)
    return HEADER_PATTERN.sub(lambda m: f"{m.group(1) or m.group(2)}***", text)


class MaskSecrets(logging.Filter):
    """A logging filter that masks tokens in a record's message (``mask_secrets``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def mask_logs(*names: str) -> None:
    """Install ``MaskSecrets`` on the named loggers (once each)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskSecrets) for f in logger.filters):
            logger.addFilter(MaskSecrets())
