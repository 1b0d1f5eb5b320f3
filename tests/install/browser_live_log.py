"""Run by test_nginx.py in its own process (the browser suite may hold Playwright's sync API in
the test process): a real Chromium signed in through nginx follows the backend's log while this
script plays the service writing lines; each must be on screen within 1 s.

Usage: browser_live_log.py <https base URL> <fmsession cookie> <docker double state dir>
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "doubles"))

from double_state import DoubleWorld  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402


def main(base: str, session: str, state_dir: str) -> int:
    log = DoubleWorld(state_dir)
    log.write_log("frappe_docker", "backend", "browser via nginx: booted")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(ignore_https_errors=True)
            context.add_cookies([{"name": "fmsession", "value": session, "url": base}])
            page = context.new_page()
            page.goto(base + "/stack/prod/logs?service=backend")
            expect(page.locator("#log-status")).to_contain_text("Following the log of backend")
            expect(page.locator("#log-lines")).to_contain_text("browser via nginx: booted")
            for n in range(3):
                log.write_log("frappe_docker", "backend", f"browser via nginx: line {n}")
                # The contract, through nginx too: on screen within 1 s of the service writing it.
                expect(page.locator("#log-lines")).to_contain_text(f"browser via nginx: line {n}", timeout=1000)
            context.close()
        finally:
            browser.close()
    print("live log lines reached the browser through nginx")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
