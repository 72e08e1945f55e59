"""The one loader of config/ (core/config.py): reading, the error format every config file
shares (file, key path as the file spells it, what is allowed), and that every TOML file of the
project is read through it."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.config import ConfigError, key_path, load_config, read_toml, validate_config
from core.settings import REPO_ROOT
from order.audit import AuditConfigError
from order.promotions import PromotionConfigError
from order.route import RoutingConfigError
from order.shops import ShopConfigError
from state.channel_stock import AllocationError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Limits(_Model):
    low: int = 0
    high: int = 10


class Cat(_Model):
    kind: Literal["cat"]
    lives: int = 9


class Dog(_Model):
    kind: Literal["dog"]
    good: bool = True


class Sample(_Model):
    name: str = ""
    limits: Limits = Limits()
    tables: dict[str, Limits] = Field(default_factory=dict)
    pets: list[Annotated[Cat | Dog, Field(discriminator="kind")]] = Field(default_factory=list)


def write(tmp_path: Path, text: str | bytes, name: str = "sample.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def problem(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), Sample, what="sample")
    return caught.value


# --- reading ------------------------------------------------------------------------------


def test_a_good_file_is_its_model(tmp_path: Path) -> None:
    text = 'name = "极客"\n[limits]\nhigh = 3\n[tables."华东/仓"]\nlow = 1\n'
    text += '[[pets]]\nkind = "dog"\n'
    sample = load_config(write(tmp_path, text), Sample, what="sample")
    assert sample == Sample(
        name="极客",
        limits=Limits(high=3),
        tables={"华东/仓": Limits(low=1)},
        pets=[Dog(kind="dog")],
    )


def test_a_missing_file_is_the_default_or_an_error(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    assert load_config(absent, Sample, what="sample", default=Sample(name="d")) == Sample(name="d")
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read: .*No such file"):
        load_config(absent, Sample, what="sample")


def test_a_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name = 1\n[limits\n")
    with pytest.raises(ConfigError, match=r"sample\.toml: not valid TOML: .*line 2, column 8"):
        read_toml(path)


def test_a_file_that_is_not_utf8_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sample\.toml: cannot read: .*utf-8"):
        load_config(write(tmp_path, 'name = "发票"'.encode("gb18030")), Sample, what="s")


def test_the_callers_error_class_is_raised(tmp_path: Path) -> None:
    class MineError(ConfigError):
        pass

    with pytest.raises(MineError):
        load_config(write(tmp_path, "colour = 1\n"), Sample, what="sample", error=MineError)
    with pytest.raises(MineError, match="not valid TOML"):
        load_config(write(tmp_path, "[x\n"), Sample, what="sample", error=MineError)
    for error in (
        AuditConfigError,
        RoutingConfigError,
        PromotionConfigError,
        AllocationError,
        ShopConfigError,
    ):
        assert issubclass(error, ConfigError) and issubclass(error, ValueError)


# --- the error format ---------------------------------------------------------------------


def test_every_problem_is_listed_under_the_file(tmp_path: Path) -> None:
    error = problem(tmp_path, '[limits]\nlow = "x"\nhigh = "y"\n')
    assert str(error).splitlines() == [
        f"{tmp_path / 'sample.toml'}: invalid sample, 2 problems:",
        "  - limits.low: Input should be a valid integer",
        "  - limits.high: Input should be a valid integer",
    ]
    assert error.problems == (
        "limits.low: Input should be a valid integer",
        "limits.high: Input should be a valid integer",
    )
    assert ": invalid sample, 1 problem:\n" in str(problem(tmp_path, "name = 1\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 1\n", "colour: unknown field (known here: name, limits, tables, pets)"),
        ("[limits]\nmiddle = 1\n", "limits.middle: unknown field (known here: low, high)"),
        (
            '[tables."华东/仓"]\nlo = 1\n',
            'tables."华东/仓".lo: unknown field (known here: low, high)',
        ),
        (
            '[[pets]]\nkind = "cat"\n[[pets]]\nkind = "dog"\nlives = 3\n',
            "pets[1].dog.lives: unknown field (known here: kind, good)",
        ),
    ],
)
def test_an_unknown_key_lists_the_keys_allowed_at_its_place(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert problem(tmp_path, text).problems == (expected,)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits = 3\n", "limits: must be a table, not an integer"),
        ('tables = "x"\n', "tables: must be a table, not a string"),
        ("[tables]\nA = [1]\n", "tables.A: must be a table, not an array"),
        ('[[pets]]\nkind = "bird"\n', "pets[0]: Input tag 'bird' found using 'kind' does not"),
        ("name = true\n", "name: Input should be a valid string"),
    ],
)
def test_a_bad_value_is_named_by_its_key_path(tmp_path: Path, text: str, expected: str) -> None:
    [message] = problem(tmp_path, text).problems
    assert message.startswith(expected)


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("shops", "own/own-web", "merge_window_s"), 'shops."own/own-web".merge_window_s'),
        (("shops", "taobao/极客数码旗舰店"), 'shops."taobao/极客数码旗舰店"'),
        (("promotions", 0, "buy", "sku"), "promotions[0].buy.sku"),
        (("warehouses", "WH_A-1", "covers", 2), "warehouses.WH_A-1.covers[2]"),
        (("high_value", "thresholds", "cny", "[key]"), "high_value.thresholds.cny (key)"),
        (("a", 'say "hi"'), 'a."say \\"hi\\""'),
        ((), ""),
    ],
)
def test_key_paths_are_spelled_as_in_the_file(loc: tuple[int | str, ...], path: str) -> None:
    assert key_path(loc) == path


def test_an_error_of_the_whole_file_is_just_its_message() -> None:
    class Both(_Model):
        a: int = 0
        b: int = 0

        @model_validator(mode="after")
        def _ordered(self) -> Both:
            if self.a > self.b:
                raise ValueError("a is above b")
            return self

    with pytest.raises(ConfigError) as caught:
        validate_config({"a": 2, "b": 1}, Both, source="both.toml", what="both")
    assert caught.value.problems == ("a is above b",)


# --- one loader ---------------------------------------------------------------------------

FLOORS = ("core", "streams", "order", "state", "analytics", "agents", "web", "ops")


def test_only_the_loader_parses_toml() -> None:
    """Every config file is read through core/config.py: no other module of the project
    imports tomllib (or reads TOML another way)."""
    readers = []
    for floor in FLOORS:
        for path in sorted((REPO_ROOT / floor).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                if any(n.split(".")[0] in ("tomllib", "tomli", "toml") for n in names):
                    readers.append(str(path.relative_to(REPO_ROOT)))
    assert readers == ["core/config.py"]
