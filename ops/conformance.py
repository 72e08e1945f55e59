"""`./oms schema check`: every message on every typed topic against its published JSON Schema.

Consumers outside this code base (a WMS, shop connectors, dashboards) code against the files in
``streams/schemas/`` (streams/schema_export.py), not against the pydantic models. So conformance
is checked with a JSON Schema validator over what is really on the topics, from the beginning
to the end offsets at the start of the check: a message the workers produced that a consumer
reading the schema would refuse is a bug here, whatever pydantic thinks of it. The demo runs the
check after its burst; the report names each failing message by topic, partition and offset,
with the schema rule and the field path it broke, never a value (messages carry buyers' data).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from core.kafka import read_topic
from core.settings import Settings
from streams.schema_export import SCHEMA_DIR
from streams.topics import ALL_TOPICS, RAW_TOPICS

MAX_EXAMPLES = 5  # failing messages named per topic


@dataclass
class TopicConformance:
    topic: str
    schema: str
    messages: int = 0
    failing: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class Conformance:
    topics: list[TopicConformance]

    @property
    def messages(self) -> int:
        return sum(t.messages for t in self.topics)

    @property
    def failing(self) -> int:
        return sum(t.failing for t in self.topics)

    @property
    def ok(self) -> bool:
        return self.failing == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "messages": self.messages,
            "failing": self.failing,
            "topics": [vars(t) for t in self.topics],
        }


def validator_for(model_name: str) -> Draft202012Validator:
    """The published schema of a model (pydantic writes JSON Schema draft 2020-12)."""
    schema = json.loads((SCHEMA_DIR / f"{model_name}.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(validator: Draft202012Validator, value: bytes | None) -> list[str]:
    """What is wrong with one message, as schema rule + field path (no values)."""
    try:
        document = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return ["not JSON"]
    return [
        f"{error.validator} at /{'/'.join(str(p) for p in error.absolute_path)}"
        for error in validator.iter_errors(document)
    ]


def check_topic(topic: str, model_name: str, records: list[Any]) -> TopicConformance:
    validator = validator_for(model_name)
    result = TopicConformance(topic, model_name)
    for record in records:
        result.messages += 1
        found = problems(validator, record.value)
        if found:
            result.failing += 1
            if len(result.examples) < MAX_EXAMPLES:
                where = f"{record.topic}[{record.partition}]@{record.offset}"
                result.examples.append(f"{where}: {'; '.join(found[:3])}")
    return result


def check_topics(settings: Settings) -> Conformance:
    """Every typed topic of this deployment (its topic prefix), read whole. The raw channel
    topics are inputs, not contracts the OMS keeps: what breaks the own channel's Order schema
    there is dead-lettered with a reason (./oms dlq list), by design."""
    results = []
    raw = set(RAW_TOPICS)
    for spec in ALL_TOPICS:
        if spec.model is None or spec in raw:
            continue
        topic = spec.name(settings.topic_prefix)
        records = asyncio.run(read_topic(settings, topic))
        results.append(check_topic(topic, spec.model.__name__, records))
    return Conformance(results)


def format_conformance(report: Conformance) -> str:
    lines = [
        f"{t.topic:32} {t.schema:18} {t.messages:8,} messages, {t.failing:,} not conforming"
        for t in report.topics
    ]
    for t in report.topics:
        lines += [f"  {example}" for example in t.examples]
    verdict = "ok" if report.ok else "MESSAGES THAT BREAK THEIR SCHEMA"
    lines.append(f"schema conformance: {report.messages:,} messages, {verdict}")
    return "\n".join(lines)
