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
#   AB_REF=/path/to/older/dcr-gateway ./bench/ab.sh      # two gateway builds instead of bare
#   AB_WORKLOAD=blocked AB_REF=... ./bench/ab.sh         # post (default), get or blocked (403)
#   AB_WORKLOAD=registry ./bench/ab.sh                   # registry on (gw) vs off (ref), same build
#
# Columns: `gw` is AB_GW, `bare` is bare Pingora or, with AB_REF, that gateway build (same
# configuration and pinning). The blocked flood (bench/flood.lua) needs AB_REF: bare Pingora
# blocks nothing. The registry workload runs AB_GW with `[registry] enabled` (embedded SQLite,
# its defaults: records every registration, de-duplicates public clients) against AB_REF (by
# default the same binary) with it off, on registrations made unique per request
# (bench/post_unique.lua) so each is recorded and none is a duplicate; the upstream issues a
# fresh client_id per registration ($request_id) for every workload.
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
REF=${AB_REF:-}
WORKLOAD=${AB_WORKLOAD:-post}
case $WORKLOAD in
  post) SCRIPT=$ROOT/bench/post.lua; TARGET=/oidc/register; WANT=2xx ;;
  get) SCRIPT=; TARGET='/authorize?client_id=bench&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A33418%2Foauth%2Fcallback&scope=openid'; WANT=2xx ;; # run.sh's GET_PATH
  blocked) SCRIPT=$ROOT/bench/flood.lua; TARGET=/oidc/register; WANT=403
    [[ -n $REF ]] || { echo "AB_WORKLOAD=blocked needs AB_REF (another gateway build): bare Pingora blocks nothing" >&2; exit 2; } ;;
  registry) SCRIPT=$ROOT/bench/post_unique.lua; TARGET=/oidc/register; WANT=2xx; REF=${REF:-$GW} ;;
  *) echo "AB_WORKLOAD: post, get, blocked or registry" >&2; exit 2 ;;
esac
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
    location = /oidc/register { return 201 '{"client_id":"\$request_id","client_secret":"x"}'; }
    location / { return 200 '{"ok":true}'; } } }
NGX
taskset -c 1 nginx -e "$W/up/error.log" -p "$W/up" -c "$W/up/nginx.conf" -g 'daemon off;' & PIDS+=($!)
cp "$W/fx/rules-100000.json" "$W/rules.json"; cp "$W/fx/country.mmdb" "$W/country.mmdb"
# shellcheck source=bench/gateway-config.sh
source "$ROOT/bench/gateway-config.sh"
gateway_toml "$W" $((PORT + 2)) $((PORT + 3)) $((PORT + 1)) "${AB_THREADS:-1}" true 128 0 >"$W/gateway.toml"
if [[ $WORKLOAD == registry ]]; then
  echo "k1:$(head -c 32 /dev/urandom | base64 -w0)" >"$W/registry.keys"
  printf '\n[registry]\nenabled = true\npath = "%s"\nkey_file = "%s"\n' "$W/registry.db" "$W/registry.keys" >>"$W/gateway.toml"
fi
taskset -c 0 "$GW" run -c "$W/gateway.toml" >"$W/gw.log" 2>&1 & GWPID=$!; PIDS+=($GWPID)
if [[ -n $REF ]]; then # the reference gateway: same configuration on its own ports and directory
  mkdir -p "$W/ref"; cp "$W/rules.json" "$W/country.mmdb" "$W/ref/"
  gateway_toml "$W/ref" $((PORT + 4)) $((PORT + 5)) $((PORT + 1)) "${AB_THREADS:-1}" true 128 0 >"$W/ref/gateway.toml"
  taskset -c 0 "$REF" run -c "$W/ref/gateway.toml" >"$W/bare.log" 2>&1 & BAREPID=$!; PIDS+=($BAREPID)
  REF_READY="http://127.0.0.1:$((PORT + 5))/readyz"
else
  taskset -c 0 "$BARE" "127.0.0.1:$((PORT + 4))" "127.0.0.1:$((PORT + 1))" 1 >"$W/bare.log" 2>&1 & BAREPID=$!; PIDS+=($BAREPID)
  REF_READY="http://127.0.0.1:$((PORT + 4))/"
fi
for u in "http://127.0.0.1:$((PORT + 3))/readyz" "$REF_READY"; do
  for _ in $(seq 300); do curl -sf -o /dev/null "$u" && break; sleep 0.1; done
done
ticks() { cut -d')' -f2 "/proc/$1/stat" | awk '{print $12 + $13}'; }
utime() { cut -d')' -f2 "/proc/$1/stat" | awk '{print $12}'; }
run() { # port pid → "rps cpu_us_per_req user_cpu_us_per_req"
  local t0 u0 t1 u1 out; t0=$(ticks "$2"); u0=$(utime "$2")
  out=$(AB_TAG="$1-$(date +%s%N)" taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" ${SCRIPT:+-s "$SCRIPT"} "http://127.0.0.1:$1$TARGET")
  t1=$(ticks "$2"); u1=$(utime "$2")
  if [[ $WANT == 2xx ]]; then
    grep -q 'Non-2xx' <<<"$out" && { echo "non-2xx answers on port $1" >&2; exit 1; }
  else # every answer a refusal: wrk counts them all as non-2xx
    awk '/requests in/ { n = $1 } /Non-2xx/ { b = $NF } END { exit !(n > 0 && b == n) }' <<<"$out" \
      || { echo "answers other than refusals on port $1" >&2; exit 1; }
  fi
  awk -v dt=$((t1 - t0)) -v du=$((u1 - u0)) -v hz="$HZ" '/requests in/ { n = $1 } /Requests\/sec/ { r = $2 } END { printf "%.0f %.1f %.1f\n", r, 1e6 * dt / hz / n, 1e6 * du / hz / n }' <<<"$out"
}
R=bare; [[ -n $REF ]] && R=ref
echo "workload: $WORKLOAD; gw = $GW; $R = ${REF:-$BARE}"
printf '%-6s %9s %8s %10s %9s %8s %10s %7s %7s %7s\n' round gw_rps gw_us gw_user ${R}_rps ${R}_us ${R}_user rps× cpu× user×
for i in $(seq "$ROUNDS"); do
  read -r gr gu gi < <(run $((PORT + 2)) $GWPID); read -r br bu bi < <(run $((PORT + 4)) $BAREPID)
  awk -v i="$i" -v gr="$gr" -v gu="$gu" -v gi="$gi" -v br="$br" -v bu="$bu" -v bi="$bi" \
    'BEGIN { printf "%-6s %9s %8s %10s %9s %8s %10s %7.3f %7.3f %7.3f\n", i, gr, gu, gi, br, bu, bi, gr / br, gu / bu, (bi > 0 ? gi / bi : 0) }'
done | tee "$W/rows"
med() { awk -v k="$1" '{ print $k }' "$W/rows" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "median: gateway $(med 2) req/s, $(med 3) µs/req, $(med 4) user µs/req; $R $(med 5) req/s, $(med 6) µs/req, $(med 7) user µs/req"
echo "median gateway/$R: throughput $(med 8)×, CPU per request $(med 9)×, user CPU per request $(med 10)×"
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
