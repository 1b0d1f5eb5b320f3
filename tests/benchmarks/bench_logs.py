"""Live logs: pages keep answering while streams are open, and a long stream keeps memory flat.

The real agent and dashboard run as processes over the docker double.  Goals: with 8 followed
log streams open through the dashboard (the agent's default agent.max_log_streams), GET
/dashboard answers under 200 ms (median of 20); relaying ~20 MB of log lines leaves the agent's
and the dashboard's resident memory flat (growth under 5 MiB each).
"""

from __future__ import annotations

import http.client
import http.cookiejar
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from measure import rss_mb, verdict  # noqa: E402
from support.config_factory import TEST_PASSWORD, TEST_PASSWORD_HASH, TEST_USER  # noqa: E402
from support.streams import LineStream  # noqa: E402
from support.world import build_world, kill_hanging_doubles, start_agent_and_dashboard  # noqa: E402

STREAMS = 8
GOAL_PAGE_MS = 200.0
GOAL_GROWTH_MB = 5.0
FLOOD_LINES = 200_000  # ~20 MB with the container prefix and timestamp


# A user may follow 3 logs at once (dashboard/relays.py): the streams are spread over operators.
STREAM_USERS = [f"ops{i}" for i in range(STREAMS // 2)]


def sign_in(url: str, user: str = TEST_USER) -> tuple[urllib.request.OpenerDirector, str]:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(url + "/login", timeout=10) as res:
        token = re.search(r'name="csrf_token" value="([^"]+)"', res.read().decode()).group(1)
    form = urllib.parse.urlencode({"username": user, "password": TEST_PASSWORD, "csrf_token": token}).encode()
    with opener.open(urllib.request.Request(url + "/login", data=form, headers={"Origin": url}), timeout=10):
        pass
    return opener, next(c.value for c in jar if c.name == "fmsession")


def Stream(port: int, cookie: str, service: str = "backend") -> LineStream:
    """A followed log through the dashboard; ``data_count`` counts the events it read."""
    stream = LineStream(
        port, f"/stack/prod/logs/stream?service={service}&tail=1", {"Cookie": f"fmsession={cookie}"}, 30, keep=False
    )
    assert stream.resp.status == 200, stream.resp.status
    return stream


def page_times(opener, url: str, n: int = 20) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        with opener.open(url + "/dashboard", timeout=30) as res:
            res.read()
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(Path(tmp))
        users = {TEST_USER: TEST_PASSWORD_HASH}
        users.update({user: {"password": TEST_PASSWORD_HASH, "role": "operator"} for user in STREAM_USERS})
        agent, dashboard = start_agent_and_dashboard(world, dashboard={"credentials": users})
        streams: list[Stream] = []
        try:
            opener, cookie = sign_in(dashboard.url)
            page_times(opener, dashboard.url, 3)  # warm up
            idle = statistics.median(page_times(opener, dashboard.url))
            cookies = [sign_in(dashboard.url, user)[1] for user in STREAM_USERS]
            streams = [Stream(dashboard.port, cookies[i % len(cookies)]) for i in range(STREAMS)]
            busy_times = page_times(opener, dashboard.url)
            busy = statistics.median(busy_times)
            print(f"GET /dashboard with no log stream: {idle * 1000:.0f} ms (information)")
            print(
                f"GET /dashboard with {STREAMS} log streams open: median {busy * 1000:.0f} ms, "
                f"slowest {max(busy_times) * 1000:.0f} ms (goal < {GOAL_PAGE_MS:.0f} ms) "
                f"{verdict(busy * 1000 < GOAL_PAGE_MS)}"
            )
            for stream in streams[1:]:
                stream.close()
            flood = streams[0]
            time.sleep(1)
            agent_before, dash_before = rss_mb(agent.proc.pid), rss_mb(dashboard.proc.pid)
            line = "GET /api/method/frappe.desk.form.load.getdoc?doctype=Sales+Invoice&name=ACC-SINV-2026-00042 200"
            start = time.perf_counter()
            agent_peak = dash_peak = 0.0
            for batch in range(FLOOD_LINES // 2000):
                world.doubles.write_log(world.compose_project, "backend", *([line] * 2000))
                while flood.data_count < (batch + 1) * 2000 - 20_000:  # the reader stays within 20k lines of the writer
                    time.sleep(0.01)
                agent_peak = max(agent_peak, rss_mb(agent.proc.pid))
                dash_peak = max(dash_peak, rss_mb(dashboard.proc.pid))
            deadline = time.monotonic() + 120
            while flood.data_count < FLOOD_LINES and time.monotonic() < deadline:
                time.sleep(0.05)
            took = time.perf_counter() - start
            agent_after, dash_after = rss_mb(agent.proc.pid), rss_mb(dashboard.proc.pid)
            size_mb = FLOOD_LINES * (len(line) + 60) / 1e6
            print(
                f"relayed {flood.data_count} of {FLOOD_LINES} lines (~{size_mb:.0f} MB) in {took:.1f} s (information)"
            )
            for name, before, peak, after in (
                ("agent", agent_before, agent_peak, agent_after),
                ("dashboard", dash_before, dash_peak, dash_after),
            ):
                growth = max(peak, after) - before
                print(
                    f"{name} memory while relaying: {before:.1f} -> peak {peak:.1f} -> {after:.1f} MiB, "
                    f"{growth:+.1f} MiB (goal: flat, < {GOAL_GROWTH_MB:.0f} MiB) {verdict(growth < GOAL_GROWTH_MB)}"
                )
        finally:
            for stream in streams:
                stream.close()
            dashboard.stop()
            agent.stop()
            kill_hanging_doubles(world.doubles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
