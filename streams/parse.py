"""A record no OMS writer produced is logged and counted, never a crash."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from streams.channels.base import describe_validation

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


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
