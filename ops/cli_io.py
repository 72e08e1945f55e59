"""What every command shares at the door: where a relative path is meant from, one JSON object
on stdout, one error line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def caller_path(path: Path) -> Path:
    """`./oms` cd's to the repo; relative paths are meant from where the user typed them."""
    if path.is_absolute():
        return path
    return Path(os.environ.get("OMS_CALLER_CWD", os.getcwd())) / path
