"""The stacks and sites the agent may act on, and name checks against them.

Stacks come from the config.  Sites: an fm bench's from its workspace on the host; a compose
stack's from an explicit ``sites:`` list or listed from the bench container (cached).  Every
name from a request passes ``check_stack`` / ``check_site`` before anything runs: a malformed
name is a 400, a well-formed unknown one a 404.
"""

from __future__ import annotations

import logging
import threading
import time

from fmappliance.agent.errors import AgentError
from fmappliance.agent.stacks import SitesUnavailable, for_stack
from fmappliance.wire import SITE_NAME_RULE, STACK_NAME_RULE, is_valid_site_name, is_valid_stack_name

log = logging.getLogger(__name__)

#: How long a compose stack's site list (read from its container) is reused.
SITES_CACHE_SECONDS = 60


class NameRejected(AgentError):
    """A stack or site name from a request that may not be used; ``status`` is 400 or 404."""


class Inventory:
    """Stacks from the config and their sites."""

    def __init__(self, config: dict, *, clock=time.monotonic):
        self.config = config
        self.stacks: dict[str, dict] = config["stacks"]
        self._clock = clock
        self._lock = threading.Lock()
        self._site_cache: dict[str, tuple[float, list[str]]] = {}
        self._last_known: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ names

    def stack_names(self) -> list[str]:
        return sorted(self.stacks)

    def check_stack(self, name) -> dict:
        """The stack's config, or NameRejected (400 malformed, 404 unknown)."""
        if not is_valid_stack_name(name):
            raise NameRejected(400, f"That is not a valid stack name (expected {STACK_NAME_RULE}).")
        stack = self.stacks.get(name)
        if stack is None:
            raise NameRejected(404, f"There is no stack named {name!r} in the agent's config.")
        return stack

    def check_site(self, stack_name: str, site) -> str:
        """The site name if the stack has it; NameRejected otherwise (SitesUnavailable when unknowable)."""
        if not is_valid_site_name(site):
            raise NameRejected(400, f"That is not a valid site name (expected {SITE_NAME_RULE}).")
        if site in self.sites(stack_name):
            return site
        # A site created a moment ago should not need a minute to appear.
        if site in self.sites(stack_name, refresh=True):
            return site
        raise NameRejected(404, f"Stack {stack_name!r} has no site named {site!r}.")

    # ------------------------------------------------------------------ sites

    def sites(self, stack_name: str, *, refresh: bool = False) -> list[str]:
        """Sites of a stack; raises SitesUnavailable when a compose container can't be asked."""
        driver = for_stack(self.stacks[stack_name])
        agent = self.config["agent"]
        if not driver.sites_in_container:
            return driver.list_sites(agent["docker_binary"], agent["status_timeout"])
        now = self._clock()
        with self._lock:
            cached = self._site_cache.get(stack_name)
        if cached and not refresh and cached[0] > now:
            return list(cached[1])
        sites = driver.list_sites(agent["docker_binary"], agent["status_timeout"])
        with self._lock:
            self._site_cache[stack_name] = (now + SITES_CACHE_SECONDS, sites)
            self._last_known[stack_name] = sites
        return list(sites)

    def sites_for_display(self, stack_name: str) -> list[str]:
        """Sites for a status page: the last known list when the container can't be asked now."""
        try:
            return self.sites(stack_name)
        except SitesUnavailable:
            with self._lock:
                return list(self._last_known.get(stack_name, []))

    def invalidate(self, stack_name: str) -> None:
        with self._lock:
            self._site_cache.pop(stack_name, None)
