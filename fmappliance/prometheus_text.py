"""Writing the Prometheus text exposition format, version 0.0.4.

Both services expose ``GET /metrics``; neither needs the prometheus-client package for a
handful of gauges, counters and one histogram.  Format rules followed here: one ``# HELP``
and one ``# TYPE`` line per family before its samples, label values escaped (backslash,
double quote, newline), help text escaped (backslash, newline), numbers as Go would print
them (``+Inf``, ``-Inf``, ``NaN``), a trailing newline.
(https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


def format_value(value: float) -> str:
    """A sample value: integers without a fraction, infinities and NaN as Prometheus spells them."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape_label(str(value))}"' for key, value in labels) + "}"


@dataclass
class Family:
    """One metric family: its samples are (suffix, labels, value), e.g. ("_bucket", (("le", "5"),), 3)."""

    name: str
    kind: str  # gauge, counter, histogram
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append(("", tuple(labels.items()), value))

    def add_histogram(self, labels: dict[str, str], bounds: tuple[float, ...], counts: list[int], total: float) -> None:
        """``counts[i]`` observations fell at or below ``bounds[i]`` and above the previous bound;
        ``counts[-1]`` (one more than the bounds) counts those above the last bound."""
        base = tuple(labels.items())
        cumulative = 0
        for bound, count in zip(bounds, counts):
            cumulative += count
            # "1.0", not "1": the spelling prometheus-client uses, so series keep one identity.
            self.samples.append(("_bucket", base + (("le", repr(float(bound))),), cumulative))
        cumulative += counts[len(bounds)]
        self.samples.append(("_bucket", base + (("le", "+Inf"),), cumulative))
        self.samples.append(("_sum", base, total))
        self.samples.append(("_count", base, cumulative))


def render(families: list[Family]) -> str:
    """The exposition text of ``families`` (a family without samples still gets its HELP and TYPE)."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            lines.append(f"{family.name}{suffix}{format_labels(labels)} {format_value(value)}")
    return "\n".join(lines) + "\n" if lines else ""
