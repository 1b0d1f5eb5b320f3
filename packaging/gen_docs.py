"""Regenerate the files derived from the config schema: the example config and docs/configuration.md's reference.

Run through `make docs`; tests/test_config.py fails when either is out of date.
"""

from pathlib import Path

from fmappliance.config_docs import example_yaml, reference_markdown

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def main() -> None:
    (ROOT / "packaging" / "config.example.yaml").write_text(example_yaml())
    page = ROOT / "docs" / "configuration.md"
    text = page.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{START}\n{reference_markdown()}{END}{tail}")


if __name__ == "__main__":
    main()
