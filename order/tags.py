"""Customer service tags an order (``./oms orders tag``, ``POST /orders/{id}/tags``): an
operator action like a release, so the change is CAS-saved with the record, lands in the trail
with its actor and a redelivery applies it once. Tags are labels for people; they move no
state and no stock, so they apply in every state, a closed order's included.
"""

from __future__ import annotations

from datetime import datetime

from order.decisions import Decisions
from order.plan import BatchResult, Plan
from streams.messages import MAX_REASON_CHARS, EventKind, OperatorAction, OperatorActionKind
from streams.tags import TagError, retag

TAG_KINDS = frozenset({OperatorActionKind.TAG, OperatorActionKind.UNTAG})


def apply_tags(
    steps: Decisions, plan: Plan, action: OperatorAction, now: datetime, result: BatchResult
) -> None:
    """Add or remove the action's tags; refused (in the trail) when none is given or the
    order would carry too many. The event's reason says what changed: ``+vip -fragile``."""
    record = plan.record
    adding = action.kind is OperatorActionKind.TAG
    try:
        if not action.tags:
            raise TagError("no tag given")
        after = retag(record.tags, action.tags if adding else (), () if adding else action.tags)
    except TagError as exc:
        steps.refuse(plan, EventKind.ACTION_REFUSED, now, action.kind.value, str(exc), result)
        return
    change = tag_change(record.tags, after)
    record.tags = after
    result.counts["tags_changed" if change else "tags_unchanged"] += 1
    steps.note(
        plan,
        EventKind.TAGS_CHANGED,
        now,
        reason=change or "unchanged",
        detail=action.reason,
    )


def tag_change(before: list[str], after: list[str]) -> str:
    """``+added -removed``, as the trail and the order event say it (clipped to a reason's
    length; the record holds every tag)."""
    added = [f"+{t}" for t in after if t not in before]
    removed = [f"-{t}" for t in before if t not in after]
    return " ".join(added + removed)[:MAX_REASON_CHARS]
