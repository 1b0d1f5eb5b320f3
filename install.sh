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
#   1. checks: root, OS, python3 >= 3.11; warns when docker or fm is missing
#   2. zipapps: builds dist/fm-agent.pyz and dist/fm-dashboard.pyz when dist/ has none,
#      installs them in /opt/fmappliance (sha256-checked against dist/SHA256SUMS)
#   3. users: the agent runs as the owner of the Frappe Manager home it finds (else a
#      dedicated "fm-agent" user in the docker group); the dashboard runs as
#      "fm-dashboard", NOT in the docker group; both read the config via group "fmappliance"
#   4. /etc/fmappliance/config.yaml, generated on first install only (never overwritten):
#      random token and secret key, an admin password printed once and stored only as a
#      bcrypt hash, stacks discovered from FM homes and frappe_docker-like compose projects.
#      State in /var/lib/fmappliance, backups in /var/backups/fmappliance (0750, agent's)
#   5. systemd units fm-agent.service and fm-dashboard.service (hardened)
#   6. nginx site with TLS (certbot with --domain/--email, else a self-signed certificate)
#   7. UFW: allow OpenSSH, HTTP and HTTPS; deny the dashboard and agent ports; enable
#   8. starts everything (without systemd as PID 1: as plain daemons, see the summary)
#   9. prints the URL, the admin password (first install only), where things are
#
# Options:
#   --dry-run           print every change without making it
#   --uninstall         remove what the installer installed; keeps the config
#                       (/etc/fmappliance) and the backups (/var/backups/fmappliance)
#   --purge             with --uninstall: remove the config and the backups as well
#   --root DIR          write every file under DIR instead of /, change nothing else on
#                       this host (no users, services, firewall, packages): for packagers
#                       and tests; the skipped steps are reported
#   --domain NAME       the dashboard's DNS name; with --email, get a Let's Encrypt
#                       certificate with certbot (HTTP-01 on port 80)
#   --email ADDRESS     contact address for Let's Encrypt
#   --http-port N       HTTP port nginx listens on (default 80)
#   --https-port N      HTTPS port nginx listens on (default 443)
#   --download-mode M   first install only: how backups are downloaded (dashboard.download_mode):
#                       "accel" (default: the dashboard authorises, nginx sends the file itself,
#                       about 4x faster; nginx's user gets read access to the backups through an
#                       ACL, which the installer keeps in step with the config; falls back to
#                       stream when setfacl cannot be installed) or "stream" (bytes go agent ->
#                       dashboard -> nginx; nginx never reads the backups)
#   -h, --help          this text
#
# Environment:
#   FM_AGENT_USER        user the agent runs as (default: the owner of the FM home found,
#                        else "fm-agent", created as a system user in the docker group)
#   FM_DASHBOARD_USER    user the dashboard runs as (default "fm-dashboard")
#   FM_ADMIN_USER        dashboard login created on first install (default "admin")
#   FM_SERVER_NAMES      names/addresses nginx answers to (default: --domain, else this
#                        host's name, FQDN, addresses and localhost); others get 444
#   FM_DIST_DIR          where the zipapps are taken from (default: dist/ beside this script)
#   FM_SEARCH_HOMES      where to look for Frappe Manager homes (default "/home/* /root",
#                        plus $FRAPPE_MANAGER_HOME when set): <dir>/frappe/sites/*/docker-compose.yml
#   FRAPPE_MANAGER_HOME  an FM home to add to the discovered stacks
#   FM_DOCKER            docker command used to discover compose projects (default docker)
#   FM_ALLOW_UNSUPPORTED_OS=1  go on on an OS that is not listed above
#   PYTHON               interpreter that builds the zipapps when dist/ has none (needs pip,
#                        setuptools, wheel, shiv; default: `make build` with its own venv)
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
ROOT=""
DOMAIN=""
EMAIL=""
HTTP_PORT=80
HTTPS_PORT=443
DOWNLOAD_MODE=""   # accel unless --download-mode says otherwise (see choose_download_mode)

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
RECORD=$PREFIX/install-record

AGENT_USER=""
AGENT_GROUP=""
AGENT_HOME=""
DASHBOARD_USER="${FM_DASHBOARD_USER:-fm-dashboard}"
ADMIN_USER="${FM_ADMIN_USER:-admin}"
ADMIN_PASSWORD=""
DIST_DIR="${FM_DIST_DIR:-$SCRIPT_DIR/dist}"
# Run as /opt/fmappliance/install.sh (repair, start again): the installed zipapps are the dist.
if [ -z "${FM_DIST_DIR:-}" ] && [ ! -f "$DIST_DIR/fm-agent.pyz" ] && [ -f "$SCRIPT_DIR/fm-agent.pyz" ]; then
    DIST_DIR="$SCRIPT_DIR"
fi
FOUND_FM_HOMES=()
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
    "$PY" - "$@" <<'EOF'
import re, sys
template, out, tags, *pairs = sys.argv[1:]
on = set(tags.split())
values = dict(p.split("=", 1) for p in pairs)
lines = []
for line in open(template, encoding="utf-8").read().splitlines():
    m = re.match(r"#@([A-Z0-9,]+) ", line)
    if m:
        if not set(m.group(1).split(",")) <= on:
            continue
        line = line[m.end():]
    lines.append(line)
text = "\n".join(lines) + "\n"
def fill(m):
    if m.group(1) not in values:
        sys.exit(f"install.sh: {template}: no value for @{m.group(1)}@")
    return values[m.group(1)]
text = re.sub(r"@([A-Z0-9_]+)@", fill, text)
open(out, "w", encoding="utf-8").write(text)
EOF
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
    local pyz config
    pyz="$(pyz_path fm-agent)"
    config="$(at "$CONFIG")"
    [ -f "$config" ] || config="$STAGE/config.yaml"
    PYTHONPATH="${pyz:+$pyz/site-packages}" "$PY" - "$config" >"$STAGE/config-values" <<'EOF'
import sys
try:
    import yaml
    data = yaml.safe_load(open(sys.argv[1], encoding="utf-8")) or {}
except (ImportError, OSError):
    data = {}  # a dry run before anything is built or generated: the defaults
defaults = {"agent.port": 9100, "dashboard.port": 8000, "dashboard.listen": "127.0.0.1",
            "agent.listen": "127.0.0.1", "backups.base_path": "/var/backups/fmappliance",
            "dashboard.accel_prefix": "/_protected_backups/", "dashboard.download_mode": "stream"}
for key, default in defaults.items():
    section, name = key.split(".")
    print(key, (data.get(section) or {}).get(name, default))
# Who may scrape /metrics through nginx: addresses and networks only (the config check refuses others).
import ipaddress
allowed = []
for entry in (data.get("dashboard") or {}).get("metrics_allow") or []:
    try:
        ipaddress.ip_network(str(entry), strict=False)
    except ValueError:
        continue
    allowed.append(str(entry))
print("dashboard.metrics_allow", " ".join(allowed))
# Where the agent must write: backups, each FM home, each compose project dir.
paths = [(data.get("backups") or {}).get("base_path") or defaults["backups.base_path"]]
for stack in (data.get("stacks") or {}).values():
    p = str(stack.get("path", ""))
    if stack.get("type") == "fm":
        p = p.rstrip("/").rsplit("/sites/", 1)[0]
    if p and p not in paths:
        paths.append(p)
print("rw_paths", " ".join("-" + p for p in paths))
EOF
}

config_value() { awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print; exit }' "$STAGE/config-values"; }

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
            --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift ;;
            --root=*) ROOT="${1#--root=}" ;;
            --domain) [ $# -ge 2 ] || die "--domain needs a name"; DOMAIN="$2"; shift ;;
            --email) [ $# -ge 2 ] || die "--email needs an address"; EMAIL="$2"; shift ;;
            --http-port) [ $# -ge 2 ] || die "--http-port needs a number"; HTTP_PORT="$2"; shift ;;
            --https-port) [ $# -ge 2 ] || die "--https-port needs a number"; HTTPS_PORT="$2"; shift ;;
            --download-mode) [ $# -ge 2 ] || die "--download-mode needs stream or accel"; DOWNLOAD_MODE="$2"; shift ;;
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
    command -v docker >/dev/null || warn "docker is not installed: the agent cannot operate stacks until it is"
    command -v fm >/dev/null || [ -n "$(fm_binary)" ] || say "  fm (Frappe Manager) not found: fm stacks will not work until it is installed"
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

fm_binary() {
    local candidate
    command -v fm 2>/dev/null && return 0
    for candidate in /home/*/.local/bin/fm /root/.local/bin/fm /usr/local/bin/fm; do
        [ -x "$candidate" ] && { printf '%s\n' "$candidate"; return 0; }
    done
    return 0
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
    if [ "$DRY_RUN" = 1 ]; then say "  would run: make build"; return 0; fi
    if [ -f "$SCRIPT_DIR/Makefile" ] && command -v make >/dev/null && [ -z "${FM_DIST_DIR:-}" ]; then
        make -C "$SCRIPT_DIR" PYTHON="${PYTHON:-$PY}" build
    else
        DIST_DIR="$DIST_DIR" PYTHON="${PYTHON:-$PY}" bash "$SCRIPT_DIR/packaging/build.sh"
    fi
}

install_zipapps() {
    local name sum expected
    for name in fm-agent fm-dashboard; do
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
    # The installer itself and its templates, so that $PREFIX/install.sh can repair, start
    # again and uninstall without the checkout.
    place_file "$SCRIPT_DIR/install.sh" "$PREFIX/install.sh" 0755 root root || true
    local template
    for template in systemd/fm-agent.service systemd/fm-dashboard.service nginx/fm-dashboard.conf \
        nginx/fm-security-headers.conf nginx/fm-tls.conf; do
        place_file "$SCRIPT_DIR/packaging/$template" "$PREFIX/packaging/$template" 0644 root root || true
    done
    printf '#!/bin/sh\n# Remove fmappliance (keeps config and backups unless --purge).\nexec %s/install.sh --uninstall "$@"\n' \
        "$PREFIX" >"$STAGE/uninstall.sh"
    place_file "$STAGE/uninstall.sh" "$PREFIX/uninstall.sh" 0755 root root || true
}

# --------------------------------------------------------------------------------------
# Step 3: users
# --------------------------------------------------------------------------------------

find_fm_homes() {
    local base candidate
    local search="${FM_SEARCH_HOMES:-/home/* /root}"
    FOUND_FM_HOMES=()
    if [ -n "${FRAPPE_MANAGER_HOME:-}" ] && [ -d "$FRAPPE_MANAGER_HOME/sites" ]; then
        FOUND_FM_HOMES+=("$FRAPPE_MANAGER_HOME")
    fi
    # shellcheck disable=SC2086  # the search list is a glob on purpose
    for base in $search; do
        candidate="$base/frappe"
        [ -d "$candidate/sites" ] || continue
        compgen -G "$candidate/sites/*/docker-compose.yml" >/dev/null || continue
        case " ${FOUND_FM_HOMES[*]} " in *" $candidate "*) continue ;; esac
        FOUND_FM_HOMES+=("$candidate")
    done
}

choose_users() {
    step "Users"
    find_fm_homes
    if [ -n "${FM_AGENT_USER:-}" ]; then
        AGENT_USER="$FM_AGENT_USER"
        say "  agent user: $AGENT_USER (FM_AGENT_USER)"
    elif [ "${#FOUND_FM_HOMES[@]}" -gt 0 ]; then
        AGENT_USER="$(stat -c %U "${FOUND_FM_HOMES[0]}")"
        say "  agent user: $AGENT_USER (owner of the FM home ${FOUND_FM_HOMES[0]})"
        [ "$AGENT_USER" != UNKNOWN ] || die "${FOUND_FM_HOMES[0]} belongs to no known user: set FM_AGENT_USER"
    else
        AGENT_USER="fm-agent"
        say "  agent user: fm-agent (no FM home found)"
    fi
    [ "$AGENT_USER" != "$DASHBOARD_USER" ] || die "the agent and the dashboard must run as different users"
    if user_exists "$AGENT_USER"; then
        AGENT_GROUP="$(id -gn "$AGENT_USER")"
        AGENT_HOME="$(getent passwd "$AGENT_USER" | cut -d: -f6)"
    else
        AGENT_GROUP="$AGENT_USER"
        AGENT_HOME="$STATE_DIR/agent"
    fi
    if [ "$AGENT_USER" = fm-agent ]; then AGENT_HOME="$STATE_DIR/agent"; fi
    say "  dashboard user: $DASHBOARD_USER (not in the docker group)"
    if [ -n "$ROOT" ]; then
        say "  skipped (--root): creating users $AGENT_USER, $DASHBOARD_USER and group $CONFIG_GROUP"
        return 0
    fi
    create_group "$CONFIG_GROUP"
    if ! user_exists "$AGENT_USER"; then
        host_run useradd --system --user-group --home-dir "$STATE_DIR/agent" --no-create-home \
            --shell /usr/sbin/nologin --comment "fmappliance agent" "$AGENT_USER"
        record "user $AGENT_USER"
        CHANGES=$((CHANGES + 1))
    fi
    if group_exists docker; then
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
    if id -nG "$DASHBOARD_USER" 2>/dev/null | tr ' ' '\n' | grep -qx docker; then
        warn "$DASHBOARD_USER was in the docker group: removing it"
        host_run gpasswd -d "$DASHBOARD_USER" docker
    fi
    if [ "$DRY_RUN" = 0 ]; then
        AGENT_GROUP="$(id -gn "$AGENT_USER")"
    fi
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
    ensure_dir "$CONF_DIR" 0750 root "$CONFIG_GROUP"
    if [ -f "$(at "$CONFIG")" ]; then
        set_owner_mode "$(at "$CONFIG")" 0640 root "$CONFIG_GROUP"
        say "  kept $CONFIG (never overwritten; edit it, then: sudo $0)"
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
}

# Discovered stacks as YAML lines under "stacks:".
discover_stacks() {
    local docker_cmd="${FM_DOCKER:-docker}" compose_json=""
    if command -v "$docker_cmd" >/dev/null 2>&1; then
        compose_json="$(timeout 20 "$docker_cmd" compose ls --all --format json 2>/dev/null || true)"
    fi
    COMPOSE_JSON="$compose_json" "$PY" - "${FOUND_FM_HOMES[@]}" <<'EOF'
import glob, json, os, re, sys

stacks = {}
homes = sys.argv[1:]
name_ok = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

def add(name, entry):
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-.")[:63] or "stack"
    base, n = name, 2
    while name in stacks:
        name = f"{base[:60]}-{n}"; n += 1
    if name_ok.match(name):
        stacks[name] = entry

for home in homes:
    for compose in sorted(glob.glob(os.path.join(home, "sites", "*", "docker-compose.yml"))):
        bench = os.path.dirname(compose)
        add(os.path.basename(bench), {"type": "fm", "path": bench})

def looks_like_frappe_docker(files):
    text = ""
    for f in files:
        try:
            text += open(f, encoding="utf-8", errors="replace").read()
        except OSError:
            return False
    has_services = re.search(r"^\s+backend:", text, re.M) and re.search(r"^\s+frontend:", text, re.M)
    return bool(has_services or re.search(r"image:\s*\S*frappe/(erpnext|frappe)", text))

try:
    projects = json.loads(os.environ.get("COMPOSE_JSON") or "[]")
except ValueError:
    projects = []
for project in projects if isinstance(projects, list) else []:
    files = [f for f in str(project.get("ConfigFiles", "")).split(",") if f]
    if not files or any(f.startswith(tuple(h.rstrip("/") + "/" for h in homes)) for f in files):
        continue  # an fm bench is a compose project too: it is listed above
    if not looks_like_frappe_docker(files):
        continue
    path = os.path.dirname(files[0])
    entry = {"type": "compose", "path": path, "project": project.get("Name")}
    rel = [os.path.relpath(f, path) for f in files]
    if rel != ["compose.yaml"] and rel != ["docker-compose.yml"]:
        entry["files"] = rel
    add(project.get("Name") or os.path.basename(path), entry)

for name, entry in stacks.items():
    print(f"  {json.dumps(name)}:")
    for key, value in entry.items():
        print(f"    {key}: {json.dumps(value)}")
EOF
}

generate_config() {
    local out="$1" token secret hash stacks fm pyz
    token="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(36))')"
    secret="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(36))')"
    ADMIN_PASSWORD="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(15))')"
    pyz="$(pyz_path fm-dashboard)"
    if [ -z "$pyz" ] && [ "$DRY_RUN" = 1 ]; then
        hash='(bcrypt hash made by fm-dashboard.pyz hash-password)'
    else
        # The password goes in on stdin, never on a command line.
        hash="$(printf '%s\n' "$ADMIN_PASSWORD" | SHIV_ROOT="$STAGE/shiv" "$PY" "$pyz" hash-password)" ||
            die "could not hash the admin password with $pyz hash-password"
        [[ "$hash" == \$2* ]] || die "hash-password printed no bcrypt hash"
    fi
    stacks="$(discover_stacks)"
    fm="$(fm_binary)"
    choose_download_mode
    umask 077
    {
        echo "# fmappliance configuration, generated by install.sh on $(date -u +%Y-%m-%d)."
        echo "# Every key is documented in /opt/fmappliance/README.md; the installer never overwrites"
        echo "# this file. After editing: sudo systemctl restart fm-agent fm-dashboard"
        echo "agent:"
        echo "  listen: 127.0.0.1"
        echo "  port: 9100"
        echo "  state_dir: $STATE_DIR/agent"
        [ -n "$fm" ] && echo "  fm_binary: $fm"
        echo "security:"
        echo "  token: \"$token\""
        if [ -n "$stacks" ]; then
            echo "stacks:"
            printf '%s\n' "$stacks"
        else
            echo "# No stacks found: add them here (see README), e.g."
            echo "#   prod: {type: compose, path: /opt/frappe_docker}"
            echo "stacks: {}"
        fi
        echo "backups:"
        echo "  base_path: $BACKUPS_DIR"
        echo "dashboard:"
        echo "  listen: 127.0.0.1"
        echo "  port: 8000"
        echo "  state_dir: $STATE_DIR/dashboard"
        echo "  secret_key: \"$secret\""
        echo "  agent_url: http://127.0.0.1:9100"
        echo "  trusted_proxy: 127.0.0.1"
        echo "  # stream: the dashboard relays downloads; accel: nginx sends them (X-Accel-Redirect)"
        echo "  download_mode: $DOWNLOAD_MODE"
        echo "  credentials:"
        echo "    $ADMIN_USER: \"$hash\""
    } >"$out"
    umask 022
    local n
    n="$(printf '%s' "$stacks" | grep -c '^  [^ ]' || true)"
    say "  discovered $n stack(s)${FOUND_FM_HOMES[0]:+ (FM homes: ${FOUND_FM_HOMES[*]})}"
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
    ensure_dir "$STATE_DIR/dashboard" 0750 "$DASHBOARD_USER" "$DASHBOARD_USER"
    ensure_dir "$ACME_DIR" 0755 root root
    ensure_dir "$BACKUPS_DIR" 0750 "$owner" "$group"
    grant_nginx_backup_access
    if [ "$INIT" = daemons ]; then
        ensure_dir "$LOG_DIR" 0750 root "$CONFIG_GROUP"
        ensure_dir "$CACHE_DIR/fm-agent" 0700 "$owner" "$group"
        ensure_dir "$CACHE_DIR/fm-dashboard" 0700 "$DASHBOARD_USER" "$DASHBOARD_USER"
    fi
}

# accel needs setfacl (package acl) to let nginx read the backups; without it, stream.
choose_download_mode() {
    [ -n "$DOWNLOAD_MODE" ] && return 0
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
    web_user="$(awk '$1 == "user" { sub(/;$/, "", $2); print $2; exit }' /etc/nginx/nginx.conf 2>/dev/null || true)"
    web_user="${web_user:-www-data}"
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
    elif command -v getfacl >/dev/null && getfacl -p "$dir" 2>/dev/null | grep -q "user:$web_user:"; then
        host_run setfacl -R -x "u:$web_user,d:u:$web_user" "$dir" || true
        CHANGES=$((CHANGES + 1))
        say "  download_mode stream: removed $web_user's read access to $dir"
    fi
}

# --------------------------------------------------------------------------------------
# Step 5: systemd units
# --------------------------------------------------------------------------------------

install_units() {
    step "systemd units"
    local groups="$CONFIG_GROUP" rw
    group_exists docker && groups="$CONFIG_GROUP docker"
    rw="$(config_value rw_paths)"
    [ -n "$AGENT_HOME" ] && [ "$AGENT_HOME" != "$STATE_DIR/agent" ] && rw="$rw -$AGENT_HOME"
    render "$SCRIPT_DIR/packaging/systemd/fm-agent.service" "$STAGE/fm-agent.service" "" \
        PREFIX="$PREFIX" CONFIG="$CONFIG" PYTHON="$PY" AGENT_USER="$AGENT_USER" AGENT_GROUP="$AGENT_GROUP" \
        AGENT_GROUPS="$groups" AGENT_HOME="$AGENT_HOME" AGENT_RW_PATHS="$rw"
    render "$SCRIPT_DIR/packaging/systemd/fm-dashboard.service" "$STAGE/fm-dashboard.service" "" \
        PREFIX="$PREFIX" CONFIG="$CONFIG" PYTHON="$PY" DASHBOARD_USER="$DASHBOARD_USER" CONFIG_GROUP="$CONFIG_GROUP"
    if place_file "$STAGE/fm-agent.service" "$UNIT_DIR/fm-agent.service" 0644 root root; then
        CHANGED_AGENT=1; CHANGED_UNITS=1
    fi
    if place_file "$STAGE/fm-dashboard.service" "$UNIT_DIR/fm-dashboard.service" 0644 root root; then
        CHANGED_DASHBOARD=1; CHANGED_UNITS=1
    fi
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
        { hostname 2>/dev/null; hostname -f 2>/dev/null; hostname -I 2>/dev/null | tr ' ' '\n' | grep -v ':'; echo localhost; } |
            awk 'NF && !seen[$0]++' | tr '\n' ' ' | sed 's/ $//'
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
        if [[ "$name" =~ ^[0-9.]+$ ]]; then san="$san,IP:$name"; else san="$san,DNS:$name"; fi
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

install_nginx_site() {
    step "nginx"
    ensure_nginx_package
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
    render "$SCRIPT_DIR/packaging/nginx/fm-dashboard.conf" "$STAGE/fm-dashboard.conf" "$tags" \
        DASHBOARD_UPSTREAM="$upstream" HTTP_PORT="$HTTP_PORT" HTTPS_PORT="$HTTPS_PORT" \
        HTTPS_PORT_SUFFIX="$suffix" SERVER_NAMES="$names" LOG_DIR="$NGINX_LOG_DIR" \
        SNIPPETS_DIR="$NGINX_DIR/snippets" CERT="$CERT" KEY="$KEY" \
        TLS_DEFAULT="$([ -n "$DOMAIN" ] || echo default_server)" ACME_DIR="$ACME_DIR" \
        ACCEL_PREFIX="$(config_value dashboard.accel_prefix)" \
        BACKUPS_DIR="$(config_value backups.base_path)" KNOWN_HOSTS_MAP="${known%$'\n'}" \
        METRICS_ALLOW="${allow%$'\n'}"
    for snippet in fm-security-headers.conf fm-tls.conf; do
        if place_file "$SCRIPT_DIR/packaging/nginx/$snippet" "$NGINX_DIR/snippets/$snippet" 0644 root root; then
            CHANGED_NGINX=1
        fi
    done
    if place_file "$STAGE/fm-dashboard.conf" "$NGINX_DIR/sites-available/fm-dashboard.conf" 0644 root root; then
        CHANGED_NGINX=1
    fi
    if ensure_link "$NGINX_DIR/sites-available/fm-dashboard.conf" "$NGINX_DIR/sites-enabled/fm-dashboard.conf"; then
        CHANGED_NGINX=1
    fi
    # Debian's stock site is also the default server on port 80: two defaults cannot coexist.
    if [ "$HTTP_PORT" = 80 ] && [ -L "$(at "$NGINX_DIR/sites-enabled/default")" ]; then
        CHANGES=$((CHANGES + 1)); CHANGED_NGINX=1
        record "restore-link $NGINX_DIR/sites-enabled/default $(readlink "$(at "$NGINX_DIR/sites-enabled/default")")"
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
    host_run ufw allow "$HTTP_PORT/tcp"
    host_run ufw allow "$HTTPS_PORT/tcp"
    host_run ufw deny "$(config_value dashboard.port)/tcp"
    host_run ufw deny "$(config_value agent.port)/tcp"
    host_run ufw --force enable || warn "ufw could not be enabled; go on without it"
}

# --------------------------------------------------------------------------------------
# Step 8: services
# --------------------------------------------------------------------------------------

start_services() {
    step "Services"
    case "$INIT" in
        none)
            say "  skipped (--root): systemctl enable --now fm-agent fm-dashboard; nginx reload"
            ;;
        systemd)
            if [ "$CHANGED_UNITS" = 1 ]; then host_run systemctl daemon-reload; fi
            host_run systemctl enable fm-agent.service fm-dashboard.service nginx.service
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
    local name="$1" user="$2" changed="$3"
    if daemon_pid "$name" >/dev/null; then
        if [ "$changed" = 0 ]; then
            say "  $name unchanged and running (pid $(daemon_pid "$name")): not restarted"
            return 0
        fi
        stop_daemon "$name"
    fi
    if [ "$DRY_RUN" = 1 ]; then say "  would start $name as $user"; return 0; fi
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    # setsid: its own session and process group, so stop_daemon can end the whole tree;
    # setpriv execs (no lingering parent): the pid file holds the service itself.
    setsid setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups --inh-caps=-all -- \
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$(getent passwd "$user" | cut -d: -f6)" LANG=C.UTF-8 \
        SHIV_ROOT="$CACHE_DIR/$name" "$PY" "$PREFIX/$name.pyz" --config "$CONFIG" \
        </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
    echo $! >"$RUN_DIR/$name.pid"
    say "  started $name as $user (pid $!, log $LOG_DIR/$name.log)"
}

reload_nginx() {
    [ -n "$ROOT" ] && return 0
    if [ "$DRY_RUN" = 1 ]; then say "  would check and reload nginx"; return 0; fi
    if ! nginx -t -q; then
        die "nginx rejects its configuration (above); the dashboard site is $NGINX_DIR/sites-available/fm-dashboard.conf"
    fi
    if [ "$INIT" = systemd ]; then
        if systemctl is-active --quiet nginx; then
            [ "$CHANGED_NGINX" = 1 ] && host_run systemctl reload nginx
        else
            host_run systemctl start nginx
        fi
    elif [ -f /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
        [ "$CHANGED_NGINX" = 1 ] && host_run nginx -s reload
    else
        host_run nginx
        record "started nginx"
    fi
    true
}

wait_healthy() {
    [ "$DRY_RUN" = 1 ] && return 0
    local port i
    port="$(config_value dashboard.port)"
    for i in $(seq 100); do
        if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
            "http://127.0.0.1:$port/healthz" 2>/dev/null; then
            say "  dashboard answers on 127.0.0.1:$port"
            return 0
        fi
        sleep 0.2
    done
    : "$i"
    warn "the dashboard does not answer on 127.0.0.1:$port yet; see the logs below"
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
    } | awk '!seen[$0]++' >"$STAGE/install-record"
    if [ "$DRY_RUN" = 1 ]; then return 0; fi
    place_file "$STAGE/install-record" "$RECORD" 0644 root root >/dev/null || true
}

print_summary() {
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
            say "  Logs:          $LOG_DIR/fm-agent.log, $LOG_DIR/fm-dashboard.log, $NGINX_LOG_DIR/fm-dashboard-{access,error}.log"
            say "  Stop:          sudo kill -- -\$(cat $RUN_DIR/fm-agent.pid) -\$(cat $RUN_DIR/fm-dashboard.pid); sudo nginx -s quit"
            say "  Start again:   sudo $PREFIX/install.sh   (starts whatever is not running)"
            ;;
    esac
    say "  Uninstall:     sudo $PREFIX/uninstall.sh   (keeps config and backups; --purge removes them)"
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

uninstall() {
    step "Uninstalling fmappliance"
    if [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then die "run as root: sudo $0 --uninstall"; fi
    local record_file kind path extra
    record_file="$(at "$RECORD")"
    if [ -z "$ROOT" ]; then
        if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v systemctl >/dev/null; then
            host_run systemctl disable --now fm-dashboard.service fm-agent.service || true
        else
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
        "$NGINX_DIR/snippets/fm-security-headers.conf" "$NGINX_DIR/snippets/fm-tls.conf"; do
        remove_path "$path"
    done
    for path in "$PREFIX" "$STATE_DIR" "$ACME_DIR" "$LOG_DIR" "$RUN_DIR" "$CACHE_DIR/fm-agent" "$CACHE_DIR/fm-dashboard"; do
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
        if group_exists "$CONFIG_GROUP"; then host_run groupdel "$CONFIG_GROUP" || true; fi
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
    build_zipapps
    step "Installing into $PREFIX"
    ensure_dir "$PREFIX" 0755 root root
    install_zipapps
    choose_users
    write_config
    check_config
    note_config_change
    read_config_values
    make_directories
    install_units
    install_nginx_site
    configure_firewall
    start_services
    obtain_certificate
    write_record
    print_summary
}

main "$@"
