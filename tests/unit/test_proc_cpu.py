"""The bench's per-process CPU figures: /proc parsing and the arithmetic of the budget."""

from __future__ import annotations

import os
import time

from ops.proc_cpu import CpuMeter, CpuReading, cpu_ticks, per_order_us, read_cpu_s, spent

# A real /proc/PID/stat line whose command name holds a space and a parenthesis.
STAT = "4242 (tansu (x) b) S 1 4242 4242 0 -1 4194560 2311 0 0 0 1234 567 0 0 20 0 9 0 77 0"


def test_ticks_are_utime_plus_stime_after_the_command_name() -> None:
    assert cpu_ticks(STAT) == 1234 + 567


def test_spent_is_the_difference_per_group_and_a_total() -> None:
    before = CpuReading({"worker": 10.0, "redis": 2.0})
    after = CpuReading({"worker": 13.5, "redis": 2.5})
    assert spent(before, after) == {"worker": 3.5, "redis": 0.5, "total": 4.0}


def test_per_order_is_microseconds_per_order() -> None:
    assert per_order_us({"worker": 3.5, "total": 4.0}, 10_000) == {"worker": 350, "total": 400}
    assert per_order_us({"worker": 1.0}, 0) == {}


def test_the_meter_sees_this_process_burn_cpu_and_drops_empty_groups() -> None:
    meter = CpuMeter({"me": [os.getpid()], "nobody": []})
    before = meter.read()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    used = spent(before, meter.read())
    assert set(used) == {"me", "total"}
    assert used["me"] >= 0.1


def test_a_gone_pid_counts_up_to_its_last_reading() -> None:
    assert read_cpu_s(2**22 + 12345) is None
    meter = CpuMeter({"gone": [2**22 + 12345]})
    assert meter.read().seconds == {"gone": 0.0}
