"""Logging for every OMS process: one setup, one masking filter, text or JSON lines.

Every entry point (worker, fact sink, bench ceiling, the CLI, the WMS simulator, the dashboard)
calls :func:`setup_logging` and nothing else, so the format, the level and, above all, the
masking are the same everywhere. ``OMS_LOG_FORMAT=json`` writes one JSON object per line (``ts``
ISO 8601 UTC, ``level``, ``logger``, ``message``, ``component``, ``worker`` for workers, ``pid``,
any ``extra=`` fields, ``exc`` for a traceback) for a log shipper; ``text`` (the default) is the
line people read on the local stack.

Masking sits on the root handler, not on some loggers: a library's log line (aiohttp, aiokafka,
pydantic's validation errors inside a traceback) carries personal data as easily as ours, and
a filter on a logger misses records that merely propagate through it. It masks, in the message,
the traceback and string extras:

* tokens (``core.access.mask_secrets``: ``oms_<id>_***``, bearer values, ``token=`` values);
* values of known personal-data keys written ``key=value``, ``key: value``, ``"key": "value"``
  (buyer and receiver names, phones, emails, streets and addresses, postcodes: the field names
  of the canonical model and of the channel payloads) with ``core.privacy``'s masks, which
  keep the first character of a name and 3 + 4 digits of a mobile number, as operators see them;
* mobile numbers anywhere (mainland 1[3-9]x{9}, optionally +86; ``+`` international numbers)
  and e-mail addresses anywhere.

Region-level fields (province, city, district) are kept: they are what analysis needs.

Masking runs synchronously on every record, on the event loop, over text an outsider may have
written (a 1 MB unknown field name quoted by a validation error): each text is clipped to
``core.privacy.MAX_MASKED_CHARS`` (head and tail kept) before any pattern sees it, and
every pattern is linear, so one record costs a bounded pass whatever it quotes.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson

from core.access import mask_secrets
from core.privacy import (
    EMAIL_PATTERN,
    MAX_MASKED_CHARS,
    clip_for_masking,
    mask_name,
    mask_phone,
    mask_text,
)

LogFormat = Literal["text", "json"]
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Connection chatter at INFO would bury a process's own lines.
NOISY_LOGGERS: Final = ("aiokafka", "kafka")

# Key names are compared lowercased without "_", "-" and ".": receiver_name == receiverName.
NAME_KEYS: Final = frozenset(
    {
        "name",
        "fullname",
        "firstname",
        "lastname",
        "buyername",
        "buyernick",
        "receivername",
        "consignee",
        "consigneename",
        "postreceiver",
        "contactname",
        "recipient",
    }
)
PHONE_KEYS: Final = frozenset(
    {
        "phone",
        "mobile",
        "tel",
        "telephone",
        "receivermobile",
        "receiverphone",
        "posttel",
        "buyerphone",
        "contactphone",
    }
)
TEXT_KEYS: Final = frozenset(
    {
        "email",
        "buyeremail",
        "street",
        "address",
        "address1",
        "address2",
        "addressline1",
        "addressline2",
        "addressline3",
        "fulladdress",
        "detailaddress",
        "receiveraddress",
        "postaddr",
        "postcode",
        "postalcode",
        "zip",
        "receiverzip",
        "inputvalue",  # pydantic's errors quote the input they refused: any field's value
    }
)

_KEY_RE: Final = r"[A-Za-z][A-Za-z0-9_.-]{0,40}"
# key=value / key: value / "key": "value" / 'key': 'value' (the value quoted or up to a
# separator). The key must start at a word boundary so "shop_name" is not "name", and a
# value never starts with a pair of its own ("a= name: Li" is a, then name: Li).
KEY_VALUE_PATTERN: Final = re.compile(
    r"""(?P<lead>(?<![A-Za-z0-9_])(?P<q>["']?)(?P<key>""" + _KEY_RE + r""")(?P=q)\s*[:=]\s*)"""
    r"""(?!["']?""" + _KEY_RE + r"""["']?\s*[:=])"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&}\]){\[][^\s,;&}\])]*)"""
)
COUNTRY_86: Final = re.compile(r"^\+?86[\s-]?(?=1)")  # so a mainland mobile shows as 138****1234
MOBILE_PATTERN: Final = re.compile(
    r"(?<![\dA-Za-z])(?:\+?86[\s-]?)?1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}(?!\d)"
    r"|(?<![\dA-Za-z+])\+\d{1,3}[\s().-]?\d[\d\s().-]{6,16}\d(?!\d)"
)


def _normal_key(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "").rsplit(".", 1)[-1]


def masker_for(key: str) -> Callable[[str], str] | None:
    """The mask for a personal-data key's values, None for any other key."""
    normal = _normal_key(key)
    if normal in NAME_KEYS:
        return mask_name
    if normal in PHONE_KEYS:
        return mask_phone
    if normal in TEXT_KEYS:
        return mask_text
    return None


def _mask_key_value(match: re.Match[str]) -> str:
    mask = masker_for(match.group("key"))
    if mask is None:
        return match.group(0)
    value = match.group("value")
    quote = value[0] if value[:1] in ('"', "'") and len(value) >= 2 else ""
    inner = value[1:-1] if quote else value
    if "**" in inner:  # masked already (by the number or e-mail pass, or at its source)
        return match.group(0)
    return f"{match.group('lead')}{quote}{mask(inner)}{quote}"


def mask_personal(text: str, limit: int = MAX_MASKED_CHARS) -> str:
    """``text`` (clipped to ``limit``: head and tail) with tokens, mobile numbers, e-mail
    addresses and personal-data key values masked. Numbers go first: a key's value ends at a
    space, and "+44 20 7946 0958" has some."""
    text = mask_secrets(clip_for_masking(text, limit))
    text = MOBILE_PATTERN.sub(lambda m: mask_phone(COUNTRY_86.sub("", m.group(0))), text)
    text = EMAIL_PATTERN.sub(lambda m: mask_text(m.group(0)), text)
    return KEY_VALUE_PATTERN.sub(_mask_key_value, text)


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def extras_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in STANDARD_ATTRS and k[:1] != "_"}


def mask_value(key: str, value: Any) -> Any:
    """An ``extra`` field's value, masked by its key, or as text when it is a string."""
    if isinstance(value, str):
        mask = masker_for(key)
        return mask(value) if mask else mask_personal(value)
    if isinstance(value, Mapping):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(key, v) for v in value]
    return value


class MaskPersonalData(logging.Filter):
    """Masks a record in place before any handler formats it: message, traceback, extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_personal(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = mask_personal(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_personal(record.stack_info)
        for key, value in extras_of(record).items():
            setattr(record, key, mask_value(key, value))
        return True


def iso_utc(created: float) -> str:
    """``2025-11-11T00:00:00.123Z``: ISO 8601 in UTC, milliseconds, for any log shipper."""
    stamp = datetime.fromtimestamp(created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the process's identity (component, worker, pid) on each."""

    def __init__(self, component: str, worker: str | None = None) -> None:
        super().__init__()
        self.identity: dict[str, Any] = {"component": component}
        if worker:
            self.identity["worker"] = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.identity,
            "pid": record.process,
        }
        for key, value in extras_of(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str).decode()


def make_handler(
    log_format: LogFormat, component: str, worker: str | None = None, stream: Any = None
) -> logging.Handler:
    """A stream handler (stderr by default) with the masking filter and the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(MaskPersonalData())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(component, worker))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.set_name("oms")
    return handler


def setup_logging(
    log_format: str,
    level: str | int,
    *,
    component: str,
    worker: str | None = None,
    quiet: tuple[str, ...] = NOISY_LOGGERS,
    stream: Any = None,
) -> logging.Handler:
    """Make the root logger write through one masked handler (replacing earlier handlers, so a
    second call, e.g. the CLI's then the worker's, leaves exactly one). Returns the handler."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, got {log_format!r}")
    handler = make_handler(log_format, component, worker, stream)  # type: ignore[arg-type]
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler
