"""Orders whose receiver the platform encrypts or masks, in the platforms' native shapes,
through the pipeline on the real Redis: released (not held), routed on the plain region, the
ciphertext and OAID carried to the WMS in the outbound command, and orders of one receiver
merged by the platform's own key."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agents.pipeline import OrderPipeline
from agents.timers import due_merges
from core.settings import Settings
from order.decisions import ShopRules
from state.keys import Keys
from streams.messages import CommandKind, OrderState
from streams.normalise import RawInput
from tests.integration.test_lifecycle import figures, reconciles, state_of
from tests.integration.test_pipeline import commands, stock
from tests.unit.test_protected_receiver import (
    DY_DETAIL,
    DY_NAME,
    DY_TEL,
    douyin_ciphertext_only,
    taobao_with_oaid,
)

pytestmark = pytest.mark.integration


class NativeFeed:
    """Raw channel payloads as the ingest puts them on ``oms.raw.<channel>``."""

    def __init__(self) -> None:
        self.offset = 0

    def raw(self, channel: str, payload: dict[str, Any]) -> RawInput:
        self.offset += 1
        value = json.dumps(payload, ensure_ascii=False).encode()
        return RawInput(channel, value, f"oms.raw.{channel}", 0, self.offset, str(self.offset))


async def test_a_douyin_order_with_only_ciphertext_is_released_with_it(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("SKU-TEA-LONGJING", "WH-CD", 5), ("SKU-MASK-N95-10", "WH-CD", 5)])
    result = await pipeline.process([NativeFeed().raw("douyin", douyin_ciphertext_only())])
    [outbound] = commands(result)
    assert outbound.kind is CommandKind.OUTBOUND
    assert outbound.warehouse == "WH-CD"  # routed on the plain region (Sichuan)
    protected = outbound.ship_to.protected
    assert protected is not None
    assert (protected.name, protected.phone, protected.street) == (DY_NAME, DY_TEL, DY_DETAIL)
    assert await state_of(pipeline, outbound.order_id) is OrderState.RELEASED
    assert figures(redis_settings, "SKU-TEA-LONGJING")["WH-CD"]["reserved"] == 2
    assert reconciles(redis_settings)


async def test_taobao_orders_of_one_oaid_merge_and_another_oaid_ships_alone(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("SKU-PHONE-X1", "WH-SH", 10), ("SKU-CASE-C3", "WH-SH", 10)])
    pipeline.decisions.shops["taobao/极客数码旗舰店"] = ShopRules(merge_window_s=30)
    feed = NativeFeed()
    payloads = [
        taobao_with_oaid("OAID-SAME", tid_str="4012345678901230001"),
        taobao_with_oaid("OAID-SAME", tid_str="4012345678901230002"),
        taobao_with_oaid("OAID-OTHER", tid_str="4012345678901230003"),
    ]
    first = await pipeline.process([feed.raw("taobao", p) for p in payloads])
    assert commands(first) == []  # all three wait in their merge windows
    keys = Keys(redis_settings.redis_prefix)
    actions = await due_merges(pipeline.client, keys, now=time.time() + 31)
    assert sorted(len(a.members) for a in actions) == [1, 2]
    result = await pipeline.apply_actions(actions)
    outbound = [c for c in commands(result) if c.kind is CommandKind.OUTBOUND]
    assert len(outbound) == 2
    merged = next(c for c in outbound if len(c.merged_order_ids) == 2)
    assert merged.ship_to.protected is not None
    assert merged.ship_to.protected.oaid == "OAID-SAME"  # the waybill call takes it + the tid
    alone = next(c for c in outbound if not c.merged_order_ids)
    assert alone.ship_to.protected is not None and alone.ship_to.protected.oaid == "OAID-OTHER"
    for command in outbound:
        for order_id in command.merged_order_ids or [command.order_id]:
            assert await state_of(pipeline, order_id) is OrderState.RELEASED
    assert reconciles(redis_settings)
