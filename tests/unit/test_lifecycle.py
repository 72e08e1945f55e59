"""The order state machine (order/lifecycle.py): allowed and refused transitions, event ids,
history, terminal states, and a hypothesis state machine over random transition attempts."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from order.lifecycle import ALLOWED, TERMINAL, IllegalTransition, can_move, record_event
from order.record import HISTORY_MAX, OrderRecord
from streams.messages import Allocation, EventKind, OrderState, make_id
from streams.models import (
    Address,
    Buyer,
    Channel,
    ChannelStatus,
    Order,
    OrderLine,
    Payment,
    PaymentStatus,
    make_order_id,
)

S = OrderState
T0 = datetime(2026, 11, 11, tzinfo=UTC)

# An event kind to use when moving to each state (the machine does not care which kind).
KIND_FOR: dict[OrderState, EventKind] = {
    S.RECEIVED: EventKind.RECEIVED,
    S.HELD: EventKind.HELD,
    S.REJECTED: EventKind.REJECTED,
    S.AUDITED: EventKind.AUDITED,
    S.RESERVED: EventKind.RESERVED,
    S.ROUTED: EventKind.ROUTED,
    S.RELEASED: EventKind.RELEASED,
    S.SHIPPED: EventKind.SHIPPED,
    S.DELIVERED: EventKind.DELIVERED,
    S.RETURNED: EventKind.RETURNED,
    S.REFUNDED: EventKind.REFUNDED,
    S.CLOSED: EventKind.CLOSED,
    S.CANCELLED: EventKind.CANCELLED,
}


def kind_for(state: OrderState) -> EventKind:
    return KIND_FOR.get(state, EventKind.UPDATED)


def make_order(ext: str = "E1") -> Order:
    line = OrderLine(
        line_id="L1", sku="SKU-A", quantity=2, unit_price=Decimal("5"), paid_amount=Decimal("10")
    )
    return Order(
        order_id=make_order_id("own", "shop1", ext),
        channel=Channel.OWN,
        shop_id="shop1",
        external_id=ext,
        channel_status=ChannelStatus.PAID,
        created_at=T0,
        updated_at=T0,
        currency="CNY",
        buyer=Buyer(name="张三"),
        address=Address(province="浙江省", province_code="ZJ", city="杭州市", street="x", name="n"),
        lines=[line],
        payment=Payment(status=PaymentStatus.PAID, paid_total=Decimal("10")),
        total=Decimal("10"),
    )


def new_record(ext: str = "E1") -> OrderRecord:
    order = make_order(ext)
    return OrderRecord(
        order_id=order.order_id,
        state=S.RECEIVED,
        order=order,
        fingerprint=order.fingerprint(),
    )


def received_record(ext: str = "E1") -> OrderRecord:
    """A record as the pipeline creates it: the first event moves it into RECEIVED."""
    record = new_record(ext)
    record_event(record, EventKind.RECEIVED, T0, to_state=S.RECEIVED)
    return record


def path_to(target: OrderState) -> list[OrderState]:
    """Shortest chain of allowed moves from RECEIVED to ``target`` (BFS over ALLOWED)."""
    parents: dict[OrderState, OrderState | None] = {S.RECEIVED: None}
    queue = deque([S.RECEIVED])
    while queue:
        state = queue.popleft()
        for nxt in sorted(ALLOWED[state]):
            if nxt not in parents:
                parents[nxt] = state
                queue.append(nxt)
    assert target in parents, f"{target} is unreachable from RECEIVED"
    chain: list[OrderState] = []
    node: OrderState | None = target
    while node is not None and node is not S.RECEIVED:
        chain.append(node)
        node = parents[node]
    return chain[::-1]


def record_in(state: OrderState) -> OrderRecord:
    record = received_record()
    for i, step in enumerate(path_to(state), start=1):
        record_event(record, kind_for(step), T0 + timedelta(seconds=i), to_state=step)
    assert record.state is state
    return record


# --- the table ----------------------------------------------------------------------------


def test_every_state_has_an_entry() -> None:
    assert set(ALLOWED) == set(OrderState)


def test_terminal_states() -> None:
    assert {S.REJECTED, S.CANCELLED, S.CLOSED} == TERMINAL
    for state in TERMINAL:
        assert not ALLOWED[state]


@pytest.mark.parametrize("state", list(OrderState))
def test_every_state_is_reachable_from_received(state: OrderState) -> None:
    record = record_in(state)
    assert record.state is state


@pytest.mark.parametrize("state", [s for s in OrderState if s not in TERMINAL])
def test_every_live_state_can_still_end(state: OrderState) -> None:
    seen, frontier = {state}, [state]
    while frontier:
        for nxt in ALLOWED[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen & TERMINAL


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        (S.RESERVED, S.RECEIVED),
        (S.RELEASED, S.AUDITED),
        (S.SHIPPED, S.CANCELLED),
        (S.DELIVERED, S.SHIPPED),
        (S.REFUNDED, S.RETURNED),
        (S.RECEIVED, S.SHIPPED),
        (S.HELD, S.RELEASED),
    ],
)
def test_backwards_and_skipping_moves_are_refused(current: OrderState, wanted: OrderState) -> None:
    assert not can_move(current, wanted)


# --- record_event: every pair ------------------------------------------------------------


@pytest.mark.parametrize("wanted", list(OrderState))
@pytest.mark.parametrize("current", list(OrderState))
def test_transition_succeeds_exactly_when_allowed(current: OrderState, wanted: OrderState) -> None:
    record = record_in(current)
    before = record.model_dump()
    at = T0 + timedelta(hours=1)
    if wanted in ALLOWED[current]:
        event = record_event(record, kind_for(wanted), at, to_state=wanted, reason="r")
        assert record.state is wanted
        assert (event.from_state, event.to_state) == (current, wanted)
        assert len(record.history) == len(before["history"]) + 1
        assert record.history[-1].to_state is wanted
    else:
        with pytest.raises(IllegalTransition) as info:
            record_event(record, kind_for(wanted), at, to_state=wanted, reason="r")
        assert (info.value.current, info.value.wanted) == (current, wanted)
        assert record.order_id in str(info.value)
        assert record.model_dump() == before  # nothing mutated, not even the history


def test_illegal_transition_is_a_value_error() -> None:
    record = record_in(S.CLOSED)
    with pytest.raises(ValueError, match=r"closed -> received is not allowed"):
        record_event(record, EventKind.RECEIVED, T0, to_state=S.RECEIVED)


@pytest.mark.parametrize("state", sorted(TERMINAL))
@pytest.mark.parametrize("wanted", list(OrderState))
def test_terminal_states_have_no_exits(state: OrderState, wanted: OrderState) -> None:
    record = record_in(state)
    with pytest.raises(IllegalTransition):
        record_event(record, kind_for(wanted), T0, to_state=wanted)
    assert record.state is state


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_events_without_a_transition_are_recorded_in_terminal_states(state: OrderState) -> None:
    record = record_in(state)
    n = len(record.history)
    event = record_event(record, EventKind.DUPLICATE, T0, reason="same content pushed again")
    assert record.state is state
    assert (event.from_state, event.to_state) == (state, None)
    assert len(record.history) == n + 1
    assert record.history[-1].kind is EventKind.DUPLICATE


# --- ids, seq, history, event content ----------------------------------------------------


def test_first_event_has_no_from_state_and_seq_one() -> None:
    record = new_record()
    event = record_event(record, EventKind.RECEIVED, T0, to_state=S.RECEIVED, with_snapshot=True)
    assert event.seq == 1
    assert event.from_state is None and event.to_state is S.RECEIVED
    assert event.event_id == make_id("E", record.order_id, 1)
    assert event.order == record.order
    entry = record.history[0]
    assert (entry.seq, entry.event_id, entry.kind) == (1, event.event_id, EventKind.RECEIVED)


def test_seq_and_event_ids_are_increasing_and_deterministic() -> None:
    steps = [
        S.HELD,
        S.HELD,
        S.AUDITED,
        S.RESERVED,
        S.ROUTED,
        S.RELEASED,
        S.SHIPPED,
        S.DELIVERED,
        S.CLOSED,
    ]

    def run(ext: str) -> list[tuple[int, str]]:
        record = received_record(ext)
        out = [(record.history[0].seq, record.history[0].event_id)]
        for i, step in enumerate(steps, start=1):
            event = record_event(record, kind_for(step), T0 + timedelta(minutes=i), to_state=step)
            out.append((event.seq, event.event_id))
        return out

    first, again, other = run("E1"), run("E1"), run("E2")
    assert first == again  # a replay re-creates the same ids
    assert [seq for seq, _ in first] == list(range(1, len(steps) + 2))
    assert len({eid for _, eid in first}) == len(first)
    assert not {eid for _, eid in first} & {eid for _, eid in other}


def test_history_records_each_step() -> None:
    record = received_record()
    record_event(record, EventKind.HELD, T0, to_state=S.HELD, reason="unpaid", actor="ops")
    record_event(record, EventKind.UPDATED, T0)
    record_event(record, EventKind.AUDITED, T0, to_state=S.AUDITED)
    record_event(record, EventKind.RESERVED, T0, to_state=S.RESERVED)
    assert [(h.kind, h.from_state, h.to_state) for h in record.history] == [
        (EventKind.RECEIVED, None, S.RECEIVED),
        (EventKind.HELD, S.RECEIVED, S.HELD),
        (EventKind.UPDATED, S.HELD, None),
        (EventKind.AUDITED, S.HELD, S.AUDITED),
        (EventKind.RESERVED, S.AUDITED, S.RESERVED),
    ]
    assert record.history[1].reason == "unpaid"
    assert record.history[1].actor == "ops"
    assert [h.seq for h in record.history] == [1, 2, 3, 4, 5]
    assert record.next_seq == 6


def test_event_carries_order_identity_and_extras() -> None:
    record = received_record()
    record_event(record, EventKind.AUDITED, T0, to_state=S.AUDITED)
    record.warehouse = "WH-SH"
    allocs = [Allocation(sku="SKU-A", warehouse="WH-SH", quantity=2)]
    event = record_event(
        record,
        EventKind.RESERVED,
        T0,
        to_state=S.RESERVED,
        allocations=allocs,
        detail="d",
        actor="ops",
    )
    order = record.order
    assert (event.order_id, event.channel, event.shop_id, event.external_id) == (
        order.order_id,
        order.channel,
        order.shop_id,
        order.external_id,
    )
    assert event.warehouse == "WH-SH"
    assert event.allocations == allocs
    assert (event.detail, event.actor, event.at) == ("d", "ops", T0)
    assert event.order is None  # no snapshot unless asked


# --- hypothesis ---------------------------------------------------------------------------

attempts = st.lists(st.one_of(st.none(), st.sampled_from(list(OrderState))), max_size=40)


@settings(max_examples=300, deadline=None)
@given(attempts)
def test_random_attempts_keep_state_and_history_consistent(
    wanted: list[OrderState | None],
) -> None:
    record = received_record()
    state, successes, terminal_exits = S.RECEIVED, 1, 0
    for i, target in enumerate(wanted):
        was_terminal = record.state in TERMINAL
        try:
            record_event(record, kind_for(target or S.RECEIVED), T0, to_state=target)
        except IllegalTransition:
            assert target is not None and target not in ALLOWED[state]
            continue
        successes += 1
        if target is not None:
            assert target in ALLOWED[state], (i, state, target)
            terminal_exits += was_terminal
            state = target
    assert record.state is state
    assert trail_length(record) == successes == record.last_seq
    seqs = [h.seq for h in record.history]
    assert seqs == sorted(seqs) and seqs[0] == 1
    assert terminal_exits == 0


def trail_length(record: OrderRecord) -> int:
    """Events the compacted trail stands for: entries, their repeats, the dropped middle."""
    return len(record.history) + sum(h.repeats for h in record.history) + record.history_dropped


def test_repeated_notes_compact_and_the_trail_is_bounded() -> None:
    """Issue 13 item 4: every re-push appended to the history, so 3,000 of them made a record
    of 584 KiB. Repeats of a note are counted on one entry, and a long life keeps the trail's
    head and its newest entries."""
    record = received_record()
    for _ in range(3000):
        record_event(record, EventKind.DUPLICATE, T0, reason="same content pushed again")
    assert len(record.history) == 2 and record.history[1].repeats == 2999
    assert record.last_seq == 3001
    for n in range(1000):  # notes that differ each time
        record_event(record, EventKind.ACTION_REFUSED, T0, reason=f"r{n}")
    assert len(record.history) == HISTORY_MAX
    assert record.history[0].kind is EventKind.RECEIVED  # the head is kept
    assert record.history[-1].reason == "r999"
    assert trail_length(record) == record.last_seq == 4001
    assert len(record.model_dump_json()) < 64 * 1024


class LifecycleMachine(RuleBasedStateMachine):
    """Random transition attempts from RECEIVED against a model of the last good state."""

    def __init__(self) -> None:
        super().__init__()
        self.record = received_record()
        self.state = S.RECEIVED
        self.events = 1
        self.ids = {self.record.history[0].event_id}

    @rule(wanted=st.sampled_from(list(OrderState)))
    def attempt(self, wanted: OrderState) -> None:
        before = self.record.model_dump()
        try:
            event = record_event(self.record, kind_for(wanted), T0, to_state=wanted)
        except IllegalTransition:
            assert wanted not in ALLOWED[self.state]
            assert self.record.model_dump() == before
            return
        assert self.state not in TERMINAL, "left a terminal state"
        assert wanted in ALLOWED[self.state]
        assert event.from_state is self.state
        assert event.seq == self.events + 1
        assert event.event_id not in self.ids
        self.ids.add(event.event_id)
        self.state = wanted
        self.events += 1

    @rule()
    def note(self) -> None:
        event = record_event(self.record, EventKind.DUPLICATE, T0)
        assert event.to_state is None
        self.events += 1
        self.ids.add(event.event_id)

    @invariant()
    def consistent(self) -> None:
        assert self.record.state is self.state
        assert trail_length(self.record) == self.events == self.record.last_seq
        last_move = [h.to_state for h in self.record.history if h.to_state is not None][-1]
        assert last_move is self.state


LifecycleMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)
TestLifecycleMachine = LifecycleMachine.TestCase
