#!/usr/bin/env bash
# `make run`: the demo IdP on 127.0.0.1:3000 and the gateway on 127.0.0.1:8080, in the
# foreground. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${DCR_GATEWAY_BIN:-${CARGO_TARGET_DIR:-target}/release/dcr-gateway}
CONF=${DCR_GATEWAY_CONFIG:-conf/gateway.toml}
IDP_PID=""
GW_PID=""

cleanup() {
  trap - EXIT INT TERM
  [ -n "$GW_PID" ] && kill -TERM "$GW_PID" 2>/dev/null || true
  [ -n "$IDP_PID" ] && kill -TERM "$IDP_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_port() { # host port what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: $3 did not start listening on $1:$2" >&2
  exit 1
}

"$BIN" check -c "$CONF"

HOST=127.0.0.1 PORT=3000 ISSUER=http://127.0.0.1:8080 node deploy/demo-idp/server.mjs &
IDP_PID=$!
wait_port 127.0.0.1 3000 "the demo IdP"

"$BIN" run -c "$CONF" &
GW_PID=$!
wait_port 127.0.0.1 8080 "dcr-gateway"

cat <<'MSG'

dcr-gateway is listening on http://127.0.0.1:8080 in front of the demo IdP (127.0.0.1:3000).
Metrics, health: http://127.0.0.1:9464/metrics  /healthz  /readyz

Register a client through the gateway:

  curl -sS -X POST http://127.0.0.1:8080/oidc/register \
    -H 'content-type: application/json' \
    -d '{"client_name":"My MCP Client","redirect_uris":["http://127.0.0.1:8976/callback"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"]}'

Discovery through the gateway: curl -sS http://127.0.0.1:8080/.well-known/openid-configuration
Press Ctrl-C to stop both.
MSG

wait "$GW_PID"
