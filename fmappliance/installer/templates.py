"""Fill install.sh's templates (packaging/systemd, packaging/nginx).

``@KEY@`` placeholders get their values; a line starting with ``#@TAG[,TAG] `` is kept
(without the marker) when all its tags are switched on, dropped otherwise.  A placeholder
without a value is an error: a half-filled unit or site must never be installed.
"""

from __future__ import annotations

import re

_MARKER = re.compile(r"#@([A-Z0-9,]+) ")
_PLACEHOLDER = re.compile(r"@([A-Z0-9_]+)@")


class TemplateError(Exception):
    pass


def render(template: str, tags: set[str], values: dict[str, str], name: str = "template") -> str:
    lines = []
    for line in template.splitlines():
        marker = _MARKER.match(line)
        if marker:
            if not set(marker.group(1).split(",")) <= tags:
                continue
            line = line[marker.end() :]
        lines.append(line)

    def fill(match: re.Match) -> str:
        if match.group(1) not in values:
            raise TemplateError(f"{name}: no value for @{match.group(1)}@")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(fill, "\n".join(lines) + "\n")
