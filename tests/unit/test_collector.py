"""The collector settings of long-running processes (core/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from core import collector


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_start_up_objects_are_frozen_and_young_collections_are_rarer(restored: None) -> None:
    survivor = [object() for _ in range(100)]
    collector.tune_collector()
    assert gc.get_freeze_count() >= len(survivor)
    assert gc.get_threshold() == (collector.YOUNG, collector.MIDDLE, collector.OLD)
    assert collector.YOUNG > 700  # CPython's default, which this exists to raise


def test_cycles_made_after_start_up_are_still_collected(restored: None) -> None:
    import weakref

    collector.tune_collector()

    class Node:
        other: object

    a, b = Node(), Node()
    a.other, b.other = b, a
    watch = weakref.ref(a)
    del a, b
    gc.collect()
    assert watch() is None
