"""One package per sales channel (streams/channels/): every channel has one, each names its own
parts, and what the rest of the OMS reads from them (Kafka keys, write-backs, load generator
shop headers) comes from there."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ops.loadgen import SHOP_HEADERS
from order.channel_updates import channel_update
from streams.channels import ADAPTERS, CHANNELS, ChannelSpec
from streams.channels.jd import SPEC as JD
from streams.channels.taobao import SPEC as TAOBAO
from streams.keys import ORDER_ID_FIELDS
from streams.messages import OrderState
from streams.models import Channel
from tests.unit.records import make_order, record_in

PACKAGE = Path(__file__).resolve().parents[2] / "streams" / "channels"
AT = datetime(2024, 11, 11, 8, 0, tzinfo=UTC)


def test_every_channel_is_one_package_with_its_parts() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == {c.value for c in Channel} == {c.value for c in CHANNELS}
    for channel in Channel:
        folder = PACKAGE / channel.value
        assert (folder / "adapter.py").is_file() and (folder / "payload.py").is_file()
        spec = CHANNELS[channel]
        assert spec.channel is channel and ADAPTERS[channel] is spec.adapter
        assert ORDER_ID_FIELDS[channel.value] == spec.order_id_fields


def test_a_spec_refuses_another_channels_parts() -> None:
    with pytest.raises(ValueError, match="another channel"):
        ChannelSpec(
            channel=Channel.JD,
            adapter=TAOBAO.adapter,
            order_id_fields=("orderId",),
            write_back={},
            carrier_codes={},
            payloads=JD.payloads,
        )
    with pytest.raises(ValueError, match="no order id field"):
        ChannelSpec(
            channel=Channel.JD,
            adapter=JD.adapter,
            order_id_fields=(),
            write_back={},
            carrier_codes={},
            payloads=JD.payloads,
        )


@pytest.mark.parametrize(
    ("channel", "status", "api", "carrier"),
    [
        (Channel.JD, "shipped", "jingdong.pop.order.shipment", "467"),
        (Channel.TAOBAO, "refunded", "taobao.rp.refund.agree", "SF"),
        (Channel.DOUYIN, "shipped", "order.logisticsAdd", "shunfeng"),
        (Channel.AMAZON, "cancelled", "submitFeed POST_ORDER_ACKNOWLEDGEMENT_DATA", "SF Express"),
        (Channel.SHOPIFY, "shipped", "POST /fulfillments.json", "SF Express"),
        (Channel.OWN, "shipped", "webhook", "SF"),  # the OMS's own code
        (Channel.JD, "exchanged", "webhook", "467"),  # a status without an API: the webhook
    ],
)
def test_write_backs_name_the_channels_api_and_carrier_code(
    channel: Channel, status: str, api: str, carrier: str
) -> None:
    order = make_order({"A": 1}).model_copy(update={"channel": channel})
    record = record_in(OrderState.SHIPPED, {"A": 1}, order=order)
    update = channel_update(record, status, AT, cause="test", carrier="SF")
    assert update.extra["api"] == api and update.extra["channel_carrier"] == carrier


def test_a_carrier_the_channel_does_not_list_goes_as_the_oms_code() -> None:
    order = make_order({"A": 1}).model_copy(update={"channel": Channel.DOUYIN})
    record = record_in(OrderState.SHIPPED, {"A": 1}, order=order)
    update = channel_update(record, "shipped", AT, cause="test", carrier="EMS")
    assert update.extra["channel_carrier"] == "EMS"


def test_the_load_generator_sets_a_shop_header_only_where_the_payload_names_no_shop() -> None:
    assert SHOP_HEADERS == {
        "shopify": "geek-digital.myshopify.com",
        "amazon": "amazon-cn",
    }
