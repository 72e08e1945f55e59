"""Order velocity per buyer and per address, for the scalper rule (order/audit.py).

Each buyer (channel + shop + buyer id) and each ship-to address (normalised province + city +
street) has a sorted set of its recent order ids scored by the order's ``created_at``. Scoring
by creation time rather than arrival makes a count a fact about the orders, not about the
stream: a redelivered or re-pushed order is the same member with the same score (counted
once), a backlog flushed after an outage does not look like a burst, and the count an order
sees (orders created in the window that ends at its own creation) is the same however its batch
was split or replayed.

Key names are hashes (state/keys.py), members are order ids: no name, phone, buyer id or street
is ever written to Redis or logged in clear (core/privacy.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import redis.asyncio as aioredis

from core.privacy import is_masked, is_protected
from order.audit import Velocity, normalise_text
from state.keys import Keys
from state.redis import lua_source
from streams.models import Order

__all__ = ["Velocity", "address_digest", "buyer_digest", "record_recent"]

# Keys outlive the window a little, so a clock step between workers cannot drop live counts.
_TTL_SLACK_S = 60


def _digest(*parts: str) -> str:
    joined = "\x1f".join(parts)
    return hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()


def buyer_digest(order: Order) -> str:
    """'' when the buyer cannot be told apart: no id, or one the channel masked (JD's
    'jd_4f8a****b21' is shared by many buyers)."""
    buyer_id = order.buyer.id.strip()
    if not buyer_id or is_masked(buyer_id):
        return ""
    return _digest(order.channel.value, order.shop_id, buyer_id)


def address_digest(order: Order) -> str:
    """The platform's receiver key where it protects the receiver; else '' without a street or
    with a masked or encrypted one (ciphertext may differ per order: it would only cost a key
    and never match)."""
    address = order.address
    if address.receiver_key:
        return _digest(address.country.upper(), "receiver", address.receiver_key)
    street = normalise_text(address.street)
    if not street or is_protected(address.street):
        return ""
    province = address.province_code or normalise_text(address.province)
    return _digest(address.country.upper(), province, normalise_text(address.city), street)


async def record_recent(
    client: aioredis.Redis,
    keys: Keys,
    orders: Sequence[Order],
    *,
    window_s: float,
    now: float,
) -> dict[str, Velocity]:
    """Record the batch and count, in one pipelined round trip, each order's recent orders
    from its buyer and to its address (itself included). ``now`` (unix seconds) drops members
    created more than ``window_s`` ago; an order older than that counts 0. Orders that cannot
    be counted (see buyer_digest, address_digest) get 0."""
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    since = now - window_s
    ttl = math.ceil(window_s) + _TTL_SLACK_S
    script = client.register_script(lua_source("velocity_count"))
    pipe = client.pipeline(transaction=False)
    slots: list[tuple[str, str]] = []  # (order id, "buyer" | "address"), one reply each
    for order in orders:
        score = order.created_at.timestamp()
        for kind, digest, key_of in (
            ("buyer", buyer_digest(order), keys.velocity_buyer),
            ("address", address_digest(order), keys.velocity_address),
        ):
            if not digest:
                continue
            slots.append((order.order_id, kind))
            args = [order.order_id, repr(score), repr(since), repr(max(since, score - window_s))]
            await script(keys=[key_of(digest)], args=[*args, ttl], client=pipe)
    replies = await pipe.execute() if slots else []
    counts: dict[str, dict[str, int]] = {order.order_id: {} for order in orders}
    for (order_id, kind), reply in zip(slots, replies, strict=True):
        counts[order_id][kind] = int(reply)
    return {order_id: Velocity(**found) for order_id, found in counts.items()}
