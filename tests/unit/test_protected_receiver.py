"""Encrypted and masked receivers (the platforms' privacy rules) are normal orders: they keep
their ciphertext and the platform's handle for the waybill call, pass the audit, merge by the
platform's own receiver key, and a record saved before ``address.protected`` existed still
recognises its re-pushes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.privacy import mask_order_dict
from ops.demo_shapes import strip_to_ciphertext
from order.audit import AuditContext, Verdict, audit
from order.dedupe import Intake, classify
from order.fulfil import build_command
from order.merge import merge_group
from order.record import OrderRecord
from streams.channels import adapt
from streams.messages import CommandKind, CommandLine, OrderState
from streams.models import Order

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"

# Fingerprints the release before ``address.protected`` gave the samples (7052fba): records in
# Redis hold these, so a re-push after the upgrade must still be a duplicate.
V1_FINGERPRINTS = {
    "taobao": "c93e5f4503ad2a96e35ff9057f21154e",
    "jd": "022edb5aa532adc74b0d14662128e8b6",
    "douyin": "dc0306787aee5dee1735c4384e8b98aa",
    "shopify": "fd1cc53228fc80973a4fb0011a435202",
    "amazon": "6f2ab01e6d33f9cb0de828ae51a52c6d",
    "own": "a922fdaa10f9abe31dd033c411842383",
}

# Douyin's formats: '#index#cipher#version##' for names and addresses, '$...$$' for phones.
DY_NAME = (
    "##qIOpbLPevlQwA6f+yNJ7HgOqMdCcDttVlAympUYfJk9VrcWMMeMb1JAmpuUKKFpR==*CgYIASAHKAESPgo8#1##"
)
DY_TEL = "$$KlqdO3S6/9vQsJesewp8R2oBlX+I2/UABgHSm9Oy1SuYX6R0pLupUedZkqXVIisqK2an*CgYIASAH$1$$"
DY_DETAIL = "##Gx7Vv1cWq2Lk9pZ3rT8yB0n4mQ5tHuJ8kLp0ZxWcRvBnMaSdFgHjK==*CgYIASAHKAESPg#1##"
SKUS = frozenset(
    {
        "SKU-TEA-LONGJING",
        "SKU-MASK-N95-10",
        "SKU-PHONE-X1",
        "SKU-CASE-C3",
        "SKU-EARBUD-A2",
        "SKU-CHARGER-65W",
    }
)


def load(channel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{channel}.json").read_text(encoding="utf-8"))
    return data


def to_order(channel: str, payload: dict[str, Any]) -> Order:
    return adapt(channel, json.dumps(payload, ensure_ascii=False).encode())


def douyin_ciphertext_only(
    name: str = DY_NAME, tel: str = DY_TEL, detail: str = DY_DETAIL
) -> dict[str, Any]:
    """The sample Douyin order with its receiver only as ciphertext."""
    payload = load("douyin")
    strip_to_ciphertext(payload, name, tel, detail)
    return payload


def taobao_with_oaid(oaid: str, **receiver: str) -> dict[str, Any]:
    payload = load("taobao")
    payload.update(
        {
            "receiver_name": "王**",
            "receiver_mobile": "138****8000",
            "receiver_address": "文三路***号",
            "oaid": oaid,
            **receiver,
        }
    )
    return payload


def record_of(order: Order, fingerprint: str | None = None, *inputs: str) -> OrderRecord:
    record = OrderRecord(
        order_id=order.order_id,
        state=OrderState.RESERVED,
        order=order,
        fingerprint=fingerprint or order.fingerprint(),
    )
    for input_id in inputs:
        record.remember_outputs(input_id)
    return record


@pytest.mark.parametrize("channel", sorted(V1_FINGERPRINTS))
def test_the_samples_keep_their_first_release_fingerprint(channel: str) -> None:
    order = to_order(channel, load(channel))
    assert order.v1_fingerprint() == V1_FINGERPRINTS[channel]
    later = (order.address.protected, order.ship_by, order.expedited)
    if later == (None, None, False):  # nothing new: the fingerprint itself is unchanged
        assert order.fingerprint() == V1_FINGERPRINTS[channel]


def test_a_repush_of_an_order_saved_before_the_upgrade_is_a_duplicate_not_an_update() -> None:
    order = to_order("douyin", load("douyin"))
    assert order.address.protected is not None
    saved = record_of(order, V1_FINGERPRINTS["douyin"])
    assert order.fingerprint() != saved.fingerprint
    assert classify(saved, order, "raw:0:7:new") is Intake.DUPLICATE
    # a redelivery the old release applied under the input id it named then
    old_id = f"raw:0:7:{V1_FINGERPRINTS['douyin'][:12]}"
    replayed = record_of(order, V1_FINGERPRINTS["douyin"], old_id)
    assert classify(replayed, order, f"raw:0:7:{order.fingerprint()[:12]}") is Intake.DUPLICATE
    assert classify(replayed, order, "raw:0:7:x", old_id) is Intake.REDELIVERY


def test_douyin_ciphertext_only_receiver_is_kept_and_passes_the_audit() -> None:
    order = to_order("douyin", douyin_ciphertext_only())
    address = order.address
    assert address.protected is not None
    assert (address.protected.name, address.protected.phone, address.protected.street) == (
        DY_NAME,
        DY_TEL,
        DY_DETAIL,
    )
    # shown as the platform sent it (only ciphertext); the region is plain and routes
    assert (address.name, address.phone) == (DY_NAME, DY_TEL)
    assert address.street == "玉林街道" + DY_DETAIL
    assert address.province_code == "SC"
    result = audit(order, AuditContext(known_skus=SKUS))
    assert result.verdict is Verdict.PASS, result


def test_douyin_masked_copies_are_shown_ciphertext_goes_to_the_waybill() -> None:
    payload = douyin_ciphertext_only()
    payload.update({"mask_post_receiver": "李*", "mask_post_tel": "1*********8"})
    payload["mask_post_addr"] = {"detail": "玉林***号"}
    order = to_order("douyin", payload)
    assert (order.address.name, order.address.phone) == ("李*", "1*********8")
    assert order.address.street == "玉林街道玉林***号"
    assert order.address.protected is not None
    assert order.address.protected.street == DY_DETAIL
    assert audit(order, AuditContext(known_skus=SKUS)).verdict is Verdict.PASS


def test_douyin_receiver_key_comes_from_the_search_indexes() -> None:
    def with_indexes(body: str) -> Order:
        return to_order(
            "douyin",
            douyin_ciphertext_only(
                name=f"#idxName#{body}Zq8Nw1kXy0Ld3kQ==*CgwIAR#1##",
                tel=f"$idxTel${body}kP1kbYq3hVq0Xx0V==*CgwIAR$1$$",
                detail=f"#idxDetail#{body}Gx7Vv1cWq2Lk9pZ3==*CgwIAR#1##",
            ),
        )

    first, second = with_indexes("AAAA"), with_indexes("BBBB")  # same receiver, new ciphertext
    assert first.address.receiver_key and first.address.receiver_key == second.address.receiver_key
    # a ciphertext without its index: the platform gave no key, so nothing matches on one
    assert to_order("douyin", douyin_ciphertext_only()).address.receiver_key == ""


def test_taobao_oaid_is_the_waybill_handle_and_the_receiver_key() -> None:
    order = to_order("taobao", taobao_with_oaid("1ZnPxk2n7sR0oVJmRWq3jQ8KJf"))
    protected = order.address.protected
    assert protected is not None
    assert (protected.oaid, protected.match_key) == ("1ZnPxk2n7sR0oVJmRWq3jQ8KJf",) * 2
    assert protected.name == protected.phone == ""  # masked, not encrypted: shown as sent
    assert order.address.name == "王**"
    assert audit(order, AuditContext(known_skus=SKUS)).verdict is Verdict.PASS


def test_taobao_ciphertext_in_the_plain_fields_goes_to_protected() -> None:
    cipher = "~Vbq8Gd3HRqWpX1e6mnbq1w==~1~~"
    order = to_order(
        "taobao",
        taobao_with_oaid("OAID-1", receiver_name=cipher, receiver_mobile="", receiver_address=""),
    )
    assert order.address.protected is not None
    assert order.address.protected.name == cipher
    # no phone or street at all: the OAID stands for them at the waybill call
    assert audit(order, AuditContext(known_skus=SKUS)).verdict is Verdict.PASS
    bare = to_order("taobao", {**load("taobao"), "receiver_mobile": "", "receiver_phone": ""})
    result = audit(bare, AuditContext(known_skus=SKUS))
    assert (result.verdict, result.reason) == (Verdict.HOLD, "address_incomplete")


def test_jd_encrypted_consignee_keeps_ciphertext_and_oaid() -> None:
    payload = load("jd")
    name = "AAS/ZFJFpmfveSmeZ0P9i+iPiAVtOMmowMRtStdbSOA32r6wKNWTMeyV2CU1umLIhl0="
    street = "AAS/ZFJFpmfveSmeZ0P9i+iPFTw2VsdIkCtv0YhpKHQZAdj5ssES7b4bjL2KwIPn/iK+ZcCv"
    payload["consigneeInfo"].update(
        {
            "fullname": name,
            "fullAddress": street,
            "mobile": "136*******5",
            "telephone": "136*******5",
            "oaid": "JDOAID9f3k2",
        }
    )
    order = to_order("jd", payload)
    protected = order.address.protected
    assert protected is not None
    assert (protected.name, protected.street, protected.phone) == (name, street, "")
    assert protected.match_key == "JDOAID9f3k2"
    assert order.address.province_code == "GD"
    assert audit(order, AuditContext(known_skus=SKUS)).verdict is Verdict.PASS


def test_merge_groups_compare_the_platform_key_never_masked_values() -> None:
    def group(payload: dict[str, Any]) -> str:
        return merge_group(record_of(to_order("taobao", payload)), "WH-HZ")

    same_a = group(taobao_with_oaid("OAID-A", tid_str="4012345678901230001"))
    same_b = group(taobao_with_oaid("OAID-A", tid_str="4012345678901230002"))
    other = group(taobao_with_oaid("OAID-B", tid_str="4012345678901230003"))
    assert same_a and same_a == same_b
    assert other and other != same_a
    # masked receiver, no key: two people can mask alike, so such an order never merges
    no_key = taobao_with_oaid("")
    assert group(no_key) == ""
    # plain receivers merge as before
    assert group(load("taobao"))


def test_masked_views_hide_ciphertext_and_oaid() -> None:
    order = to_order("taobao", taobao_with_oaid("1ZnPxk2n7sR0oVJmRWq3jQ8KJf"))
    view = mask_order_dict(order.model_dump(mode="json"))
    text = json.dumps(view, ensure_ascii=False)
    assert "1ZnPxk2n7sR0oVJmRWq3jQ8KJf" not in text
    assert view["address"]["protected"]["oaid"].startswith("1***#")


def test_the_wms_command_carries_the_protected_receiver() -> None:
    order = to_order("douyin", douyin_ciphertext_only())
    record = record_of(order)
    lines = [
        CommandLine(line_id=li.line_id, sku=li.sku, quantity=li.quantity) for li in order.lines
    ]
    command = build_command(
        record, CommandKind.OUTBOUND, "WH-CD", lines, order.created_at, cid="C1"
    )
    assert command.ship_to.protected is not None
    assert command.ship_to.protected.phone == DY_TEL
    wire = json.loads(command.model_dump_json())
    assert wire["ship_to"]["protected"]["name"] == DY_NAME


_CIPHER_CHARS = st.text(alphabet="#$~*=+/_-abcXYZ019李 ", max_size=400)


@settings(max_examples=300, deadline=None)
@given(name=_CIPHER_CHARS, tel=_CIPHER_CHARS, detail=_CIPHER_CHARS)
def test_any_receiver_text_maps_or_is_refused_with_a_reason(
    name: str, tel: str, detail: str
) -> None:
    """Whatever the platform puts in the receiver fields, the adapter either maps it (the
    ciphertext bounded, a copy kept only when it looks like ciphertext) or never raises
    anything but its own error."""
    payload = copy.deepcopy(douyin_ciphertext_only(name=name, tel=tel, detail=detail))
    order = to_order("douyin", payload)
    protected = order.address.protected
    if protected is not None:
        assert all(len(v) <= 1024 for v in (protected.name, protected.phone, protected.street))
        assert protected.match_key == "" or len(protected.match_key) == 32
