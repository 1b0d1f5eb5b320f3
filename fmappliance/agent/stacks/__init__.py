"""How the agent talks to each stack type: argv builders and output parsing.

``compose`` knows docker compose (frappe_docker projects), ``fm`` knows Frappe Manager
benches.  Both only build argv lists and parse output; running them is runner.py's job.
"""
