"""Sampling profiles of a running worker for `./oms bench --profile`: py-spy records the
process from outside (no code change, no restart), and the folded stacks are summed into the
functions where the time goes.

Only the threads that did work count: py-spy also samples idle pool threads, and a worker has
a few (Faust's consumer thread, the executor threads the ClickHouse client runs on).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# "func (path/to/module.py:123)" -> "func (module.py)": a function, wherever its line is.
_FRAME = re.compile(r"^(?P<func>.*?) \((?:.*/)?(?P<file>[^/]+?)(?::\d+)?\)$")
# Frames where an idle thread sits: waiting for work or for the selector.
# Under uvloop the loop's own wait is C code, so an idle main thread shows as its caller.
_IDLE = (
    "_worker (thread.py)",
    "select (selectors.py)",
    "wait (threading.py)",
    "ServiceThread._start_thread (threads.py)",
    "Worker.execute_from_commandline (worker.py)",
)


class ProfileError(RuntimeError):
    """py-spy is missing or could not attach (it needs ptrace rights on the process)."""


@dataclass(frozen=True)
class Entry:
    share: float  # of the samples that did work, 0..1
    function: str


@dataclass(frozen=True)
class Profile:
    samples: int  # samples that did work
    own: list[Entry]  # time spent in the function itself
    total: list[Entry]  # time in the function and what it called


def frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    return f"{match['func']} ({match['file']})" if match else frame.strip()


def working_stacks(folded: str) -> Iterator[tuple[list[str], int]]:
    """(frame names root first, samples) per folded stack ("frame;frame;frame count" lines)
    that did work: idle threads' stacks are left out."""
    for line in folded.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame_name(f) for f in stack.split(";") if not f.startswith("thread (")]
        if frames and frames[-1] not in _IDLE:
            yield frames, int(count)


def summarise(folded: str, top: int = 15, under: str = "") -> Profile:
    """Folded stacks ("frame;frame;frame count" per line) -> the top functions by own and by
    total time; ``under`` keeps only stacks through a frame whose name contains it."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for frames, n in working_stacks(folded):
        if under and not any(under in f for f in frames):
            continue
        samples += n
        own[frames[-1]] += n
        for name in set(frames):
            total[name] += n
    return Profile(samples, _entries(own, samples, top), _entries(total, samples, top))


def stages(folded: str, table: Sequence[tuple[str, str]], rest: str) -> list[Entry]:
    """Share of the working samples per stage of ``table`` ((label, frame name prefix), e.g.
    ("save records", "OrderStore.save_groups (")): a sample counts for the stage of its
    deepest frame that starts a stage, so nested stages (audit inside decide) are apart and
    the shares add up to 1 with ``rest`` (samples in no stage). Largest first."""
    counts: Counter[str] = Counter()
    samples = 0
    for frames, n in working_stacks(folded):
        samples += n
        counts[next(_stage_of(frames, table), rest)] += n
    return _entries(counts, samples, len(counts))


def _stage_of(frames: Sequence[str], table: Sequence[tuple[str, str]]) -> Iterator[str]:
    for frame in reversed(frames):
        for label, prefix in table:
            if frame.startswith(prefix):
                yield label


def _entries(counts: Counter[str], samples: int, top: int) -> list[Entry]:
    return [Entry(n / samples, name) for name, n in counts.most_common(top)] if samples else []


def py_spy() -> str:
    """The py-spy beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if found is None:
        raise ProfileError("py-spy is not installed (it comes with the test extras: ./oms test)")
    return found


def start_recording(pid: int, out: Path, rate: int = 200) -> subprocess.Popen:
    """py-spy on ``pid`` in the background until :func:`finish_recording`, folded stacks into
    ``out`` (how long a flood takes is known only when it ends)."""
    argv = [py_spy(), "record", "--pid", str(pid), "--rate", str(rate)]
    argv += ["--format", "raw", "--threads", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_recording(proc: subprocess.Popen, out: Path, timeout_s: float = 60.0) -> str:
    """Stop py-spy (SIGINT: it writes what it has) and return the folded stacks."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not out.is_file() or not out.stat().st_size:
        detail = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise ProfileError(f"py-spy failed (exit {proc.returncode}): {detail[0]}")
    return out.read_text(encoding="utf-8", errors="replace")
