#!/bin/sh
# Install the Debian packages the test suite drives for real, when they are missing.
# Needs root (CI and the developer machines run as root); elsewhere it says what to install.
set -eu

need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need="$need nginx"
command -v shellcheck >/dev/null 2>&1 || need="$need shellcheck"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
command -v curl >/dev/null 2>&1 || need="$need curl"  # the nginx download benchmark
command -v gpg >/dev/null 2>&1 || need="$need gnupg"  # encrypted backups: the doubles encrypt, the agent verifies
command -v restic >/dev/null 2>&1 || need="$need restic"  # offsite copies: the tests run the real restic

[ -z "$need" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    cat >&2 <<EOF
make test drives these programs for real and they are missing:$need
Only root can install them. Run, then start make test again:

    sudo apt-get install -y$need

(make check needs only shellcheck.)
EOF
    exit 1
fi
echo "installing Debian packages:$need" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
