"""Moved to :mod:`fmappliance.schedule_calendar` (the agent runs schedules too); kept for old imports."""

from fmappliance.schedule_calendar import *  # noqa: F403
from fmappliance.schedule_calendar import (  # noqa: F401  (names used by other modules)
    FREQUENCIES,
    INTERVALS,
    WEEKDAYS,
    decide_due,
    is_valid_timezone,
    iter_runs,
    local_instant,
    next_runs,
    runs_between,
    server_timezone,
)
