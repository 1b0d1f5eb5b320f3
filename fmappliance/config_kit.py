"""The machinery under the config schema: its building blocks, YAML read with line numbers, validation.

config.py declares the schema with :class:`Key`, :class:`Section`, :class:`MapOf` and
:class:`ListOf` and knows every key; this module knows none.  ``parse_yaml`` keeps the line of
every key path so that a :class:`ConfigError` can name it; :class:`Validator` checks data
against the schema's pieces and fills in defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` is one line for the operator."""


@dataclass(frozen=True)
class Key:
    """One scalar or list setting.

    ``kind`` is one of: str, int, bool, path, str_list, secret, int_map, str_map, user_map.
    ``check`` returns an error text ("expected ...") or None.
    """

    name: str
    kind: str
    default: Any = None
    help: str = ""
    required: bool = False
    check: Callable[[Any], str | None] | None = None
    example: Any = None  # shown in the example config instead of the default
    coerce: Callable[[Any], Any] | None = None  # applied to the raw value before the type check


@dataclass(frozen=True)
class Section:
    """A mapping of fixed keys."""

    name: str
    keys: tuple
    help: str = ""
    required: bool = False


@dataclass(frozen=True)
class MapOf:
    """A mapping of operator-chosen names (stacks) to sections."""

    name: str
    entry: Section
    name_check: Callable[[str], str | None]
    help: str = ""
    required: bool = False
    example: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ListOf:
    """A list of sections (schedules)."""

    name: str
    entry: Section
    help: str = ""
    example: list = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Loading YAML with line numbers
# --------------------------------------------------------------------------------------


class Located:
    """The YAML line of every key path of the parsed data, for error messages."""

    def __init__(self):
        self.lines: dict[tuple, int] = {}


def _node_to_data(node, path: tuple, located: Located, loader):
    located.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"line {key_node.start_mark.line + 1}: keys must be plain names")
            key = str(loader.construct_object(key_node))
            if key in out:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: {'.'.join(path + (key,))}: duplicate key")
            located.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _node_to_data(value_node, path + (key,), located, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_data(n, path + (i,), located, loader) for i, n in enumerate(node.value)]
    return loader.construct_object(node)


def parse_yaml(text: str) -> tuple[Any, Located]:
    located = Located()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = {} if node is None else _node_to_data(node, (), located, loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}not valid YAML ({problem})") from None
    finally:
        loader.dispose()
    return data, located


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------

_KIND_TEXT = {
    "str": "a text",
    "secret": "a text",
    "int": "a whole number",
    "bool": "true or false",
    "path": "a path",
    "str_list": "a list of texts",
    "int_map": "a mapping of names to whole numbers",
    "str_map": "a mapping of names to texts",
    "user_map": "a mapping of user names to a bcrypt hash or {password, role}",
}


class Validator:
    """Checks parsed data against schema pieces; ``fail`` raises ConfigError naming the key and its line."""

    def __init__(self, located: Located):
        self.located = located

    def fail(self, path: tuple, expected: str):
        dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")
        line = self.located.lines.get(path)
        where = f"line {line}: " if line else ""
        raise ConfigError(f"{where}{dotted}: {expected}")

    def value(self, key: Key, raw: Any, path: tuple):
        if raw is None:
            if key.required:
                self.fail(path, f"is required ({key.help})")
            return _copy(key.default)
        if key.coerce:
            raw = key.coerce(raw)
        ok = {
            "str": lambda v: isinstance(v, str),
            "secret": lambda v: isinstance(v, str),
            "path": lambda v: isinstance(v, str) and v != "",
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "str_list": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
            "int_map": lambda v: (
                isinstance(v, dict) and all(isinstance(i, int) and not isinstance(i, bool) for i in v.values())
            ),
            "str_map": lambda v: isinstance(v, dict) and all(isinstance(i, str) for i in v.values()),
            "user_map": lambda v: isinstance(v, dict) and all(isinstance(i, (str, dict)) for i in v.values()),
        }[key.kind]
        if not ok(raw):
            shown = "(hidden)" if key.kind == "secret" else repr(raw)[:60]
            self.fail(path, f"expected {_KIND_TEXT[key.kind]}, got {shown}")
        if key.check:
            problem = key.check(raw)
            if problem:
                self.fail(path, problem)
        if key.kind == "int_map" and isinstance(key.default, dict):
            return {**key.default, **raw}
        return raw

    def section(self, section: Section, raw: Any, path: tuple) -> dict:
        if raw is None:
            if section.required:
                self.fail(path, f"section is required ({section.help})")
            raw = {}
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping of settings, got {repr(raw)[:60]}")
        known = {k.name for k in section.keys}
        for name in raw:
            if name not in known:
                self.fail(path + (name,), "unknown key; expected one of: " + ", ".join(sorted(known)))
        out = {}
        for key in section.keys:
            if isinstance(key, Section):
                out[key.name] = self.section(key, raw.get(key.name), path + (key.name,))
            else:
                out[key.name] = self.value(key, raw.get(key.name), path + (key.name,))
        return out

    def map_of(self, spec: MapOf, raw: Any, path: tuple) -> dict:
        if raw is None:
            if spec.required:
                self.fail(path, f"section is required ({spec.help}); use {{}} for none")
            return {}
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping of names to settings, got {repr(raw)[:60]}")
        out = {}
        for name, entry in raw.items():
            problem = spec.name_check(str(name))
            if problem:
                self.fail(path + (name,), f"bad name: {problem}")
            out[str(name)] = self.section(spec.entry, entry, path + (name,))
        return out

    def list_of(self, spec: ListOf, raw: Any, path: tuple) -> list:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.fail(path, "expected a list")
        return [self.section(spec.entry, item, path + (i,)) for i, item in enumerate(raw)]


def _copy(value):
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
