"""The Faust app: topics, settings tuned for quick start-up, and agent registration.

Processing guarantee is at-least-once (Faust's default): the local broker has no transactions,
and they would not cover Redis or ClickHouse anyway. Every effect is idempotent instead; see
docs/decisions/0001-at-least-once.md.
"""

from __future__ import annotations

import faust

from agents import transport
from ops.settings import Settings
from streams import topics


def create_app(settings: Settings) -> faust.App:
    scheme = transport.register()
    app = faust.App(
        settings.app_id,
        broker=f"{scheme}://{settings.kafka_bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir / "faust" / settings.app_id),  # not {app_id}-data in the cwd
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        # Start-up: the defaults wait for rebalances and recoveries sized for big clusters.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=20.0,
        stream_recovery_delay=0.0,
        stream_wait_empty=False,
        broker_commit_interval=1.0,
        producer_linger=0.005,
        producer_max_batch_size=512 * 1024,
        producer_acks=-1,
        web_enabled=False,
        logging_config=None,
    )
    app.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms  # read by agents/transport.py
    return app


def _credentials(settings: Settings) -> faust.SASLCredentials | None:
    """SASL/TLS for production Kafka; the local broker is plaintext on loopback."""
    if settings.kafka_sasl_mechanism and settings.kafka_sasl_username:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password or "",
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=faust.ssl.create_default_context()
            if settings.kafka_security_protocol.upper().startswith("SASL_SSL")
            else None,
        )
    return None


def raw_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    """All channels' raw topics, consumed by one agent: their bytes are channel-specific."""
    return app.topic(
        *(spec.name(settings) for spec in topics.RAW_TOPICS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
