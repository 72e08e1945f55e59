"""Every field of every message a consumer reads is bounded (issue 13, items 4 and 7): each
string has a maximum length, each list and map a maximum size, each integer a range, nested
models too. Read from the models' validation JSON Schemas, so a new unbounded field fails here
before it ships; then a few bounds are shown refusing what they should."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from streams.messages import (
    AfterSalesRequest,
    ChannelStock,
    ChannelUpdate,
    DlqRecord,
    FulfilmentCommand,
    OperatorAction,
    OrderEvent,
    OrderEvents,
    WmsEvent,
)
from streams.models import Order
from streams.schema_export import topic_models

# The inbound ones (a WMS, operator tools, shops' connectors write them) and every model the
# fact sink parses (analytics/fact_consumer.py FACT_TOPICS: events, DLQ, commands, WMS,
# after-sales).
MODELS = [
    WmsEvent,
    OperatorAction,
    AfterSalesRequest,
    ChannelUpdate,
    ChannelStock,
    OrderEvents,
    OrderEvent,
    DlqRecord,
    FulfilmentCommand,
    Order,  # the own channel's raw topic, and the snapshot order events carry
]
# Bounded by other means, named here so nothing else slips through:
MONEY = {
    "amount",
    "paid_total",
    "total",
    "shipping_fee",
    "discount_total",
    "unit_price",
    "discount",
    "paid_amount",
    "paid",  # Presale.paid
}  # Decimal: finite, +-MAX_MONEY, 4 places (models.Money)
EDGE_BOUNDED = {"Order.raw"}  # channel extras: bounded_extras and MAX_ORDER_BYTES at the edge


def unbounded(schema: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    """Paths in a JSON Schema whose values have no bound."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return unbounded(defs[name], defs, name)
    if "anyOf" in schema:
        if path.rsplit(".", 1)[-1] in MONEY:
            return []
        return [p for option in schema["anyOf"] for p in unbounded(option, defs, path)]
    if "enum" in schema or "const" in schema:
        return []
    kind = schema.get("type")
    problems: list[str] = []
    if kind == "string" and schema.get("format") not in ("date-time",):
        if "maxLength" not in schema:
            problems.append(path)
    elif kind == "integer":
        low = "minimum" in schema or "exclusiveMinimum" in schema
        if "maximum" not in schema or not low:
            problems.append(path)
    elif kind == "array":
        if "maxItems" not in schema:
            problems.append(path)
        problems += unbounded(schema.get("items", {}), defs, f"{path}[]")
    elif kind == "object":
        if "properties" in schema:
            for name, prop in schema["properties"].items():
                problems += unbounded(prop, defs, f"{path}.{name}")
        elif path not in EDGE_BOUNDED:
            if "maxProperties" not in schema:
                problems.append(path)
            if "maxLength" not in schema.get("propertyNames", {}):
                problems.append(f"{path}{{keys}}")
            problems += unbounded(schema.get("additionalProperties", {}), defs, f"{path}{{}}")
    return problems


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_is_bounded(model: type[BaseModel]) -> None:
    schema = model.model_json_schema(mode="validation")
    assert unbounded(schema, schema.get("$defs", {}), model.__name__) == []


def test_every_topic_model_is_checked_here() -> None:
    assert set(topic_models()) <= set(MODELS)


AT = datetime(2026, 11, 11, tzinfo=UTC)
WMS = {
    "event_id": "W1",
    "command_id": "C1",
    "order_id": "O1",
    "kind": "shipped",
    "warehouse": "WH1",
    "at": AT,
}


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"tracking_number": "1" * 129}, "tracking_number"),
        ({"carrier": "c" * 65}, "carrier"),
        ({"detail": "d" * 2001}, "detail"),
        ({"command_id": "C" * 129}, "command_id"),
        ({"lines": [{"line_id": "L", "sku": "S", "quantity": 1}] * 10_001}, "lines"),
        ({"lines": [{"line_id": "L", "sku": "S", "quantity": 1_000_001}]}, "quantity"),
        ({"lines": [{"line_id": "L", "sku": "S", "quantity": 2.0}]}, "quantity"),
        ({"at": datetime(2100, 1, 1, tzinfo=UTC)}, "at"),
    ],
)
def test_wms_strings_lists_and_numbers_are_refused_beyond_their_bounds(
    changes: dict[str, Any], where: str
) -> None:
    """Item 4: WMS detail, tracking numbers and carrier had no limit at all."""
    with pytest.raises(ValidationError) as refused:
        WmsEvent(**{**WMS, **changes})
    assert where in str(refused.value.errors()[0]["loc"])
    assert WmsEvent(**WMS).tracking_number == ""  # and a normal one still parses


def test_channel_update_extras_are_text_and_bounded() -> None:
    base = {
        "update_id": "U1",
        "channel": "jd",
        "shop_id": "s",
        "external_id": "e",
        "order_id": "O1",
        "status": "shipped",
        "at": AT,
    }
    assert ChannelUpdate(**base, extra={"api": "x", "amount": "1.00"}).extra["api"] == "x"
    for extra in ({f"k{i}": "v" for i in range(33)}, {"k": "v" * 257}, {"k" * 65: "v"}):
        with pytest.raises(ValidationError):
            ChannelUpdate(**base, extra=extra)
