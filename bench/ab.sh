#!/usr/bin/env bash
# Quick A/B of dcr-gateway (100k CIDRs + geo rule, strict validation, rate limit on) against the
# bare Pingora proxy on POST /oidc/register: the loop used while working on the hot path.
# Not a replacement for bench/run.sh (no nginx/HAProxy, no GET, no latency tables).
#
#   ./bench/ab.sh [ROUNDS=5] [SECONDS=5] [CONNS=16]
#   AB_GW=/path/to/other/dcr-gateway ./bench/ab.sh      # compare another gateway build
#   AB_THREADS=2 ./bench/ab.sh                           # [server] threads of the gateway
#   AB_OHA_RATE=4400 ./bench/ab.sh 1 10                  # then fixed-rate p50/p99 with oha
#   AB_PERF=/tmp/p ./bench/ab.sh 1                       # then perf record both
#
# Prints per round: req/s, CPU µs per request (user+system) and user-space CPU µs per request
# for both, and the medians. On this shared VM req/s and system time move by ±20 % between runs
# (system time is mostly loopback wake-ups, whose cost depends on how idle the other CPU is);
# user CPU per request is the steadier number for comparing code changes.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-5}; SECS=${2:-5}; CONNS=${3:-16}
GW=${AB_GW:-$ROOT/target/release/dcr-gateway}
BARE=${AB_BARE:-$ROOT/target/release/examples/bare_proxy}
PORT=${AB_PORT_BASE:-19080}
HZ=$(getconf CLK_TCK)
for t in nginx wrk taskset; do command -v $t >/dev/null || { echo "ab.sh needs $t (make bench installs it)" >&2; exit 1; }; done
[[ -x $GW && -x $BARE ]] || (cd "$ROOT" && cargo build --release --bin dcr-gateway --example bare_proxy --example bench_fixtures)
W=$(mktemp -d /tmp/dcr-ab.XXXXXX); PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"' EXIT
"$ROOT/target/release/examples/bench_fixtures" "$W/fx" 100000 >/dev/null 2>&1
mkdir -p "$W/up"
cat >"$W/up/nginx.conf" <<NGX
worker_processes 1; pid $W/up/nginx.pid; error_log $W/up/error.log warn;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path $W/up; proxy_temp_path $W/up;
  keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$((PORT + 1)) backlog=4096; default_type application/json;
    location = /oidc/register { return 201 '{"client_id":"bench","client_secret":"x"}'; }
    location / { return 200 '{"ok":true}'; } } }
NGX
taskset -c 1 nginx -e "$W/up/error.log" -p "$W/up" -c "$W/up/nginx.conf" -g 'daemon off;' & PIDS+=($!)
cp "$W/fx/rules-100000.json" "$W/rules.json"; cp "$W/fx/country.mmdb" "$W/country.mmdb"
# shellcheck source=bench/gateway-config.sh
source "$ROOT/bench/gateway-config.sh"
gateway_toml "$W" $((PORT + 2)) $((PORT + 3)) $((PORT + 1)) "${AB_THREADS:-1}" true 128 0 >"$W/gateway.toml"
taskset -c 0 "$GW" run -c "$W/gateway.toml" >"$W/gw.log" 2>&1 & GWPID=$!; PIDS+=($GWPID)
taskset -c 0 "$BARE" "127.0.0.1:$((PORT + 4))" "127.0.0.1:$((PORT + 1))" 1 >"$W/bare.log" 2>&1 & BAREPID=$!; PIDS+=($BAREPID)
for u in "http://127.0.0.1:$((PORT + 3))/readyz" "http://127.0.0.1:$((PORT + 4))/"; do
  for _ in $(seq 300); do curl -sf -o /dev/null "$u" && break; sleep 0.1; done
done
ticks() { cut -d')' -f2 "/proc/$1/stat" | awk '{print $12 + $13}'; }
utime() { cut -d')' -f2 "/proc/$1/stat" | awk '{print $12}'; }
run() { # port pid → "rps cpu_us_per_req user_cpu_us_per_req"
  local t0 u0 t1 u1 out; t0=$(ticks "$2"); u0=$(utime "$2")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$ROOT/bench/post.lua" "http://127.0.0.1:$1/oidc/register")
  t1=$(ticks "$2"); u1=$(utime "$2")
  grep -q 'Non-2xx' <<<"$out" && { echo "non-2xx answers on port $1" >&2; exit 1; }
  awk -v dt=$((t1 - t0)) -v du=$((u1 - u0)) -v hz="$HZ" '/requests in/ { n = $1 } /Requests\/sec/ { r = $2 } END { printf "%.0f %.1f %.1f\n", r, 1e6 * dt / hz / n, 1e6 * du / hz / n }' <<<"$out"
}
printf '%-6s %9s %8s %10s %9s %8s %10s %7s %7s %7s\n' round gw_rps gw_us gw_user bare_rps bare_us bare_user rps× cpu× user×
for i in $(seq "$ROUNDS"); do
  read -r gr gu gi < <(run $((PORT + 2)) $GWPID); read -r br bu bi < <(run $((PORT + 4)) $BAREPID)
  awk -v i="$i" -v gr="$gr" -v gu="$gu" -v gi="$gi" -v br="$br" -v bu="$bu" -v bi="$bi" \
    'BEGIN { printf "%-6s %9s %8s %10s %9s %8s %10s %7.3f %7.3f %7.3f\n", i, gr, gu, gi, br, bu, bi, gr / br, gu / bu, (bi > 0 ? gi / bi : 0) }'
done | tee "$W/rows"
med() { awk -v k="$1" '{ print $k }' "$W/rows" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "median: gateway $(med 2) req/s, $(med 3) µs/req, $(med 4) user µs/req; bare $(med 5) req/s, $(med 6) µs/req, $(med 7) user µs/req"
echo "median gateway/bare: throughput $(med 8)×, CPU per request $(med 9)×, user CPU per request $(med 10)×"
if [[ -n ${AB_OHA_RATE:-} ]]; then # fixed-rate tail latency (oha), gateway then bare
  for who in gateway:$((PORT + 2)) bare:$((PORT + 4)); do
    oha_out=$(taskset -c 1 oha --no-tui -z "${SECS}s" -c "$CONNS" -q "$AB_OHA_RATE" --latency-correction -m POST \
      -H 'content-type: application/json' -D "$ROOT/bench/body.json" --output-format json "http://127.0.0.1:${who#*:}/oidc/register")
    echo "${who%%:*} at $AB_OHA_RATE req/s: $(jq -r '"p50 \(.latencyPercentiles.p50 * 1000 | . * 1000 | round / 1000) ms, p99 \(.latencyPercentiles.p99 * 1000 | . * 1000 | round / 1000) ms, max \(.summary.slowest * 1000 | . * 1000 | round / 1000) ms"' <<<"$oha_out")"
  done
fi
if [[ -n ${AB_PERF:-} ]]; then # perf profile of both under the same load, flat (self) and with call graphs
  for who in gw:$GWPID:$((PORT + 2)) bare:$BAREPID:$((PORT + 4)); do
    IFS=: read -r n p port <<<"$who"
    perf record -q -g --call-graph dwarf,16384 -F 499 -p "$p" -o "$AB_PERF.$n" -- sleep "$SECS" 2>/dev/null & perfpid=$!
    run "$port" "$p" >/dev/null; wait $perfpid
  done
  echo "perf data: $AB_PERF.gw $AB_PERF.bare"
fi
