"""A consumer's fetch wait (core/kafka.py FetchPacing): short while records flow, long once
idle, short again at the first record."""

from __future__ import annotations

from types import SimpleNamespace

from core.kafka import FetchPacing
from core.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_grows_only_after_the_idle_time_and_drops_at_the_first_record() -> None:
    clock = Clock()
    pacing = FetchPacing(50, 500, idle_after_s=2.0, clock=clock)
    assert pacing.wait_ms(False) == 50  # just started: not idle yet
    clock.now += 1.9
    assert pacing.wait_ms(False) == 50
    clock.now += 0.2
    assert pacing.wait_ms(False) == 500  # 2.1 s without a record
    assert pacing.wait_ms(True) == 50  # a record: short at once
    clock.now += 1.0
    assert pacing.wait_ms(False) == 50


def test_pace_sets_the_fetchers_wait_and_ignores_a_consumer_without_one() -> None:
    clock = Clock()
    pacing = FetchPacing(50, 500, idle_after_s=2.0, clock=clock)
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=50))
    clock.now += 5
    pacing.pace(consumer, False)
    assert consumer._fetcher._fetch_max_wait_ms == 500
    pacing.pace(consumer, True)
    assert consumer._fetcher._fetch_max_wait_ms == 50
    pacing.pace(SimpleNamespace(), False)  # not started yet: nothing to set, no error


def test_the_idle_wait_is_never_shorter_than_the_busy_one() -> None:
    settings = Settings(kafka_fetch_max_wait_ms=800, kafka_idle_fetch_max_wait_ms=100)
    pacing = FetchPacing.of(settings)
    assert (pacing.busy_ms, pacing.idle_ms) == (800, 800)


def test_aiokafka_still_reads_the_wait_from_its_fetcher() -> None:
    """The private attribute FetchPacing sets is the one aiokafka builds requests from."""
    import inspect

    from aiokafka.consumer.fetcher import Fetcher

    assert "self._fetch_max_wait_ms" in inspect.getsource(Fetcher._get_actions_per_node)
