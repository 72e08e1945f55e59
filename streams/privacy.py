"""Masking of personal data (names, phones, street addresses) for logs and operator output."""

from __future__ import annotations

from typing import Any


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
