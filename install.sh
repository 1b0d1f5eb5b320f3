#!/usr/bin/env bash
# fmappliance installer: one command on a server and the dashboard is up, safely.
#
#   sudo ./install.sh [options]
#
# Supported: Debian 12, Ubuntu 22.04 and 24.04 (x86_64/arm64) with python3 >= 3.11.
# Idempotent: run it again to upgrade or repair; it changes nothing that is already right
# and restarts only the services whose zipapp, unit or config changed.
#
# What it does, in order (one function per step, see main at the bottom):
#   1. checks: root, OS, python3 >= 3.11; warns when docker, docker compose or fm is missing
#   2. zipapps: builds dist/fm-agent.pyz and dist/fm-dashboard.pyz when dist/ has none (with
#      the hashed build requirements only, never the test tools),
#      installs them in /opt/fmappliance (sha256-checked against dist/SHA256SUMS)
#   3. users: the agent (docker rights: root-equivalent) runs as FM_AGENT_USER, else as the
#      user chosen on the first install (kept in the install record), else as the one owner
#      of the Frappe Manager homes found if that user is already in the docker group (never
#      root, never because of a rootless docker socket: those need FM_AGENT_USER), else as a
#      dedicated "fm-agent" user in the docker group. Homes of several users: it stops and
#      asks for FM_AGENT_USER. Only fm-agent or an FM_AGENT_USER is added to the docker
#      group. The dashboard runs as "fm-dashboard", NOT in the docker
#      group; both read the config via group "fmappliance"; nginx reaches the dashboard's
#      socket via group "fmappliance-web"
#   4. /etc/fmappliance/config.yaml, generated on first install only (never overwritten):
#      random token and secret key, an admin password printed once and stored only as a
#      bcrypt hash, stacks discovered from FM homes and frappe_docker-like compose projects
#      (only compose files and an fm binary nobody but root and the agent user can change),
#      a daily 02:00 backup schedule for each, Unix sockets for both services. A config
#      from an older install listening on the installer's old TCP ports is moved to the
#      sockets (the old file kept as config.yaml.pre-sockets).
#      State in /var/lib/fmappliance, backups in /var/backups/fmappliance (0750, agent's)
#   5. systemd units fm-agent.service and fm-dashboard.service (hardened)
#   6. nginx site with TLS (certbot with --domain/--email, else a self-signed certificate)
#   7. UFW: allow OpenSSH, HTTP and HTTPS; deny the dashboard and agent ports; enable
#   8. starts everything (without systemd as PID 1: as daemons, each kept running by a small
#      supervisor that restarts it after a crash and rotates its log; see the summary)
#   9. prints the URL, the admin password (first install only), where things are
#
# Options:
#   --dry-run           print every change without making it
#   --uninstall         remove what the installer installed; keeps the config
#                       (/etc/fmappliance) and the backups (/var/backups/fmappliance)
#   --purge             with --uninstall: remove the config and the backups as well (all of
#                       them, safety backups included): it says how many and how big, then
#                       asks for "purge" to be typed, unless --yes is given
#   --yes               with --purge: do not ask (for scripts)
#   --root DIR          write every file under DIR instead of /, change nothing else on
#                       this host (no users, services, firewall, packages): for packagers
#                       and tests; the skipped steps are reported
#   --domain NAME       the dashboard's DNS name; with --email, get a Let's Encrypt
#                       certificate with certbot (HTTP-01 on port 80)
#   --email ADDRESS     contact address for Let's Encrypt
#   --http-port N       HTTP port nginx listens on (default 80)
#   --https-port N      HTTPS port nginx listens on (default 443)
#   --agent-only        a managed server of a fleet: the agent and its uplink only (no dashboard,
#                       no nginx, no inbound port; UFW allows SSH only). User fm-uplink in group
#                       fmappliance-agent (may open the agent's socket, cannot read config.yaml),
#                       unit fm-uplink.service
#   --join HOST:PORT    with --agent-only: join the fleet of that hub (fm-agent fleet join) with the
#                       token in FM_JOIN_TOKEN (never on the command line), then start the uplink
#   --name NAME         with --join: this server's name in the fleet (default: the token's)
#   --fleet-hub         make this dashboard the hub of a fleet (docs/fleet.md): its key and
#                       certificate (fm-dashboard fleet init; the sha256 is printed), fleet.listen
#                       and fleet.address in the config, a socket unit fm-dashboard-hub.socket
#                       for the port, and a UFW rule opening it; needs --fleet-address
#   --fleet-address HOST:PORT  with --fleet-hub: the address servers dial (it listens on all
#                       addresses at PORT)
#   --fleet-allow CIDR  with --fleet-hub, repeatable: open the hub port to these networks only
#                       (default: to every address)
#   --download-mode M   first install only: how backups are downloaded (dashboard.download_mode):
#                       "accel" (the dashboard authorises, nginx sends the file itself, about 4x
#                       faster; nginx's user gets read access to the backups through an ACL,
#                       which the installer keeps in step with the config) or "stream" (bytes go
#                       agent -> dashboard -> nginx; nginx never reads the backups). Default:
#                       accel when this nginx serves nothing else (Debian's stock default site
#                       aside) and setfacl is available, else stream: every site and PHP pool
#                       running as nginx's user could read the backups in accel mode
#   -h, --help          this text
#
# Environment:
#   FM_AGENT_USER        user the agent runs as (default: the choice of the first install, else
#                        the one owner of the FM homes found when already in the docker group,
#                        else "fm-agent", created as a system user in the docker group);
#                        setting it on a later run changes the agent user. Root and a user
#                        with a rootless docker are used only when named here (FM_AGENT_USER=root)
#   FM_BINARY            the fm the agent runs, when several are found (it must be changeable
#                        by nobody but root and the agent user)
#   FM_USER_RUNTIME_BASE where rootless docker sockets are looked for (default /run/user):
#                        for an FM_AGENT_USER, <base>/<uid>/docker.sock sets DOCKER_HOST and
#                        XDG_RUNTIME_DIR for the agent once the process on it (SO_PEERCRED) is
#                        that user's root-owned dockerd or rootlesskit
#   FM_DASHBOARD_USER    user the dashboard runs as (default "fm-dashboard")
#   FM_ADMIN_USER        dashboard login created on first install (default "admin")
#   FM_JOIN_TOKEN        with --join: the one-time join token (fm-dashboard fleet token create)
#   FM_SERVER_NAMES      names/addresses nginx answers to (default: --domain, else this
#                        host's IPv4 addresses, FQDN, name, IPv6 addresses as [addr], localhost,
#                        127.0.0.1 and [::1]; the first is the URL the summary prints); others get 444
#   FM_DIST_DIR          where the zipapps are taken from (default: dist/ beside this script)
#   FM_SEARCH_HOMES      where to look for Frappe Manager homes (default "/home/* /root",
#                        plus $FRAPPE_MANAGER_HOME when set): <dir>/frappe/sites/*/docker-compose.yml
#   FRAPPE_MANAGER_HOME  an FM home to add to the discovered stacks
#   FM_DOCKER            docker command used to discover compose projects (default docker)
#   FM_ALLOW_UNSUPPORTED_OS=1  go on on an OS that is not listed above
#   PYTHON               interpreter that builds the zipapps when dist/ has none (needs pip,
#                        setuptools, wheel, shiv; default: a temporary venv with only the build
#                        requirements, pinned with hashes in packaging/build-requirements.lock)
#
# The zipapps contain compiled code (bcrypt, PyYAML): they run on the CPU architecture and
# libc they were built on (dist/ also holds copies named for it, e.g. *-cp311-x86_64-glibc.pyz).
#
# Files: /opt/fmappliance (zipapps, install record, uninstall.sh),
#   /etc/fmappliance/config.yaml (0640 root:fmappliance), /etc/fmappliance/tls (self-signed
#   certificate), /etc/systemd/system/fm-{agent,dashboard}.service,
#   /etc/nginx/sites-available/fm-dashboard.conf, /etc/nginx/snippets/fm-{security-headers,tls}.conf,
#   /var/lib/fmappliance, /var/backups/fmappliance, /var/log/fmappliance (daemon mode only),
#   zipapp caches in /var/cache/fm-agent and /var/cache/fm-dashboard (SHIV_ROOT).
# Uninstall later with: sudo /opt/fmappliance/uninstall.sh [--purge]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The interpreter the services run the zipapps with (chosen in check_system: the system's
# python3 when >= 3.11, else a newer python3.X such as Ubuntu 22.04's python3.11 package).
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3 || echo python3)"

# Options and settings (filled by parse_args and the steps).
DRY_RUN=0
UNINSTALL=0
PURGE=0
ASSUME_YES=0
ROOT=""
DOMAIN=""
EMAIL=""
HTTP_PORT=80
HTTPS_PORT=443
DOWNLOAD_MODE=""   # accel unless --download-mode says otherwise (see choose_download_mode)
FLEET_HUB=0        # --fleet-hub: this dashboard is a fleet's hub (configure_fleet_hub; kept in the record)
FLEET_ADDRESS=""
FLEET_PORT=""
FLEET_ALLOW=()
AGENT_ONLY=0       # --agent-only: agent + uplink, no dashboard/nginx (a fleet's managed server)
JOIN=""            # --join HOST:PORT
JOIN_NAME=""       # --name NAME
UPLINK_USER="fm-uplink"
UPLINK_GROUP=fmappliance-agent  # may open the agent's socket; not in fmappliance (cannot read the config)
FLEET_DIR=""       # the config's fleet.dir (read_config_values)

PREFIX=/opt/fmappliance
CONF_DIR=/etc/fmappliance
CONFIG=$CONF_DIR/config.yaml
TLS_DIR=$CONF_DIR/tls
STATE_DIR=/var/lib/fmappliance
BACKUPS_DIR=/var/backups/fmappliance
LOG_DIR=/var/log/fmappliance
RUN_DIR=/run/fmappliance
CACHE_DIR=/var/cache
UNIT_DIR=/etc/systemd/system
NGINX_DIR=/etc/nginx
NGINX_LOG_DIR=/var/log/nginx
ACME_DIR=/var/lib/fmappliance-acme   # outside STATE_DIR: nginx's user must read it
CONFIG_GROUP=fmappliance
WEB_GROUP=fmappliance-web      # nginx's user and the dashboard: may open the dashboard's socket
# The services' sockets, the fleet directory, ports...: the config's values, else the schema's
# defaults (config_value, after read_config_values); none of them is repeated here.
RECORD=$PREFIX/install-record
# nginx proves itself to the dashboard with this secret (header X-Fmappliance-Proxy): the
# dashboard's copy (dashboard.proxy_secret_file) and nginx's root-only include.
PROXY_SECRET_FILE=$CONF_DIR/proxy-secret
PROXY_SECRET_INCLUDE=$NGINX_DIR/snippets/fm-proxy-secret.conf
USER_RUNTIME_BASE="${FM_USER_RUNTIME_BASE:-/run/user}"

AGENT_USER=""
AGENT_GROUP=""
AGENT_HOME=""
FOUND_FM_BINARY=""         # the fm binary discovery accepted (written into a new config)
DOCKER_CHECKED=""          # the docker check_docker checked (absolute path), or "" when none
STACK_COUNT=0
ROOTLESS_SOCKET=""  # the agent user's own rootless docker socket (checked by discovery), or ""
DOCKER_GROUP_ACCESS=no  # "add": the agent user is put in the docker group (FM_AGENT_USER or fm-agent only)
ROOTLESS_ENV=()     # DOCKER_HOST=... XDG_RUNTIME_DIR=... for a rootless docker of the agent user
NOTES=()            # what the operator should know, repeated in the summary
UPGRADE=0           # an install made by an installer before the hardening (no agent-user record)
MOVED_TO_SOCKETS="" # the config sections migrate_config moved from TCP to Unix sockets
DASHBOARD_USER="${FM_DASHBOARD_USER:-fm-dashboard}"
ADMIN_USER="${FM_ADMIN_USER:-admin}"
ADMIN_PASSWORD=""
DIST_DIR="${FM_DIST_DIR:-$SCRIPT_DIR/dist}"
# Run as /opt/fmappliance/install.sh (repair, start again): the installed zipapps are the dist.
if [ -z "${FM_DIST_DIR:-}" ] && [ ! -f "$DIST_DIR/fm-agent.pyz" ] && [ -f "$SCRIPT_DIR/fm-agent.pyz" ]; then
    DIST_DIR="$SCRIPT_DIR"
fi
INIT=""            # systemd | daemons | none (--root)
STAGE=""
CHANGES=0
CHANGED_AGENT=0
CHANGED_DASHBOARD=0
CHANGED_NGINX=0
CHANGED_UNITS=0
CERT=""
KEY=""
CERT_NOTE=""
RECORD_LINES=()
NGINX_STARTED=0
NGINX_KEPT=()      # nginx files changed since nginx last took its configuration (keep_nginx_file)

# --------------------------------------------------------------------------------------
# Output and change helpers
# --------------------------------------------------------------------------------------

say()  { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# The path a host path is written to (under --root DIR when given).
at() { printf '%s%s' "$ROOT" "$1"; }

# Run a command that changes this host: printed in --dry-run, skipped under --root.
host_run() {
    local shown
    shown="$(printf '%q ' "$@")"
    if [ -n "$ROOT" ]; then
        say "  skipped (--root): ${shown% }"
    elif [ "$DRY_RUN" = 1 ]; then
        say "  would run: ${shown% }"
    else
        say "  run: ${shown% }"
        "$@"
    fi
}

# Run a command that writes under the target tree (allowed under --root).
tree_run() {
    if [ "$DRY_RUN" = 1 ]; then
        say "  would run: $(printf '%q ' "$@")"
    else
        "$@"
    fi
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

record() { RECORD_LINES+=("$*"); }

group_exists() { getent group "$1" >/dev/null 2>&1; }
user_exists() { getent passwd "$1" >/dev/null 2>&1; }

# Set owner/mode of a target path; owners only where the user and group exist (under
# --root they usually don't, and then the file keeps the installing user's ownership).
set_owner_mode() {
    local path="$1" mode="$2" owner="$3" group="$4"
    [ "$DRY_RUN" = 1 ] && return 0
    chmod "$mode" "$path"
    [ "$(id -u)" = 0 ] || return 0
    if user_exists "$owner" && group_exists "$group"; then
        chown "$owner:$group" "$path"
    elif group_exists "$group"; then
        chgrp "$group" "$path"
    fi
}

# place_file NEW DEST MODE OWNER GROUP: install NEW as DEST when its content differs.
# Returns 0 when DEST changed (or would change), 1 when it was already identical.
place_file() {
    local new="$1" dest="$2" mode="$3" owner="$4" group="$5" target
    target="$(at "$dest")"
    record "file $dest"
    if [ -f "$target" ] && [ "$(sha256_of "$new")" = "$(sha256_of "$target")" ]; then
        set_owner_mode "$target" "$mode" "$owner" "$group"
        say "  unchanged $dest"
        return 1
    fi
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" = 1 ]; then
        if [ -f "$target" ]; then say "  would update $dest"; else say "  would create $dest"; fi
        return 0
    fi
    mkdir -p "$(dirname "$target")"
    # Same directory + rename: never a half-written file under the final name.
    # Private until its mode is set: the config holds secrets.
    (umask 077 && cp "$new" "$target.fm-new")
    set_owner_mode "$target.fm-new" "$mode" "$owner" "$group"
    mv -f "$target.fm-new" "$target"
    say "  wrote $dest"
    return 0
}

# ensure_dir DIR MODE OWNER GROUP
ensure_dir() {
    local dir="$1" mode="$2" owner="$3" group="$4" target
    target="$(at "$dir")"
    if [ -d "$target" ]; then
        set_owner_mode "$target" "$mode" "$owner" "$group"
        return 0
    fi
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" = 1 ]; then say "  would create $dir/"; return 0; fi
    mkdir -p "$target"
    set_owner_mode "$target" "$mode" "$owner" "$group"
    say "  created $dir/"
}

# ensure_link TARGET LINK
ensure_link() {
    local to="$1" link="$2" target
    target="$(at "$link")"
    record "file $link"
    if [ -L "$target" ] && [ "$(readlink "$target")" = "$to" ]; then
        say "  unchanged $link"
        return 1
    fi
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" = 1 ]; then say "  would link $link -> $to"; return 0; fi
    mkdir -p "$(dirname "$target")"
    ln -sfn "$to" "$target"
    say "  linked $link -> $to"
}

# render TEMPLATE OUT "TAGS" KEY=VALUE...: fill @KEY@ placeholders; lines marked
# "#@TAG[,TAG] " are kept (unmarked) when all their tags are in TAGS, dropped otherwise.
render() {
    helper render "$@" || die "could not fill the template $1 (above)"
}

# Values from an existing config.yaml, read with the PyYAML inside the installed zipapp
# (the host's python3 may have no yaml module).
# The services read the config only at start: an edited config restarts both. Its sha256
# is kept beside the install record to notice.
note_config_change() {
    local config
    config="$(at "$CONFIG")"
    [ -f "$config" ] || return 0
    sha256_of "$config" >"$STAGE/config.sha256"
    if place_file "$STAGE/config.sha256" "$PREFIX/config.sha256" 0644 root root >/dev/null; then
        CHANGED_AGENT=1
        CHANGED_DASHBOARD=1
        say "  $CONFIG is new or changed: the agent and the dashboard will be restarted"
    fi
}

# Read once, after the config step; config_value KEY prints one of them.
read_config_values() {
    local config
    config="$(at "$CONFIG")"
    [ -f "$config" ] || config="$STAGE/config.yaml"
    # A dry run shows what the migrated config would give.
    [ -f "$STAGE/config-migrated.yaml" ] && config="$STAGE/config-migrated.yaml"
    helper config-values "$config" >"$STAGE/config-values" || die "could not read $CONFIG (above)"
    FLEET_DIR="$(config_value fleet.dir)"
    if [ -n "$MOVED_TO_SOCKETS" ]; then
        note "upgrade: $MOVED_TO_SOCKETS now listen on Unix sockets ($(sockets)) instead of TCP; the previous config is $CONFIG.pre-sockets"
    fi
}

# The services' sockets, as the config names them (for messages).
sockets() {
    local section sock out=""
    for section in agent dashboard; do
        sock="$(config_value "$section.socket")"
        out="$out, ${sock:-$section on TCP}"
    done
    printf '%s\n' "${out#, }"
}

config_value() { awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print; exit }' "$STAGE/config-values"; }

# helper COMMAND ARGS...: the installer's Python helpers (fmappliance.installer.cli) from the
# agent zipapp, or from the checkout when none is built yet (a dry run).
helper() {
    local pyz
    pyz="$(pyz_path fm-agent)"
    if [ -n "$pyz" ]; then
        FM_INSTALLER="$0" SHIV_ROOT="$STAGE/shiv-helper" "$PY" "$pyz" installer "$@"
    else
        FM_INSTALLER="$0" PYTHONPATH="$SCRIPT_DIR" "$PY" -m fmappliance.installer "$@"
    fi
}

# note TEXT: said now and repeated in the summary.
note() { NOTES+=("$*"); say "  $*"; }

# A value of the install record ("KEY VALUE" lines), the last one written.
recorded() {
    local file
    file="$(at "$RECORD")"
    [ -f "$file" ] || return 0
    awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); v = $0 } END { if (v != "") print v }' "$file"
}

# The zipapp to run for NAME: the installed one, else the one in dist/, else nothing.
pyz_path() {
    if [ -f "$(at "$PREFIX/$1.pyz")" ]; then
        at "$PREFIX/$1.pyz"
    elif [ -f "$DIST_DIR/$1.pyz" ]; then
        printf '%s\n' "$DIST_DIR/$1.pyz"
    fi
}

# --------------------------------------------------------------------------------------
# Step 0: arguments
# --------------------------------------------------------------------------------------

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --dry-run) DRY_RUN=1 ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            --yes) ASSUME_YES=1 ;;
            --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift ;;
            --root=*) ROOT="${1#--root=}" ;;
            --domain) [ $# -ge 2 ] || die "--domain needs a name"; DOMAIN="$2"; shift ;;
            --email) [ $# -ge 2 ] || die "--email needs an address"; EMAIL="$2"; shift ;;
            --http-port) [ $# -ge 2 ] || die "--http-port needs a number"; HTTP_PORT="$2"; shift ;;
            --https-port) [ $# -ge 2 ] || die "--https-port needs a number"; HTTPS_PORT="$2"; shift ;;
            --download-mode) [ $# -ge 2 ] || die "--download-mode needs stream or accel"; DOWNLOAD_MODE="$2"; shift ;;
            --fleet-hub) FLEET_HUB=1 ;;
            --agent-only) AGENT_ONLY=1 ;;
            --join) [ $# -ge 2 ] || die "--join needs HOST:PORT"; JOIN="$2"; shift ;;
            --name) [ $# -ge 2 ] || die "--name needs a server name"; JOIN_NAME="$2"; shift ;;
            --fleet-address) [ $# -ge 2 ] || die "--fleet-address needs HOST:PORT"; FLEET_ADDRESS="$2"; shift ;;
            --fleet-allow) [ $# -ge 2 ] || die "--fleet-allow needs a network (CIDR)"; FLEET_ALLOW+=("$2"); shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option: $1 (see --help)" ;;
        esac
        shift
    done
    if [ -n "$ROOT" ]; then
        [ "$DRY_RUN" = 1 ] || mkdir -p "$ROOT" || die "cannot create --root $ROOT"
        [ -d "$ROOT" ] && ROOT="$(cd "$ROOT" && pwd)"
        [ "$ROOT" = / ] && ROOT=""
    fi
    case "$HTTP_PORT$HTTPS_PORT" in *[!0-9]*) die "ports must be numbers" ;; esac
    case "$DOWNLOAD_MODE" in ""|stream|accel) ;; *) die "--download-mode is stream or accel, not $DOWNLOAD_MODE" ;; esac
    [ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"
    [ "$ASSUME_YES" = 0 ] || [ "$PURGE" = 1 ] || die "--yes only goes with --uninstall --purge"
    if [ -n "$JOIN" ] || [ -n "$JOIN_NAME" ]; then
        [ "$AGENT_ONLY" = 1 ] || die "--join and --name go with --agent-only (a managed server has no dashboard)"
        [[ "$JOIN" =~ ^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$ ]] || die "--join needs HOST:PORT, not '${JOIN}'"
        [ -z "$JOIN_NAME" ] || [[ "$JOIN_NAME" =~ ^[a-z][a-z0-9-]{0,31}$ ]] ||
            die "--name $JOIN_NAME: a server name is a lowercase letter, then up to 31 lowercase letters, digits or '-'"
        [ -n "${FM_JOIN_TOKEN:-}" ] ||
            die "--join needs the join token in FM_JOIN_TOKEN (sudo FM_JOIN_TOKEN=... $0 ...; never on the command line)"
    fi
    [ "$AGENT_ONLY" = 0 ] || [ "$FLEET_HUB" = 0 ] || die "--agent-only and --fleet-hub exclude each other"
    if [ "$FLEET_HUB" = 1 ]; then
        [[ "$FLEET_ADDRESS" =~ ^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})$ ]] ||
            die "--fleet-hub needs --fleet-address HOST:PORT (the address servers dial), not '${FLEET_ADDRESS}'"
        FLEET_PORT="${BASH_REMATCH[2]}"
        if [ "$FLEET_PORT" -lt 1 ] || [ "$FLEET_PORT" -gt 65535 ]; then
            die "--fleet-address: $FLEET_PORT is not a port"
        fi
        local cidr
        for cidr in "${FLEET_ALLOW[@]}"; do
            [[ "$cidr" =~ ^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$ ]] || die "--fleet-allow $cidr is not a network (CIDR)"
        done
    elif [ -n "$FLEET_ADDRESS" ] || [ "${#FLEET_ALLOW[@]}" -gt 0 ]; then
        die "--fleet-address and --fleet-allow only go with --fleet-hub"
    fi
    if [ -n "$DOMAIN" ] && ! [[ "$DOMAIN" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ ]]; then
        die "--domain $DOMAIN is not a DNS name"
    fi
}

# --------------------------------------------------------------------------------------
# Step 1: checks
# --------------------------------------------------------------------------------------

check_system() {
    step "Checking the system"
    if [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
        die "run as root: sudo $0 $* (or try --dry-run / --root DIR)"
    fi
    local id="unknown" version="" pretty="unknown"
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        id="$(. /etc/os-release && echo "${ID:-unknown}")"
        # shellcheck disable=SC1091
        version="$(. /etc/os-release && echo "${VERSION_ID:-}")"
        # shellcheck disable=SC1091
        pretty="$(. /etc/os-release && echo "${PRETTY_NAME:-$id $version}")"
    fi
    case "$id:$version" in
        debian:12|ubuntu:22.04|ubuntu:24.04) say "  OS: $pretty" ;;
        *)
            if [ "${FM_ALLOW_UNSUPPORTED_OS:-0}" = 1 ] || [ -n "$ROOT" ]; then
                warn "untested OS: $pretty; going on"
            else
                say "This OS is not supported yet: $pretty ($(uname -srm))."
                say "Supported: Debian 12, Ubuntu 22.04, Ubuntu 24.04."
                say "To try anyway: sudo FM_ALLOW_UNSUPPORTED_OS=1 $0"
                say "When asking for help, include: $(uname -a); python3: $(python3 --version 2>&1 || echo none)"
                exit 1
            fi
            ;;
    esac
    choose_python
    say "  python: $PY ($("$PY" --version 2>&1))"
    check_docker
    if [ -n "$ROOT" ]; then
        INIT=none
    elif [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v systemctl >/dev/null; then
        INIT=systemd
    else
        INIT=daemons
        say "  systemd is not PID 1 (a container?): the services will run as plain daemons"
    fi
}

# Python >= 3.11 for the services: /usr/bin/python3 when new enough, else /usr/bin/python3.1X
# (on Ubuntu 22.04 the python3.11 package is installed for it).
choose_python() {
    local candidate
    for candidate in /usr/bin/python3 /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11; do
        if [ -x "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PY="$candidate"
            return 0
        fi
    done
    if [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && command -v apt-get >/dev/null; then
        say "  no python3 >= 3.11: installing python3.11"
        host_run apt-get install -y -q python3.11 && [ -x /usr/bin/python3.11 ] && { PY=/usr/bin/python3.11; return 0; }
    fi
    die "python3 >= 3.11 is needed (found: $(python3 --version 2>&1 || echo none)); install python3.11 and run again"
}

# docker, and its compose plugin: without it every stack would only show "docker compose ps failed".
check_docker() {
    local docker_cmd="${FM_DOCKER:-docker}"
    if ! command -v "$docker_cmd" >/dev/null 2>&1; then
        warn "docker is not installed: the agent cannot operate stacks until it is"
        return 0
    fi
    # The one checked here is the one the agent runs (agent.docker_binary of a new config; see
    # check_agent_binaries for an existing one): as an absolute path.
    DOCKER_CHECKED="$(command -v "$docker_cmd")"
    case "$DOCKER_CHECKED" in /*) ;; *) DOCKER_CHECKED="$(cd "$(dirname "$DOCKER_CHECKED")" && pwd)/$(basename "$DOCKER_CHECKED")" ;; esac
    say "  docker: $DOCKER_CHECKED"
    if ! timeout 20 "$docker_cmd" compose version >/dev/null 2>&1; then
        warn "docker compose is not available: install the docker compose plugin (Debian/Ubuntu: apt-get install docker-compose-plugin)"
        NOTES+=("docker compose is not available: install the docker compose plugin, then the stacks show their state")
    fi
}

# --------------------------------------------------------------------------------------
# Step 2: zipapps
# --------------------------------------------------------------------------------------

build_zipapps() {
    step "Zipapps"
    if [ -f "$DIST_DIR/fm-agent.pyz" ] && [ -f "$DIST_DIR/fm-dashboard.pyz" ]; then
        say "  using $DIST_DIR"
        return 0
    fi
    [ -f "$SCRIPT_DIR/packaging/build.sh" ] ||
        die "no zipapps in $DIST_DIR and no packaging/build.sh to build them"
    say "  $DIST_DIR has no zipapps: building them"
    if [ -n "${PYTHON:-}" ]; then
        if [ "$DRY_RUN" = 1 ]; then say "  would run: PYTHON=$PYTHON packaging/build.sh"; return 0; fi
        DIST_DIR="$DIST_DIR" PYTHON="$PYTHON" bash "$SCRIPT_DIR/packaging/build.sh"
        return 0
    fi
    # Only the build requirements, pinned with hashes like the runtime lock, in a throwaway venv:
    # not the test toolchain (`make build` installs .[test,build], hundreds of MB).
    local lock="$SCRIPT_DIR/packaging/build-requirements.lock" venv="$STAGE/build-venv"
    [ -f "$lock" ] || die "no zipapps in $DIST_DIR and no $lock to build them with"
    if [ "$DRY_RUN" = 1 ]; then say "  would build with the hashed build requirements ($lock) in a temporary venv"; return 0; fi
    if ! "$PY" -c 'import ensurepip' 2>/dev/null && command -v apt-get >/dev/null; then
        host_run apt-get install -y -q "python3-venv" "$(basename "$PY")-venv" >/dev/null 2>&1 || true
    fi
    "$PY" -m venv "$venv" ||
        die "$PY -m venv failed: install python3-venv (apt-get install python3-venv) and run again"
    say "  build tools from $lock (hashed; no test tools)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$lock" ||
        die "could not install the build requirements (above): pip needs to reach its index to fetch them"
    DIST_DIR="$DIST_DIR" PYTHON="$venv/bin/python" bash "$SCRIPT_DIR/packaging/build.sh"
}

install_zipapps() {
    local name sum expected
    local names="fm-agent fm-dashboard"
    [ "$AGENT_ONLY" = 0 ] || names="fm-agent"  # a managed server runs no dashboard
    for name in $names; do
        if [ "$DIST_DIR" = "$(at "$PREFIX")" ]; then
            say "  using the installed $PREFIX/$name.pyz"
            continue
        fi
        if [ ! -f "$DIST_DIR/$name.pyz" ]; then
            say "  would install $PREFIX/$name.pyz (after building it)"
            CHANGES=$((CHANGES + 1))
            continue
        fi
        sum="$(sha256_of "$DIST_DIR/$name.pyz")"
        if [ -f "$DIST_DIR/SHA256SUMS" ]; then
            expected="$(awk -v f="$name.pyz" '$2 == f {print $1}' "$DIST_DIR/SHA256SUMS")"
            [ "$sum" = "$expected" ] ||
                die "$DIST_DIR/$name.pyz does not match SHA256SUMS (expected $expected, got $sum): rebuild with make build"
        fi
        if place_file "$DIST_DIR/$name.pyz" "$PREFIX/$name.pyz" 0755 root root; then
            if [ "$name" = fm-agent ]; then CHANGED_AGENT=1; else CHANGED_DASHBOARD=1; fi
            if [ "$DRY_RUN" = 0 ] && [ "$(sha256_of "$(at "$PREFIX/$name.pyz")")" != "$sum" ]; then
                die "$PREFIX/$name.pyz: checksum mismatch after copying"
            fi
        fi
    done
    if [ -f "$SCRIPT_DIR/README.md" ]; then
        place_file "$SCRIPT_DIR/README.md" "$PREFIX/README.md" 0644 root root || true
    fi
    # The reference (configuration, API, security model) lives in docs/; the config points there.
    local doc
    for doc in "$SCRIPT_DIR"/docs/*.md; do
        [ -f "$doc" ] || continue
        place_file "$doc" "$PREFIX/docs/${doc##*/}" 0644 root root || true
    done
    # The installer itself and its templates, so that $PREFIX/install.sh can repair, start
    # again and uninstall without the checkout.
    place_file "$SCRIPT_DIR/install.sh" "$PREFIX/install.sh" 0755 root root || true
    local template
    for template in systemd/fm-agent.service systemd/fm-dashboard.service systemd/fm-dashboard-hub.socket \
        systemd/fm-uplink.service nginx/fm-dashboard.conf nginx/fm-security-headers.conf nginx/fm-tls.conf; do
        place_file "$SCRIPT_DIR/packaging/$template" "$PREFIX/packaging/$template" 0644 root root || true
    done
    printf '#!/bin/sh\n# Remove fmappliance (keeps config and backups unless --purge).\nexec %s/install.sh --uninstall "$@"\n' \
        "$PREFIX" >"$STAGE/uninstall.sh"
    place_file "$STAGE/uninstall.sh" "$PREFIX/uninstall.sh" 0755 root root || true
}

# --------------------------------------------------------------------------------------
# Step 3: users
# --------------------------------------------------------------------------------------

# The agent user (kept from the first install unless FM_AGENT_USER asks for another), the
# stacks and the fm binary it may use: decided by the helper, which trusts no path another
# user can change (see fmappliance/installer/discovery.py).
discover() {
    local docker_cmd="${FM_DOCKER:-docker}" previous status=0
    previous="$(recorded agent-user)"
    if [ -z "$previous" ] && [ -f "$(at "$UNIT_DIR/fm-agent.service")" ]; then
        # An install from before the record kept the choice: its unit knows it.
        previous="$(awk -F= '$1 == "User" { print $2; exit }' "$(at "$UNIT_DIR/fm-agent.service")")"
        UPGRADE=1
    fi
    local only_user=() explicit=()
    # A user once named with FM_AGENT_USER keeps what only an explicit choice allows (root, rootless docker).
    [ -n "$previous" ] && [ "$(recorded agent-user-explicit)" = "$previous" ] && explicit=(--recorded-explicit)
    : >"$STAGE/compose.json"
    if [ -f "$(at "$CONFIG")" ]; then
        # The config is never rewritten: its stacks and fm stay; only the user is decided again.
        only_user=(--user-only)
    elif command -v "$docker_cmd" >/dev/null 2>&1; then
        timeout 20 "$docker_cmd" compose ls --all --format json >"$STAGE/compose.json" 2>/dev/null || true
    fi
    helper discover ${only_user[@]+"${only_user[@]}"} --search "${FM_SEARCH_HOMES:-/home/* /root}" --fm-home "${FRAPPE_MANAGER_HOME:-}" \
        --requested-user "${FM_AGENT_USER:-}" --recorded-user "$previous" ${explicit[@]+"${explicit[@]}"} --fm-binary "${FM_BINARY:-}" \
        --fm-on-path "$(command -v fm 2>/dev/null || true)" --compose-json "$STAGE/compose.json" \
        --docker-binary "$DOCKER_CHECKED" \
        --stacks-out "$STAGE/stacks.json" --runtime-base "$USER_RUNTIME_BASE" \
        >"$STAGE/discovery" 2>"$STAGE/discovery.err" || status=$?
    if [ "$status" != 0 ]; then
        cat "$STAGE/discovery.err" >&2
        exit 1
    fi
    AGENT_USER="$(discovered agent_user)"
    ROOTLESS_SOCKET="$(discovered rootless_socket)"
    DOCKER_GROUP_ACCESS="$(discovered docker_group)"
    [ "$(discovered agent_explicit)" = yes ] && record "agent-user-explicit $AGENT_USER"
    FOUND_FM_BINARY="$(discovered fm_binary)"
    STACK_COUNT="$(discovered stack_count)"
    say "  agent user: $AGENT_USER ($(discovered agent_reason))"
    if [ -n "$previous" ] && [ "$previous" != "$AGENT_USER" ]; then
        note "the agent now runs as $AGENT_USER instead of $previous (FM_AGENT_USER)"
    fi
    local line
    while IFS= read -r line; do
        case "$line" in "note "*) note "${line#note }" ;; esac
    done <"$STAGE/discovery"
}

discovered() { awk -v k="$1" '$1 == k { sub(/^[^ ]+ ?/, ""); print; exit }' "$STAGE/discovery"; }

choose_users() {
    step "Users"
    discover
    [ "$AGENT_USER" != "$DASHBOARD_USER" ] || die "the agent and the dashboard must run as different users"
    if user_exists "$AGENT_USER"; then
        AGENT_GROUP="$(id -gn "$AGENT_USER")"
        AGENT_HOME="$(getent passwd "$AGENT_USER" | cut -d: -f6)"
    else
        AGENT_GROUP="$AGENT_USER"
        AGENT_HOME="$STATE_DIR/agent"
    fi
    if [ "$AGENT_USER" = fm-agent ]; then AGENT_HOME="$STATE_DIR/agent"; fi
    record "agent-user $AGENT_USER"
    if [ "$AGENT_ONLY" = 1 ]; then
        choose_uplink_user
        return 0
    fi
    say "  dashboard user: $DASHBOARD_USER (not in the docker group)"
    if [ -n "$ROOT" ]; then
        say "  skipped (--root): creating users $AGENT_USER, $DASHBOARD_USER and groups $CONFIG_GROUP, $WEB_GROUP"
        return 0
    fi
    create_group "$CONFIG_GROUP"
    create_group "$WEB_GROUP"
    if ! user_exists "$AGENT_USER"; then
        host_run useradd --system --user-group --home-dir "$STATE_DIR/agent" --no-create-home \
            --shell /usr/sbin/nologin --comment "fmappliance agent" "$AGENT_USER"
        record "user $AGENT_USER"
        CHANGES=$((CHANGES + 1))
    fi
    # Only the installer's own fm-agent or a user named with FM_AGENT_USER is made root-equivalent;
    # a rootless docker's owner talks to their own daemon instead.
    if [ -n "$ROOTLESS_SOCKET" ]; then
        say "  $AGENT_USER uses their own rootless docker ($ROOTLESS_SOCKET): not added to the docker group"
    elif [ "$DOCKER_GROUP_ACCESS" != add ]; then
        say "  $AGENT_USER is not added to the docker group (chosen by the installer, not named with FM_AGENT_USER)"
    elif group_exists docker; then
        add_member "$AGENT_USER" docker
    else
        warn "no docker group yet: after installing docker run this installer again so $AGENT_USER can use it"
    fi
    add_member "$AGENT_USER" "$CONFIG_GROUP"
    if ! user_exists "$DASHBOARD_USER"; then
        host_run useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin --comment "fmappliance dashboard" "$DASHBOARD_USER"
        record "user $DASHBOARD_USER"
        CHANGES=$((CHANGES + 1))
    fi
    add_member "$DASHBOARD_USER" "$CONFIG_GROUP"
    # The dashboard's socket belongs to this group: nginx may open it, nothing else can.
    add_member "$DASHBOARD_USER" "$WEB_GROUP"
    if id -nG "$DASHBOARD_USER" 2>/dev/null | tr ' ' '\n' | grep -qx docker; then
        warn "$DASHBOARD_USER was in the docker group: removing it"
        host_run gpasswd -d "$DASHBOARD_USER" docker
    fi
    if [ "$DRY_RUN" = 0 ]; then
        AGENT_GROUP="$(id -gn "$AGENT_USER")"
    fi
}

# --agent-only: the agent user as usual, and the uplink's own user in the agent-socket group only.
choose_uplink_user() {
    say "  uplink user: $UPLINK_USER (group $UPLINK_GROUP: may open the agent's socket, cannot read $CONFIG)"
    if [ -n "$ROOT" ]; then
        say "  skipped (--root): creating users $AGENT_USER, $UPLINK_USER and groups $CONFIG_GROUP, $UPLINK_GROUP"
        return 0
    fi
    create_group "$CONFIG_GROUP"
    create_group "$UPLINK_GROUP"
    if ! user_exists "$AGENT_USER"; then
        host_run useradd --system --user-group --home-dir "$STATE_DIR/agent" --no-create-home \
            --shell /usr/sbin/nologin --comment "fmappliance agent" "$AGENT_USER"
        record "user $AGENT_USER"
        CHANGES=$((CHANGES + 1))
    fi
    if [ "$DOCKER_GROUP_ACCESS" = add ] && group_exists docker && [ -z "$ROOTLESS_SOCKET" ]; then
        add_member "$AGENT_USER" docker
    fi
    add_member "$AGENT_USER" "$CONFIG_GROUP"
    # The agent gives its socket to this group: it must be a member.
    add_member "$AGENT_USER" "$UPLINK_GROUP"
    if ! user_exists "$UPLINK_USER"; then
        host_run useradd --system --gid "$UPLINK_GROUP" --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin --comment "fmappliance uplink" "$UPLINK_USER"
        record "user $UPLINK_USER"
        CHANGES=$((CHANGES + 1))
    fi
    if [ "$DRY_RUN" = 0 ]; then AGENT_GROUP="$(id -gn "$AGENT_USER")"; fi
}

create_group() {
    group_exists "$1" && return 0
    host_run groupadd --system "$1"
    record "group $1"
    CHANGES=$((CHANGES + 1))
}

add_member() {
    local user="$1" group="$2"
    if id -nG "$user" 2>/dev/null | tr ' ' '\n' | grep -qx "$group"; then return 0; fi
    host_run usermod -aG "$group" "$user"
    record "member $user $group"
    CHANGES=$((CHANGES + 1))
}

# --------------------------------------------------------------------------------------
# Step 4: config, state and backup directories
# --------------------------------------------------------------------------------------

write_config() {
    step "Configuration"
    # A managed server's uplink must reach $FLEET_DIR inside (o+x, no listing); config.yaml stays 0640.
    ensure_dir "$CONF_DIR" "$([ "$AGENT_ONLY" = 1 ] && echo 0751 || echo 0750)" root "$CONFIG_GROUP"
    if [ -f "$(at "$CONFIG")" ]; then
        set_owner_mode "$(at "$CONFIG")" 0640 root "$CONFIG_GROUP"
        say "  kept $CONFIG (never overwritten; edit it, then: sudo $0)"
        migrate_config
        add_proxy_secret_key
        ensure_proxy_secret
        return 0
    fi
    generate_config "$STAGE/config.yaml"
    if [ "$DRY_RUN" = 1 ]; then
        say "  would create $CONFIG (0640 root:$CONFIG_GROUP) with:"
        sed -n '/^stacks:/,/^backups:/p' "$STAGE/config.yaml" | sed '$d; s/^/    /'
        CHANGES=$((CHANGES + 1))
        return 0
    fi
    place_file "$STAGE/config.yaml" "$CONFIG" 0640 root "$CONFIG_GROUP" || true
    say "  generated $CONFIG with a new token, secret key and admin password"
    ensure_proxy_secret
}

# The secret nginx adds to every request it passes on; the dashboard believes X-Forwarded-For
# only with it (other processes of nginx's user can open the socket too). Made once, kept.
ensure_proxy_secret() {
    local existing secret=""
    existing="$(at "$PROXY_SECRET_FILE")"
    [ -f "$existing" ] && secret="$(tr -d '[:space:]' <"$existing")"
    if ! [[ "$secret" =~ ^[A-Za-z0-9_-]{32,}$ ]]; then
        secret="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(36))')"
    fi
    (umask 077 && printf '%s\n' "$secret" >"$STAGE/proxy-secret" &&
        printf '# Written by install.sh: the dashboard believes X-Forwarded-For only with this header.\nproxy_set_header X-Fmappliance-Proxy "%s";\n' \
            "$secret" >"$STAGE/fm-proxy-secret.conf")
    if place_file "$STAGE/proxy-secret" "$PROXY_SECRET_FILE" 0640 root "$DASHBOARD_USER" >/dev/null; then
        CHANGED_DASHBOARD=1
        say "  wrote $PROXY_SECRET_FILE (nginx's proxy secret, readable by $DASHBOARD_USER only)"
    fi
    keep_nginx_file "$PROXY_SECRET_INCLUDE"
    if place_file "$STAGE/fm-proxy-secret.conf" "$PROXY_SECRET_INCLUDE" 0600 root root >/dev/null; then
        CHANGED_NGINX=1
        say "  wrote $PROXY_SECRET_INCLUDE (root only)"
    fi
    true
}

# Configs from before the proxy secret: point the dashboard at it (one line added; nothing else changes).
add_proxy_secret_key() {
    local config added
    config="$(at "$CONFIG")"
    [ -f "$STAGE/config-migrated.yaml" ] && config="$STAGE/config-migrated.yaml"
    added="$(helper add-dashboard-key "$config" proxy_secret_file "$PROXY_SECRET_FILE")" ||
        die "could not add dashboard.proxy_secret_file to $CONFIG (above); it is unchanged"
    [ "$added" = added ] || return 0
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" = 1 ]; then say "  would add dashboard.proxy_secret_file: $PROXY_SECRET_FILE to $CONFIG"; return 0; fi
    say "  added dashboard.proxy_secret_file: $PROXY_SECRET_FILE to $CONFIG"
}

generate_config() {
    local out="$1"
    choose_download_mode
    helper write-config --out "$out" --password-out "$STAGE/password" --stacks "$STAGE/stacks.json" \
        --fm-binary "$FOUND_FM_BINARY" --admin-user "$ADMIN_USER" --download-mode "$DOWNLOAD_MODE" \
        --state-dir "$STATE_DIR" --backups-dir "$BACKUPS_DIR" \
        --agent-socket-group "$([ "$AGENT_ONLY" = 1 ] && echo "$UPLINK_GROUP" || echo "$CONFIG_GROUP")" \
        --dashboard-socket-group "$WEB_GROUP" \
        --proxy-secret-file "$PROXY_SECRET_FILE" --docker-binary "$(discovered docker_binary)" ||
        die "could not write a new config (above)"
    ADMIN_PASSWORD="$(cat "$STAGE/password")"
    say "  discovered $STACK_COUNT stack(s)$( [ -n "$(discovered fm_homes)" ] && echo " (FM homes: $(discovered fm_homes))")"
    if [ "$STACK_COUNT" -gt 0 ]; then
        note "every discovered stack is backed up daily at 02:00 (server time): the schedules: section of $CONFIG"
    fi
}

# An install from before the Unix sockets listens on the installer's old TCP ports: move it
# to the sockets (explicit TCP setups on other addresses or ports stay as they are).
migrate_config() {
    local config moved
    config="$(at "$CONFIG")"
    [ -f "$config" ] || return 0
    if [ "$DRY_RUN" = 1 ]; then
        cp "$config" "$STAGE/config-migrated.yaml"
        config="$STAGE/config-migrated.yaml"
    fi
    # To the schema's default sockets.
    moved="$(helper migrate-config "$config" --agent-socket-group "$CONFIG_GROUP" --dashboard-socket-group "$WEB_GROUP")" ||
        die "could not move $CONFIG to the Unix sockets (above); it is unchanged"
    [ -n "$moved" ] || return 0
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" = 1 ]; then
        say "  would move $moved of $CONFIG from TCP to Unix sockets"
        return 0
    fi
    MOVED_TO_SOCKETS="$moved"  # said once the config's values are read (read_config_values)
}

check_config() {
    local config name pyz
    config="$(at "$CONFIG")"
    [ -f "$config" ] || return 0
    for name in fm-agent fm-dashboard; do
        pyz="$(pyz_path "$name")"
        [ -n "$pyz" ] || return 0
        # Both at once: each is mostly interpreter start-up.
        (SHIV_ROOT="$STAGE/shiv-$name" "$PY" "$pyz" --config "$config" --check-config >"$STAGE/check-$name.out" 2>&1
         echo $? >"$STAGE/check-$name.rc") &
    done
    wait
    for name in fm-agent fm-dashboard; do
        if [ "$(cat "$STAGE/check-$name.rc")" != 0 ]; then
            cat "$STAGE/check-$name.out" >&2
            die "$CONFIG is not valid for $name (above); fix it and run this installer again"
        fi
    done
    say "  $CONFIG is valid"
}

make_directories() {
    step "Directories"
    local owner="${AGENT_USER:-root}" group="${AGENT_GROUP:-root}"
    ensure_dir "$STATE_DIR" 0750 "$owner" "$CONFIG_GROUP"
    ensure_dir "$STATE_DIR/agent" 0750 "$owner" "$group"
    if [ "$AGENT_ONLY" = 1 ]; then
        ensure_dir "$FLEET_DIR" 0750 "$UPLINK_USER" "$UPLINK_GROUP"
    else
        ensure_dir "$STATE_DIR/dashboard" 0750 "$DASHBOARD_USER" "$DASHBOARD_USER"
    fi
    ensure_dir "$ACME_DIR" 0755 root root
    ensure_dir "$BACKUPS_DIR" 0750 "$owner" "$group"
    [ "$AGENT_ONLY" = 1 ] || grant_nginx_backup_access
    if [ "$INIT" = daemons ]; then
        # systemd makes these (RuntimeDirectory=); without it, the installer does: the directories
        # of the config's sockets when they are its own (/run/fm-*; see runtime_dir in installer/cli.py).
        local runtime
        runtime="$(config_value agent.runtime_dir)"
        [ -z "$runtime" ] || ensure_dir "$runtime" 0755 "$owner" "$group"
        runtime="$(config_value dashboard.runtime_dir)"
        [ "$AGENT_ONLY" = 1 ] || [ -z "$runtime" ] || ensure_dir "$runtime" 0755 "$DASHBOARD_USER" "$DASHBOARD_USER"
        ensure_dir "$LOG_DIR" 0750 root "$CONFIG_GROUP"
        ensure_dir "$CACHE_DIR/fm-agent" 0700 "$owner" "$group"
        ensure_dir "$CACHE_DIR/fm-supervise" 0700 root root
        [ "$AGENT_ONLY" = 0 ] || ensure_dir "$CACHE_DIR/fm-uplink" 0700 "$UPLINK_USER" "$UPLINK_GROUP"
        [ "$AGENT_ONLY" = 1 ] || ensure_dir "$CACHE_DIR/fm-dashboard" 0700 "$DASHBOARD_USER" "$DASHBOARD_USER"
    fi
}

# nginx's user (www-data on Debian/Ubuntu), from nginx.conf under --root when given.
nginx_user() {
    local web_user
    web_user="$(awk '$1 == "user" { sub(/;$/, "", $2); print $2; exit }' "$(at "$NGINX_DIR/nginx.conf")" 2>/dev/null || true)"
    printf '%s\n' "${web_user:-www-data}"
}

# accel lets nginx's user read every backup, and with it every other site and PHP pool that
# runs as that user: only when this nginx serves nothing else. It needs setfacl (package acl).
choose_download_mode() {
    [ -n "$DOWNLOAD_MODE" ] && return 0
    local others
    others="$(helper other-sites "$(at "$NGINX_DIR")" --shown-as "$NGINX_DIR" | tr '\n' ' ')"
    if [ -n "$others" ]; then
        DOWNLOAD_MODE=stream
        note "download_mode stream: this nginx serves other sites (${others% }); in accel mode they could read every backup as $(nginx_user)"
        return 0
    fi
    DOWNLOAD_MODE=accel
    if [ -n "$ROOT" ] || command -v setfacl >/dev/null; then return 0; fi
    if [ "$DRY_RUN" = 1 ]; then say "  would run: apt-get install -y -q acl (for download_mode accel)"; return 0; fi
    if command -v apt-get >/dev/null; then host_run apt-get install -y -q acl >/dev/null 2>&1 || true; fi
    if ! command -v setfacl >/dev/null; then
        DOWNLOAD_MODE=stream
        say "  setfacl is not available: downloads will be relayed by the dashboard (download_mode: stream)"
    fi
}

# download_mode accel: nginx sends backups itself, so its user needs read access to them; a
# default ACL extends that to every backup the agent writes later (modes stay 0750/0640).
grant_nginx_backup_access() {
    local mode web_user dir
    mode="$(config_value dashboard.download_mode)"
    dir="$(config_value backups.base_path)"
    web_user="$(nginx_user)"
    if [ -n "$ROOT" ]; then
        [ "$mode" = accel ] && say "  skipped (--root): setfacl -R -m u:$web_user:rX,d:u:$web_user:rX $dir"
        return 0
    fi
    if [ "$mode" = accel ]; then
        if ! command -v setfacl >/dev/null; then host_run apt-get install -y -q acl || true; fi
        if [ "$DRY_RUN" = 0 ] && ! command -v setfacl >/dev/null; then
            warn "setfacl is missing: nginx cannot read $dir; install the acl package or use download_mode: stream"
            return 0
        fi
        if ! getfacl -p "$dir" 2>/dev/null | grep -q "^default:user:$web_user:r-x"; then
            host_run setfacl -R -m "u:$web_user:rX,d:u:$web_user:rX" "$dir" ||
                warn "could not give $web_user read access to $dir (ACLs unsupported?); use download_mode: stream"
            CHANGES=$((CHANGES + 1))
        fi
        say "  download_mode accel: $web_user may read $dir (ACL)"
        local others
        others="$(helper other-sites "$(at "$NGINX_DIR")" --shown-as "$NGINX_DIR" | tr '\n' ' ')"
        if [ -n "$others" ]; then
            note "WARNING: download_mode is accel but this nginx also serves ${others% }: those sites can read every backup as $web_user; set dashboard.download_mode: stream in $CONFIG and run this installer again"
        fi
    elif command -v getfacl >/dev/null && getfacl -p "$dir" 2>/dev/null | grep -q "user:$web_user:"; then
        host_run setfacl -R -x "u:$web_user,d:u:$web_user" "$dir" || true
        CHANGES=$((CHANGES + 1))
        say "  download_mode stream: removed $web_user's read access to $dir"
    fi
}

# The PATH the agent's commands get: systemd's default for services, or the daemon start's.
agent_path() {
    if [ "$INIT" = daemons ]; then echo /usr/local/bin:/usr/bin:/bin
    else echo /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; fi
}

# What the agent will run (agent.docker_binary / fm_binary, looked up on its own PATH) against
# what this installer checked: a difference is said in the summary, with the line that fixes it.
check_agent_binaries() {
    local docker fm path checked_fm
    path="$(agent_path)"
    docker="$(config_value agent.docker_binary)"
    case "$docker" in /*) path="$(dirname "$docker"):$path" ;; *) docker="$(PATH="$path" command -v "$docker" || true)" ;; esac
    if [ -n "$DOCKER_CHECKED" ] && [ "$(readlink -f "$docker" 2>/dev/null)" != "$(readlink -f "$DOCKER_CHECKED")" ]; then
        note "WARNING: the agent would run docker ${docker:-(none: not on its PATH $path)}, but the installer checked $DOCKER_CHECKED: set agent.docker_binary: \"$DOCKER_CHECKED\" in $CONFIG and run this installer again"
    fi
    checked_fm="$(command -v fm 2>/dev/null || true)"
    fm="$(config_value agent.fm_binary)"
    case "$fm" in /*) ;; *) fm="$(PATH="$path" command -v "$fm" || true)" ;; esac
    if [ -n "$checked_fm" ] && [ -z "$fm" ]; then
        note "WARNING: the agent finds no fm on its PATH ($path), but there is $checked_fm: set agent.fm_binary: \"$checked_fm\" in $CONFIG"
    fi
    true
}

# --------------------------------------------------------------------------------------
# Step 5: systemd units
# --------------------------------------------------------------------------------------

install_units() {
    step "systemd units"
    local groups="$CONFIG_GROUP" rw
    # SupplementaryGroups= grants the group whatever /etc/group says: only where the user has it or gets it.
    if [ -z "$ROOTLESS_SOCKET" ] && group_exists docker && { [ "$DOCKER_GROUP_ACCESS" = add ] ||
        id -nG "$AGENT_USER" 2>/dev/null | tr ' ' '\n' | grep -qx docker; }; then
        groups="$CONFIG_GROUP docker"
    fi
    [ "$AGENT_ONLY" = 0 ] || groups="$groups $UPLINK_GROUP"
    rw="$(config_value rw_paths)"
    [ -n "$AGENT_HOME" ] && [ "$AGENT_HOME" != "$STATE_DIR/agent" ] && rw="$rw -$AGENT_HOME"
    local tags="" docker_host="" runtime_dir=""
    detect_rootless_docker
    if [ "${#ROOTLESS_ENV[@]}" -gt 0 ]; then
        tags="ROOTLESS"
        docker_host="${ROOTLESS_ENV[0]#DOCKER_HOST=}"
        runtime_dir="${ROOTLESS_ENV[1]#XDG_RUNTIME_DIR=}"
    fi
    render "$SCRIPT_DIR/packaging/systemd/fm-agent.service" "$STAGE/fm-agent.service" "$tags" \
        PREFIX="$PREFIX" CONFIG="$CONFIG" PYTHON="$PY" AGENT_USER="$AGENT_USER" AGENT_GROUP="$AGENT_GROUP" \
        AGENT_GROUPS="$groups" AGENT_HOME="$AGENT_HOME" AGENT_RW_PATHS="$rw" \
        DOCKER_HOST="$docker_host" XDG_RUNTIME_DIR="$runtime_dir"
    render "$SCRIPT_DIR/packaging/systemd/fm-dashboard.service" "$STAGE/fm-dashboard.service" \
        "$([ "$FLEET_HUB" = 1 ] && echo FLEETHUB)" \
        PREFIX="$PREFIX" CONFIG="$CONFIG" PYTHON="$PY" DASHBOARD_USER="$DASHBOARD_USER" \
        DASHBOARD_GROUPS="$CONFIG_GROUP $WEB_GROUP"
    if place_file "$STAGE/fm-agent.service" "$UNIT_DIR/fm-agent.service" 0644 root root; then
        CHANGED_AGENT=1; CHANGED_UNITS=1
    fi
    if [ "$AGENT_ONLY" = 1 ]; then
        render "$SCRIPT_DIR/packaging/systemd/fm-uplink.service" "$STAGE/fm-uplink.service" "" \
            PREFIX="$PREFIX" PYTHON="$PY" UPLINK_USER="$UPLINK_USER" UPLINK_GROUP="$UPLINK_GROUP" FLEET_DIR="$FLEET_DIR"
        if place_file "$STAGE/fm-uplink.service" "$UNIT_DIR/fm-uplink.service" 0644 root root; then
            CHANGED_UNITS=1
        fi
        return 0
    fi
    if place_file "$STAGE/fm-dashboard.service" "$UNIT_DIR/fm-dashboard.service" 0644 root root; then
        CHANGED_DASHBOARD=1; CHANGED_UNITS=1
    fi
}

# --agent-only --join: join the hub's fleet once (fm-agent fleet join; the token from FM_JOIN_TOKEN,
# inherited, never in argv). Its files go to the uplink's user; the running agent picks up its token.
join_fleet() {
    [ "$AGENT_ONLY" = 1 ] || return 0
    step "Fleet"
    if [ -z "$JOIN" ]; then
        if [ -f "$(at "$FLEET_DIR/uplink.json")" ]; then say "  joined already (see: fm-agent fleet status)"
        else say "  not joined: sudo FM_JOIN_TOKEN=... $0 --agent-only --join HOST:PORT"; fi
        return 0
    fi
    local args=(--config "$CONFIG" fleet join "$JOIN")
    [ -z "$JOIN_NAME" ] || args+=(--name "$JOIN_NAME")
    # --wait 0: the services start further down (the uplink is restarted there), not from inside the join.
    args+=(--wait 0)
    if [ -n "$ROOT" ] || [ "$DRY_RUN" = 1 ]; then
        say "  skipped ($([ -n "$ROOT" ] && echo --root || echo dry run)): fm-agent ${args[*]} (token from FM_JOIN_TOKEN)"
        return 0
    fi
    local status=0
    FM_JOIN_TOKEN="$FM_JOIN_TOKEN" "$PY" "$PREFIX/fm-agent.pyz" "${args[@]}" </dev/null || status=$?
    case "$status" in
        0) CHANGES=$((CHANGES + 1)) ;;
        5) say "  this server is in a fleet already (fm-agent fleet status); the token was not used" ;;
        *) die "joining the fleet at $JOIN failed (exit $status, above); nothing else was changed by it" ;;
    esac
}

# --fleet-hub: fleet.listen/fleet.address in the config (added when missing, never changed), the
# hub's key and certificate (fm-dashboard fleet init: made once, never overwritten), and a socket
# unit holding the port, so the dashboard service keeps IPAddressDeny=any for what it opens itself.
# A hub stays a hub, a managed server stays agent-only, on later runs without the options: from the record.
remember_fleet_hub() {
    if [ "$AGENT_ONLY" = 0 ] && [ "$(recorded agent-only)" = yes ]; then AGENT_ONLY=1; fi
    [ "$AGENT_ONLY" = 0 ] || record "agent-only yes"
    local kept
    kept="$(recorded fleet-hub)"
    if [ "$FLEET_HUB" = 0 ] && [ -n "$kept" ]; then
        FLEET_HUB=1
        FLEET_ADDRESS="${kept#* }"
        FLEET_PORT="${kept%% *}"
    fi
    [ "$FLEET_HUB" = 0 ] || record "fleet-hub $FLEET_PORT $FLEET_ADDRESS"
}

configure_fleet_hub() {
    [ "$FLEET_HUB" = 1 ] || return 0
    step "Fleet hub"
    local config added
    config="$(at "$CONFIG")"
    if [ -f "$config" ]; then
        added="$(helper add-fleet-hub "$config" "0.0.0.0:$FLEET_PORT" "$FLEET_ADDRESS")" ||
            die "could not add the fleet section to $CONFIG (above); it is unchanged"
        if [ "$added" = added ]; then
            CHANGES=$((CHANGES + 1)); CHANGED_DASHBOARD=1
            say "  fleet.listen: 0.0.0.0:$FLEET_PORT, fleet.address: $FLEET_ADDRESS added to $CONFIG"
        fi
    else
        say "  would add fleet.listen: 0.0.0.0:$FLEET_PORT and fleet.address: $FLEET_ADDRESS to $CONFIG"
    fi
    ensure_dir "$FLEET_DIR" 0750 "$DASHBOARD_USER" "$DASHBOARD_USER"
    if [ -n "$ROOT" ] || [ "$DRY_RUN" = 1 ]; then
        say "  skipped ($([ -n "$ROOT" ] && echo --root || echo dry run)): fm-dashboard --config $CONFIG fleet init"
    else
        local pin
        pin="$("$PY" "$PREFIX/fm-dashboard.pyz" --config "$CONFIG" fleet init)" ||
            die "fm-dashboard fleet init failed (above)"
        note "fleet hub certificate sha256: $pin (join tokens carry it; servers check it before sending anything)"
    fi
    render "$SCRIPT_DIR/packaging/systemd/fm-dashboard-hub.socket" "$STAGE/fm-dashboard-hub.socket" "" \
        FLEET_PORT="$FLEET_PORT"
    if place_file "$STAGE/fm-dashboard-hub.socket" "$UNIT_DIR/fm-dashboard-hub.socket" 0644 root root; then
        CHANGED_DASHBOARD=1; CHANGED_UNITS=1
    fi
    note "add servers with: sudo $PY $PREFIX/fm-dashboard.pyz --config $CONFIG fleet token create --name NAME (prints the command to run there)"
}

# A rootless docker daemon of an agent user named with FM_AGENT_USER, checked by discovery (the
# process on the socket runs as that user and is a root-owned dockerd/rootlesskit): the agent
# and its commands must talk to it, not to the system daemon.
detect_rootless_docker() {
    ROOTLESS_ENV=()
    local sock="$ROOTLESS_SOCKET"
    [ -n "$sock" ] || return 0
    ROOTLESS_ENV=("DOCKER_HOST=unix://$sock" "XDG_RUNTIME_DIR=$(dirname "$sock")")
    say "  rootless docker of $AGENT_USER found ($sock): the agent uses it (DOCKER_HOST)"
}

# --------------------------------------------------------------------------------------
# Step 6: nginx and the certificate
# --------------------------------------------------------------------------------------

server_names() {
    if [ -n "${FM_SERVER_NAMES:-}" ]; then
        printf '%s\n' "$FM_SERVER_NAMES"
    elif [ -n "$DOMAIN" ]; then
        printf '%s\n' "$DOMAIN"
    else
        # First an address a laptop can reach (the summary's URL), then the host's names, its IPv6
        # addresses (not link-local) and loopback, so that https://127.0.0.1/ answers too.
        {
            hostname -I 2>/dev/null | tr ' ' '\n' | grep -v ':'
            hostname -f 2>/dev/null
            hostname 2>/dev/null
            hostname -I 2>/dev/null | tr ' ' '\n' | grep ':' | grep -vi '^fe80:' | sed 's/^.*$/[&]/'
            echo localhost
            echo 127.0.0.1
            [ -e /proc/net/if_inet6 ] && echo '[::1]'
        } | awk 'NF && !seen[$0]++' | tr '\n' ' ' | sed 's/ $//'
        echo
    fi
}

ensure_nginx_package() {
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] && return 0
    if [ -n "$ROOT" ]; then say "  skipped (--root): apt-get install nginx"; return 0; fi
    host_run apt-get install -y -q nginx
}

choose_certificate() {
    CERT="$TLS_DIR/selfsigned.crt"
    KEY="$TLS_DIR/selfsigned.key"
    if [ -n "$DOMAIN" ] && [ -f "/etc/letsencrypt/live/$DOMAIN/fullchain.pem" ] && [ -z "$ROOT" ]; then
        CERT="/etc/letsencrypt/live/$DOMAIN/fullchain.pem"
        KEY="/etc/letsencrypt/live/$DOMAIN/privkey.pem"
        CERT_NOTE="Let's Encrypt certificate for $DOMAIN (renewed by certbot's timer)"
        return 0
    fi
    ensure_dir "$TLS_DIR" 0750 root root
    if [ -f "$(at "$CERT")" ] && [ -f "$(at "$KEY")" ]; then
        CERT_NOTE="self-signed certificate $CERT (kept)"
        return 0
    fi
    local names san="" name first
    names="$(server_names)"
    first="${names%% *}"
    for name in $names; do
        if [[ "$name" =~ ^[0-9.]+$ ]]; then san="$san,IP:$name"
        elif [[ "$name" =~ ^\[([0-9A-Fa-f:.]+)\]$ ]]; then san="$san,IP:${BASH_REMATCH[1]}"
        else san="$san,DNS:$name"; fi
    done
    CERT_NOTE="self-signed certificate $CERT: browsers will warn until you use --domain/--email"
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" = 1 ]; then say "  would create a self-signed certificate for $names"; return 0; fi
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
        -subj "/CN=${first:-localhost}" -addext "subjectAltName=${san#,}" \
        -keyout "$(at "$KEY")" -out "$(at "$CERT")" 2>/dev/null ||
        die "openssl could not create a self-signed certificate"
    umask 022
    chmod 0600 "$(at "$KEY")"
    chmod 0644 "$(at "$CERT")"
    record "file $CERT"
    record "file $KEY"
    say "  created a self-signed certificate for $names"
}

# restic makes the offsite copies (config section `offsite`); installed from the distribution so that
# setting up offsite later needs no further package step. A missing package is a warning, not a stop.
ensure_restic_package() {
    command -v restic >/dev/null && return 0
    if [ -n "$ROOT" ] || [ "$DRY_RUN" = 1 ]; then say "  would run: apt-get install -y -q restic (offsite copies)"; return 0; fi
    if command -v apt-get >/dev/null; then
        host_run apt-get install -y -q restic >/dev/null 2>&1 || warn "could not install restic: offsite copies need it (apt-get install restic)"
    fi
}

install_nginx_site() {
    step "nginx"
    ensure_nginx_package
    # The dashboard's socket belongs to this group: nginx may open it, nothing else can.
    if [ -z "$ROOT" ]; then
        if user_exists "$(nginx_user)"; then
            # nginx's workers pick up a new group when they are started again (reload).
            id -nG "$(nginx_user)" | tr ' ' '\n' | grep -qx "$WEB_GROUP" || CHANGED_NGINX=1
            add_member "$(nginx_user)" "$WEB_GROUP"
        else
            warn "nginx's user $(nginx_user) does not exist: nginx cannot reach the dashboard's socket until it is in group $WEB_GROUP"
        fi
    fi
    choose_certificate
    local tags="" names known="" name suffix="" upstream port listen snippet allow="" network
    [ -n "$DOMAIN" ] && tags="SNI"
    [ -e /proc/net/if_inet6 ] && tags="$tags V6"
    names="$(server_names)"
    for name in $names; do [ "$name" = _ ] || known="$known    $name 1;"$'\n'; done
    for network in $(config_value dashboard.metrics_allow); do allow="$allow        allow $network;"$'\n'; done
    [ "$HTTPS_PORT" = 443 ] || suffix=":$HTTPS_PORT"
    port="$(config_value dashboard.port)"
    listen="$(config_value dashboard.listen)"
    upstream="$listen:$port"
    [ -n "$(config_value dashboard.socket)" ] && upstream="unix:$(config_value dashboard.socket)"
    render "$SCRIPT_DIR/packaging/nginx/fm-dashboard.conf" "$STAGE/fm-dashboard.conf" "$tags" \
        DASHBOARD_UPSTREAM="$upstream" HTTP_PORT="$HTTP_PORT" HTTPS_PORT="$HTTPS_PORT" \
        HTTPS_PORT_SUFFIX="$suffix" SERVER_NAMES="$names" LOG_DIR="$NGINX_LOG_DIR" \
        SNIPPETS_DIR="$NGINX_DIR/snippets" CERT="$CERT" KEY="$KEY" \
        TLS_DEFAULT="$([ -n "$DOMAIN" ] || echo default_server)" ACME_DIR="$ACME_DIR" \
        ACCEL_PREFIX="$(config_value dashboard.accel_prefix)" \
        BACKUPS_DIR="$(config_value backups.base_path)" KNOWN_HOSTS_MAP="${known%$'\n'}" \
        METRICS_ALLOW="${allow%$'\n'}" PROXY_SECRET_INCLUDE="$PROXY_SECRET_INCLUDE"
    for snippet in fm-security-headers.conf fm-tls.conf; do
        keep_nginx_file "$NGINX_DIR/snippets/$snippet"
        if place_file "$SCRIPT_DIR/packaging/nginx/$snippet" "$NGINX_DIR/snippets/$snippet" 0644 root root; then
            CHANGED_NGINX=1
        fi
    done
    keep_nginx_file "$NGINX_DIR/sites-available/fm-dashboard.conf"
    if place_file "$STAGE/fm-dashboard.conf" "$NGINX_DIR/sites-available/fm-dashboard.conf" 0644 root root; then
        CHANGED_NGINX=1
    fi
    keep_nginx_file "$NGINX_DIR/sites-enabled/fm-dashboard.conf"
    if ensure_link "$NGINX_DIR/sites-available/fm-dashboard.conf" "$NGINX_DIR/sites-enabled/fm-dashboard.conf"; then
        CHANGED_NGINX=1
    fi
    # Debian's stock site is also the default server on port 80: two defaults cannot coexist.
    if [ "$HTTP_PORT" = 80 ] && [ -L "$(at "$NGINX_DIR/sites-enabled/default")" ]; then
        CHANGES=$((CHANGES + 1)); CHANGED_NGINX=1
        record "restore-link $NGINX_DIR/sites-enabled/default $(readlink "$(at "$NGINX_DIR/sites-enabled/default")")"
        keep_nginx_file "$NGINX_DIR/sites-enabled/default"
        tree_run rm -f "$(at "$NGINX_DIR/sites-enabled/default")"
        if [ "$DRY_RUN" = 0 ]; then say "  disabled nginx's stock default site (restored by uninstall)"; fi
    fi
    true
}

obtain_certificate() {
    [ -n "$DOMAIN" ] || return 0
    step "Let's Encrypt"
    if [ -n "$ROOT" ]; then say "  skipped (--root): certbot for $DOMAIN"; return 0; fi
    if [ -z "$EMAIL" ]; then
        say "  no --email given: keeping the $CERT_NOTE"
        return 0
    fi
    case "$CERT" in /etc/letsencrypt/*) say "  certificate for $DOMAIN already present"; return 0 ;; esac
    if ! command -v certbot >/dev/null; then
        host_run apt-get install -y -q certbot || true
    fi
    if [ "$DRY_RUN" = 1 ]; then
        say "  would run: certbot certonly --webroot -w $ACME_DIR -d $DOMAIN -m $EMAIL"
        return 0
    fi
    if command -v certbot >/dev/null && certbot certonly --non-interactive --agree-tos --webroot -w "$ACME_DIR" \
        -d "$DOMAIN" -m "$EMAIL" --deploy-hook "nginx -s reload"; then
        install_nginx_site
        reload_nginx
    else
        warn "certbot could not get a certificate for $DOMAIN (DNS pointing here? port $HTTP_PORT reachable?)"
        say "  keeping the $CERT_NOTE"
    fi
}

# --------------------------------------------------------------------------------------
# Step 7: firewall
# --------------------------------------------------------------------------------------

configure_firewall() {
    step "Firewall (UFW)"
    if [ -n "$ROOT" ]; then
        say "  skipped (--root): ufw allow OpenSSH, $HTTP_PORT, $HTTPS_PORT; deny 8000, 9100; enable"
        return 0
    fi
    if [ "$INIT" != systemd ]; then
        warn "no systemd (a container?): UFW cannot work here; skipped. The dashboard and agent listen on 127.0.0.1 only."
        return 0
    fi
    if ! command -v ufw >/dev/null; then
        host_run apt-get install -y -q ufw || { warn "could not install ufw; skipped"; return 0; }
    fi
    if [ "$DRY_RUN" = 0 ] && ! command -v ufw >/dev/null; then
        warn "ufw is missing; skipped"
        return 0
    fi
    # SSH first, so that enabling the firewall never locks the admin out.
    if ufw app info OpenSSH >/dev/null 2>&1; then host_run ufw allow OpenSSH; else host_run ufw allow 22/tcp; fi
    if [ "$AGENT_ONLY" = 1 ]; then
        # A managed server opens no port: its uplink dials out.
        host_run ufw deny "$(config_value agent.port)/tcp"
        host_run ufw --force enable || warn "ufw could not be enabled; go on without it"
        return 0
    fi
    host_run ufw allow "$HTTP_PORT/tcp"
    host_run ufw allow "$HTTPS_PORT/tcp"
    host_run ufw deny "$(config_value dashboard.port)/tcp"
    host_run ufw deny "$(config_value agent.port)/tcp"
    if [ "$FLEET_HUB" = 1 ]; then
        local cidr
        if [ "${#FLEET_ALLOW[@]}" -eq 0 ]; then
            host_run ufw allow "$FLEET_PORT/tcp"
        fi
        for cidr in "${FLEET_ALLOW[@]}"; do
            host_run ufw allow proto tcp from "$cidr" to any port "$FLEET_PORT"
        done
    fi
    host_run ufw --force enable || warn "ufw could not be enabled; go on without it"
}

# --------------------------------------------------------------------------------------
# Step 8: services
# --------------------------------------------------------------------------------------

start_services() {
    step "Services"
    if [ "$AGENT_ONLY" = 1 ]; then
        start_agent_only
        return 0
    fi
    case "$INIT" in
        none)
            say "  skipped (--root): systemctl enable --now fm-agent fm-dashboard; nginx reload"
            ;;
        systemd)
            if [ "$CHANGED_UNITS" = 1 ]; then host_run systemctl daemon-reload; fi
            host_run systemctl enable fm-agent.service fm-dashboard.service nginx.service
            if [ "$FLEET_HUB" = 1 ]; then
                # The socket first: the dashboard takes the hub's port from it (LISTEN_FDS).
                host_run systemctl enable fm-dashboard-hub.socket
                host_run systemctl restart fm-dashboard-hub.socket
            fi
            restart_unit fm-agent "$CHANGED_AGENT"
            restart_unit fm-dashboard "$CHANGED_DASHBOARD"
            reload_nginx
            wait_healthy
            ;;
        daemons)
            start_daemon fm-agent "$AGENT_USER" "$CHANGED_AGENT"
            start_daemon fm-dashboard "$DASHBOARD_USER" "$CHANGED_DASHBOARD"
            reload_nginx
            wait_healthy
            ;;
    esac
}

start_agent_only() {
    case "$INIT" in
        none) say "  skipped (--root): systemctl enable --now fm-agent fm-uplink" ;;
        systemd)
            if [ "$CHANGED_UNITS" = 1 ]; then host_run systemctl daemon-reload; fi
            host_run systemctl enable fm-agent.service fm-uplink.service
            restart_unit fm-agent "$CHANGED_AGENT"
            if [ -f "$(at "$FLEET_DIR/uplink.json")" ] || [ "$DRY_RUN" = 1 ]; then
                # Restarted: a new join gives it new files.
                host_run systemctl restart fm-uplink.service
            else
                say "  fm-uplink waits for a join: sudo FM_JOIN_TOKEN=... $0 --agent-only --join HOST:PORT"
            fi
            ;;
        daemons)
            start_daemon fm-agent "$AGENT_USER" "$CHANGED_AGENT"
            if [ -f "$(at "$FLEET_DIR/uplink.json")" ] || [ "$DRY_RUN" = 1 ]; then
                # The uplink tells the hub in its hello whether the agent answers: not before it listens.
                wait_agent_socket
                # Restarted, as under systemd: a new join gives it new files.
                start_daemon fm-uplink "$UPLINK_USER" 1
            else
                say "  fm-uplink waits for a join: sudo FM_JOIN_TOKEN=... $0 --agent-only --join HOST:PORT"
            fi
            ;;
    esac
}

# Until the agent accepts connections on its socket (up to 20 s; a TCP agent is not waited for).
wait_agent_socket() {
    local sock i
    sock="$(config_value agent.socket)"
    [ "$DRY_RUN" = 0 ] && [ -n "$sock" ] || return 0
    for i in $(seq 100); do
        "$PY" -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$sock" 2>/dev/null && return 0
        sleep 0.2
    done
    : "$i"
    warn "the agent has no socket at $sock yet: the hub shows this server as agent_down until it answers"
}

restart_unit() {
    local unit="$1" changed="$2"
    if [ "$changed" = 1 ]; then
        host_run systemctl restart "$unit.service"
    elif ! systemctl is-active --quiet "$unit.service"; then
        host_run systemctl start "$unit.service"
    else
        say "  $unit unchanged and running: not restarted"
    fi
}

# A live process (a zombie is not: without systemd, PID 1 may never reap our daemons).
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z ' "/proc/$1/stat" 2>/dev/null; }

daemon_pid() {
    local pidfile="$RUN_DIR/$1.pid" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    alive "$pid" || return 1
    printf '%s\n' "$pid"
}

stop_daemon() {
    local name="$1" pid i
    pid="$(daemon_pid "$name")" || { [ "$DRY_RUN" = 1 ] || rm -f "$RUN_DIR/$name.pid"; return 0; }
    if [ "$DRY_RUN" = 1 ]; then say "  would stop $name (pid $pid)"; return 0; fi
    host_run kill -TERM -- "-$pid" 2>/dev/null || host_run kill -TERM "$pid" || true
    for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL -- "-$pid" 2>/dev/null
    rm -f "$RUN_DIR/$name.pid"
    : "$i"
}

start_daemon() {
    local name="$1" user="$2" changed="$3" pid
    # Started by an installer before the supervisor: restart it under supervision.
    if pid="$(daemon_pid "$name")" && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q ' installer supervise '; then
        say "  $name runs without a supervisor: restarting it under one"
        changed=1
    fi
    if daemon_pid "$name" >/dev/null; then
        if [ "$changed" = 0 ]; then
            say "  $name unchanged and running (pid $(daemon_pid "$name")): not restarted"
            return 0
        fi
        stop_daemon "$name"
    fi
    if [ "$DRY_RUN" = 1 ]; then say "  would start $name as $user (supervised)"; return 0; fi
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    local extra_env=() command=("$PREFIX/$name.pyz" --config "$CONFIG")
    [ "$name" = fm-agent ] && extra_env=(${ROOTLESS_ENV[@]+"${ROOTLESS_ENV[@]}"})
    # The uplink is an entry point of the agent's zipapp and reads only the fleet directory.
    [ "$name" = fm-uplink ] && command=("$PREFIX/fm-agent.pyz" uplink --dir "$FLEET_DIR")
    # The supervisor (root, from the agent zipapp, standard library only) starts the service as
    # its user, starts it again after a crash (back-off up to 60 s) and rotates its log
    # (10 MB x 5). setsid: its own session and process group, so stop_daemon ends both; the pid
    # file holds the supervisor, <name>.child.pid the service. PYTHONOPTIMIZE=2 as in the units (no
    # docstrings or asserts: about 1 MB less per service).
    setsid env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 SHIV_ROOT="$CACHE_DIR/fm-supervise" \
        "$PY" "$PREFIX/fm-agent.pyz" installer supervise --name "$name" --log "$LOG_DIR/$name.log" \
        --child-pidfile "$RUN_DIR/$name.child.pid" -- \
        setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups --inh-caps=-all -- \
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$(getent passwd "$user" | cut -d: -f6)" LANG=C.UTF-8 \
        SHIV_ROOT="$CACHE_DIR/$name" PYTHONOPTIMIZE=2 ${extra_env[@]+"${extra_env[@]}"} "$PY" "${command[@]}" \
        </dev/null >>"$LOG_DIR/supervise.log" 2>&1 &
    echo $! >"$RUN_DIR/$name.pid"
    say "  started $name as $user, supervised (pid $!, log $LOG_DIR/$name.log)"
}

# keep_nginx_file PATH: before the installer changes one of nginx's files, keep it (or that it
# was absent), so that a configuration nginx refuses can be taken back (restore_nginx_files).
keep_nginx_file() {
    local path="$1" kept="$STAGE/nginx-kept$1" known
    [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] || return 0
    for known in ${NGINX_KEPT[@]+"${NGINX_KEPT[@]}"}; do [ "$known" = "$path" ] && return 0; done
    NGINX_KEPT+=("$path")
    mkdir -p "$(dirname "$kept")"
    if [ -e "$path" ] || [ -L "$path" ]; then cp -a "$path" "$kept"; else : >"$kept.absent"; fi
}

# Put back every nginx file as it was when nginx last took its configuration.
restore_nginx_files() {
    local path kept
    for path in ${NGINX_KEPT[@]+"${NGINX_KEPT[@]}"}; do
        kept="$STAGE/nginx-kept$path"
        if [ -e "$kept.absent" ]; then
            rm -f -- "$kept.absent"
            [ -e "$path" ] || [ -L "$path" ] || continue
            rm -f -- "$path"
            say "  removed $path (it was not there before)"
            continue
        fi
        # Unchanged by this run: nothing to put back.
        if [ -L "$kept" ]; then
            [ -L "$path" ] && [ "$(readlink "$kept")" = "$(readlink "$path")" ] && continue
        elif [ ! -L "$path" ] && cmp -s -- "$kept" "$path"; then
            continue
        fi
        rm -f -- "$path"
        mv -f -- "$kept" "$path"
        say "  restored $path"
    done
    rm -rf "$STAGE/nginx-kept"
    NGINX_KEPT=()
}

# nginx took the configuration on disk: that is now the one to go back to.
nginx_took_it() {
    rm -rf "$STAGE/nginx-kept"
    NGINX_KEPT=()
}

# The site is tested with `nginx -t` before nginx is asked to load it; a configuration it refuses
# is taken back (the previous files restored) and the installer stops, nginx still serving the
# previous one. A reload is checked too: nginx refuses some configurations that pass `nginx -t`
# (a limit_req zone given another key) while `nginx -s reload` and `systemctl reload` exit 0;
# the helper waits for the new workers that only a configuration nginx took gets.
reload_nginx() {
    [ -n "$ROOT" ] && return 0
    if [ "$DRY_RUN" = 1 ]; then say "  would check and reload nginx"; return 0; fi
    if ! nginx -t -q 2>"$STAGE/nginx-test.err"; then
        cat "$STAGE/nginx-test.err" >&2
        restore_nginx_files
        die "nginx rejects the new configuration (above: $(grep -m1 -o '\[emerg\].*' "$STAGE/nginx-test.err" || echo 'see nginx -t')); the previous configuration is back in place and nginx was not reloaded"
    fi
    if [ "$INIT" = systemd ]; then
        if systemctl is-active --quiet nginx; then
            [ "$CHANGED_NGINX" = 1 ] && checked_reload systemctl reload nginx
        else
            host_run systemctl start nginx
        fi
    elif [ -f /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
        [ "$CHANGED_NGINX" = 1 ] && checked_reload nginx -s reload
    else
        host_run nginx
        record "started nginx"
    fi
    nginx_took_it
    true
}

# checked_reload COMMAND...: reload nginx and wait until it took the new configuration.
checked_reload() {
    local took
    say "  run: $*"
    if ! took="$(helper nginx-reload --pid-file /run/nginx.pid --error-log "$NGINX_LOG_DIR/error.log" -- "$@")"; then
        restore_nginx_files
        die "the previous nginx configuration is back in place and still served; nothing else was changed by this step. A change nginx takes only on a start (such as a limit_req zone's new key) needs nginx stopped first: stop it, then run this installer again (it starts nginx)"
    fi
    say "  $took"
}

wait_healthy() {
    [ "$DRY_RUN" = 1 ] && return 0
    local where i probe
    if [ -n "$(config_value dashboard.socket)" ]; then
        where="$(config_value dashboard.socket)"
        probe=(--socket "$where")
    else
        where="127.0.0.1:$(config_value dashboard.port)"
        probe=(--port "$(config_value dashboard.port)")
    fi
    for i in $(seq 100); do
        if helper healthz "${probe[@]}" 2>/dev/null; then
            say "  dashboard answers on $where"
            return 0
        fi
        sleep 0.2
    done
    : "$i"
    warn "the dashboard does not answer on $where yet; see the logs below"
}

# --------------------------------------------------------------------------------------
# Step 9: record and summary
# --------------------------------------------------------------------------------------

write_record() {
    local old="" line
    [ -f "$(at "$RECORD")" ] && old="$(cat "$(at "$RECORD")")"
    {
        [ -n "$old" ] && printf '%s\n' "$old"
        for line in "${RECORD_LINES[@]}"; do printf '%s\n' "$line"; done
        echo "file $RECORD"
    } | awk '!seen[$0]++' | awk -v hub="fleet-hub $FLEET_PORT $FLEET_ADDRESS" '$1 != "fleet-hub" || $0 == hub' |
        awk -v keep="agent-user $AGENT_USER" -v keep2="agent-user-explicit $AGENT_USER" '($1 != "agent-user" || $0 == keep) && ($1 != "agent-user-explicit" || $0 == keep2)' >"$STAGE/install-record"
    if [ "$DRY_RUN" = 1 ]; then return 0; fi
    place_file "$STAGE/install-record" "$RECORD" 0644 root root >/dev/null || true
}

print_summary() {
    if [ "$AGENT_ONLY" = 1 ]; then
        step "Done"
        [ "$DRY_RUN" = 1 ] && { say "  dry run: $CHANGES change(s) would be made; nothing was changed"; return 0; }
        say "  a managed server: the agent and its uplink (no dashboard, no nginx, no inbound port)"
        say "  Config:        $CONFIG (root:$CONFIG_GROUP 0640; $UPLINK_USER cannot read it)"
        say "  Fleet:         fm-agent --config $CONFIG fleet status; files in $FLEET_DIR"
        if [ "$INIT" = daemons ]; then
            say "  Logs:          $LOG_DIR/fm-agent.log, $LOG_DIR/fm-uplink.log (supervised: started again after a crash)"
            say "  Stop:          sudo kill -- -\$(cat $RUN_DIR/fm-agent.pid) -\$(cat $RUN_DIR/fm-uplink.pid)"
        else
            say "  Logs:          journalctl -u fm-agent -u fm-uplink"
        fi
        say "  Uninstall:     sudo $PREFIX/uninstall.sh"
        return 0
    fi
    local names first url
    names="$(server_names)"
    first="${DOMAIN:-${names%% *}}"
    url="https://$first$([ "$HTTPS_PORT" = 443 ] || echo ":$HTTPS_PORT")/"
    step "Done"
    if [ "$DRY_RUN" = 1 ]; then
        say "  dry run: $CHANGES change(s) would be made; nothing was changed"
        return 0
    fi
    if [ "$CHANGES" = 0 ]; then say "  nothing changed (already installed and up to date)"; else say "  $CHANGES change(s) made"; fi
    [ -n "$ROOT" ] && say "  files written under $ROOT; users, services, firewall and packages were left alone"
    say ""
    say "  Dashboard:     $url  ($CERT_NOTE)"
    [ -n "$DOMAIN" ] || say "                 also as https://<any of: $names>$([ "$HTTPS_PORT" = 443 ] || echo ":$HTTPS_PORT")/"
    if [ -n "$ADMIN_PASSWORD" ]; then
        say "  Login:         $ADMIN_USER"
        say "  Password:      $ADMIN_PASSWORD"
        say "                 (shown this once; only its bcrypt hash is stored)"
        say "                 two-factor enrollment (an authenticator app) follows at first sign-in"
    fi
    say "  Config:        $CONFIG (secrets; root:$CONFIG_GROUP 0640)"
    say "  Backups:       $BACKUPS_DIR"
    case "$INIT" in
        systemd)
            say "  Logs:          journalctl -u fm-agent -u fm-dashboard; $NGINX_LOG_DIR/fm-dashboard-{access,error}.log"
            say "  Restart:       sudo systemctl restart fm-agent fm-dashboard"
            ;;
        daemons)
            say "  Logs:          $LOG_DIR/fm-agent.log, $LOG_DIR/fm-dashboard.log (10 MB each, 5 rotated kept), $NGINX_LOG_DIR/fm-dashboard-{access,error}.log"
            say "  Supervised:    a crashed agent or dashboard is started again (after 1 s, doubling up to 60 s)"
            say "  Stop:          sudo kill -- -\$(cat $RUN_DIR/fm-agent.pid) -\$(cat $RUN_DIR/fm-dashboard.pid); sudo nginx -s quit"
            say "  Start again:   sudo $PREFIX/install.sh   (starts whatever is not running; also after a reboot)"
            ;;
    esac
    say "  Uninstall:     sudo $PREFIX/uninstall.sh   (keeps config and backups; --purge removes them)"
    if [ "$(config_value schedule_count)" = 0 ]; then
        say "  Schedules:     none in $CONFIG: add backup schedules at ${url}scheduler"
    fi
    if [ "${#NOTES[@]}" -gt 0 ]; then
        say ""
        say "  Please note:"
        local line
        for line in "${NOTES[@]}"; do say "  - $line"; done
    fi
    [ "$UPGRADE" = 1 ] || return 0
    say ""
    say "  Upgraded from an earlier version (docs/security.md and docs/install.md, \"Upgrading\"):"
    say "  - the agent and the dashboard listen on Unix sockets ($(sockets))"
    say "    that only the dashboard (group $CONFIG_GROUP) and nginx (group $WEB_GROUP) can open,"
    say "    unless the config sets another TCP address or port"
    say "  - the agent keeps running as $AGENT_USER (recorded now; FM_AGENT_USER=<user> changes it)"
    say "  - nginx buffers request bodies, allows only GET/HEAD on /download/ and 20 requests per address"
    say "  - existing schedules, users, sessions and backups are kept; no schedules were added"
}

# --------------------------------------------------------------------------------------
# Uninstall
# --------------------------------------------------------------------------------------

# remove_path PATH: a file, link or whole directory of the target tree (printed in --dry-run).
remove_path() {
    local target
    target="$(at "$1")"
    [ -e "$target" ] || [ -L "$target" ] || return 0
    if [ "$DRY_RUN" = 1 ]; then say "  would remove $1"; return 0; fi
    rm -rf -- "$target"
    say "  removed $1"
}

# --purge deletes every backup: say how many and how big, and go on only after "purge" is typed
# (or --yes). Asked before anything is removed, so a "no" leaves the install as it was.
confirm_purge() {
    local dir count size answer=""
    dir="$(at "$BACKUPS_DIR")"
    count=0
    size="0 bytes"
    if [ -d "$dir" ]; then
        count="$(find "$dir" -type f | wc -l)"
        size="$(du -sh "$dir" 2>/dev/null | cut -f1)"
    fi
    say "  --purge deletes $CONF_DIR (config, certificate, secrets) and $BACKUPS_DIR:"
    say "  $count backup file(s), $size in all, safety backups before restores included"
    [ "$DRY_RUN" = 1 ] && return 0
    [ "$ASSUME_YES" = 1 ] && return 0
    printf '  Type "purge" to delete them: '
    read -r answer || true
    [ "$answer" = purge ] ||
        die "nothing was removed: --purge needs \"purge\" typed (or --yes); without --purge the config and backups are kept"
}

uninstall() {
    step "Uninstalling fmappliance"
    if [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then die "run as root: sudo $0 --uninstall"; fi
    local record_file kind path extra group runtime_dirs=()
    [ "$PURGE" = 1 ] && confirm_purge
    # The sockets' directories the installer made (read now: the helper goes with $PREFIX).
    if helper config-values "$(at "$CONFIG")" >"$STAGE/config-values" 2>"$STAGE/config-values.err"; then
        for path in "$(config_value agent.runtime_dir)" "$(config_value dashboard.runtime_dir)"; do
            [ -z "$path" ] || runtime_dirs+=("$path")
        done
    else
        warn "could not read $CONFIG ($(head -n1 "$STAGE/config-values.err")): the sockets' directories under /run stay"
    fi
    record_file="$(at "$RECORD")"
    if [ -z "$ROOT" ]; then
        if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v systemctl >/dev/null; then
            host_run systemctl disable --now fm-dashboard.service fm-agent.service || true
            if [ -f "$(at "$UNIT_DIR/fm-uplink.service")" ]; then
                host_run systemctl disable --now fm-uplink.service || true
            fi
            if [ -f "$(at "$UNIT_DIR/fm-dashboard-hub.socket")" ]; then
                host_run systemctl disable --now fm-dashboard-hub.socket || true
            fi
        else
            stop_daemon fm-uplink
            stop_daemon fm-dashboard
            stop_daemon fm-agent
        fi
    else
        say "  skipped (--root): stopping fm-agent and fm-dashboard"
    fi
    if [ -f "$record_file" ]; then
        while read -r kind path extra; do
            case "$kind" in
                file)
                    case "$path" in "$CONF_DIR"/*|"$BACKUPS_DIR"/*) continue ;; esac
                    remove_path "$path"
                    ;;
                restore-link)
                    if [ ! -e "$(at "$path")" ]; then
                        tree_run ln -s "$extra" "$(at "$path")"
                        if [ "$DRY_RUN" = 0 ]; then say "  restored $path"; fi
                    fi
                    ;;
                member) host_run gpasswd -d "$path" "$extra" || true ;;
                user) host_run userdel "$path" || true ;;
                group) ;;  # the config may still need it: removed with --purge below
                started) NGINX_STARTED=1 ;;
            esac
        done < <(tac "$record_file")  # undo in reverse order: memberships before their users
    else
        warn "no install record at $RECORD: removing the known paths only"
    fi
    for path in "$UNIT_DIR/fm-agent.service" "$UNIT_DIR/fm-dashboard.service" \
        "$NGINX_DIR/sites-enabled/fm-dashboard.conf" "$NGINX_DIR/sites-available/fm-dashboard.conf" \
        "$NGINX_DIR/snippets/fm-security-headers.conf" "$NGINX_DIR/snippets/fm-tls.conf" "$PROXY_SECRET_INCLUDE"; do
        remove_path "$path"
    done
    for path in "$PREFIX" "$STATE_DIR" "$ACME_DIR" "$LOG_DIR" "$RUN_DIR" "$CACHE_DIR/fm-agent" "$CACHE_DIR/fm-dashboard" "$CACHE_DIR/fm-supervise" \
        "$CACHE_DIR/fm-uplink" ${runtime_dirs[@]+"${runtime_dirs[@]}"}; do
        remove_path "$path"
    done
    if [ -z "$ROOT" ]; then
        command -v systemctl >/dev/null && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && host_run systemctl daemon-reload
        if [ "$NGINX_STARTED" = 1 ]; then
            host_run nginx -s quit || true  # the installer started it: leave it as it found it
        elif command -v nginx >/dev/null && nginx -t -q 2>/dev/null; then
            if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then host_run systemctl reload nginx || true
            else host_run nginx -s reload || true; fi
        fi
    fi
    if [ "$PURGE" = 1 ]; then
        for path in "$CONF_DIR" "$BACKUPS_DIR"; do
            remove_path "$path"
        done
        for group in "$CONFIG_GROUP" "$WEB_GROUP" "$UPLINK_GROUP"; do
            if group_exists "$group"; then host_run groupdel "$group" || true; fi
        done
    else
        say "  kept $CONF_DIR (config, certificate) and $BACKUPS_DIR (backups); --purge removes them"
    fi
    say "  UFW rules were left as they are (ufw status numbered; ufw delete N)"
    [ "$DRY_RUN" = 1 ] && say "  dry run: nothing was changed"
    true
}

# --------------------------------------------------------------------------------------

main() {
    parse_args "$@"
    STAGE="$(mktemp -d)"
    trap 'rm -rf "$STAGE"' EXIT
    umask 022
    if [ "$UNINSTALL" = 1 ]; then
        uninstall
        return 0
    fi
    [ "$DRY_RUN" = 1 ] && say "Dry run: showing every change, making none."
    check_system "$@"
    remember_fleet_hub
    build_zipapps
    step "Installing into $PREFIX"
    ensure_dir "$PREFIX" 0755 root root
    install_zipapps
    ensure_restic_package
    choose_users
    write_config
    check_config
    note_config_change
    read_config_values
    check_agent_binaries
    make_directories
    install_units
    join_fleet
    configure_fleet_hub
    [ "$AGENT_ONLY" = 1 ] || install_nginx_site
    configure_firewall
    start_services
    obtain_certificate
    write_record
    print_summary
}

main "$@"
