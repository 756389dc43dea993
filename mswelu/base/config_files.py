"""Reading a user's YAML or JSON config with YAML's silent mistakes as errors: duplicate keys, numbers as
strings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["check_field_types", "read_config_file", "yaml_number_hint"]


class _DuplicateKey(ValueError):
    """A key given twice in one mapping of a config file."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in lines:
                    raise _DuplicateKey(f"gives {key!r} twice (lines {lines[key]} and {line}): keep one")
                lines[key] = line
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                pass
        return super().construct_mapping(node, deep=deep)


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(f"gives {key!r} twice: keep one")
        seen[key] = value
    return seen


def read_config_file(path: str | os.PathLike[str]) -> Any:
    """A YAML or JSON file's content; a one-line ValueError for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return json.loads(text, object_pairs_hook=_unique_json_keys)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as exc:
        raise ValueError(f"config file {path} {exc}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(
            f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
            f"{' '.join(str(exc).split())}"
        ) from exc


def yaml_number_hint(value: Any) -> str:
    """The error tail for ``"1e-3"`` (YAML 1.1 reads an exponent without a dot as a string), else ``""``."""
    if not isinstance(value, str) or "e" not in value.lower():
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    mantissa, _, exponent = value.lower().partition("e")
    dotted = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
    return f": YAML reads {value} as a string (a float needs a dot there: write {dotted})"


def check_field_types(obj: Any) -> None:
    """Every field of the dataclass ``obj`` against its annotation (``bool``, ``int``, ``float``, ``str``,
    ``tuple[...]``, ``dict[...]``, ``| None``), a ValueError naming the first that is not: a string where a
    boolean belongs (``overwrite: "false"``) must not count as true, nor ``"1e-3"`` as a learning rate."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds:
            continue
        if not any(_is_kind(value, k) for k in kinds):
            want = " or ".join(_KIND_WORDS.get(k, k) for k in kinds)
            raise ValueError(
                f"{f.name} must be {want}, got {value!r} ({type(value).__name__}){yaml_number_hint(value)}"
            )


_KIND_WORDS = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "None": "null",
    "tuple[float, float]": "a list of two numbers",
    "tuple[float, ...]": "a list of numbers",
    "tuple[str, ...]": "a list of names",
    "dict[str, Any]": "a mapping",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_kind(value: Any, kind: str) -> bool:
    if kind.startswith("tuple["):
        each = (lambda v: isinstance(v, str)) if kind == "tuple[str, ...]" else _is_number
        return isinstance(value, tuple | list) and all(each(v) for v in value)
    kinds = {"bool": bool, "int": int, "float": int | float, "str": str | Path, "dict[str, Any]": dict}
    not_bool = kind == "bool" or not isinstance(value, bool)  # a bool is an int to Python, not to a config
    return kind in kinds and isinstance(value, kinds[kind]) and not_bool
