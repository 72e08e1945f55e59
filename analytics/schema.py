"""Versioned, idempotent ClickHouse migrations.

Files ``analytics/migrations/NNNN_name.sql`` hold statements separated by lines that contain
only ``;``; ``{db}`` stands for the quoted database name (views need qualified names). Every
statement is written to be re-runnable (IF NOT EXISTS), so two workers migrating at once, or a
crash between a statement and its bookkeeping row, are harmless.

A statement that cannot be re-run by itself (the RENAME that swaps a rebuilt table in, and the
CREATE of the table it swaps in) carries a line ``-- skip if exists: {db}.<table>``: it runs
only while that table (the old copy the swap leaves behind) does not exist yet, and if it fails
because another migrator got there first, the table now existing makes that a success.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from analytics.client import QueryClient, connect, ensure_database, quote_ident
from core.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SEPARATOR = re.compile(r"^\s*;\s*$", re.MULTILINE)
_SKIP_IF_EXISTS = re.compile(r"^\s*--\s*skip if exists:\s*(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # file stem, e.g. "0001_facts"
    statements: tuple[str, ...]  # with the {db} placeholder still in place
    checksum: str

    def render(self, database: str) -> list[str]:
        db = quote_ident(database)
        return [s.replace("{db}", db) for s in self.statements]


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` lines and drop chunks that are only comments or blank."""
    out = []
    for chunk in _SEPARATOR.split(sql):
        code = [ln for ln in chunk.splitlines() if ln.strip() and not ln.strip().startswith("--")]
        if code:
            out.append(chunk.strip())
    return out


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file name must look like 0001_name.sql: {path.name}")
        text = path.read_text(encoding="utf-8")
        migrations.append(
            Migration(
                version=int(m.group(1)),
                name=path.stem,
                statements=tuple(split_statements(text)),
                checksum=hashlib.sha256(text.encode()).hexdigest()[:16],
            )
        )
    versions = [m.version for m in migrations]
    if len(versions) != len(set(versions)):
        raise ValueError("two migration files share a version number")
    return migrations


def _bookkeeping_ddl(db: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime('UTC')) "
        "ENGINE = ReplacingMergeTree() ORDER BY version"
    )


def applied_versions(client: QueryClient, database: str) -> dict[int, str]:
    """version -> checksum of what is recorded as applied."""
    db = quote_ident(database)
    client.execute(_bookkeeping_ddl(db))
    rows = client.execute(
        f"SELECT version, any(checksum) FROM {db}.schema_migrations GROUP BY version"
    )
    return {int(v): str(c) for v, c in rows}


DUPLICATE_COLUMN = 44  # ClickHouse ILLEGAL_COLUMN: "column ... already exists"


def execute_idempotent(client: QueryClient, statement: str) -> None:
    """Run one migration statement; an ADD COLUMN that already happened counts as done.

    18.16 has no ``ADD COLUMN IF NOT EXISTS``: a process that died between an ALTER and its
    bookkeeping row would otherwise wedge every later start.
    """
    try:
        client.execute(statement)
    except Exception as exc:
        code = getattr(exc, "code", None)
        if code == DUPLICATE_COLUMN and "ADD COLUMN" in statement.upper():
            log.warning("column already present, treating as applied: %s", exc)
            return
        raise


def skip_guard(statement: str) -> str | None:
    """The table whose existence means ``statement`` was done already (its skip-if-exists line)."""
    m = _SKIP_IF_EXISTS.search(statement)
    return m.group(1) if m else None


def table_exists(client: QueryClient, qualified: str) -> bool:
    """``EXISTS TABLE`` (18.16 and current); ``qualified`` is ``db.table``, both quoted."""
    rows = client.execute(f"EXISTS TABLE {qualified}")
    return bool(rows) and bool(int(rows[0][0]))


def run_statement(client: QueryClient, statement: str) -> None:
    """One rendered migration statement, honouring its skip-if-exists guard."""
    guard = skip_guard(statement)
    if guard is not None and table_exists(client, guard):
        return
    try:
        execute_idempotent(client, statement)
    except Exception:
        if guard is not None and table_exists(client, guard):
            log.warning("another migrator did this first, treating as applied: %s", guard)
            return
        raise


def migrate(
    client: QueryClient, database: str, migrations: list[Migration] | None = None
) -> list[str]:
    """Apply pending migrations in version order; returns the names applied by this call."""
    db = quote_ident(database)
    done = applied_versions(client, database)
    applied: list[str] = []
    for mig in migrations if migrations is not None else load_migrations():
        if mig.version in done:
            if done[mig.version] != mig.checksum:
                log.warning("migration %s changed after it was applied; not re-run", mig.name)
            continue
        for statement in mig.render(database):
            run_statement(client, statement)
        client.execute(
            f"INSERT INTO {db}.schema_migrations (version, name, checksum, applied_at) VALUES",
            [
                (
                    mig.version,
                    mig.name,
                    mig.checksum,
                    datetime.now(UTC).replace(tzinfo=None, microsecond=0),
                )
            ],
        )
        log.info("applied ClickHouse migration %s to %s", mig.name, database)
        applied.append(mig.name)
    return applied


def ensure_schema(settings: Settings) -> list[str]:
    """Database plus all migrations; idempotent, safe to call on every start."""
    ensure_database(settings)
    client = connect(settings)
    try:
        return migrate(client, settings.clickhouse_database)
    finally:
        client.disconnect()
