#!/usr/bin/env bash
# Start a throw-away Glewlwyd (Debian package glewlwyd 2.7.x) configured as the tests configure
# it (tests/support/glewlwyd.rs, README.md in this directory): SQLite database in a temp dir,
# OpenID Connect plugin `oidc` with open dynamic registration and RFC 7592 management, a test
# user. Runs in the foreground; Ctrl-C stops it and removes the directory.
#
#   deploy/glewlwyd/setup.sh [PORT]        (default 4593)
#
# Then, e.g., the gateway in front of it:
#   [upstream] origins = ["http://127.0.0.1:4593"]
#              profile = "glewlwyd"   (conf/profiles/glewlwyd.toml, docs/idps.md)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${1:-4593}"
base="http://127.0.0.1:$port"
user="${GLEWLWYD_TEST_USER:-alice}"
user_password="${GLEWLWYD_TEST_PASSWORD:-alice-password-1}"

command -v glewlwyd >/dev/null || { echo "glewlwyd not installed: run scripts/prereqs.sh" >&2; exit 1; }
work="$(mktemp -d)"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# 1. Database: the package's schema and default data (admin / password).
sql=/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz
if [ -f "$sql" ]; then gzip -dc "$sql"; else cat /usr/share/dbconfig-common/data/glewlwyd/install/sqlite3; fi \
  | sqlite3 -batch "$work/glewlwyd.db"

# 2. Configuration from the template; external_url is Glewlwyd's own address.
sed -e "s|@PORT@|$port|" -e "s|@EXTERNAL_URL@|$base|" -e "s|@DB_PATH@|$work/glewlwyd.db|" \
  "$here/glewlwyd.conf.in" >"$work/glewlwyd.conf"

# 3. Start and wait for GET /config.
glewlwyd --config-file="$work/glewlwyd.conf" >"$work/glewlwyd.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  curl -fsS "$base/config" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/glewlwyd.log" >&2; exit 1; }
  sleep 0.1
done

# 4. Administrator session (POST /api/auth, cookie GLEWLWYD2_SESSION_ID).
jar="$work/cookies"
curl -fsS -c "$jar" -H 'content-type: application/json' \
  -d '{"username":"admin","password":"password"}' "$base/api/auth/" >/dev/null

# 5. OIDC plugin instance (POST /api/mod/plugin/): oidc-plugin.json with issuer and a fresh
#    RS256 key pair filled in.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/key.pem" 2>/dev/null
openssl pkey -in "$work/key.pem" -pubout -out "$work/pub.pem"
python3 - "$here/oidc-plugin.json" "$base/api/oidc" "$work/key.pem" "$work/pub.pem" >"$work/plugin.json" <<'PY'
import json, sys
plugin = json.load(open(sys.argv[1]))
p = plugin["parameters"]
p["iss"], p["key"], p["cert"] = sys.argv[2], open(sys.argv[3]).read(), open(sys.argv[4]).read()
print(json.dumps(plugin))
PY
curl -fsS -b "$jar" -H 'content-type: application/json' -d @"$work/plugin.json" "$base/api/mod/plugin/" >/dev/null

# 6. Test user (POST /api/user/) with the scopes openid and g_profile.
curl -fsS -b "$jar" -H 'content-type: application/json' \
  -d "{\"username\":\"$user\",\"password\":\"$user_password\",\"name\":\"$user\",\"email\":\"$user@example.com\",\"enabled\":true,\"scope\":[\"openid\",\"g_profile\"]}" \
  "$base/api/user/" >/dev/null

echo "Glewlwyd at $base (admin/password, $user/$user_password)"
echo "discovery: $base/api/oidc/.well-known/openid-configuration"
echo "log: $work/glewlwyd.log — Ctrl-C to stop"
wait "$pid"
