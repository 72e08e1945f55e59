"""Who may write the control topics, proven on every broker.

The control topics change orders as a person or the warehouse decided: ``oms.operator``
(release a hold, cancel, the timers' unpaid/merge/close actions), ``oms.aftersales`` (cancel,
return, refund, exchange, address change) and ``oms.wms.events`` (accepted, shipped, short
pick...). Kafka ACLs (docker-compose.yml) say who may produce to them, but Kafka does not tell
a consumer who produced a message, the local broker has no ACLs at all, and a deployment's ACLs
can be wider than intended. So the application proves it too: every control message carries an
HMAC-SHA256 signature header made with its writer's key, and the workers check it before
anything is applied (``agents/control.py``).

``WRITERS`` is the one table of who may write what:

=============  ==========================================================================
principal      may write
=============  ==========================================================================
``worker``     ``oms.operator``: the timers' actions only (expire_unpaid, release_merged,
               close, ...: every kind but a person's), as a ``system:*`` actor
``api``        ``oms.operator`` (release_hold, cancel) and ``oms.aftersales``, as the token's
               user (the workers' order API)
``operator``   the same, as the operator's name (``./oms held``, ``./oms aftersales``)
``wms``        ``oms.wms.events`` only (the WMS, or ``./oms wms-sim``)
=============  ==========================================================================

The worker records the signing principal with the actor: ``api:amy``, ``operator:alice``
(``system:*`` actors are the worker's own). A principal claiming an actor it may not (the API
claiming ``system:close-timer``, the WMS writing an operator action) is refused like a bad
signature: the message becomes a DLQ record with reason ``unauthorized_control`` and a detail
that says which check failed, and nothing is applied.

The signature covers the principal, the topic, the message key and the value (each length-
prefixed), so a signed message cannot be moved to another topic or order key, nor re-labelled
with another principal. Replaying the very same message is harmless: every control input is
applied once per id (the order's outbox). Keys are symmetric, so the workers, which verify every
principal, hold every key: a worker can sign as anyone. What the signature buys is that a
producer which only has the broker (a platform ingest job, a WMS with Kafka credentials, anyone
on a PLAINTEXT listener) cannot act as an operator or the warehouse.

Keys come from ``OMS_CONTROL_KEYS`` (``name=key`` pairs, comma- or newline-separated, each key at
least 32 characters; a secret) and/or ``OMS_CONTROL_KEYS_FILE`` (the same, one pair a line,
``#`` comments). With neither, the local stack's ``<OMS_HOME>/control-keys`` is used, generated
with every principal's key on first use (mode 0600). Each deployment gives every process only
the keys it signs with, and the workers all of them. ``OMS_CONTROL_SIGNING=off`` turns signing
and checking off (the default is ``required``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from core.settings import Settings, secret_value
from streams import topics
from streams.messages import AfterSalesRequest, OperatorAction, OperatorActionKind, WmsEvent

SIGNATURE_HEADER: Final = "oms-signature"
VERSION: Final = "v1"
MIN_KEY_CHARS: Final = 32
LOCAL_KEYS_FILE: Final = "control-keys"
PRINCIPAL_PATTERN: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
HEADER_PATTERN: Final = re.compile(r"v1:([a-z][a-z0-9_-]{0,31}):([0-9a-f]{64})")

WORKER, API, OPERATOR, WMS = "worker", "api", "operator", "wms"
PRINCIPALS: Final = (WORKER, API, OPERATOR, WMS)
SYSTEM_ACTOR_PREFIX: Final = "system:"
# What a person decides; every other action kind is a timer's (the worker's) to send.
PERSON_KINDS: Final = frozenset(
    {
        OperatorActionKind.RELEASE_HOLD,
        OperatorActionKind.CANCEL,
        OperatorActionKind.TAG,
        OperatorActionKind.UNTAG,
        OperatorActionKind.ADD_GIFT,
        OperatorActionKind.CHANGE_LINE,
    }
)
# topic suffix -> the principals that may write it (the table in the module doc)
WRITERS: Final[dict[str, frozenset[str]]] = {
    topics.OPERATOR.suffix: frozenset({WORKER, API, OPERATOR}),
    topics.AFTERSALES.suffix: frozenset({API, OPERATOR}),
    topics.WMS_EVENTS.suffix: frozenset({WMS}),
}
PEOPLE: Final = frozenset({API, OPERATOR})  # principals that act for a named person


class ControlKeyError(LookupError):
    """Keys that cannot be used (a bad pair, a short key, a missing one), saying what to set.
    A LookupError: the CLI reports it in one line, like an order it cannot find."""


class Refused(Exception):
    """A control message that is not what its signature or its writer may claim; ``detail``
    goes into its DLQ record."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def parse_keys(text: str, where: str) -> dict[str, bytes]:
    """``name=key`` pairs, comma- or newline-separated, ``#`` comments: name -> key bytes."""
    keys: dict[str, bytes] = {}
    for raw in re.split(r"[,\n]", text):
        item = raw.split("#", 1)[0].strip()
        if not item:
            continue
        name, sep, key = (part.strip() for part in item.partition("="))
        if not sep or not PRINCIPAL_PATTERN.fullmatch(name):
            raise ControlKeyError(f"{where}: expected name=key pairs (name like 'wms')")
        if len(key) < MIN_KEY_CHARS:
            raise ControlKeyError(
                f"{where}: the key of {name!r} is shorter than {MIN_KEY_CHARS} characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        keys[name] = key.encode()
    return keys


def local_keys_file(settings: Settings) -> Path:
    return settings.home / LOCAL_KEYS_FILE


def ensure_local_keys(path: Path) -> None:
    """Write a key for every principal to ``path`` (0600) unless it exists; safe when several
    processes start at once (the first file wins, the others read it)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "# control-topic signing keys of the local stack (streams/signing.py); secret\n"
    text = head + "".join(f"{name}={secrets.token_urlsafe(32)}\n" for name in PRINCIPALS)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    try:
        os.link(temp, path)  # atomic, and never over a file another process made first
    except FileExistsError:
        pass
    finally:
        temp.unlink()


def mac(key: bytes, principal: str, topic: str, msg_key: bytes | None, value: bytes) -> str:
    """HMAC-SHA256 over the version, principal, topic, key and value, each length-prefixed."""
    digest = hmac.new(key, digestmod=hashlib.sha256)
    for part in (VERSION.encode(), principal.encode(), topic.encode(), msg_key or b"", value):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Signer:
    """Signs what one principal writes; ``key`` None: signing is off, no header is added."""

    principal: str
    key: bytes | None

    def headers(self, topic: str, msg_key: bytes | None, value: bytes) -> Headers:
        if self.key is None:
            return []
        signature = mac(self.key, self.principal, topic, msg_key, value)
        return [(SIGNATURE_HEADER, f"{VERSION}:{self.principal}:{signature}".encode())]


@dataclass(frozen=True)
class Keyring:
    """The keys a process holds and whether signatures are required."""

    keys: Mapping[str, bytes]
    required: bool = True

    def signer(self, principal: str) -> Signer:
        """The signer of ``principal``; a required key that is missing is an error naming it."""
        if not self.required:
            return Signer(principal, None)
        key = self.keys.get(principal)
        if key is None:
            raise ControlKeyError(
                f"no control-topic key for principal {principal!r}: set OMS_CONTROL_KEYS="
                f"{principal}=<key> (or OMS_CONTROL_KEYS_FILE), or OMS_CONTROL_SIGNING=off"
            )
        return Signer(principal, key)

    def verify(
        self, topic: str, msg_key: bytes | None, value: bytes, headers: Iterable[tuple[str, Any]]
    ) -> str:
        """The principal that signed this message; ``Refused`` when it is unsigned, signed
        with a key nobody here knows, badly signed, or by a principal that may not write the
        topic. With signing off: '' (nobody checked)."""
        if not self.required:
            return ""
        found = [v for k, v in headers if k == SIGNATURE_HEADER]
        if not found:
            raise Refused(f"unsigned: no {SIGNATURE_HEADER} header on {topic}")
        if len(found) > 1:
            raise Refused(f"{len(found)} {SIGNATURE_HEADER} headers: exactly one expected")
        raw = found[0]
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        match = HEADER_PATTERN.fullmatch(text)
        if match is None:
            raise Refused(f"malformed {SIGNATURE_HEADER} header (expected v1:<principal>:<hex>)")
        principal, signature = match.groups()
        key = self.keys.get(principal)
        if key is None:
            raise Refused(f"signed by {principal!r}, a principal without a key here")
        if not hmac.compare_digest(mac(key, principal, topic, msg_key, value), signature):
            raise Refused(f"bad signature: not what {principal!r}'s key signs for this message")
        writers = WRITERS.get(topic_suffix(topic), frozenset())
        if principal not in writers:
            allowed = ", ".join(sorted(writers)) or "nobody"
            raise Refused(f"principal {principal!r} may not write {topic} (only: {allowed})")
        return principal


def topic_suffix(topic: str) -> str:
    """``oms.wms.events`` -> ``wms.events`` (whatever the prefix)."""
    for suffix in WRITERS:
        if topic == suffix or topic.endswith(f".{suffix}"):
            return suffix
    return topic


def person(actor: str) -> bool:
    """A name a person acts under: not the system's, not already naming a principal."""
    claims = ("system", *(f"{name}:" for name in PRINCIPALS))
    return bool(actor) and not actor.startswith(claims)


def claimed(principal: str, message: Any) -> Any:
    """``message`` as the worker applies it: its actor checked against what ``principal`` may
    claim and recorded with the principal. ``Refused`` otherwise; '' (signing off) passes."""
    if not principal:
        return message
    if isinstance(message, OperatorAction):
        if principal == WORKER:
            if message.kind in PERSON_KINDS or not message.actor.startswith(SYSTEM_ACTOR_PREFIX):
                raise Refused(
                    f"principal 'worker' may send only timer actions as system:*, not "
                    f"{message.kind.value} as {message.actor!r}"
                )
            return message
        if principal in PEOPLE:
            if message.kind not in PERSON_KINDS or not person(message.actor):
                raise Refused(
                    f"principal {principal!r} may send release_hold or cancel as a person, "
                    f"not {message.kind.value} as {message.actor!r}"
                )
            return message.model_copy(update={"actor": f"{principal}:{message.actor}"})
    if isinstance(message, AfterSalesRequest) and principal in PEOPLE:
        if not person(message.requested_by):
            raise Refused(f"principal {principal!r} may not request as {message.requested_by!r}")
        return message.model_copy(update={"requested_by": f"{principal}:{message.requested_by}"})
    if isinstance(message, WmsEvent) and principal == WMS:
        return message  # recorded as "wms" by the pipeline
    raise Refused(f"principal {principal!r} may not send {type(message).__name__}")


def keyring(settings: Settings) -> Keyring:
    """The keys of this process: OMS_CONTROL_KEYS and OMS_CONTROL_KEYS_FILE, else the local
    stack's file (generated on first use). ``ControlKeyError`` for unusable keys."""
    if settings.control_signing == "off":
        return Keyring({}, required=False)
    keys: dict[str, bytes] = {}
    inline = secret_value(settings.control_keys)
    path = settings.control_keys_file
    if inline is None and path is None:
        path = local_keys_file(settings)
        ensure_local_keys(path)
    if path is not None:
        try:
            keys.update(parse_keys(path.read_text(), str(path)))
        except OSError as exc:
            raise ControlKeyError(f"OMS_CONTROL_KEYS_FILE {path}: {exc.strerror}") from None
    if inline is not None:
        keys.update(parse_keys(inline, "OMS_CONTROL_KEYS"))
    return Keyring(keys, required=True)


def signer_for(settings: Settings, principal: str) -> Signer:
    """The signer of ``principal`` with this process's keys."""
    return keyring(settings).signer(principal)


def control_env(settings: Settings) -> dict[str, str]:
    """OMS_CONTROL_KEYS for a child process (a secret: excluded from the settings dump)."""
    inline = secret_value(settings.control_keys)
    return {"OMS_CONTROL_KEYS": inline} if inline else {}
