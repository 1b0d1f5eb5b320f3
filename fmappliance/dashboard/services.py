"""The dashboard's services, built in one place (like the agent's ``build_services``).

``build_services(config)`` makes the agent client, the state database and what lives in it
(sessions, audit log, second factors), the users and their roles, the login throttle, the
password checker, the templates and static files, the backup scheduler and the failed-job
watcher (neither started) and the backup-age rules over its schedules. ``make_app`` hands them
to the pages; ``__main__`` builds them once, serves the app and starts the scheduler and the
watcher in the serving process only.  Tests pass their own agent client, clock
or scheduler.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fmappliance.config import dashboard_users
from fmappliance.dashboard.agent_client import AgentClient, AgentError
from fmappliance.dashboard.audit import AuditLog
from fmappliance.dashboard.backup_age import BackupAgeRules
from fmappliance.dashboard.job_watch import FailedJobWatcher, build_failed_job_watcher
from fmappliance.dashboard.login_throttle import LoginThrottle
from fmappliance.dashboard.pages_public import load_static
from fmappliance.dashboard.passwords import PasswordChecker
from fmappliance.dashboard.relays import FollowedLogs, relay_slots
from fmappliance.dashboard.scheduler import ScheduleService, scheduler_from_config
from fmappliance.dashboard.second_factor import SecondFactors
from fmappliance.dashboard.sessions import SessionStore
from fmappliance.dashboard.state_db import StateDB
from fmappliance.dashboard.templates import Templates


@dataclass
class DashboardServices:
    """Everything the pages use; one set per app, no global state."""

    config: dict
    clock: Callable[[], float]  # epoch seconds
    agent: AgentClient
    db: StateDB
    sessions: SessionStore
    throttle: LoginThrottle
    passwords: PasswordChecker
    users: dict  # user -> (bcrypt hash, role)
    second_factors: SecondFactors
    audit: AuditLog
    templates: Templates
    static_files: dict
    scheduler: ScheduleService
    backup_age: BackupAgeRules
    job_watch: FailedJobWatcher
    #: Shared by relayed downloads and log streams (relays.py).
    relay_slots: threading.BoundedSemaphore
    #: Who holds the agent's followed-log slots (relays.py).
    followed_logs: FollowedLogs

    def now(self) -> dt.datetime:
        """Aware UTC now from the injected clock."""
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)


def build_services(
    config: dict,
    *,
    agent_client: AgentClient | None = None,
    clock: Callable[[], float] | None = None,
    scheduler: ScheduleService | None = None,
) -> DashboardServices:
    dash = config["dashboard"]
    clock = clock or time.time
    agent = agent_client or AgentClient.from_config(config)
    db = StateDB(dash["state_dir"])
    users = dashboard_users(config)
    if scheduler is None:
        scheduler = build_scheduler(config, agent, clock=lambda: dt.datetime.fromtimestamp(clock(), dt.timezone.utc))
    return DashboardServices(
        config=config,
        clock=clock,
        agent=agent,
        db=db,
        sessions=SessionStore(db, dash["session_idle_minutes"] * 60, dash["session_max_hours"] * 3600, clock=clock),
        throttle=LoginThrottle(clock=clock),
        passwords=PasswordChecker({name: hashed for name, (hashed, _) in users.items()}),
        users=users,
        second_factors=SecondFactors(db, clock=clock),
        audit=AuditLog(db, clock=clock, keep_days=dash["audit_days"]),
        templates=Templates(),
        static_files=load_static(),
        scheduler=scheduler,
        backup_age=BackupAgeRules(scheduler.store, local_name=config["fleet"]["local_name"]),
        job_watch=build_failed_job_watcher(config, agent, db),
        relay_slots=relay_slots(config),
        followed_logs=FollowedLogs(config["agent"]["max_log_streams"]),
    )


def build_scheduler(config: dict, agent: AgentClient, *, clock: Callable[[], dt.datetime] | None = None):
    """The :class:`ScheduleService` of this dashboard, talking to ``agent``.

    Not started: the serving process calls ``start()`` (and ``stop()`` at exit).
    """

    def list_sites(stack: str) -> list:
        try:
            return agent.sites(stack)
        except AgentError as exc:
            if exc.status == 404:  # the agent no longer knows the stack
                raise KeyError(stack) from None
            raise

    return scheduler_from_config(
        config, agent, list_sites=list_sites, get_job=agent.job, clock=clock, restore_proofs=agent.stacks
    )
