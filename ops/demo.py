"""`./oms demo`: start everything, load sample stock, flood a peak-sale burst, print the report.

Each run gets its own run id (so its orders are new, not duplicates of an earlier run) and tops
stock up to the sample figures on top of what earlier runs still hold reserved.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ops.kafka import Record, produce
from ops.loadgen import BurstPlan, generate_burst
from ops.prepare import prepare_stack
from ops.settings import REPO_ROOT, Settings
from state.keys import Keys
from state.redis import connect
from state.stock import StockRow, load_stock, parse_stock_file, stock_levels
from state.verify import verify
from streams import topics

SAMPLE_STOCK = REPO_ROOT / "samples" / "stock.csv"
PROCESS_TIMEOUT_S = 300.0


def run_demo(settings: Settings, *, n_orders: int, workers: int | None) -> int:
    console = Console()
    console.rule("[bold]OMS demo: a peak-sale burst")
    console.print("starting the local stack (broker, Redis, ClickHouse, workers)...")
    prepare_stack(settings, workers=workers, progress=lambda m: console.print(f"  {m}"))

    rows = top_up_stock(settings)
    console.print(f"stock topped up: {len(rows)} sku/warehouse rows from {SAMPLE_STOCK.name}")

    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    plan = generate_burst(n_orders, run_id=run_id)
    console.print(
        f"burst {run_id}: {plan.orders} orders over {len(plan.by_channel)} channels, "
        f"{plan.duplicates} re-pushed duplicates, {plan.malformed} malformed payloads"
    )
    started = datetime.now(UTC).replace(microsecond=0)
    sent_s = flood(settings, plan)
    console.print(f"sent {len(plan.messages)} messages in {sent_s:.1f}s")
    processed, waited_s = wait_processed(settings, started, len(plan.messages))

    from analytics.client import connect as ch_connect
    from analytics.reports import build_report, format_report

    wait_cancelled_facts(settings, started, work_holds(settings, console, started))
    report = build_report(ch_connect(settings), since=started)
    check = verify(connect(settings), Keys(settings.redis_prefix), ch_connect(settings))
    console.rule("[bold]Report (from ClickHouse)")
    console.print(format_report(report), markup=False, highlight=False)
    console.rule("[bold]Checks")
    console.print(f"inputs processed     {processed} / {len(plan.messages)} in {waited_s:.1f}s")
    console.print(f"expected duplicates  {plan.duplicates}, expected DLQ {plan.malformed}")
    console.print(
        f"stock verify         {'ok' if check.ok else 'VIOLATIONS'}, "
        f"oversold units {check.oversold_units}"
    )
    console.print(
        "\nThe stack is still up. Try: ./oms status | ./oms report | ./oms verify | "
        "./oms dlq list | ./oms stock show SKU-PHONE-X1\nStop it with: ./oms down"
    )
    return 0 if check.ok and processed >= len(plan.messages) else 1


def work_holds(settings: Settings, console: Console, since: datetime, per_reason: int = 2) -> int:
    """An operator at work: a few address holds released after a call to the buyer, a few
    unpaid orders cancelled (stock goes back), among this run's holds. Shows the path
    `./oms held` takes."""
    from ops.views import list_held, submit_action

    held = asyncio.run(list_held(settings, since=since.timestamp()))
    cancelled = 0
    console.rule("[bold]Operator at work (./oms held release | cancel)")
    for reason, kind, why in (
        ("address_incomplete", "release_hold", "address confirmed by phone"),
        ("unpaid", "cancel", "buyer asked to cancel"),
    ):
        for row in [r for r in held if r["reason"] == reason][:per_reason]:
            before, after = asyncio.run(
                submit_action(settings, row["order_id"], kind, actor="demo-operator", reason=why)
            )
            state = after.state.value if after else "not applied within 30 s"
            if after is not None and after.state.value == "held":
                state += f" ({after.hold_reason}: the release cannot create stock)"
            cancelled += after is not None and after.state.value == "cancelled"
            console.print(
                f"{kind:<13} {row['order_id']} ({reason}): {before.state.value} -> {state}"
            )
    return cancelled


def wait_cancelled_facts(settings: Settings, since: datetime, cancelled: int) -> None:
    """The operator's cancels reach ClickHouse through the facts agent a moment after the
    order records change: wait (bounded) so the report shows them."""
    from analytics.client import connect as ch_connect
    from analytics.reports import build_report

    deadline = time.monotonic() + 15
    client = ch_connect(settings)
    while time.monotonic() < deadline:
        if build_report(client, since=since).orders_by_state.get("cancelled", 0) >= cancelled:
            return
        time.sleep(0.5)


def top_up_stock(settings: Settings) -> list[StockRow]:
    """On hand = what earlier runs still hold reserved + the sample figure, so every run starts
    with the sample's available stock and no reservation is ever invalidated."""
    from agents.route import RoutingTable

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


def flood(settings: Settings, plan: BurstPlan) -> float:
    records: list[Record] = [
        (topics.raw_topic(m.channel).name(settings), m.key, m.value, m.headers)
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
