"""JSON Schemas of every message on a topic, checked in under ``streams/schemas/``.

Consumers outside Python (the WMS, shop connectors, dashboards) code against these files, so they
are generated from the models rather than written by hand, in serialization mode (what is on the
wire: money as strings), with sorted keys so a diff shows only real changes. A unit test fails
when they are stale; regenerate with ``python -m streams.schema_export``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from streams.models import Order
from streams.topics import ALL_TOPICS

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def topic_models() -> list[type[BaseModel]]:
    """Every model that is the value of some topic, plus Order; in a stable order."""
    models: dict[str, type[BaseModel]] = {Order.__name__: Order}
    for spec in ALL_TOPICS:
        if spec.model is not None:
            models.setdefault(spec.model.__name__, spec.model)
    return [models[name] for name in sorted(models)]


def topic_catalogue() -> dict[str, dict[str, Any]]:
    """Topic suffix -> partition key, value model name (None for raw channel bytes) and doc."""
    return {
        spec.suffix: {
            "key": spec.key,
            "model": spec.model.__name__ if spec.model is not None else None,
            "doc": spec.doc,
        }
        for spec in ALL_TOPICS
    }


def export_schemas(out_dir: Path = SCHEMA_DIR) -> list[Path]:
    """Write ``<Model>.json`` for each topic model and ``topics.json``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for model in topic_models():
        path = out_dir / f"{model.__name__}.json"
        path.write_text(_dump(model.model_json_schema(mode="serialization")), encoding="utf-8")
        written.append(path)
    path = out_dir / "topics.json"
    path.write_text(_dump(topic_catalogue()), encoding="utf-8")
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0]) if args else SCHEMA_DIR
    for path in export_schemas(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
