"""The dashboard's pure parts (parameters, buckets, series from query rows, lag arithmetic),
its SQL on current ClickHouse (chdb), and the Grafana dashboard that mirrors it."""

from __future__ import annotations

import json
import re
from collections import namedtuple
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.settings import REPO_ROOT
from ops import dashboard as dash
from ops.dashboard import (
    BadParameter,
    LagHistory,
    bucket_axis,
    bucket_step,
    gmv_series,
    holds_by_reason,
    lag_by_topic,
    orders_series,
    parse_since,
    stock_series,
)

# chdb fixtures (a fresh migrated database per test) from the schema's own compat test.
from tests.unit.test_chdb_compat import ChdbClient, db, session  # noqa: F401

NOW = 1_700_000_000.7
GRAFANA = REPO_ROOT / "docker" / "grafana" / "dashboards" / "oms.json"
DATASOURCE = REPO_ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "clickhouse.yaml"
MIGRATIONS = REPO_ROOT / "analytics" / "migrations"

# ----------------------------------------------------------------------------- parameters


def test_since_defaults_to_the_last_window() -> None:
    assert parse_since(None, NOW) == int(NOW) - dash.DEFAULT_WINDOW_S
    assert parse_since("", NOW) == int(NOW) - dash.DEFAULT_WINDOW_S


def test_since_accepts_unix_seconds() -> None:
    assert parse_since(" 1699999000 ", NOW) == 1_699_999_000
    assert parse_since(str(int(NOW) + 10), NOW) == int(NOW) + 10  # clock skew


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("abc", "whole number"),
        ("-5", "whole number"),
        ("1.5", "whole number"),
        ("١٢٣", "whole number"),  # Arabic-Indic digits pass str.isdigit()
        ("0", "ago"),
        (str(int(NOW) - dash.MAX_WINDOW_S - 1), "ago"),
        (str(int(NOW) + dash.FUTURE_SLACK_S + 1), "future"),
    ],
)
def test_since_refuses_bad_values(raw: str, why: str) -> None:
    with pytest.raises(BadParameter, match=why):
        parse_since(raw, NOW)


def test_bucket_step_keeps_the_series_bounded() -> None:
    since = int(NOW) - 100
    assert bucket_step(since, NOW) == 1
    assert bucket_step(int(NOW) - 3600, NOW, max_points=600) == 7  # 3601 s / 600, rounded up
    for span in (1, 599, 600, 601, 86_400, dash.MAX_WINDOW_S):
        step = bucket_step(int(NOW) - span, NOW)
        assert len(bucket_axis(int(NOW) - span, NOW, step)) <= dash.MAX_POINTS + 1


def test_bucket_axis_is_aligned_and_covers_now() -> None:
    axis = bucket_axis(1005, 1031.2, 10)
    assert axis == [1000, 1010, 1020, 1030]
    assert bucket_axis(1000, 990, 10) == [1000]  # now before since: one bucket, never empty


# ----------------------------------------------------------------------------- series


def test_orders_series_rates_per_channel_and_totals() -> None:
    axis = [100, 102, 104]
    rows = [(100, "jd", 4), (102, "jd", 2), (102, "taobao", 6), (90, "jd", 1), (200, "own", 1)]
    rates, totals = orders_series(rows, axis, 2)
    assert rates == {"jd": [2.5, 1.0, 0.0], "own": [0.0, 0.0, 0.5], "taobao": [0.0, 3.0, 0.0]}
    assert totals == {"jd": 7, "own": 1, "taobao": 6}  # rows outside the axis are clamped in


def test_gmv_series_running_totals_exact_per_currency() -> None:
    axis = [0, 1, 2]
    rows = [
        (0, "jd", "CNY", 1, Decimal("10.1000")),
        (2, "jd", "CNY", 2, Decimal("0.2000")),
        (1, "amazon", "USD", 1, Decimal("5.0000")),
        (1, "taobao", "CNY", 1, Decimal("0.1000")),
    ]
    running, totals, accepted = gmv_series(rows, axis, 1)
    assert running == {
        "amazon USD": [0.0, 5.0, 5.0],
        "jd CNY": [10.1, 10.1, 10.3],
        "taobao CNY": [0.0, 0.1, 0.1],
    }
    assert totals == {"CNY": Decimal("10.4"), "USD": Decimal("5")}
    assert str(totals["CNY"]) == "10.4000"  # Decimal all the way, never a float sum
    assert accepted == {"amazon": 1, "jd": 3, "taobao": 1}


def test_stock_series_starts_from_the_level_before_the_window() -> None:
    axis = [100, 101, 102]
    rows = [
        ("A", 0, 50),  # everything before the window: the starting level
        ("A", 101, -3),
        ("A", 102, -2),
        ("B", 100, 10),
        ("Z", 101, 99),  # not asked for: ignored
    ]
    assert stock_series(rows, axis, 1, ["A", "B", "C"]) == {
        "A": [50, 47, 45],
        "B": [10, 10, 10],
        "C": [0, 0, 0],
    }


def test_holds_by_reason_counts_most_frequent_first() -> None:
    rows = [{"reason": "unpaid"}, {"reason": "stock"}, {"reason": "unpaid"}, {"reason": ""}]
    assert list(holds_by_reason(rows).items()) == [("unpaid", 2), ("stock", 1), ("unspecified", 1)]


TP = namedtuple("TP", "topic partition")
Meta = namedtuple("Meta", "offset metadata")


def test_lag_sums_partitions_and_counts_uncommitted_from_zero() -> None:
    ends = {TP("oms.raw.jd", 0): 10, TP("oms.raw.jd", 1): 5, TP("oms.raw.own", 0): 7}
    committed = {TP("oms.raw.jd", 0): Meta(8, ""), TP("oms.raw.jd", 1): Meta(-1, "")}
    assert lag_by_topic(ends, committed) == {"oms.raw.jd": 2 + 5, "oms.raw.own": 7}
    assert lag_by_topic({TP("t", 0): 3}, {TP("t", 0): Meta(9, "")}) == {"t": 0}  # never negative


def test_lag_history_one_sample_per_second_and_bounded() -> None:
    history = LagHistory(limit=3)
    history.add(1, {"a": 5})
    history.add(1, {"a": 4})  # same second: replaced, not appended
    history.add(2, {"a": 3, "b": 1})
    history.add(3, {"a": 0})
    history.add(4, {"a": 0})
    assert [t for t, _ in history.samples] == [2, 3, 4]
    assert history.series(3) == {"t": [3, 4], "series": {"a": [0, 0]}}
    assert history.series(0)["series"]["b"] == [1, 0, 0]


def test_dashboard_url_is_loopback() -> None:
    assert dash.dashboard_url(16070) == "http://127.0.0.1:16070/"
    assert dash.dashboard_argv(1234)[-3:] == ["ops.dashboard", "--port", "1234"]


def test_static_files_are_present_and_local() -> None:
    page = (dash.STATIC_DIR / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(sources) == sorted(f"/static/{n}" for n in (*dash.STATIC_FILES, dash.PLOTLY_FILE))
    for name in dash.STATIC_FILES:
        assert (dash.STATIC_DIR / name).is_file()
    assert dash.plotly_js().stat().st_size > 1_000_000  # the real bundle, from the wheel
    for name in ("index.html", *dash.STATIC_FILES):  # nothing from outside loopback
        text = (dash.STATIC_DIR / name).read_text(encoding="utf-8")
        assert not re.search(r"https?://|//cdn", text), name


# ----------------------------------------------------------------------------- SQL on chdb


def test_dashboard_queries_run_on_current_clickhouse(db: ChdbClient) -> None:  # noqa: F811
    params = {"since": 0, "step": 1, "limit": 5, "skus": ("A", "B")}
    for name, sql in dash.QUERIES.items():
        assert db.execute(sql, params) == [], name


# ----------------------------------------------------------------------------- Grafana


def _grafana() -> dict[str, Any]:
    return json.loads(GRAFANA.read_text(encoding="utf-8"))


def _provisioned() -> tuple[str, str]:
    text = DATASOURCE.read_text(encoding="utf-8")
    uid = re.search(r"^\s+uid:\s*(\S+)", text, re.M)
    kind = re.search(r"^\s+type:\s*(\S+)", text, re.M)
    assert uid and kind, f"no uid/type in {DATASOURCE}"
    return uid.group(1), kind.group(1)


def _known_relations() -> set[str]:
    names: set[str] = set()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        names |= set(
            re.findall(
                r"CREATE\s+(?:TABLE|VIEW)\s+IF\s+NOT\s+EXISTS\s+\{db\}\.(\w+)", path.read_text()
            )
        )
    return names


def _relations(sql: str) -> set[str]:
    """Names after FROM / JOIN that are not a subquery."""
    return set(re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)", sql, re.I))


def _panels() -> list[dict[str, Any]]:
    panels = _grafana()["panels"]
    assert len(panels) >= 5
    return panels


def test_grafana_dashboard_is_valid_and_has_the_dashboard_panels() -> None:
    board = _grafana()
    assert board["uid"] and board["title"]
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for needle in ("orders per second", "gmv", "hot skus", "held", "lag"):
        assert needle in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_panels_use_the_provisioned_datasource() -> None:
    uid, kind = _provisioned()
    for panel in _panels():
        assert panel["datasource"] == {"type": kind, "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": kind, "uid": uid}, panel["title"]


def test_grafana_queries_name_only_migrated_tables_and_views() -> None:
    known = _known_relations()
    assert {"order_status", "order_latest", "stock_movements"} <= known
    for panel in _panels():
        for target in panel["targets"]:
            names = _relations(target["rawSql"])
            assert names, f"{panel['title']}: no table named"
            assert names <= known, f"{panel['title']}: unknown {sorted(names - known)}"


def _expand_macros(sql: str) -> str:
    """The ClickHouse plugin's macros, as it expands them, for a 15 min range at 10 s."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        r"\1 >= toDateTime(1700000000) AND \1 <= toDateTime(1700000900)",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 10 second)", sql
    )
    sql = sql.replace("$__interval_s", "10")
    sql = sql.replace("$__fromTime", "toDateTime(1700000000)")
    return sql.replace("$__toTime", "toDateTime(1700000900)")


def test_grafana_queries_run_on_current_clickhouse(db: ChdbClient) -> None:  # noqa: F811
    for panel in _panels():
        for target in panel["targets"]:
            sql = _expand_macros(target["rawSql"])
            assert "$__" not in sql, f"{panel['title']}: unexpanded macro"
            db.execute(sql)  # raises on any unknown column, table or function


def test_grafana_dashboard_path_is_the_provisioned_folder() -> None:
    provider = (REPO_ROOT / "docker/grafana/provisioning/dashboards/oms.yaml").read_text()
    assert "/var/lib/grafana/dashboards" in provider
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "grafana/dashboards" in compose
    assert Path(GRAFANA).suffix == ".json"


# ----------------------------------------------------------------------------- access


class _Verifier:
    """Tokens from a dict; sessions in a dict, as the token store keeps them (by a hash)."""

    def __init__(self) -> None:
        from core.access import Principal

        self.tokens = {
            "tok-finance": Principal("fin", "finance", token_id="t-fin"),
            "tok-admin": Principal("root", "admin", token_id="t-root"),
            "tok-cs": Principal("amy", "customer_service", token_id="t-amy"),
            "tok-finance-scoped": Principal("fin2", "finance", frozenset({"own-web"})),
        }
        self.sessions: dict[str, Any] = {}

    async def verify(self, token: str, client: str = "") -> Any:
        return self.tokens.get(token)

    async def open_session(self, principal: Any) -> tuple[str, int]:
        session_id = f"session-{len(self.sessions)}-{'x' * 40}"
        self.sessions[session_id] = principal
        return session_id, 3600

    async def session(self, session_id: str) -> Any:
        return self.sessions.get(session_id)


@pytest.fixture
def verifier() -> _Verifier:
    return _Verifier()


@pytest.fixture
async def dash_client(verifier: _Verifier) -> Any:
    from aiohttp.test_utils import TestClient, TestServer

    from core.settings import Settings

    client = TestClient(TestServer(dash.create_app(Settings(), verifier=verifier)))
    await client.start_server()
    yield client
    await client.close()


async def test_data_needs_a_token_the_shell_and_health_do_not(dash_client: Any) -> None:
    """The shell (HTML, script, plotly.js) holds no data; every figure is under /api/."""
    for path in ("/health", "/", "/static/dashboard.js"):
        assert (await dash_client.get(path)).status == 200, path
    for path in ("/api/dashboard", "/api/session"):
        resp = await dash_client.get(path)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer", path
        assert "?token=" in (await resp.json())["error"]
    bad = await dash_client.get("/api/session", headers={"Authorization": "Bearer bad"})
    assert bad.status == 401


@pytest.mark.parametrize(
    ("token", "status", "needle"),
    [
        ("tok-finance", 200, ""),
        ("tok-admin", 200, ""),
        ("tok-cs", 403, "lacks permission read_dashboard"),
        ("tok-finance-scoped", 403, "every shop is out of fin2's scope"),
    ],
)
async def test_dashboard_needs_read_dashboard_for_every_shop(
    dash_client: Any, token: str, status: int, needle: str
) -> None:
    resp = await dash_client.get("/api/session", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == status
    if needle:
        assert needle in (await resp.json())["error"]
        refused = await dash_client.get(f"/?token={token}", allow_redirects=False)
        assert refused.status == 403 and "Set-Cookie" not in refused.headers


async def test_token_in_the_url_becomes_a_session_cookie_never_the_token(
    dash_client: Any, verifier: _Verifier
) -> None:
    resp = await dash_client.get("/?since=5&token=tok-finance", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/?since=5"
    cookie = resp.headers["Set-Cookie"]
    [session_id] = verifier.sessions
    assert f"{dash.COOKIE}={session_id}" in cookie and "tok-finance" not in cookie
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/api/", "Max-Age=3600"):
        assert attribute in cookie, attribute
    assert "Secure" not in cookie  # plain HTTP on loopback; set when served over TLS
    who = await dash_client.get("/api/session")  # the cookie jar sends the session back
    assert who.status == 200 and (await who.json())["user"] == "fin"
    verifier.sessions.clear()  # the session ended (revoked token, expiry)
    assert (await dash_client.get("/api/session")).status == 401


async def raw_get(port: int, target: str) -> tuple[int, dict[str, str]]:
    """One request with the target exactly as given (an HTTP client would normalise it)."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.read()).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    writer.close()
    headers = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), headers


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("//evil.example/?token=tok-finance", "/"),
        ("////evil.example/?token=tok-finance", "/"),
        ("/\\evil.example/?token=tok-finance", "/"),
        ("/%5Cevil.example/?token=tok-finance", "/"),
        ("/%2F%2Fevil.example/?token=tok-finance", "/"),
        ("/%0d%0aSet-Cookie:%20x=1?token=tok-finance", "/"),
        ("/?next=//evil.example&token=tok-finance", "/?next=//evil.example"),
        (
            '/a"><script>alert(1)</script>?token=tok-finance',
            "/a%22%3E%3Cscript%3Ealert(1)%3C/script%3E",
        ),
        ("/api/dashboard?since=1&token=tok-finance&a=b", "/api/dashboard?since=1&a=b"),
    ],
)
async def test_login_redirect_stays_on_the_dashboard(
    dash_client: Any, target: str, location: str
) -> None:
    status, headers = await raw_get(dash_client.port, target)
    assert status == 303
    assert headers["Location"] == location
    assert not headers["Location"].startswith(("//", "/\\")) and "<" not in headers["Location"]
    assert headers["Set-Cookie"].startswith(f"{dash.COOKIE}=session-")  # one cookie: ours


def test_without_token_keeps_the_rest_of_the_query() -> None:
    from yarl import URL

    assert dash.without_token(URL("/?token=x")) == "/"
    assert (
        dash.without_token(URL("/api/dashboard?since=1&token=x&a=b"))
        == "/api/dashboard?since=1&a=b"
    )
    assert dash.without_token(URL.build(path="//evil.example/", query={"token": "x"})) == "/"


async def test_the_holds_figure_is_computed_once_for_every_open_page() -> None:
    import asyncio

    calls = 0

    async def compute() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return {"total": calls}

    shared = dash.SharedFigure(compute, ttl_s=60.0)
    pages = await asyncio.gather(*(shared.get() for _ in range(20)))
    assert calls == 1 and all(page == {"total": 1} for page in pages)
    expired = dash.SharedFigure(compute, ttl_s=0.0)
    await expired.get()
    await expired.get()
    assert calls == 3
