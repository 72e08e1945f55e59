"""The pure parts of ./oms chaos: when a fault is due, the ok rules of a scenario and of a run,
the burst's padding and proof, the stack and namespace settings."""

from __future__ import annotations

import orjson
import pytest

from core.settings import Settings
from ops import chaos
from ops.chaos import Fault, ScenarioFigures
from ops.loadgen import BurstMessage


def exact_counts(ok: bool = True) -> dict:
    return {
        "orders_in_events": chaos.exact_count(100, 100),
        "dlq": chaos.exact_count(1, 1 if ok else 2),
        "event_rows_raw": 512,  # information only: never part of the rule
    }


def figures(**changes) -> ScenarioFigures:
    fault = Fault("kill9", "worker-w1", at_s=1.2, at_fraction=0.41, proof={"pid_gone": True})
    base = dict(
        name="worker_kill9_restart",
        workers=2,
        orders_sent=100,
        inputs_sent=103,
        duplicates=2,
        malformed=1,
        faults=[fault],
        lost_orders=0,
        double_reservations=0,
        duplicate_commands=0,
        oversold_units=0,
        verify_ok=True,
        exact=exact_counts(),
        seconds=12.34,
    )
    base.update(changes)
    return ScenarioFigures(**base)


def test_a_clean_scenario_is_ok_with_the_issue_keys_first() -> None:
    result = chaos.assemble_scenario(figures())
    assert result["ok"] and result["violations"] == []
    assert list(result)[:11] == [
        "name", "orders_sent", "inputs_sent", "faults", "lost_orders", "double_reservations",
        "duplicate_commands", "clickhouse_exact", "verify_ok", "ok", "seconds",
    ]  # fmt: skip
    assert result["faults"][0] == {
        "kind": "kill9",
        "target": "worker-w1",
        "at_s": 1.2,
        "at_fraction": 0.41,
        "proof": {"pid_gone": True},
    }
    assert result["seconds"] == 12.3 and result["clickhouse_exact"] is True


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lost_orders": 1}, "lost_orders = 1"),
        ({"double_reservations": 2}, "double_reservations = 2"),
        ({"duplicate_commands": 1}, "duplicate_commands = 1"),
        ({"oversold_units": 3}, "oversold_units = 3"),
        ({"verify_ok": False}, "state.verify"),
        ({"exact": exact_counts(ok=False)}, "not exact: dlq"),
        ({"faults": []}, "no fault was injected"),
        (
            {"faults": [Fault("restart", "redis", proof={"run_id_changed": False})]},
            "not proven: run_id_changed",
        ),
    ],
)
def test_any_figure_off_makes_the_scenario_not_ok(change: dict, words: str) -> None:
    result = chaos.assemble_scenario(figures(**change))
    assert not result["ok"]
    assert any(words in v for v in result["violations"]), result["violations"]


def test_a_scenario_that_could_not_finish_is_not_ok_and_says_why() -> None:
    result = chaos.failed_scenario("redis_restart", "not every input was accounted for", 3.0, [])
    assert not result["ok"] and result["clickhouse_exact"] is False
    assert result["violations"] == ["could not finish: not every input was accounted for"]


def test_the_run_is_ok_only_when_every_scenario_is() -> None:
    good, bad = chaos.assemble_scenario(figures()), chaos.assemble_scenario(figures(lost_orders=1))
    assert chaos.assemble_run([good, good], {})["ok"]
    assert not chaos.assemble_run([good, bad], {})["ok"]
    assert not chaos.assemble_run([], {})["ok"]
    assert list(chaos.problems(chaos.assemble_run([bad], {}))) == [
        "worker_kill9_restart: lost_orders = 1 (must be 0)"
    ]


def test_the_fault_is_due_at_forty_percent_and_mid_flood_means_thirty_to_sixty() -> None:
    assert not chaos.fault_due(39, 100) and chaos.fault_due(40, 100)
    assert not chaos.fault_due(0, 0)
    assert chaos.in_window(0.3) and chaos.in_window(0.6) and chaos.in_window(0.42)
    assert not chaos.in_window(0.29) and not chaos.in_window(0.61) and not chaos.in_window(None)


def test_batches_are_small_enough_to_see_the_flood_move() -> None:
    assert chaos.chaos_batch_size(1500, 500) == 50
    assert chaos.chaos_batch_size(100_000, 500) == 500  # never above the configured size
    assert chaos.chaos_batch_size(100, 500) == chaos.MIN_BATCH


def message(channel: str, kind: str, value: bytes) -> BurstMessage:
    return BurstMessage(channel, b"k1", value, [], kind)


def test_padding_adds_an_ignored_field_to_every_tolerant_channel_only() -> None:
    padded = chaos.pad_message(message("jd", "order", b'{"orderId": "k1"}'), size=1000)
    assert orjson.loads(padded.value) == {"orderId": "k1", chaos.PADDING_FIELD: "x" * 1000}
    again = chaos.pad_message(message("jd", "duplicate", b'{"orderId": "k1"}'), size=1000)
    assert again.value == padded.value  # a re-push stays byte-identical to its original
    own = message("own", "order", b'{"external_id": "k1"}')
    assert chaos.pad_message(own) is own  # the canonical schema forbids extra fields
    broken = message("jd", "malformed", b'{"orderId": ')
    assert chaos.pad_message(broken) is broken


def test_the_burst_proof_needs_survivors_a_burst_over_memory_and_bounded_growth() -> None:
    mb = 2**20
    room = chaos.BURST_HEADROOM_BYTES  # per worker
    assert all(chaos.burst_proof(300 * mb, 250 * mb, 2 * room, True, 2).values())
    assert not chaos.burst_proof(300 * mb, 250 * mb, 20 * mb, False, 2)["workers_survived"]
    proof = chaos.burst_proof(200 * mb, 250 * mb, 20 * mb, True, 2)
    assert not proof["burst_exceeds_worker_memory"]
    assert not chaos.burst_proof(300 * mb, 250 * mb, 2 * room + 1, True, 2)["rss_growth_bounded"]
    # A burst no bigger than twice what the workers may hold proves nothing.
    assert not chaos.burst_proof(4 * room - 1, 50 * mb, 0, True, 2)["burst_exceeds_headroom"]


def test_the_burst_padding_makes_a_big_enough_burst() -> None:
    assert chaos.burst_padding(1000) * 1000 >= chaos.BURST_MIN_BYTES
    assert chaos.burst_padding(5000) == chaos.BURST_PADDING_BYTES
    assert chaos.burst_padding(10) == chaos.BURST_MAX_PADDING_BYTES


def test_the_chaos_stack_and_each_scenario_have_a_namespace_of_their_own(tmp_path) -> None:
    base = Settings(home=tmp_path, _env_file=None)
    own = chaos.chaos_settings(base)
    assert own.home == (tmp_path / "chaos").resolve()
    assert own.kafka_bootstrap == "127.0.0.1:19392" and own.clickhouse_port == 19300
    assert own.redis_url.startswith("redis://127.0.0.1:16679")
    ports = {own.kafka_bootstrap, own.redis_url, own.clickhouse_port, own.clickhouse_http_port}
    assert not ports & {"127.0.0.1:19192", "127.0.0.1:19292", 19100, 19200, 18223, 18323}
    one = chaos.scenario_settings(own, "kill9", orders=1500)
    assert (one.topic_prefix, one.app_id, one.redis_prefix, one.clickhouse_database) == (
        "chaos-kill9",
        "oms-chaos-kill9",
        "chaos-kill9",
        "oms_chaos_kill9",
    )
    assert one.home == own.home and one.batch_size == 50


def test_every_scenario_of_the_issue_is_there() -> None:
    assert chaos.scenario_names() == [
        "worker_kill9_restart",
        "worker_lost_rebalance",
        "redis_restart",
        "redis_kill9",
        "clickhouse_outage",
        "burst_over_memory",
    ]
    assert {s.workers for s in chaos.SCENARIOS.values()} == {2, 3}
    assert len({s.tag for s in chaos.SCENARIOS.values()}) == 6
