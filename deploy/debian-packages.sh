#!/usr/bin/env bash
# Installs the named Debian packages that are missing (e.g. kcat for the tests, clickhouse-server
# for the server-path tests, chromium for the dashboard's browser test). Needs root, as on CI;
# elsewhere it says what to install.
#
#   bash deploy/debian-packages.sh kcat clickhouse-server clickhouse-client
#   bash deploy/debian-packages.sh chromium
set -euo pipefail

missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "debian-packages.sh: missing packages: ${missing[*]} — run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "debian-packages.sh: installing ${missing[*]}" >&2
# Non-interactive: CI has no stdin. A package's postinst may try to start a system service;
# without an init system that is a harmless no-op, and Flywheel never uses those services.
# Without recommends: every package Flywheel needs is named here, and chromium's recommends
# (through GTK) would pull systemd, udev, avahi, CUPS helpers and perl — 129 packages instead of
# 24, and upgrades of the base system's systemd and perl on the way.
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
