"""One settings object for every process, read once from OMS_* variables and an optional .env.

Defaults describe the embedded local stack (loopback, non-default ports, data under .oms/);
production overrides them through the environment (see docker-compose.yml).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
MIN_ADMIN_TOKEN_LENGTH = 24

KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
KAFKA_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
KAFKA_TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
# Optional settings a compose file may pass as an empty ${VAR:-}: empty means unset.
_OPTIONAL_FIELDS = (
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "redis_username",
    "redis_password",
    "redis_ssl_cafile",
    "clickhouse_ca_file",
    "analytics_salt",
    "control_keys_file",
    "control_keys",
)


def secret_value(value: SecretStr | str | None) -> str | None:
    """The clear text of a secret setting (a model_copy may have put a plain str there)."""
    if value is None:
        return None
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: the only form of a URL fit for a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OMS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # A validation error must not echo its input: that input holds the secrets.
        hide_input_in_errors=True,
    )

    # Where the local stack keeps data, pids and logs.
    home: Path = Field(default=REPO_ROOT / ".oms", description="data dir of the local stack")
    config_dir: Path = Field(
        default=REPO_ROOT / "config", description="warehouses, routing, sku maps"
    )

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    # Transport security (core/security.py turns these into every client's arguments). The local
    # broker is plaintext on loopback; production sets SASL_SSL (or SSL with client certs).
    kafka_security_protocol: KafkaProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None  # PLAIN when a SASL protocol leaves it unset
    kafka_sasl_username: str | None = None
    # Secrets (exclude, repr=False): never in a dump, so neither logged nor written into a
    # child's settings variables (ops/stack.py child_env hands each child the ones it needs).
    kafka_sasl_password: SecretStr | None = Field(default=None, exclude=True, repr=False)
    kafka_ssl_cafile: Path | None = None  # CA bundle; unset: the system's trust store
    kafka_ssl_certfile: Path | None = None  # client certificate (mTLS), PEM
    kafka_ssl_keyfile: Path | None = None  # its private key, when not inside the certfile
    kafka_ssl_check_hostname: bool = True
    # How long a consumer's fetch may wait at the broker for data (agents/transport.py):
    # the floor of every order's latency when the broker holds fetches to the limit.
    kafka_fetch_max_wait_ms: int = Field(default=50, ge=1, le=1500)
    # The same once a consumer saw no record for 2 s (core/kafka.py FetchPacing): what an idle
    # stack costs the broker, and what the first input after a pause may wait on Tansu.
    kafka_idle_fetch_max_wait_ms: int = Field(default=500, ge=1, le=1500)
    # Bytes a consumer may hold fetched and not yet acked (agents/transport.py): beyond it the
    # consumer fetches nothing more, so a flood of big payloads waits in Kafka, not in memory.
    # 4 MB to 1 GB: a few of the largest messages must fit, and Kafka sizes are 32-bit.
    consumer_buffer_bytes: int = Field(default=32 * 1024 * 1024, ge=4 * 1024 * 1024, le=2**30)
    topic_prefix: str = "oms"
    partitions: int = 8
    app_id: str = "oms-core"

    # Redis. The URL may carry user:password (rediss:// for TLS), but a password in the URL
    # shows wherever the URL is printed: production sets OMS_REDIS_USERNAME/_PASSWORD instead.
    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_prefix: str = "oms"
    redis_username: str | None = None  # an ACL user; unset: the default user
    redis_password: SecretStr | None = Field(default=None, exclude=True, repr=False)
    redis_ssl_cafile: Path | None = None  # rediss:// only; unset: the system's trust store
    redis_ssl_check_hostname: bool = True

    # ClickHouse (native protocol)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 19000
    clickhouse_http_port: int = 18123
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = Field(default=SecretStr(""), exclude=True, repr=False)
    clickhouse_database: str = "oms"
    clickhouse_secure: bool = False  # TLS on the native protocol (port 9440 by convention)
    clickhouse_ca_file: Path | None = None  # with clickhouse_secure; unset: the system's store
    clickhouse_verify: bool = True  # check the server's certificate (and host name)
    # Key of the buyer pseudonym in ClickHouse (analytics/facts.py buyer_hash). The default is
    # in the repository, so anyone could hash every phone number and match: production sets
    # its own. Changing it breaks repeat-buyer analysis across the change.
    analytics_salt: SecretStr | None = Field(default=None, exclude=True, repr=False)

    # Workers
    workers: int = 2
    worker_web_port: int = 16066  # worker wN serves the order API on this port + N
    worker_web_host: str = "127.0.0.1"  # loopback unless deployed behind a trusted network
    event_loop: str = Field(default="uvloop", pattern="^(uvloop|aio)$")  # agents/worker.py
    batch_size: int = 500
    batch_within_s: float = 0.05
    # The fact sink (analytics/sink_process.py) runs as a process of its own (`./oms sink`;
    # `./oms up` starts it with the workers); true: every worker runs it as a task instead, for
    # single-process deployments (docs/decisions/0009-fact-sink-process.md).
    sink_in_worker: bool = False
    sink_batch_size: int = 5000
    sink_flush_s: float = 0.5
    # A batch's Redis work (every round trip of it) must finish within this, else the batch
    # fails and is redelivered; bounds a hung Redis without a timer per reply.
    batch_timeout_s: float = Field(default=30.0, gt=0)

    # Policy
    shortage_policy: str = Field(default="hold", pattern="^(hold|reject|split)$")
    max_line_quantity: int = 999
    # Unpaid orders are cancelled (stock released) this long after they were first held.
    unpaid_timeout_s: float = Field(default=1800.0, gt=0)

    # Lifecycle. Shops may set their own merge window in config/shops.toml (merge_window_s).
    merge_window_s: float = Field(default=0.0, ge=0, description="0 = release at once")
    close_after_s: float = Field(default=7 * 86400.0, gt=0)  # after-sales window once delivered

    # The WMS simulator (`./oms wms-sim`; `./oms up` starts one when wms_sim is true).
    wms_sim: bool = False
    wms_sim_delay_s: float = Field(default=0.5, ge=0)  # mean delay between a parcel's steps
    wms_sim_short_pick_rate: float = Field(default=0.0, ge=0, le=1)
    wms_sim_exception_rate: float = Field(default=0.0, ge=0, le=1)
    wms_sim_unsellable_rate: float = Field(default=0.1, ge=0, le=1)  # returns that cannot restock

    log_level: str = "info"

    # Operability (core/logs.py, core/metrics.py, core/health.py; README "Monitoring").
    # text: the line people read; json: one object per line for a log shipper. Both masked.
    log_format: str = Field(default="text", pattern="^(text|json)$")
    # The fact sink's /metrics and /health/* (analytics/sink_process.py); unset: the worker web
    # port - 1, so every stack and namespace that moves its worker ports moves the sink's too.
    # Served on OMS_WORKER_WEB_HOST (loopback unless deployed behind a trusted network).
    sink_web_port: int | None = Field(default=None, ge=1, le=65535)
    # /health/ready gives Redis this long to answer PING before it says 503.
    health_timeout_s: float = Field(default=1.0, gt=0, le=30)
    # Optional bearer token for /metrics (docs/decisions/0011-metrics-and-health.md): unset,
    # /metrics is open like a usual Prometheus target on a private network. Excluded from
    # dumps; children inherit OMS_METRICS_TOKEN itself (the field is named otherwise, so
    # ops/stack.py child_env does not drop the variable).
    metrics_bearer_token: SecretStr | None = Field(
        default=None, validation_alias="OMS_METRICS_TOKEN", exclude=True, repr=False
    )

    @property
    def sink_port(self) -> int:
        """Where the fact sink serves /metrics and /health/*."""
        return self.sink_web_port or self.worker_web_port - 1

    # Access (core/access.py, state/tokens.py). OMS_ADMIN_TOKEN, when set, is a one-time
    # bootstrap: it may grant the first admin token of every shop and is refused once one
    # exists; unset: no bootstrap admin. Never in the repository; excluded from dumps so it is
    # neither logged nor written into a child's settings; ops/stack.py child_env gives it to
    # the workers only (they serve POST /access/tokens).
    bootstrap_admin_token: SecretStr | None = Field(
        default=None, validation_alias="OMS_ADMIN_TOKEN", exclude=True
    )
    token_hash_iterations: int = Field(default=20_000, ge=1_000, le=10_000_000)

    # Control topics (streams/signing.py; docs/decisions/0016-control-topic-signing.md): every
    # message on oms.operator, oms.aftersales and oms.wms.events is signed with its writer's
    # key and checked by the workers; unsigned or badly signed ones are dead-lettered.
    # "off" signs and checks nothing. Keys: OMS_CONTROL_KEYS ("name=key,...", a secret, so
    # excluded from dumps; ops/stack.py child_env passes it on) and/or OMS_CONTROL_KEYS_FILE;
    # neither: <home>/control-keys, generated on first use (the local stack).
    control_signing: Literal["required", "off"] = "required"
    control_keys_file: Path | None = None
    control_keys: SecretStr | None = Field(default=None, exclude=True, repr=False)

    @field_validator("bootstrap_admin_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"OMS_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LENGTH} characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @field_validator(*_OPTIONAL_FIELDS, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("kafka_security_protocol", mode="before")
    @classmethod
    def _protocol_spelling(cls, value: Any) -> Any:
        """sasl_ssl, SASL-SSL and SASL_SSL all mean SASL_SSL."""
        return value.strip().upper().replace("-", "_") if isinstance(value, str) else value

    @field_validator("kafka_sasl_mechanism", mode="before")
    @classmethod
    def _mechanism_spelling(cls, value: Any) -> Any:
        """scram-sha-512, SCRAM_SHA_512 and SCRAM-SHA-512 all mean SCRAM-SHA-512."""
        return value.strip().upper().replace("_", "-") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _transport_security(self) -> Settings:
        """Refuse combinations that would silently connect without the security asked for
        (credentials a plaintext protocol ignores, a CA file that is not there) at load, with
        every problem named, instead of at the first connection."""
        problems = [*self._kafka_problems(), *self._redis_problems(), *self._clickhouse_problems()]
        if problems:
            raise ValueError("insecure or incomplete settings:\n  - " + "\n  - ".join(problems))
        if self.kafka_security_protocol in KAFKA_SASL_PROTOCOLS and not self.kafka_sasl_mechanism:
            self.kafka_sasl_mechanism = "PLAIN"
        return self

    def _kafka_problems(self) -> list[str]:
        protocol = self.kafka_security_protocol
        problems = _missing_files(
            OMS_KAFKA_SSL_CAFILE=self.kafka_ssl_cafile,
            OMS_KAFKA_SSL_CERTFILE=self.kafka_ssl_certfile,
            OMS_KAFKA_SSL_KEYFILE=self.kafka_ssl_keyfile,
        )
        sasl = {
            "OMS_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "OMS_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "OMS_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        if protocol in KAFKA_SASL_PROTOCOLS:
            problems += [
                f"OMS_KAFKA_SECURITY_PROTOCOL={protocol} needs {name}"
                for name in ("OMS_KAFKA_SASL_USERNAME", "OMS_KAFKA_SASL_PASSWORD")
                if not secret_value(sasl[name])
            ]
        else:
            problems += [
                f"{name} is set but OMS_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL"
                for name, value in sasl.items()
                if value
            ]
        tls_files = {
            "OMS_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "OMS_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "OMS_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if protocol not in KAFKA_TLS_PROTOCOLS:
            problems += [
                f"{name} is set but OMS_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS"
                for name, value in tls_files.items()
                if value
            ]
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            problems.append("OMS_KAFKA_SSL_KEYFILE needs OMS_KAFKA_SSL_CERTFILE")
        return problems

    def _redis_problems(self) -> list[str]:
        parts = urlsplit(self.redis_url)
        shown = mask_url(self.redis_url)
        problems = _missing_files(OMS_REDIS_SSL_CAFILE=self.redis_ssl_cafile)
        if parts.scheme not in REDIS_SCHEMES:
            problems.append(f"OMS_REDIS_URL must be redis://, rediss:// or unix://, got {shown}")
        if parts.password and self.redis_password:
            problems.append(
                "the password is in both OMS_REDIS_URL and OMS_REDIS_PASSWORD: keep one "
                "(OMS_REDIS_PASSWORD, so it never shows in a printed URL)"
            )
        if parts.username and self.redis_username:
            problems.append("the user is in both OMS_REDIS_URL and OMS_REDIS_USERNAME: keep one")
        if self.redis_username and not (self.redis_password or parts.password):
            problems.append("OMS_REDIS_USERNAME needs OMS_REDIS_PASSWORD")
        if self.redis_ssl_cafile and parts.scheme != "rediss":
            problems.append(f"OMS_REDIS_SSL_CAFILE needs a rediss:// URL, got {shown}")
        return problems

    def _clickhouse_problems(self) -> list[str]:
        problems = _missing_files(OMS_CLICKHOUSE_CA_FILE=self.clickhouse_ca_file)
        if self.clickhouse_ca_file and not self.clickhouse_secure:
            problems.append("OMS_CLICKHOUSE_CA_FILE needs OMS_CLICKHOUSE_SECURE=true")
        return problems

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


def _missing_files(**files: Path | None) -> list[str]:
    """A problem for each configured file that is not there (a typo must not mean no TLS)."""
    return [
        f"{name}: no such file: {path}"
        for name, path in files.items()
        if path is not None and not path.is_file()
    ]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Tests and the CLI's --home switch change the environment; drop the cached object."""
    get_settings.cache_clear()
