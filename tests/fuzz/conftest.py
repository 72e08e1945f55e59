"""The fuzz suite reports how many bad inputs it tried (tests/fuzz/payloads.py Tally)."""

from __future__ import annotations

import pytest

from tests.fuzz.payloads import register_tally


def pytest_configure(config: pytest.Config) -> None:
    register_tally(config)
