"""Fixtures for the packaging and installer tests: one build of the zipapps per session."""

from __future__ import annotations

import pytest
from install_harness import build_dist


@pytest.fixture(scope="session")
def dist(tmp_path_factory):
    """dist/ as `make build` makes it (built once per session into a temp dir)."""
    return build_dist(tmp_path_factory.mktemp("dist"))
