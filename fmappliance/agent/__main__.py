"""fm-agent: ``python -m fmappliance.agent --config /etc/fmappliance/config.yaml``.

``--check-config`` validates and exits; ``--version`` prints the version.  A config error is
one line on stderr and exit status 2, never a traceback.  SIGTERM stops the server cleanly.
``fm-agent installer <command>`` runs the installer's helpers (fmappliance.installer.cli);
``fm-agent [--config C] fleet join|status|leave`` (fleet_cli.py) and ``fm-agent uplink`` (uplink.py) the fleet.
"""

from __future__ import annotations

import logging
import sqlite3
import sys

from fmappliance import listening
from fmappliance.config import DEFAULT_CONFIG_PATH, ConfigError, config_path_only, load_config, secrets_of
from fmappliance.logsetup import setup_logging
from fmappliance.process_memory import limit_malloc_arenas, release_freed_memory
from fmappliance.version import __version__

log = logging.getLogger("fmappliance.agent")

#: The API takes small JSON bodies only (the largest: a pushed schedule set, up to 500 entries);
#: waitress refuses anything bigger before the app sees it.
MAX_REQUEST_BODY_BYTES = 256 * 1024
OUTBUF_HIGH_WATERMARK = 1024 * 1024
OUTBUF_OVERFLOW = 256 * 1024


def parse_args(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="fm-agent", description="The fmappliance agent (privileged JSON API).")
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"fm-agent {__version__}")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["installer"]:
        from fmappliance.installer.cli import main as installer_main

        return installer_main(argv[1:])
    if argv[:1] == ["uplink"]:
        from fmappliance.agent.uplink import main as uplink_main

        return uplink_main(argv[1:])  # never reads config.yaml
    command_at = 2 if argv[:1] == ["--config"] else 1 if argv[:1] and argv[0].startswith("--config=") else 0
    if argv[command_at : command_at + 1] == ["fleet"]:
        from fmappliance.agent.fleet_cli import main as fleet_main

        return fleet_main(argv[command_at + 1 :], config_argv=argv[:command_at])
    config_path = config_path_only(argv)  # the service's own start: no argparse kept in memory
    check_config = False
    if config_path is None:
        args = parse_args(argv)
        config_path, check_config = args.config, args.check_config
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"fm-agent: {exc}", file=sys.stderr)
        return 2
    if check_config:
        print(f"config OK: {len(config['stacks'])} stacks")
        return 0
    setup_logging(secrets_of(config))
    return serve(config)


def serve(config: dict) -> int:
    from waitress.server import create_server

    from fmappliance.agent.actions import clean_staging
    from fmappliance.agent.app import make_app
    from fmappliance.agent.runner import put_first_on_path

    agent = config["agent"]
    # fm looks docker up on its PATH: the configured docker must be the one it finds.
    put_first_on_path(agent["docker_binary"])
    limit_malloc_arenas()
    from fmappliance.agent.schedules import ScheduleFileError

    try:
        app = make_app(config)
    except ScheduleFileError as exc:
        # Never a silent empty set: the schedules stay until the operator decides.
        log.error("cannot start: %s", exc)
        return 1
    except (OSError, sqlite3.Error) as exc:
        log.error("cannot start: the state dir %s is not usable: %s", agent["state_dir"], exc)
        return 1
    services = app.agent_services
    # A backup interrupted by a crash leaves temp files; they are never published.
    services.store.clean_temp_files()
    clean_staging(agent["state_dir"])
    try:
        from fmappliance.agent.fleet_gate import FleetGate

        server = create_server(
            FleetGate(app, config),
            **listening.listen_options(agent),
            threads=agent["threads"],
            max_request_body_size=MAX_REQUEST_BODY_BYTES,
            ident="fm-agent",
            # Downloads must stay in constant memory: waitress buffers what the client has not taken
            # yet (16 MiB by default) before it makes the app wait.
            outbuf_high_watermark=OUTBUF_HIGH_WATERMARK,
            outbuf_overflow=OUTBUF_OVERFLOW,
            clear_untrusted_proxy_headers=True,
            # Lets a streamed log notice at once that its client hung up (waitress.client_disconnected).
            channel_request_lookahead=1,
        )
        listening.share_socket(agent)
    except OSError as exc:
        log.error("cannot listen on %s: %s", listening.where(agent), exc.strerror or exc)
        services.close()
        return 1

    listening.stop_on_signals(log)
    # effective_port: the one the kernel picked when the config says 0.
    where = listening.url(agent) if agent["socket"] else f"http://{agent['listen']}:{server.effective_port}"
    log.info("listening on %s (fm-agent %s)", where, __version__)
    release_freed_memory()
    try:
        server.run()
    finally:
        server.close()
        services.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
