"""Pages: dashboard, stack, backups, audit; escaping of everything from the agent."""

import re

from fake_agent import make_stack

from fmappliance.dashboard.schedules import validate_schedule


def test_dashboard_shows_every_stack_with_badge_sites_and_buttons(logged_in):
    text = logged_in.get("/dashboard").text
    assert 'data-stack="prod"' in text and 'data-stack="erp"' in text
    assert 'class="badge badge-ok">running<' in text and 'class="badge badge-warn">partial<' in text
    assert "site1.example.com" in text and "erp.example.com" in text
    for label in ("Backup now", "Restart", "Update", "Migrate"):
        assert f">{label}</button>" in text
    assert "hx-confirm=" in text  # update and migrate ask first
    assert "40.0 GB" in text  # free space where backups live


def test_dashboard_highlights_old_and_missing_backups(logged_in, fake_agent, clock):
    import time

    now = clock.now
    stack = make_stack("prod", ["fresh.example.com", "old.example.com", "none.example.com"], now=now)
    stack["last_backups"]["old.example.com"]["created"] = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 50 * 3600)
    )
    fake_agent.stacks = [stack]
    text = logged_in.get("/dashboard").text
    assert re.search(r'data-site="fresh.example.com">\s*<td>.*?</td>\s*<td class="age-ok">3 h ago', text, re.S)
    assert re.search(r'data-site="old.example.com">\s*<td>.*?</td>\s*<td class="age-stale">2 d ago', text, re.S)
    assert re.search(r'data-site="none.example.com">\s*<td>.*?</td>\s*<td class="age-none">no backup yet', text, re.S)


def test_each_site_shows_whether_it_is_proven_restorable(logged_in, fake_agent, clock):
    import time

    now = clock.now
    stack = make_stack("prod", ["proven.example.com", "broken.example.com", "never.example.com"], now=now)
    stack["last_restore_tests"] = {
        "proven.example.com": {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3 * 86400)),
            "backup": "2026-11-25_02-00-03",
            "source": "local",
            "ok": True,
            "message": "proven restorable from backup 2026-11-25_02-00-03 (local)",
        },
        "broken.example.com": {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600)),
            "backup": "2026-11-25_02-00-03",
            "source": "local",
            "ok": False,
            "message": "Restore test failed: <ERROR 1064>",
        },
        "never.example.com": None,
    }
    fake_agent.stacks = [stack]
    text = logged_in.get("/dashboard").text
    row = re.compile(r'data-site="{}">.*?</tr>', re.S)
    proven = row.pattern.format("proven.example.com")
    assert 'badge badge-ok" title="proven restorable' in re.search(proven, text, re.S).group(0)
    assert "restorable, proven 3 d ago" in re.search(proven, text, re.S).group(0)
    broken = re.search(row.pattern.format("broken.example.com"), text, re.S).group(0)
    assert "badge-bad" in broken and ">restore test failed<" in broken and "&lt;ERROR 1064&gt;" in broken
    never = re.search(row.pattern.format("never.example.com"), text, re.S).group(0)
    assert ">never proven<" in never and ">Test restore</button>" in never


def test_empty_inventory_shows_the_empty_state(logged_in, fake_agent):
    fake_agent.stacks = []
    assert "No stacks configured: add them to /etc/fmappliance/config.yaml" in logged_in.get("/dashboard").text


def test_names_and_output_from_the_agent_are_escaped(logged_in, fake_agent):
    evil = "<script>alert(1)</script>"
    stack = make_stack("prod", ["site1.example.com"])
    stack["name"] = "x" + evil
    stack["reason"] = evil
    stack["services"][0]["status"] = evil
    stack["sites"] = [evil]
    stack["last_backups"] = {evil: None}
    fake_agent.stacks = [stack]
    fake_agent.job_output = evil
    text = logged_in.get("/dashboard").text
    assert evil not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # Job output too.
    fake_agent.stacks = [make_stack("prod", ["site1.example.com"])]
    token = logged_in.page_token()
    job = logged_in.post(
        "/site/prod/site1.example.com/backup", data={"csrf_token": token}, headers={"Accept": "application/json"}
    ).json()["job"]
    logged_in.get(f"/jobs/{job['id']}", headers={"HX-Request": "true"})
    panel = logged_in.get(f"/jobs/{job['id']}", headers={"HX-Request": "true"}).text
    assert evil not in panel and "&lt;script&gt;" in panel


def test_templates_have_no_inline_script_or_style(logged_in):
    for path in ("/dashboard", "/stack/prod", "/backups/prod/site1.example.com", "/audit"):
        text = logged_in.get(path).text
        assert not re.search(r"<script(?![^>]*\ssrc=)", text), path
        assert "<style" not in text and " style=" not in text and " on" + "click=" not in text
        assert re.search(
            r"<meta name=\"htmx-config\" content='\{\"includeIndicatorStyles\":false,\"allowEval\":false,\"allowScriptTags\":false\}'>",
            text,
        )


def test_stack_page_lists_services_sites_and_recent_jobs(logged_in, fake_agent):
    token = logged_in.page_token()
    logged_in.post("/stack/prod/restart", data={"csrf_token": token})
    text = logged_in.get("/stack/prod").text
    assert "prod-backend-1" in text and "site2.example.com" in text
    assert "<td>Restart</td>" in text and 'data-job-id="0000000000000001"' in text


def test_unknown_stack_is_a_404_page(logged_in):
    response = logged_in.get("/stack/nosuch")
    assert response.status == 404 and "notice-error" in response.text


def test_malformed_stack_name_is_a_400_and_the_agent_is_not_asked(logged_in, fake_agent):
    before = len(fake_agent.requests)
    assert logged_in.get("/stack/..etc").status == 400
    assert logged_in.get("/stack/bad%20name").status == 400
    # A decoded slash makes it a path no page matches.
    assert logged_in.get("/stack/..%2fetc").status == 404
    assert len(fake_agent.requests) == before


def test_backups_page_newest_first_with_sizes_verified_links_and_chart(logged_in, fake_agent):
    for day, size in ((23, 1000), (25, 3000), (24, 2000)):
        stamp = f"2026-11-{day}_02-00-03"
        fake_agent.add_backup(
            "prod", "site1.example.com", stamp, {f"{stamp}.sql.gz": b"x" * size, f"{stamp}.files.tar": b"y" * 10}
        )
    text = logged_in.get("/backups/prod/site1.example.com").text
    order = [m for m in re.findall(r'data-backup-id="([^"]+)"', text)]
    assert order == ["2026-11-25_02-00-03", "2026-11-24_02-00-03", "2026-11-23_02-00-03"]
    assert 'href="/download/prod/site1.example.com/2026-11-25_02-00-03.sql.gz"' in text
    assert "verified" in text and "3.0 KB" in text
    assert re.search(r'<svg class="chart"[^>]*>.*<polyline class="chart-line" points="[\d., ]+">', text, re.S)


def test_backups_page_empty_state(logged_in):
    assert "No backups of this site yet" in logged_in.get("/backups/prod/site2.example.com").text


def test_audit_page_shows_events_in_server_time(logged_in):
    text = logged_in.get("/audit").text
    assert ">login</td>" in text and ">ok</td>" in text and "203.0.113.7" in text


def test_audit_page_escapes_user_names(client, app):
    client.login("<img src=x>", "wrong")
    client.login()
    text = client.get("/audit").text
    assert "<img src=x>" not in text and "&lt;img src=x&gt;" in text


def test_pages_are_usable_on_a_phone(client):
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in client.get("/login").text
    assert "@media (max-width" in client.get("/static/app.css").text


def test_odd_agent_data_never_breaks_the_dashboard(logged_in, fake_agent):
    good = make_stack("prod", ["site1.example.com"])
    fake_agent.stacks = [
        "junk",
        5,
        {"name": "half", "services": "x", "sites": "abc", "last_backups": [1]},
        {"name": "odd", "services": [None, {"state": 3}], "sites": [7], "last_backups": {"7": "x"}},
        good,
    ]
    response = logged_in.get("/dashboard")
    assert response.status == 200
    assert 'data-stack="half"' in response.text and 'data-stack="prod"' in response.text


def test_the_stale_threshold_of_a_scheduled_site_is_twice_its_interval(app, logged_in, fake_agent, clock):
    # The last backup is 53 h old: past the 48 h of an unscheduled site, within a weekly schedule's two weeks.
    fake_agent.stacks = [make_stack("prod", ["site1.example.com"], now=clock.now - 50 * 3600)]
    assert 'class="age-stale">2 d ago' in logged_in.get("/dashboard").text
    fields = {
        "stack": "prod",
        "site": "site1.example.com",
        "frequency": "weekly",
        "time": "02:00",
        "day_of_week": "sun",
    }
    clean, errors = validate_schedule(fields, known_stacks=None, default_tz="UTC")
    assert errors == {}
    app.ctx.scheduler.store.add(clean, "admin")
    assert 'class="age-ok">2 d ago' in logged_in.get("/dashboard").text


def test_a_bench_needing_fm_migrate_says_so_on_its_card_with_the_agents_sentence(logged_in, fake_agent):
    sentence = (
        'erp.localhost needs "fm migrate erp.localhost" (its files were written by Frappe Manager v0.19.0, '
        "this is v0.20.0); run it on the server, then retry."
    )
    bench = make_stack("erp", ["erp.localhost"], kind="fm")
    bench.update(needs_migration=True, reason=sentence)
    fake_agent.stacks = [bench, make_stack("prod", ["site1.example.com"])]
    text = logged_in.get("/dashboard").text
    card = re.search(r'<section class="card stack"[^>]*data-stack="erp".*?</section>', text, re.S).group(0)
    assert 'data-status="running"' in card  # the containers' status stands
    assert 'data-needs-migration="erp"' in card and ">needs fm migrate<" in card
    assert "erp.localhost needs &quot;fm migrate erp.localhost&quot; (its files were written by" in card
    other = re.search(r'<section class="card stack"[^>]*data-stack="prod".*?</section>', text, re.S).group(0)
    assert "needs fm migrate" not in other
    page = logged_in.get("/stack/erp").text
    assert "data-needs-migration" in page and "fm migrate erp.localhost" in page


def test_restarts_ask_first_and_the_regions_a_finished_job_changes_are_marked(logged_in):
    page = logged_in.get("/dashboard").text
    assert (
        'hx-post="/stack/prod/restart" hx-confirm="Restart stack prod? All its containers restart, the database '
        'included; sites are briefly down."' in page
    )
    assert (
        'hx-post="/site/prod/site1.example.com/restart" hx-confirm="Restart site site1.example.com? Its services '
        'restart; the site is briefly down."' in page
    )
    # app.js reads these again when a job started from the page ends.
    assert '<section class="card stack" id="stack-prod" data-refresh' in page
    stack = logged_in.get("/stack/prod").text
    for region in ("stack-services", "stack-sites", "stack-jobs"):
        assert f'id="{region}" data-refresh' in stack
    backups = logged_in.get("/backups/prod/site1.example.com").text
    assert 'id="backup-chart" data-refresh' in backups and 'id="backup-list" data-refresh' in backups
