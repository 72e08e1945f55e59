"""What every background timer and side agent of a worker shares: a failure is logged and
counted, never allowed to take the worker's order pipeline down (a message that is not what
its topic promises: ``streams/parse.py``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

R = TypeVar("R")


async def guarded(
    counters: Counter[str], error_counter: str, what: str, tick: Callable[[], Awaitable[R]]
) -> R | None:
    """Run one tick; on failure count it and return None (the next tick tries again: nothing
    was advanced). Redis trouble is expected in operation (a warning); anything else is a bug
    (logged with its traceback)."""
    try:
        return await tick()
    except RedisError as exc:
        counters[error_counter] += 1
        log.warning("%s failed, retrying next tick: %s", what, exc)
    except Exception:
        counters[error_counter] += 1
        log.exception("%s failed, retrying next tick", what)
    return None
