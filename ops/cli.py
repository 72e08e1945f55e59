"""`./oms`: the operator's command line. Every command has --help; --json prints one object."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from analytics.ledger import ClickHouseLedger
from core.settings import REPO_ROOT, Settings, get_settings, mask_url
from ops.cli_io import caller_path, emit_json, fail
from ops.cli_types import (
    AMOUNT,
    LIST_LIMIT,
    SINCE,
    SPAN,
    STOCK_DELTA,
    TOKEN_TTL_S,
    FiniteFloatRange,
)

CHANNELS = ("taobao", "jd", "douyin", "shopify", "amazon", "own")


def settings() -> Settings:
    return get_settings()


@contextmanager
def services_reachable(*, clickhouse: bool = True) -> Iterator[None]:
    """Redis or ClickHouse down, or Redis refusing writes (read-only replica, out of memory,
    disk full, loading: ``core.retry.is_redis_outage``): one clear line and exit 1, not a
    traceback. Any other Redis error is a bug and keeps its traceback. ``clickhouse=False``
    for commands that do not use it: an OSError there is not ClickHouse's."""
    from clickhouse_driver import errors as ch_errors
    from redis import exceptions as redis_errors

    from core.retry import is_redis_outage, redis_error_code

    s = settings()
    # clickhouse-driver logs every failed connect with a traceback; the error below says it all.
    logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    ch_down: tuple[type[BaseException], ...] = (
        (ch_errors.NetworkError, ch_errors.SocketTimeoutError, EOFError, OSError)
        if clickhouse
        else ()
    )
    try:
        yield
    except redis_errors.RedisError as exc:
        if not is_redis_outage(exc):
            raise
        where = mask_url(s.redis_url)  # never the password
        code = redis_error_code(exc)
        if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError) and not code:
            fail(f"Redis at {where} is not reachable ({exc}); is the stack up? ./oms status")
        text = str(exc) or type(exc).__name__
        reason = text if not code or text.startswith(code) else f"{code} {text}"
        fail(f"Redis at {where} refuses writes: {reason}")
    except ch_down as exc:
        fail(
            f"ClickHouse at {s.clickhouse_host}:{s.clickhouse_port} is not reachable ({exc}); "
            "is the stack up? ./oms status"
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """OMS stream core: channels in, stock reserved, WMS commands out, facts in ClickHouse."""
    setup_cli_logging()


def setup_cli_logging() -> None:
    """Warnings of one-shot commands through the same masked handler (core/logs.py) as the
    long-running processes; `./oms worker` and `./oms sink` set their own level after this."""
    from core.logs import setup_logging

    try:
        log_format = settings().log_format
    except Exception:  # a bad setting: the command itself reports it
        log_format = "text"
    setup_logging(log_format, logging.WARNING, component="cli")


# --- stack -------------------------------------------------------------------------------


@main.command()
@click.option(
    "--workers",
    type=click.IntRange(0, 16),
    default=None,
    help="Faust workers to run (default OMS_WORKERS).",
)
def up(workers: int | None) -> None:
    """Start broker, Redis, ClickHouse, the workers and the fact sink (unless
    OMS_SINK_IN_WORKER=true); returns when all are healthy."""
    from core.kafka import KafkaSetupError
    from ops import stack
    from ops.prepare import prepare_stack

    try:
        statuses = prepare_stack(
            settings(), workers=workers, progress=lambda m: click.echo(m, err=True)
        )
    except (stack.StackError, KafkaSetupError) as exc:
        fail(str(exc))
    _print_status(statuses)


@main.command()
def down() -> None:
    """Stop workers, the fact sink, the dashboard and the local stack (data under .oms/ is
    kept)."""
    from ops import stack
    from ops.dashboard import stop_dashboard

    stop_dashboard(settings())
    stack.down(settings())
    click.echo("stack stopped")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def status(as_json: bool) -> None:
    """Each component with its port, pid and health; exit 1 when any is unhealthy."""
    from ops import stack

    statuses = stack.status(settings())
    if as_json:
        emit_json(
            {"ok": all(s.healthy for s in statuses), "components": [s.to_dict() for s in statuses]}
        )
    else:
        _print_status(statuses)
    if not all(s.healthy for s in statuses):
        sys.exit(1)


def _print_status(statuses: list[Any]) -> None:
    for s in statuses:
        mark = "up  " if s.healthy else "DOWN"
        click.echo(f"{mark} {s.name:<12} port={s.port or '-':<6} pid={s.pid or '-':<8} {s.detail}")


@main.command()
@click.option("--name", default="w0", show_default=True, help="Worker name (heartbeat key).")
@click.option("--loglevel", default=None, help="debug|info|warn|error (default OMS_LOG_LEVEL).")
def worker(name: str, loglevel: str | None) -> None:
    """Run one Faust worker in the foreground."""
    from agents.worker import run_worker
    from web.api import register_api

    sys.argv = [sys.argv[0], "worker"]  # Faust's Worker parses argv; keep ours out of it
    run_worker(settings(), name, register_api, loglevel or settings().log_level)


@main.command()
@click.option("--loglevel", default=None, help="debug|info|warn|error (default OMS_LOG_LEVEL).")
def sink(loglevel: str | None) -> None:
    """Run the fact sink in the foreground: the fact topics into ClickHouse, offsets committed
    once the rows are in. `up` runs one unless the workers do (OMS_SINK_IN_WORKER=true)."""
    from analytics.sink_process import SinkStartError, run_sink

    try:
        run_sink(settings(), loglevel or settings().log_level)
    except SinkStartError as exc:
        fail(str(exc))


# --- input -------------------------------------------------------------------------------


@main.command()
@click.option("--channel", required=True, help=f"One of: {', '.join(CHANNELS)}.")
@click.option("--shop", default="", help="Shop id for channels whose payload lacks it.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def ingest(channel: str, shop: str, as_json: bool, file: Path) -> None:
    """Push raw payloads (a JSON object, a JSON array or JSONL) onto oms.raw.CHANNEL.

    Payloads are sent as they are: the workers decide what is valid, and anything they cannot
    accept lands in the DLQ with a reason.
    """
    from ops.ingest import IngestError, ingest_file

    if channel not in CHANNELS:
        fail(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})", 2)
    try:
        result = asyncio.run(ingest_file(settings(), channel, caller_path(file), shop=shop))
    except IngestError as exc:
        fail(str(exc), 2)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(f"sent {result.sent} payload(s) to {result.topic}")
        if result.unparseable:
            click.echo(
                f"  {result.unparseable} not valid JSON: they will land in the DLQ", err=True
            )


@main.group()
def stock() -> None:
    """Stock per sku and warehouse."""


OP_ID_HELP = (
    "Idempotency key (1-64 of letters, digits, . _ -): a retry with it changes nothing; "
    "the same key with another change is refused. Default: a new one, printed."
)


@stock.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--op-id", default="", help=OP_ID_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def stock_load(file: Path, op_id: str, as_json: bool) -> None:
    """Set on-hand stock from CSV (sku,warehouse,qty) or JSON rows; all rows or none.

    Every load is a new operation (loading a file again on purpose applies it again) unless
    --op-id repeats one: the op id is printed, so a retry after an error or timeout reuses it.
    """
    from order.route import RoutingTable
    from state.keys import Keys
    from state.redis import connect
    from state.stock import StockError, load_stock, operation_id, parse_stock_file

    s = settings()
    routing = RoutingTable.load(s.config_dir / "warehouses.toml")
    try:
        op = operation_id(op_id)
        rows = parse_stock_file(caller_path(file), routing.warehouses)
        with services_reachable(clickhouse=False):
            count = load_stock(connect(s), Keys(s.redis_prefix), rows, op_id=op, actor=_operator())
    except StockError as exc:
        fail(str(exc))
    skus = len({r.sku for r in rows})
    if as_json:
        emit_json({"ok": True, "rows": count, "skus": skus, "op_id": op, "applied": count > 0})
    elif count:
        click.echo(f"loaded {count} row(s) for {skus} sku(s) (op id {op})")
    else:
        click.echo(f"op id {op} was applied before: nothing changed")


@stock.command("adjust")
@click.argument("sku")
@click.argument("warehouse")
@click.argument("delta", type=STOCK_DELTA)
@click.option(
    "--field",
    type=click.Choice(["on_hand", "inbound"]),
    default="on_hand",
    show_default=True,
    help="on_hand (count corrections) or inbound (purchases).",
)
@click.option("--reason", default="", help="Why, for the ledger (e.g. damaged, recount).")
@click.option("--op-id", default="", help=OP_ID_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def stock_adjust(
    sku: str, warehouse: str, delta: int, field: str, reason: str, op_id: str, as_json: bool
) -> None:
    """Add (or with a negative DELTA remove) units of a known sku at a warehouse.

    Refused when the sku is unknown, the warehouse is unknown, the result would go below
    zero or below what is already reserved there, or --op-id was used for another change.
    The op id is printed: a retry with it changes nothing.
    """
    from order.route import RoutingTable
    from state.keys import Keys
    from state.redis import connect
    from state.stock import StockError, adjust_stock

    s = settings()
    routing = RoutingTable.load(s.config_dir / "warehouses.toml")
    try:
        with services_reachable(clickhouse=False):
            done = adjust_stock(
                connect(s),
                Keys(s.redis_prefix),
                routing.warehouses,
                sku,
                warehouse,
                delta,
                field=field,
                op_id=op_id,
                actor=_operator(),
                reason=reason,
            )
    except StockError as exc:
        fail(str(exc))
    if as_json:
        emit_json(
            {
                "ok": True,
                "sku": sku,
                "warehouse": warehouse,
                "field": field,
                "delta": delta,
                "op_id": done.op_id,
                "applied": done.applied,
            }
        )
    elif done.applied:
        click.echo(f"{sku} at {warehouse}: {field} {delta:+d} (op id {done.op_id})")
    else:
        click.echo(f"op id {done.op_id} was applied before: nothing changed")


@stock.command("snapshot")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--warehouse", required=True, help="The warehouse the WMS counted.")
@click.option("--zero-missing", is_flag=True, help="Skus absent from the file count as 0.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def stock_snapshot(file: Path, warehouse: str, zero_missing: bool, as_json: bool) -> None:
    """Apply a full WMS count (CSV sku,qty[,as_of] or JSON) under the warehouse's stock lock.

    Units shipped or received after the count's as_of time are kept; reservations are never
    touched; a count below what is reserved is reported as a conflict, not applied as an
    oversell.
    """
    from analytics.client import connect as ch_connect
    from order.route import RoutingTable
    from state.keys import Keys
    from state.redis import connect
    from state.snapshot import SnapshotError, apply_snapshot, parse_snapshot_file

    s = settings()
    routing = RoutingTable.load(s.config_dir / "warehouses.toml")
    if warehouse not in routing.warehouses:
        fail(f"unknown warehouse {warehouse!r} (known: {', '.join(sorted(routing.warehouses))})")
    try:
        rows, as_of = parse_snapshot_file(caller_path(file))
        with services_reachable():
            result = apply_snapshot(
                connect(s),
                Keys(s.redis_prefix),
                warehouse,
                rows,
                as_of,
                archive=ClickHouseLedger(ch_connect(s)),
                zero_missing=zero_missing,
            )
    except SnapshotError as exc:
        fail(str(exc))
    data = result.to_dict()
    if as_json:
        emit_json(data)
    else:
        click.echo(f"snapshot of {warehouse}: {data}")
    sys.exit(1 if result.conflicts else 0)


@stock.command("show")
@click.argument("sku")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def stock_show(sku: str, as_json: bool) -> None:
    """On hand, reserved and available per warehouse for one sku."""
    from state.keys import Keys
    from state.redis import connect
    from state.stock import known_skus, stock_levels

    s = settings()
    client, keys = connect(s), Keys(s.redis_prefix)
    with services_reachable(clickhouse=False):
        known = sku in known_skus(client, keys)
        levels = stock_levels(client, keys, sku) if known else []
    if not known:
        fail(f"unknown sku {sku!r}")
    if as_json:
        emit_json({"sku": sku, "warehouses": {lv.warehouse: lv.to_dict() for lv in levels}})
        return
    click.echo(
        f"{'warehouse':<10} {'on_hand':>8} {'reserved':>9} {'available':>10} "
        f"{'inbound':>8} {'in_transit':>10}"
    )
    for lv in levels:
        click.echo(
            f"{lv.warehouse:<10} {lv.on_hand:>8} {lv.reserved:>9} {lv.available:>10} "
            f"{lv.inbound:>8} {lv.sales_in_transit:>10}"
        )


# --- orders ------------------------------------------------------------------------------


@main.group()
def orders() -> None:
    """Look orders up."""


@orders.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--reveal", is_flag=True, help="Show buyer names, phones and streets unmasked.")
def orders_show(ref: str, as_json: bool, reveal: bool) -> None:
    """An order by OMS id or CHANNEL:EXTERNAL_ID: state, lines, reservation, history."""
    from web.views import find_orders, order_view, render_order

    with services_reachable(clickhouse=False):
        found = asyncio.run(find_orders(settings(), ref))
    if not found:
        fail(f"no order {ref!r}")
    views = [order_view(r, reveal=reveal) for r in found]
    if as_json:
        emit_json(views[0] if len(views) == 1 else {"orders": views})
    else:
        for view in views:
            click.echo(render_order(view))


@orders.command("late")
@click.option(
    "--within",
    "within_s",
    type=SPAN,
    default="0s",
    show_default=True,
    help="Also orders due within this span (e.g. 4h); 0s: only those past their deadline.",
)
@click.option("--shop", default="", help="Only this shop (CHANNEL/SHOP).")
@click.option("--limit", type=LIST_LIMIT, default=1000, show_default=True, help="0: all.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def orders_late(within_s: float, shop: str, limit: int, as_json: bool) -> None:
    """Orders still to ship past their ship-by deadline (or due within --within), earliest
    deadline first: the channel's own latest ship time, else the shop's promise from payment
    (config/shops.toml ship_within_h)."""
    from web.views import HeldFilter, list_late

    keep = HeldFilter(shop=shop).keeps if shop else None  # the shop part of the held filter
    with services_reachable(clickhouse=False):
        rows = asyncio.run(
            list_late(settings(), within_s=within_s, limit=limit or 10**9, keep=keep)
        )
    if as_json:
        emit_json({"within_s": within_s, "total": len(rows), "orders": rows})
        return
    if not rows:
        click.echo("no order is late" + (f" or due within {within_s:.0f} s" if within_s else ""))
        return
    for r in rows:
        late = r["overdue_s"]
        when = f"late {_span(late)}" if late >= 0 else f"due in {_span(-late)}"
        click.echo(
            f"{r['ship_by'][:16]} {when:<14} p{r['priority']} {r['order_id']} "
            f"{r['channel']}:{r['external_id']} {r['state']}"
            + (f" ({r['reason']})" if r["reason"] else "")
        )


@orders.command("find")
@click.option("--buyer", default="", help="The channel's buyer id (nick, pin, open id).")
@click.option(
    "--phone",
    default="",
    help="The receiver's or buyer's phone, plain or masked (138****8000); encrypted phones "
    "cannot be matched.",
)
@click.option("--tracking", default="", help="A tracking number the WMS reported.")
@click.option("--sku", default="", help="Orders with a line of this sku.")
@click.option("--since", type=SINCE, default=None, help="Created at or after (2h, or a time).")
@click.option("--until", type=SINCE, default=None, help="Created before (2h, or a time).")
@click.option("--shop", default="", help="Only this shop (CHANNEL/SHOP).")
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def orders_find(as_json: bool, **given: Any) -> None:
    """Find orders in the ClickHouse facts (all of history, not only live orders), newest
    first: every given filter must match, at least one is needed. Buyer and phone are matched
    by keyed hashes (never stored in clear); a masked phone matches by its 3 + 4 digits, so
    another buyer's order sharing them may show. No personal data is printed."""
    from analytics.search import SearchError, order_search
    from web.views import find_matching

    try:
        search = order_search(**given)
    except SearchError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        with services_reachable():
            rows = asyncio.run(find_matching(settings(), search))
    except SearchError as exc:  # over the read budget
        fail(str(exc))
    _print_rows(rows, as_json, "order(s)", _found_line)


def _found_line(r: dict[str, Any]) -> str:
    return (
        f"{r['created_at'][:19]} {r['order_id']} {r['channel']}:{r['external_id']} "
        f"shop {r['shop_id']} {r['total']} {r['currency']} {r['state'] or '-'}"
        + (f" ({r['reason']})" if r["reason"] else "")
        + (f" [{' '.join(r['tags'])}]" if r["tags"] else "")
    )


def _print_rows(
    rows: list[dict[str, Any]], as_json: bool, what: str, line: Callable[[dict[str, Any]], str]
) -> None:
    """A list command's answer: ``{"total", "orders"}`` as JSON, else a count and a line each."""
    if as_json:
        emit_json({"total": len(rows), "orders": rows})
        return
    click.echo(f"{len(rows)} {what}")
    for r in rows:
        click.echo(line(r))


def _span(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m"


@main.group()
def held() -> None:
    """Orders on hold, waiting for payment, stock or a person."""


@held.command("list")
@click.option("--reason", default="", help="Only holds with this reason (e.g. out_of_stock).")
@click.option("--limit", type=LIST_LIMIT, default=1000, show_default=True, help="0: all.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def held_list(reason: str, limit: int, as_json: bool) -> None:
    """Held orders, oldest first, with their reason."""
    from web.views import list_held

    with services_reachable(clickhouse=False):
        rows = asyncio.run(list_held(settings(), limit, reason=reason))
    _print_rows(rows, as_json, "held order(s)", _held_line)


def _held_line(r: dict[str, Any]) -> str:
    return (
        f"{r['held_at'][:19]} {r['order_id']} {r['channel']}:{r['external_id']:<22} "
        f"{r['reason']}" + (f" [{' '.join(r['tags'])}]" if r.get("tags") else "")
    )


def _operator() -> str:
    """Who acts, for the audit trail: OMS_OPERATOR, else the login name. A name the workers
    refuse from a person (``system...``, or one already naming a principal such as ``api:``:
    ``streams.signing.person``) is refused here at once (exit 2), not after a 30 s wait."""
    from streams.signing import person

    source = "OMS_OPERATOR" if os.environ.get("OMS_OPERATOR") else "USER"
    actor = os.environ.get("OMS_OPERATOR") or os.environ.get("USER") or "operator"
    if not person(actor):
        fail(
            f"{source}={actor[:80]!r} is not a person's name: names starting with 'system' "
            "or a principal ('api:', 'operator:', 'worker:', 'wms:') are reserved and the "
            "workers refuse them; set OMS_OPERATOR to your own name",
            2,
        )
    return actor


def _checked_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--request-id / --action-id, checked like a stock op id (``state.stock.operation_id``)
    while the arguments are parsed: a bad one is a usage error (exit 2)."""
    from state.stock import StockError, operation_id

    if not value:
        return ""
    try:
        return operation_id(value)
    except StockError as exc:
        raise click.BadParameter(str(exc).replace("op id", "id", 1)) from None


def _id_or_new(flag: str, given: str) -> str:
    """The input's id: the one given, else a new one printed (stderr) before anything is sent,
    so a retry after a timeout or a crash can give it again and the worker applies it once."""
    from state.stock import operation_id

    if given:
        return given
    new = operation_id()
    click.echo(f"{flag} {new} (give it again to retry: the request is applied once)", err=True)
    return new


_ID_HELP = (
    "Idempotency key (1-64 of letters, digits, . _ -): a retry with it is applied once. "
    "Default: a new one, printed."
)
_REQUEST_ID = click.option("--request-id", default="", callback=_checked_id, help=_ID_HELP)
_ACTION_ID = click.option("--action-id", default="", callback=_checked_id, help=_ID_HELP)


def _act(
    ref: str,
    kind: str,
    reason: str,
    as_json: bool,
    action_id: str,
    tags: list[str] | None = None,
    **edit: Any,
) -> None:
    from web.views import submit_action

    actor = _operator()
    action_id = _id_or_new("--action-id", action_id)
    _report_applied(
        lambda: submit_action(
            settings(),
            ref,
            kind,
            actor=actor,
            reason=reason,
            action_id=action_id,
            tags=tags,
            **edit,
        ),
        as_json,
        actor=actor,
        id_field=("action_id", action_id),
    )


def _report_applied(
    submit: Any, as_json: bool, *, actor: str = "", id_field: tuple[str, str] = ("", "")
) -> None:
    """Run a submit coroutine (send an order input, wait for a worker to apply it) and print
    before -> after; exit 1 when it was refused or not applied in time, 2 when the request
    itself is invalid (a reason longer than a message holds). ``id_field`` names the input's
    id (``request_id``, ``action_id``) for the output and the retry hint."""
    from pydantic import ValidationError

    from streams.channels.base import describe_validation
    from web.views import InputIdReused, applied_summary

    name, ident = id_field
    flag = f"--{name.replace('_', '-')} {ident}"
    try:
        with services_reachable(clickhouse=False):
            applied = asyncio.run(submit())
    except (LookupError, InputIdReused) as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(f"invalid request: {describe_validation(exc, 'request')}", 2)
    before, after = applied.before, applied.after
    if after is None:
        retry = f"; retry with {flag}" if ident else ""
        fail(
            f"{before.order_id}: the request is queued but no worker applied it within 30 s "
            f"(are the workers up? ./oms status){retry}"
        )
    refused = applied.refused
    data = applied_summary(applied, actor or _operator())
    if ident:
        data[name] = ident
    if as_json:
        emit_json(data)
    elif applied.repeated:
        click.echo(
            f"{after.order_id}: {flag} was applied before: nothing changed "
            f"(state {after.state.value})"
        )
    else:
        click.echo(
            f"{after.order_id}: {before.state.value} -> {after.state.value} "
            f"({data['last_event']}{': ' + data['reason'] if data['reason'] else ''})"
        )
    if refused is not None and not as_json:
        click.echo(f"refused: {refused.detail}", err=True)
    if refused is not None:
        sys.exit(1)


def _bulk_options(fn: Any) -> Any:
    """Without an order: which holds to work on (as `held list` selects them), and how."""
    for option in reversed(
        [
            click.option("--shop", default="", help="Bulk: only this shop (CHANNEL/SHOP)."),
            click.option("--sku", default="", help="Bulk: only orders with this sku."),
            click.option(
                "--older-than",
                "held_before",
                type=SINCE,
                default=None,
                help="Bulk: only holds older than this (a span such as 2h, or a time).",
            ),
            click.option("--note", default="", help="Bulk: why, for the audit trail."),
            click.option(
                "--limit",
                type=LIST_LIMIT,
                default=1000,
                show_default=True,
                help="Bulk: at most this many, oldest hold first (0: all).",
            ),
            click.option("--dry-run", is_flag=True, help="Bulk: list what would be done."),
        ]
    ):
        fn = option(fn)
    return fn


def _hold_decision_options(fn: Any) -> Any:
    """--reason (an order's trail, or the bulk filter), the bulk options, --action-id, --json."""
    fn = click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")(fn)
    fn = _ACTION_ID(fn)
    fn = _bulk_options(fn)
    return click.option(
        "--reason",
        default="",
        help="With an order: why, for the audit trail. Without: only holds with this reason.",
    )(fn)


def _decide_holds(
    kind: str, ref: str, reason: str, action_id: str, as_json: bool, bulk: dict[str, Any]
) -> None:
    if ref:
        _no_bulk_with_an_order(bulk)
        _act(ref, kind, reason, as_json, action_id)
    else:
        _act_on_many(kind, reason, as_json, action_id, **bulk)


@held.command("release")
@click.argument("ref", required=False, default="")
@_hold_decision_options
def held_release(ref: str, reason: str, action_id: str, as_json: bool, **bulk: Any) -> None:
    """Release a held order (OMS id or CHANNEL:EXTERNAL_ID): holds are overridden, the order
    is reserved and released to the WMS if stock allows; rejects still apply. Exit 1 when the
    order is not held.

    Without an order, releases every held order the filters select (at least one of --reason,
    --shop, --sku, --older-than), oldest hold first; --dry-run lists them and sends nothing.
    Exit 1 when any was refused or not applied in time."""
    _decide_holds("release_hold", ref, reason, action_id, as_json, bulk)


@held.command("cancel")
@click.argument("ref", required=False, default="")
@_hold_decision_options
def held_cancel(ref: str, reason: str, action_id: str, as_json: bool, **bulk: Any) -> None:
    """Cancel an order that is not shipped yet: its stock goes back, and the WMS gets a cancel
    command if it already had the order. Exit 1 when it can no longer be cancelled.

    Without an order, cancels every held order the filters select, as `held release` does."""
    _decide_holds("cancel", ref, reason, action_id, as_json, bulk)


def _no_bulk_with_an_order(bulk: dict[str, Any]) -> None:
    flags = {"held_before": "--older-than", "dry_run": "--dry-run"}
    given = [flags.get(n, f"--{n}") for n, v in bulk.items() if v and n != "limit"]
    given += ["--limit"] if bulk["limit"] != 1000 else []
    if given:
        fail(
            f"{', '.join(given)} select holds in bulk: give them without an order, or the "
            "order alone",
            2,
        )


def _act_on_many(
    kind: str,
    reason: str,
    as_json: bool,
    action_id: str,
    *,
    shop: str,
    sku: str,
    held_before: datetime | None,
    note: str,
    limit: int,
    dry_run: bool,
) -> None:
    from web.views import HeldFilter, act_on_held, list_held

    chosen = HeldFilter(reason=reason, shop=shop, sku=sku, held_before=held_before)
    if chosen.empty:
        fail("name an order, or select holds with --reason, --shop, --sku or --older-than", 2)
    with services_reachable(clickhouse=False):
        rows = asyncio.run(list_held(settings(), limit, reason=reason, keep=chosen.keeps))
    verb = "release" if kind == "release_hold" else "cancel"
    if dry_run or not rows:
        if as_json:
            emit_json({"dry_run": dry_run, "would": verb, "total": len(rows), "orders": rows})
            return
        click.echo(
            f"{len(rows)} held order(s) would be {verb}d" if dry_run else "no held order matches"
        )
        for r in rows:
            click.echo(
                f"{r['held_at'][:19]} {r['order_id']} {r['channel']}:{r['external_id']} "
                f"{r['reason']}"
            )
        return
    actor = _operator()
    batch = _id_or_new("--action-id", action_id)[:40]
    with services_reachable(clickhouse=False):
        outcomes = asyncio.run(
            act_on_held(settings(), rows, kind, actor=actor, reason=note, batch_id=batch)
        )
    done = [o for o in outcomes if o.after is not None and not o.refused]
    refused = [o for o in outcomes if o.refused]
    late = [o for o in outcomes if o.after is None]
    if as_json:
        emit_json(
            {
                "action_id": batch,
                "total": len(outcomes),
                "applied": len(done),
                "refused": len(refused),
                "not_applied": len(late),
                "orders": [vars(o) for o in outcomes],
            }
        )
    else:
        states = Counter(o.after for o in done)
        click.echo(
            f"{verb}: {len(done)} of {len(outcomes)} applied "
            f"({', '.join(f'{n} {s}' for s, n in sorted(states.items())) or 'none'})"
        )
        for o in refused:
            click.echo(f"refused: {o.order_id} ({o.after})", err=True)
        if late:
            click.echo(
                f"{len(late)} not applied within the wait; retry with --action-id {batch}", err=True
            )
    if refused or late:
        sys.exit(1)


def _tags(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    """TAG arguments checked while the arguments are parsed: a bad one is a usage error."""
    from streams.tags import TagError, parse_tags

    try:
        return parse_tags(value)
    except TagError as exc:
        raise click.BadParameter(str(exc)) from None


@orders.command("tag")
@click.argument("ref")
@click.argument("tags", nargs=-1, required=True, callback=_tags)
@click.option("--remove", is_flag=True, help="Remove these tags instead of adding them.")
@click.option("--reason", default="", help="Why, for the audit trail.")
@_ACTION_ID
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def orders_tag(
    ref: str, tags: list[str], remove: bool, reason: str, action_id: str, as_json: bool
) -> None:
    """Tag an order (OMS id or CHANNEL:EXTERNAL_ID) for customer service: e.g. vip,
    complaint, fragile. A tag is 1-24 of a-z, 0-9, '-' and '_', starting with a letter, with
    at most 4 digits (never personal data); an order carries at most 16. Sent through
    oms.operator like `held release` and applied by a worker in any state; the actor lands in
    the order's history. Exit 1 when refused (too many tags)."""
    kind = "untag" if remove else "tag"
    _act(ref, kind, reason, as_json, action_id, tags=tags)


def _edit(kind: str, **given: Any) -> dict[str, Any]:
    """A gift's or a line change's fields checked before anything is sent (a usage error)."""
    from streams.edits import EditError, edit_fields

    try:
        return edit_fields(kind, **given)
    except EditError as exc:
        raise click.UsageError(str(exc)) from None


@orders.command("gift")
@click.argument("ref")
@click.argument("sku")
@click.option("--qty", type=int, default=1, show_default=True, help="Units of the gift.")
@click.option("--reason", default="", help="Why, for the audit trail.")
@_ACTION_ID
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def orders_gift(ref: str, sku: str, qty: int, reason: str, action_id: str, as_json: bool) -> None:
    """Add a gift line (price 0) of SKU to an order the WMS does not have yet (received to
    routed). Sent through oms.operator like `held release`; the worker gives back what the
    order holds and reserves it again with the gift, or holds it (unknown sku, no stock).
    Exit 1 when refused (released already, too many gifts)."""
    _act(ref, "add_gift", reason, as_json, action_id, **_edit("add_gift", sku=sku, quantity=qty))


@orders.command("change-line")
@click.argument("ref")
@click.argument("line_id")
@click.option("--sku", default=None, help="The line's new sku.")
@click.option("--qty", type=int, default=None, help="The line's new units.")
@click.option("--reason", default="", help="Why, for the audit trail.")
@_ACTION_ID
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def orders_change_line(
    ref: str,
    line_id: str,
    sku: str | None,
    qty: int | None,
    reason: str,
    action_id: str,
    as_json: bool,
) -> None:
    """Change a line's sku and/or units before the WMS has the order (received to routed);
    what the buyer paid for the line stays as it is. The order is reserved again on its new
    lines (or held: unknown sku, no stock); a later channel update keeps the change. Exit 1
    when refused."""
    edit = _edit("change_line", line_id=line_id, sku=sku, quantity=qty)
    _act(ref, "change_line", reason, as_json, action_id, **edit)


@main.group()
def aftersales() -> None:
    """Customer-service requests on an order: cancel, address change, return, refund,
    exchange. Each goes through oms.aftersales and is applied by a worker; exit 1 when the
    order's state does not allow it (the reason is in its history)."""


def _lines(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _request(ref: str, kind: str, as_json: bool, request_id: str, **fields: Any) -> None:
    from streams.messages import AfterSalesKind
    from web.views import submit_aftersales

    actor = _operator()
    request_id = _id_or_new("--request-id", request_id)
    _report_applied(
        lambda: submit_aftersales(
            settings(),
            ref,
            AfterSalesKind(kind),
            requested_by=actor,
            request_id=request_id,
            **fields,
        ),
        as_json,
        actor=actor,
        id_field=("request_id", request_id),
    )


_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
_REASON = click.option("--reason", default="", help="Why, for the audit trail.")
_LINES = click.option("--lines", default="", help="Comma-separated line ids (default: every line).")


@aftersales.command("cancel")
@click.argument("ref")
@_REASON
@_REQUEST_ID
@_JSON
def aftersales_cancel(ref: str, reason: str, request_id: str, as_json: bool) -> None:
    """Cancel: before release the stock goes back at once; after release the WMS is asked to
    stop the parcel (cancel or intercept); once shipped it becomes a return."""
    _request(ref, "cancel", as_json, request_id, reason=reason)


@aftersales.command("address")
@click.argument("ref")
@click.option("--province", required=True, help="Province name or code, e.g. 广东省 or GD.")
@click.option("--city", required=True)
@click.option("--district", default="")
@click.option("--street", required=True)
@click.option("--name", default="", help="Receiver (default: unchanged).")
@click.option("--phone", default="", help="Receiver phone (default: unchanged).")
@click.option("--postcode", default="")
@_REQUEST_ID
@_JSON
def aftersales_address(
    ref: str,
    province: str,
    city: str,
    district: str,
    street: str,
    name: str,
    phone: str,
    postcode: str,
    request_id: str,
    as_json: bool,
) -> None:
    """Change the ship-to address; only before the WMS has the order."""
    from streams.regions import province_code
    from web.views import find_one

    code = province_code(province)
    if not code:
        fail(f"unknown province {province!r}", 2)
    try:
        with services_reachable(clickhouse=False):
            current = asyncio.run(find_one(settings(), ref)).address
    except LookupError as exc:
        fail(str(exc))
    # Validated (model_copy is not): a street over the limit is refused here, not by a worker.
    address = _validated(
        type(current),
        {
            **current.model_dump(),
            "province": province,
            "province_code": code,
            "city": city,
            "district": district,
            "street": street,
            "postcode": postcode,
            "name": name or current.name,
            "phone": phone or current.phone,
        },
    )
    _request(ref, "address_change", as_json, request_id, new_address=address)


def _validated(model: Any, data: dict[str, Any]) -> Any:
    """``model`` from ``data``, or exit 2 naming the fields that do not fit (bounded)."""
    from pydantic import ValidationError

    from streams.channels.base import describe_validation

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fail(f"invalid {model.__name__.lower()}: {describe_validation(exc, 'value')}", 2)


@aftersales.command("return")
@click.argument("ref")
@_LINES
@_REASON
@_REQUEST_ID
@_JSON
def aftersales_return(ref: str, lines: str, reason: str, request_id: str, as_json: bool) -> None:
    """Return shipped lines: the warehouse is told to expect them; they restock on receipt
    when sellable and the buyer is refunded."""
    _request(ref, "return", as_json, request_id, line_ids=_lines(lines), reason=reason)


@aftersales.command("refund")
@click.argument("ref")
@_LINES
@click.option(
    "--amount", type=AMOUNT, default=None, help="Amount (default: what the lines were paid)."
)
@_REASON
@_REQUEST_ID
@_JSON
def aftersales_refund(
    ref: str, lines: str, amount: Decimal | None, reason: str, request_id: str, as_json: bool
) -> None:
    """Refund without goods coming back; never more than was paid."""
    _request(
        ref, "refund", as_json, request_id, line_ids=_lines(lines), amount=amount, reason=reason
    )


@aftersales.command("exchange")
@click.argument("ref")
@_LINES
@click.option("--sku", default="", help="Replacement sku (default: the same sku).")
@_REASON
@_REQUEST_ID
@_JSON
def aftersales_exchange(
    ref: str, lines: str, sku: str, reason: str, request_id: str, as_json: bool
) -> None:
    """Exchange shipped lines: they come back, and a replacement is reserved and shipped."""
    _request(
        ref,
        "exchange",
        as_json,
        request_id,
        line_ids=_lines(lines),
        exchange_sku=sku,
        reason=reason,
    )


@main.group()
def dlq() -> None:
    """The dead-letter topic: inputs that could not be accepted."""


@dlq.command("list")
@click.option("--limit", type=LIST_LIMIT, default=50, show_default=True, help="0: all.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def dlq_list(limit: int, as_json: bool) -> None:
    """DLQ records with their reason, newest last."""
    from web.views import list_dlq

    records, counts = asyncio.run(list_dlq(settings()))
    shown = records[-limit:] if limit else records
    if as_json:
        emit_json(
            {
                "total": len(records),
                "by_reason": counts,
                "records": [r.model_dump(mode="json", exclude={"payload"}) for r in shown],
            }
        )
        return
    click.echo(f"{len(records)} record(s) in the DLQ; by reason: {counts}")
    for r in shown:
        click.echo(
            f"{r.received_at:%Y-%m-%d %H:%M:%S} {r.channel:<8} {r.reason.value:<18} "
            f"{r.source_topic}[{r.partition}]@{r.offset} {r.detail[:90]}"
        )


@dlq.command("replay")
@click.option("--reason", default="", help="Only records with this reason (e.g. invalid_field).")
@click.option("--channel", default="", help="Only records from this channel.")
@click.option("--again", is_flag=True, help="Also records replayed before.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def dlq_replay(reason: str, channel: str, again: bool, as_json: bool) -> None:
    """Send DLQ'd inputs back to their source topic, e.g. after fixing a sku map or an adapter.

    Each record is replayed once unless --again. A replay is the input it replays: one that
    is still bad lands in the DLQ again under the same record, a now-valid one is processed like
    any order, and one that was applied before its outputs were lost (a processing_error after
    the save) sends those outputs again. Only records of raw channel topics are replayed (a
    control input is re-sent by its producer), and never one that kept only the first part of
    an oversized payload.
    """
    from streams.messages import DlqReason
    from web.views import replay_dlq

    if reason and reason not in {r.value for r in DlqReason}:
        fail(f"unknown reason {reason!r} (known: {', '.join(r.value for r in DlqReason)})", 2)
    if channel and channel not in CHANNELS:
        fail(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})", 2)
    result = asyncio.run(replay_dlq(settings(), reason=reason, channel=channel, again=again))
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(
            f"replayed {result.sent} of {result.selected} record(s); "
            f"{result.skipped_already_replayed} replayed before (use --again); "
            f"{result.skipped_truncated} not replayable (payload truncated); "
            f"{result.skipped_not_raw} not from a raw channel topic (re-sent by their producer)"
        )


# --- analysis and checks -----------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option(
    "--since",
    "since",
    type=SINCE,
    metavar="TIME",
    default=None,
    help="Orders first seen since: ISO-8601 (naive = UTC) or back from now, e.g. 15m, 2h, 1d.",
)
@click.option(
    "--by",
    type=click.Choice(["minute", "hour", "day"]),
    default="hour",
    show_default=True,
    help="Bucket of the sales time series.",
)
def report(as_json: bool, since: datetime | None, by: str) -> None:
    """Sales analysis from ClickHouse: orders, GMV by channel and shop, sales over time, top
    and hot skus, fulfilment latency, after-sales rates, holds, DLQ."""
    from analytics.client import connect
    from analytics.reports import build_report, format_report

    with services_reachable():
        rep = build_report(connect(settings()), since=since, by=by)
    if as_json:
        emit_json(rep.to_dict())
    else:
        click.echo(format_report(rep))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def verify(as_json: bool) -> None:
    """Reconcile stock: no oversell, reserved = sum of reservations. Exit 1 on a violation."""
    from analytics.client import connect as ch_connect
    from state.keys import Keys
    from state.redis import connect
    from state.verify import verify as run_verify

    s = settings()
    with services_reachable():
        result = run_verify(connect(s), Keys(s.redis_prefix), ClickHouseLedger(ch_connect(s)))
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(
            f"{'ok' if result.ok else 'VIOLATIONS'}: {result.locations} stock location(s), "
            f"{result.active_reservations} active reservation(s), "
            f"oversold units {result.oversold_units}"
        )
        for v in result.violations[:50]:
            click.echo(f"  {v}")
    sys.exit(0 if result.ok else 1)


@main.group()
def schema() -> None:
    """The published JSON Schemas of the topics (streams/schemas/)."""


@schema.command("check")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def schema_check(as_json: bool) -> None:
    """Every message on every typed topic against its published schema. Exit 1 on any message
    that breaks it."""
    from aiokafka.errors import KafkaError

    from ops.conformance import check_topics, format_conformance

    s = settings()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the error below says it all
    try:
        report = check_topics(s)
    except (KafkaError, OSError) as exc:
        fail(f"Kafka at {s.kafka_bootstrap} not reachable ({exc}); is the stack up? ./oms status")
    if as_json:
        emit_json(report.as_json())
    else:
        click.echo(format_conformance(report))
    sys.exit(0 if report.ok else 1)


@main.command("bench-stock")
@click.option("--orders", type=click.IntRange(100, 10_000_000), default=50_000, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def bench_stock(orders: int, concurrency: int, as_json: bool) -> None:
    """Reservations per second through state/ against a naive lock-read-check-write baseline,
    both measured in this run on the local Redis. Starts the stack's servers if needed."""
    from ops.bench_stock import bench_reservations
    from ops.prepare import prepare_infra

    s = settings()
    prepare_infra(s)
    result = bench_reservations(s, orders=orders, concurrency=concurrency)
    if as_json:
        emit_json(result)
        return
    click.echo(
        f"{result['orders']} single-line orders, {concurrency} concurrent clients, "
        f"Redis {result['redis_version']}\n"
        f"  engine (pipelined Lua):        {result['engine_per_s']:>10,.0f} reservations/s\n"
        f"  baseline (lock+read+write):    {result['baseline_per_s']:>10,.0f} reservations/s\n"
        f"  ratio                          {result['ratio']:>10.1f}x\n"
        f"  oversold: engine {result['engine_oversold']}, baseline {result['baseline_oversold']}"
    )


def stderr_progress() -> Callable[[str], None]:
    """Progress lines on stderr (stdout stays one JSON object with --json)."""
    from rich.console import Console

    err = Console(stderr=True)
    return lambda m: err.print(f"  {m}", markup=False, highlight=False, soft_wrap=True)


def show_result(
    result: dict[str, Any], as_json: bool, table: Callable[[dict[str, Any]], Any]
) -> None:
    """A run's result as one JSON object, or as its rich table."""
    from rich.console import Console

    if as_json:
        emit_json(result)
    else:
        Console().print(table(result))


@main.command("bench")
@click.option(
    "--orders",
    type=click.IntRange(100, 10_000_000),
    default=200_000,
    show_default=True,
    help="Orders in the flood (plus 2% re-pushed duplicates and 1% malformed).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=None,
    help="Faust workers, and as many ceiling processes (default OMS_WORKERS).",
)
@click.option("--keep", is_flag=True, help="Leave the bench stack and its data up afterwards.")
@click.option(
    "--profile",
    "profile_worker",
    is_flag=True,
    help="Sample worker w0 with py-spy during the flood and report where its time went.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def bench(
    orders: int, workers: int | None, keep: bool, profile_worker: bool, as_json: bool
) -> None:
    """End-to-end peak benchmark on a stack of its own (.oms/bench, own ports; the demo's data
    is never touched): a flood of N realistic orders, then a burst paced at 80% of the measured
    rate for latency, then a Faust consume-only ceiling on the same messages. Exit 1 when a
    correctness figure is off (oversold, lost, double reservations, duplicate commands, DLQ),
    never for speed."""
    from ops import stack
    from ops.bench import BenchError, render_table, run_bench

    try:
        result = run_bench(
            settings(),
            orders=orders,
            workers=workers or settings().workers,
            keep=keep,
            profile_worker=profile_worker,
            progress=stderr_progress(),
        )
    except (BenchError, stack.StackError) as exc:
        fail(str(exc))
    show_result(result, as_json, render_table)
    if not result["ok"]:
        fail("correctness violated: " + "; ".join(result["violations"]))


@main.command("chaos")
@click.option(
    "--orders",
    type=click.IntRange(100, 1_000_000),
    default=5000,
    show_default=True,
    help="Orders in each scenario's flood (plus 2% re-pushed duplicates and 1% malformed).",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    help="Run only this scenario (repeatable): worker_kill9_restart, worker_lost_rebalance, "
    "redis_restart, redis_kill9, clickhouse_outage, burst_over_memory. Default: all.",
)
@click.option(
    "--outage-s",
    type=FiniteFloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="How long clickhouse_outage keeps ClickHouse stopped.",
)
@click.option("--keep", is_flag=True, help="Leave the chaos stack and its data up afterwards.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def chaos(
    orders: int, scenarios: tuple[str, ...], outage_s: float, keep: bool, as_json: bool
) -> None:
    """Faults mid-flood on a stack of its own (.oms/chaos, own ports): kill -9 a worker and
    restart it, lose one of three workers, restart Redis, stop ClickHouse, a burst over the
    workers' memory. After each: no lost order, no double reservation, no duplicate
    command, exact ClickHouse counts, verify ok. Exit 1 when any scenario is not ok."""
    from ops import stack
    from ops.bench import BenchError
    from ops.chaos import ChaosError, problems, render_table, run_chaos

    try:
        result = run_chaos(
            settings(),
            names=list(scenarios) or None,
            orders=orders,
            keep=keep,
            clickhouse_outage_s=outage_s,
            progress=stderr_progress(),
        )
    except (ChaosError, BenchError, stack.StackError) as exc:
        fail(str(exc))
    show_result(result, as_json, render_table)
    if not result["ok"]:
        fail("chaos: " + "; ".join(problems(result)))


# --- the two commands --------------------------------------------------------------------


@main.command()
@click.option(
    "--orders",
    "n_orders",
    type=click.IntRange(10, 1_000_000),
    default=3000,
    show_default=True,
    help="Orders in the peak-sale burst.",
)
@click.option("--workers", type=click.IntRange(1, 16), default=None)
def demo(n_orders: int, workers: int | None) -> None:
    """Start everything, load sample stock, flood a peak-sale burst, print the report."""
    from ops.demo import run_demo

    sys.exit(run_demo(settings(), n_orders=n_orders, workers=workers))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def test(pytest_args: tuple[str, ...]) -> None:
    """The whole suite on an isolated stack (own ports and data dir under .oms/test)."""
    env = dict(os.environ)
    env.update(test_environment())
    args = [sys.executable, "-m", "pytest", *(pytest_args or ("-q",))]
    os.chdir(REPO_ROOT)
    os.execve(sys.executable, args, env)


def test_environment() -> dict[str, str]:
    """Ports and data dir of the test stack: never the ones a running demo stack uses."""
    return {
        "OMS_HOME": str(REPO_ROOT / ".oms" / "test"),
        "OMS_KAFKA_BOOTSTRAP": "127.0.0.1:19192",
        "OMS_REDIS_URL": "redis://127.0.0.1:16479/0",
        "OMS_CLICKHOUSE_PORT": "19100",
        "OMS_CLICKHOUSE_HTTP_PORT": "18223",
        "OMS_CLICKHOUSE_DATABASE": "oms_test",
        "OMS_WORKER_WEB_PORT": "16166",
        "OMS_PARTITIONS": "4",
        "OMS_WORKERS": "2",
    }


_PASS_THROUGH = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": [],
}


@main.command("wms-sim", context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def wms_sim(args: tuple[str, ...]) -> None:
    """Simulate the WMS: answer fulfilment commands like a warehouse (see --help)."""
    from ops.wms_sim import wms_sim_command

    wms_sim_command.main(list(args), prog_name="oms wms-sim")


@main.command("dashboard", context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dashboard(args: tuple[str, ...]) -> None:
    """The live sales dashboard in the foreground (see --help); the demo starts one."""
    from ops.dashboard import dashboard_command

    dashboard_command.main(list(args), prog_name="oms dashboard")


@main.group()
def rules() -> None:
    """Audit rules (config/audit.toml)."""


@rules.command("check", context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def rules_check(args: tuple[str, ...]) -> None:
    """Validate an audit rules file and print its rules (see --help)."""
    from ops.rules_cli import rules_check as check

    check.main(list(args), prog_name="oms rules check")


def _register_skumap() -> None:
    from ops.skumap_cli import skumap

    main.add_command(skumap)


_register_skumap()


# --- access ------------------------------------------------------------------------------


@main.group()
def access() -> None:
    """API and dashboard tokens: roles, permissions and shop scope (core/access.py)."""


def _token_store_call(call: Any) -> Any:
    """Run ``call(store)`` on a token store with a client of its own; Redis down -> exit 1."""
    from state.redis import connect_async
    from state.tokens import token_store

    async def run() -> Any:
        client = connect_async(settings())
        try:
            return await call(token_store(settings(), client))
        finally:
            await client.aclose()

    with services_reachable():
        return asyncio.run(run())


@access.command("grant")
@click.option("--user", required=True, help="Who the token is for (lands in the audit trail).")
@click.option("--role", required=True, help="customer_service | warehouse | finance | admin.")
@click.option(
    "--shops",
    default="*",
    show_default=True,
    help="Comma-separated shop ids of any script (e.g. 极客数码旗舰店,own-web), * = all.",
)
@click.option(
    "--expires-in",
    type=TOKEN_TTL_S,
    default=None,
    help="Seconds until the token is refused (default: until revoked).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def access_grant(user: str, role: str, shops: str, expires_in: float | None, as_json: bool) -> None:
    """Grant a token and print it ONCE: only its hash is stored, it cannot be shown again.

    The first admin token of every shop spends the bootstrap admin (OMS_ADMIN_TOKEN): it is
    refused from then on."""
    from core.access import AccessError, check_user, parse_role, parse_shops

    try:
        parsed_role, parsed_shops = parse_role(role), parse_shops(shops)
        check_user(user)
    except AccessError as exc:
        fail(str(exc), 2)

    async def grant(store: Any) -> tuple[Any, Any, Any]:
        before = await store.bootstrap_status()
        granted = await store.grant(user, parsed_role, parsed_shops, ttl_s=expires_in)
        return granted, before, await store.bootstrap_status()

    granted, before, after = _token_store_call(grant)
    spent_now = before is None and after is not None
    if as_json:
        emit_json({**granted.info.to_dict(), "token": granted.token, "spent_bootstrap": spent_now})
        return
    info = granted.info
    click.echo(f"token {info.token_id} for {info.user} ({info.role}, shops {info.shops}):")
    click.echo(granted.token)
    click.echo("shown once: only its hash is stored. Revoke: ./oms access revoke ID", err=True)
    if spent_now:
        click.echo(
            "the bootstrap admin token (OMS_ADMIN_TOKEN) is spent from now on: "
            "remove it from the environment",
            err=True,
        )


@access.command("revoke")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def access_revoke(token_id: str, as_json: bool) -> None:
    """Revoke a token by its id (the part after oms_); it is refused from then on."""
    from core.access import token_id_of

    ident = token_id_of(token_id) if token_id.startswith("oms_") else token_id
    if not _token_store_call(lambda store: store.revoke(ident)):
        fail(f"no token {ident!r} (./oms access list)")
    if as_json:
        emit_json({"ok": True, "token_id": ident, "revoked": True})
    else:
        click.echo(f"token {ident} revoked")


@access.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def access_list(as_json: bool) -> None:
    """Every token granted: id, user, role, shops, when, revoked, and whether the bootstrap
    admin (OMS_ADMIN_TOKEN) is spent. Never a secret."""
    from datetime import UTC, datetime

    async def listed(store: Any) -> tuple[Any, Any]:
        return await store.list(), await store.bootstrap_status()

    tokens, bootstrap = _token_store_call(listed)
    if as_json:
        emit_json(
            {
                "total": len(tokens),
                "tokens": [t.to_dict() for t in tokens],
                "bootstrap_spent": bootstrap,
            }
        )
        return
    click.echo(f"{len(tokens)} token(s)")
    if bootstrap:
        spent = datetime.fromtimestamp(float(bootstrap.get("at") or 0), UTC)
        click.echo(f"bootstrap admin (OMS_ADMIN_TOKEN) spent {spent:%Y-%m-%d %H:%M:%S}")
    else:
        click.echo("bootstrap admin (OMS_ADMIN_TOKEN) not spent: no admin of every shop yet")
    for t in tokens:
        when = datetime.fromtimestamp(t.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        state = "REVOKED" if t.revoked else "active"
        click.echo(f"{t.token_id} {when} {state:<8} {t.role:<16} {t.user:<20} shops={t.shops}")
