"""Moved to :mod:`fmappliance.schedule_fields` (the agent validates pushed schedules too); kept for old imports."""

from fmappliance.schedule_fields import (  # noqa: F401
    DEFAULT_KIND,
    EVERY_SITE,
    FIELDS,
    KINDS,
    ScheduleError,
    action_text,
    kind_of,
    validate_schedule,
)
