"""One dashboard, many servers: what both sides share (join tokens, certificates, the wire formats).

The design and its reasons: docs/fleet.md.  Nothing here imports the agent or the dashboard.
"""
