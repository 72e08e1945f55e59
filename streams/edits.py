"""What customer service may write into an order's lines before release (a gift, a changed
line): a sku code, a line id and a quantity, each checked the same way in the CLI, the API and
the ``OperatorAction`` model, so nothing a person types reaches the order unbounded.

A code is an id, not text: 1 to ``MAX_CODE_CHARS`` printable characters without spaces (a sku
with a space or a control character would be a different sku to the WMS and to the stock
hashes). Checked by a scan of each character, after the input is clipped to a bound.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from streams.models import MAX_CODE_CHARS, MAX_LINE_QUANTITY

MAX_EDITS = 50  # line edits one order keeps (each is replayed over every channel version)
MAX_GIFTS = 20  # gift lines customer service adds to one order


class EditError(ValueError):
    """A line edit that may not be applied, with the reason people see."""


def parse_code(text: str, what: str) -> str:
    """``text`` as a sku or line id: as given, 1 to ``MAX_CODE_CHARS`` characters, none of
    them a space, a control or a format character."""
    if not 1 <= len(text) <= MAX_CODE_CHARS:
        raise EditError(f"a {what} has 1 to {MAX_CODE_CHARS} characters")
    if any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in text):
        raise EditError(f"a {what} has no spaces or control characters")
    return text


def parse_quantity(value: object) -> int:
    """Units of a line: a whole number from 1 to ``MAX_LINE_QUANTITY`` (``True`` or ``2.0``
    is no quantity)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise EditError("quantity must be a whole number")
    if not 1 <= value <= MAX_LINE_QUANTITY:
        raise EditError(f"quantity must be from 1 to {MAX_LINE_QUANTITY}")
    return value


def edit_fields(
    kind: str, *, line_id: str = "", sku: object = None, quantity: object = None
) -> dict[str, Any]:
    """The checked fields of an ``add_gift`` (a sku, units) or ``change_line`` (a line id, a
    new sku and/or units) action, as the CLI and the API send them (None: not given)."""
    fields: dict[str, Any] = {}
    if sku is not None:
        if not isinstance(sku, str):
            raise EditError("sku must be a string")
        fields["sku"] = parse_code(sku, "sku")
    if quantity is not None:
        fields["quantity"] = parse_quantity(quantity)
    if kind == "add_gift":
        if "sku" not in fields:
            raise EditError("a gift needs a sku")
    elif kind == "change_line":
        fields["line_id"] = parse_code(line_id, "line id")
        if "sku" not in fields and "quantity" not in fields:
            raise EditError("give a new sku or quantity for the line")
    else:
        raise EditError(f"{kind!r} is no line edit")
    return fields
