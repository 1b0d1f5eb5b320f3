"""What a docker CLI without the compose plugin answers, for every stack type (both run `docker compose`).

Kept out of stacks/ because jobs.py names it in a failed step's message, and stacks/ builds on jobs.py.
"""

from __future__ import annotations

#: What a docker CLI without the compose plugin answers to `docker compose ...`: "docker: 'compose'
#: is not a docker command." (exit 1) when a command follows, and when one of our flags follows
#: (-p, -f, --project-directory), docker's own flag parser: "unknown shorthand flag: 'p' in -p"
#: (exit 125, Docker CLI 27). Compose itself knows those flags, so these texts mean "no plugin".
#: Some CLIs say "docker: unknown command: docker compose". The rest only says "see docker --help".
PLUGIN_MISSING_MARKERS = (
    "unknown command: docker compose",
    "'compose' is not a docker command",
    "unknown shorthand flag: 'p' in -p",
    "unknown shorthand flag: 'f' in -f",
    "unknown flag: --project-directory",
)
PLUGIN_MISSING_REASON = "docker compose is not available: install the docker compose plugin"


def plugin_missing(output: str) -> bool:
    """Whether a failed `docker compose` call failed because the compose plugin is not installed."""
    return any(marker in output for marker in PLUGIN_MISSING_MARKERS)


def compose_failure_reason(argv: list[str], output: str) -> str | None:
    """The sentence for a failed `docker compose ...` call that met a docker without the plugin, else None."""
    if argv[1:2] == ["compose"] and plugin_missing(output):
        return PLUGIN_MISSING_REASON  # docker's own text only says "see docker --help"
    return None
