"""The live dashboard against the real stack, drawn by Debian's headless Chromium.

Stock is loaded and a small flood (the sample payloads plus a loadgen burst) goes through the
workers; then the dashboard runs as its own process, Chromium loads the page (plotly.js from
the dashboard itself), and the figures the page wrote into its DOM after drawing are compared
with direct ClickHouse and Redis reads. The screenshot is left in .oms/test/dashboard.png.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest

from core.settings import REPO_ROOT, Settings
from ops import stack
from tests.auth import admin_auth, admin_token

pytestmark = pytest.mark.integration

SAMPLES = REPO_ROOT / "samples" / "payloads"
CHANNELS = ("taobao", "jd", "douyin", "shopify", "amazon", "own")
SCREENSHOT = REPO_ROOT / ".oms" / "test" / "dashboard.png"
BURST_ORDERS = 400
CHARTS = ("chart-orders", "chart-gmv", "chart-stock", "chart-holds", "chart-lag")


def wait_for(what: str, fn: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    """Poll until ``fn`` returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


def run_oms(settings: Settings, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ops", *args],
        env={**stack.child_env(settings), "OMS_CALLER_CWD": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"oms {' '.join(args)} -> {result.returncode}\n{result.stderr}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "chromium is not installed: ./oms installs the Debian package 'chromium' "
            "(DEB_PACKAGES); by hand: apt-get install chromium"
        )
    return path


def run_chromium(url: str, *mode: str, timeout_s: float = 120.0) -> str:
    """Headless Chromium on ``url`` with 8 s of virtual time (the page polls every 2 s); no
    network but loopback is ever needed, so background services stay off."""
    with tempfile.TemporaryDirectory(prefix="oms-chromium-") as profile:
        argv = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            "--virtual-time-budget=8000",
            *mode,
            url,
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, f"chromium exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


class _Elements(HTMLParser):
    """The attributes of every element with an id, from Chromium's --dump-dom."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if "id" in values:
            self.by_id[values["id"]] = values


def elements(dom: str) -> dict[str, dict[str, str]]:
    parser = _Elements()
    parser.feed(dom)
    return parser.by_id


def fetch(port: int, path: str, timeout: float = 30) -> Any:
    """urlopen of a dashboard path as the test stack's bootstrap admin."""
    from core.settings import get_settings

    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url, headers=admin_auth(get_settings()))
    return urllib.request.urlopen(request, timeout=timeout)


def api(port: int, since: int) -> dict[str, Any]:
    with fetch(port, f"/api/dashboard?since={since}") as resp:
        return json.loads(resp.read())


def clickhouse_figures(settings: Settings, since: int) -> tuple[int, dict[str, Decimal]]:
    """Orders first seen since ``since`` (all states) and accepted GMV per currency, by the
    report's own queries and one plain count, not by the dashboard's."""
    from datetime import UTC, datetime

    from analytics.client import connect
    from analytics.reports import build_report

    client = connect(settings)
    try:
        (count,) = client.execute(
            "SELECT count() FROM order_status WHERE first_at >= toDateTime(%(since)s)",
            {"since": since},
        )[0]
        report = build_report(client, since=datetime.fromtimestamp(since, UTC))
    finally:
        client.disconnect()
    gmv: dict[str, Decimal] = {}
    for row in report.gmv_by_channel_currency:
        gmv[row.currency] = gmv.get(row.currency, Decimal(0)) + row.gmv
    assert report.orders_in == int(count)
    return int(count), gmv


@pytest.fixture(scope="module")
def flooded(running_stack: Settings) -> Iterator[tuple[Settings, int]]:
    """Stock loaded, the six samples and a burst ingested, every input a fact in ClickHouse."""
    from analytics.client import connect
    from analytics.reports import processed_inputs
    from core.kafka import produce
    from ops.loadgen import generate_burst
    from streams import topics

    settings = running_stack
    since = int(time.time()) - 2
    run_oms(settings, "stock", "load", "samples/stock.csv")
    for channel in CHANNELS:
        run_oms(settings, "ingest", "--channel", channel, str(SAMPLES / f"{channel}.json"))
    plan = generate_burst(BURST_ORDERS, run_id=f"dash{uuid.uuid4().hex[:6]}")
    records = [
        (topics.raw_topic(m.channel).name(settings.topic_prefix), m.key, m.value, m.headers)
        for m in plan.messages
    ]
    asyncio.run(produce(settings, records))
    expected = len(CHANNELS) + len(records)

    from datetime import UTC, datetime

    def landed() -> bool:
        client = connect(settings)
        try:
            return processed_inputs(client, datetime.fromtimestamp(since, UTC)) >= expected
        finally:
            client.disconnect()

    wait_for(f"{expected} inputs landed in ClickHouse", landed)
    previous: list[Any] = [None]

    def settled() -> bool:  # no order still moving between states (so GMV scope is final)
        now = clickhouse_figures(settings, since)
        same = now == previous[0]
        previous[0] = now
        return same

    wait_for("ClickHouse figures settled", settled)
    yield settings, since


@pytest.fixture(scope="module")
def dashboard(flooded: tuple[Settings, int]) -> Iterator[int]:
    from ops.dashboard import start_dashboard, stop_dashboard

    settings, _ = flooded
    port = free_port()
    start_dashboard(settings, port)
    try:
        yield port
    finally:
        stop_dashboard(settings)


def check_held_paging(settings: Settings, held: list[dict[str, Any]]) -> None:
    """A filter is applied before the limit, across pages: the last shop's first holds come
    back even when other shops' holds fill the pages before them."""
    from web import views

    shop = held[-1]["shop_id"]
    own = [r for r in held if r["shop_id"] == shop]
    page = views.HELD_PAGE
    views.HELD_PAGE = 3  # many small pages over the same index
    try:
        rows = asyncio.run(views.list_held(settings, 2, keep=lambda r: r["shop_id"] == shop))
        every = asyncio.run(views.list_held(settings, 0))
    finally:
        views.HELD_PAGE = page
    assert rows == own[:2]
    assert every == held


def test_api_matches_clickhouse_and_redis(flooded: tuple[Settings, int], dashboard: int) -> None:
    from state.keys import Keys
    from state.redis import connect
    from state.stock import stock_levels
    from web.views import list_held, list_late

    settings, since = flooded
    # Lag: once the workers committed what they consumed, the group is at the end offsets.
    data = wait_for(
        "consumer lag 0 and every source answering",
        lambda: (
            (d := api(dashboard, since)).get("lag", {}).get("total") == 0 and not d["errors"] and d
        ),
    )
    assert data["errors"] == {}
    assert set(data["lag"]["current"]) == {f"{settings.topic_prefix}.raw.{c}" for c in CHANNELS}

    count, gmv = clickhouse_figures(settings, since)
    assert data["totals"]["orders"] == count > BURST_ORDERS // 2
    assert {k: Decimal(v) for k, v in data["totals"]["gmv"].items()} == gmv
    assert sum(sum(s) * data["step_s"] for s in data["orders"]["series"].values()) == count
    for series in data["gmv"]["series"].values():
        assert series == sorted(series)  # a running total never goes down

    held = asyncio.run(list_held(settings, 100_000))
    assert data["holds"]["total"] == len(held) > 0
    assert sum(data["holds"]["by_reason"].values()) == len(held)
    check_held_paging(settings, held)
    # The deadline queues: counted from their indexes, the late ones listed.
    late = asyncio.run(list_late(settings))
    assert data["holds"]["late"] == len(late)
    assert [r["order_id"] for r in data["holds"]["late_orders"]] == [
        r["order_id"] for r in late[:20]
    ]
    backordered = [r for r in held if r["reason"] == "out_of_stock"]
    assert data["holds"]["backorders"] == len(backordered)

    # Hot skus: the live level is Redis's; the ledger history in ClickHouse ends at it once
    # the shipper has caught up (it ships about every second).
    assert data["stock"]["skus"], "no hot skus"
    client = connect(settings)
    keys = Keys(settings.redis_prefix)
    live = {
        sku: sum(lv.available for lv in stock_levels(client, keys, sku))
        for sku in data["stock"]["skus"]
    }
    client.close()
    assert data["stock_live"] == live

    def ledger_caught_up() -> bool:
        d = api(dashboard, since)
        return all(d["stock"]["series"][s][-1] == d["stock_live"][s] for s in d["stock"]["skus"])

    wait_for("stock ledger in ClickHouse equal to Redis", ledger_caught_up, 30.0)
    first = data["stock"]["series"][data["stock"]["skus"][0]]
    # The window opens before the stock load (level 0), rises with it, then sells down.
    assert max(first) > first[-1], "the hottest sku's stock did not burn down"


def test_api_rejects_bad_since(dashboard: int) -> None:
    for bad in ("yesterday", "-5", "1.5", str(int(time.time()) + 86400)):
        with pytest.raises(urllib.error.HTTPError) as err:
            fetch(dashboard, f"/api/dashboard?since={bad}")
        assert err.value.code == 400
        assert "since" in json.loads(err.value.read())["error"]


def test_chart_library_served_locally(dashboard: int) -> None:
    page = fetch(dashboard, "/", timeout=10).read().decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/static/") for s in sources), sources
    with fetch(dashboard, "/static/plotly.min.js") as resp:
        body = resp.read(200_000)
    assert b"plotly" in body.lower()
    with pytest.raises(urllib.error.HTTPError) as err:
        fetch(dashboard, "/static/..%2Fsettings.py")
    assert err.value.code == 404


def test_browser_draws_the_clickhouse_figures(
    flooded: tuple[Settings, int], dashboard: int
) -> None:
    from ops.dashboard import dashboard_url

    settings, since = flooded
    # The token once in the URL: the dashboard trades it for a cookie and redirects.
    url = f"{dashboard_url(dashboard)}?since={since}&token={admin_token(settings)}"
    dom = run_chromium(url, "--dump-dom")
    found = elements(dom)
    summary = found["summary"]
    assert summary.get("data-state") == "drawn", f"page never drew: {found.get('errors')}"
    assert "unavailable" not in dom, "a data source failed while the page loaded"

    count, gmv = clickhouse_figures(settings, since)
    assert int(summary["data-orders"]) == count
    assert {k: Decimal(v) for k, v in json.loads(summary["data-gmv"]).items()} == gmv
    assert int(found["orders-total"]["data-value"]) == count
    for chart in CHARTS:
        attrs = found[chart]
        assert "js-plotly-plot" in attrs.get("class", ""), f"{chart} not drawn by plotly"
        assert int(attrs.get("data-points", "0")) > 0, f"{chart} drew no points"
    assert dom.count('class="main-svg"') >= len(CHARTS)
    # Personal data never reaches the page: no buyer names, phones or streets of the samples.
    samples = " ".join((SAMPLES / f"{c}.json").read_text(encoding="utf-8") for c in CHANNELS)
    for phone in set(re.findall(r"1[3-9][0-9]{9}", samples)):
        assert phone not in dom

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    run_chromium(url, f"--screenshot={SCREENSHOT}")
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 20_000
    print(f"dashboard screenshot: {SCREENSHOT}")


def test_missing_chromium_fails_not_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        chromium()
