"""Every page and action also under /s/<server>/…: the prefix picks the agent, links keep it.

Two fake agents stand for the local server (``hq``) and the fleet server ``erp-b``; both have a
stack named ``prod``, with different sites, so a mix-up shows.  The link itself (hub, uplink, TLS)
is tested in tests/fleet; here the fleet view is a small stand-in with the same interface.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from fake_agent import TOKEN, FakeAgent, make_stack

from fmappliance.dashboard.agent_client import AgentClient
from fmappliance.dashboard.app import make_app


class _Registry:
    def __init__(self, names):
        self.names = names

    def servers(self):
        return [{"name": n, "address": "127.0.0.2"} for n in self.names]

    def api_token(self, name):
        return TOKEN if name in self.names else None


class _Hub:
    def __init__(self):
        self.states = {}

    def state(self, name):
        return {"state": self.states.get(name, "online"), "agent_version": "0.1"}

    def _unreachable_sentence(self, name):
        return f"server {name} is unreachable since 2026-12-07T10:41:00Z (12 min ago)."


class _View:
    local_name = "hq"

    def __init__(self, local, remote):
        self.registry = _Registry(["erp-b"])
        self.hub = _Hub()
        self.local, self.remote = local, remote
        self.asked = []

    def client(self, name):
        self.asked.append(name)
        if name == "hq":
            return self.local
        return AgentClient(self.remote.url, TOKEN, 5, cache_seconds=0)


@pytest.fixture
def remote():
    agent = FakeAgent(stacks=[make_stack("prod", ["b.example.com"])]).start()
    yield agent
    agent.stop()


@pytest.fixture
def fleet(config, clock, remote):
    config["fleet"]["local_name"] = _View.local_name
    app = make_app(config, clock=clock)
    view = _View(app.ctx.services.agent, remote)
    app.ctx.services.fleet_view = view
    return app, view


@pytest.fixture
def signed_in(fleet):
    from support.wsgi import WSGIClient

    client = WSGIClient(fleet[0])
    assert client.login().status == 303
    return client


def test_the_prefix_picks_the_server_and_two_prods_never_mix(signed_in, fake_agent, remote):
    local = signed_in.get("/stack/prod", headers={"Accept": "application/json"}).json()
    other = signed_in.get("/s/erp-b/stack/prod", headers={"Accept": "application/json"}).json()
    assert local["stack"]["sites"] == ["site1.example.com", "site2.example.com"]
    assert other["stack"]["sites"] == ["b.example.com"]
    assert signed_in.get("/s/hq/stack/prod", headers={"Accept": "application/json"}).json() == local

    page = signed_in.get("/s/erp-b/dashboard")
    assert page.status == 200, page.text
    assert "b.example.com" in page.text and "site1.example.com" not in page.text
    # Links on the page keep the prefix; pages the same for every server do not get one.
    assert 'href="/s/erp-b/stack/prod"' in page.text
    assert 'href="/s/erp-b/backups/prod/b.example.com"' in page.text
    assert 'hx-post="/s/erp-b/site/prod/b.example.com/backup"' in page.text
    assert 'data-jobs="/s/erp-b/jobs/"' in page.text
    assert 'href="/account"' in page.text and 'action="/logout"' in page.text
    assert not re.search(r'(href|action|hx-[a-z]+)="/(stack|site|backups|jobs)/', page.text)
    # The server switcher: every server, the current one marked.
    assert 'href="/s/hq/dashboard"' in page.text
    assert re.search(r'<a href="/s/erp-b/dashboard" class="active" aria-current="true">erp-b</a>', page.text)

    # The unprefixed page is the local server's, with unprefixed links.
    home = signed_in.get("/dashboard").text
    assert "site1.example.com" in home and "b.example.com" not in home
    assert 'href="/stack/prod"' in home


def test_an_action_under_the_prefix_runs_on_that_server_only(signed_in, fake_agent, remote):
    token = signed_in.page_token("/s/erp-b/dashboard")
    answer = signed_in.post(
        "/s/erp-b/site/prod/b.example.com/backup", data={"csrf_token": token, "return_to": "/dashboard"}
    )
    assert answer.status == 303, answer.text
    # Back to the page it came from, on the same server.
    assert answer.header("Location").endswith("/s/erp-b/dashboard")
    assert len([r for r in remote.requests if r[0] == "POST"]) == 1
    assert not [r for r in fake_agent.requests if r[0] == "POST"]
    job_id = next(iter(remote.jobs))
    job = signed_in.get(f"/s/erp-b/jobs/{job_id}", headers={"Accept": "application/json"})
    assert job.status == 200 and job.json()["id"] == job_id
    assert signed_in.get(f"/jobs/{job_id}", headers={"Accept": "application/json"}).status == 404


def test_downloads_from_another_server_are_relayed_with_range(signed_in, remote, config):
    content = bytes(range(256)) * 40
    remote.add_backup("prod", "b.example.com", "2026-12-01_02-00-00", {"2026-12-01_02-00-00.sql.gz": content})
    config["dashboard"]["download_mode"] = "accel"  # nginx can only hand out the local server's files
    url = "/s/erp-b/download/prod/b.example.com/2026-12-01_02-00-00.sql.gz"
    whole = signed_in.get(url)
    assert whole.status == 200, whole.text
    assert whole.header("X-Accel-Redirect") is None
    assert hashlib.sha256(whole.body).hexdigest() == hashlib.sha256(content).hexdigest()
    part = signed_in.get(url, headers={"Range": "bytes=10-19"})
    assert part.status == 206 and part.body == content[10:20]
    # A server whose link is full says so with 503 and its sentence (not a generic 502).
    remote.fail_paths["/backups/"] = 503
    busy = signed_in.get(url, headers={"Accept": "application/json"})
    assert busy.status == 503 and busy.json()["message"].endswith("fake failure 503")


def test_a_server_not_online_refuses_actions_at_once_and_shows_why(signed_in, fleet, remote):
    _, view = fleet
    token = signed_in.page_token("/s/erp-b/dashboard")
    view.hub.states["erp-b"] = "unreachable"
    page = signed_in.get("/s/erp-b/dashboard")
    sentence = "server erp-b is unreachable since 2026-12-07T10:41:00Z (12 min ago)."
    assert sentence in page.text
    assert 'class="server-blocked" disabled' in page.text
    before = len(remote.requests)
    refused = signed_in.post(
        "/s/erp-b/site/prod/b.example.com/backup", data={"csrf_token": token}, headers={"Accept": "application/json"}
    )
    assert refused.status == 503 and refused.json()["message"] == sentence
    assert len(remote.requests) == before, "nothing was sent (never queued)"

    view.hub.states["erp-b"] = "agent_down"
    refused = signed_in.post(
        "/s/erp-b/stack/prod/restart", data={"csrf_token": token}, headers={"Accept": "application/json"}
    )
    assert refused.status == 502
    assert refused.json()["message"] == "erp-b's uplink is connected but its agent does not answer."
    # The local server is not affected.
    assert "disabled" not in signed_in.get("/dashboard").text.split("<main")[1].split("server-blocked")[0]


def test_unknown_servers_and_global_pages_under_a_prefix(signed_in, fleet, client):
    assert signed_in.get("/s/nope/dashboard").status == 404
    assert "There is no server nope in the fleet." in signed_in.get("/s/nope/dashboard").text
    assert signed_in.get("/s/Bad_Name/dashboard").status == 404
    # A name that is not one never reaches the answer's links.
    hostile = signed_in.get('/s/x"><script>alert(1)</script>/dashboard')
    assert hostile.status == 404 and "<script>alert" not in hostile.text
    assert signed_in.get("/s/erp-b/account").status == 404
    # Home: the fleet page when there is more than one server; /s/<server>/ is its dashboard.
    assert signed_in.get("/").header("Location") == "/fleet"
    assert signed_in.get("/s/erp-b/").header("Location").endswith("/s/erp-b/dashboard")
    # Not signed in: the sign-in page, coming back to the same server's page afterwards.
    answer = client.get("/s/erp-b/stack/prod")
    assert answer.status == 303
    assert answer.header("Location") == "/login?next=%2Fs%2Ferp-b%2Fstack%2Fprod"


def test_without_a_hub_a_prefix_is_404(logged_in):
    answer = logged_in.get("/s/erp-b/dashboard")
    assert answer.status == 404
    assert "no fleet hub" in answer.text


def _app_with_users(config, clock, remote, credentials):
    from support.config_factory import TEST_PASSWORD_HASH
    from support.wsgi import WSGIClient

    config["dashboard"]["credentials"] = {
        name: {"password": TEST_PASSWORD_HASH, **entry} for name, entry in credentials.items()
    }
    config["dashboard"]["totp"] = "off"
    config["fleet"]["local_name"] = _View.local_name
    app = make_app(config, clock=clock)
    app.ctx.services.fleet_view = _View(app.ctx.services.agent, remote)
    clients = {}
    for name in credentials:
        clients[name] = WSGIClient(app)
        assert clients[name].login(name).status == 303
    return app, clients


def test_roles_per_server_decide_on_the_server_in_the_url(config, clock, remote, fake_agent, tmp_path):
    from fmappliance.config import ConfigError, load_config

    _, users = _app_with_users(
        config,
        clock,
        remote,
        {
            "ops": {"roles": {"*": "viewer", "erp-b": "operator"}},
            "bee": {"role": "operator", "servers": ["erp-b"]},
        },
    )
    ops, bee = users["ops"], users["bee"]
    # ops: an operator on erp-b, a viewer on the local server (hq).
    token = ops.page_token("/s/erp-b/dashboard")
    assert ops.post("/s/erp-b/site/prod/b.example.com/backup", data={"csrf_token": token}).status == 303
    refused = ops.post(
        "/site/prod/site1.example.com/backup", data={"csrf_token": token}, headers={"Accept": "application/json"}
    )
    assert refused.status == 403
    assert refused.json()["message"] == "Your role (viewer) may not do this; it needs operator."
    assert not [r for r in fake_agent.requests if r[0] == "POST"]
    # The buttons follow: erp-b's dashboard shows "Backup now", the local one does not.
    assert "Backup now" in ops.get("/s/erp-b/dashboard").text
    assert "Backup now" not in ops.get("/dashboard").text
    # bee: erp-b only; the local server's pages are refused with the reason, the switcher shows erp-b only.
    assert bee.get("/s/erp-b/stack/prod", headers={"Accept": "application/json"}).status == 200
    for path in ("/stack/prod", "/s/hq/stack/prod"):
        answer = bee.get(path, headers={"Accept": "application/json"})
        assert answer.status == 403
        assert answer.json()["message"] == (
            "You have no role on server hq (dashboard.credentials.bee: servers or roles)."
        )
    fleet = bee.get("/s/erp-b/dashboard").text
    assert 'href="/s/hq/dashboard"' not in fleet
    # The account page (shared by every server) stays open to them.
    assert bee.get("/account").status == 200

    # The config says what is wrong with a bad entry.
    for entry, problem in (
        ({"role": "admin", "roles": {"*": "viewer"}}, "either roles"),
        ({"roles": {"Bad": "viewer"}}, "is not a server name"),
        ({"roles": {"erp-b": "root"}}, "the role for erp-b must be one of"),
        ({"servers": []}, "non-empty list"),
    ):
        from support.config_factory import TEST_PASSWORD_HASH, write_config

        path = write_config(tmp_path, dashboard={"credentials": {"u": {"password": TEST_PASSWORD_HASH, **entry}}})
        with pytest.raises(ConfigError) as bad:
            load_config(path)
        assert problem in str(bad.value)


def test_audit_rows_carry_the_server_and_the_request_id_sent_to_its_agent(signed_in, remote):
    token = signed_in.page_token("/s/erp-b/dashboard")
    remote.requests.clear()
    remote.request_ids.clear()
    assert signed_in.post("/s/erp-b/site/prod/b.example.com/backup", data={"csrf_token": token}).status == 303
    rows = signed_in.get("/audit", headers={"Accept": "application/json"}).json()["events"]
    row = next(r for r in rows if r["action"] == "backup_site")
    assert row["server"] == "erp-b"
    assert re.fullmatch(r"[0-9a-f]{16}", row["request_id"])
    sent = [i for r, i in zip(remote.requests, remote.request_ids) if r[0] == "POST"]
    assert sent == [row["request_id"]]
    # The audit page links that job on its own server.
    page = signed_in.get("/audit").text
    assert f'href="/s/erp-b/jobs/{row["job_id"]}"' in page
