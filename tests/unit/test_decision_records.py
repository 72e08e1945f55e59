"""The decision records (docs/decisions/) cite what is there, and say whether they still hold.

Files move (decision 0017 moved most of them to their floors), and a record naming a path that
is gone sends its reader nowhere. So every repo-relative path a record cites must exist:
``agents/pipeline.py``, ``state/lua/stock_*.lua`` (a glob: something must match). A name after
the path must be in the file: ``state/keys.py::name``, ```ops/stack.py child_env```, or the
next backtick span (```agents/counting.py` `count_kinds```); ``:12`` or ``#L12`` must be a line
of it. A backticked dotted reference to one of our packages (``core.settings.mask_url``) must
name a module and a name in it.

Each record starts with its title, ``# NNNN Title`` (NNNN its file's number), then one status
line: ``Status: accepted`` (and what amended it) or ``Superseded by NNNN: why`` (``Superseded
in part by NNNN, NNNN: why``). Every four-digit number on the status line must be a record.

The README's paths are checked the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DECISIONS = ROOT / "docs" / "decisions"
# Made at run time, never in the repository: the stack's home, the virtualenv.
RUNTIME = frozenset({".oms", ".venv"})
# A slash-separated word counts as a path when its first part is a top-level entry of the repo
# or its last part has one of these endings (so `foo/bar.py` is checked even if foo/ is gone,
# and prose such as "orders/s" or "release/cancel" is not).
EXTENSIONS = frozenset(
    {"py", "lua", "md", "toml", "yml", "yaml", "sh", "json", "csv", "sql", "txt", "html", "js"}
)
PATH = re.compile(
    r"(?<![\w./:<>@$~\\-])"
    r"(?P<path>(?:[\w.-]+/)+[\w.*-]*[\w*])"
    r"(?:::(?P<name>[A-Za-z_][\w.]*)|:(?P<line>\d+)(?:-\d+)?|#L(?P<anchor>\d+)(?:-L?\d+)?)?"
)
SPAN = re.compile(r"`([^`\n]+)`")
# `ops/stack.py child_env`, or `agents/counting.py` `count_kinds`: the name is in the file.
SPAN_NAMED = re.compile(r"`(?P<path>[\w.*-]+/[\w./*-]+)(?:\s+|`\s+`)(?P<name>[A-Za-z_]\w*)(?:\(|`)")
DOTTED = re.compile(r"^(?P<ref>[a-z_]\w*(?:\.[A-Za-z_]\w*)+)")
TITLE = re.compile(r"^# (?P<number>\d{4}):? \S")
STATUS = re.compile(r"^(Status: \S.*|Superseded (in part )?by \d{4}\b.*)$")
CITED_RECORD = re.compile(r"\b(\d{4})\b")


@dataclass(frozen=True)
class Citation:
    line: int
    text: str  # as written, for the failure message
    path: str
    name: str = ""  # a name the file must contain
    line_no: int = 0  # a line the file must have


def top_level(root: Path) -> frozenset[str]:
    return frozenset(p.name for p in root.iterdir()) - RUNTIME


def is_path(path: str, tops: frozenset[str]) -> bool:
    first, last = path.split("/", 1)[0], path.rsplit("/", 1)[-1]
    if first in {".", ".."} or first in RUNTIME:
        return False  # relative to somewhere else (../shared/DESIGN.md, ./oms) or run time
    return first in tops or ("." in last and last.rpartition(".")[2] in EXTENSIONS)


def citations(text: str, tops: frozenset[str]) -> list[Citation]:
    """Every repo-relative path the text cites, and the names it says are in them."""
    found: list[Citation] = []
    for number, line in enumerate(text.splitlines(), 1):
        for m in PATH.finditer(line):
            path = m["path"]
            if not is_path(path, tops):
                continue
            found.append(
                Citation(
                    number,
                    m[0],
                    path,
                    name=m["name"] or "",
                    line_no=int(m["line"] or m["anchor"] or 0),
                )
            )
    for named in SPAN_NAMED.finditer(text):  # over the whole text: a line may break between
        if is_path(named["path"], tops):
            number = text.count("\n", 0, named.start()) + 1
            found.append(Citation(number, named[0], named["path"], name=named["name"]))
    return found


def module_refs(text: str, packages: frozenset[str]) -> list[tuple[int, str]]:
    """(line, reference) of every backticked dotted name that starts with one of our packages."""
    refs = []
    for number, line in enumerate(text.splitlines(), 1):
        for span in SPAN.findall(line):
            m = DOTTED.match(span.strip())
            if m and m["ref"].split(".")[0] in packages:
                refs.append((number, m["ref"]))
    return refs


def missing(cite: Citation, root: Path) -> str | None:
    """Why the citation points nowhere, or None when it holds."""
    if "*" in cite.path:
        files = sorted(root.glob(cite.path))
        return None if files else "nothing matches"
    target = root / cite.path
    if not target.exists():
        return "no such file or folder"
    if (cite.name or cite.line_no) and not target.is_file():
        return "not a file"
    if cite.name:
        last = cite.name.split(".")[-1]
        if not re.search(rf"\b{re.escape(last)}\b", target.read_text(encoding="utf-8")):
            return f"{last} is not in it"
    if cite.line_no and cite.line_no > len(target.read_text(encoding="utf-8").splitlines()):
        return f"it has no line {cite.line_no}"
    return None


def unresolved(ref: str, root: Path) -> str | None:
    """Why a dotted reference (module, then attributes) names nothing, or None."""
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:cut])
        module = next(
            (m for m in (base.with_suffix(".py"), base / "__init__.py") if m.is_file()), None
        )
        if module is None:
            continue
        rest = parts[cut:]
        if not rest:
            return None
        text = module.read_text(encoding="utf-8")
        return None if re.search(rf"\b{re.escape(rest[0])}\b", text) else f"no {rest[0]} in it"
    return "no such module"


def problems(text: str, root: Path) -> list[str]:
    """Every path and module reference in ``text`` that names nothing in ``root``."""
    tops = top_level(root)
    packages = frozenset(p.parent.name for p in root.glob("*/__init__.py"))
    out = []
    for cite in citations(text, tops):
        why = missing(cite, root)
        if why:
            out.append(f"line {cite.line}: {' '.join(cite.text.split())}: {why}")
    for number, ref in module_refs(text, packages):
        why = unresolved(ref, root)
        if why:
            out.append(f"line {number}: {ref}: {why}")
    return out


def status_problems(text: str, number: str, root: Path) -> list[str]:
    """The title and status line a record must start with."""
    lines = [line for line in text.splitlines() if line.strip()]
    title = TITLE.match(lines[0]) if lines else None
    if title is None:
        return ["no title '# NNNN Title' on the first line"]
    out = []
    if title["number"] != number:
        out.append(f"the title says {title['number']}, the file name {number}")
    if len(lines) < 2 or not STATUS.match(lines[1]):
        out.append("no 'Status: ...' or 'Superseded by NNNN: ...' line under the title")
        return out
    for cited in CITED_RECORD.findall(lines[1]):
        if cited == number:
            out.append("the status line names the record itself")
        elif not list((root / "docs" / "decisions").glob(f"{cited}-*.md")):
            out.append(f"the status line names {cited}, which is no record")
    return out


def records() -> list[Path]:
    return sorted(DECISIONS.glob("[0-9][0-9][0-9][0-9]-*.md"))


def test_there_are_records() -> None:
    assert len(records()) >= 16


def test_every_path_a_record_cites_exists() -> None:
    stale = {
        p.name: found for p in records() if (found := problems(p.read_text(encoding="utf-8"), ROOT))
    }
    assert stale == {}


def test_every_record_has_a_title_and_a_status() -> None:
    bad = {
        p.name: found
        for p in records()
        if (found := status_problems(p.read_text(encoding="utf-8"), p.name[:4], ROOT))
    }
    assert bad == {}


def test_record_numbers_are_unique() -> None:
    numbers = [p.name[:4] for p in records()]
    assert len(numbers) == len(set(numbers))


def test_every_path_the_readme_cites_exists() -> None:
    assert problems((ROOT / "README.md").read_text(encoding="utf-8"), ROOT) == []


def test_the_checks_can_fail() -> None:
    """A fake record with one of each kind of stale reference: each is found, and what is
    there, prose with slashes and paths outside the repo are not."""
    fake = "\n".join(
        [
            "# 0003 A fake record",
            "Status: accepted",
            "Cites `state/lua/reserve.lua` (gone), agents/health.py (moved), notes/x.md (never),",
            "`state/lua/nothing_*.lua`, `ops/stack.py no_such_function`, state/keys.py::nope,",
            "`agents/worker.py` `StageCountingPipeline` (gone), `core/kafka.py` `no_helper()`,",
            "core/loop.py:100000, `core.settings.no_such_name`, `core.nowhere.x`.",
            "Fine: state/lua/stock_reserve.lua, `state/lua/stock_*.lua`, `ops/stack.py child_env`,",
            "tests/unit/test_layers.py::test_no_import_circles, `core.settings.mask_url`,",
            "`agents/worker.py` `run_worker(settings)`, `config/shops.toml` (`OMS_X`),",
            "docs/decisions/0001-at-least-once.md, 1,004 orders/s, release/cancel, CHANNEL/SHOP,",
            "../shared/DESIGN.md, `./oms up`, `.oms/chaos`, https://example.com/a/b.py.",
        ]
    )
    found = problems(fake, ROOT)
    expected = [
        "state/lua/reserve.lua",
        "agents/health.py",
        "notes/x.md",
        "state/lua/nothing_*.lua",
        "no_such_function",
        "StageCountingPipeline",
        "no_helper",
        "state/keys.py::nope",
        "core/loop.py:100000",
        "core.settings.no_such_name",
        "core.nowhere.x",
    ]
    for stale in expected:
        assert any(stale in line for line in found), (stale, found)
    assert len(found) == len(expected), found
    assert status_problems(fake, "0003", ROOT) == []
    assert status_problems(fake, "0004", ROOT) == ["the title says 0003, the file name 0004"]
    assert status_problems("# 0003 A fake record\nSome text.", "0003", ROOT)
    assert status_problems("Superseded by 0002: x", "0003", ROOT)
    assert status_problems("# 0003 X\nSuperseded by 0999: gone", "0003", ROOT) == [
        "the status line names 0999, which is no record"
    ]
    assert status_problems("# 0003 X\nSuperseded in part by 0007, 0009: why", "0003", ROOT) == []
