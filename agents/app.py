"""The Faust app: topics, settings tuned for quick start-up, and agent registration.

Processing guarantee is at-least-once (Faust's default): the local broker has no transactions,
and they would not cover Redis or ClickHouse anyway. Every effect is idempotent instead; see
docs/decisions/0001-at-least-once.md.
"""

from __future__ import annotations

import faust

from agents import transport
from core.security import kafka_ssl_context
from core.settings import KAFKA_SASL_PROTOCOLS, Settings, secret_value
from streams import topics


def create_app(settings: Settings) -> faust.App:
    scheme = transport.register()
    datadir = settings.data_dir / "faust" / settings.app_id  # not {app_id}-data in the cwd
    datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only its own subfolders
    app = faust.App(
        settings.app_id,
        broker=f"{scheme}://{settings.kafka_bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(datadir),
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
    app.idle_fetch_max_wait_ms = settings.kafka_idle_fetch_max_wait_ms
    app.consumer_buffer_bytes = settings.consumer_buffer_bytes  # read by agents/transport.py
    return app


def _credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """SASL/TLS for production Kafka, from the same TLS context every other OMS Kafka client
    uses (core/security.py); the local broker is plaintext on loopback (None).

    Faust derives the protocol from the credentials: SASLCredentials with a context is
    SASL_SSL, without one SASL_PLAINTEXT; SSLCredentials is SSL (with client certs: mTLS)."""
    protocol = settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol in KAFKA_SASL_PROTOCOLS:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=secret_value(settings.kafka_sasl_password),
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def raw_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    """All channels' raw topics, consumed by one agent: their bytes are channel-specific."""
    return app.topic(
        *(spec.name(settings.topic_prefix) for spec in topics.RAW_TOPICS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
