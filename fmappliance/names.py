"""Transition only: fmappliance.names became fmappliance.wire (the contract) and fmappliance.actions_table.

Kept so that branches written against the old name still import while they are merged; nothing in
this tree imports it.  Delete it once every branch imports ``fmappliance.wire``.
"""

from fmappliance.actions_table import ACTIONS, GLOBAL_ACTIONS, SITE_ACTIONS  # noqa: F401
from fmappliance.wire import *  # noqa: F403
