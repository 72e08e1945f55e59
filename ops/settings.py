"""One settings object for every process, read once from OMS_* variables and an optional .env.

Defaults describe the embedded local stack (loopback, non-default ports, data under .oms/);
production overrides them through the environment (see docker-compose.yml).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
MIN_ADMIN_TOKEN_LENGTH = 24


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OMS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where the local stack keeps data, pids and logs.
    home: Path = Field(default=REPO_ROOT / ".oms", description="data dir of the local stack")
    config_dir: Path = Field(
        default=REPO_ROOT / "config", description="warehouses, routing, sku maps"
    )

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    # How long a consumer's fetch may wait at the broker for data (agents/transport.py):
    # the floor of every order's latency when the broker holds fetches to the limit.
    kafka_fetch_max_wait_ms: int = Field(default=50, ge=1, le=1500)
    topic_prefix: str = "oms"
    partitions: int = 8
    app_id: str = "oms-core"

    # Redis
    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_prefix: str = "oms"

    # ClickHouse (native protocol)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 19000
    clickhouse_http_port: int = 18123
    clickhouse_user: str = "default"
    clickhouse_password: str = ""
    clickhouse_database: str = "oms"

    # Workers
    workers: int = 2
    worker_web_port: int = 16066  # worker wN serves the order API on this port + N
    worker_web_host: str = "127.0.0.1"  # loopback unless deployed behind a trusted network
    event_loop: str = Field(default="uvloop", pattern="^(uvloop|aio)$")  # agents/worker.py
    batch_size: int = 500
    batch_within_s: float = 0.05
    # The fact sink (agents/sink.py) runs as a process of its own (`./oms sink`, which `./oms up`
    # starts with the workers); true: every worker runs it as a task instead, for single-process
    # deployments (docs/decisions/0009-fact-sink-process.md).
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

    # Access (ops/access.py, state/tokens.py). OMS_ADMIN_TOKEN, when set, is accepted as an
    # admin token for every shop (to grant the first real tokens); unset: no bootstrap admin.
    # Never in the repository; excluded from dumps so it is neither logged nor written into a
    # child's environment (children inherit OMS_ADMIN_TOKEN itself).
    bootstrap_admin_token: SecretStr | None = Field(
        default=None, validation_alias="OMS_ADMIN_TOKEN", exclude=True
    )
    token_hash_iterations: int = Field(default=20_000, ge=1_000, le=10_000_000)

    @field_validator("bootstrap_admin_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"OMS_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LENGTH} characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Tests and the CLI's --home switch change the environment; drop the cached object."""
    get_settings.cache_clear()
