"""core/logs.py: the JSON formatter, the one root handler, and masking of personal data and
tokens in every format (hypothesis for the masking)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.logs import mask_personal, setup_logging

PHONES = st.builds(
    lambda second, rest: f"1{second}{rest}",
    st.sampled_from("3456789"),
    st.text("0123456789", min_size=9, max_size=9),
)
NAMES = st.text(
    st.sampled_from("张王李赵刘陈杨黄周吴伟芳娜敏静强磊军洋勇艳杰涛明超秀霞平刚桂英AaBbCcDdEe"),
    min_size=2,
    max_size=6,
)
KEYS = st.sampled_from(["receiver_name", "name", "buyer_nick", "fullName", "consignee"])
SEPARATORS = st.sampled_from(["=", ": ", '": "'])


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """setup_logging onto a buffer; the root logger's handlers are put back afterwards."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    buffer = io.StringIO()
    yield buffer, logging.getLogger("oms.test")
    root.handlers[:] = saved
    root.setLevel(level)


def lines(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line]


def test_json_lines_carry_the_contract_fields(capture: tuple[io.StringIO, logging.Logger]) -> None:
    buffer, log = capture
    setup_logging("json", "info", component="worker", worker="w3", stream=buffer)
    log.info("batch of %d done", 12, extra={"batch": 7, "topic": "oms.raw.jd"})
    (entry,) = [orjson.loads(line) for line in lines(buffer)]
    assert entry["message"] == "batch of 12 done"
    assert entry["level"] == "info" and entry["logger"] == "oms.test"
    assert entry["component"] == "worker" and entry["worker"] == "w3"
    assert entry["batch"] == 7 and entry["topic"] == "oms.raw.jd"
    assert isinstance(entry["pid"], int)
    assert entry["ts"].endswith("Z")
    assert datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).utcoffset().seconds == 0


def test_json_traceback_is_one_line_and_masked(
    capture: tuple[io.StringIO, logging.Logger],
) -> None:
    buffer, log = capture
    setup_logging("json", "info", component="sink", stream=buffer)
    try:
        raise ValueError("bad input phone=13812345678 name='王小明'")
    except ValueError:
        log.exception("failed")
    (line,) = lines(buffer)
    entry = orjson.loads(line)
    assert "ValueError" in entry["exc"]
    assert "13812345678" not in line and "王小明" not in line
    assert "138****5678" in entry["exc"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_masking_in_every_format(
    capture: tuple[io.StringIO, logging.Logger], log_format: str
) -> None:
    buffer, log = capture
    setup_logging(log_format, "info", component="cli", stream=buffer)
    token = "oms_0123456789ab_" + "S" * 43
    log.warning(
        "order %s receiver_name=%s mobile: %s street=%s token %s",
        "O1",
        "李四",
        "+86 139-1234-5678",
        "人民路1号",
        f"Bearer {token}",
    )
    log.info("extra fields", extra={"phone": "13912345678", "buyer": {"name": "赵六"}})
    text = buffer.getvalue()
    for secret in ("李四", "1234-5678", "人民路1号", "S" * 43, "13912345678", "赵六"):
        assert secret not in text, secret
    assert "Bearer ***" in text and "139****5678" in text and "李**" in text
    assert "O1" in text


def test_one_handler_after_repeated_setup(capture: tuple[io.StringIO, logging.Logger]) -> None:
    buffer, _ = capture
    setup_logging("text", "warning", component="cli", stream=buffer)
    setup_logging("json", "info", component="worker", worker="w0", stream=buffer)
    assert len(logging.getLogger().handlers) == 1
    with pytest.raises(ValueError):
        setup_logging("xml", "info", component="worker")


def test_non_personal_text_is_left_alone() -> None:
    text = "batch 500 inputs in 0.31 s; partition=3 offset=1234567 shop_name=jd-flagship"
    assert mask_personal(text) == text


@settings(max_examples=300, deadline=None)
@given(phone=PHONES, name=NAMES, key=KEYS, sep=SEPARATORS, noise=st.text(max_size=30))
def test_phones_and_names_never_survive(
    phone: str, name: str, key: str, sep: str, noise: str
) -> None:
    quote = '"' if sep == '": "' else ""
    text = f"{noise} {quote}{key}{sep}{name}{quote} called from {phone} {noise}"
    masked = mask_personal(text)
    assert phone not in masked
    assert f"{sep}{name}" not in masked
    assert f"{phone[:3]}****{phone[-4:]}" in masked  # still matchable by a person


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=20)
)
def test_tokens_never_survive(secret: str) -> None:
    masked = mask_personal(f"auth Bearer {secret} and oms_00112233aabb_{secret}")
    assert secret not in masked


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('order={"name":"Li Si"}', "Li Si"),
        ('{"buyer": {"name": "Wang Wu", "x": 1}}', "Wang Wu"),
        ('x: [{"name": "Li Si"}]', "Li Si"),
        ("phone=+44 20 7946 0958", "7946 0958"),
        ("contact li.si@example.com today", "li.si@example.com"),
        ("1 validation error input_value='Zhang Sanfeng', input_type=str", "Zhang Sanfeng"),
        ("mobile: +86 139-1234-5678", "1234-5678"),
    ],
)
def test_nested_values_numbers_and_emails_are_masked(text: str, secret: str) -> None:
    """Found in review: values inside a structure, numbers with spaces, bare e-mail addresses
    and pydantic's quoted input all got through."""
    assert secret not in mask_personal(text)
