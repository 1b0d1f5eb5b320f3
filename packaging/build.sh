#!/usr/bin/env bash
# Build the two zipapps, reproducibly: dist/fm-agent.pyz and dist/fm-dashboard.pyz.
#
# Usage: PYTHON=.venv/bin/python packaging/build.sh        (what `make build` runs)
#
# Environment:
#   PYTHON             interpreter with pip, setuptools, wheel and shiv (default: python3);
#                      packaging/build-requirements.lock pins exactly these, with hashes
#                      (install.sh builds in a throwaway venv made from it).
#                      The runtime dependencies come from packaging/requirements.lock
#                      (exact versions with sha256 hashes; pip refuses any other file),
#                      not from whatever that interpreter has installed.
#   DIST_DIR           where the artefacts go (default: <repo>/dist).
#   SOURCE_DATE_EPOCH  timestamp written into every archive (default: the last commit's
#                      time, or 1700000000 outside a git checkout). Same sources + same
#                      toolchain + same epoch = byte-identical zipapps.
#
# Output (in DIST_DIR):
#   fm-agent.pyz, fm-dashboard.pyz                  the names the installer and tests use
#   fm-agent-<ver>-<py>-<arch>-<libc>.pyz (and dashboard)  the same bytes, named for the
#                      platform: bcrypt and PyYAML are compiled, so a zipapp only runs on
#                      the CPU architecture, libc and Python minor version it was built for
#   SHA256SUMS         checksums of all of the above
#
# How it stays reproducible: the project wheel is built from a clean copy of the sources
# (no checkout path, no stray files, normalised modes), every dependency is pinned to an
# exact version with its hashes (packaging/requirements.lock) and installed from local
# wheels only (--no-index, --require-hashes), console scripts
# (whose shebangs embed the build interpreter's path) are dropped, and shiv writes every
# zip entry with SOURCE_DATE_EPOCH.
#
# At run time a shiv zipapp extracts its site-packages once into $SHIV_ROOT (default
# ~/.shiv); the systemd units point SHIV_ROOT at their CacheDirectory.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# The runtime dependencies pinned into the zipapps, with hashes (made by pip-compile from
# packaging/requirements.in, which follows pyproject.toml's dependencies).
LOCK="$ROOT/packaging/requirements.lock"
PYTHON="${PYTHON:-python3}"
DIST_DIR="${DIST_DIR:-$ROOT/dist}"
WORK=""

log() { printf 'build: %s\n' "$*" >&2; }
die() { printf 'build: error: %s\n' "$*" >&2; exit 1; }

cleanup() { [ -n "$WORK" ] && rm -rf "$WORK"; }

check_tools() {
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null ||
        die "$PYTHON is not Python >= 3.11"
    local mod
    for mod in pip setuptools wheel shiv; do
        "$PYTHON" -c "import $mod" 2>/dev/null ||
            die "$PYTHON lacks $mod (run: $PYTHON -m pip install --require-hashes --no-deps -r packaging/build-requirements.lock)"
    done
}

choose_epoch() {
    if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
        SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || true)"
        SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
    fi
    export SOURCE_DATE_EPOCH
    log "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
}

# A clean copy of exactly the files the wheel needs, with normalised modes, so neither the
# checkout's path nor its untracked clutter nor its umask can leak into the wheel.
copy_sources() {
    local src="$WORK/src"
    mkdir -p "$src"
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- \
            pyproject.toml README.md LICENSE fmappliance assets |
            while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
            tar --null -T - -cf -) | tar -xf - -C "$src"
    else
        (cd "$ROOT" && tar --exclude=__pycache__ -cf - pyproject.toml README.md LICENSE fmappliance assets) |
            tar -xf - -C "$src"
    fi
    find "$src" -type d -exec chmod 0755 {} +
    find "$src" -type f -exec chmod 0644 {} +
}

build_wheels() {
    local wheels="$WORK/wheels"
    mkdir -p "$wheels"
    log "building the project wheel"
    (cd "$WORK/src" && "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir -w "$wheels" .)
    log "fetching the locked wheels: $(grep -o '^[A-Za-z0-9_.-]*==[^ ]*' "$LOCK" | tr '\n' ' ')"
    "$PYTHON" -m pip wheel -q --no-deps --prefer-binary --require-hashes -w "$wheels" -r "$LOCK"
    # The project's own wheel joins the lock with its hash, so one --require-hashes install
    # takes everything.
    local project
    project="$(ls "$wheels"/fmappliance-*.whl)"
    { cat "$LOCK"; printf 'fmappliance==%s --hash=sha256:%s\n' "$(project_version)" \
        "$(sha256sum "$project" | cut -d' ' -f1)"; } >"$WORK/requirements.txt"
}

project_version() {
    "$PYTHON" -c 'import runpy,sys; print(runpy.run_path(sys.argv[1])["__version__"])' \
        "$WORK/src/fmappliance/version.py"
}

# Install project + pins from the local wheels only, with no pip configuration from the
# environment (extra indexes, find-links) that could make another machine pick other files.
stage_site_packages() {
    local site="$WORK/site"
    log "staging site-packages"
    env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
        "$PYTHON" -m pip install -q --no-index --find-links "$WORK/wheels" --no-compile --require-hashes \
        --no-deps --no-warn-script-location --target "$site" -r "$WORK/requirements.txt"
    # Console scripts carry the build interpreter's path in their shebang: not reproducible,
    # and the zipapps have their own entry points.
    rm -rf "${site:?}/bin"
    sed -i '/^\.\.\/\.\.\/bin\//d' "$site"/*.dist-info/RECORD
    find "$site" -name __pycache__ -prune -exec rm -rf {} +
    [ -f "$site/fmappliance/assets/static/htmx.min.js" ] ||
        die "assets (templates/static) are missing from the staged package"
}

build_zipapp() {
    local name="$1" entry="$2" module="${2%%:*}"
    [ -f "$WORK/site/${module//.//}.py" ] ||
        die "entry module $module is missing from the sources: cannot build $name"
    log "building $name.pyz ($entry)"
    "$PYTHON" -m shiv --site-packages "$WORK/site" --reproducible --compressed \
        -p '/usr/bin/env python3' -e "$entry" -o "$WORK/out/$name.pyz" >/dev/null
}

# e.g. cp311-x86_64-glibc: what the compiled wheels inside tie the zipapp to.
platform_tag() {
    "$PYTHON" -c 'import platform,sys; lib=platform.libc_ver()[0] or "musl"; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}-{lib}")'
}

publish() {
    local tag name
    tag="$(platform_tag)"
    mkdir -p "$DIST_DIR"
    for name in fm-agent fm-dashboard; do
        cp "$WORK/out/$name.pyz" "$WORK/out/$name-$VERSION-$tag.pyz"
    done
    (cd "$WORK/out" && sha256sum -- *.pyz >SHA256SUMS)
    for name in "$WORK"/out/*; do
        install -m 0644 "$name" "$DIST_DIR/$(basename "$name")"
    done
    chmod 0755 "$DIST_DIR"/*.pyz
    log "wrote to $DIST_DIR:"
    sed 's/^/  /' "$DIST_DIR/SHA256SUMS" >&2
}

main() {
    umask 022
    check_tools
    choose_epoch
    WORK="$(mktemp -d)"
    trap cleanup EXIT
    mkdir -p "$WORK/out"
    copy_sources
    VERSION="$(project_version)"
    build_wheels
    stage_site_packages
    build_zipapp fm-agent fmappliance.agent.__main__:main
    build_zipapp fm-dashboard fmappliance.dashboard.__main__:main
    publish
}

main "$@"
