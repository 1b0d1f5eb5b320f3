"""Regenerate the derived docs: the example config and the configuration reference (from the config schema),
and the action table (from fmappliance/actions_table.py).

Each generated block sits between its markers, in whichever of README.md and docs/*.md holds them, so the
block can move between pages.  Run through `make docs`; tests/test_config.py and tests/test_actions_table.py
fail when a block is out of date.
"""

from pathlib import Path

from fmappliance.actions_table import markdown_table
from fmappliance.config_docs import example_yaml, reference_markdown

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
ACTIONS_START, ACTIONS_END = "<!-- actions-table:start -->", "<!-- actions-table:end -->"


def write_block(start: str, end: str, content: str) -> None:
    """Replace the block between ``start`` and ``end`` in every page that holds them."""
    for page in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = page.read_text()
        if start not in text:
            continue
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        page.write_text(f"{head}{start}\n{content}{end}{tail}")


def main() -> None:
    (ROOT / "packaging" / "config.example.yaml").write_text(example_yaml())
    write_block(START, END, reference_markdown())
    write_block(ACTIONS_START, ACTIONS_END, markdown_table())


if __name__ == "__main__":
    main()
