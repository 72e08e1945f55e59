"""CPU time of named processes from /proc, so the bench measures the per-order cost budget of
every process (workers, sink, broker, Redis, ClickHouse, the load generator) instead of
estimating it.

A process's CPU is utime + stime of /proc/PID/stat (all its threads; children it waited for are
not included, which is what we want: none of ours fork work off). Two readings around a phase
give the CPU each process spent on it; divided by the orders of the phase, the budget.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_ticks(stat: str) -> int:
    """utime + stime (fields 14 and 15) of a /proc/PID/stat line, read after the command name,
    which is in parentheses and may itself hold spaces or parentheses."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def read_cpu_s(pid: int) -> float | None:
    """CPU seconds ``pid`` has used so far; None when it is gone (or off Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return cpu_ticks(stat) / TICKS_PER_S


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds per process group (a group: one name, one or more pids) at one moment."""

    seconds: Mapping[str, float]


class CpuMeter:
    """Reads the CPU of named groups of pids; ``spent`` is the CPU between two readings.

    A pid that dies between the readings is counted up to its last reading (a restarted worker's
    new pid is not followed: the bench does not restart processes mid-phase)."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items() if pids}
        self._last: dict[int, float] = {}

    def read(self) -> CpuReading:
        out: dict[str, float] = {}
        for name, pids in self.groups.items():
            total = 0.0
            for pid in pids:
                now = read_cpu_s(pid)
                if now is not None:
                    self._last[pid] = now
                total += self._last.get(pid, 0.0)
            out[name] = total
        return CpuReading(out)


def spent(before: CpuReading, after: CpuReading) -> dict[str, float]:
    """CPU seconds each group used between two readings, and ``total``."""
    out = {
        name: max(0.0, after.seconds[name] - before.seconds.get(name, 0.0))
        for name in after.seconds
    }
    out["total"] = sum(out.values())
    return out


def per_order_us(cpu_s: Mapping[str, float], orders: int) -> dict[str, float]:
    """CPU microseconds per order of each group (rounded to 1 µs); empty for no orders."""
    if orders <= 0:
        return {}
    return {name: round(seconds / orders * 1e6) for name, seconds in cpu_s.items()}
