"""Control-topic signing (streams/signing.py, agents/control.py), pure: what each principal's
signature proves and what it may claim, the keys (local file, OMS_CONTROL_KEYS, errors that name
what to set), the workers' screening of a batch (DLQ records with reason unauthorized_control,
actors recorded with their principal), and every producer signing: the CLI and the API
(web/views.py), the WMS simulator, the workers' timers."""

from __future__ import annotations

import asyncio
import stat
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from agents.control import screen, send_signed
from core.settings import Settings
from streams import signing as control
from streams.messages import (
    AfterSalesKind,
    AfterSalesRequest,
    DlqReason,
    DlqRecord,
    OperatorAction,
    OperatorActionKind,
    WmsEvent,
    WmsEventKind,
)
from streams.signing import (
    API,
    OPERATOR,
    SIGNATURE_HEADER,
    WMS,
    WORKER,
    ControlKeyError,
    Keyring,
    Refused,
    claimed,
    keyring,
    parse_keys,
)
from web import views

T0 = datetime(2026, 11, 11, tzinfo=UTC)
KEYS = {name: f"{name}-key-".encode() * 4 for name in (WORKER, API, OPERATOR, WMS)}
RING = Keyring(KEYS)
OPS, AFTER, WMS_TOPIC = "oms.operator", "oms.aftersales", "oms.wms.events"


def action(kind: str = "release_hold", actor: str = "amy") -> OperatorAction:
    return OperatorAction(
        action_id="a1", order_id="O1", kind=OperatorActionKind(kind), actor=actor, at=T0
    )


def request(requested_by: str = "amy") -> AfterSalesRequest:
    return AfterSalesRequest(
        request_id="r1", order_id="O1", kind=AfterSalesKind.CANCEL, requested_by=requested_by, at=T0
    )


def wms_event() -> WmsEvent:
    return WmsEvent(
        event_id="e1",
        command_id="C1",
        order_id="O1",
        kind=WmsEventKind.SHIPPED,
        warehouse="WH",
        at=T0,
    )


def signed(principal: str, topic: str, value: bytes, key: bytes = b"O1") -> list[Any]:
    return RING.signer(principal).headers(topic, key, value)


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    ("principal", "topic", "value"),
    [
        (API, OPS, action().model_dump_json().encode()),
        (OPERATOR, AFTER, request().model_dump_json().encode()),
        (WORKER, OPS, action("close", "system:close-timer").model_dump_json().encode()),
        (WMS, WMS_TOPIC, wms_event().model_dump_json().encode()),
    ],
)
def test_a_signature_proves_its_writer(principal: str, topic: str, value: bytes) -> None:
    headers = signed(principal, topic, value)
    assert [name for name, _ in headers] == [SIGNATURE_HEADER]
    assert RING.verify(topic, b"O1", value, headers) == principal


def test_whatever_was_not_signed_that_way_is_refused() -> None:
    value = action().model_dump_json().encode()
    headers = signed(API, OPS, value)
    cases = {
        "unsigned": [],
        "bad signature": signed(API, OPS, value.replace(b"amy", b"bob")),  # another message
        "malformed": [(SIGNATURE_HEADER, b"v1:api:nothex")],
        "without a key here": [(SIGNATURE_HEADER, b"v1:mallory:" + b"0" * 64)],
        "headers: exactly one": headers + headers,
    }
    for needle, given in cases.items():
        with pytest.raises(Refused, match=needle):
            RING.verify(OPS, b"O1", value, given)
    with pytest.raises(Refused, match="bad signature"):
        RING.verify(OPS, b"O1", value.replace(b"amy", b"bob"), headers)  # tampered value
    with pytest.raises(Refused, match="bad signature"):
        RING.verify(OPS, b"O2", value, headers)  # moved to another order's key
    with pytest.raises(Refused, match="bad signature"):
        RING.verify(AFTER, b"O1", value, headers)  # moved to another topic
    forged = [(SIGNATURE_HEADER, headers[0][1].replace(b"v1:api:", b"v1:operator:"))]
    with pytest.raises(Refused, match="bad signature"):
        RING.verify(OPS, b"O1", value, forged)  # relabelled with another principal
    other_keys = Keyring({API: b"x" * 40})
    with pytest.raises(Refused, match="bad signature"):
        other_keys.verify(OPS, b"O1", value, headers)


@pytest.mark.parametrize(
    ("principal", "topic"),
    [(WMS, OPS), (WMS, AFTER), (API, WMS_TOPIC), (OPERATOR, WMS_TOPIC), (WORKER, AFTER)],
)
def test_each_principal_writes_only_its_topics(principal: str, topic: str) -> None:
    value = b"{}"
    with pytest.raises(Refused, match=f"principal '{principal}' may not write {topic}"):
        RING.verify(topic, b"O1", value, signed(principal, topic, value))


# --------------------------------------------------------------------------- claims


def test_people_are_recorded_with_their_principal() -> None:
    assert claimed(API, action()).actor == "api:amy"
    assert claimed(OPERATOR, action("cancel", "alice")).actor == "operator:alice"
    assert claimed(API, request()).requested_by == "api:amy"
    timer = action("expire_unpaid", "system:unpaid-timer")
    assert claimed(WORKER, timer) == timer
    assert claimed(WMS, wms_event()) == wms_event()
    assert claimed("", action("close", "system:x")).actor == "system:x"  # signing off
    assert claimed(OPERATOR, action(actor="ops:night")).actor == "operator:ops:night"


@pytest.mark.parametrize(
    ("principal", "message", "needle"),
    [
        (API, action("close", "system:close-timer"), "release_hold or cancel as a person"),
        (API, action("release_hold", "system:close-timer"), "as a person"),
        (OPERATOR, action("cancel", "api:amy"), "as a person"),  # no borrowed principal
        (WORKER, action("cancel", "system:unpaid-timer"), "only timer actions"),
        (WORKER, action("expire_unpaid", "amy"), "only timer actions"),
        (API, request("system:close-timer"), "may not request as"),
        (WMS, action(), "may not send OperatorAction"),
        (OPERATOR, wms_event(), "may not send WmsEvent"),
    ],
)
def test_an_actor_the_principal_may_not_claim_is_refused(
    principal: str, message: Any, needle: str
) -> None:
    with pytest.raises(Refused, match=needle):
        claimed(principal, message)


# --------------------------------------------------------------------------- keys


def test_the_local_stack_generates_every_key_once_and_privately(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    ring = keyring(settings)
    path = tmp_path / "control-keys"
    assert set(ring.keys) == {WORKER, API, OPERATOR, WMS}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keyring(settings).keys == ring.keys  # the next process reads the same file
    assert [p.name for p in tmp_path.iterdir()] == ["control-keys"]  # no temp file left


def test_keys_from_the_environment_and_errors_that_name_the_setting(tmp_path: Path) -> None:
    inline = f"wms={'w' * 32}, api = {'a' * 40}"
    ring = keyring(Settings(home=tmp_path, control_keys=inline))
    assert set(ring.keys) == {WMS, API} and not (tmp_path / "control-keys").exists()
    with pytest.raises(ControlKeyError, match="OMS_CONTROL_KEYS=operator=<key>"):
        ring.signer(OPERATOR)
    with pytest.raises(ControlKeyError, match="shorter than 32"):
        parse_keys("wms=short", "OMS_CONTROL_KEYS")
    with pytest.raises(ControlKeyError, match="name=key"):
        parse_keys("just-a-key-without-a-name-0123456789", "OMS_CONTROL_KEYS")
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\noperator={'o' * 32}\n")
    from_file = keyring(Settings(home=tmp_path, control_keys_file=keys_file))
    assert set(from_file.keys) == {OPERATOR}
    with pytest.raises(ControlKeyError, match="OMS_CONTROL_KEYS_FILE"):
        keyring(Settings(home=tmp_path, control_keys_file=tmp_path / "missing"))


def test_control_keys_are_a_secret_that_children_still_get(tmp_path: Path) -> None:
    from ops import stack

    secret = f"wms={'w' * 32}"
    settings = Settings(home=tmp_path, control_keys=secret)
    assert secret not in repr(settings) and secret not in str(settings.model_dump(mode="json"))
    assert stack.child_env(settings)["OMS_CONTROL_KEYS"] == secret


def test_signing_off_signs_and_checks_nothing(tmp_path: Path) -> None:
    ring = keyring(Settings(home=tmp_path, control_signing="off"))
    assert ring.signer(WMS).headers(OPS, b"k", b"v") == []
    assert ring.verify(OPS, b"k", b"v", []) == ""
    assert not (tmp_path / "control-keys").exists()


# --------------------------------------------------------------------------- the workers


@dataclass
class Message:
    topic: str
    key: bytes
    headers: list[Any]
    partition: int = 0
    offset: int = 0


@dataclass
class Event:
    message: Message
    value: bytes


@dataclass
class Pipeline:
    stamped: list[DlqRecord] = field(default_factory=list)

    async def as_first_seen(self, records: list[DlqRecord]) -> list[DlqRecord]:
        self.stamped += records
        return records


def event(value: bytes, headers: list[Any], offset: int, topic: str = OPS) -> Event:
    return Event(Message(topic, b"O1", headers, offset=offset), value)


async def test_the_workers_apply_only_what_was_signed_and_may_be_claimed() -> None:
    good = action().model_dump_json().encode()
    timer = action("close", "system:close-timer").model_dump_json().encode()
    forged_timer = timer  # the API claiming to be a timer
    events = [
        event(good, signed(API, OPS, good), 1),
        event(good, [], 2),  # anyone with the broker
        event(good, signed(API, OPS, good.replace(b"amy", b"eve")), 3),
        event(timer, signed(WORKER, OPS, timer), 4),
        event(forged_timer, signed(API, OPS, forged_timer), 5),
        event(b"not json", signed(API, OPS, b"not json"), 6),
    ]
    pipeline = Pipeline()
    settings = Settings()
    out = await screen(events, OperatorAction, RING, settings, pipeline)  # type: ignore[arg-type]
    assert [(a.kind.value, a.actor) for a in out.items] == [
        ("release_hold", "api:amy"),
        ("close", "system:close-timer"),
    ]
    assert out.refused == 3 and out.unparseable == 1
    records = [DlqRecord.model_validate_json(value) for _, _, value in out.outputs]
    assert [r.reason for r in records] == [DlqReason.UNAUTHORIZED_CONTROL] * 3
    assert [r.offset for r in records] == [2, 3, 5]
    assert "unsigned" in records[0].detail and "bad signature" in records[1].detail
    assert "as a person" in records[2].detail
    assert {topic for topic, _, _ in out.outputs} == {"oms.dlq"}
    assert records[0].payload == good.decode()  # kept whole, as every DLQ record
    assert pipeline.stamped == records  # stamped with their first emission, like every DLQ


# --------------------------------------------------------------------------- the producers


async def test_the_cli_and_the_api_sign_as_themselves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path)
    sent: list[Any] = []

    async def produce(settings: Settings, records: Any) -> int:
        sent.extend(records)
        return len(records)

    monkeypatch.setattr(views, "produce", produce)
    # A client that is never used: with no wait, nothing is polled.
    monkeypatch.setattr(views, "connect_async", lambda s: aioredis.Redis(port=1))
    before: Any = type("R", (), {"order_id": "O1"})()
    for signer in (OPERATOR, API):
        message = action(actor="amy")
        topic = "oms.operator"
        await views.send_and_wait(settings, topic, before, message, "action:a1", 0.0, signer)
    ring = keyring(settings)
    assert [ring.verify(t, k, v, h) for t, k, v, h in sent] == [OPERATOR, API]


async def test_the_wms_simulator_signs_its_events(tmp_path: Path) -> None:
    from ops import wms_sim

    settings = Settings(home=tmp_path)
    sent: list[Any] = []

    class Producer:
        async def send(self, topic: str, value: bytes, *, key: bytes, headers: Any) -> Any:
            sent.append((topic, key, value, headers))
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    signer = control.signer_for(settings, WMS)
    await wms_sim.send_events(Producer(), WMS_TOPIC, [wms_event()], signer)  # type: ignore[arg-type]
    [(topic, key, value, headers)] = sent
    assert keyring(settings).verify(topic, key, value, headers) == WMS


async def test_the_timers_sign_as_the_worker(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    sent: list[Any] = []

    class Producer:
        async def send(self, *args: Any) -> Any:
            sent.append(args)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    app: Any = type("App", (), {"producer": Producer()})()
    value = action("close", "system:close-timer").model_dump_json()
    await send_signed(app, control.signer_for(settings, WORKER), [(OPS, "O1", value)])
    [(topic, key, raw, _partition, _timestamp, headers)] = sent
    assert keyring(settings).verify(topic, key, raw, headers) == WORKER


# --- the fact sink screens control topics like the workers --------------------------------


@dataclass
class Rec:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def record_of(principal: str, topic: str, message: Any) -> Rec:
    value = message.model_dump_json().encode()
    return Rec(topic, b"O1", value, list(signed(principal, topic, value)))


async def test_the_sink_lands_only_what_the_workers_would_apply() -> None:
    """A forged WMS event or after-sales request must not become a fact: the workers refuse it
    (and its DLQ record is the fact); an admitted one carries the actor they record."""
    from analytics.fact_consumer import Screen, land
    from streams.parse import parse_or_none

    decoders = {
        WMS_TOPIC: lambda value, where: parse_or_none(WmsEvent, value, where),
        AFTER: lambda value, where: parse_or_none(AfterSalesRequest, value, where),
    }
    event = WmsEvent(
        event_id="W1",
        command_id="C1",
        order_id="O1",
        kind=WmsEventKind.SHIPPED,
        warehouse="WH-SH",
        at=T0,
    )
    records = [
        record_of(WMS, WMS_TOPIC, event),
        record_of(API, AFTER, request()),
        Rec(
            WMS_TOPIC, b"O1", event.model_copy(update={"event_id": "W2"}).model_dump_json().encode()
        ),  # unsigned
        record_of(OPERATOR, WMS_TOPIC, event.model_copy(update={"event_id": "W3"})),
    ]

    class Sink:
        def __init__(self) -> None:
            self.written: list[Any] = []

        async def write(self, facts: list[Any]) -> None:
            self.written += facts

    sink, counters = Sink(), Counter[str]()
    screen = Screen(RING, frozenset({WMS_TOPIC, AFTER}))
    await land(records, decoders, sink, counters, screen)  # type: ignore[arg-type]
    assert [type(f).__name__ for f in sink.written] == ["WmsEvent", "AfterSalesRequest"]
    assert sink.written[1].requested_by == "api:amy"
    assert counters["unauthorized_facts"] == 2 and counters["facts"] == 2
