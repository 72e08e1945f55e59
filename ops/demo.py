"""`./oms demo`: start everything, load sample stock, flood a peak-sale burst, print the report.

Each run gets its own run id (so its orders are new, not duplicates of an earlier run) and tops
stock up to the sample figures on top of what earlier runs still hold reserved.

The order's whole life is on show: the WMS simulator runs beside the workers (a few short picks
and exceptions on purpose), some buyers of the web shop order twice within its merge window,
an operator works the holds, and a customer-service desk files returns, a refund, an exchange,
an address fix and cancels of released orders; orders arrive in the platforms' own privacy
and pre-sale shapes (ops/demo_shapes.py); the report then shows all of it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from analytics.ledger import ClickHouseLedger
from core.kafka import Record, produce
from core.settings import REPO_ROOT, Settings
from ops.conformance import check_topics
from ops.demo_shapes import Case, Found, build_cases, check, first_records, follow_up_records
from ops.loadgen import BurstPlan, generate_burst
from ops.prepare import prepare_stack
from state.keys import Keys
from state.redis import connect
from state.stock import StockRow, load_stock, parse_stock_file, stock_levels
from state.verify import verify
from streams import topics

SAMPLE_STOCK = REPO_ROOT / "samples" / "stock.csv"
OWN_SAMPLE = REPO_ROOT / "samples" / "payloads" / "own.json"
PROCESS_TIMEOUT_S = 300.0
WMS_TIMEOUT_S = 90.0
MERGE_BUYERS = 20  # web-shop buyers who order twice (every fourth: three times) in a row
# The demo's warehouse: quick, with the odd short pick and exception to show those paths.
DEMO_WMS = {
    "wms_sim": True,
    "wms_sim_delay_s": 1.0,
    "wms_sim_short_pick_rate": 0.01,
    "wms_sim_exception_rate": 0.005,
    "wms_sim_unsellable_rate": 0.2,
}


def run_demo(settings: Settings, *, n_orders: int, workers: int | None) -> int:
    console = Console()
    settings = settings.model_copy(update=DEMO_WMS)
    console.rule("[bold]OMS demo: a peak-sale burst")
    console.print("starting the local stack (broker, Redis, ClickHouse, workers, WMS simulator)...")
    prepare_stack(settings, workers=workers, progress=lambda m: console.print(f"  {m}"))

    from ops.dashboard import DEFAULT_PORT as port
    from ops.dashboard import start_dashboard

    start_dashboard(settings, port)
    dashboard_link = demo_dashboard_url(settings, port)
    # soft_wrap: the URL stays on one line, whole, for copying.
    console.print(f"live dashboard: {dashboard_link} (refreshes every 2 s)", soft_wrap=True)
    rows = top_up_stock(settings)
    console.print(f"stock topped up: {len(rows)} sku/warehouse rows from {SAMPLE_STOCK.name}")

    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    plan = generate_burst(n_orders, run_id=run_id)
    merges = merge_scenario(settings, run_id)
    console.print(
        f"burst {run_id}: {plan.orders} orders over {len(plan.by_channel)} channels, "
        f"{plan.duplicates} re-pushed duplicates, {plan.malformed} malformed payloads, "
        f"{len(merges)} web-shop orders from {MERGE_BUYERS} buyers ordering in a row"
    )
    started = datetime.now(UTC).replace(microsecond=0)
    sent_s = flood(settings, plan)
    console.print(f"sent {len(plan.messages)} messages in {sent_s:.1f}s")
    processed, waited_s = wait_processed(settings, started, len(plan.messages))
    # After the rush, web-shop buyers order again in a row: those orders wait in the shop's
    # merge window, and some buyers cancel, before and after release.
    asyncio.run(produce(settings, merges))
    inputs = len(plan.messages) + len(merges)
    processed, _ = wait_processed(settings, started, inputs)
    shapes = platform_shapes(settings, console, run_id)

    from analytics.client import connect as ch_connect
    from analytics.reports import build_report, format_report

    touched = stop_at_wms(settings, console, merges)
    wait_for_wms(settings, console, started)
    touched += work_holds(settings, console, started)
    touched += work_aftersales(settings, console, started)
    wait_facts(settings, touched)
    report = build_report(ch_connect(settings), since=started)
    check = verify(
        connect(settings), Keys(settings.redis_prefix), ClickHouseLedger(ch_connect(settings))
    )
    conformance = check_topics(settings)
    console.rule("[bold]Report (from ClickHouse)")
    console.print(format_report(report), markup=False, highlight=False)
    console.rule("[bold]Checks")
    console.print(f"inputs processed     {processed} / {inputs} in {waited_s:.1f}s")
    console.print(f"expected duplicates  {plan.duplicates}, expected DLQ {plan.malformed}")
    console.print(
        f"stock verify         {'ok' if check.ok else 'VIOLATIONS'}, "
        f"oversold units {check.oversold_units}"
    )
    console.print(
        f"schema conformance   {conformance.messages} messages on "
        f"{len(conformance.topics)} typed topics, "
        f"{'ok' if conformance.ok else f'{conformance.failing} BREAK THEIR SCHEMA'}"
    )
    for topic in conformance.topics:
        for example in topic.examples:
            console.print(f"  {example}", markup=False)
    shapes_ok = all(c.outcome and c.outcome[-1].endswith(" ok") for c in shapes)
    console.print(f"platform shapes      {'ok' if shapes_ok else 'WRONG OUTCOMES (see above)'}")
    console.print(f"\ndashboard            {dashboard_link}", soft_wrap=True)
    console.print(
        "\nThe stack is still up. Try: ./oms status | ./oms report | ./oms verify | "
        "./oms dlq list | ./oms stock show SKU-PHONE-X1\nStop it with: ./oms down"
    )
    return 0 if check.ok and processed >= inputs and conformance.ok and shapes_ok else 1


DASHBOARD_TOKEN_TTL_S = 8 * 3600


def demo_dashboard_url(settings: Settings, port: int) -> str:
    """The dashboard's URL with a token of its own: a finance token (read only, no admin)
    granted for this demo, refused after DASHBOARD_TOKEN_TTL_S. Opening it once trades the
    token for a cookie."""
    from core.access import Role
    from ops.dashboard import dashboard_url
    from state.redis import connect_async
    from state.tokens import token_store

    async def grant() -> str:
        client = connect_async(settings)
        try:
            store = token_store(settings, client)
            granted = await store.grant("demo-dashboard", Role.FINANCE, ttl_s=DASHBOARD_TOKEN_TTL_S)
            return granted.token
        finally:
            await client.aclose()

    return f"{dashboard_url(port)}?token={asyncio.run(grant())}"


def work_holds(
    settings: Settings, console: Console, since: datetime, per_reason: int = 2
) -> list[str]:
    """An operator at work: a few address holds released after a call to the buyer, a few
    unpaid orders cancelled (stock goes back), among this run's holds. Shows the path
    `./oms held` takes."""
    from web.views import list_held, submit_action

    held = asyncio.run(list_held(settings, since=since.timestamp()))
    touched: list[str] = []
    console.rule("[bold]Operator at work (./oms held release | cancel)")
    for reason, kind, why in (
        ("address_incomplete", "release_hold", "address confirmed by phone"),
        ("unpaid", "cancel", "buyer asked to cancel"),
        ("wms_exception", "release_hold", "re-packed at the warehouse: send again"),
    ):
        for row in [r for r in held if r["reason"] == reason][:per_reason]:
            applied = asyncio.run(
                submit_action(settings, row["order_id"], kind, actor="demo-operator", reason=why)
            )
            before, after = applied.before, applied.after
            state = after.state.value if after else "not applied within 30 s"
            if after is not None and after.state.value == "held":
                state += f" ({after.hold_reason}: the release cannot create stock)"
            touched.append(row["order_id"])
            console.print(
                f"{kind:<13} {row['order_id']} ({reason}): {before.state.value} -> {state}"
            )
    return touched


def wait_for_wms(settings: Settings, console: Console, since: datetime) -> None:
    """Until the simulated warehouse has answered every released order of this run (shipped,
    short-picked and re-routed, or flagged as an exception), bounded."""
    from analytics.client import connect as ch_connect
    from analytics.reports import states_since

    client = ch_connect(settings)
    waiting = ("routed", "released", "accepted", "picked", "partially_shipped", "intercepting")
    deadline = time.monotonic() + WMS_TIMEOUT_S
    with _progress() as progress:
        task = progress.add_task("warehouse", total=None)
        while time.monotonic() < deadline:
            states = states_since(client, since)
            busy = sum(states.get(s, 0) for s in waiting)
            done = sum(n for s, n in states.items() if s in ("shipped", "delivered", "exception"))
            progress.update(task, completed=done, total=done + busy)
            if busy == 0 and states.get("delivered", 0):
                break
            time.sleep(1.0)


def work_aftersales(settings: Settings, console: Console, since: datetime) -> list[str]:
    """A customer-service desk at work through `./oms aftersales`: two returns, a refund
    only, an exchange on delivered orders; an address fix for an address hold."""
    from analytics.client import connect as ch_connect
    from analytics.reports import orders_in_state
    from streams.messages import AfterSalesKind as K
    from web.views import list_held

    client = ch_connect(settings)
    delivered = orders_in_state(client, "delivered", since)
    held = asyncio.run(list_held(settings, since=since.timestamp()))
    address_holds = [r["order_id"] for r in held if r["reason"] == "address_incomplete"][:6]
    console.rule("[bold]Customer service at work (./oms aftersales ...)")
    desk: list[tuple[str, K, dict[str, Any]]] = [
        *((oid, K.RETURN, {"reason": "wrong size"}) for oid in delivered[:2]),
        *((oid, K.REFUND, {"reason": "arrived late: goodwill refund"}) for oid in delivered[2:3]),
    ]
    applied = file_requests(settings, console, desk)
    # An exchange needs the replacement in stock, an address fix may still meet a sold-out
    # sku: the desk tries a few orders until one goes through.
    applied += first_that_works(
        settings, console, [(oid, K.EXCHANGE, {"reason": "defective"}) for oid in delivered[3:9]]
    )
    applied += first_that_works(
        settings,
        console,
        [(oid, K.ADDRESS_CHANGE, {"new_address": fixed_address()}) for oid in address_holds],
    )
    touched = [a.before.order_id for a in applied]
    wait_settled(settings, touched)
    return touched


def first_that_works(
    settings: Settings, console: Console, tries: list[tuple[str, Any, dict[str, Any]]]
) -> list[Any]:
    """File requests one at a time until one is applied and leaves the order moving."""
    done = []
    for attempt in tries:
        applied = file_requests(settings, console, [attempt])
        done += applied
        after = applied[0].after
        if after is not None and not applied[0].refused and after.state.value != "held":
            break
    return done


def stop_at_wms(
    settings: Settings, console: Console, merges: Sequence[Record], timeout_s: float = 30
) -> list[str]:
    """Buyers cancel web-shop orders: one still in its merge window (stock back at once) and,
    as soon as they are released, two the warehouse already has (the WMS is asked to stop
    them and confirms; a parcel already gone would come back as a return)."""
    from streams.messages import AfterSalesKind as K
    from streams.models import make_order_id

    ids = [make_order_id("own", "own-web", key.decode()) for _, key, _, _ in merges if key]
    console.rule("[bold]Cancels before and after release (./oms aftersales cancel)")
    wanted = {"routed": 1, "released": 2}
    touched: list[str] = []
    deadline = time.monotonic() + timeout_s
    while any(wanted.values()) and time.monotonic() < deadline:
        states = asyncio.run(_states(settings, ids))
        for oid, state in states.items():
            if wanted.get(state, 0) > 0:
                wanted[state] -= 1
                ids.remove(oid)
                touched.append(oid)
                file_requests(settings, console, [(oid, K.CANCEL, {"reason": "changed mind"})])
        time.sleep(0.1)
    return touched


async def _states(settings: Settings, order_ids: list[str]) -> dict[str, str]:
    from state.orders import OrderStore
    from state.redis import connect_async

    client = connect_async(settings)
    try:
        loaded = await OrderStore(client, Keys(settings.redis_prefix)).load_many(order_ids)
        return {oid: lr.record.state.value for oid, lr in loaded.items() if lr.record}
    finally:
        await client.aclose()


def file_requests(
    settings: Settings, console: Console, desk: list[tuple[str, Any, dict[str, Any]]]
) -> list[Any]:
    """Each request through oms.aftersales, as `./oms aftersales` sends it; prints the move."""
    from web.views import submit_aftersales

    done = []
    for oid, kind, fields in desk:
        applied = asyncio.run(
            submit_aftersales(settings, oid, kind, requested_by="demo-cs", **fields)
        )
        before, after = applied.before, applied.after
        state = after.state.value if after else "not applied within 30 s"
        if after is not None and after.hold_reason and after.state.value == "held":
            state += f" for {after.hold_reason}"
        last = ", ".join(e.kind.value for e in applied.events)
        console.print(
            f"{kind.value:<15} {oid}: {before.state.value} -> {state} ({last})", markup=False
        )
        done.append(applied)
    return done


def platform_shapes(settings: Settings, console: Console, run_id: str) -> list[Case]:
    """Orders in the platforms' own privacy and pre-sale shapes (ops/demo_shapes.py): sent,
    checked, followed up (the balance paid, the channel's hold lifted) and checked again."""
    cases = build_cases(run_id)
    console.rule("[bold]Orders as the platforms send them")

    def read(order_ids: list[str]) -> dict[str, Found]:
        return asyncio.run(_states_and_reasons(settings, order_ids))

    asyncio.run(produce(settings, first_records(settings, cases)))
    check(cases, read, "first")
    book_deliveries(settings, cases)
    asyncio.run(produce(settings, follow_up_records(settings, cases)))
    check(cases, read, "then", timeout_s=WMS_TIMEOUT_S)
    for case in cases:
        console.print(f"{case.title}\n  {case.order_id}: {' -> '.join(case.outcome)}",
                      markup=False)
    return cases


def book_deliveries(settings: Settings, cases: list[Case]) -> None:
    """The warehouse books in what the backordered cases wait for, as `./oms stock adjust`
    would: nothing else is sent, the backorder timer must find them."""
    from order.route import RoutingTable
    from state.redis import connect
    from state.stock import adjust_stock

    warehouses = RoutingTable.load(settings.config_dir / "warehouses.toml").warehouses
    client = connect(settings)
    for case in cases:
        if case.restock is not None:
            sku, warehouse, units = case.restock
            adjust_stock(
                client,
                Keys(settings.redis_prefix),
                warehouses,
                sku,
                warehouse,
                units,
                op_id=f"demo-delivery-{case.external_id}",
                actor="demo-warehouse",
                reason="delivery booked in",
            )


async def _states_and_reasons(settings: Settings, order_ids: list[str]) -> dict[str, Found]:
    from state.orders import OrderStore
    from state.redis import connect_async
    from streams.messages import CommandKind

    client = connect_async(settings)
    try:
        loaded = await OrderStore(client, Keys(settings.redis_prefix)).load_many(order_ids)
        found: dict[str, Found] = {}
        for oid, lr in loaded.items():
            if lr.record is None:
                continue
            record = lr.record
            out = next((c for c in record.commands if c.kind is CommandKind.OUTBOUND), None)
            found[oid] = Found(
                record.state.value,
                record.hold_reason,
                out.warehouse if out else "",
                out.carrier if out else "",
                tuple((a.sku, a.warehouse) for a in record.allocations),
            )
        return found
    finally:
        await client.aclose()


def fixed_address() -> Any:
    """The address a buyer gives on the phone when asked to complete an incomplete one."""
    from streams.models import Address

    return Address(
        province="上海市",
        province_code="SH",
        city="上海市",
        district="浦东新区",
        street="世纪大道 100 号 28 楼",
        name="李四",
        phone="13912345678",
    )


def wait_settled(settings: Settings, order_ids: list[str], timeout_s: float = 30) -> None:
    """Returns come back and are refunded, exchanges ship, stops are confirmed: give the
    warehouse a moment (bounded) so the report shows the outcome."""
    pending = {"returning", "exchanging", "intercepting", "routed", "released", "accepted"}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not set(asyncio.run(_states(settings, order_ids)).values()) & pending:
            return
        time.sleep(0.5)


def wait_facts(settings: Settings, order_ids: list[str], timeout_s: float = 20) -> None:
    """The fact sink lands each change in ClickHouse a moment after the order record
    changes: wait (bounded) until ClickHouse shows every order the demo touched in the state
    Redis has, so the report shows the outcome."""
    from analytics.client import connect as ch_connect
    from analytics.reports import latest_states

    client = ch_connect(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if asyncio.run(_states(settings, order_ids)) == latest_states(client, order_ids):
            return
        time.sleep(0.5)


def top_up_stock(settings: Settings) -> list[StockRow]:
    """On hand = what earlier runs still hold reserved + the sample figure, so every run starts
    with the sample's available stock and no reservation is ever invalidated."""
    from order.route import RoutingTable

    routing = RoutingTable.load(settings.config_dir / "warehouses.toml")
    rows = parse_stock_file(SAMPLE_STOCK, routing.warehouses)
    client, keys = connect(settings), Keys(settings.redis_prefix)
    reserved = {
        (lv.sku, lv.warehouse): lv.reserved
        for sku in {row.sku for row in rows}
        for lv in stock_levels(client, keys, sku)
    }
    topped = [
        StockRow(row.sku, row.warehouse, row.qty + reserved.get((row.sku, row.warehouse), 0))
        for row in rows
    ]
    load_stock(client, keys, topped)
    return topped


def merge_scenario(settings: Settings, run_id: str) -> list[Record]:
    """Web-shop buyers who order again within the shop's merge window (config/shops.toml),
    to the same address: their orders ship as one parcel."""
    template = json.loads(OWN_SAMPLE.read_text(encoding="utf-8"))
    now = datetime.now(UTC)
    topic = topics.raw_topic("own").name(settings.topic_prefix)
    records: list[Record] = []
    for buyer in range(MERGE_BUYERS):
        for n in range(3 if buyer % 4 == 0 else 2):
            external_id = f"M{run_id}-{buyer:02d}-{n}"
            created = (now + timedelta(seconds=n)).isoformat()
            order = {
                **template,
                "external_id": external_id,
                "created_at": created,
                "updated_at": created,
                "buyer": {**template["buyer"], "id": f"member-{run_id}-{buyer}"},
                # A street of its own per buyer and run: runs must not add up to a scalper.
                "address": {
                    **template["address"],
                    "street": f"珞喻路{100 + buyer}号{run_id[-6:]}室",
                },
                "payment": {**template["payment"], "paid_at": created},
            }
            records.append((topic, external_id.encode(), json.dumps(order).encode(), []))
    return records


def flood(settings: Settings, plan: BurstPlan) -> float:
    records: list[Record] = [
        (topics.raw_topic(m.channel).name(settings.topic_prefix), m.key, m.value, m.headers)
        for m in plan.messages
    ]
    with _progress() as progress:
        task = progress.add_task("flooding", total=len(records))
        started = time.monotonic()
        asyncio.run(produce(settings, records, progress=lambda n: progress.advance(task, n)))
    return time.monotonic() - started


def wait_processed(settings: Settings, since: datetime, expected: int) -> tuple[int, float]:
    """Poll ClickHouse until every input of this run has landed as a fact (or the timeout)."""
    from analytics.client import connect as ch_connect
    from analytics.reports import processed_inputs

    client = ch_connect(settings)
    started = time.monotonic()
    done = 0
    with _progress() as progress:
        task = progress.add_task("processing", total=expected)
        while time.monotonic() - started < PROCESS_TIMEOUT_S:
            done = processed_inputs(client, since)
            progress.update(task, completed=min(done, expected))
            if done >= expected:
                break
            time.sleep(0.5)
    return done, time.monotonic() - started


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
