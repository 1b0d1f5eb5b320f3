"""Real Chromium (Debian's, through Playwright) against the agent and the dashboard started as real
processes over the docker/fm doubles.

``served``      (module) the world, ``agent`` and ``dashboard`` processes; logs attached to failed tests;
                a module overrides ``served_config`` to add config sections (e.g. ``schedules``);
                the test config signs in with the password alone (``dashboard.totp: off``) unless a
                module turns the second factor on there
``browser``     (session) one Chromium; a missing /usr/bin/chromium FAILS the suite with the fix to run
``watch``       a fresh page whose console errors, page errors and CSP violations are collected;
                ``watch.assert_clean()`` after every page, and once more at teardown
``signed_in``   ``watch`` already signed in and on /dashboard
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import pytest
from support.config_factory import TEST_PASSWORD, TEST_USER
from support.world import (
    AgentProcess,
    DashboardProcess,
    World,
    build_world,
    kill_hanging_doubles,
    start_agent_and_dashboard,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 15_000

# Recorded by the init script in every document, before any of the page's own scripts run.
# A binding call reaches Python at once, so a violation just before a navigation is not lost.
CSP_RECORDER = """
document.addEventListener("securitypolicyviolation", function (e) {
  window.__fmReportCsp(JSON.stringify({directive: e.violatedDirective, blocked: e.blockedURI,
                                       source: e.sourceFile, line: e.lineNumber, sample: e.sample}));
});
"""


@dataclass
class Served:
    world: World
    agent: AgentProcess
    dashboard: DashboardProcess

    @property
    def url(self) -> str:
        return self.dashboard.url

    def logs(self) -> str:
        return f"--- agent output\n{self.agent.output()}\n--- dashboard output\n{self.dashboard.output()}"


@pytest.fixture(scope="module")
def served_config():
    """Config sections added for ``served`` (e.g. ``{"schedules": [...]}``); a test module overrides it."""
    return {}


@pytest.fixture(scope="module")
def served(tmp_path_factory, served_config):
    world = build_world(tmp_path_factory.mktemp("e2e"))
    # Actions invalidate the status cache, so a long one only spares repeated page loads the docker double.
    agent, dashboard = start_agent_and_dashboard(world, agent={"status_cache_seconds": 60}, **served_config)
    yield Served(world, agent, dashboard)
    dashboard.stop()
    agent.stop()
    kill_hanging_doubles(world.doubles)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test shows what the agent and the dashboard wrote."""
    outcome = yield
    report = outcome.get_result()
    served = getattr(item, "funcargs", {}).get("served")
    if report.failed and isinstance(served, Served):
        report.sections.append(("agent and dashboard output", served.logs()))


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser suite needs Debian's chromium "
            "(run `make system-deps` or `apt-get install -y chromium`).",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class WatchedPage:
    """A page plus everything that went wrong in it: console errors, uncaught errors, CSP violations."""

    def __init__(self, page, base_url: str):
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        self.allowed: list[re.Pattern] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda err: self.problems.append(f"uncaught error on {page.url}: {err}"))

    def _on_console(self, msg) -> None:
        if msg.type != "error":
            return
        text = msg.text
        if any(p.search(text) for p in self.allowed):
            return
        self.problems.append(f"console error on {self.page.url}: {text}")

    def report_csp(self, source, data: str) -> None:
        self.problems.append(f"CSP violation on {source['frame'].url}: {data}")

    def goto(self, path: str):
        response = self.page.goto(self.base_url + path)
        self.assert_clean()
        return response

    def assert_clean(self) -> None:
        """No console error, page error or CSP violation since the last check."""
        # CSP reports and console messages arrive as events: one round trip to the page lets them land.
        self.page.evaluate("() => new Promise(r => setTimeout(r, 0))")
        problems, self.problems = self.problems, []
        assert not problems, "\n".join(problems)

    @contextlib.contextmanager
    def expecting_console_error(self, regex: str):
        """Inside this block a console error matching ``regex`` is expected, not a problem."""
        pattern = re.compile(regex)
        self.allowed.append(pattern)
        try:
            yield
            self.page.evaluate("() => new Promise(r => setTimeout(r, 0))")
        finally:
            self.allowed.remove(pattern)

    def expecting_http_status(self, status: int):
        """Chromium logs an error answer as 'Failed to load resource'; inside this block that one is expected."""
        return self.expecting_console_error(
            rf"^Failed to load resource: the server responded with a status of {status} "
        )

    def sign_in(self, password: str = TEST_PASSWORD, user: str = TEST_USER) -> None:
        self.page.fill("#username", user)
        self.page.fill("#password", password)
        with self.page.expect_navigation():
            self.page.click("form[action='/login'] button[type=submit]")


@pytest.fixture
def watch(browser, served):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watched = WatchedPage(page, served.url)
    context.expose_binding("__fmReportCsp", watched.report_csp)
    context.add_init_script(CSP_RECORDER)
    yield watched
    problems = list(watched.problems)
    context.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def signed_in(watch):
    watch.goto("/login")
    watch.sign_in()
    assert watch.page.url.endswith("/dashboard"), watch.page.url
    watch.assert_clean()
    return watch
