"""The pure parts of `./oms bench`: percentiles, rates, RSS parsing and growth, the token bucket,
the mapping of fulfilment commands to the orders sent, duplicate commands, double reservations
read from the ledger, and the JSON result."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from ops.bench import (
    JSON_KEYS,
    Measured,
    Movement,
    SeenCommand,
    TokenBucket,
    assemble_result,
    double_reservations,
    duplicate_command_orders,
    every_message_counted,
    every_partition_assigned,
    machine_info,
    movement_from_id,
    order_key,
    paced_size,
    parse_command,
    parse_proc_status,
    per_second,
    percentile,
    phase_latencies,
    progress_time,
    ratio,
    rss_growth_pct,
)
from ops.loadgen import SHOP_HEADERS, generate_burst
from streams.channels import AdapterContext, adapt

# --------------------------------------------------------------------------- figures


def test_percentile_is_nearest_rank_and_a_measured_value() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0, 1.0, 3.0], 50) == 3.0  # unsorted input
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_rates_and_ratio_never_divide_by_zero() -> None:
    assert per_second(1000, 2.0) == 500.0
    assert per_second(1000, 0.0) is None
    assert per_second(1000, None) is None
    assert ratio(500.0, 2000.0) == 0.25
    assert ratio(500.0, 0.0) is None
    assert ratio(None, 100.0) is None


PROC_STATUS = """Name:\tpython
VmPeak:\t 1000000 kB
VmHWM:\t  204800 kB
VmRSS:\t  102400 kB
Threads:\t8
VmSwap:\t       0 kB
"""


def test_parse_proc_status_reads_vm_figures_in_bytes() -> None:
    figures = parse_proc_status(PROC_STATUS)
    assert figures["VmRSS"] == 100 * 1024 * 1024
    assert figures["VmHWM"] == 200 * 1024 * 1024
    assert "Threads" not in figures
    assert parse_proc_status("") == {}


def test_rss_growth_from_a_start_time_to_the_end_of_the_flood() -> None:
    samples = [(0.0, 50), (1.0, 100), (2.0, 110), (3.0, 120), (4.0, 500)]
    assert rss_growth_pct(samples, 1.0, 3.0) == pytest.approx(20.0)
    assert rss_growth_pct(samples, 0.5, 3.5) == pytest.approx(20.0)  # first/last inside
    assert rss_growth_pct(samples, None, 3.0) is None
    assert rss_growth_pct(samples, 3.0, 3.5) is None  # one sample only
    progress = [(0.0, 0), (1.0, 5), (2.0, 10), (3.0, 80)]
    assert progress_time(progress, 10) == 2.0
    assert progress_time(progress, 81) is None


def test_paced_size_is_a_quarter_at_most_twenty_seconds_and_a_few_hundred_at_least() -> None:
    assert paced_size(200_000, 10_000.0) == 50_000  # a quarter of the flood
    assert paced_size(200_000, 1_000.0) == 16_000  # 0.8 * rate * 20 s
    assert paced_size(1_000, 10_000.0) == 300  # at least a few hundred
    assert paced_size(1_000, None) == 300


def test_token_bucket_paces_to_its_rate_with_a_short_burst() -> None:
    bucket = TokenBucket(1000.0, burst_s=0.01)  # 10 tokens
    now, waited = 0.0, 0.0
    for _ in range(10):
        assert bucket.take(now) == 0.0  # the burst goes at once
    for _ in range(1000):
        wait = bucket.take(now)
        now += wait  # the sender sleeps exactly as told
        waited += wait
    assert waited == pytest.approx(1.0, rel=0.02)  # 1000 more messages at 1000/s
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_token_bucket_oversleeping_does_not_lower_the_rate() -> None:
    bucket = TokenBucket(100.0, burst_s=0.1)  # 10 tokens
    now, sent = 0.0, 0
    while now < 10.0:
        wait = bucket.take(now)
        now += wait * 1.5 if wait else 0.0  # the timer always sleeps 50% too long
        sent += 1
    assert sent == pytest.approx(1000, rel=0.05)


# --------------------------------------------------------------------------- commands


def command(**fields: Any) -> SeenCommand:
    base: dict[str, Any] = {
        "command_id": "C1",
        "kind": "outbound",
        "attempt": 1,
        "order_id": "O1",
        "channel": "jd",
        "shop_id": "jd-shop",
        "external_id": "E1",
        "warehouse": "WH-SH",
        "merged_order_ids": (),
        "ts_ms": 10_500,
    }
    return SeenCommand(**{**base, **fields})


def test_parse_command_reads_the_fulfilment_command_json() -> None:
    value = orjson.dumps(
        {
            "command_id": "Cabc",
            "kind": "outbound",
            "order_id": "O9",
            "channel": "shopify",
            "shop_id": "geek-digital.myshopify.com",
            "external_id": "5123",
            "warehouse": "WH-GZ",
            "attempt": 2,
            "merged_order_ids": ["O9", "O8"],
            "ship_to": {"name": "never read"},
        }
    )
    c = parse_command(value, 1234)
    assert c == SeenCommand(
        "Cabc", "outbound", 2, "O9", "shopify", "geek-digital.myshopify.com", "5123", "WH-GZ",
        ("O9", "O8"), 1234,
    )  # fmt: skip
    assert not c.first_outbound
    assert parse_command(b"{broken", 1) is None
    assert parse_command(b'{"kind": "outbound"}', 1) is None


def test_the_raw_key_of_every_channel_is_the_commands_external_id() -> None:
    """A command names its order by (channel, external_id); the bench knows the raw Kafka key
    it sent. The adapters must read the external id from the keyed field for every channel
    (Shopify's numeric id, Amazon's AmazonOrderId, ...)."""
    plan = generate_burst(300, run_id="bench-key-test", malformed_rate=0.0, adapt_check=False)
    seen = set()
    for m in plan.messages:
        if m.kind != "order":
            continue
        order = adapt(m.channel, m.value, AdapterContext(shop_id=SHOP_HEADERS.get(m.channel, "")))
        assert order_key(m) == (order.channel.value, order.external_id)
        seen.add(m.channel)
    assert seen == {"taobao", "jd", "douyin", "shopify", "amazon", "own"}


def never(_channel: str, _shop: str) -> bool:
    return False


def test_latency_is_the_newest_first_outbound_minus_the_send() -> None:
    sends = {("jd", "E1"): 10.0, ("jd", "E2"): 11.0, ("own", "W1"): 10.0}
    commands = [
        command(command_id="C1", ts_ms=10_200),
        command(command_id="C2", warehouse="WH-BJ", ts_ms=10_300),  # split: the last parcel
        command(command_id="C3", external_id="E2", order_id="O2", ts_ms=11_050),
        command(command_id="C4", external_id="E2", order_id="O2", attempt=2, ts_ms=19_000),
        command(command_id="C5", external_id="E2", kind="cancel", ts_ms=19_500),
        command(command_id="C6", external_id="OTHER", ts_ms=99_000),  # not of this phase
        command(command_id="C7", channel="own", shop_id="own-web", external_id="W1", ts_ms=15_000),
    ]
    latencies, last = phase_latencies(commands, sends, never)
    assert latencies == {
        ("jd", "E1"): pytest.approx(300.0),
        ("jd", "E2"): pytest.approx(50.0),
        ("own", "W1"): pytest.approx(5000.0),
    }
    assert last == 15.0
    held_back = lambda channel, shop: (channel, shop) == ("own", "own-web")  # noqa: E731
    latencies, last = phase_latencies(commands, sends, held_back)
    assert set(latencies) == {("jd", "E1"), ("jd", "E2")}  # the merge window is left out
    assert last == 11.05


def test_duplicate_commands_per_order_and_warehouse() -> None:
    ok = [
        command(command_id="C1"),
        command(command_id="C2", warehouse="WH-BJ"),  # a split order: one per warehouse
        command(command_id="C3", order_id="O2", attempt=2),  # a re-send after a short pick
        command(command_id="C4", order_id="O2"),
        command(command_id="C5", order_id="O3", kind="cancel"),
        command(command_id="C6", order_id="O3"),
    ]
    assert duplicate_command_orders(ok) == set()
    twice = [*ok, command(command_id="C9", order_id="O2")]  # O2 again from WH-SH
    assert duplicate_command_orders(twice) == {"O2"}


def test_a_merged_parcel_counts_for_every_order_in_it() -> None:
    merged = command(command_id="M1", order_id="O5", merged_order_ids=("O5", "O6", "O7"))
    assert duplicate_command_orders([merged]) == set()
    alone = command(command_id="C6", order_id="O6")  # O6 also shipped on its own
    assert duplicate_command_orders([merged, alone]) == {"O6"}


# --------------------------------------------------------------------------- ledger


def move(entry: tuple[int, int], kind: str, ref: str, wh: str, reserved: int) -> Movement:
    return Movement("SKU-A", entry, kind, ref, wh, reserved)


def test_one_reserve_call_over_several_warehouses_is_one_reservation() -> None:
    split = [
        move((100, 3), "reserve", "O1", "WH-SH", 2),
        move((100, 4), "reserve", "O1", "WH-BJ", 1),
    ]
    assert double_reservations(split) == set()


def test_a_second_reserve_while_holding_is_a_double_reservation() -> None:
    again_same_wh = [
        move((100, 0), "reserve", "O1", "WH-SH", 1),
        move((250, 0), "reserve", "O1", "WH-SH", 1),
    ]
    assert double_reservations(again_same_wh) == {("O1", "SKU-A")}
    again_other_wh = [
        move((100, 0), "reserve", "O1", "WH-SH", 1),
        move((100, 5), "reserve", "O1", "WH-BJ", 1),
    ]
    assert double_reservations(again_other_wh) == {("O1", "SKU-A")}  # not consecutive: 2 calls
    one_call_twice = [
        move((100, 0), "reserve", "O1", "WH-SH", 1),
        move((100, 1), "reserve", "O1", "WH-SH", 1),
    ]
    assert double_reservations(one_call_twice) == {("O1", "SKU-A")}


def test_reserving_again_after_an_undo_or_release_is_not_double() -> None:
    saga = [
        move((100, 0), "reserve", "O1", "WH-SH", 2),
        move((101, 0), "undo", "O1", "WH-SH", -2),  # another sku of the order lost a race
        move((102, 0), "reserve", "O1", "WH-BJ", 2),
    ]
    assert double_reservations(saga) == set()
    other_orders = [
        move((100, 0), "reserve", "O1", "WH-SH", 1),
        move((101, 0), "reserve", "O2", "WH-SH", 1),
    ]
    assert double_reservations(other_orders) == set()


def test_clickhouse_and_redis_overlap_is_counted_once() -> None:
    shipped = movement_from_id("SKU-A/100-0", "SKU-A", "reserve", "O1", "WH-SH", 1)
    assert shipped == move((100, 0), "reserve", "O1", "WH-SH", 1)
    still_in_redis = move((100, 0), "reserve", "O1", "WH-SH", 1)  # the cursor entry is kept
    assert double_reservations([shipped, still_in_redis]) == set()
    slashed = movement_from_id("A/B/7-2", "A/B", "load", "op", "WH-SH", 0)
    assert slashed.entry == (7, 2)


# --------------------------------------------------------------------------- result


def measured(**changes: Any) -> Measured:
    base = Measured(
        orders=1000,
        inputs=1030,
        duplicates=20,
        malformed=10,
        workers=2,
        partitions=8,
        seconds=2.0,
        flood_latencies=[float(v) for v in range(1, 101)],
        paced_latencies=[10.0, 20.0, 30.0],
        paced_orders=300,
        paced_rate=412.0,
        ceiling_per_s=2060.0,
        ceiling_messages=1500,
        peak_rss_bytes=150 * 1024 * 1024,
        rss_growth_pct=1.234,
        oversold_units=0,
        verify_ok=True,
        lost_orders=0,
        double_reservations=0,
        duplicate_commands=0,
        dlq=16,
        expected_dlq=16,
        warmup_orders=200,
        merge_window_orders=40,
        commands=1200,
        machine={"cpus": 2, "model": "x", "ram_gb": 1.0},
    )
    return replace(base, **changes)


def test_result_has_every_key_and_the_figures() -> None:
    result = assemble_result(measured())
    assert [k for k in JSON_KEYS if k not in result] == []
    assert result["orders_per_s"] == 500.0
    assert result["inputs_per_s"] == 515.0
    assert result["ratio"] == 0.25  # inputs/s over the ceiling: the same messages
    assert result["p50_ms"] == 20.0 and result["p99_ms"] == 30.0  # the paced phase
    assert result["flood_p50_ms"] == 50.0 and result["flood_p99_ms"] == 99.0
    assert result["peak_rss_mb"] == 150.0
    assert result["rss_growth_pct"] == 1.23
    assert result["paced_send_s"] is None and result["paced_seconds"] is None
    paced = assemble_result(measured(paced_send_s=0.754, paced_seconds=2.5))
    assert (paced["paced_send_s"], paced["paced_seconds"]) == (0.75, 2.5)
    assert result["ok"] is True and result["violations"] == []
    orjson.dumps(result)  # one JSON object


def test_every_correctness_figure_is_a_violation_and_speed_never_is() -> None:
    slow = assemble_result(measured(seconds=10_000.0, ceiling_per_s=None, paced_latencies=[]))
    assert slow["ok"] and slow["ratio"] is None and slow["p99_ms"] is None
    for change in (
        {"oversold_units": 3},
        {"lost_orders": 1},
        {"double_reservations": 1},
        {"duplicate_commands": 2},
        {"verify_ok": False},
        {"dlq": 15},
    ):
        result = assemble_result(measured(**change))
        assert not result["ok"], change
        assert len(result["violations"]) == 1


def test_machine_info_from_proc_text() -> None:
    info = machine_info(
        "processor: 0\nmodel name\t: AMD EPYC 7B13\nprocessor: 1\nmodel name\t: AMD EPYC 7B13\n",
        "MemTotal:       24576000 kB\nMemFree: 1 kB\n",
        cpus=2,
    )
    assert info == {"cpus": 2, "model": "AMD EPYC 7B13", "ram_gb": 23.4}
    assert machine_info("", "", cpus=1) == {"cpus": 1, "model": "unknown", "ram_gb": 0.0}


def test_the_ceiling_starts_only_once_the_group_is_stable() -> None:
    check = every_partition_assigned(8)
    assert check([{"assigned": "4"}, {"assigned": "4"}])[0]
    assert not check([{"assigned": "8"}, {}])[0]  # the second process has not joined yet
    assert not check([{"assigned": "8"}, {"assigned": "4"}])[0]  # a stale report mid-rebalance
    done, state = every_message_counted(100)([{"count": "60"}, {"count": "30"}])
    assert not done and "90 of 100" in state
    assert every_message_counted(100)([{"count": "60"}, {"count": "41"}])[0]


def test_profile_figures_split_the_worker_into_stages() -> None:
    from ops.bench import profile_figures

    main = "thread (1): MainThread;run (runners.py:1)"
    path = f"{main};OrderPipeline.process (agents/pipeline.py:1)"
    decide = f"{path};Decisions.decide (order/decisions.py:81)"
    folded = "\n".join(
        [
            f"{path};normalise (streams/normalise.py:1);adapt (adapters.py:2) 45",
            f"{path};OrderStore.save_groups (state/orders.py:9) 10",
            f"{decide};audit (order/audit.py:588);normalise_text (order/audit.py:3) 3",
            f"{decide};make_id (streams/messages.py:1) 2",
            f"{main};send_all (agents/intake.py:3) 30",
            f"{main};Fetcher._fetcher (fetcher.py:9) 10",
            f"{main};select (selectors.py:1) 500",  # idle: not counted
        ]
    )
    figures = profile_figures(folded)
    assert figures["samples"] == 100
    assert figures["order_path_share"] == 0.6
    assert figures["own_time"][0] == (0.45, "adapt (adapters.py)")
    assert figures["order_path_own_time"][:2] == [
        (0.75, "adapt (adapters.py)"),
        (round(10 / 60, 3), "OrderStore.save_groups (orders.py)"),
    ]
    # a sample counts for its deepest stage: audit apart from the decide that calls it
    assert figures["stages"] == [
        (0.45, "normalise"),
        (0.3, "send outputs"),
        (0.1, "save records"),
        (0.1, "Faust, Kafka client, event loop"),
        (0.03, "audit"),
        (0.02, "decide"),
    ]


def test_worker_stages_name_functions_that_exist() -> None:
    """A rename must not silently empty a stage of `./oms bench --profile`."""
    import importlib
    import inspect
    from pathlib import Path

    from ops.bench import WORKER_STAGES

    root = Path(__file__).resolve().parents[2]
    for label, prefix in WORKER_STAGES:
        qualname, _, file = prefix.rstrip(")").partition(" (")
        sources = [p for p in root.glob(f"*/{file}") if p.parent.name != "tests"]
        found = False
        for source in sources:
            module = importlib.import_module(f"{source.parent.name}.{source.stem}")
            top, *rest = qualname.split(".<locals>.")[0].split(".")
            obj = getattr(module, top, None)
            for part in rest:
                obj = getattr(obj, part, None)
            if obj is not None and (
                ".<locals>." not in qualname
                or qualname.split(".<locals>.")[-1] in inspect.getsource(obj)
            ):
                found = True
        assert found, f"stage {label!r}: no {prefix!r} in {[str(s) for s in sources]}"


def test_lost_orders_come_with_what_each_store_holds_of_them() -> None:
    sample = [{"channel": "jd", "external_id": "1", "redis_state": "absent", "in_facts": False}]
    counters = {"inputs": 10, "redelivery": 1}
    result = assemble_result(measured(lost_orders=1, lost_sample=sample, worker_counters=counters))
    assert result["lost_sample"] == sample and result["worker_counters"] == counters
    assert "lost_sample" not in assemble_result(measured())
