"""Production security settings: what each client is given (Faust credentials, aiokafka and
kafka-python arguments, redis-py and clickhouse-driver connections), the combinations refused
at load, and secrets that never show in a repr, a dump, a log line or a validation error.

The local Tansu broker has no TLS or SASL, so the Kafka side is checked up to the arguments
the clients receive (tests/integration/test_security.py connects to a password-protected
Redis and ClickHouse for real)."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from agents.app import _credentials, create_app
from analytics.client import connect as clickhouse_connect
from core.kafka import client_kwargs, consumer_kwargs, kafka_admin
from core.security import clickhouse_kwargs, kafka_security, redis_kwargs, secret_env
from core.settings import Settings, mask_url
from ops import stack
from state.redis import connect, connect_async, connect_batched

SECRETS = ("kafka-s3cret-pw", "redis-s3cret-pw", "ch-s3cret-pw")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA certificate and a client certificate + key, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder = tmp_path_factory.mktemp("pki")
    files = {name: folder / f"{name}.pem" for name in ("cert", "key")}
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [
            *command,
            "-subj",
            "/CN=oms-test",
            "-keyout",
            str(files["key"]),
            "-out",
            str(files["cert"]),
        ],
        check=True,
        capture_output=True,
    )
    return {"ca": files["cert"], **files}


def secure_settings(pki: dict[str, Path], **overrides: Any) -> Settings:
    """Every secure option on: SASL_SSL with SCRAM, mTLS files, Redis ACL over TLS,
    ClickHouse with a password over TLS."""
    values: dict[str, Any] = {
        "kafka_bootstrap": "kafka-1.example:9093,kafka-2.example:9093",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "oms",
        "kafka_sasl_password": SECRETS[0],
        "kafka_ssl_cafile": pki["ca"],
        "kafka_ssl_certfile": pki["cert"],
        "kafka_ssl_keyfile": pki["key"],
        "redis_url": "rediss://redis.example:6380/0",
        "redis_username": "oms",
        "redis_password": SECRETS[1],
        "redis_ssl_cafile": pki["ca"],
        "clickhouse_host": "ch.example",
        "clickhouse_port": 9440,
        "clickhouse_user": "oms",
        "clickhouse_password": SECRETS[2],
        "clickhouse_secure": True,
        "clickhouse_ca_file": pki["ca"],
    }
    values.update(overrides)
    return Settings(**values)


# --------------------------------------------------------------------------- Kafka


def test_plaintext_by_default() -> None:
    settings = Settings()
    assert kafka_security(settings) == {"security_protocol": "PLAINTEXT"}
    assert _credentials(settings) is None
    assert client_kwargs(settings) == {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_reaches_aiokafka_and_kafka_python(pki: dict[str, Path]) -> None:
    settings = secure_settings(pki)
    kwargs = kafka_security(settings)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "oms"
    assert kwargs["sasl_plain_password"] == SECRETS[0]
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "oms-test"),),)]
    for built in (client_kwargs(settings), consumer_kwargs(settings)):
        assert {k: built[k] for k in kwargs if k != "ssl_context"} == {
            k: v for k, v in kwargs.items() if k != "ssl_context"
        }
        assert isinstance(built["ssl_context"], ssl.SSLContext)


def test_kafka_admin_gets_the_security_arguments(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """core/kafka.py's kafka-python admin (topic creation): every security argument survives
    its filter of the options the installed kafka-python knows."""
    import kafka.admin

    seen: dict[str, Any] = {}

    class FakeAdmin:
        DEFAULT_CONFIG = kafka.admin.KafkaAdminClient.DEFAULT_CONFIG

        def __init__(self, **config: Any) -> None:
            seen.update(config)

    monkeypatch.setattr(kafka.admin, "KafkaAdminClient", FakeAdmin)
    kafka_admin(secure_settings(pki))
    assert seen["bootstrap_servers"] == ["kafka-1.example:9093", "kafka-2.example:9093"]
    assert seen["security_protocol"] == "SASL_SSL"
    assert seen["sasl_mechanism"] == "SCRAM-SHA-512"
    assert seen["sasl_plain_username"] == "oms"
    assert seen["sasl_plain_password"] == SECRETS[0]
    assert isinstance(seen["ssl_context"], ssl.SSLContext)


def test_faust_credentials_match_the_aiokafka_arguments(pki: dict[str, Path]) -> None:
    """What Faust hands its own aiokafka clients equals what the other OMS clients get."""
    settings = secure_settings(pki)
    credentials = _credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    ours = kafka_security(settings)
    assert {k: v for k, v in auth.items() if k != "ssl_context"} == {
        k: v for k, v in ours.items() if k != "ssl_context"
    }
    assert auth["ssl_context"].get_ca_certs() == ours["ssl_context"].get_ca_certs()
    app = create_app(settings)
    assert app.conf.broker_credentials is not None
    assert app.conf.broker_credentials.protocol.value == "SASL_SSL"
    assert SECRETS[0] not in repr(app.conf.broker_credentials)


def test_sasl_plaintext_defaults_to_plain() -> None:
    settings = Settings(
        kafka_security_protocol="sasl_plaintext",
        kafka_sasl_username="oms",
        kafka_sasl_password=SECRETS[0],
    )
    assert settings.kafka_sasl_mechanism == "PLAIN"
    kwargs = kafka_security(settings)
    assert "ssl_context" not in kwargs and kwargs["sasl_mechanism"] == "PLAIN"
    credentials = _credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SASL_PLAINTEXT"


def test_mutual_tls_without_sasl(pki: dict[str, Path]) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki["ca"],
        kafka_ssl_certfile=pki["cert"],
        kafka_ssl_keyfile=pki["key"],
        kafka_ssl_check_hostname=False,
    )
    kwargs = kafka_security(settings)
    assert kwargs.keys() == {"security_protocol", "ssl_context"}
    assert kwargs["ssl_context"].check_hostname is False
    assert kwargs["ssl_context"].verify_mode is ssl.CERT_REQUIRED  # the chain is still checked
    credentials = _credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


def test_ssl_with_the_system_trust_store() -> None:
    kwargs = kafka_security(Settings(kafka_security_protocol="SSL"))
    assert kwargs["ssl_context"].verify_mode is ssl.CERT_REQUIRED


def test_mechanism_and_protocol_spellings() -> None:
    settings = Settings(
        kafka_security_protocol="sasl-ssl",
        kafka_sasl_mechanism="scram_sha_256",
        kafka_sasl_username="oms",
        kafka_sasl_password=SECRETS[0],
    )
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == (
        "SASL_SSL",
        "SCRAM-SHA-256",
    )


# --------------------------------------------------------------------------- invalid


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kafka_sasl_username": None}, "SASL_SSL needs OMS_KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_password": None}, "SASL_SSL needs OMS_KAFKA_SASL_PASSWORD"),
        ({"kafka_ssl_cafile": "/nowhere/ca.pem"}, "OMS_KAFKA_SSL_CAFILE: no such file"),
        ({"kafka_ssl_certfile": None}, "OMS_KAFKA_SSL_KEYFILE needs OMS_KAFKA_SSL_CERTFILE"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"kafka_sasl_mechanism": "MD5"}, "'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_security_protocol": "SSL"}, "OMS_KAFKA_SASL_USERNAME is set but"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT"},
            "OMS_KAFKA_SSL_CAFILE is set but OMS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT",
        ),
        ({"redis_url": "redis://redis.example:6379/0"}, "OMS_REDIS_SSL_CAFILE needs a rediss://"),
        ({"redis_url": "http://redis.example/0"}, "OMS_REDIS_URL must be redis://"),
        (
            {"redis_url": "rediss://:other@redis.example:6380/0"},
            "the password is in both OMS_REDIS_URL and OMS_REDIS_PASSWORD",
        ),
        ({"redis_password": None}, "OMS_REDIS_USERNAME needs OMS_REDIS_PASSWORD"),
        ({"redis_ssl_cafile": "/nowhere/ca.pem"}, "OMS_REDIS_SSL_CAFILE: no such file"),
        ({"clickhouse_secure": False}, "OMS_CLICKHOUSE_CA_FILE needs OMS_CLICKHOUSE_SECURE"),
        ({"clickhouse_ca_file": "/nowhere/ca.pem"}, "OMS_CLICKHOUSE_CA_FILE: no such file"),
    ],
)
def test_invalid_combinations_fail_at_load(
    pki: dict[str, Path], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        secure_settings(pki, **overrides)
    text = str(caught.value)
    assert message in text
    for secret in (*SECRETS, "other"):
        assert secret not in text  # the error never echoes its input


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(kafka_security_protocol="SASL_SSL", clickhouse_ca_file="/nowhere/ca.pem")
    text = str(caught.value)
    assert "OMS_KAFKA_SASL_USERNAME" in text and "OMS_KAFKA_SASL_PASSWORD" in text
    assert "OMS_CLICKHOUSE_CA_FILE" in text


def test_settings_from_the_environment(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variables as a deployment sets them, empty ones (compose ``${VAR:-}``) unset."""
    env = {
        "OMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "OMS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "OMS_KAFKA_SASL_USERNAME": "oms",
        "OMS_KAFKA_SASL_PASSWORD": SECRETS[0],
        "OMS_KAFKA_SSL_CAFILE": str(pki["ca"]),
        "OMS_KAFKA_SSL_CERTFILE": "",
        "OMS_REDIS_USERNAME": "oms",
        "OMS_REDIS_PASSWORD": SECRETS[1],
        "OMS_REDIS_SSL_CAFILE": "",
        "OMS_CLICKHOUSE_PASSWORD": SECRETS[2],
        "OMS_CLICKHOUSE_SECURE": "true",
        "OMS_CLICKHOUSE_VERIFY": "false",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.kafka_ssl_certfile is None and settings.redis_ssl_cafile is None
    assert kafka_security(settings)["sasl_plain_password"] == SECRETS[0]
    assert redis_kwargs(settings) == {"username": "oms", "password": SECRETS[1]}
    assert clickhouse_kwargs(settings)["password"] == SECRETS[2]
    assert clickhouse_kwargs(settings)["verify"] is False


# --------------------------------------------------------------------------- Redis


def test_redis_connections_carry_user_password_and_tls(pki: dict[str, Path]) -> None:
    import redis
    import redis.asyncio as aioredis

    settings = secure_settings(pki)
    wanted = {
        "username": "oms",
        "password": SECRETS[1],
        "ssl_ca_certs": str(pki["ca"]),
        "ssl_check_hostname": True,
    }
    clients = {
        "connect": (connect(settings), redis.SSLConnection),
        "connect_async": (connect_async(settings), aioredis.SSLConnection),
        "connect_batched": (connect_batched(settings), aioredis.SSLConnection),
        "stack.redis_client": (stack.redis_client(settings), redis.SSLConnection),
    }
    for name, (client, connection_class) in clients.items():
        pool = client.connection_pool
        assert issubclass(pool.connection_class, connection_class), name
        assert {k: pool.connection_kwargs.get(k) for k in wanted} == wanted, name


def test_plain_redis_gets_no_tls_arguments() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6379/0", redis_password=SECRETS[1])
    assert redis_kwargs(settings) == {"password": SECRETS[1]}
    pool = connect_batched(settings).connection_pool
    assert pool.connection_kwargs["password"] == SECRETS[1]
    assert "ssl_ca_certs" not in pool.connection_kwargs


def test_a_password_in_the_url_still_works_and_is_masked() -> None:
    settings = Settings(redis_url="redis://oms:url%40pw@127.0.0.1:6379/0")
    assert connect(settings).connection_pool.connection_kwargs["password"] == "url@pw"
    assert stack.redis_address(settings) == ("127.0.0.1", 6379, "url@pw")
    with pytest.raises(ValueError) as caught:
        stack.redis_address(Settings(redis_url="redis://:url%40pw@127.0.0.1/0"))
    assert "url%40pw" not in str(caught.value) and "***" in str(caught.value)


def test_the_local_redis_takes_the_password_setting() -> None:
    """./oms up with OMS_REDIS_PASSWORD: the generated redis.conf asks for it."""
    settings = Settings(redis_url="redis://127.0.0.1:16999/0", redis_password=SECRETS[1])
    assert stack.redis_address(settings)[2] == SECRETS[1]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://oms:p%40ss@redis.example:6380/2", "rediss://oms:***@redis.example:6380/2"),
        ("redis://oms@127.0.0.1:6379/0", "redis://oms@127.0.0.1:6379/0"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


# --------------------------------------------------------------------------- ClickHouse


def test_clickhouse_clients_carry_password_and_tls(pki: dict[str, Path]) -> None:
    settings = secure_settings(pki)
    for client in (clickhouse_connect(settings), stack.clickhouse_client(settings)):
        connection = client.connection
        assert list(connection.hosts) == [("ch.example", 9440)]
        assert (connection.user, connection.password) == ("oms", SECRETS[2])
        assert connection.secure_socket and connection.verify_cert and connection.check_hostname
        assert connection.ssl_options["ca_certs"] == str(pki["ca"])


def test_clickhouse_tls_without_verification_builds_a_context(pki: dict[str, Path]) -> None:
    """verify=false (a test cluster's self-signed certificate) must still make a context."""
    settings = secure_settings(pki, clickhouse_verify=False)
    connection = clickhouse_connect(settings).connection
    # what the driver's _create_socket hands it when verify is off
    context = connection._create_ssl_context({**connection.ssl_options, "cert_reqs": ssl.CERT_NONE})
    assert context.verify_mode is ssl.CERT_NONE and not context.check_hostname


def test_clickhouse_plain_by_default() -> None:
    settings = Settings()
    assert clickhouse_kwargs(settings) == {
        "host": settings.clickhouse_host,
        "port": settings.clickhouse_port,
        "user": "default",
        "password": "",
    }
    assert clickhouse_connect(settings).connection.secure_socket is False


def test_local_users_xml_takes_the_secret_password() -> None:
    settings = Settings(clickhouse_user="oms", clickhouse_password="p<w>")
    assert "<password>p&lt;w&gt;</password>" in stack.clickhouse_users(settings)


# --------------------------------------------------------------------------- secrets


def test_secrets_never_in_repr_dumps_or_logs(
    pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    settings = secure_settings(pki)
    with caplog.at_level(logging.INFO):
        logging.getLogger("oms.test").info("settings: %s / %r", settings, settings)
    shown = [
        repr(settings),
        str(settings),
        repr(settings.model_dump()),
        settings.model_dump_json(),
        repr(stack.settings_env(settings)),
        caplog.text,
    ]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text


def test_children_get_the_secrets_they_connect_with(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built in code (as tests do), the secrets are not in the parent's environment: the
    child's environment gets each one under the variable it reads, and a stale one in the
    parent's environment is replaced."""
    monkeypatch.setenv("OMS_REDIS_PASSWORD", "stale")
    settings = secure_settings(pki)
    env = stack.child_env(settings)
    assert env["OMS_KAFKA_SASL_PASSWORD"] == SECRETS[0]
    assert env["OMS_REDIS_PASSWORD"] == SECRETS[1]
    assert env["OMS_CLICKHOUSE_PASSWORD"] == SECRETS[2]
    assert env["OMS_KAFKA_SSL_CAFILE"] == str(pki["ca"])
    assert secret_env(settings).keys() <= {
        "OMS_KAFKA_SASL_PASSWORD",
        "OMS_REDIS_PASSWORD",
        "OMS_CLICKHOUSE_PASSWORD",
        "OMS_ADMIN_TOKEN",
    }


def test_a_secret_left_unset_is_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_REDIS_PASSWORD", "stale")
    env = stack.child_env(Settings(redis_password=None))
    assert "OMS_REDIS_PASSWORD" not in env
