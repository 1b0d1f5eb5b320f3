"""Shaping agent data for the templates: badges, ages, sizes, backup-age highlights, chart points.

Pure functions of (data, now) so they are easy to test and the page code stays thin.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse

from fmappliance import actions_table, wire
from fmappliance.dashboard.backup_age import STALE_BACKUP_HOURS
from fmappliance.wire import parse_timestamp

STATUS_BADGES = {"running": "badge-ok", "partial": "badge-warn", "stopped": "badge-bad", "unknown": "badge-unknown"}
JOB_BADGES = {
    wire.QUEUED: "badge-unknown",
    wire.RUNNING: "badge-warn",
    wire.SUCCEEDED: "badge-ok",
    wire.FAILED: "badge-bad",
}
FINAL_JOB_STATES = wire.FINISHED


def action_name(action) -> str:
    """What the operator clicked, in words ("restart_stack" is an agent id, not a sentence)."""
    action = str(action or "")
    spec = actions_table.spec_of(action)
    return spec.job_name if spec else action.replace("_", " ").capitalize()


def job_message(job: dict) -> str:
    """The job's message, with the agent's generic "restart_stack on staging succeeded." said in
    words ("Restart of staging succeeded.")."""
    message = str(job.get("message") or "")
    action = str(job.get("action") or "")
    if action and message.startswith(action + " on "):
        rest = message[len(action) + 4 :]
        return f"{action_name(action)} of {rest}"
    return message


def url_part(value) -> str:
    """A name made safe as one path segment of a link (the template escapes it for HTML too)."""
    return urllib.parse.quote(str(value), safe="")


def human_age(value, now: dt.datetime) -> str:
    """ "3 h ago", "2 d ago", "just now"; "never" for no time."""
    when = parse_timestamp(value) if not isinstance(value, dt.datetime) else value
    if when is None:
        return "never"
    seconds = (now - when).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def human_size(size) -> str:
    if not isinstance(size, (int, float)) or size < 0:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "?"


def human_duration(start, end) -> str:
    a, b = parse_timestamp(start), parse_timestamp(end)
    if not a or not b:
        return ""
    seconds = int((b - a).total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def local_time(value) -> str:
    """A UTC timestamp shown in the server's time zone."""
    when = parse_timestamp(value)
    if when is None:
        return ""
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def backup_age_class(last_backup, now: dt.datetime, stale_hours: float = STALE_BACKUP_HOURS) -> str:
    if not last_backup:
        return "age-none"
    created = parse_timestamp(last_backup.get("created"))
    if created is None or (now - created).total_seconds() > stale_hours * 3600:
        return "age-stale"
    return "age-ok"


def _dicts(value) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def proof_badge(proof, now: dt.datetime) -> dict:
    """The restorability badge of a site from its last test restore (GET /stacks' last_restore_tests)."""
    if not isinstance(proof, dict):
        return {"proof_text": "never proven", "proof_class": "badge-unknown", "proof_title": "No test restore yet."}
    title = str(proof.get("message") or "")
    if proof.get("ok") is True:
        age = human_age(proof.get("time"), now)
        return {"proof_text": f"restorable, proven {age}", "proof_class": "badge-ok", "proof_title": title}
    return {"proof_text": "restore test failed", "proof_class": "badge-bad", "proof_title": title}


def shape_stacks(payload, now: dt.datetime, stale_hours=None) -> list[dict]:
    """Every stack of a ``GET /stacks`` answer; odd entries are skipped, never fatal."""
    stacks = payload.get("stacks") if isinstance(payload, dict) else None
    return [shape_stack(s, now, stale_hours) for s in _dicts(stacks)]


def offsite_badge(stack: dict, site: str, now: dt.datetime) -> dict | None:
    """{"text", "warn"} for a site's offsite copies ("offsite: 2 h ago"), or None when the agent sends none."""
    last_all, lag_all = stack.get("last_offsite"), stack.get("offsite_lag")
    if not isinstance(last_all, dict):
        return None
    last = last_all.get(site)
    raw_lag = lag_all.get(site) if isinstance(lag_all, dict) else None
    lag: int = raw_lag if isinstance(raw_lag, int) else 0
    if isinstance(last, dict):
        text = "offsite: " + human_age(last.get("time"), now) + (f", {lag} not copied yet" if lag else "")
        return {"text": text, "warn": lag > 0}
    if lag:
        return {"text": f"offsite: {lag} not copied yet", "warn": True}
    return None


def shape_stack(stack: dict, now: dt.datetime, stale_hours=None) -> dict:
    """One stack as the dashboard and stack page show it.

    ``stale_hours(stack, site)`` gives the age at which a site's last backup is highlighted
    (default STALE_BACKUP_HOURS; backup_age.py knows better per schedule).
    """
    status = str(stack.get("status")) if stack.get("status") in STATUS_BADGES else "unknown"
    raw_backups, raw_sites = stack.get("last_backups"), stack.get("sites")
    last_backups = raw_backups if isinstance(raw_backups, dict) else {}
    raw_proofs = stack.get("last_restore_tests")
    proofs = raw_proofs if isinstance(raw_proofs, dict) else {}
    sites = []
    name = str(stack.get("name") or "")
    for site in (str(s) for s in (raw_sites if isinstance(raw_sites, list) else [])):
        last = last_backups.get(site)
        last = last if isinstance(last, dict) else None
        limit = stale_hours(name, site) if stale_hours else STALE_BACKUP_HOURS
        sites.append(
            {
                "name": site,
                "qname": url_part(site),
                "last_backup_age": human_age(last.get("created"), now) if last else "no backup yet",
                "last_backup_size": human_size(last.get("size")) if last else "",
                "age_class": backup_age_class(last, now, limit),
                **proof_badge(proofs.get(site), now),
                "offsite": offsite_badge(stack, site, now),
            }
        )
    services = []
    for service in _dicts(stack.get("services")):
        state = service.get("state") or "unknown"
        services.append(
            {
                "service": service.get("service") or "",
                "qservice": url_part(service.get("service") or ""),
                "name": service.get("name") or "",
                "state": state,
                "health": service.get("health") or "",
                "status": service.get("status") or "",
                "one_shot": bool(service.get("one_shot")),
                "badge": "badge-ok"
                if state == "running"
                else ("badge-unknown" if service.get("one_shot") and state == "exited" else "badge-bad"),
            }
        )
    return {
        "name": name,
        "qname": url_part(name),
        "type": stack.get("type") or "",
        "path": stack.get("path") or "",
        "status": status,
        "badge": STATUS_BADGES[status],
        "reason": str(stack.get("reason") or ""),
        # An fm bench an older Frappe Manager wrote: fm does nothing for it until `fm migrate` (reason says so).
        "needs_migration": stack.get("needs_migration") is True,
        "services": services,
        "sites": sites,
        "checked": human_age(stack.get("checked_at"), now),
    }


def action_buttons(can, scope: str, base: str, *, stack: str, site: str = "") -> list[dict]:
    """The buttons of one stack (``base`` /stack/<stack>) or site (/site/<stack>/<site>) that ``can``
    lets this session use, in the order fmappliance/actions_table.py gives them.

    Each is {"url", "label", "style", "confirm", "title"}; the template names no action, so a new
    row with a verb is a new button.  ``stack`` and ``site`` fill in the confirm sentence.
    """
    found = []
    for spec in actions_table.button_specs(scope):
        url = f"{base}/{spec.verb}"
        if can("POST", url):
            found.append(
                {
                    "url": url,
                    "label": spec.label,
                    "style": spec.style,
                    "confirm": spec.confirm.format(stack=stack, site=site),
                    "title": spec.title,
                }
            )
    return found


def with_buttons(can, stack: dict) -> dict:
    """A shaped stack (:func:`shape_stack`) with the buttons of the stack and of each of its sites."""
    base = "/stack/" + stack["qname"]
    stack["buttons"] = action_buttons(can, actions_table.STACK, base, stack=stack["name"])
    for site in stack["sites"]:
        site_base = f"/site/{stack['qname']}/{site['qname']}"
        site["buttons"] = action_buttons(can, actions_table.SITE, site_base, stack=stack["name"], site=site["name"])
    return stack


def shape_disk(disk) -> dict | None:
    if not isinstance(disk, dict) or not isinstance(disk.get("free_bytes"), int):
        return None
    total = disk.get("total_bytes") or 0
    free = disk["free_bytes"]
    return {
        "path": disk.get("path") or "",
        "free": human_size(free),
        "total": human_size(total) if total else "?",
        "low": bool(total) and free / total < 0.1,
    }


def shape_job(job: dict, now: dt.datetime | None = None) -> dict:
    status = str(job.get("status")) if job.get("status") in JOB_BADGES else "unknown"
    target = job.get("stack") or ""
    if job.get("site"):
        target = f"{target} / {job['site']}"
    return {
        "id": str(job.get("id") or ""),
        "action": action_name(job.get("action")),
        "raw_action": str(job.get("action") or ""),
        "target": target,
        "stack": str(job.get("stack") or ""),
        "site": str(job.get("site") or ""),
        "status": status,
        "badge": JOB_BADGES.get(status, "badge-unknown"),
        "final": status in FINAL_JOB_STATES,
        "ok": status == "succeeded",
        "message": job_message(job),
        "output": str(job.get("output") or ""),
        "created": local_time(job.get("created")),
        "duration": human_duration(job.get("started"), job.get("finished")),
    }


def shape_backups(backups: list, now: dt.datetime) -> list[dict]:
    """Backups newest first, each with its files."""
    shaped = []
    for backup in sorted(_dicts(backups), key=lambda b: str(b.get("created") or ""), reverse=True):
        shaped.append(
            {
                "id": str(backup.get("id") or ""),
                "qid": url_part(backup.get("id") or ""),
                "created": local_time(backup.get("created")),
                "age": human_age(backup.get("created"), now),
                "size": human_size(backup.get("size")),
                "verified": bool(backup.get("verified")),
                # manual, scheduled, pre-restore, pre-update or imported; older agents send none.
                "label": str(backup.get("label") or ""),
                "files": [
                    {
                        "name": str(f.get("name") or ""),
                        "qname": url_part(f.get("name") or ""),
                        "part": str(f.get("part") or ""),
                        "size": human_size(f.get("size")),
                        "sha256": str(f.get("sha256") or ""),
                    }
                    for f in _dicts(backup.get("files"))
                ],
            }
        )
    return shaped


def _chart_time(when: dt.datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def size_chart(
    backups: list, width: int = 600, height: int = 160, left: int = 70, right: int = 10, top: int = 10, bottom: int = 30
) -> dict | None:
    """An inline SVG of backup size over time (oldest left): a line, a dot per backup (its time
    and size as a tooltip) and a y scale.  Sizes that hardly differ get a scale around them
    rather than a flat line at the top; two backups the same day show their time of day."""
    read = [(parse_timestamp(b.get("created")), b.get("size")) for b in backups]
    series = sorted((t, s) for t, s in read if t is not None and isinstance(s, (int, float)))
    if len(series) < 2:
        return None
    sizes = [s for _, s in series]
    lo, hi = min(sizes), max(sizes)
    if hi - lo < max(hi * 0.01, 1):
        pad = max(hi * 0.05, 1)
        lo, hi = max(lo - pad, 0), hi + pad
    t0, t1 = series[0][0].timestamp(), series[-1][0].timestamp()
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(t: dt.datetime) -> float:
        return left + ((t.timestamp() - t0) / (t1 - t0) * plot_w if t1 > t0 else plot_w / 2)

    def y_of(size: float) -> float:
        return top + (hi - size) / (hi - lo) * plot_h

    dots = [
        {"x": f"{x_of(t):.1f}", "y": f"{y_of(s):.1f}", "title": f"{_chart_time(t)}: {human_size(s)}"} for t, s in series
    ]
    first, last = _chart_time(series[0][0]), _chart_time(series[-1][0])
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "points": " ".join(f"{d['x']},{d['y']}" for d in dots),
        "dots": dots,
        "ticks": [{"y": f"{y_of(v):.1f}", "label": human_size(v)} for v in (hi, (hi + lo) / 2, lo)],
        "max_label": human_size(max(sizes)),
        "first_label": first,
        # The same day twice says only the time the second time.
        "last_label": last[11:] if last[:10] == first[:10] else last,
        "count": len(series),
    }
