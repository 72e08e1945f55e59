"""Customer service on an order (issue 16 item 9): tags as operator actions, their checks,
and the API route that sends them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from analytics.search import OrderSearch
from order.plan import BatchResult, Plan
from order.tags import apply_tags, tag_change
from streams.messages import EventKind, OperatorAction, OperatorActionKind, OrderState
from streams.signing import PERSON_KINDS
from streams.tags import (
    MAX_TAG_CHARS,
    MAX_TAG_DIGITS,
    MAX_TAGS,
    TagError,
    parse_tag,
    parse_tags,
    retag,
)
from tests.unit.records import decisions, record_in
from tests.unit.test_access import OTHER_VIEW, SHOP, VIEW, Actions, Reads, Verifier
from web.api import create_api

T = datetime(2026, 11, 11, 10, 0, tzinfo=UTC)


# --- what a tag may be ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_text", "tag"),
    [("vip", "vip"), (" VIP ", "vip"), ("ｆｒａｇｉｌｅ", "fragile"), ("promo-2026", "promo-2026")],
)
def test_a_tag_has_one_spelling(given_text: str, tag: str) -> None:
    assert parse_tag(given_text) == tag


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "13800138000",  # a phone: starts with a digit
        "tel13800138000",  # too many digits
        "张三",  # a name
        "vip customer",
        "a" * (MAX_TAG_CHARS + 1),
        "-vip",
        "x" * 10_000,
        "vip;drop",
    ],
)
def test_what_is_not_a_tag(bad: str) -> None:
    with pytest.raises(TagError):
        parse_tag(bad)


def test_several_tags_are_deduplicated_bounded_and_at_least_one() -> None:
    assert parse_tags(["vip", "VIP", "fragile"]) == ["vip", "fragile"]
    with pytest.raises(TagError):
        parse_tags([])
    with pytest.raises(TagError):
        parse_tags([f"t{n}" for n in range(MAX_TAGS + 1)])


def test_retag_adds_removes_and_bounds() -> None:
    assert retag(["vip"], add=["fragile"]) == ["fragile", "vip"]
    assert retag(["fragile", "vip"], remove=["vip", "absent"]) == ["fragile"]
    with pytest.raises(TagError):
        retag([f"t{n}" for n in range(MAX_TAGS)], add=["one-more"])
    assert tag_change(["a", "b"], ["b", "c"]) == "+c -a"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_a_tag_of_the_charset_or_refused(text: str) -> None:
    """Whatever comes in: either a canonical tag (parsing it again changes nothing) that holds
    no long digit run, or TagError; never another exception."""
    try:
        tag = parse_tag(text)
    except TagError:
        return
    assert parse_tag(tag) == tag
    assert 1 <= len(tag) <= MAX_TAG_CHARS and tag[0].isalpha() and tag.isascii()
    assert sum(c.isdigit() for c in tag) <= MAX_TAG_DIGITS


def test_a_long_input_is_refused_unread() -> None:
    with pytest.raises(TagError):
        parse_tag("a" * 1_000_000)


# --- the message and the rule ------------------------------------------------------------


def action(kind: OperatorActionKind, tags: list[str], action_id: str = "A1") -> OperatorAction:
    return OperatorAction(
        action_id=action_id, order_id="O1", kind=kind, actor="amy", at=T, tags=tags
    )


def test_the_message_takes_only_canonical_tags() -> None:
    assert action(OperatorActionKind.TAG, ["vip"]).tags == ["vip"]
    for bad in (["VIP"], ["13800138000"], [f"t{n}" for n in range(MAX_TAGS + 1)]):
        with pytest.raises(ValidationError):
            action(OperatorActionKind.TAG, bad)


def test_people_may_tag() -> None:
    assert {OperatorActionKind.TAG, OperatorActionKind.UNTAG} <= PERSON_KINDS


def apply(record: Any, act: OperatorAction) -> tuple[Plan, BatchResult]:
    plan = Plan(act, f"action:{act.action_id}", record, record.version, actor=act.actor)
    result = BatchResult()
    apply_tags(decisions(), plan, act, T, result)
    return plan, result


@pytest.mark.parametrize("state", [OrderState.HELD, OrderState.RELEASED, OrderState.CLOSED])
def test_tags_apply_in_any_state_and_move_nothing(state: OrderState) -> None:
    record = record_in(state, {"A": 1})
    plan, _ = apply(record, action(OperatorActionKind.TAG, ["vip", "fragile"]))
    assert record.tags == ["fragile", "vip"] and record.state is state
    (event,) = plan.messages
    assert event.kind is EventKind.TAGS_CHANGED and event.reason == "+fragile +vip"
    assert event.actor == "amy" and record.history[-1].actor == "amy"
    assert not plan.effects and plan.reserve is None and not plan.refused
    plan, _ = apply(record, action(OperatorActionKind.UNTAG, ["vip"], "A2"))
    assert record.tags == ["fragile"] and plan.messages[0].reason == "-vip"


def test_too_many_tags_are_refused_in_the_trail() -> None:
    record = record_in(OrderState.HELD, {"A": 1})
    record.tags = [f"t{n}" for n in range(MAX_TAGS)]
    plan, result = apply(record, action(OperatorActionKind.TAG, ["one-more"]))
    assert plan.refused and result.counts["refused"] == 1
    assert plan.messages[0].kind is EventKind.ACTION_REFUSED
    assert len(record.tags) == MAX_TAGS


# --- the API route -------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient, Actions]]:
    actions = Actions()
    app = create_api(Reads(), worker="w0", verifier=Verifier(), actions=actions)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, actions
    await client.close()


CS = {"Authorization": "Bearer tok-customer_service"}


async def test_post_tags_sends_a_tag_action(api: tuple[TestClient, Actions]) -> None:
    client, actions = api
    resp = await client.post("/orders/O1/tags", json={"tags": ["VIP", "fragile"]}, headers=CS)
    assert resp.status == 200, await resp.text()
    assert actions.calls == [("O1", "tag", "user-customer_service", "", ["vip", "fragile"])]
    resp = await client.post(
        "/orders/O1/tags", json={"tags": ["vip"], "remove": True, "reason": "fixed"}, headers=CS
    )
    assert resp.status == 200
    assert actions.calls[-1] == ("O1", "untag", "user-customer_service", "fixed", ["vip"])


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tags": []},
        {"tags": "vip"},
        {"tags": [1]},
        {"tags": ["13800138000"]},
        {"tags": ["vip"], "remove": "yes"},
        {"tags": ["vip"], "colour": "red"},
    ],
)
async def test_post_tags_refuses_bad_bodies(
    api: tuple[TestClient, Actions], body: dict[str, Any]
) -> None:
    client, actions = api
    await refused(await client.post("/orders/O1/tags", json=body, headers=CS), actions.calls)


async def test_post_tags_of_another_shop_s_order_is_unknown(
    api: tuple[TestClient, Actions],
) -> None:
    client, actions = api
    scoped = {"Authorization": "Bearer tok-scoped"}  # customer service of SHOP only
    resp = await client.post("/orders/O2/tags", json={"tags": ["vip"]}, headers=scoped)
    assert resp.status == 404 and actions.calls == []


# --- GET /orders: finding orders -----------------------------------------------------------


class FindingReads(Reads):
    def __init__(self) -> None:
        self.asked: list[tuple[OrderSearch, Any]] = []

    async def find(self, search: OrderSearch, *, shops: Any) -> list[dict[str, Any]]:
        self.asked.append((search, shops))
        return [VIEW, OTHER_VIEW]  # ignores the scope: the API's own guard must apply it


@pytest.fixture
async def finder() -> AsyncIterator[tuple[TestClient, FindingReads]]:
    reads = FindingReads()
    client = TestClient(TestServer(create_api(reads, worker="w0", verifier=Verifier())))
    await client.start_server()
    yield client, reads
    await client.close()


async def test_get_orders_parses_the_filters_and_keeps_to_the_scope(
    finder: tuple[TestClient, FindingReads],
) -> None:
    client, reads = finder
    query = {
        "phone": "138****8000",
        "sku": "SKU-A",
        "since": "1700000000",
        "until": "1800000000",
        "limit": "20",
    }
    resp = await client.get("/orders", params=query, headers={"Authorization": "Bearer tok-scoped"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert [o["order_id"] for o in body["orders"]] == ["O1"] and body["total"] == 1
    ((search, shops),) = reads.asked
    assert (search.phone, search.sku, search.limit) == ("138****8000", "SKU-A", 20)
    assert search.since == datetime.fromtimestamp(1_700_000_000, UTC)
    assert search.until == datetime.fromtimestamp(1_800_000_000, UTC)
    assert shops == frozenset({SHOP})


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"limit": "5"},
        {"phone": "#MTM4MDAxMzgwMDA=abcdefghij#1##"},
        {"phone": "12"},
        {"sku": "A", "since": "yesterday"},
        {"sku": "A", "since": "2000", "until": "1000"},
        {"sku": "A", "limit": "501"},
        {"sku": "A" * 300},
        {"sku": "A", "colour": "red"},
        {"shop": "nowhere/x"},
    ],
)
async def test_get_orders_refuses_bad_filters(
    finder: tuple[TestClient, FindingReads], query: dict[str, str]
) -> None:
    client, reads = finder
    await refused(await client.get("/orders", params=query, headers=CS), reads.asked)


async def refused(resp: Any, sent: list[Any]) -> None:
    """A 400 with the reason, and nothing passed on."""
    assert resp.status == 400 and "error" in await resp.json()
    assert sent == []
