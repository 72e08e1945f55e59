"""ops/dashboard.py ?since=: a digit string longer than any unix time is refused (400) before
int() sees it; past 4,300 digits int() raised a ValueError the page answered with a 500."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.access import Principal
from core.settings import Settings
from ops import dashboard as dash
from ops.dashboard import BadParameter, create_app, parse_since

NOW = 1_700_000_000.7
TOKEN = "dashboard-token-for-unit-tests"


class Verifier:
    async def verify(self, token: str, client: str = "") -> Principal | None:
        return Principal("root", "admin") if token == TOKEN else None


@pytest.mark.parametrize("raw", ["1" * 5000, "0" * 13, f" {'9' * 13} "])
def test_since_longer_than_a_unix_time_is_refused_unread(raw: str) -> None:
    with pytest.raises(BadParameter, match=f"at most {dash.MAX_SINCE_DIGITS} digits"):
        parse_since(raw, NOW)


def test_since_of_twelve_digits_is_still_read() -> None:
    with pytest.raises(BadParameter, match="in the future"):
        parse_since("9" * dash.MAX_SINCE_DIGITS, NOW)
    assert parse_since("00" + str(int(NOW)), NOW) == int(NOW)


async def test_the_api_answers_an_oversized_since_with_400() -> None:
    app = create_app(Settings(), verifier=Verifier())
    client = TestClient(TestServer(app), headers={"Authorization": f"Bearer {TOKEN}"})
    await client.start_server()
    try:
        resp = await client.get(f"/api/dashboard?since={'1' * 5000}")
        assert resp.status == 400
        body = await resp.json()
        assert "at most 12 digits" in body["error"] and "1111" not in body["error"]
    finally:
        await client.close()
