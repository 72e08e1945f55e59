"""`./oms rules check [FILE]`: validate an audit rules file and show what it makes the rules do.

Run it before a worker restart: the worker refuses a bad file at start-up with the same message.
Blacklisted phones and streets are shown masked (core/privacy.py); the file has them in clear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from order.audit import AuditConfigError, AuditRules, load_audit_rules
from web.views import masked_rules


def default_rules_path() -> Path:
    from core.settings import get_settings

    return get_settings().config_dir / "audit.toml"


def describe_rules(rules: AuditRules) -> list[str]:
    """One line per rule, in the order the rules speak: on/off, action, settings."""
    lines = []
    for name, section in masked_rules(rules).items():
        state = "on " if section.pop("enabled") else "off"
        action = section.pop("action", "")
        settings = "  ".join(f"{key}={_show(value)}" for key, value in section.items())
        lines.append(f"{name:<20} {state} {action:<6} {settings}".rstrip())
    return lines


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


@click.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def rules_check(file: Path | None, as_json: bool) -> None:
    """Validate the audit rules FILE (default: config/audit.toml) and print the rules.

    Exit 2 when the file is missing or invalid, naming the field at fault.
    """
    from ops.cli_io import caller_path, emit_json, fail

    path = caller_path(file) if file is not None else default_rules_path()
    if not path.is_file():
        fail(f"{path}: no such file (without one a worker uses the built-in rules)", code=2)
    try:
        rules = load_audit_rules(path)
    except AuditConfigError as exc:
        fail(str(exc), code=2)
    if as_json:
        emit_json({"file": str(path), "valid": True, "rules": masked_rules(rules)})
        return
    click.echo(f"{path}: valid")
    for line in describe_rules(rules):
        click.echo(f"  {line}")
