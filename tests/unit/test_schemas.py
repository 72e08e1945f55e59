"""The checked-in JSON Schemas must be exactly what the models generate today."""

from __future__ import annotations

import json
from pathlib import Path

from streams.schema_export import SCHEMA_DIR, export_schemas, topic_models
from streams.topics import ALL_TOPICS

STALE = "streams/schemas is stale: run `python -m streams.schema_export` and check the files in"


def test_checked_in_schemas_are_current(tmp_path: Path) -> None:
    fresh = {p.name: p.read_bytes() for p in export_schemas(tmp_path)}
    checked_in = {p.name: p.read_bytes() for p in SCHEMA_DIR.glob("*.json")}
    assert sorted(checked_in) == sorted(fresh), STALE
    changed = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not changed, f"{STALE} (differs: {', '.join(changed)})"


def test_every_topic_model_has_a_schema() -> None:
    names = {p.stem for p in SCHEMA_DIR.glob("*.json")}
    for spec in ALL_TOPICS:
        if spec.model is not None:
            assert spec.model.__name__ in names
    assert "Order" in names
    assert {m.__name__ for m in topic_models()} | {"topics"} == names


def test_topics_catalogue() -> None:
    topics = json.loads((SCHEMA_DIR / "topics.json").read_text(encoding="utf-8"))
    assert set(topics) == {spec.suffix for spec in ALL_TOPICS}
    assert topics["raw.own"]["model"] == "Order"
    assert topics["raw.taobao"]["model"] is None
    assert topics["channel.stock"]["key"] == "sku"


def test_money_is_a_string_on_the_wire() -> None:
    schema = json.loads((SCHEMA_DIR / "Order.json").read_text(encoding="utf-8"))
    assert schema["properties"]["total"]["type"] == "string"
    assert (SCHEMA_DIR / "Order.json").read_text(encoding="utf-8").endswith("}\n")
