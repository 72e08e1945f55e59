"""The audit rules file (config/audit.toml): the schema, its error messages, the shipped file,
and `rules check` (ops/rules_cli.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from ops.loadgen import generate_burst
from ops.rules_cli import rules_check
from order.audit import (
    DEFAULT_RULES,
    DEMO_BLACKLISTED_PHONE,
    AuditConfigError,
    AuditRules,
    load_audit_rules,
)

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "audit.toml"

GOOD = """
[quantity]
max_line_quantity = 50

[blacklist]
action = "hold"
buyer_ids = [" tb-123 "]
phones = ["+86 139-1234-5678"]
addresses = ["文三路 90 号"]

[scalper]
window_s = 600
max_orders_per_buyer = 3

[high_value]
thresholds = { CNY = "8888.88", HKD = 10000 }

[remark_review]
keywords = ["Invoice", "发票"]
ignore = []

[shipped_at_channel]
enabled = false
"""


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "audit.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str | bytes) -> str:
    path = write(tmp_path, text)
    with pytest.raises(AuditConfigError) as caught:
        load_audit_rules(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")  # always names the file
    return message


# --- the shipped file ---------------------------------------------------------------------


def test_the_shipped_file_loads_and_equals_the_defaults() -> None:
    assert load_audit_rules(SHIPPED) == DEFAULT_RULES


def test_the_shipped_file_blacklists_the_phone_the_loadgen_uses() -> None:
    assert DEMO_BLACKLISTED_PHONE in load_audit_rules(SHIPPED).blacklist.phones
    assert generate_burst(600, flagged_rate=0.05).flagged["blacklisted"] > 0


def test_no_file_means_the_defaults(tmp_path: Path) -> None:
    assert load_audit_rules(tmp_path / "missing.toml") == DEFAULT_RULES


def test_an_empty_file_keeps_the_built_in_values_with_empty_blacklists(tmp_path: Path) -> None:
    rules = load_audit_rules(write(tmp_path, ""))
    assert rules == AuditRules()
    assert rules.blacklist.phones == frozenset()
    assert rules.scalper == DEFAULT_RULES.scalper


# --- a good file --------------------------------------------------------------------------


def test_a_good_file_loads_in_the_form_rules_compare(tmp_path: Path) -> None:
    rules = load_audit_rules(write(tmp_path, GOOD))
    assert rules.quantity.max_line_quantity == 50
    assert rules.blacklist.action == "hold"
    assert rules.blacklist.buyer_ids == {"tb-123"}
    assert rules.blacklist.phones == {"13912345678"}  # digits, no +86
    assert rules.blacklist.addresses == ("文三路90号",)
    assert (rules.scalper.window_s, rules.scalper.max_orders_per_buyer) == (600, 3)
    assert rules.scalper.max_orders_per_address == 10  # not set: built-in
    assert rules.high_value.thresholds == {"CNY": Decimal("8888.88"), "HKD": Decimal(10000)}
    assert rules.remark_review.keywords == ("invoice", "发票")
    assert rules.remark_review.ignore == ()
    assert not rules.shipped_at_channel.enabled
    assert rules.payment.enabled  # a section left out keeps running


# --- each kind of bad file ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[colour]\nenabled = true\n", "colour: unknown field (known here: quantity, blacklist,"),
        ("[scalper]\nwindow = 60\n", "scalper.window: unknown field (known here: enabled, action"),
        ('[quantity]\nmax_line_quantity = "lots"\n', "quantity.max_line_quantity: Input should"),
        ("[quantity]\nmax_line_quantity = 0\n", "quantity.max_line_quantity: Input should be gr"),
        (
            '[blacklist]\naction = "delete"\n',
            "blacklist.action: Input should be 'hold' or",
        ),
        ("[high_value]\nthresholds = { CNY = 20000.0 }\n", "high_value.thresholds.CNY: write amo"),
        ('[high_value]\nthresholds = { cny = "1" }\n', "thresholds.cny (key): a currency is"),
        ('[cod]\nmax_amount = { CNY = "-1" }\n', "cod.max_amount.CNY: Input should be greater"),
        ('[cod]\nmax_amount = { CNY = "lots" }\n', "cod.max_amount.CNY: Input should be a valid"),
        ('[blacklist]\nphones = ["13800000000", "n/a"]\n', "blacklist.phones: entry 1 ('n/a') is"),
        ('[blacklist]\naddresses = [" - "]\n', "blacklist.addresses: entry 0 (' - ') is not a st"),
        ('[blacklist]\nbuyer_ids = [""]\n', "blacklist.buyer_ids"),
        ('[remark_review]\nkeywords = ["  "]\n', "remark_review.keywords: entry 0 ('  ') is not"),
        ("[remark_review]\nkeywords = [1]\n", "remark_review.keywords: entry 0 must be a string"),
        ('[price_below_list]\nmin_paid_ratio = "1.5"\n', "price_below_list.min_paid_ratio: Input"),
        ("[scalper]\nwindow_s = 0\n", "scalper.window_s: Input should be greater than 0"),
        ("quantity = 5\n", "quantity: must be a table, not an integer"),
        ('[payment]\nenabled = "sometimes"\n', "payment.enabled: Input should be a valid boolean"),
    ],
)
def test_a_bad_field_is_named(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


def test_every_bad_field_is_listed_at_once(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[scalper]\nwindow_s = -1\nmax_orders_per_buyer = 0\n")
    assert "invalid audit rules" in message
    assert "scalper.window_s" in message and "scalper.max_orders_per_buyer" in message


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    assert "not valid TOML" in load_error(tmp_path, "[quantity\nmax_line_quantity = 5\n")


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    assert "cannot read" in load_error(
        tmp_path, "[remark_review]\nkeywords = ['发票']\n".encode("gb18030")
    )


def test_a_directory_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(AuditConfigError, match="cannot read"):
        load_audit_rules(tmp_path)


# --- rules check --------------------------------------------------------------------------


def test_check_prints_the_rules_in_order_with_blacklists_masked() -> None:
    result = CliRunner().invoke(rules_check, [str(SHIPPED)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{SHIPPED}: valid"
    names = [line.split()[0] for line in lines[1:]]
    assert names == list(AuditRules.model_fields)
    assert DEMO_BLACKLISTED_PHONE not in result.output
    assert "130****0666" in result.output
    assert "high_value           on  hold   thresholds={CNY: 20000.00, USD: 3000.00}" in lines[10]


def test_check_defaults_to_the_configured_file() -> None:
    result = CliRunner().invoke(rules_check, [])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith("audit.toml: valid")


def test_check_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(rules_check, [str(write(tmp_path, GOOD)), "--json"])
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.output)
    assert data["valid"] is True
    assert data["rules"]["blacklist"]["phones"] == ["139****5678"]
    assert data["rules"]["high_value"]["thresholds"] == {"CNY": "8888.88", "HKD": "10000"}
    assert data["rules"]["shipped_at_channel"] == {"enabled": False}


def test_check_refuses_a_bad_file_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[scalper]\nwindow = 60\n")
    result = CliRunner().invoke(rules_check, [str(path)])
    assert result.exit_code == 2
    assert f"error: {path}: invalid audit rules" in result.output
    assert "scalper.window: unknown field" in result.output


def test_check_refuses_a_missing_file_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(rules_check, [str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "nope.toml: no such file" in result.output
