"""The shipped part of the ledger is handed to verify and snapshots as a ShippedLedger
(state/ledger.py), implemented over ClickHouse by analytics/ledger.py: anything else fails at
the door, by name, before Redis is touched (a bare ClickHouse client once slipped through)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from analytics.ledger import ClickHouseLedger
from state.keys import Keys
from state.ledger import ShippedLedger
from state.snapshot import SnapshotRow, apply_snapshot
from state.verify import verify


class NoRedis:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis touched: {name}")


class BareClient:
    def execute(self, query: str, params: Any = None) -> list[Any]:
        return []


def test_the_clickhouse_ledger_is_a_shipped_ledger() -> None:
    assert isinstance(ClickHouseLedger(BareClient()), ShippedLedger)
    assert not isinstance(BareClient(), ShippedLedger)


def test_verify_refuses_a_bare_client() -> None:
    with pytest.raises(TypeError, match="ShippedLedger"):
        verify(NoRedis(), Keys("t"), BareClient())  # type: ignore[arg-type]


def test_a_snapshot_refuses_a_bare_client() -> None:
    with pytest.raises(TypeError, match="ShippedLedger"):
        apply_snapshot(
            NoRedis(),  # type: ignore[arg-type]
            Keys("t"),
            "W1",
            [SnapshotRow("SKU1", 1)],
            datetime(2026, 12, 1, tzinfo=UTC),
            archive=BareClient(),  # type: ignore[arg-type]
        )
