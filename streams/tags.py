"""Customer-service tags on orders (``vip``, ``complaint``, ``fragile``): what a tag may be.

A tag is a short label people read in lists, not a note: lower-case ASCII letters, digits,
``-`` and ``_``, starting with a letter, at most ``MAX_TAG_CHARS`` long and with at most
``MAX_TAG_DIGITS`` digits, so a phone number, a buyer id or a name in any script cannot be
stored as one (tags are shown unmasked and travel in order events to ClickHouse). An order
carries at most ``MAX_TAGS`` of them. Checked by a scan of each character (no regex), so the
cost is linear in the input, which is clipped to a bound before anything else.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

MAX_TAG_CHARS = 24
MAX_TAG_DIGITS = 4  # 'q4', 'promo-2026' are fine; 'tel13800138000' is a phone, not a tag
MAX_TAGS = 16  # per order, and per action
MAX_TAG_INPUT_CHARS = 256  # longer input is refused unread
_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz")
_ALLOWED = _FIRST | frozenset("0123456789-_")


class TagError(ValueError):
    """A tag (or a set of tags) that may not be stored, with the reason people see."""


def parse_tag(text: str) -> str:
    """``text`` as a tag: NFKC-folded (full-width letters become ASCII), trimmed, lower-case,
    then checked; ``TagError`` says what is wrong."""
    if len(text) > MAX_TAG_INPUT_CHARS:
        raise TagError(f"a tag has at most {MAX_TAG_CHARS} characters")
    tag = unicodedata.normalize("NFKC", text).strip().lower()
    if not 1 <= len(tag) <= MAX_TAG_CHARS:
        raise TagError(f"a tag has 1 to {MAX_TAG_CHARS} characters, got {len(tag)}")
    if tag[0] not in _FIRST or any(c not in _ALLOWED for c in tag):
        raise TagError(
            f"tag {tag[:MAX_TAG_CHARS]!r}: a-z, 0-9, '-' and '_' only, starting with a letter"
        )
    if sum(c.isdigit() for c in tag) > MAX_TAG_DIGITS:
        raise TagError(
            f"a tag has at most {MAX_TAG_DIGITS} digits (no phone numbers or ids in tags)"
        )
    return tag


def parse_tags(texts: Iterable[str]) -> list[str]:
    """Several tags, each checked, duplicates dropped, first-seen order kept; at most
    ``MAX_TAGS`` and at least one."""
    tags: list[str] = []
    for n, text in enumerate(texts):
        if n >= MAX_TAGS:
            raise TagError(f"at most {MAX_TAGS} tags at once")
        tag = parse_tag(text)
        if tag not in tags:
            tags.append(tag)
    if not tags:
        raise TagError("give at least one tag")
    return tags


def retag(current: Iterable[str], add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
    """An order's tags after adding ``add`` and removing ``remove``, sorted; ``TagError`` when
    more than ``MAX_TAGS`` would remain."""
    tags = (set(current) | set(add)) - set(remove)
    if len(tags) > MAX_TAGS:
        raise TagError(f"an order carries at most {MAX_TAGS} tags ({len(tags)} asked)")
    return sorted(tags)
