"""The annotated example config: at the project's top level, shipped in the package, complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomlkit
from pydantic import BaseModel

from nonebot_plugin_llm2pic.settings import (
    GradioBackendSettings,
    OpenAIBackendSettings,
    Settings,
    parse_settings,
)
from nonebot_plugin_llm2pic.settings_store import EXAMPLE_NAME, example_text

ROOT_EXAMPLE = Path(__file__).resolve().parent.parent / EXAMPLE_NAME
_HEADER = re.compile(r"^\[([\w.]+)\]")
_KEY = re.compile(r"^#?\s*(\w+)\s*=")


def documented_keys(text: str) -> dict[str, set[str]]:
    """Keys per table, active or commented out (``# inputs = …``)."""
    tables: dict[str, set[str]] = {"": set()}
    current = ""
    for line in text.splitlines():
        if header := _HEADER.match(line):
            current = header[1]
            tables.setdefault(current, set())
        elif key := _KEY.match(line):
            tables[current].add(key[1])
    return tables


def schema_keys() -> dict[str, set[str]]:
    """Every key of the schema per table the example documents it in."""
    tables: dict[str, set[str]] = {}
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            tables[name] = set(model.model_fields)
    tables["backends.zimage"] = set(GradioBackendSettings.model_fields)
    tables["backends.openai"] = set(OpenAIBackendSettings.model_fields)
    return tables


def test_root_example_is_the_packaged_one():
    """The top-level config.example.toml and the one the package ships are the same bytes."""
    assert ROOT_EXAMPLE.read_bytes() == example_text().encode("utf-8")


@pytest.mark.parametrize("table", sorted(schema_keys()))
def test_example_lists_every_key(table: str):
    """Every key of the schema appears (active or commented) in its table of the example."""
    missing = schema_keys()[table] - documented_keys(example_text()).get(table, set())
    assert not missing, f"[{table}] lacks {sorted(missing)}"


def test_example_values_are_the_defaults():
    """The active values in the example are exactly the built-in defaults."""
    assert parse_settings(tomlkit.parse(example_text()).unwrap()) == Settings.model_validate({})


def test_example_explains_every_key_in_chinese():
    """Every active key line carries a comment in Chinese (English may follow)."""
    for line in example_text().splitlines():
        if _KEY.match(line) and not line.startswith("#"):
            comment = line.partition("#")[2] if "#" in line.split("=", 1)[1] else ""
            assert re.search(r"[\u4e00-\u9fff]", comment), line
