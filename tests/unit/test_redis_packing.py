"""The hot path's command packer (state/redis.py): hiredis packs what redis-py would, byte for
byte, for every argument the pipeline sends, str subclasses (a ShopKey) included."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import DataError

from state.redis import _PackedConnection
from streams.models import ShopKey


def packers() -> tuple[aioredis.Connection, _PackedConnection]:
    return aioredis.Connection(), _PackedConnection()


def same_bytes(*args: object) -> tuple[bytes, bytes]:
    plain, packed = packers()
    return b"".join(plain.pack_command(*args)), b"".join(packed.pack_command(*args))


def test_a_shop_key_is_packed_by_hiredis_as_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ShopKey.of("taobao", "极客数码旗舰店")
    expected, _ = same_bytes("EVALSHA", "abc", 2, "k1", "k2", key, 3)

    def slow_path(self: object, *args: object) -> list[bytes]:
        raise AssertionError("redis-py's per-argument encoder was used")

    monkeypatch.setattr(aioredis.Connection, "pack_command", slow_path)
    got = b"".join(_PackedConnection().pack_command("EVALSHA", "abc", 2, "k1", "k2", key, 3))
    assert got == expected
    assert key.encode() in got


def test_a_two_word_command_is_split_as_redis_py_splits_it() -> None:
    expected, got = same_bytes("SCRIPT EXISTS", "abc", "def")
    assert got == expected


def test_a_bool_takes_redis_py_path_and_its_error() -> None:
    with pytest.raises(DataError):
        _PackedConnection().pack_command("SET", "k", True)


@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.binary(max_size=40),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=12,
    )
)
def test_any_plain_arguments_pack_byte_for_byte_as_redis_py(args: list[object]) -> None:
    expected, got = same_bytes("EVALSHA", *args)
    assert got == expected
