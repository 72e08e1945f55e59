"""ClickHouse schema, batched fact sink and report queries."""
