"""Bad input, shared by the fuzz suite, the corpus test and the pipeline test: the channels'
real sample payloads, strategies that break them, the invariants every outcome must keep, and
a tally of the inputs tried that pytest prints at the end of the run."""

from __future__ import annotations

import base64
import copy
import json
import re
import tomllib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import strategies as st

from streams.channels import adapt
from streams.channels.base import (
    EARLIEST_TIME,
    MAX_FUTURE,
    MAX_LINE_QUANTITY,
    MAX_ORDER_BYTES,
    AdapterContext,
    AdapterError,
)
from streams.messages import DlqReason, DlqRecord
from streams.models import MAX_MONEY, Channel, Order, make_order_id
from streams.normalise import MAX_DLQ_RECORD_BYTES, SHOP_HEADER, RawInput, normalise

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "payloads"
CORPUS = Path(__file__).resolve().parent / "corpus"
CHANNELS = [c.value for c in Channel]
ORDER = "order"  # the expected outcome of a corpus case that is a valid order

# Personal data in the samples: no DLQ detail may ever quote any of it.
PII = [
    "张三",
    "13800138000",
    "文三路",
    "王小明",
    "13912345678",
    "科苑路",
    "Wei Lin",
    "13612345678",
    "南京西路",
    "lin.wei@example.com",
    "赵丽",
    "13700001111",
    "建国路",
    "陈晨",
    "13512345678",
    "珞喻路",
    "#7qZ3Jz8Rk2pW",
]


def sample(channel: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{channel}.json").read_text(encoding="utf-8"))


# The API envelopes each adapter also accepts: mutating those exercises the unwrapping too.
ENVELOPES = {
    "taobao": lambda p: {"trade_fullinfo_get_response": {"trade": p}},
    "jd": lambda p: {"orderInfo": p},
    "douyin": lambda p: {"data": {"shop_order_detail": p}},
    "shopify": lambda p: {"order": p},
    "amazon": lambda p: {"payload": p},
}


def seeds(channel: str) -> list[dict[str, Any]]:
    """The real payloads a channel's mutations start from."""
    bare = sample(channel)
    wrap = ENVELOPES.get(channel)
    return [bare, wrap(copy.deepcopy(bare))] if wrap else [bare]


SEEDS = {c: seeds(c) for c in CHANNELS}

# --- nasty values ----------------------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE orders; --",
    "' OR '1'='1",
    "1; SELECT * FROM system.users",
    "{{7*7}}",
    "${7*7}",
    "#{7*7}",
    "<%= 7*7 %>",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "${jndi:ldap://x/a}",
    "a\u0000b",
    "\u0000",
    "=cmd|' /C calc'!A0",
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "+SUM(1+1)",
    "@SUM(1+1)",
    "../../../../etc/passwd",
    "$(touch /tmp/pwned)",
    "`id`",
    "a\r\nSet-Cookie: x=1",
    "%s%s%s%n",
    "%s%s%n",
    "{0.__class__.__mro__}",
    "__proto__",
    "oms:order:*",
    '"},"total":"0.01","x":{"',
    '\\u0000\\"',
    "\u202egnp.exe",
    "zero\u200bwidth\ufeff",
    "𝕌𝕟𝕚𝕔𝕠𝕕𝕖 😀👍🏽 عربي עברית",
    "𝕌𝕟𝕚 😀 عربي",
    "null",
    "NaN",
]
EDGE_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    -0.0,
    0.5,
    1.5,
    -2.5,
    0.001,
    0.00001,
    1e-300,
    5e-324,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    float("-inf"),  # JSON tokens NaN/Infinity via json.dumps
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    MAX_LINE_QUANTITY,
    MAX_LINE_QUANTITY + 1,
    99999999999.99,
    100000000000,
]
NUMERIC_STRINGS = [
    "",
    " ",
    "0",
    "-0",
    "+0",
    "00",
    "-1",
    "0.5",
    "1.5",
    "-2.5",
    "1e308",
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "nan",
    "-NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1E+2",
    "0x10",
    "1,000",
    " 7 ",
    "٣",
    "１２",
    "9" * 40,
    "0.00001",
    "99999999999.99",
    "100000000000",
    "1_000",
]
TIMES: list[Any] = [
    "9999-12-31 23:59:59",
    "9999-12-31T23:59:59Z",
    "1970-01-01 00:00:00",
    "1970-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:00",
    "0001-01-01 00:00:00",
    "1999-12-31T23:59:59Z",
    "2000-01-01T00:00:00Z",
    "2100-01-01 00:00:00",
    "2024-02-30 00:00:00",
    "2024-06-18 25:61:00",
    "2024-06-18T10:15:00",
    "2024-06-18T10:15:00+25:00",
    "2024-06-18T10:15:00-14:00",
    "yesterday",
    "Z",
    0,
    1,
    -1,
    946684800,
    253402300799,
    32503680000,
    1718640000000,
    1718640000.5,
]
JSON_TYPES: list[Any] = [None, True, False, [], {}, [None], {"": None}, [[[]]], {"a": {"b": {}}}]

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
random_json = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
long_text = st.builds(
    lambda char, n: char * n,
    st.sampled_from(["A", "é", "中", "😀", "\u0000", '"', "\\", "\u200b"]),
    st.sampled_from([129, 257, 2001, 5000, 70_000]),
)
texts = st.one_of(st.sampled_from(INJECTIONS), long_text, st.text(max_size=30))
nasty = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.sampled_from(NUMERIC_STRINGS),
    st.sampled_from(TIMES),
    st.sampled_from(JSON_TYPES),
    texts,
    random_json,
).map(copy.deepcopy)  # a fresh [] or {} each time: later mutations may change it in place

# --- structural mutation ---------------------------------------------------------------------

Path_ = tuple[Any, ...]


def paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every key or index in a JSON tree, at any depth."""
    found: list[Path_] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        found.append((*prefix, key))
        found.extend(paths(value, (*prefix, key)))
    return found


def parent_of(root: Any, path: Path_) -> Any:
    node = root
    for step in path[:-1]:
        node = node[step]
    return node


def _retype(value: Any, how: int) -> Any:
    """The same value as another JSON type: what a sloppy producer sends."""
    if how == 0:
        return [value]
    if how == 1:
        return {"value": value}
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, default=str)  # 2 -> "2", {} -> "{}"
    try:
        return json.loads(value)  # "2" -> 2, "1.5" -> 1.5, "true" -> True
    except ValueError:
        return None


MUTATIONS = ["drop", "drop", "replace", "replace", "replace", "retype", "text", "duplicate", "add"]


@dataclass(frozen=True)
class Seed:
    """A real payload as bytes (a fresh copy per example is one orjson.loads) with its paths
    computed once: mutating is most of a fuzz example's cost."""

    data: bytes
    paths: list[Path_]
    lists: list[Path_]  # the paths of non-empty lists (order lines, coupons, ...)

    @classmethod
    def of(cls, payload: Any) -> Seed:
        where = paths(payload)
        return cls(
            orjson.dumps(payload),
            where,
            [p for p in where if isinstance(_at(payload, p), list) and _at(payload, p)],
        )


@st.composite
def mutate(draw: st.DrawFn, seed: Seed, steps: int) -> Any:
    """Apply ``steps`` random structural mutations to a fresh copy of the seed payload. Paths
    are the seed's: one an earlier step removed or replaced is skipped."""
    root = orjson.loads(seed.data)
    for _ in range(steps):
        kind = draw(st.sampled_from(MUTATIONS))
        try:
            if kind == "duplicate":
                target = _at(root, seed.lists[draw(st.integers(0, len(seed.lists) - 1))])
                target.append(copy.deepcopy(target[draw(st.integers(0, len(target) - 1))]))
                continue
            path = seed.paths[draw(st.integers(0, len(seed.paths) - 1))]
            parent = parent_of(root, path)
            if kind == "drop":
                del parent[path[-1]]
            elif kind == "replace":
                parent[path[-1]] = draw(nasty)
            elif kind == "retype":
                parent[path[-1]] = _retype(parent[path[-1]], draw(st.integers(0, 2)))
            elif kind == "text":
                parent[path[-1]] = draw(texts)
            elif isinstance(parent, dict):  # add: an unknown key next to this one
                parent[draw(st.text(max_size=12))] = draw(nasty)
            else:
                parent.insert(path[-1], draw(nasty))
        except (KeyError, IndexError, TypeError, AttributeError):
            continue
    return root


def _at(root: Any, path: Path_) -> Any:
    return parent_of(root, path)[path[-1]]


INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\xe2\x82",
    b"\x80",
]


@st.composite
def encode(draw: st.DrawFn, payload: Any) -> bytes:
    """The mutated payload as bytes, mostly well-formed, sometimes broken on the wire."""
    how = draw(
        st.sampled_from(
            ["orjson"] * 6 + ["json", "ascii", "truncate", "flip", "badutf8", "array", "garbage"]
        )
    )
    if how == "json":  # Python's json writes NaN/Infinity tokens for float nan/inf
        return json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8", "replace")
    if how == "ascii":
        return json.dumps(payload, ensure_ascii=True, default=str).encode()
    try:
        data = orjson.dumps(payload, default=str)
    except TypeError:  # an integer beyond 64 bits: Python's json writes it as digits
        data = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8", "replace")
    if how == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if how == "flip":
        at = draw(st.integers(0, max(0, len(data) - 1)))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if how == "badutf8":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]
    if how == "array":
        return b"[" + data + b"]"
    if how == "garbage":
        return data + draw(st.sampled_from([b"}", b",", b"\x00", b" {}", b"\n{}"]))
    return data


@st.composite
def mutated_payload(draw: st.DrawFn, channel: str) -> bytes:
    """A channel's real payload, broken structurally in 1-4 places, then encoded."""
    seed = draw(st.sampled_from(FUZZ_SEEDS[channel]))
    broken = draw(mutate(seed, draw(st.integers(min_value=1, max_value=4))))
    return draw(encode(broken))


FUZZ_SEEDS = {c: [Seed.of(payload) for payload in SEEDS[c]] for c in CHANNELS}


def vocabulary(channel: str) -> list[str]:
    return sorted(
        {str(p[-1]) for seed in SEEDS[channel] for p in paths(seed) if isinstance(p[-1], str)}
    )


VOCABULARY = {c: vocabulary(c) for c in CHANNELS}


def random_payload(channel: str) -> st.SearchStrategy[bytes]:
    """Random JSON (any top level; objects keyed with the channel's own field names half the
    time) and random bytes."""
    keyed = st.dictionaries(st.sampled_from(VOCABULARY[channel]), nasty, max_size=12)
    return st.one_of(
        st.builds(orjson.dumps, st.one_of(keyed, random_json)),
        st.binary(max_size=300),
    )


# --- the invariants --------------------------------------------------------------------------


def money_fields(order: Order) -> list[tuple[str, Decimal]]:
    fields = [
        ("total", order.total),
        ("shipping_fee", order.shipping_fee),
        ("discount_total", order.discount_total),
        ("payment.paid_total", order.payment.paid_total),
    ]
    for i, line in enumerate(order.lines):
        fields += [
            (f"lines[{i}].unit_price", line.unit_price),
            (f"lines[{i}].discount", line.discount),
            (f"lines[{i}].paid_amount", line.paid_amount),
        ]
    return fields


def check_order(order: Order, channel: str) -> None:
    """What every accepted order guarantees the stages after the adapter."""
    assert isinstance(order, Order)
    assert order.channel is Channel(channel)
    for name in ("order_id", "shop_id", "external_id"):
        value = getattr(order, name)
        assert isinstance(value, str) and value.strip() and len(value) <= 128, name
    assert order.order_id == make_order_id(channel, order.shop_id, order.external_id)
    assert 1 <= len(order.lines) <= 500
    for line in order.lines:
        assert line.line_id and line.sku
        assert type(line.quantity) is int and 1 <= line.quantity <= MAX_LINE_QUANTITY
    assert sum(order.quantity_by_sku.values()) == sum(line.quantity for line in order.lines)
    for name, value in money_fields(order):
        assert isinstance(value, Decimal) and value.is_finite(), name
        assert value >= 0 and not value.is_signed(), name
        assert value <= MAX_MONEY and value.as_tuple().exponent >= -4, name  # type: ignore[operator]
    latest = datetime.now(UTC) + MAX_FUTURE
    for name, value in (
        ("created_at", order.created_at),
        ("updated_at", order.updated_at),
        ("paid_at", order.payment.paid_at),
    ):
        if value is None:
            continue
        assert value.utcoffset() == timedelta(0), name  # aware, and held in UTC
        assert EARLIEST_TIME <= value <= latest, name
    assert len(order.currency) == 3
    # It can cross a topic: serialised and read back it is the same order, and it fits.
    again = Order.model_validate_json(order.model_dump_json())
    assert again.model_dump() == order.model_dump() and again.fingerprint() == order.fingerprint()
    assert order.json_size() <= MAX_ORDER_BYTES


# What streams/channels/__init__.py says when a mapping fails in a way no check anticipated.
CATCH_ALL = re.compile(r"unexpected \w+ mapping a \w+ (order|after-sale)")


def check_error(exc: AdapterError) -> None:
    """A refusal names a specific reason and says what is wrong, never with personal data."""
    assert isinstance(exc.reason, DlqReason)
    assert exc.reason is not DlqReason.PROCESSING_ERROR  # that one is for worker faults
    assert isinstance(exc.detail, str) and exc.detail.strip()
    assert not CATCH_ALL.match(exc.detail), exc.detail  # a shape no check anticipated
    assert not any(p in exc.detail for p in PII), exc.detail


def check_record(record: DlqRecord, data: bytes, exc: AdapterError, channel: str) -> None:
    assert record.reason is exc.reason and record.detail.startswith(exc.detail[:3000])
    assert record.channel == channel and record.source_topic == f"oms.raw.{channel}"
    kept = (
        base64.b64decode(record.payload)
        if record.payload_encoding == "base64"
        else record.payload.encode("utf-8")
    )
    assert record.payload_truncated == (kept != data)
    if kept != data:  # only a payload too big for a Kafka message is cut, and it says so
        assert data.startswith(kept) and "truncated" in record.detail
    assert len(record.model_dump_json()) <= MAX_DLQ_RECORD_BYTES


def outcome(channel: str, data: bytes, shop: str = "", suite: str = "fuzz") -> Order | AdapterError:
    """adapt() and normalise() on one input, every invariant checked; the outcome is returned
    and tallied under ``suite``."""
    try:
        result: Order | AdapterError = adapt(channel, data, AdapterContext(shop_id=shop))
    except AdapterError as exc:
        check_error(exc)
        result = exc
    else:
        check_order(result, channel)
    headers = {SHOP_HEADER: shop} if shop else {}
    raw = RawInput(channel, data, f"oms.raw.{channel}", 0, 7, "key", headers)
    normalised = normalise(raw, AdapterContext())
    if isinstance(result, Order):
        assert isinstance(normalised, Order)
        assert normalised.fingerprint() == result.fingerprint()
    else:
        assert isinstance(normalised, DlqRecord)
        check_record(normalised, data, result, channel)
    TALLY.add(suite, channel, result)
    return result


# --- the tally -------------------------------------------------------------------------------


class Tally:
    """Inputs tried per suite and channel and what became of them; printed in pytest's
    summary, so a run states how many bad inputs it tried."""

    name = "bad-input-tally"

    def __init__(self) -> None:
        self.channels: dict[str, Counter[str]] = {}
        self.outcomes: dict[str, Counter[str]] = {}

    def add(self, suite: str, channel: str, result: Order | AdapterError | str) -> None:
        self.channels.setdefault(suite, Counter())[channel] += 1
        if isinstance(result, Order):
            key = ORDER
        elif isinstance(result, AdapterError):
            key = result.reason.value
        else:
            key = result
        self.outcomes.setdefault(suite, Counter())[key] += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.channels:
            return
        terminalreporter.write_sep("-", "bad input")
        for suite, channels in self.channels.items():
            per_channel = ", ".join(f"{c} {n}" for c, n in sorted(channels.items()))
            outcomes = ", ".join(f"{k} {n}" for k, n in self.outcomes[suite].most_common())
            terminalreporter.write_line(
                f"{suite}: {sum(channels.values())} inputs tried ({per_channel})"
            )
            terminalreporter.write_line(f"{suite}: outcomes {outcomes}")
        total = sum(sum(c.values()) for c in self.channels.values())
        terminalreporter.write_line(f"bad inputs tried in all: {total}")


TALLY = Tally()


def register_tally(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(Tally.name):
        config.pluginmanager.register(TALLY, Tally.name)


# --- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One corpus file and what must become of it."""

    name: str
    channel: str
    expected: str  # a DlqReason value or "order"
    data: bytes
    shop: str = ""
    detail: str = ""  # a fragment the DLQ detail must contain
    hold: str = ""  # the hold reason the pipeline must give the order, if any


def _with(channel: str, key: str, value: Any) -> bytes:
    """The channel's sample with one more top-level field (own: inside ``raw``, the one place
    its strict model keeps what it has no field for)."""
    return _with_fields(channel, {key: value})


def _with_fields(channel: str, fields: dict[str, Any]) -> bytes:
    payload = sample(channel)
    if channel == "own":
        payload["raw"] = {**payload.get("raw", {}), **fields}
    else:
        payload.update(fields)
    return orjson.dumps(payload)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


GENERATED = {
    # Too big to commit: made here, the same bytes every run.
    "ten_megabytes": lambda c: _with(c, "junk", "A" * 10 * 1024 * 1024),
    "deep_nesting_100": lambda c: _with(c, "x", "__DEEP__").replace(b'"__DEEP__"', _nested(100)),
    "deep_nesting_100k": lambda c: _with(c, "x", "__DEEP__").replace(
        b'"__DEEP__"', _nested(100_000)
    ),
    # Under the 1 MB input limit, but as an order too big for the events that carry it: 100
    # extra fields, each small enough to ride on the order (MAX_EXTRA_BYTES).
    "oversized_order": lambda c: _with_fields(c, {f"junk{i}": "A" * 6000 for i in range(100)}),
    # One 400 kB extra field: the order is accepted, the field stays on the raw topic.
    "large_order": lambda c: _with(c, "junk", "A" * 400_000),
    # Not JSON, 800 kB of control characters: kept whole, the DLQ record would be 4.8 MB.
    "control_characters": lambda c: b"\x01" * 800_000,
}


def corpus() -> list[Case]:
    """The cases of corpus/manifest.toml (its header says what the fields mean)."""
    manifest = tomllib.loads((CORPUS / "manifest.toml").read_text(encoding="utf-8"))
    cases = []
    for name, entry in manifest["cases"].items():
        channel = name.split("/")[0]
        source = entry.get("file", f"{name}.json")
        kind, _, what = source.partition(":")
        if kind == "sample":
            data = (SAMPLES / f"{what}.json").read_bytes()
        elif kind == "generated":
            data = GENERATED[what](channel)
        else:
            data = (CORPUS / source).read_bytes()
        cases.append(
            Case(
                name=name,
                channel=channel,
                expected=entry["expected"],
                data=data,
                shop=entry.get("shop", ""),
                detail=entry.get("detail", ""),
                hold=entry.get("hold", ""),
            )
        )
    return cases
