"""The dashboard: a browser UI (bottle + HTMX, served by waitress) over the agent's JSON API.

``make_app(config)`` in :mod:`fmappliance.dashboard.app` builds the WSGI app; only
:mod:`fmappliance.dashboard.agent_client` talks to the agent.
"""
