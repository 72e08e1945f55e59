"""The one loader of the files in config/: read, validate against the file's schema, and say
exactly what is wrong.

Each file's schema is a pydantic model that refuses unknown keys (``extra="forbid"``), kept
next to the rules that use it (order/audit.py, order/route.py, order/promotions.py,
order/shops.py, state/channel_stock.py). :func:`load_config` reads a TOML file and validates
it; a file that cannot be used raises the caller's subclass of :class:`ConfigError` with every
problem at once, each naming its key path the way the file spells it::

    config/shops.toml: invalid shop rules, 2 problems:
      - shops."own/own-web".shortage_policy: Input should be 'hold', 'reject' or 'split'
      - shops."own/own-web".merge_windows: unknown field (known here: shortage_policy, ...)

A worker loads its files at start, so a bad file stops it with that message instead of
running on half a file; ``./oms rules check`` prints the same message for config/audit.toml.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

ModelT = TypeVar("ModelT", bound=BaseModel)
ErrorT = TypeVar("ErrorT", bound="ConfigError")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # a TOML bare key: written without quotes
_TOML_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
    ((dt.datetime, dt.date, dt.time), "a date or time"),
)


class ConfigError(ValueError):
    """A config file that cannot be used. The message starts with the file; ``problems``
    holds one line per problem ('key.path: what is wrong')."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)

    @classmethod
    def listing(
        cls: type[ErrorT], source: str | Path, what: str, problems: Sequence[str]
    ) -> ErrorT:
        """'SOURCE: invalid WHAT, N problems:' and one indented line per problem."""
        count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
        lines = "".join(f"\n  - {problem}" for problem in problems)
        return cls(f"{source}: invalid {what}, {count}:{lines}", problems)


def read_text(path: Path, error: type[ConfigError] = ConfigError, encoding: str = "utf-8") -> str:
    """The file's text; a missing, unreadable or wrongly encoded file is a ConfigError."""
    try:
        return path.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from exc


def read_toml(path: Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The file's TOML document; a syntax error is a ConfigError naming line and column."""
    text = read_text(path, error)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc


def validate_config(
    data: Mapping[str, Any],
    model: type[ModelT],
    *,
    source: str | Path,
    what: str,
    error: type[ConfigError] = ConfigError,
) -> ModelT:
    """``data`` (a parsed file) as ``model``; every problem is reported at once."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [describe_error(model, e) for e in exc.errors()]
        raise error.listing(source, what, problems) from exc


def load_config(
    path: Path,
    model: type[ModelT],
    *,
    what: str,
    error: type[ConfigError] = ConfigError,
    default: ModelT | None = None,
) -> ModelT:
    """Read and validate one TOML file. A missing file is an error unless a ``default`` is
    given, which is then what the file would have said."""
    if default is not None and not path.exists():
        return default
    return validate_config(read_toml(path, error), model, source=path, what=what, error=error)


# --- error messages -------------------------------------------------------------------------


def key_path(loc: Sequence[int | str]) -> str:
    """A pydantic error location as the file spells it: ``shops."jd/1".skus.A``,
    ``promotions[0].buy.sku``; a bad table key ends in `` (key)``."""
    out = ""
    is_key = False
    for part in loc:
        if part == "[key]":
            is_key = True
        elif isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            out += f".{name}" if out else name
    return out + (" (key)" if is_key and out else "")


def describe_error(model: type[BaseModel], error: ErrorDetails) -> str:
    """'key.path: what is wrong'; an unknown key lists the keys allowed at its place."""
    loc = tuple(error["loc"])
    where = key_path(loc)
    if error["type"] == "extra_forbidden":
        known = known_fields(model, loc[:-1])
        allowed = f" (known here: {', '.join(known)})" if known else ""
        return f"{where}: unknown field{allowed}"
    if error["type"] in ("model_type", "dict_type"):
        message = f"must be a table, not {toml_type(error['input'])}"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def toml_type(value: object) -> str:
    """What a parsed TOML value is, in the file's words."""
    for kind, name in _TOML_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def known_fields(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The fields of the model found at ``loc`` inside ``model`` ([] when it is no model)."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """The type under ``Annotated[...]`` and ``X | None``."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if _is_union(annotation):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _step(annotation: Any, part: int | str) -> Any:
    """The type one location part further in: a model's field, a table's or list's values,
    the member of a union the part names (a discriminator value or a class name)."""
    current = _unwrap(annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        field = current.model_fields.get(str(part))
        return None if field is None else field.annotation
    origin = get_origin(current)
    if origin in (dict, Mapping):
        return get_args(current)[1]
    if origin in (list, tuple, set, frozenset, Sequence) and isinstance(part, int):
        return get_args(current)[0]
    if _is_union(current):
        for member in map(_unwrap, get_args(current)):
            if _names(member, part):
                return member
    return None


def _names(member: Any, part: int | str) -> bool:
    """Whether a union's location part (pydantic writes the tag or the class name) is
    ``member``'s."""
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return False
    if member.__name__ == part:
        return True
    return any(
        get_origin(_unwrap(f.annotation)) is Literal and part in get_args(_unwrap(f.annotation))
        for f in member.model_fields.values()
    )
