"""The order query API each worker serves (web/api.py), through the real stack: orders fed with
`./oms ingest`, processed by the running workers, then read over HTTP and compared with what
`./oms orders show` and `./oms held list` print."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_end_to_end import SAMPLES, oms, show, wait_for

from core.heartbeat import worker_heartbeat_key
from core.settings import Settings
from order.lifecycle import RELEASED_OR_LATER
from state.redis import connect
from tests.auth import admin_auth
from web.api import api_port, api_url

pytestmark = pytest.mark.integration

JD_ID = "289345671203"  # samples/payloads/jd.json
JD_CLEAR = ("王小明", "13912345678", "科苑路15号")  # its consignee name, mobile, street
OWN_CLEAR = ("陈晨", "13512345678", "珞喻路1037号")  # samples/payloads/own.json buyer/address
# "released or later": the fulfilment command went out (the WMS may already have moved it on).
PROCESSED = {state.value for state in RELEASED_OR_LATER}


def get(settings: Settings, path: str, worker: str = "w0") -> tuple[int, Any]:
    """(status, JSON body) of a GET on ``worker``'s API as the bootstrap admin; (0, None) while
    it does not answer."""
    request = urllib.request.Request(api_url(settings, worker) + path, headers=admin_auth(settings))
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, None


def get_text(settings: Settings, path: str) -> str:
    request = urllib.request.Request(api_url(settings) + path, headers=admin_auth(settings))
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def api(running_stack: Settings) -> Settings:
    """Stock loaded and every worker's API answering."""
    oms(running_stack, "stock", "load", "samples/stock.csv")
    for worker in ("w0", "w1"):
        assert wait_for(lambda w=worker: get(running_stack, "/health", w)[0] == 200), worker
    return running_stack


def unpaid_payload(tmp_path: Path, external_id: str) -> Path:
    """The own-shop sample, not paid yet: the audit holds it as ``unpaid``."""
    order = json.loads((SAMPLES / "own.json").read_text())
    order["external_id"] = external_id
    order["channel_status"] = "pending_payment"
    order["payment"] = {**order["payment"], "status": "unpaid", "paid_total": "0", "paid_at": None}
    path = tmp_path / f"{external_id}.json"
    path.write_text(json.dumps(order))
    return path


def test_each_worker_answers_on_its_own_port_and_heartbeats_it(api: Settings) -> None:
    for worker in ("w0", "w1"):
        assert get(api, "/health", worker) == (200, {"ok": True, "worker": worker})
    redis_client = connect(api)

    def beat(worker: str) -> dict[str, Any]:
        raw = redis_client.get(worker_heartbeat_key(api, worker))
        return orjson.loads(raw) if raw else {}

    for worker in ("w0", "w1"):
        port = api_port(api, worker)
        assert wait_for(lambda w=worker, p=port: beat(w).get("api_port") == p, timeout=15)
    assert api_port(api, "w1") == api_port(api, "w0") + 1


def assert_served_masked_like_the_cli(api: Settings, order_id: str, clear: tuple[str, ...]) -> None:
    """By id from either worker, no personal data in the body, and the very view
    `./oms orders show --json` prints by default (the order may move on between two reads)."""
    for worker in ("w0", "w1"):
        status, view = get(api, f"/orders/{order_id}", worker)
        assert status == 200 and view["order_id"] == order_id, worker
    body = get_text(api, f"/orders/{order_id}")
    for text in clear:
        assert text not in body
    assert wait_for(lambda: get(api, f"/orders/{order_id}")[1] == show(api, order_id))


def test_processed_order_by_id_and_by_channel_id(api: Settings) -> None:
    oms(api, "ingest", "--channel", "jd", str(SAMPLES / "jd.json"))

    def processed() -> dict[str, Any] | None:
        status, body = get(api, f"/orders/jd/{JD_ID}")
        return body if status == 200 and body["orders"][0]["state"] in PROCESSED else None

    by_channel = wait_for(processed)
    assert by_channel, f"jd:{JD_ID} did not reach released; last: {get(api, f'/orders/jd/{JD_ID}')}"
    [view] = by_channel["orders"]
    assert view["channel"] == "jd" and view["external_id"] == JD_ID
    assert [h["kind"] for h in view["history"]][:1] == ["received"]
    assert view["commands"], "a released order has its outbound command on record"
    assert view["order"]["address"]["phone"] == "139****5678"
    assert_served_masked_like_the_cli(api, view["order_id"], JD_CLEAR)


def test_unpaid_order_is_held_listed_and_served(api: Settings, tmp_path: Path) -> None:
    oms(api, "ingest", "--channel", "own", str(unpaid_payload(tmp_path, "W-API-UNPAID-1")))

    def held_rows() -> list[dict[str, Any]] | None:
        status, body = get(api, "/held?reason=unpaid")
        rows = [r for r in body["orders"] if r["external_id"] == "W-API-UNPAID-1"]
        return rows if status == 200 and rows else None

    rows = wait_for(held_rows)
    assert rows and rows[0]["reason"] == "unpaid" and rows[0]["channel"] == "own"
    status, body = get(api, "/held?reason=unpaid")
    cli = json.loads(oms(api, "held", "list", "--reason", "unpaid", "--json").stdout)
    assert status == 200 and body.pop("next") is None and body == cli  # one page: all of it
    _, later = get(api, f"/held?since={time.time() + 3600:.0f}")
    assert later == {"total": 0, "orders": [], "next": None}
    _, one = get(api, "/held?limit=1")
    assert one["total"] == 1

    order_id = rows[0]["order_id"]
    status, by_channel = get(api, "/orders/own/W-API-UNPAID-1")
    assert status == 200 and [v["order_id"] for v in by_channel["orders"]] == [order_id]
    assert by_channel["orders"][0]["state"] == "held"
    assert by_channel["orders"][0]["hold_reason"] == "unpaid"
    assert by_channel["orders"][0]["order"]["address"]["phone"] == "135****5678"
    assert_served_masked_like_the_cli(api, order_id, OWN_CLEAR)


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/orders/ONOSUCHORDER", 404, "ONOSUCHORDER"),
        ("/orders/jd/000000000", 404, "000000000"),
        ("/orders/ebay/1", 400, "unknown channel"),
        ("/orders/jd:1", 400, "/orders/{channel}/{external_id}"),
        ("/held?limit=lots", 400, "limit"),
        ("/held?since=-5", 400, "since"),
        ("/no/such/route", 404, "/no/such/route"),
    ],
)
def test_unknown_is_404_and_bad_parameters_are_400(
    api: Settings, path: str, status: int, needle: str
) -> None:
    got, body = get(api, path)
    assert got == status
    assert needle in body["error"]
