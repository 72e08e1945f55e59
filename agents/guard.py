"""What every background timer and side agent of a worker shares: a failure is logged and
counted, never allowed to take the worker's order pipeline down; and a message that is not
what its topic promises is logged and counted, never a crash."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from streams.adapters.base import describe_validation

log = logging.getLogger(__name__)

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)


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


def parse_or_none(model: type[M], value: bytes, where: str) -> M | None:
    """A record no OMS writer produced: logged and counted by the caller, never a crash. The
    log line is bounded whatever the record holds (a 1 MB unknown field name is a path part
    pydantic quotes): the error count and the first errors, clipped, never an input value."""
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        log.error(
            "unparseable record on %s (%d bytes, %d errors): %s",
            where,
            len(value),
            exc.error_count(),
            describe_validation(exc, "record"),
        )
        return None
