"""Documentation generated from the config schema: the example config and the reference in docs/configuration.md.

``make docs`` (packaging/gen_docs.py) writes them; tests/test_config.py fails when they are stale
or a key has no help text.
"""

from __future__ import annotations

import yaml

from fmappliance.config import SCHEMA
from fmappliance.config_kit import Key, MapOf, Section


def iter_keys():
    """Yield (dotted_key, Key) for every documented setting, sections included."""

    def walk(prefix, keys):
        for key in keys:
            if isinstance(key, Section):
                yield prefix + key.name, key
                yield from walk(prefix + key.name + ".", key.keys)
            else:
                yield prefix + key.name, key

    for spec in SCHEMA:
        yield spec.name, spec
        if isinstance(spec, Section):
            yield from walk(spec.name + ".", spec.keys)
        elif isinstance(spec, MapOf):
            yield from walk(spec.name + ".<name>.", spec.entry.keys)
        else:
            yield from walk(spec.name + "[].", spec.entry.keys)


def reference_markdown() -> str:
    """The configuration reference of docs/configuration.md."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for dotted, key in iter_keys():
        if isinstance(key, Key):
            default = (
                "required"
                if key.required
                else ("—" if key.default in (None, "", [], {}) else f"`{_yaml_inline(key.default)}`")
            )
            if key.kind == "secret":
                default = "required" if key.required else "—"
            rows.append(f"| `{dotted}` | {default} | {key.help} |")
        else:
            rows.append(f"| **`{dotted}`** | {'required' if getattr(key, 'required', False) else ''} | {key.help} |")
    return "\n".join(rows) + "\n"


def _yaml_inline(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def example_yaml() -> str:
    """The example config: every key with its default (or example), commented with its help."""
    out = [
        "# fmappliance configuration (/etc/fmappliance/config.yaml).",
        "# Generated from fmappliance/config.py: every key, its default and what it does.",
        "# Keys marked 'required' have no default; everything else may be left out.",
        "",
    ]

    def emit_keys(keys, indent):
        pad = "  " * indent
        for key in keys:
            if isinstance(key, Section):
                out.append(f"{pad}# {key.help}")
                out.append(f"{pad}{key.name}:")
                emit_keys(key.keys, indent + 1)
                continue
            value = key.example if key.example is not None else key.default
            note = " (required)" if key.required else ""
            out.append(f"{pad}# {key.help}{note}")
            if value is None:
                out.append(f"{pad}# {key.name}:")
            elif isinstance(value, dict) and value:
                out.append(f"{pad}{key.name}:")
                for k, val in value.items():
                    out.append(f"{pad}  {k}: {_yaml_inline(val)}")
            else:
                out.append(f"{pad}{key.name}: {_yaml_inline(value)}")

    for spec in SCHEMA:
        out.append(f"# {spec.help}")
        if isinstance(spec, Section):
            out.append(f"{spec.name}:")
            emit_keys(spec.keys, 1)
        elif isinstance(spec, MapOf):
            out.append("# Each entry's keys: " + ", ".join(k.name for k in spec.entry.keys) + ".")
            out.append(f"{spec.name}:")
            for name, entry in spec.example.items():
                out.append(f"  {name}:")
                for k, val in entry.items():
                    out.append(f"    {k}: {_yaml_inline(val)}")
        else:
            out.append("# Each entry's keys: " + ", ".join(k.name for k in spec.entry.keys) + ".")
            out.append(f"{spec.name}:")
            for entry in spec.example:
                first = True
                for k, val in entry.items():
                    out.append(f"  {'- ' if first else '  '}{k}: {_yaml_inline(val)}")
                    first = False
        out.append("")
    return "\n".join(out)
