"""Stock adjust idempotency: the op id alone is the key, shared by `./oms stock adjust` and
POST /stock/adjust; who and why are fields of the movement, the why scrubbed before it can reach
ClickHouse; the same op id with another change is refused, not applied or silently accepted.

Real Redis and ClickHouse 18.16 of the test stack (no workers); each test has its own prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis
from click.testing import CliRunner, Result

from analytics.client import connect as ch_connect
from analytics.ledger import LedgerShipper
from analytics.schema import ensure_schema
from analytics.sink import FactSink
from core.settings import Settings
from ops import cli
from state.keys import Keys
from state.redis import connect, connect_async
from state.stock import StockChange, StockOp, apply_changes, stock_levels
from web.api import BadParam, StockAdjustment, adjust_stock_now

pytestmark = pytest.mark.integration

WH, OTHER_WH = "WH-SH", "WH-GZ"


@dataclass
class Env:
    settings: Settings
    keys: Keys
    redis: redis.Redis

    def on_hand(self, sku: str, wh: str = WH) -> int:
        return next(
            (lv.on_hand for lv in stock_levels(self.redis, self.keys, sku) if lv.warehouse == wh), 0
        )

    def api(self, actor: str = "alice", **change: Any) -> tuple[int, dict[str, Any]]:
        outcome = adjust_stock_now(self.settings, StockAdjustment(**change), actor)
        return outcome.status, outcome.body

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(cli.stock_adjust, [*args, "--json"])

    def ledger(self, sku: str) -> list[dict[str, str]]:
        return [fields for _, fields in self.redis.xrange(self.keys.ledger(sku))]


@pytest.fixture
def env(redis_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setattr(cli, "settings", lambda: redis_settings)
    monkeypatch.setenv("OMS_OPERATOR", "bob")
    keys = Keys(redis_settings.redis_prefix)
    client = connect(redis_settings)
    for sku in ("SKU1", "SKU2"):
        load = [StockChange(sku, wh, "on_hand", "set", 10) for wh in (WH, OTHER_WH)]
        apply_changes(client, keys, StockOp.LOAD, uuid.uuid4().hex, load)
    yield Env(redis_settings, keys, client)
    client.close()


def test_a_retry_with_another_reason_applies_once(env: Env) -> None:
    """Regression: the reason was part of the key, so a retry that said it differently applied
    the change twice."""
    first = env.api(sku="SKU1", warehouse=WH, delta=3, reason="damaged", op_id="fix-1")
    again = env.api(sku="SKU1", warehouse=WH, delta=3, reason="damaged box", op_id="fix-1")
    assert first == (200, {**first[1], "applied": True})
    assert again[0] == 200 and again[1]["applied"] is False
    assert env.on_hand("SKU1") == 13


def test_the_cli_and_the_api_share_the_key(env: Env) -> None:
    """Regression: the API keyed `op:by=actor:reason`, the CLI `op:reason`: the same operation
    sent through both applied twice."""
    done = env.cli("SKU1", WH, "4", "--op-id", "recount-7", "--reason", "recount")
    assert done.exit_code == 0, done.output
    assert orjson.loads(done.output)["applied"] is True
    status, body = env.api(sku="SKU1", warehouse=WH, delta=4, reason="recount", op_id="recount-7")
    assert status == 200 and body["applied"] is False
    again = env.cli("SKU1", WH, "4", "--op-id", "recount-7")
    assert again.exit_code == 0 and orjson.loads(again.output)["applied"] is False
    assert env.on_hand("SKU1") == 14


@pytest.mark.parametrize(
    "change",
    [
        {"sku": "SKU1", "warehouse": WH, "delta": 5},  # another delta
        {"sku": "SKU2", "warehouse": WH, "delta": 2},  # another sku
        {"sku": "SKU1", "warehouse": OTHER_WH, "delta": 2},  # another warehouse
        {"sku": "SKU1", "warehouse": WH, "delta": 2, "field": "inbound"},  # another figure
    ],
    ids=["delta", "sku", "warehouse", "field"],
)
def test_the_same_op_id_with_another_change_is_refused(env: Env, change: dict[str, Any]) -> None:
    """Regression: a reused op id was applied (another sku: no marker there) or silently
    answered as done (same sku: the marker) though the change asked for was not made."""
    assert env.api(sku="SKU1", warehouse=WH, delta=2, op_id="op-9")[0] == 200
    status, body = env.api(**change, op_id="op-9")
    assert status == 409 and "op-9" in body["error"] and "another change" in body["error"]
    field = ["--field", change["field"]] if "field" in change else []
    refused = env.cli(
        change["sku"], change["warehouse"], str(change["delta"]), *field, "--op-id", "op-9"
    )
    assert refused.exit_code != 0 and "another change" in refused.output
    assert (env.on_hand("SKU1"), env.on_hand("SKU2"), env.on_hand("SKU1", OTHER_WH)) == (12, 10, 10)
    assert not any(lv.inbound for lv in stock_levels(env.redis, env.keys, "SKU1"))


@pytest.mark.parametrize("op_id", ["x:by=admin", "a b", "op=1", "é", "-lead", "x" * 65])
def test_an_op_id_outside_the_charset_is_refused(env: Env, op_id: str) -> None:
    """Regression: an op id `x:by=admin` made the ledger reference read `x:by=admin:by=alice`:
    whoever parsed it could be told the admin acted."""
    with pytest.raises(BadParam, match="op id"):
        env.api(sku="SKU1", warehouse=WH, delta=1, op_id=op_id)
    refused = env.cli("SKU1", WH, "1", "--op-id", op_id)
    assert refused.exit_code != 0 and "op id" in refused.output
    assert env.on_hand("SKU1") == 10


def test_without_an_op_id_each_adjust_is_new_and_the_cli_prints_the_key(env: Env) -> None:
    first = env.cli("SKU1", WH, "1")
    second = env.cli("SKU1", WH, "1")
    op = orjson.loads(first.output)["op_id"]
    assert op != orjson.loads(second.output)["op_id"] and env.on_hand("SKU1") == 12
    retry = env.cli("SKU1", WH, "1", "--op-id", op)  # what a retry after a timeout does
    assert orjson.loads(retry.output)["applied"] is False and env.on_hand("SKU1") == 12
    plain = CliRunner().invoke(cli.stock_adjust, ["SKU1", WH, "1"])
    assert plain.exit_code == 0 and "op id " in plain.output and env.on_hand("SKU1") == 13


def test_a_load_retry_with_the_printed_op_id_changes_nothing(env: Env, tmp_path: Any) -> None:
    """`./oms stock load` printed no key and took none: a retry after a timeout set on hand
    again, undoing whatever moved in between."""
    path = tmp_path / "stock.csv"
    path.write_text(f"sku,warehouse,qty\nSKU1,{WH},50\n")
    loaded = CliRunner().invoke(cli.stock_load, [str(path), "--json"])
    assert loaded.exit_code == 0, loaded.output
    op = orjson.loads(loaded.output)["op_id"]
    assert env.api(sku="SKU1", warehouse=WH, delta=-5)[0] == 200  # units leave meanwhile
    retry = CliRunner().invoke(cli.stock_load, [str(path), "--op-id", op, "--json"])
    assert retry.exit_code == 0 and orjson.loads(retry.output)["applied"] is False
    assert env.on_hand("SKU1") == 45
    path.write_text(f"sku,warehouse,qty\nSKU1,{WH},60\n")
    other = CliRunner().invoke(cli.stock_load, [str(path), "--op-id", op])
    assert other.exit_code != 0 and "another change" in other.output
    assert env.on_hand("SKU1") == 45


async def test_actor_and_reason_are_fields_of_their_own_scrubbed_into_clickhouse(
    env: Env,
) -> None:
    """Regression: `op:by=actor:reason` went into the movement's ref, and so into ClickHouse,
    with the reason's free text as typed (a buyer's phone number, a name)."""
    reason = "buyer 138 1234 5678 called, box for 'Zhang San' crushed"
    status, _ = env.api(
        actor="alice", sku="SKU1", warehouse=WH, delta=-2, reason=reason, op_id="dmg-1"
    )
    assert status == 200
    entry = env.ledger("SKU1")[-1]
    assert (entry["kind"], entry["ref"], entry["actor"]) == ("adjust", "dmg-1", "alice")
    assert entry["reason"] == "buyer <digits> called, box for '***' crushed"

    settings = env.settings.model_copy(
        update={"clickhouse_database": f"oms_test_adjust_{uuid.uuid4().hex[:8]}"}
    )
    ensure_schema(settings)  # migration 0005 on ClickHouse 18.16
    ch = ch_connect(settings)
    aredis = connect_async(settings)
    sink = FactSink(settings, setup=None, max_attempts=3, base_delay_s=0.01)
    try:
        await LedgerShipper(aredis, env.keys, sink).ship()
        rows = ch.execute(
            "SELECT ref, actor, reason FROM stock_movements WHERE kind = 'adjust' AND sku = 'SKU1'"
        )
        assert rows == [("dmg-1", "alice", "buyer <digits> called, box for '***' crushed")]
        assert not ch.execute("SELECT count() FROM stock_movements WHERE ref LIKE '%1234%'")[0][0]
    finally:
        await sink.close()
        await aredis.aclose()
        ch.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
        ch.disconnect()
