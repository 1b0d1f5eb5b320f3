"""The host panel on /dashboard: load, memory, free space and each stack's CPU and memory.

The figures come from the agent's ``GET /host`` (the dashboard's user can read neither the
docker socket nor docker's data root).  ``docker stats`` takes a second or two when its
cache is cold, so the panel is its own fragment, ``GET /dashboard/host``, loaded by htmx
after the page: the dashboard itself never waits for it.  It is loaded once, not polled: a
poll would keep an idle session alive past ``dashboard.session_idle_minutes``.
"""

from __future__ import annotations

from typing import Any

import bottle

from fmappliance.dashboard import negotiation
from fmappliance.dashboard.agent_client import AgentError
from fmappliance.dashboard.views import human_size

DISK_LABELS = {"backups": "backups", "docker": "docker's data"}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shape_host(payload: dict) -> dict:
    """The agent's /host answer in the shape host_panel.tpl shows (exact figures kept for data-*)."""
    load = payload.get("load_average")
    memory = payload.get("memory") if isinstance(payload.get("memory"), dict) else None
    shaped: dict[str, Any] = {
        "load": [f"{x:.2f}" for x in load] if isinstance(load, list) and all(_number(x) for x in load) else None,
        "cpu_count": payload.get("cpu_count") if _number(payload.get("cpu_count")) else None,
        "memory": None,
        "disks": [],
        "stacks": [],
        "stats_reason": payload.get("stats_reason") if isinstance(payload.get("stats_reason"), str) else None,
    }
    if (
        memory
        and _number(memory.get("used_bytes"))
        and _number(memory.get("total_bytes"))
        and memory["total_bytes"] > 0
    ):
        shaped["memory"] = {
            "used_bytes": memory["used_bytes"],
            "used": human_size(memory["used_bytes"]),
            "total": human_size(memory["total_bytes"]),
            "percent": round(100 * memory["used_bytes"] / memory["total_bytes"]),
        }
    for disk in payload.get("disks") or ():
        if not isinstance(disk, dict):
            continue
        free, total = disk.get("free_bytes"), disk.get("total_bytes")
        known = _number(free) and _number(total)
        shaped["disks"].append(
            {
                "name": str(disk.get("name") or ""),
                "label": DISK_LABELS.get(str(disk.get("name")), str(disk.get("name") or "")),
                "path": str(disk.get("path") or ""),
                "free_bytes": free if known else None,
                "free": human_size(free) if known else None,
                "total": human_size(total) if known else None,
                "low": bool(known and total and free / total < 0.1),
                "reason": str(disk.get("reason") or "") or (None if known else "unknown"),
            }
        )
    for stack in payload.get("stacks") or ():
        if not isinstance(stack, dict):
            continue
        cpu, mem = stack.get("cpu_percent"), stack.get("memory_bytes")
        shaped["stacks"].append(
            {
                "name": str(stack.get("name") or ""),
                "containers": stack.get("containers") if _number(stack.get("containers")) else 0,
                "cpu_percent": cpu if _number(cpu) else None,
                "cpu": f"{cpu:.2f} %" if _number(cpu) else "–",
                "memory_bytes": mem if _number(mem) else None,
                "memory": human_size(mem) if _number(mem) else "–",
            }
        )
    return shaped


def register(app: bottle.Bottle, ctx) -> None:
    @app.get("/dashboard/host")
    @ctx.login_required
    def host_panel():
        try:
            payload = ctx.agent.host_figures()
        except AgentError as exc:
            if negotiation.wants_json(bottle.request):
                return ctx.json_response({"success": False, "message": exc.message}, 502)
            bottle.response.set_header("Cache-Control", "no-store")
            return ctx.render("host_panel", host=None, problem=exc.message)
        if negotiation.wants_json(bottle.request):
            return ctx.json_response(payload)
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.render("host_panel", host=shape_host(payload), problem="")
