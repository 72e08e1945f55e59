"""Masking of personal data (names, phones, street addresses, buyer ids, remarks) for logs and
operator output, and scrubbing of free text bound for ClickHouse.

Everything here runs on text an outsider wrote (a log line quoting a payload, a remark), on the
event loop of a worker: every pattern is linear in its input and every input is clipped first
(MAX_MASKED_CHARS), so no text, however long or crafted, costs more than a bounded pass.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Longest text masked or scrubbed in one piece; longer text keeps its head and its tail (where
# a traceback says what went wrong) around a note of what was cut. Above every field a
# message carries (a DLQ detail is 4,000) and every log line people write.
MAX_MASKED_CHARS = 32 * 1024

# Free text a person or another system wrote may quote personal data. Names cannot be told
# from other words, so anything quoted (where error messages put values) goes whole; e-mail
# addresses and long digit runs (phones, ids, card numbers) go wherever they stand.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_EMAIL_CHAR = r"[^\s@'\"<>()\[\],;:]"
# A match may only start where a run of address characters starts (the lookbehind): without
# it a run of n such characters with no '@' was scanned from each of its n positions, n^2
# steps (40 KB of one letter: 6 s). With it the run is scanned once, and each position inside
# it is refused by a one-character look back.
EMAIL_PATTERN = re.compile(rf"(?<!{_EMAIL_CHAR}){_EMAIL_CHAR}+@{_EMAIL_CHAR}+")
# Standalone runs only: a digit run inside a token (a hex command id) is not a phone.
_DIGITS = re.compile(r"(?<!\w)\+?\d(?:[\d\s()-]{5,}\d)(?!\w)")
MIN_DIGITS = 7  # a digit run this long may be a phone number
ID_HINT_HEX = 6  # hex digits of an id's hint: many ids share one, so it cannot be reversed


# Platform ciphertext: Douyin '#...#1##' / '$...$1$$', Taobao '~...~1~~', or bare base64 (JD).
_MARKED_CIPHERTEXT = re.compile(r"[#$~][0-9A-Za-z+/=*_\-]{16,}")
_BARE_CIPHERTEXT = re.compile(r"(?=.*[A-Za-z])[0-9A-Za-z+/=_\-]{24,}")


def is_masked(text: str) -> bool:
    """A platform-masked value such as '138****1234' or '文**路**号': platforms mask with
    asterisks, and only the platform knows the rest."""
    return "*" in text


def is_ciphertext(text: str) -> bool:
    """A platform-encrypted value (Douyin, Taobao, JD): decrypted only by the platform's own
    services (label printing, the waybill call)."""
    text = text.strip()
    return bool(_MARKED_CIPHERTEXT.search(text) or _BARE_CIPHERTEXT.fullmatch(text))


def is_protected(text: str) -> bool:
    """Masked or encrypted by the platform: never judged, never compared."""
    return is_masked(text) or is_ciphertext(text)


def normalise_phone(phone: str) -> str:
    """Digits only without the +86 / 0086 country prefix; '' for masked or encrypted phones,
    which cannot be compared with anything."""
    if is_protected(phone):
        return ""
    digits = "".join(c for c in unicodedata.normalize("NFKC", phone) if c.isdigit())
    if len(digits) == 15 and digits.startswith("0086"):
        return digits[4:]
    if len(digits) == 13 and digits.startswith("86"):
        return digits[2:]
    return digits


MAX_PHONE_CHARS = 64  # a phone as people type it; longer is no phone (ciphertext aside)
PHONE_HEAD, PHONE_TAIL = 3, 4  # what a platform's mask keeps: 138****8000
MIN_PHONE_DIGITS = PHONE_HEAD + PHONE_TAIL


@dataclass(frozen=True)
class PhoneParts:
    """What a phone can be found by. ``full``: the normalised number, only when it came in
    plain; ``partial``: its first 3 and last 4 digits, which a platform's mask keeps too, so
    a plain number and its masked form (138****8000) meet there."""

    full: str
    partial: str


def phone_parts(phone: str) -> PhoneParts | None:
    """The search parts of a phone: plain (7 digits or more) or masked with its 3 + 4 digits
    kept; None for ciphertext (only the platform can read it), for a mask that keeps other
    digits, and for anything too short or too long. One pass over a bounded input."""
    text = phone.strip()
    if not text or len(text) > MAX_PHONE_CHARS or is_ciphertext(text):
        return None
    if is_masked(text):
        folded = unicodedata.normalize("NFKC", text)
        head, _, rest = folded.partition("*")
        tail = rest.strip("*")
        head_digits = normalise_phone(head)
        if len(head_digits) > PHONE_HEAD and head_digits[:-PHONE_HEAD] in ("86", "0086"):
            head_digits = head_digits[-PHONE_HEAD:]  # +86 138****8000
        if not (tail.isdigit() and tail.isascii() and head_digits.isascii()):
            return None
        if len(head_digits) != PHONE_HEAD or len(tail) != PHONE_TAIL:
            return None
        return PhoneParts("", f"{head_digits}|{tail}")
    digits = normalise_phone(text)
    if len(digits) < MIN_PHONE_DIGITS or not digits.isascii():
        return None
    return PhoneParts(digits, f"{digits[:PHONE_HEAD]}|{digits[-PHONE_TAIL:]}")


def clip_for_masking(text: str, limit: int = MAX_MASKED_CHARS) -> str:
    """``text`` if it is at most ``limit`` characters, else its head and tail around a note of
    how much was cut: what every mask works on, so its cost is bounded whatever arrives."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} ...[{len(text) - 2 * half} chars cut]... {text[-half:]}"


def mask_name(name: str) -> str:
    """Keep the first character: enough for a person to match a call, useless to a scraper."""
    name = name.strip()
    return f"{name[0]}**" if name else ""


def mask_phone(phone: str) -> str:
    """Mobile numbers keep 3 + 4 digits (the usual 138****1234); shorter ones keep only 2."""
    digits = "".join(c for c in phone if c.isdigit())
    if len(digits) >= 11:
        return f"{digits[:3]}****{digits[-4:]}"
    if len(digits) >= 7:
        return f"****{digits[-2:]}"
    return "***" if phone else ""


def mask_text(text: str) -> str:
    return f"{text[:2]}***" if text else ""


def mask_id(value: str) -> str:
    """A buyer id (Taobao nick, JD pin, open id) as its first character and a short hash:
    stable, so an operator can tell two orders of one buyer, but not the id itself."""
    value = value.strip()
    if not value:
        return ""
    digest = hashlib.blake2b(value.encode(), digest_size=8).hexdigest()[:ID_HINT_HEX]
    return f"{value[0]}***#{digest}"


def scrub_free_text(text: str) -> str:
    """``text`` with quoted values, e-mail addresses and phone-like digit runs replaced by
    ``'***'``, ``<email>`` and ``<digits>``: what is left says where and why (field paths,
    reason codes), not who. Clipped to MAX_MASKED_CHARS first."""
    if not text:
        return text  # most event reasons: the sink asks for every one
    text = _QUOTED.sub("'***'", clip_for_masking(text))
    text = EMAIL_PATTERN.sub("<email>", text)
    return _DIGITS.sub(_digit_run, text)


def _digit_run(match: re.Match[str]) -> str:
    run = match.group(0)
    return "<digits>" if sum(c.isdigit() for c in run) >= MIN_DIGITS else run


def mask_remark(text: str, known: Iterable[str] = ()) -> str:
    """A buyer or seller remark as operators see it: the order's own personal values
    (``known``: names, phones, street, ids) masked wherever the remark repeats them, then
    quoted text, e-mail addresses and phone-like digit runs scrubbed. What the buyer asked
    for stays readable."""
    text = clip_for_masking(text)
    for value in sorted({v.strip() for v in known if len(v.strip()) >= 2}, key=len, reverse=True):
        text = text.replace(value, f"{value[0]}**")
    return scrub_free_text(text)


def mask_address_dict(address: dict[str, Any]) -> dict[str, Any]:
    """A JSON-mode Address with the receiver's name, phone, street and postcode masked; the
    region (country, province, city, district) is kept: it is what routing and analysis use."""
    out = dict(address)
    for field, fn in (
        ("name", mask_name),
        ("phone", mask_phone),
        ("street", mask_text),
        ("postcode", mask_text),
    ):
        if out.get(field):
            out[field] = fn(out[field])
    protected = out.get("protected")
    if isinstance(protected, dict):  # ciphertext and the OAID lead to the person: hints only
        out["protected"] = {k: mask_id(str(v)) if v else v for k, v in protected.items()}
    return out


def mask_order_dict(order: dict[str, Any]) -> dict[str, Any]:
    """A JSON-mode Order dict with every personal field masked: buyer id, name, email, phone;
    the ship-to's name, phone, street and postcode; remarks (see :func:`mask_remark`); the
    payment's transaction id (it leads to the buyer's account); and the channel's raw extras
    (nicks, open ids, ciphertexts). Region, lines and money are kept."""
    out = dict(order)
    address = dict(out.get("address") or {})
    buyer = dict(out.get("buyer") or {})
    known = [
        str(v)
        for v in (
            *(buyer.get(k) for k in ("id", "name", "email", "phone")),
            *(address.get(k) for k in ("name", "phone", "street")),
        )
        if v
    ]
    out["address"] = mask_address_dict(address)
    for field, fn in (
        ("id", mask_id),
        ("name", mask_name),
        ("email", mask_text),
        ("phone", mask_phone),
    ):
        if buyer.get(field):
            buyer[field] = fn(buyer[field])
    out["buyer"] = buyer
    for field in ("buyer_remark", "seller_remark"):
        if out.get(field):
            out[field] = mask_remark(out[field], known)
    payment = out.get("payment")
    if isinstance(payment, dict) and payment.get("transaction_id"):
        out["payment"] = {**payment, "transaction_id": mask_id(payment["transaction_id"])}
    out["raw"] = {"masked": True} if out.get("raw") else {}
    return out
