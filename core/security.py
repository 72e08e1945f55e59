"""Settings -> the security arguments of every Kafka, Redis and ClickHouse client.

One function per system, used wherever a client is built (the Faust app, the aiokafka and
kafka-python clients, redis-py, clickhouse-driver), so a deployment that turns on SASL_SSL,
a Redis ACL user or ClickHouse TLS gets it everywhere at once, and no client is left talking
plaintext because it built its own arguments. The settings have already refused incomplete
combinations (core/settings.py ``_transport_security``); these functions only translate.

The returned dicts hold secrets in clear (the clients need them): never log them.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from core.settings import (
    KAFKA_SASL_PROTOCOLS,
    KAFKA_TLS_PROTOCOLS,
    Settings,
    secret_value,
)

# Secret settings and the variables a child process reads them from (ops/stack.py child_env).
SECRET_ENV: dict[str, str] = {
    "kafka_sasl_password": "OMS_KAFKA_SASL_PASSWORD",
    "redis_password": "OMS_REDIS_PASSWORD",
    "clickhouse_password": "OMS_CLICKHOUSE_PASSWORD",
    "analytics_salt": "OMS_ANALYTICS_SALT",
    "bootstrap_admin_token": "OMS_ADMIN_TOKEN",
}


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL: the CA file (or the system store), the client
    certificate for mTLS, host name checking as configured; None for plaintext protocols."""
    if settings.kafka_security_protocol not in KAFKA_TLS_PROTOCOLS:
        return None
    cafile = settings.kafka_ssl_cafile
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if settings.kafka_ssl_certfile:
        keyfile = settings.kafka_ssl_keyfile
        context.load_cert_chain(str(settings.kafka_ssl_certfile), str(keyfile) if keyfile else None)
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def kafka_security(settings: Settings) -> dict[str, Any]:
    """security_protocol, ssl_context and the SASL arguments, in the names both aiokafka and
    kafka-python take; plaintext gets only ``security_protocol``."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol in KAFKA_SASL_PROTOCOLS:
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=secret_value(settings.kafka_sasl_password),
        )
    return kwargs


def redis_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url(settings.redis_url, ...)``: the ACL user
    and password from their own settings (a password in the URL is left to the URL), and the
    CA file and host name check for rediss://. Plain redis:// connections refuse ssl_*
    arguments, so they get none."""
    kwargs: dict[str, Any] = {}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    password = secret_value(settings.redis_password)
    if password:
        kwargs["password"] = password
    if urlsplit(settings.redis_url).scheme == "rediss":
        kwargs["ssl_check_hostname"] = settings.redis_ssl_check_hostname
        if settings.redis_ssl_cafile:
            kwargs["ssl_ca_certs"] = str(settings.redis_ssl_cafile)
    return kwargs


def clickhouse_kwargs(settings: Settings) -> dict[str, Any]:
    """host, port, user, password and TLS arguments for ``clickhouse_driver.Client``."""
    kwargs: dict[str, Any] = {
        "host": settings.clickhouse_host,
        "port": settings.clickhouse_port,
        "user": settings.clickhouse_user,
        "password": secret_value(settings.clickhouse_password) or "",
    }
    if settings.clickhouse_secure:
        # verify off must also turn the host name check off: the driver refuses CERT_NONE
        # with check_hostname on.
        verify = settings.clickhouse_verify
        kwargs.update(secure=True, verify=verify, check_hostname=verify)
        if settings.clickhouse_ca_file:
            kwargs["ca_certs"] = str(settings.clickhouse_ca_file)
    return kwargs


def secret_env(settings: Settings) -> dict[str, str]:
    """The secrets a child process needs, as the OMS_* variables it reads them from.

    Secrets are excluded from the settings dump (so from logs and from ops/stack.py's
    settings_env); a child still needs them to connect, and when the settings were built in
    code (tests) the parent's environment may not hold them, so they come from the object."""
    env: dict[str, str] = {}
    for field, variable in SECRET_ENV.items():
        value = secret_value(getattr(settings, field, None))
        if value:
            env[variable] = value
    return env
