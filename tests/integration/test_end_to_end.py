"""The spine through the real stack, driven the way a user drives it: `./oms` commands against
running workers, the broker, Redis and ClickHouse."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.kafka import read_topic
from core.settings import REPO_ROOT, Settings
from streams import topics

pytestmark = pytest.mark.integration

SAMPLES = REPO_ROOT / "samples" / "payloads"

# From samples/payloads/README.md: channel -> (external id, {sku: qty}, paid total)
EXPECTED: dict[str, tuple[str, dict[str, int], str]] = {
    "taobao": ("4012345678901234567", {"SKU-PHONE-X1": 1, "SKU-CASE-C3": 2}, "3897.00"),
    "jd": ("289345671203", {"SKU-EARBUD-A2": 1, "SKU-CHARGER-65W": 2}, "547.00"),
    "douyin": ("6921234567890123456", {"SKU-TEA-LONGJING": 2, "SKU-MASK-N95-10": 3}, "625.70"),
    "shopify": ("5678901234567", {"SKU-SNEAKER-42": 1, "SKU-TSHIRT-L": 2}, "842.00"),
    "amazon": ("C02-6915364-2314451", {"SKU-PHONE-X1": 1, "SKU-CHARGER-65W": 1}, "4138.00"),
}


def oms(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMS_CALLER_CWD": str(REPO_ROOT)}
    result = subprocess.run(
        [str(REPO_ROOT / "oms"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"./oms {' '.join(args)} -> {result.returncode}\n{result.stderr}")
    return result


def wait_for(fn: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    return last


def show(settings: Settings, ref: str) -> dict[str, Any] | None:
    result = oms(settings, "orders", "show", ref, "--json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture(scope="module")
def loaded(running_stack: Settings) -> Settings:
    oms(running_stack, "stock", "load", "samples/stock.csv")
    return running_stack


@pytest.mark.parametrize("channel", sorted(EXPECTED))
def test_each_channel_payload_lands_as_a_released_order(loaded: Settings, channel: str) -> None:
    external_id, lines, paid = EXPECTED[channel]
    oms(loaded, "ingest", "--channel", channel, str(SAMPLES / f"{channel}.json"))
    view = wait_for(
        lambda: (v := show(loaded, f"{channel}:{external_id}")) and v["state"] == "released" and v
    )
    assert view, f"{channel}:{external_id} did not reach released"
    got: dict[str, int] = {}
    for line in view["lines"]:
        got[line["sku"]] = got.get(line["sku"], 0) + line["quantity"]
    assert got == lines
    assert Decimal(view["paid_total"]) == Decimal(paid)
    assert view["warehouse"] in {"WH-SH", "WH-BJ", "WH-GZ", "WH-CD"}
    assert view["reservation"]["status"] == "reserved"
    reserved = {a["sku"] for a in view["reservation"]["allocations"]}
    gifts = {g["sku"] for g in view["gift_lines"]}  # promotions (config/promotions.toml)
    assert reserved == set(lines) | gifts
    moves = [h["kind"] for h in view["history"] if h["to_state"]]
    assert moves == ["received", "audited", "reserved", "routed", "released"]


def test_repush_is_a_counted_duplicate_and_reserves_nothing_more(loaded: Settings) -> None:
    oms(loaded, "ingest", "--channel", "jd", str(SAMPLES / "jd.json"))
    assert wait_for(lambda: (v := show(loaded, "jd:289345671203")) and v["state"] == "released")
    before = json.loads(oms(loaded, "stock", "show", "SKU-EARBUD-A2", "--json").stdout)
    oms(loaded, "ingest", "--channel", "jd", str(SAMPLES / "jd.json"))
    view = wait_for(lambda: (v := show(loaded, "jd:289345671203")) and v["duplicates"] >= 1 and v)
    assert view and view["state"] == "released"
    after = json.loads(oms(loaded, "stock", "show", "SKU-EARBUD-A2", "--json").stdout)
    assert after == before


def test_bad_input_lands_in_dlq_with_reasons_and_worker_survives(
    loaded: Settings, tmp_path: Path
) -> None:
    unknown_channel = json.loads((SAMPLES / "own.json").read_text())
    unknown_channel["channel"] = "wish"
    unknown_channel["external_id"] = "WISH-1"
    (tmp_path / "unknown.json").write_text(json.dumps(unknown_channel))
    oms(loaded, "ingest", "--channel", "taobao", str(SAMPLES / "bad" / "malformed.json"))
    oms(loaded, "ingest", "--channel", "taobao", str(SAMPLES / "bad" / "missing_field.json"))
    oms(loaded, "ingest", "--channel", "jd", str(SAMPLES / "bad" / "negative_quantity.json"))
    oms(loaded, "ingest", "--channel", "own", str(tmp_path / "unknown.json"))

    def reasons() -> dict[str, int] | None:
        data = json.loads(oms(loaded, "dlq", "list", "--json").stdout)
        by_reason = data["by_reason"]
        wanted = {"malformed_json", "missing_field", "invalid_field", "unknown_channel"}
        return by_reason if wanted <= set(by_reason) else None

    by_reason = wait_for(reasons)
    assert by_reason, "not every bad payload reached the DLQ"
    records = json.loads(oms(loaded, "dlq", "list", "--json").stdout)["records"]
    negative = [r for r in records if r["reason"] == "invalid_field" and r["channel"] == "jd"]
    assert negative and "quantity" in negative[-1]["detail"]
    # An unknown channel name on the CLI is refused before anything is sent.
    refused = oms(loaded, "ingest", "--channel", "wish", str(SAMPLES / "jd.json"), check=False)
    assert refused.returncode != 0 and "unknown channel" in refused.stderr
    # The workers kept running and still process good input.
    status = json.loads(oms(loaded, "status", "--json", check=False).stdout)
    assert all(c["healthy"] for c in status["components"]), status
    oms(loaded, "ingest", "--channel", "own", str(SAMPLES / "own.json"))
    assert wait_for(lambda: (v := show(loaded, "own:W20240618-0001")) and v["state"] == "released")


def test_facts_reach_clickhouse_and_verify_is_ok(loaded: Settings) -> None:
    for channel in EXPECTED:
        oms(loaded, "ingest", "--channel", channel, str(SAMPLES / f"{channel}.json"))

    from analytics.client import connect as ch_connect

    client = ch_connect(loaded)
    wanted = tuple(external_id for external_id, _, _ in EXPECTED.values())

    def totals() -> dict[str, Decimal] | None:
        # Other modules flood the same stack: look at the sample orders' own facts.
        rows = client.execute(
            "SELECT channel, paid_total FROM order_latest WHERE external_id IN %(ids)s",
            {"ids": wanted},
        )
        return {ch: Decimal(paid) for ch, paid in rows} if len(rows) >= len(EXPECTED) else None

    got = wait_for(totals)
    assert got, "orders did not reach ClickHouse"
    for channel, (_, _, paid) in EXPECTED.items():
        assert got[channel] == Decimal(paid)
    data = json.loads(oms(loaded, "report", "--json").stdout)
    assert data["oversold_units"] == 0 and data["orders_in"] >= len(EXPECTED)
    verified = json.loads(oms(loaded, "verify", "--json").stdout)
    assert verified["ok"] and verified["oversold_units"] == 0


def test_dlq_replay_sends_each_record_back_once(loaded: Settings) -> None:
    oms(loaded, "ingest", "--channel", "taobao", str(SAMPLES / "bad" / "malformed.json"))

    def dlq() -> dict[str, Any]:
        return json.loads(oms(loaded, "dlq", "list", "--json", "--limit", "0").stdout)

    def on_topic() -> int:
        records = asyncio.run(read_topic(loaded, topics.DLQ.name(loaded.topic_prefix)))
        return sum(b'"malformed_json"' in r.value for r in records)

    assert wait_for(lambda: dlq()["by_reason"].get("malformed_json", 0) >= 1)
    before = dlq()["by_reason"]["malformed_json"]
    first = json.loads(oms(loaded, "dlq", "replay", "--reason", "malformed_json", "--json").stdout)
    assert first["sent"] == first["selected"] == before
    # Still malformed: each replayed input is DLQ'd again, as the input it replays (the same
    # DLQ id, with its first time: one record in the list and in ClickHouse, not a new one).
    assert wait_for(lambda: on_topic() == 2 * before)
    assert dlq()["by_reason"]["malformed_json"] == before
    again = json.loads(oms(loaded, "dlq", "replay", "--reason", "malformed_json", "--json").stdout)
    assert again["sent"] == 0 and again["skipped_already_replayed"] == before
    forced = oms(loaded, "dlq", "replay", "--reason", "malformed_json", "--again", "--json")
    assert json.loads(forced.stdout)["sent"] == before
    bad = oms(loaded, "dlq", "replay", "--reason", "no_such_reason", check=False)
    assert bad.returncode == 2 and "unknown reason" in bad.stderr


def test_unpaid_order_is_listed_as_held(loaded: Settings, tmp_path: Path) -> None:
    unpaid = json.loads((SAMPLES / "own.json").read_text())
    unpaid["external_id"] = "W-UNPAID-1"
    unpaid["channel_status"] = "pending_payment"
    unpaid["payment"] = {
        **unpaid["payment"],
        "status": "unpaid",
        "paid_total": "0",
        "paid_at": None,
    }
    (tmp_path / "unpaid.json").write_text(json.dumps(unpaid))
    oms(loaded, "ingest", "--channel", "own", str(tmp_path / "unpaid.json"))

    def held() -> list[dict[str, Any]] | None:
        rows = json.loads(oms(loaded, "held", "list", "--reason", "unpaid", "--json").stdout)
        return [r for r in rows["orders"] if r["external_id"] == "W-UNPAID-1"] or None

    rows = wait_for(held)
    assert rows and rows[0]["reason"] == "unpaid" and rows[0]["channel"] == "own"
    assert show(loaded, "own:W-UNPAID-1")["state"] == "held"  # type: ignore[index]


def test_operator_releases_and_cancels_through_the_cli(loaded: Settings, tmp_path: Path) -> None:
    unpaid = json.loads((SAMPLES / "own.json").read_text())
    unpaid["external_id"] = "W-OPERATOR-1"
    unpaid["channel_status"] = "pending_payment"
    unpaid["payment"] = {
        **unpaid["payment"],
        "status": "unpaid",
        "paid_total": "0",
        "paid_at": None,
    }
    (tmp_path / "op.json").write_text(json.dumps(unpaid))
    oms(loaded, "ingest", "--channel", "own", str(tmp_path / "op.json"))
    assert wait_for(lambda: (v := show(loaded, "own:W-OPERATOR-1")) and v["state"] == "held")

    env = {"OMS_OPERATOR": "alice"}
    os.environ.update(env)
    try:
        released = json.loads(
            oms(
                loaded,
                "held",
                "release",
                "own:W-OPERATOR-1",
                "--reason",
                "paid by bank transfer",
                "--json",
            ).stdout
        )
        # The web shop merges a buyer's orders: a released hold may wait in its window.
        assert released["before"] == "held" and released["state"] in ("routed", "released")
        cancelled = json.loads(oms(loaded, "held", "cancel", "own:W-OPERATOR-1", "--json").stdout)
        assert cancelled["state"] == "cancelled" and cancelled["actor"] == "alice"
        again = oms(loaded, "held", "release", "own:W-OPERATOR-1", "--json", check=False)
        assert again.returncode == 1 and json.loads(again.stdout)["last_event"] == "action_refused"
    finally:
        os.environ.pop("OMS_OPERATOR", None)
    view = show(loaded, "own:W-OPERATOR-1")
    assert view is not None and view["reservation"]["status"] == "closed"
    kinds = [(h["kind"], h["actor"]) for h in view["history"]]
    # signed by the CLI's key: the worker records the principal with the name (streams/signing.py)
    assert ("hold_released", "operator:alice") in kinds and ("cancelled", "operator:alice") in kinds
    missing = oms(loaded, "held", "release", "own:NO-SUCH-ORDER", check=False)
    assert missing.returncode == 1 and "names 0 orders" in missing.stderr


def test_operator_works_holds_in_bulk_with_a_dry_run_first(
    loaded: Settings, tmp_path: Path
) -> None:
    """`held release|cancel` without an order: the filters select holds as `held list` does,
    --dry-run changes nothing, --limit takes the oldest holds first."""
    shop = "bulk-e2e"
    for n in range(3):
        unpaid = json.loads((SAMPLES / "own.json").read_text())
        unpaid.update(
            {"external_id": f"W-BULK-{n}", "shop_id": shop, "channel_status": "pending_payment"}
        )
        unpaid["payment"] = {
            **unpaid["payment"],
            "status": "unpaid",
            "paid_total": "0",
            "paid_at": None,
        }
        (tmp_path / f"bulk{n}.json").write_text(json.dumps(unpaid))
        oms(loaded, "ingest", "--channel", "own", str(tmp_path / f"bulk{n}.json"))
    select = ["--shop", f"own/{shop}", "--reason", "unpaid"]

    def held_here() -> list[dict[str, Any]] | None:
        rows = json.loads(oms(loaded, "held", "cancel", *select, "--dry-run", "--json").stdout)
        return rows["orders"] if rows["total"] == 3 else None

    rows = wait_for(held_here)
    assert rows is not None and {r["external_id"] for r in rows} == {
        f"W-BULK-{n}" for n in range(3)
    }
    assert show(loaded, "own:W-BULK-0")["state"] == "held"  # type: ignore[index]  # dry run
    os.environ["OMS_OPERATOR"] = "bob"
    try:
        done = json.loads(
            oms(
                loaded, "held", "cancel", *select, "--limit", "2", "--note", "bulk test", "--json"
            ).stdout
        )
    finally:
        os.environ.pop("OMS_OPERATOR", None)
    assert (done["total"], done["applied"], done["refused"], done["not_applied"]) == (2, 2, 0, 0)
    cancelled = {o["order_id"] for o in done["orders"] if o["after"] == "cancelled"}
    oldest_two = {r["order_id"] for r in rows[:2]}
    assert cancelled == oldest_two
    left = json.loads(oms(loaded, "held", "release", *select, "--dry-run", "--json").stdout)
    assert left["total"] == 1 and left["orders"][0]["order_id"] == rows[2]["order_id"]
    nothing = oms(loaded, "held", "release", check=False)
    assert nothing.returncode == 2 and "--reason, --shop, --sku or --older-than" in nothing.stderr


def test_what_the_oms_writes_conforms_to_the_published_schemas(loaded: Settings) -> None:
    """Every message the workers produced on this shared stack so far (this module's orders
    and every earlier module's floods) against streams/schemas/. The control topics are left
    out here: other tests push broken WMS events and requests onto them on purpose (the
    workers dead-letter those); `./oms demo` checks every topic."""
    from ops.conformance import check_topics

    for channel in EXPECTED:
        oms(loaded, "ingest", "--channel", channel, str(SAMPLES / f"{channel}.json"))
    wait_for(lambda: show(loaded, "taobao:4012345678901234567"))
    written_by_the_oms = {
        spec.name(loaded.topic_prefix)
        for spec in (
            topics.ORDER_EVENTS,
            topics.FULFILMENT_COMMANDS,
            topics.DLQ,
            topics.CHANNEL_STOCK,
            topics.CHANNEL_UPDATES,
        )
    }
    report = check_topics(loaded)
    checked = [t for t in report.topics if t.topic in written_by_the_oms]
    assert {t.topic for t in checked} == written_by_the_oms
    by_topic = {t.topic: t for t in checked}
    assert by_topic[topics.ORDER_EVENTS.name(loaded.topic_prefix)].messages > 0
    assert by_topic[topics.FULFILMENT_COMMANDS.name(loaded.topic_prefix)].messages > 0
    assert [(t.topic, t.examples) for t in checked if t.failing] == []
