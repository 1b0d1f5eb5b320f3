"""Shaping helpers (ages, sizes, chart) and the audit log's escaping."""

import datetime as dt
import json
import logging

from fmappliance.dashboard import views
from fmappliance.dashboard.audit import escape_control

NOW = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)


def test_human_ages():
    assert views.human_age("2026-11-25T11:59:30Z", NOW) == "just now"
    assert views.human_age("2026-11-25T11:15:00Z", NOW) == "45 min ago"
    assert views.human_age("2026-11-25T09:00:00Z", NOW) == "3 h ago"
    assert views.human_age("2026-11-20T12:00:00Z", NOW) == "5 d ago"
    assert views.human_age(None, NOW) == "never"
    assert views.human_age("garbage", NOW) == "never"


def test_human_sizes():
    assert views.human_size(999) == "999 B"
    assert views.human_size(12_345_678) == "12.3 MB"
    assert views.human_size(2 * 10**12) == "2.0 TB"
    assert views.human_size(None) == "?"


def test_backup_age_highlight_after_48_hours():
    assert views.backup_age_class({"created": "2026-11-24T12:00:00Z"}, NOW) == "age-ok"
    assert views.backup_age_class({"created": "2026-11-23T11:00:00Z"}, NOW) == "age-stale"
    assert views.backup_age_class(None, NOW) == "age-none"


def test_size_chart_points_run_oldest_left_biggest_top_with_a_y_scale():
    backups = [
        {"created": "2026-11-25T02:00:00Z", "size": 300},
        {"created": "2026-11-23T02:00:00Z", "size": 100},
        {"created": "2026-11-24T02:00:00Z", "size": 200},
    ]
    chart = views.size_chart(backups, width=110, height=50, left=10, right=0, top=0, bottom=0)
    assert chart["points"] == "10.0,50.0 60.0,25.0 110.0,0.0"
    assert [d["y"] for d in chart["dots"]] == ["50.0", "25.0", "0.0"]
    assert [t["label"] for t in chart["ticks"]] == ["300 B", "200 B", "100 B"]
    assert chart["dots"][0]["title"].endswith(": 100 B")
    assert views.size_chart(backups[:1]) is None


def test_size_chart_of_nearly_equal_sizes_the_same_day_is_not_a_flat_line_with_equal_labels():
    backups = [
        {"created": "2026-11-25T02:00:00Z", "size": 1_000_000},
        {"created": "2026-11-25T09:30:00Z", "size": 1_000_400},
    ]
    chart = views.size_chart(backups)
    assert chart["dots"][0]["y"] != chart["dots"][1]["y"]
    assert len({t["label"] for t in chart["ticks"]}) == 3
    assert chart["first_label"] != chart["last_label"]
    assert len(chart["last_label"]) == 5  # the time of day only: the date is the first label's


def test_job_duration_and_final_state():
    job = views.shape_job(
        {
            "id": "a1",
            "action": "backup_site",
            "stack": "prod",
            "site": "s1",
            "status": "succeeded",
            "started": "2026-11-25T02:00:00Z",
            "finished": "2026-11-25T02:01:05Z",
            "message": "ok",
        }
    )
    assert job["duration"] == "1 min 5 s" and job["final"] and job["ok"] and job["target"] == "prod / s1"


def test_control_characters_are_escaped():
    assert escape_control("evil\nFAKE LINE\x1b[31m\x7f") == "evil\\x0aFAKE LINE\\x1b[31m\\x7f"
    assert escape_control("ok\u2028") == "ok\\u2028"


def test_audit_writes_a_row_and_one_json_log_line_with_escaped_fields(app, caplog):
    with caplog.at_level(logging.INFO, logger="fmappliance.audit"):
        app.ctx.audit.record(
            user="ad\nmin", address="192.0.2.1", action="backup_site", target="prod/s1", result="started", job_id="j1"
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "fmappliance.audit"]
    assert len(lines) == 1 and "\n" not in lines[0]
    event = json.loads(lines[0])
    assert event["user"] == "ad\\x0amin" and event["job_id"] == "j1" and event["time"].endswith("Z")
    row = app.ctx.audit.recent(1)[0]
    assert row == event
