"""Summing py-spy's folded stacks (ops/profile.py): shares, idle threads left out, filters."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.profile import finish_recording, frame_name, start_recording, summarise

MAIN = "thread (1): MainThread;main (ops/__main__.py:3)"
PROCESS = f"{MAIN};process (agents/pipeline.py:121)"
FOLDED = "\n".join(
    [
        f"{PROCESS};adapt (streams/channels/__init__.py:82) 30",
        f"{PROCESS};save (state/orders.py:201) 50",
        f"{MAIN};heartbeat (agents/worker.py:70) 20",
        "thread (2): pool;_bootstrap (threading.py:1002);_worker (futures/thread.py:81) 400",
        "garbage line",
    ]
)


def test_frame_names_keep_function_and_file() -> None:
    assert frame_name("process (agents/pipeline.py:121)") == "process (pipeline.py)"
    assert frame_name("<module> (pipe.py)") == "<module> (pipe.py)"
    assert frame_name("odd frame") == "odd frame"


def test_shares_count_only_samples_that_did_work() -> None:
    profile = summarise(FOLDED)
    assert profile.samples == 100  # the idle pool thread's 400 left out, the garbage line too
    own = {e.function: e.share for e in profile.own}
    assert own == {
        "save (orders.py)": 0.5,
        "adapt (__init__.py)": 0.3,
        "heartbeat (worker.py)": 0.2,
    }
    total = {e.function: e.share for e in profile.total}
    assert total["main (__main__.py)"] == pytest.approx(1.0)
    assert total["process (pipeline.py)"] == pytest.approx(0.8)
    assert profile.own[0].function == "save (orders.py)"  # largest first


def test_under_keeps_stacks_through_a_frame() -> None:
    profile = summarise(FOLDED, under="process (")
    assert profile.samples == 80
    assert {e.function for e in profile.own} == {"save (orders.py)", "adapt (__init__.py)"}


def test_top_limits_and_empty_input() -> None:
    assert len(summarise(FOLDED, top=1).own) == 1
    empty = summarise("")
    assert empty.samples == 0 and empty.own == [] and empty.total == []


def test_recording_a_live_process_finds_its_busy_function(tmp_path: Path) -> None:
    """py-spy attached from outside, stopped when we say: the child's loop is where time went."""
    code = "def spin():\n    while True:\n        sum(range(1000))\nspin()\n"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)
        out = tmp_path / "folded.txt"
        recording = start_recording(child.pid, out)
        time.sleep(1.5)
        profile = summarise(finish_recording(recording, out))
    finally:
        child.kill()
        child.wait()
    assert profile.samples > 50
    total = {e.function: e.share for e in profile.total}
    assert total.get("spin (<string>)", 0) > 0.9
