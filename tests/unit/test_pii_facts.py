"""Personal data on its way to ClickHouse: free text that reaches a column is scrubbed, a
reason a person wrote becomes its code, and the buyer pseudonym is keyed by the deployment's
own salt (the default one is in the repository)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analytics.facts import COLUMNS, DLQ, ORDER_EVENTS, buyer_hash, rows_for
from analytics.sink import FactSink
from core.privacy import scrub_free_text
from core.settings import Settings
from streams.messages import DlqReason, DlqRecord, EventKind, OrderState
from streams.models import Buyer
from tests.unit.test_facts import an_event

NAME, PHONE, EMAIL = "Xenia Quokka", "13955512345", "xq.pii@example.org"


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        (f"created_at: '{NAME}' is not a time", "created_at: '***' is not a time"),
        (f'value "{NAME}" refused', "value '***' refused"),
        (f"mail {EMAIL} please", "mail <email> please"),
        (f"call {PHONE} or +86 139-5551-2345", "call <digits> or <digits>"),
        ("lines L1, L2 exceed 999 units", "lines L1, L2 exceed 999 units"),
        ("outbound C1a2345678b9 Cdeadbeef1234567", "outbound C1a2345678b9 Cdeadbeef1234567"),
        ("refund 1234.50", "refund 1234.50"),
        ("", ""),
    ],
)
def test_scrub_free_text(text: str, scrubbed: str) -> None:
    assert scrub_free_text(text) == scrubbed


def event_reason(kind: EventKind, reason: str) -> str:
    event = an_event(3, kind, OrderState.RETURNING).model_copy(update={"reason": reason})
    row = rows_for([event])[ORDER_EVENTS][0]
    return row[COLUMNS[ORDER_EVENTS].index("reason")]


def test_a_reason_a_person_wrote_becomes_its_code() -> None:
    """order/aftersales.py puts an after-sales request's own words in the event's reason."""
    words = f"{NAME} says the parcel was wet, call {PHONE}"
    assert event_reason(EventKind.RETURN_REQUESTED, words) == "return"
    assert event_reason(EventKind.EXCHANGE_REQUESTED, words) == "exchange"


def test_codes_stay_and_other_text_is_scrubbed() -> None:
    assert event_reason(EventKind.HELD, "address_incomplete") == "address_incomplete"
    assert event_reason(EventKind.INTERCEPT_FAILED, f"driver {PHONE}") == "driver <digits>"


def test_dlq_detail_is_scrubbed() -> None:
    record = DlqRecord(
        dlq_id="D1",
        reason=DlqReason.INVALID_FIELD,
        detail=f"buyer.email: {EMAIL!r} is not valid; phone {PHONE}",
        source_topic="oms.raw.own",
        channel="own",
        key="W-1",
        payload=f'{{"name": "{NAME}"}}',
        received_at=datetime.now(UTC),
    )
    row = dict(zip(COLUMNS[DLQ], rows_for([record])[DLQ][0], strict=True))
    assert row["detail"] == "buyer.email: '***' is not valid; phone <digits>"
    for secret in (NAME, PHONE, EMAIL, "W-1"):
        assert secret not in repr(row)


def test_the_sink_keys_buyer_hashes_with_the_configured_salt() -> None:
    configured = FactSink(Settings(analytics_salt="deployment-own-salt"), setup=None)
    default = FactSink(Settings(), setup=None)
    buyer = Buyer(phone=PHONE)
    assert configured.salt == "deployment-own-salt"
    assert buyer_hash(buyer, configured.salt) != buyer_hash(buyer, default.salt)
    assert "deployment-own-salt" not in repr(Settings(analytics_salt="deployment-own-salt"))
