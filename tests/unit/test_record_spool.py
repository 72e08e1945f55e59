"""The bench's record spool (ops/record_spool.py): what goes in comes out, in order, any size."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ops.record_spool import RecordSpool

records = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=20),
        st.one_of(st.none(), st.binary(max_size=40)),
        st.binary(max_size=3000),
        st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=10)), max_size=2),
    ),
    max_size=60,
)


@settings(max_examples=60)
@given(records)
def test_records_come_back_in_order_twice(items: list) -> None:  # type: ignore[type-arg]
    spool = RecordSpool()
    try:
        for item in items:
            spool.append(item)
        assert len(spool) == len(items)
        assert spool.value_bytes == sum(len(v) for _, _, v, _ in items)
        assert list(spool) == items
        assert list(spool) == items  # a spool is read as often as needed
    finally:
        spool.close()


def test_frames_larger_than_a_read_and_many_small_ones() -> None:
    spool = RecordSpool()
    big = ("oms.raw.own", b"k", b"x" * (3 << 20), [("oms-shop", b"s")])
    small = [("t", None, bytes([n % 256]) * 100, []) for n in range(20_000)]
    try:
        spool.append(big)
        for item in small:
            spool.append(item)
        spool.append(big)
        got = list(spool)
        assert got[0] == big and got[-1] == big and got[1:-1] == small
    finally:
        spool.close()
