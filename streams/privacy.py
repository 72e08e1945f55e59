"""Masking of personal data (names, phones, street addresses) for logs and operator output,
and scrubbing of free text bound for ClickHouse."""

from __future__ import annotations

import re
from typing import Any

# Free text a person or another system wrote may quote personal data. Names cannot be told
# from other words, so anything quoted (where error messages put values) goes whole; e-mail
# addresses and long digit runs (phones, ids, card numbers) go wherever they stand.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
EMAIL_PATTERN = re.compile(r"[^\s@'\"<>()\[\],;:]+@[^\s@'\"<>()\[\],;:]+")
# Standalone runs only: a digit run inside a token (a hex command id) is not a phone.
_DIGITS = re.compile(r"(?<!\w)\+?\d(?:[\d\s()-]{5,}\d)(?!\w)")
MIN_DIGITS = 7  # a digit run this long may be a phone number


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


def scrub_free_text(text: str) -> str:
    """``text`` with quoted values, e-mail addresses and phone-like digit runs replaced by
    ``'***'``, ``<email>`` and ``<digits>``: what is left says where and why (field paths,
    reason codes), not who."""
    text = _QUOTED.sub("'***'", text)
    text = EMAIL_PATTERN.sub("<email>", text)
    return _DIGITS.sub(_digit_run, text)


def _digit_run(match: re.Match[str]) -> str:
    run = match.group(0)
    return "<digits>" if sum(c.isdigit() for c in run) >= MIN_DIGITS else run


def mask_order_dict(order: dict[str, Any]) -> dict[str, Any]:
    """A JSON-mode Order dict with buyer and address personal fields masked; region kept."""
    out = dict(order)
    address = dict(out.get("address") or {})
    for field, fn in (
        ("name", mask_name),
        ("phone", mask_phone),
        ("street", mask_text),
        ("postcode", mask_text),
    ):
        if address.get(field):
            address[field] = fn(address[field])
    buyer = dict(out.get("buyer") or {})
    for field, fn in (("name", mask_name), ("phone", mask_phone), ("email", mask_text)):
        if buyer.get(field):
            buyer[field] = fn(buyer[field])
    out["address"], out["buyer"] = address, buyer
    out["raw"] = {"masked": True} if out.get("raw") else {}
    return out
