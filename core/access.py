"""Who may do what: roles, permissions, data scope per shop, and the token format. Pure: no
Redis, no HTTP (``state/tokens.py`` stores tokens, ``web/api.py`` and ``ops/dashboard.py``
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
  ``./oms rules check``): a rule change moves every future order, so it is nobody else's. Only
  an admin of every shop sees the blacklists (``read_blacklists``): the blacklisted buyer ids,
  phones and streets are personal data of buyers of every shop, and knowing the list tells a
  fraudster which accounts to swap. Everybody else who reads orders still gets ``GET /rules``
  (what holds or rejects an order is what customer service explains to buyers) with every
  blacklist entry replaced by a count: the rules stay explainable, the entries stay secret.
  Masking rather than 403 keeps one route and one shape for every role.
  Admins also grant tokens through the API (``manage_tokens``).
* ``bootstrap`` is never granted: it is ``OMS_ADMIN_TOKEN`` from the environment, which may only
  grant the first real admin token, once (``state/tokens.py``). A secret that sits in every
  deployment's environment cannot be revoked or expire, so it must not be an admin for good.

Data scope: a principal names the shops it may see (``ALL_SHOPS`` for every shop). An order of
another shop is refused as out of scope. Views that sum over every shop (the dashboard, the
audit rules, stock, which is shared by all shops) ask for ``ALL_SHOPS`` scope, so a token
limited to some shops never sees other shops' figures through them.

Shop ids are those of the channels: a Tmall shop is ``极客数码旗舰店`` as often as ``geek-3c``.
A scope keeps them NFC-normalised (the same name typed on two keyboards is one shop): letters
and digits of any script, combining marks after the first character, and ``. _ : -``; never
whitespace, control or format characters (an invisible character would make two ids that look
the same), at most 128 characters like an order's ``shop_id``.

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
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
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
MAX_USER_CHARS: Final = 64
USER_PUNCTUATION: Final = frozenset("._@-")
MAX_SHOP_ID_CHARS: Final = 128  # as an order's shop_id (streams.models.Code)
SHOP_PUNCTUATION: Final = frozenset("._:-")
SHOP_RULE: Final = (
    "letters and digits of any script, combining marks, and . _ : - only "
    f"(1-{MAX_SHOP_ID_CHARS} characters, no whitespace, control or format characters)"
)


class Role(StrEnum):
    CUSTOMER_SERVICE = "customer_service"
    WAREHOUSE = "warehouse"
    FINANCE = "finance"
    ADMIN = "admin"
    BOOTSTRAP = "bootstrap"  # OMS_ADMIN_TOKEN only: never granted (GRANTABLE_ROLES)


class Permission(StrEnum):
    READ_ORDERS = "read_orders"
    RELEASE_HOLDS = "release_holds"
    CANCEL_ORDERS = "cancel_orders"
    EDIT_ORDERS = "edit_orders"  # customer service's changes: tags (POST /orders/{id}/tags)
    ADJUST_STOCK = "adjust_stock"
    EDIT_RULES = "edit_rules"
    READ_BLACKLISTS = "read_blacklists"  # the entries of the audit blacklists (GET /rules)
    READ_DASHBOARD = "read_dashboard"
    MANAGE_TOKENS = "manage_tokens"  # grant tokens through the API (POST /access/tokens)


P = Permission
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.CUSTOMER_SERVICE: frozenset(
        {P.READ_ORDERS, P.RELEASE_HOLDS, P.CANCEL_ORDERS, P.EDIT_ORDERS}
    ),
    Role.WAREHOUSE: frozenset({P.READ_ORDERS, P.ADJUST_STOCK}),
    Role.FINANCE: frozenset({P.READ_ORDERS, P.READ_DASHBOARD}),
    Role.ADMIN: frozenset(Permission),
    Role.BOOTSTRAP: frozenset({P.MANAGE_TOKENS}),  # and only an admin of every shop, once
}
GRANTABLE_ROLES: Final = tuple(r for r in Role if r is not Role.BOOTSTRAP)
BOOTSTRAP_ONLY_GRANTS: Final = (
    "the bootstrap admin token (OMS_ADMIN_TOKEN) may only grant the first admin token "
    "(POST /access/tokens with role admin, or ./oms access grant --role admin): use that token"
)


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
    """A role a token may be granted (never ``bootstrap``)."""
    known = ", ".join(r.value for r in GRANTABLE_ROLES)
    if value == Role.BOOTSTRAP.value:
        raise AccessError(
            f"role {value!r} cannot be granted: it is OMS_ADMIN_TOKEN's (known: {known})"
        )
    try:
        return Role(value)
    except ValueError:
        raise AccessError(f"unknown role {value!r} (known: {known})") from None


def normalise_shop(shop: str) -> str:
    """The form scopes keep a shop id in (NFC), so a scope and an order compare equal."""
    return unicodedata.normalize("NFC", shop)


def valid_identifier(text: str, punctuation: frozenset[str], max_chars: int) -> bool:
    """Letters and digits of any script, combining marks after the first character and
    ``punctuation``; 1 to ``max_chars`` characters of ``text`` (already NFC). No whitespace,
    control or format character: those make two ids that look the same."""
    if not 1 <= len(text) <= max_chars:
        return False
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if char in punctuation or category[0] == "L" or category in ("Nd", "Nl"):
            continue
        if category[0] == "M" and index > 0:  # a mark combines with the character before it
            continue
        return False
    return True


def valid_shop_id(shop: str) -> bool:
    """Whether ``shop`` (already NFC) is a shop id a scope may name (see the module doc)."""
    return valid_identifier(shop, SHOP_PUNCTUATION, MAX_SHOP_ID_CHARS)


def parse_shops(value: str | list[str]) -> Shops:
    """``*`` or empty -> every shop; ``S1,S2`` (or a list of ids) -> those shops, NFC."""
    parts = value if isinstance(value, list) else value.split(",")
    if not isinstance(value, list) and value.strip() in ("", ALL_SHOPS):
        return ALL_SHOPS
    if not all(isinstance(part, str) for part in parts):
        raise AccessError("shop ids must be strings")
    shops = frozenset(normalise_shop(part.strip()) for part in parts if part.strip())
    if ALL_SHOPS in shops and len(shops) == 1:
        return ALL_SHOPS
    bad = sorted(s for s in shops if not valid_shop_id(s))
    if bad or not shops:
        raise AccessError(f"bad shop id(s) {bad or [value]}: {SHOP_RULE}")
    return shops


def format_shops(shops: Shops) -> str:
    return ALL_SHOPS if shops == ALL_SHOPS else ",".join(sorted(shops))


def check_user(user: str) -> str:
    """The user name a token is granted to, NFC: people are named in any script (张伟) like
    the shops they work for."""
    name = unicodedata.normalize("NFC", user)
    if not valid_identifier(name, USER_PUNCTUATION, MAX_USER_CHARS):
        raise AccessError(
            f"bad user name {user!r}: 1-{MAX_USER_CHARS} letters or digits of any script "
            "and . _ @ - (no whitespace, control or format characters)"
        )
    return name


def in_scope(shops: Shops, shop: str) -> bool:
    """Whether ``shops`` covers ``shop``; asking for ``ALL_SHOPS`` needs every shop. The order's
    shop id is compared NFC, like the scope keeps its ids."""
    if shops == ALL_SHOPS:
        return True
    return shop != ALL_SHOPS and normalise_shop(shop) in shops


def authorize(principal: Principal, permission: Permission, shop: str | None = None) -> Decision:
    """May ``principal`` use ``permission`` (on an order of ``shop``, when given)? Refusals
    say why: an unknown role, a permission the role lacks, a shop out of scope."""
    try:
        role = Role(principal.role)
    except ValueError:
        return Decision(False, f"unknown role {principal.role!r}")
    if permission not in ROLE_PERMISSIONS[role]:
        if role is Role.BOOTSTRAP:
            return Decision(False, BOOTSTRAP_ONLY_GRANTS)
        return Decision(False, f"role {role.value} lacks permission {permission.value}")
    if shop is not None and not in_scope(principal.shops, shop):
        what = "every shop" if shop == ALL_SHOPS else f"shop {shop!r}"
        return Decision(False, f"{what} is out of {principal.user}'s scope")
    return ALLOWED


class TokenRefused(Exception):
    """A token that stands for nobody, with what the holder should do (HTTP 401)."""


class TooManyAttempts(Exception):
    """Too many failed token checks from this client or for this token id (HTTP 429)."""

    def __init__(self, retry_after_s: float, message: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class FailureLimiter:
    """Failed token checks counted per key (a token id, a client address) in fixed windows:
    a key with ``limit`` failures is refused until its window ends.

    Per process on purpose: what a guesser burns is this process's CPU and event loop (each
    wrong secret of a known id costs a PBKDF2), so this process is what it must stop. Memory is
    bounded: beyond ``max_keys`` the oldest windows are dropped."""

    limit: int
    window_s: float
    max_keys: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _windows: OrderedDict[str, tuple[float, int]] = field(default_factory=OrderedDict)

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        window = self._windows.get(key)
        if window is None:
            return 0.0
        start, count = window
        left = start + self.window_s - self.clock()
        if left <= 0:
            del self._windows[key]
            return 0.0
        return left if count >= self.limit else 0.0

    def failed(self, key: str) -> None:
        now = self.clock()
        start, count = self._windows.pop(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._windows[key] = (start, count + 1)
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)


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
