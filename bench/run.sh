#!/usr/bin/env bash
# End-to-end throughput/latency benchmark of dcr-gateway against the upstream itself, nginx,
# HAProxy and a bare Pingora proxy (issues 7 and 17). Writes docs/benchmarks.md. See
# bench/README.md.
#
#   ./bench/run.sh                  # or: make bench
#   BENCH_DURATION=10s BENCH_REPEAT=3 BENCH_CONNS="16 128" ./bench/run.sh
#   BENCH_WORKLOADS="blocked limited" BENCH_WORKERS=1 BENCH_TUNING=0 BENCH_PROFILE=0 ./bench/run.sh
#
# Knobs (environment):
#   BENCH_DURATION   seconds per measurement (default 5s)
#   BENCH_REPEAT     repetitions; the tables show the median (default 2)
#   BENCH_CONNS      wrk connection counts at one worker (default "16 128"); at W workers each
#                    count is multiplied by W and wrk gets min(W, load CPUs) threads
#   BENCH_WORKLOADS  any of post get blocked limited (default all four): POST registration,
#                    GET pass-through, blocked flood (ACL 403 by User-Agent, bench/flood.lua)
#                    and rate-limited flood (429: one registration per IP per hour)
#   BENCH_WORKERS    worker counts (default "1 4": [server] threads, nginx worker_processes,
#                    HAProxy nbthread, bare Pingora threads); W > 1 runs the big-list gateway,
#                    bare Pingora, nginx-geo and HAProxy with W workers on W CPUs
#   BENCH_PHASES     1 (default): also build dcr-gateway with --features phase-timing and print
#                    the CPU time per request phase (dcr_gateway_phase_cpu_seconds_total)
#   BENCH_BUILD      0: use the release binaries already in target/ (and, for the phase table,
#                    BENCH_GW_PHASES=path of a phase-timing dcr-gateway) instead of building;
#                    BENCH_GW=path measures that dcr-gateway instead of target/'s
#   BENCH_SIZES      gateway ACL sizes (default "10 10000 100000"; the largest is the one
#                    nginx and HAProxy get and the one the targets are checked on)
#   BENCH_FIXED_RATE 1: fixed-rate latency runs with oha (installed with cargo if missing) at
#                    25 % and 50 % of the gateway's one-worker capacity (POST and GET)
#   BENCH_TUNING     1: try the gateway's engine settings (threads, work_stealing, keepalive pool)
#   BENCH_PROFILE    1: perf profile of the gateway and of bare Pingora under POST load
#   BENCH_PORT_BASE  first port (default 18080); ports BASE..BASE+99 are used on 127.0.0.1
#   BENCH_OUT        output file (default docs/benchmarks.md)
#   BENCH_KEEP       1: keep the work directory (configs, logs, raw wrk output, perf data)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-5s}
DURATION=${DURATION%s}
REPEAT=${BENCH_REPEAT:-2}
CONNS=${BENCH_CONNS:-16 128}
WORKLOADS=${BENCH_WORKLOADS:-post get blocked limited}
WORKERS=${BENCH_WORKERS:-1 4}
PHASES=${BENCH_PHASES:-1}
BUILD=${BENCH_BUILD:-1}
for wl in $WORKLOADS; do
    case $wl in post | get | blocked | limited) ;; *) echo "BENCH_WORKLOADS: unknown workload $wl" >&2; exit 2 ;; esac
done
[[ " $WORKERS " == *" 1 "* ]] || WORKERS="1 $WORKERS" # the one-worker runs are the reference
MAXW=$(tr ' ' '\n' <<<"$WORKERS" | sort -n | tail -1)
has_wl() { [[ " $WORKLOADS " == *" $1 "* ]]; }
SIZES=${BENCH_SIZES:-10 10000 100000}
FIXED_RATE=${BENCH_FIXED_RATE:-1}
TUNING=${BENCH_TUNING:-1}
PROFILE=${BENCH_PROFILE:-1}
PORT_BASE=${BENCH_PORT_BASE:-18080}
OUT=${BENCH_OUT:-docs/benchmarks.md}
KEEP=${BENCH_KEEP:-0}
COMMAND="BENCH_DURATION=${DURATION}s BENCH_REPEAT=$REPEAT BENCH_CONNS=\"$CONNS\" ./bench/run.sh"
[[ "$WORKLOADS" == "post get blocked limited" ]] || COMMAND="BENCH_WORKLOADS=\"$WORKLOADS\" $COMMAND"
[[ "$WORKERS" == "1 4" ]] || COMMAND="BENCH_WORKERS=\"$WORKERS\" $COMMAND"
[[ $PHASES == 1 ]] || COMMAND="BENCH_PHASES=0 $COMMAND"
[[ "$SIZES" == "10 10000 100000" ]] || COMMAND="BENCH_SIZES=\"$SIZES\" $COMMAND"
# The report names the exact command: the parts that were switched off too.
for knob in FIXED_RATE TUNING PROFILE; do
    [[ ${!knob} == 1 ]] || COMMAND="BENCH_$knob=0 $COMMAND"
done
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
BIG=$(tr ' ' '\n' <<<"$SIZES" | sort -n | tail -1)
SMALL=$(tr ' ' '\n' <<<"$SIZES" | sort -n | sed -n 1p)
HZ=$(getconf CLK_TCK)

# shellcheck source=bench/gateway-config.sh
source "$ROOT/bench/gateway-config.sh"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# 1. Tools: Debian packages only when missing; oha (fixed-rate latency) with cargo.
need=()
command -v nginx >/dev/null || need+=(nginx)
[[ -e /usr/lib/nginx/modules/ngx_http_geoip2_module.so ]] || need+=(libnginx-mod-http-geoip2)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
if [[ $FIXED_RATE == 1 ]] && ! command -v jq >/dev/null; then need+=(jq); fi
if [[ ${BENCH_PROFILE:-1} == 1 ]] && ! command -v strace >/dev/null; then need+=(strace); fi
if ((${#need[@]})); then
    SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
    log "installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
OHA=$(command -v oha || true)
[[ -z "$OHA" && -x "$HOME/.cargo/bin/oha" ]] && OHA=$HOME/.cargo/bin/oha
if [[ $FIXED_RATE == 1 && -z "$OHA" ]]; then
    log "installing oha (cargo install oha --locked)"
    if cargo install oha --locked >&2; then OHA=$HOME/.cargo/bin/oha; else log "oha unavailable: no fixed-rate runs"; fi
fi
[[ -n "$OHA" ]] || FIXED_RATE=0

# ---------------------------------------------------------------------------------------------
# 2. Build.
if [[ $BUILD == 1 ]]; then
    log "building (cargo build --release --bin dcr-gateway --example bare_proxy --example bench_fixtures)"
    cargo build --release --bin dcr-gateway --example bare_proxy --example bench_fixtures >&2
fi
# BENCH_GW (with BENCH_BUILD=0): a copy of the binary, so that a build meanwhile (a shared
# target/) does not change what is measured.
GW=${BENCH_GW:-$ROOT/target/release/dcr-gateway}
BARE=$ROOT/target/release/examples/bare_proxy

# ---------------------------------------------------------------------------------------------
# 3. Work dir, pinning, cleanup.
W=$(mktemp -d /tmp/dcr-bench.XXXXXX)
chmod 755 "$W"
FX=$W/fixtures
PIDS=()
BG=()
cleanup() {
    local p
    for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then log "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A system with W workers runs on CPUs 0..W-1; the load generator and the upstream on the CPUs
# from MAXW on. With fewer CPUs than MAXW + 1 the SUT CPUs are cut to what is left (noted in
# the report: such a run shows the cost of the workers, not their gain).
NCPU=$(nproc)
if ((NCPU >= 2)); then
    LOAD_FIRST=$((NCPU > MAXW ? MAXW : NCPU - 1))
    LOAD_CPUS=$LOAD_FIRST-$((NCPU - 1))
    LOAD_N=$((NCPU - LOAD_FIRST))
    PIN_LOAD=(taskset -c "$LOAD_CPUS")
    sut_cpus() { local n=$(($1 < LOAD_FIRST ? $1 : LOAD_FIRST)); echo "0-$((n - 1))"; }
    CPU_SUT=$(sut_cpus 1)
    PINNING="a system under test with W workers on CPUs 0..W-1 ($(for w in $WORKERS; do printf '%s worker(s): CPUs %s; ' "$w" "$(sut_cpus "$w")"; done | sed 's/; $//')); wrk/oha and the upstream nginx on CPUs $LOAD_CPUS"
    ((NCPU > MAXW)) || PINNING+=" — **fewer CPUs than $MAXW workers + load: the multi-worker systems share their CPUs (their numbers show overhead, not scaling)**"
else
    LOAD_N=1
    PIN_LOAD=()
    sut_cpus() { echo; }
    PINNING="not pinned (1 CPU)"
fi
# pin_sut W: the taskset prefix for a system with W workers (in PIN_SUT).
pin_sut() {
    local c
    c=$(sut_cpus "$1")
    if [[ -n $c ]]; then PIN_SUT=(taskset -c "$c"); else PIN_SUT=(); fi
}
pin_sut 1
UP_WORKERS=$((MAXW < LOAD_N ? MAXW : LOAD_N))
((UP_WORKERS >= 1)) || UP_WORKERS=1
# wrk threads for a system with W workers.
wrk_threads() { local t=$(($1 < LOAD_N ? $1 : LOAD_N)); echo $((t < 1 ? 1 : t)); }

# ---------------------------------------------------------------------------------------------
# 4. The phase-timing build (a copy; the plain binary is rebuilt after it so target/ keeps it).
GW_PHASES=
if [[ $PHASES == 1 && $BUILD == 0 ]]; then
    GW_PHASES=${BENCH_GW_PHASES:-}
    [[ -n $GW_PHASES && -x $GW_PHASES ]] || { log "BENCH_BUILD=0 without BENCH_GW_PHASES: no phase table"; PHASES=0; }
elif [[ $PHASES == 1 ]]; then
    log "building dcr-gateway with --features phase-timing"
    if cargo build --release --features phase-timing --bin dcr-gateway >&2; then
        cp "$GW" "$W/dcr-gateway-phases"
        GW_PHASES=$W/dcr-gateway-phases
    else
        log "phase-timing build failed: no phase table"
        PHASES=0
    fi
    cargo build --release --bin dcr-gateway >&2
fi

# 4b. Fixtures and the request body.
log "generating fixtures ($SIZES entries) in $FX"
"$ROOT/target/release/examples/bench_fixtures" "$FX" $SIZES >&2
BODY=$ROOT/bench/body.json
"$GW" validate "$BODY" >/dev/null || die "bench/body.json fails strict validation"
grep -qF "$(tr -d '\n' <"$BODY")" "$ROOT/bench/post.lua" || die "bench/post.lua does not carry bench/body.json"
first_cidr=$(sed -n 1p "$FX/haproxy-$BIG.acl")
for probe in "127.0.0.1 allow mcp-bench/1.0" "${first_cidr%/*} block mcp-bench/1.0" "175.45.176.1 block mcp-bench/1.0" \
    "127.0.0.1 block flood-bot/1.0"; do
    set -- $probe
    got=$("$GW" explain --rules "$FX/rules-$BIG.json" --geoip-db "$FX/country.mmdb" --ip "$1" --ua "$3" --scope dcr --json \
        | grep -o '"decision": *"[a-z]*"' | grep -o '[a-z]*"$' | tr -d '"' || true)
    [[ "$got" == "$2" ]] || die "fixture check: $1 ($3) should be $2 under rules-$BIG.json, explain says '$got'"
done
FLOOD_LUA=$ROOT/bench/flood.lua
grep -qF "$(tr -d '\n' <"$BODY")" "$FLOOD_LUA" || die "bench/flood.lua does not carry bench/body.json"

label() { case $1 in 10000) echo 10k ;; 100000) echo 100k ;; *) echo "$1" ;; esac; }
BIGL=$(label "$BIG")
SMALLL=$(label "$SMALL")

# ---------------------------------------------------------------------------------------------
# 5. Systems. Every system has: URL base, the pid whose CPU (with its children) is "the SUT".
# URLL/SUTPIDL: where the same system refuses every registration with 429 (the rate-limited
# flood): a twin gateway with a one-per-hour limit, another listener of the same nginx/HAProxy.
# FLOOD: systems with the blocked-flood rule. WORKERS_OF: worker count.
declare -A URL SUTPID URLL SUTPIDL ADMINL FLOOD WORKERS_OF
ORDER=()
UP_PORT=$((PORT_BASE + 1))
NEXT_PORT=$((PORT_BASE + 50))
port_alloc() { PORT=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 1)); }

wait_http() { # url expected-code what
    for _ in $(seq 300); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" == "$2" ]] && return 0
        sleep 0.2
    done
    die "$3 did not come up ($1)"
}

nginx_temp() { # dir
    local d=$1
    printf 'client_body_temp_path %s/cb; proxy_temp_path %s/px; fastcgi_temp_path %s/fc; uwsgi_temp_path %s/uw; scgi_temp_path %s/sc;\n' "$d" "$d" "$d" "$d" "$d"
}

start_upstream() {
    local d=$W/upstream; mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
worker_processes $UP_WORKERS;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    $(nginx_temp "$d")
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        default_type application/json;
        location = /oidc/register { return 201 '{"client_id":"bench","client_secret":"x"}'; }
        location / { return 200 '{"ok":true}'; }
        location = /_status { stub_status; }
    }
}
EOF
    "${PIN_LOAD[@]}" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" -g 'daemon off;' &
    PIDS+=($!)
    URL[direct]=http://127.0.0.1:$UP_PORT
    SUTPID[direct]=
    wait_http "${URL[direct]}/" 200 "upstream nginx"
}

start_gateway() { # name size port admin threads work_stealing pool audit(0|1) [limited(0|1)] [binary]
    local name=$1 size=$2 port=$3 admin=$4 threads=$5 ws=$6 pool=$7 audit=$8 limited=${9:-0} bin=${10:-$GW}
    local d=$W/$name; mkdir -p "$d"
    cp "$FX/rules-$size.json" "$d/rules.json"
    cp "$FX/country.mmdb" "$d/country.mmdb"
    gateway_toml "$d" "$port" "$admin" "$UP_PORT" "$threads" "$ws" "$pool" "$audit" "$limited" >"$d/gateway.toml"
    "$bin" check -c "$d/gateway.toml" >&2 || die "$name: dcr-gateway check failed"
    pin_sut "${PIN_ONE:-$threads}"
    "${PIN_SUT[@]}" "$bin" run -c "$d/gateway.toml" >"$d/gateway.log" 2>&1 &
    PIDS+=($!)
    SUTPID[$name]=$!
    URL[$name]=http://127.0.0.1:$port
    ADMIN[$name]=http://127.0.0.1:$admin
    WORKERS_OF[$name]=$threads
    FLOOD[$name]=1
    wait_http "${ADMIN[$name]}/readyz" 200 "$name"
    RSS0[$name]=$(grep VmRSS "/proc/${SUTPID[$name]}/status" | awk '{print $2}')
}
declare -A ADMIN RSS0

# limited_twin NAME SIZE THREADS [binary]: the gateway NAME's rate-limited twin.
limited_twin() {
    local name=$1 p a
    port_alloc; p=$PORT; port_alloc; a=$PORT
    start_gateway "$name,limited" "$2" "$p" "$a" "$3" true 128 0 1 "${4:-$GW}"
    URLL[$name]=${URL[$name,limited]}
    SUTPIDL[$name]=${SUTPID[$name,limited]}
    ADMINL[$name]=${ADMIN[$name,limited]}
}

start_nginx() { # name size port variant(deny|geo) [workers]
    local name=$1 size=$2 port=$3 variant=$4 workers=${5:-1} lport
    local d=$W/$name; mkdir -p "$d"
    local acl
    if [[ $variant == deny ]]; then
        acl="include $FX/nginx-deny-$size.conf;
        allow all;"
    else
        acl='if ($blocked_ip) { return 403; }'
    fi
    port_alloc; lport=$PORT
    local proxy="proxy_pass http://idp;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;"
    cat >"$d/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_http_geoip2_module.so;
worker_processes $workers;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    $(nginx_temp "$d")
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    geoip2 $FX/country.mmdb { \$geoip2_country_code default=XX country iso_code; }
    $( [[ $variant == geo ]] && echo "geo \$blocked_ip { default 0; include $FX/nginx-geo-$size.conf; }" )
    limit_req_zone \$binary_remote_addr zone=flood:10m rate=1r/m;
    limit_req_status 429;
    upstream idp {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        $acl
        if (\$geoip2_country_code = KP) { return 403; }
        if (\$http_user_agent ~ "^flood-bot/") { return 403; }
        location / {
            $proxy
        }
    }
    server {
        listen 127.0.0.1:$lport backlog=4096;
        $acl
        if (\$geoip2_country_code = KP) { return 403; }
        if (\$http_user_agent ~ "^flood-bot/") { return 403; }
        location / {
            limit_req zone=flood nodelay;
            $proxy
        }
    }
}
EOF
    nginx -t -q -e "$d/error.log" -p "$d" -c "$d/nginx.conf" -g 'daemon off;' || die "$name: nginx -t failed"
    pin_sut "$workers"
    "${PIN_SUT[@]}" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" -g 'daemon off;' &
    PIDS+=($!)
    SUTPID[$name]=$!
    URL[$name]=http://127.0.0.1:$port
    URLL[$name]=http://127.0.0.1:$lport
    SUTPIDL[$name]=${SUTPID[$name]}
    WORKERS_OF[$name]=$workers
    FLOOD[$name]=1
    wait_http "${URL[$name]}/" 200 "$name"
}

start_haproxy() { # name size port [threads]
    local name=$1 size=$2 port=$3 threads=${4:-1} lport
    local d=$W/$name; mkdir -p "$d"
    port_alloc; lport=$PORT
    local common="acl blocked_ip src -f $FX/haproxy-$size.acl
    http-request deny deny_status 403 if blocked_ip
    http-request deny deny_status 403 if { src,map_ip($FX/haproxy-country.map) -m str KP }
    http-request deny deny_status 403 if { req.hdr(user-agent) -m beg flood-bot/ }"
    local headers="option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-var(txn.rid) uuid
    http-request set-header X-Request-Id %[var(txn.rid)]
    http-response set-header X-Request-Id %[var(txn.rid)]
    default_backend idp"
    cat >"$d/haproxy.cfg" <<EOF
global
    nbthread $threads
    maxconn 8000
    pidfile $d/haproxy.pid
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 60s
    timeout server 15s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$port
    $common
    $headers
frontend fe_limited
    bind 127.0.0.1:$lport
    stick-table type ip size 100k expire 1h store http_req_rate(1h)
    $common
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1 }
    $headers
backend idp
    server s1 127.0.0.1:$UP_PORT
EOF
    haproxy -c -q -f "$d/haproxy.cfg" || die "$name: haproxy -c failed"
    pin_sut "$threads"
    "${PIN_SUT[@]}" haproxy -db -f "$d/haproxy.cfg" >"$d/haproxy.log" 2>&1 &
    PIDS+=($!)
    SUTPID[$name]=$!
    URL[$name]=http://127.0.0.1:$port
    URLL[$name]=http://127.0.0.1:$lport
    SUTPIDL[$name]=${SUTPID[$name]}
    WORKERS_OF[$name]=$threads
    FLOOD[$name]=1
    wait_http "${URL[$name]}/" 200 "$name"
}

start_bare() { # name port threads work_stealing pool
    local name=$1
    pin_sut "$3"
    "${PIN_SUT[@]}" "$BARE" "127.0.0.1:$2" "127.0.0.1:$UP_PORT" "$3" "$4" "$5" >"$W/$name.log" 2>&1 &
    PIDS+=($!)
    SUTPID[$name]=$!
    URL[$name]=http://127.0.0.1:$2
    WORKERS_OF[$name]=$3
    wait_http "${URL[$name]}/" 200 "$name"
}

log "starting the upstream and the systems under test"
start_upstream
WORKERS_OF[direct]=1
ORDER+=(direct)
i=0
for s in $SIZES; do
    start_gateway "gateway-$(label "$s")" "$s" $((PORT_BASE + 10 + i)) $((PORT_BASE + 20 + i)) 1 true 128 0
    ORDER+=("gateway-$(label "$s")")
    i=$((i + 1))
done
start_gateway "gateway-$BIGL+audit" "$BIG" $((PORT_BASE + 14)) $((PORT_BASE + 24)) 1 true 128 1
unset "FLOOD[gateway-$BIGL+audit]"
has_wl limited && limited_twin "gateway-$BIGL" "$BIG" 1
start_nginx "nginx-deny-$BIGL" "$BIG" $((PORT_BASE + 3)) deny
unset "URLL[nginx-deny-$BIGL]"
start_nginx "nginx-geo-$BIGL" "$BIG" $((PORT_BASE + 4)) geo
start_haproxy "haproxy-$BIGL" "$BIG" $((PORT_BASE + 5))
start_bare bare-pingora $((PORT_BASE + 2)) 1 true 128
ORDER+=("nginx-deny-$BIGL" "nginx-geo-$BIGL" "haproxy-$BIGL" bare-pingora)
POST_ONLY=("gateway-$BIGL+audit")
GWBIG=gateway-$BIGL
GWSMALL=gateway-$SMALLL
NGINX_FAST=nginx-geo-$BIGL
NGINX_DENY=nginx-deny-$BIGL
HAP=haproxy-$BIGL

# The same four systems with W workers each: "NAME@Ww".
sysw() { if [[ $2 == 1 ]]; then echo "$1"; else echo "$1@$2w"; fi; }
MULTI=()
for w in $WORKERS; do
    [[ $w == 1 ]] && continue
    port_alloc; gp=$PORT; port_alloc; ga=$PORT
    start_gateway "$(sysw "$GWBIG" "$w")" "$BIG" "$gp" "$ga" "$w" true 128 0
    has_wl limited && limited_twin "$(sysw "$GWBIG" "$w")" "$BIG" "$w"
    port_alloc; start_bare "$(sysw bare-pingora "$w")" "$PORT" "$w" true 128
    port_alloc; start_nginx "$(sysw "$NGINX_FAST" "$w")" "$BIG" "$PORT" geo "$w"
    port_alloc; start_haproxy "$(sysw "$HAP" "$w")" "$BIG" "$PORT" "$w"
    MULTI+=("$(sysw "$GWBIG" "$w")" "$(sysw bare-pingora "$w")" "$(sysw "$NGINX_FAST" "$w")" "$(sysw "$HAP" "$w")")
done

# The phase-timing gateway (and its rate-limited twin): the phase table only.
GWPH=$GWBIG+phases
if [[ $PHASES == 1 ]]; then
    port_alloc; gp=$PORT; port_alloc; ga=$PORT
    start_gateway "$GWPH" "$BIG" "$gp" "$ga" 1 true 128 0 0 "$GW_PHASES"
    has_wl limited && limited_twin "$GWPH" "$BIG" 1 "$GW_PHASES"
fi

GET_PATH='/authorize?client_id=bench&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A33418%2Foauth%2Fcallback&scope=openid'
POST_PATH=/oidc/register

sanity() { # name
    local u=${URL[$1]} code
    code=$(curl -s -o "$W/sanity.out" -w '%{http_code}' -H 'content-type: application/json' -H 'user-agent: mcp-bench/1.0' \
        --data-binary @"$BODY" "$u$POST_PATH")
    [[ $code == 201 ]] && grep -q client_id "$W/sanity.out" || die "$1: POST $POST_PATH answered $code: $(cat "$W/sanity.out")"
    code=$(curl -s -o /dev/null -w '%{http_code}' "$u$GET_PATH")
    [[ $code == 200 ]] || die "$1: GET answered $code"
    if [[ -n ${FLOOD[$1]:-} ]]; then
        code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -H 'user-agent: flood-bot/1.0' \
            --data-binary @"$BODY" "$u$POST_PATH")
        [[ $code == 403 ]] || die "$1: the blocked flood's POST answered $code, not 403"
    fi
    if [[ -n ${URLL[$1]:-} ]]; then
        for _ in 1 2; do
            code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -H 'user-agent: mcp-bench/1.0' \
                --data-binary @"$BODY" "${URLL[$1]}$POST_PATH")
        done
        [[ $code == 429 ]] || die "$1: the second POST to its rate-limited listener answered $code, not 429"
    fi
}
for s in "${ORDER[@]}" "${POST_ONLY[@]}" "${MULTI[@]}"; do sanity "$s"; done
[[ $PHASES == 1 ]] && sanity "$GWPH"

# ---------------------------------------------------------------------------------------------
# 6. Measurement helpers.
cpu_ticks() { # pid → utime+stime of it and its children (nginx: master + worker)
    local p t=0 v
    [[ -z "$1" ]] && { echo 0; return; }
    for p in $1 $(pgrep -P "$1" || true); do
        v=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }

RESULTS=$W/results.tsv
: >"$RESULTS"
RAW=$W/raw
mkdir -p "$RAW"

# supports SYSTEM WORKLOAD: whether the system takes part in the workload.
supports() {
    case $2 in
        post) return 0 ;;
        get) [[ " ${POST_ONLY[*]} " != *" $1 "* ]] ;;
        blocked) [[ -n ${FLOOD[$1]:-} ]] ;;
        limited) [[ -n ${URLL[$1]:-} ]] ;;
    esac
}
# target SYSTEM WORKLOAD → sets T_URL, T_PID, T_ARGS (wrk script).
target() {
    T_PID=${SUTPID[$1]}; T_ARGS=()
    case $2 in
        post) T_URL=${URL[$1]}$POST_PATH; T_ARGS=(-s "$ROOT/bench/post.lua") ;;
        get) T_URL=${URL[$1]}$GET_PATH ;;
        blocked) T_URL=${URL[$1]}$POST_PATH; T_ARGS=(-s "$FLOOD_LUA") ;;
        limited) T_URL=${URLL[$1]}$POST_PATH; T_PID=${SUTPIDL[$1]}; T_ARGS=(-s "$ROOT/bench/post.lua") ;;
    esac
}
wl_title() {
    case $1 in
        post) echo "POST /oidc/register" ;;
        get) echo "GET pass-through" ;;
        blocked) echo "Blocked flood (ACL 403 by User-Agent, POST with body)" ;;
        limited) echo "Rate-limited flood (429, POST with body)" ;;
    esac
}

# wrk_run TAG REP SYSTEM WORKLOAD CONNS DURATION → appends a row to $RESULTS:
# tag rep system workload conns rps p50_ms p99_ms bad_answers sockerr sut_cpu_pct sut_us_per_req
# bad_answers: non-2xx/3xx answers (post, get), or answers that were not refusals (blocked,
# limited: every answer must be a 403/429).
wrk_run() {
    local tag=$1 rep=$2 sys=$3 wl=$4 c=$5 dur=$6 t0 t1 f th
    target "$sys" "$wl"
    th=$(wrk_threads "${WORKERS_OF[$sys]:-1}")
    ((c >= th)) || th=$c
    f=$RAW/$tag-$rep-$sys-$wl-$c.txt
    t0=$(cpu_ticks "$T_PID")
    "${PIN_LOAD[@]}" wrk -t"$th" -c"$c" -d"${dur}s" --timeout 5s --latency "${T_ARGS[@]}" "$T_URL" >"$f" 2>&1 || true
    t1=$(cpu_ticks "$T_PID")
    awk -v tag="$tag" -v rep="$rep" -v sys="$sys" -v wl="$wl" -v c="$c" -v dt=$((t1 - t0)) -v hz="$HZ" -v dur="$dur" \
        -v has="$T_PID" '
        function ms(s) {
            if (s ~ /us$/) return substr(s, 1, length(s) - 2) / 1000
            if (s ~ /ms$/) return substr(s, 1, length(s) - 2) + 0
            if (s ~ /m$/)  return substr(s, 1, length(s) - 1) * 60000
            if (s ~ /s$/)  return substr(s, 1, length(s) - 1) * 1000
            return s + 0
        }
        /requests in/ { reqs = $1 }
        /Requests\/sec:/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(",", ""); errs = $4 + $6 + $8 + $10 }
        END {
            if (rps == "") { rps = 0; p50 = "nan"; p99 = "nan" }
            cpu = "nan"; us = "nan"
            if (has != "") { cpu = 100 * dt / hz / dur; if (reqs > 0) us = 1e6 * dt / hz / reqs }
            bad = non2xx + 0
            if (wl == "blocked" || wl == "limited") bad = reqs - non2xx
            printf "%s\t%s\t%s\t%s\t%s\t%.1f\t%.3f\t%.3f\t%d\t%d\t%s\t%s\n", tag, rep, sys, wl, c, rps, p50, p99, bad, errs + 0, cpu, us
        }' "$f" >>"$RESULTS"
    tail -1 "$RESULTS" | awk -F'\t' '{printf "  %-26s %-7s c=%-4s %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  bad %s err %s  SUT cpu %s%% %s us/req\n", $3, $4, $5, $6, $7, $8, $9, $10, $11, $12}' >&2
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# med TAG SYSTEM WORKLOAD CONNS COLUMN
med() { awk -F'\t' -v t="$1" -v s="$2" -v w="$3" -v c="$4" -v k="$5" '$1 == t && $3 == s && $4 == w && $5 == c && $k != "nan" { print $k }' "$RESULTS" | median; }
errsum() { awk -F'\t' -v t="$1" -v s="$2" -v w="$3" -v c="$4" '$1 == t && $3 == s && $4 == w && $5 == c { n += $9 + $10 } END { print n + 0 }' "$RESULTS"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "nan"; else printf "%.3f", a / b }'; }
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.*f", d, v }'; }

# matrix TAG "WORKLOADS" SYSTEMS... : every repetition runs every system back to back, per
# workload and connection count, so slow drifts of a noisy machine hit all systems alike.
matrix() {
    local tag=$1 wls=$2; shift 2
    local rep wl c s
    for rep in $(seq "$REPEAT"); do
        for wl in $wls; do
            for c in $CONNS; do
                log "$tag: repetition $rep/$REPEAT, $wl, $c connections"
                for s in "$@"; do
                    supports "$s" "$wl" || continue
                    wrk_run "$tag" "$rep" "$s" "$wl" "$c" "$DURATION"
                done
            done
        done
    done
}

# ---------------------------------------------------------------------------------------------
# 7. Warm-up, then the main matrix.
LOAD_START=$(cat /proc/loadavg)
STEAL0=$(steal_ticks); T0=$(date +%s)
log "warm-up (2 s per system and workload)"
for s in "${ORDER[@]}" "${POST_ONLY[@]}" "${MULTI[@]}"; do
    for wl in $WORKLOADS; do
        supports "$s" "$wl" || continue
        wrk_run warmup 1 "$s" "$wl" 16 2 2>/dev/null
    done
done
matrix main "$WORKLOADS" "${ORDER[@]}" "${POST_ONLY[@]}"
# W workers: each connection count × W, the big-list gateway, bare Pingora, nginx-geo, HAProxy.
for w in $WORKERS; do
    [[ $w == 1 ]] && continue
    CONNS_1=$CONNS
    CONNS=$(for c in $CONNS_1; do printf '%s ' $((c * w)); done | sed 's/ $//')
    matrix main "$WORKLOADS" "$(sysw "$GWBIG" "$w")" "$(sysw bare-pingora "$w")" "$(sysw "$NGINX_FAST" "$w")" "$(sysw "$HAP" "$w")"
    CONNS=$CONNS_1
done

# Memory after the load (kB): VmRSS and VmHWM of the process and its children.
declare -A RSS HWM PSS
memkb() { # pid field
    local p t=0 v
    for p in $1 $(pgrep -P "$1" || true); do
        v=$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null) || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
for s in "${ORDER[@]}" "${POST_ONLY[@]}" "${MULTI[@]}"; do
    [[ -n "${SUTPID[$s]}" ]] || continue
    RSS[$s]=$(memkb "${SUTPID[$s]}" VmRSS)
    HWM[$s]=$(memkb "${SUTPID[$s]}" VmHWM)
    PSS[$s]=0
    for p in ${SUTPID[$s]} $(pgrep -P "${SUTPID[$s]}" || true); do
        PSS[$s]=$((PSS[$s] + $(awk '$1 == "Pss:" { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
    done
done

# ---------------------------------------------------------------------------------------------
# 8. Reload under load: the big rule set is replaced (atomic rename, picked up by the file
# watch) or SIGHUP'ed, alternately, every 0.5 s while wrk runs. 127.0.0.1 is allowed by both
# rule sets, so every request must succeed.
# Requests the upstream has served (all systems forward 1:1), from its stub_status.
metric_requests() { curl -s "${URL[direct]}/_status" | awk 'NR == 3 { print $3 }'; }
metric() {
    curl -s -o "$W/metrics.txt" "$1/metrics" || : >"$W/metrics.txt"
    awk -v m="$2" 'index($0, m) == 1 && !done { print $NF; done = 1 }' "$W/metrics.txt"
}
reload_loop() { # name
    local d=$W/$1 pid=${SUTPID[$1]} n=0 src
    while :; do
        n=$((n + 1))
        if ((n % 2)); then
            src=$FX/rules-$BIG-alt.json; ((n % 4 == 1)) || src=$FX/rules-$BIG.json
            cp "$src" "$d/.rules.json.tmp" && mv -f "$d/.rules.json.tmp" "$d/rules.json"
        else
            kill -HUP "$pid"
        fi
        sleep 0.5
    done
}
log "reload under load ($GWBIG)"
declare -A RL_OK RL_FAIL
for c in $CONNS; do
    ok0=$(metric "${ADMIN[$GWBIG]}" 'dcr_gateway_reloads_total{result="success"}'); ok0=${ok0:-0}
    fail0=$(metric "${ADMIN[$GWBIG]}" 'dcr_gateway_reloads_total{result="failure"}'); fail0=${fail0:-0}
    reload_loop "$GWBIG" &
    BG+=($!)
    wrk_run reload 1 "$GWBIG" post "$c" "$DURATION"
    kill "${BG[-1]}" 2>/dev/null || true
    wait "${BG[-1]}" 2>/dev/null || true
    unset 'BG[-1]'
    sleep 1
    ok1=$(metric "${ADMIN[$GWBIG]}" 'dcr_gateway_reloads_total{result="success"}'); ok1=${ok1:-0}
    fail1=$(metric "${ADMIN[$GWBIG]}" 'dcr_gateway_reloads_total{result="failure"}'); fail1=${fail1:-0}
    RL_OK[$c]=$(awk -v a="$ok1" -v b="$ok0" 'BEGIN { print a - b }')
    RL_FAIL[$c]=$(awk -v a="$fail1" -v b="$fail0" 'BEGIN { print a - b }')
done
RSS_AFTER_RELOAD=$(memkb "${SUTPID[$GWBIG]}" VmRSS)
HWM_AFTER_RELOAD=$(memkb "${SUTPID[$GWBIG]}" VmHWM)

# ---------------------------------------------------------------------------------------------
# 9. Fixed-rate latency (oha, coordinated-omission corrected): 25 % and 50 % of the gateway's
# saturating one-worker rate (POST and GET) at the lowest connection count, against the upstream
# directly, through the gateway, bare Pingora and nginx-geo; CPU per request from /proc.
C_LOW=$(tr ' ' '\n' <<<"$CONNS" | sort -n | sed -n 1p)
C_HIGH=$(tr ' ' '\n' <<<"$CONNS" | sort -n | tail -1)
FR_RATE=
FR=$W/fixed.tsv; : >"$FR"
FR_PCTS="25 50"
FR_WLS=$(for wl in post get; do has_wl "$wl" && printf '%s ' "$wl"; done)
declare -A FR_RATES
# fr_run REP SYSTEM WORKLOAD PCT RATE → a row of $FR:
# rep system rps p50_ms p99_ms bad errors workload pct rate sut_us_per_req
fr_run() {
    local rep=$1 s=$2 wl=$3 pct=$4 rate=$5 f t0 t1 args=()
    f=$RAW/fixed-$rep-$s-$wl-$pct.json
    if [[ $wl == post ]]; then
        args=(-m POST -T application/json -H 'user-agent: mcp-bench/1.0' -D "$BODY")
        target "$s" post
    else
        target "$s" get
    fi
    t0=$(cpu_ticks "$T_PID")
    "${PIN_LOAD[@]}" "$OHA" -z "${DURATION}s" -c "$C_LOW" -q "$rate" --latency-correction -w --no-tui \
        --output-format json "${args[@]}" "$T_URL" >"$f" 2>/dev/null || true
    t1=$(cpu_ticks "$T_PID")
    jq -r --arg s "$s" --arg r "$rep" --arg wl "$wl" --arg pct "$pct" --arg rate "$rate" \
        --arg dt $((t1 - t0)) --arg hz "$HZ" --arg has "$T_PID" '[$r, $s, .summary.requestsPerSec,
            (.latencyPercentiles.p50 * 1000), (.latencyPercentiles.p99 * 1000),
            ([.statusCodeDistribution | to_entries[] | select(.key | startswith("2") | not) | .value] | add // 0),
            ([.errorDistribution | to_entries[] | .value] | add // 0), $wl, $pct, $rate,
            (([.statusCodeDistribution | to_entries[] | .value] | add // 0) as $n
              | if $has == "" or $n == 0 then "nan" else (1e6 * ($dt | tonumber) / ($hz | tonumber) / $n) end)] | @tsv' \
        "$f" >>"$FR" 2>/dev/null || true
    tail -1 "$FR" | awk -F'\t' '{printf "  fixed %-4s %s%% %-22s %8.0f req/s p50 %.3f ms p99 %.3f ms  %s us/req\n", $8, $9, $2, $3, $4, $5, $11}' >&2
}
if [[ $FIXED_RATE == 1 && -n $FR_WLS ]]; then
    for wl in $FR_WLS; do
        sat=$(med main "$GWBIG" "$wl" "$C_LOW" 6)
        for pct in $FR_PCTS; do
            FR_RATES[$wl,$pct]=$(awk -v s="$sat" -v p="$pct" 'BEGIN { r = int(s * p / 100); print (r < 1 ? 1 : r) }')
        done
        log "fixed rate, $wl: $(for pct in $FR_PCTS; do printf '%s req/s (%s %%) ' "${FR_RATES[$wl,$pct]}" "$pct"; done)of $GWBIG at $C_LOW connections"
    done
    FR_RATE=${FR_RATES[post,50]:-}
    for rep in $(seq "$REPEAT"); do
        for wl in $FR_WLS; do
            for pct in $FR_PCTS; do
                for s in direct "$GWBIG" bare-pingora "$NGINX_FAST"; do
                    fr_run "$rep" "$s" "$wl" "$pct" "${FR_RATES[$wl,$pct]}"
                done
            done
        done
    done
fi
# frmed SYSTEM COLUMN [WORKLOAD PCT]: median over repetitions (default: POST at 50 %).
frmed() { awk -F'\t' -v s="$1" -v k="$2" -v wl="${3:-post}" -v p="${4:-50}" '$2 == s && $8 == wl && $9 == p && $k != "nan" { print $k }' "$FR" | median; }

# ---------------------------------------------------------------------------------------------
# 10. Engine settings the gateway exposes, on the big rule set, POST only.
TUNE=()
if [[ $TUNING == 1 ]]; then
    log "tuning variants"
    PIN_ONE=1 # every variant on the one-worker CPU: the cost of a second worker, not its gain
    start_gateway "$GWBIG,threads=2" "$BIG" $((PORT_BASE + 15)) $((PORT_BASE + 25)) 2 true 128 0
    # With threads = 1 the gateway ignores work_stealing (single-threaded runtime); with two
    # workers it is a real choice.
    start_gateway "$GWBIG,threads=2,work_stealing=false" "$BIG" $((PORT_BASE + 16)) $((PORT_BASE + 26)) 2 false 128 0
    start_gateway "$GWBIG,keepalive_pool=16" "$BIG" $((PORT_BASE + 17)) $((PORT_BASE + 27)) 1 true 16 0
    start_gateway "$GWBIG,keepalive_pool=1024" "$BIG" $((PORT_BASE + 18)) $((PORT_BASE + 28)) 1 true 1024 0
    PIN_ONE=
    TUNE=("$GWBIG" "$GWBIG,threads=2" "$GWBIG,threads=2,work_stealing=false" "$GWBIG,keepalive_pool=16" "$GWBIG,keepalive_pool=1024")
    # The allocator is not a setting: mimalloc is linked in (#[global_allocator] in src/main.rs),
    # so LD_PRELOAD of another malloc would only reach OpenSSL's C allocations.
    for s in "${TUNE[@]:1}"; do sanity "$s"; wrk_run warmup 1 "$s" post 16 2 2>/dev/null; done
    matrix tuning post "${TUNE[@]}"
fi

# ---------------------------------------------------------------------------------------------
# 11. Profile: perf with the software cpu-clock event (works in VMs without hardware counters),
# and the system calls each system makes per POST (strace -c; its overhead slows the run but
# does not change the counts).
PROF_NOTE=
declare -A PROF_DSO PROF_SELF PROF_CHILD PROF_OWN SYSC SYSN
HWCOUNTERS=
perf_top() { # data args...
    local d=$1; shift
    perf report -i "$d" --stdio -g none "$@" 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-170 | sed 's/ *$//' || true
}
if [[ $PROFILE == 1 ]]; then
    HWCOUNTERS=$(perf stat -e instructions true 2>&1 | grep -q 'not supported' && echo "not available (perf stat -e instructions: <not supported>)" || echo available)
    if ! command -v perf >/dev/null; then
        PROF_NOTE="perf is not installed (apt-get install linux-perf); no profile."
    elif ! perf record -q -e cpu-clock -o /dev/null true >/dev/null 2>&1; then
        PROF_NOTE="perf cannot sample here (perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)); use valgrind --tool=callgrind on a short run."
    else
        for s in "$GWBIG" bare-pingora; do
            log "profiling $s (POST, $C_HIGH connections)"
            pd=$W/perf-${s//[^a-z0-9-]/_}.data
            "${PIN_LOAD[@]}" wrk -t1 -c"$C_HIGH" -d8s -s "$ROOT/bench/post.lua" "${URL[$s]}$POST_PATH" >/dev/null 2>&1 &
            BG+=($!)
            sleep 1
            perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "${SUTPID[$s]}" -o "$pd" -- sleep 5 >/dev/null 2>&1 || true
            wait "${BG[-1]}" 2>/dev/null || true
            unset 'BG[-1]'
            PROF_DSO[$s]=$(perf_top "$pd" --no-children --sort dso | sed -n 1,6p)
            PROF_SELF[$s]=$(perf_top "$pd" --no-children --sort symbol --percent-limit 0.7 | sed -n 1,30p)
            PROF_CHILD[$s]=$(perf_top "$pd" --children --sort symbol --percent-limit 4 \
                | grep -v -e ' 0xffffffffffffffff$' -e '(inlined)$' | sed -n 1,40p || true)
            [[ $s == "$GWBIG" ]] && PROF_OWN[$s]=$(perf_top "$pd" --children --sort symbol --percent-limit 0.4 \
                | grep -e 'dcr_gateway::' -e 'maxminddb' -e 'serde_json' -e 'url::' -e 'prometheus' -e 'idna' -e 'unicode' \
                | sed -n 1,45p || true)
        done
    fi
    if command -v strace >/dev/null; then
        for s in "$GWBIG" bare-pingora "$NGINX_FAST" "$HAP"; do
            log "counting system calls of $s (POST, $C_LOW connections)"
            sf=$W/strace-${s//[^a-z0-9-]/_}.txt
            tgt=${SUTPID[$s]}
            [[ $s == nginx-* ]] && tgt=$(pgrep -P "${SUTPID[$s]}" | sed -n 1p)
            "${PIN_LOAD[@]}" wrk -t1 -c"$C_LOW" -d6s -s "$ROOT/bench/post.lua" "${URL[$s]}$POST_PATH" >"$W/strace-wrk.txt" 2>&1 &
            BG+=($!)
            sleep 1
            m0=$(metric_requests "$s")
            timeout -s INT 3 strace -c -f -p "$tgt" -o "$sf" >/dev/null 2>&1 || true
            m1=$(metric_requests "$s")
            wait "${BG[-1]}" 2>/dev/null || true
            unset 'BG[-1]'
            SYSC[$s]=$(awk -v n=$((m1 - m0)) 'n > 0 && $NF ~ /^[a-z_0-9]+$/ && $NF != "syscall" && $NF != "total" {
                    c = $4
                    if (c / n >= 0.05 && $NF != "clock_nanosleep" && $NF != "futex" && $NF != "restart_syscall") printf "%s %.2f, ", $NF, c / n }' "$sf" | sed 's/, $//')
            SYSN[$s]=$((m1 - m0))
        done
    fi
fi

# ---------------------------------------------------------------------------------------------
# 11b. Where each microsecond goes: the phase-timing gateway under each workload (lowest
# connection count, one worker); dcr_gateway_phase_cpu_seconds_total before and after, divided
# by the requests wrk counted.
PH=$W/phases.tsv; : >"$PH"
PH_OVERHEAD=
phase_scrape() { # admin-url → "phase seconds calls" lines
    curl -s "$1/metrics" | awk '
        /^dcr_gateway_phase_cpu_seconds_total\{/ { match($0, /phase="[^"]*"/); p = substr($0, RSTART + 7, RLENGTH - 8); s[p] = $NF }
        /^dcr_gateway_phase_calls_total\{/ { match($0, /phase="[^"]*"/); p = substr($0, RSTART + 7, RLENGTH - 8); c[p] = $NF }
        END { for (p in s) print p, s[p], c[p] + 0 }' | sort
}
if [[ $PHASES == 1 ]]; then
    for wl in $WORKLOADS; do
        supports "$GWPH" "$wl" || continue
        admin=${ADMIN[$GWPH]}
        [[ $wl == limited ]] && admin=${ADMINL[$GWPH]}
        log "phases: $wl"
        wrk_run phwarm 1 "$GWPH" "$wl" "$C_LOW" 2 2>/dev/null
        for rep in $(seq "$REPEAT"); do
            phase_scrape "$admin" >"$W/ph0"
            wrk_run phases "$rep" "$GWPH" "$wl" "$C_LOW" "$DURATION"
            phase_scrape "$admin" >"$W/ph1"
            reqs=$(awk '/requests in/ { print $1 }' "$RAW/phases-$rep-$GWPH-$wl-$C_LOW.txt")
            join "$W/ph0" "$W/ph1" | awk -v wl="$wl" -v rep="$rep" -v n="${reqs:-0}" \
                'n > 0 { printf "%s\t%s\t%s\t%.4f\t%.4f\n", wl, rep, $1, 1e6 * ($4 - $2) / n, ($5 - $3) / n }' >>"$PH"
        done
    done
    PH_OVERHEAD=$(curl -s "${ADMIN[$GWPH]}/metrics" | awk '/^dcr_gateway_phase_timer_overhead_seconds / { printf "%.3f", $NF * 1e6 }')
fi
# phmed WORKLOAD PHASE COLUMN(4: µs/req, 5: calls/req)
phmed() { awk -F'\t' -v wl="$1" -v p="$2" -v k="$3" '$1 == wl && $3 == p { print $k }' "$PH" | median; }
PHASE_ORDER="request_view acl request_filter dcr_admission rate_limit body_read validation refusal upstream_request_filter response_hooks logging"

T1=$(date +%s); STEAL1=$(steal_ticks)
LOAD_END=$(cat /proc/loadavg)
STEAL_PCT=$(awk -v a="$STEAL0" -v b="$STEAL1" -v t=$((T1 - T0)) -v hz="$HZ" -v n="$NCPU" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / t / n }')

# ---------------------------------------------------------------------------------------------
# 12. Report.
log "writing $OUT"
mib() { awk -v k="$1" 'BEGIN { if (k == "") print "–"; else printf "%.1f", k / 1024 }'; }
pct() { awk -v r="$1" 'BEGIN { if (r == "nan") print "–"; else printf "%+.1f %%", (r - 1) * 100 }'; }
# verdict VALUE OP LIMIT → met/missed
verdict() { awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { if (v == "nan" || v == "") { print "not measured"; exit }
    ok = (op == ">=") ? (v >= l) : (v <= l); print ok ? "**met**" : "**missed**" }'; }

CPU_MODEL=$(lscpu | awk -F: '/^Model name/ && !done { gsub(/^ +/, "", $2); print $2; done = 1 }')
MEM_TOTAL=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
OS=$(. /etc/os-release && echo "$PRETTY_NAME")
GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git status --porcelain --untracked-files=no -- src Cargo.toml 2>/dev/null | wc -l)
mkdir -p "$(dirname "$OUT")"
{
cat <<EOF
# Benchmarks

Produced by \`bench/run.sh\` (\`make bench\`) — see [bench/README.md](../bench/README.md) for what
each system is and how to read the numbers. Do not edit by hand; re-run the script.

- **Command:** \`$COMMAND\`
- **Date:** $STARTED, $((T1 - T0)) s of measurement; commit \`$GIT_REV\`$( ((GIT_DIRTY)) && echo " with uncommitted changes in src/ or Cargo.toml" )
- **Machine:** $CPU_MODEL, $NCPU CPUs ($(lscpu | awk -F: '/^Hypervisor vendor/ { gsub(/ /, "", $2); print $2 " guest, " }')$(lscpu | awk -F: '/^Thread\(s\) per core/ { gsub(/ /, "", $2); print $2 " thread(s) per core" }')), $MEM_TOTAL RAM, $OS, Linux $(uname -r)
- **Noise:** load average $LOAD_START at the start, $LOAD_END at the end; CPU steal $STEAL_PCT % of the machine during the run
- **Software:** $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), $( [[ -n "$OHA" ]] && "$OHA" --version ), $(rustc --version | awk '{ print $1, $2 }'), Pingora 0.9.1
- **Pinning:** $PINNING. One worker each unless the name says \`@Ww\`: gateway \`server.threads = 1\`, nginx \`worker_processes 1\`, HAProxy \`nbthread 1\`, bare Pingora \`threads = 1\`; \`@Ww\`: W of each, the upstream nginx $UP_WORKERS worker(s). All on 127.0.0.1, keep-alive on both sides everywhere.
- **Load:** \`wrk -t1 -c{$(tr ' ' ',' <<<"$CONNS")} -d${DURATION}s --latency\` (W workers: W × the connections, min(W, $LOAD_N) wrk threads), $REPEAT repetitions, every table cell is the **median**; systems alternate within each repetition. Workloads: $WORKLOADS.
  POST: \`POST /oidc/register\` with [bench/body.json](../bench/body.json) ($(tr -d '\n' <"$BODY" | wc -c) bytes, via [bench/post.lua](../bench/post.lua)); GET: \`GET /authorize?…\` (pass-through scope \`authentication\`, ACL checked, no body); blocked: the same POST from \`User-Agent: flood-bot/1.0\` ([bench/flood.lua](../bench/flood.lua)), refused 403 by every system (gateway rule \`block-flood-ua\`, after the CIDR lists; nginx \`if (\$http_user_agent …)\`; HAProxy \`req.hdr(user-agent)\`); limited: the POST against a listener that allows one registration per client IP per hour (gateway: a twin with \`per_ip = { requests = 1, window_seconds = 3600 }\`; nginx \`limit_req\` 1r/m; HAProxy \`sc_http_req_rate\`), so nearly every answer is a 429.
- **Gateway config:** rules = geo rule (block KP) + N random IPv4 CIDRs (block, 1,000 per rule), GeoIP2-Country fixture, \`[dcr]\` strict defaults (every POST is read, validated, normalized and re-serialized), \`[rate_limit]\` on (local backend) with limits the benchmark cannot reach, so its check is paid on every registration; \`[audit] enabled = false\` (see the \`+audit\` row for its cost), \`[reload] watch = true\`, log level info.
- **nginx / HAProxy:** the same $BIGL CIDRs — nginx as \`deny\` rules (\`nginx-deny\`, ngx_http_access_module, a linear list) and as a \`geo\` block (\`nginx-geo\`, radix tree), plus geoip2 country blocking on the same mmdb; HAProxy as \`acl … src -f\` plus \`src,map_ip()\` country map. Both add X-Forwarded-* and X-Request-Id like the gateway. Neither reads or validates the body: they stream it.

## Throughput and latency (medians)

"SUT CPU" is the CPU time of the system under test during the run (100 % = its one core is saturated), and per request.

EOF
for wl in $WORKLOADS; do
    for c in $CONNS; do
        echo "### $(wl_title "$wl"), $c connections"
        echo
        [[ $wl == blocked || $wl == limited ]] && echo "Every answer must be a refusal: **failed** counts the answers that were not (2xx/3xx) and socket errors." && echo
        echo "| system | req/s | p50 ms | p99 ms | SUT CPU | SUT µs/req | failed |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        for s in "${ORDER[@]}" "${POST_ONLY[@]}"; do
            supports "$s" "$wl" || continue
            cpu=$(med main "$s" "$wl" "$c" 11)
            echo "| $s | $(fmt "$(med main "$s" "$wl" "$c" 6)") | $(fmt "$(med main "$s" "$wl" "$c" 7)" 2) | $(fmt "$(med main "$s" "$wl" "$c" 8)" 2) | $( [[ $cpu == nan ]] && echo – || echo "$(fmt "$cpu") %" ) | $(fmt "$(med main "$s" "$wl" "$c" 12)" 1) | $(errsum main "$s" "$wl" "$c") |"
        done
        echo
    done
done

echo "## Ratios (requests/s, medians)"
echo
echo "| workload | conns | gateway | /direct | /bare-pingora | /$NGINX_DENY | /$NGINX_FAST | /$HAP |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
for wl in post get; do
    has_wl "$wl" || continue
    for c in $CONNS; do
        for g in "$GWBIG" "$GWSMALL"; do
            r=$(med main "$g" "$wl" "$c" 6)
            row="| $wl | $c | $g"
            for o in direct bare-pingora "$NGINX_DENY" "$NGINX_FAST" "$HAP"; do
                row+=" | $(ratio "$r" "$(med main "$o" "$wl" "$c" 6)")"
            done
            echo "$row |"
        done
    done
done
echo
echo "Cost of the rule set size (gateway-$BIGL vs $GWSMALL, medians):"
echo
echo "| workload | conns | req/s change | SUT µs/req change |"
echo "|---|---:|---:|---:|"
for wl in $WORKLOADS; do
    [[ $wl == limited ]] && continue
    for c in $CONNS; do
        echo "| $wl | $c | $(pct "$(ratio "$(med main "$GWBIG" "$wl" "$c" 6)" "$(med main "$GWSMALL" "$wl" "$c" 6)")") | $(pct "$(ratio "$(med main "$GWBIG" "$wl" "$c" 12)" "$(med main "$GWSMALL" "$wl" "$c" 12)")") |"
    done
done
echo
echo "Cost of the audit log (\`[audit] enabled = true\`, output /dev/null; one JSON line per registration):"
echo
echo "| conns | req/s change | SUT µs/req change |"
echo "|---:|---:|---:|"
for c in $CONNS; do
    echo "| $c | $(pct "$(ratio "$(med main "$GWBIG+audit" post "$c" 6)" "$(med main "$GWBIG" post "$c" 6)")") | $(pct "$(ratio "$(med main "$GWBIG+audit" post "$c" 12)" "$(med main "$GWBIG" post "$c" 12)")") |"
done
echo

echo "## Workloads × workers (medians)"
echo
echo "The $BIGL-entry gateway, bare Pingora (no ACL: no flood rows), nginx \`geo\` and HAProxy with 1 and more workers; W workers get W × the connections. CPU µs/req is all of the system's CPU time (user + system, every thread and process) over the requests it answered."
echo
echo "| workload | workers | conns | $GWBIG req/s | bare-pingora | $NGINX_FAST | $HAP | gateway CPU µs/req | bare | nginx | HAProxy | gateway p99 ms | bare p99 | nginx p99 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for wl in $WORKLOADS; do
    for w in $WORKERS; do
        for c in $CONNS; do
            cw=$((c * w))
            row="| $wl | $w | $cw"
            for k in 6 12 8; do
                for o in "$GWBIG" bare-pingora "$NGINX_FAST" "$HAP"; do
                    [[ $k == 8 && $o == "$HAP" ]] && continue
                    d=0; [[ $k == 12 ]] && d=1; [[ $k == 8 ]] && d=2
                    row+=" | $(fmt "$(med main "$(sysw "$o" "$w")" "$wl" "$cw" $k)" $d)"
                done
            done
            echo "$row |"
        done
    done
done
echo
if [[ $MAXW != 1 ]]; then
    echo "Scaling (req/s with $MAXW workers and $MAXW × the connections over req/s with one):"
    echo
    echo "| workload | conns (1 worker) | $GWBIG | bare-pingora | $NGINX_FAST | $HAP |"
    echo "|---|---:|---:|---:|---:|---:|"
    for wl in $WORKLOADS; do
        for c in $CONNS; do
            row="| $wl | $c"
            for o in "$GWBIG" bare-pingora "$NGINX_FAST" "$HAP"; do
                row+=" | $(fmt "$(ratio "$(med main "$(sysw "$o" "$MAXW")" "$wl" $((c * MAXW)) 6)" "$(med main "$o" "$wl" "$c" 6)")" 2)"
            done
            echo "$row |"
        done
    done
    echo
fi

# Targets.
post_bare=(); for c in $CONNS; do post_bare+=("$(ratio "$(med main "$GWBIG" post "$c" 6)" "$(med main bare-pingora post "$c" 6)")"); done
echo "## Targets"
echo
echo "| target | measured | verdict | distance |"
echo "|---|---|---|---|"
i=0
for c in $CONNS; do
    r=${post_bare[$i]}; i=$((i + 1))
    echo "| POST req/s with $BIGL entries + geo + validation ≥ 0.9 × bare Pingora ($c conns) | $(fmt "$r" 3) × | $(verdict "$r" '>=' 0.9) | $(awk -v r="$r" 'BEGIN { if (r == "nan") print "–"; else if (r >= 0.9) printf "%.0f %% above the bar", (r / 0.9 - 1) * 100; else printf "needs +%.0f %% throughput (%.3f → 0.9)", (0.9 / r - 1) * 100, r }') |"
done
for wl in post get; do
    for c in $CONNS; do
        for o in "$NGINX_FAST" "$NGINX_DENY"; do
            r=$(ratio "$(med main "$GWBIG" "$wl" "$c" 6)" "$(med main "$o" "$wl" "$c" 6)")
            echo "| parity with nginx (long term): $wl, $c conns, vs $o | $(fmt "$r" 3) × | $(verdict "$r" '>=' 1.0) | $(awk -v r="$r" 'BEGIN { if (r == "nan") print "–"; else if (r >= 1) printf "%.0f %% faster", (r - 1) * 100; else printf "needs +%.0f %%", (1 / r - 1) * 100 }') |"
        done
    done
done
if [[ $FIXED_RATE == 1 && -s "$FR" ]]; then
    added=$(awk -v a="$(frmed "$GWBIG" 5)" -v b="$(frmed direct 5)" 'BEGIN { printf "%.3f", a - b }')
    echo "| added p99 over direct ≤ 1 ms at half the saturating load (POST, $FR_RATE req/s, $C_LOW conns, oha) | $added ms | $(verdict "$added" '<=' 1.0) | $(awk -v a="$added" 'BEGIN { if (a <= 1) printf "%.2f ms to spare", 1 - a; else printf "%.2f ms over", a - 1 }') |"
else
    echo "| added p99 over direct ≤ 1 ms at half the saturating load | not measured (oha missing: wrk cannot hold a fixed rate) | – | – |"
fi
for wl in post get; do
    for c in $CONNS; do
        r=$(ratio "$(med main "$GWBIG" "$wl" "$c" 6)" "$(med main "$GWSMALL" "$wl" "$c" 6)")
        d=$(awk -v r="$r" 'BEGIN { if (r == "nan") print "nan"; else printf "%.2f", (1 - r) * 100 }')
        echo "| throughput drop ≤ 5 % from $SMALLL to $BIGL entries ($wl, $c conns) | $(awk -v d="$d" 'BEGIN { printf "%+.1f %% drop", d }') | $(verdict "$d" '<=' 5) | $(awk -v d="$d" 'BEGIN { if (d <= 5) printf "%.1f points to spare", 5 - d; else printf "%.1f points over", d - 5 }') |"
    done
done
echo "| resident memory with $BIGL entries < 100 MiB (VmHWM after load) | $(mib "${HWM[$GWBIG]}") MiB | $(verdict "$(mib "${HWM[$GWBIG]}")" '<=' 100) | $(awk -v m="$(mib "${HWM[$GWBIG]}")" 'BEGIN { if (m < 100) printf "%.1f MiB to spare", 100 - m; else printf "%.1f MiB over", m - 100 }') |"
# Issue 17's targets.
t17() { # description value op limit unit
    echo "| $1 | $(fmt "$2" 2)$5 | $(verdict "$2" "$3" "$4") | $(awk -v v="$2" -v op="$3" -v l="$4" 'BEGIN { if (v == "nan" || v == "") print "–"; else if ((op == "<=" && v <= l) || (op == ">=" && v >= l)) print "within"; else printf "%.2f beyond", (v > l ? v - l : l - v) }') |"
}
for wl in blocked limited; do
    has_wl "$wl" || continue
    for c in $CONNS; do
        t17 "$wl flood req/s ≥ 0.8 × $NGINX_FAST (1 worker, $c conns)" "$(ratio "$(med main "$GWBIG" "$wl" "$c" 6)" "$(med main "$NGINX_FAST" "$wl" "$c" 6)")" '>=' 0.8 " ×"
        t17 "gateway CPU per $wl refusal ≤ 10 µs (1 worker, $c conns)" "$(med main "$GWBIG" "$wl" "$c" 12)" '<=' 10 " µs"
    done
done
if has_wl get; then
    for c in $CONNS; do
        t17 "GET CPU per request ≤ bare Pingora + 3 µs ($c conns; gateway minus bare)" "$(awk -v a="$(med main "$GWBIG" get "$c" 12)" -v b="$(med main bare-pingora get "$c" 12)" 'BEGIN { if (a == "nan" || b == "nan") print "nan"; else print a - b }')" '<=' 3 " µs"
    done
fi
if has_wl post; then
    val=nan
    [[ $PHASES == 1 && -s "$PH" ]] && val=$(phmed post validation 4)
    for c in $CONNS; do
        t17 "POST CPU per request ≤ bare Pingora + validation ($(fmt "$val" 1) µs, phase table) + 3 µs ($c conns; gateway minus bare minus validation)" "$(awk -v a="$(med main "$GWBIG" post "$c" 12)" -v b="$(med main bare-pingora post "$c" 12)" -v v="$val" 'BEGIN { if (a == "nan" || b == "nan" || v == "nan") print "nan"; else print a - b - v }')" '<=' 3 " µs"
    done
fi
if [[ $MAXW != 1 ]]; then
    for wl in $WORKLOADS; do
        for c in $CONNS; do
            t17 "$MAXW workers ≥ 3.5 × one worker ($wl, $c → $((c * MAXW)) conns)" "$(ratio "$(med main "$(sysw "$GWBIG" "$MAXW")" "$wl" $((c * MAXW)) 6)" "$(med main "$GWBIG" "$wl" "$c" 6)")" '>=' 3.5 " ×"
        done
    done
    t17 "resident memory with $MAXW workers and $BIGL entries ≤ 100 MiB (VmHWM)" "$(mib "${HWM[$(sysw "$GWBIG" "$MAXW")]:-}")" '<=' 100 " MiB"
fi
if [[ $FIXED_RATE == 1 && -s "$FR" ]] && has_wl post; then
    t17 "fixed-rate p99 ≤ 2 ms at 50 % of one-worker POST capacity (${FR_RATES[post,50]:-?} req/s)" "$(frmed "$GWBIG" 5 post 50)" '<=' 2 " ms"
    t17 "… and ≤ 1.5 × bare Pingora's p99 at that rate" "$(ratio "$(frmed "$GWBIG" 5 post 50)" "$(frmed bare-pingora 5 post 50)")" '<=' 1.5 " ×"
fi
for wl in post get; do
    has_wl "$wl" || continue
    for c in $CONNS; do
        t17 "closed-loop p99 ≤ 1.2 × bare Pingora's ($wl, $c conns)" "$(ratio "$(med main "$GWBIG" "$wl" "$c" 8)" "$(med main bare-pingora "$wl" "$c" 8)")" '<=' 1.2 " ×"
    done
done
for c in $CONNS; do
    f=$(awk -F'\t' -v c="$c" '$1 == "reload" && $5 == c { print $9 + $10 }' "$RESULTS")
    echo "| no failed request while $BIGL entries reload every 0.5 s ($c conns) | $f failed, ${RL_OK[$c]} reloads ok, ${RL_FAIL[$c]} failed reloads | $(verdict "${f:-nan}" '<=' 0) | – |"
done
echo

echo "## Memory"
echo
echo "Resident memory of each system under test after the main runs, from /proc/<pid>/status and smaps_rollup (process and its children: nginx master + worker, whose RSS both count the pages they share; PSS splits shared pages between them)."
echo
echo "| system | VmRSS at start MiB | VmRSS MiB | VmHWM MiB | PSS MiB |"
echo "|---|---:|---:|---:|---:|"
for s in "${ORDER[@]}" "${POST_ONLY[@]}" "${MULTI[@]}"; do
    [[ -n "${SUTPID[$s]}" ]] || continue
    echo "| $s | $( [[ -n "${RSS0[$s]:-}" ]] && mib "${RSS0[$s]}" || echo – ) | $(mib "${RSS[$s]}") | $(mib "${HWM[$s]}") | $(mib "${PSS[$s]}") |"
done
echo
echo "After the reload runs below, $GWBIG: VmRSS $(mib "$RSS_AFTER_RELOAD") MiB, VmHWM $(mib "$HWM_AFTER_RELOAD") MiB (two snapshots coexist while a reload builds)."
echo

echo "## Reload under load"
echo
echo "$GWBIG serving POST while, every 0.5 s, the rules file is alternately replaced by an atomic rename (another $BIGL-entry list or the original; picked up by the file watch) or the process gets SIGHUP. The client (127.0.0.1) is allowed by both lists, so every non-2xx response or socket error is a failure."
echo
echo "| conns | duration | req/s | p50 ms | p99 ms | non-2xx | socket errors | reloads ok | reloads failed | req/s without reloads |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for c in $CONNS; do
    awk -F'\t' -v c="$c" -v d="$DURATION" -v ok="${RL_OK[$c]}" -v fl="${RL_FAIL[$c]}" -v base="$(fmt "$(med main "$GWBIG" post "$c" 6)")" \
        '$1 == "reload" && $5 == c { printf "| %s | %s s | %.0f | %.2f | %.2f | %d | %d | %s | %s | %s |\n", c, d, $6, $7, $8, $9, $10, ok, fl, base }' "$RESULTS"
done
echo

if [[ $FIXED_RATE == 1 && -s "$FR" ]]; then
    echo "## Fixed-rate latency"
    echo
    echo "\`oha -z ${DURATION}s -c $C_LOW -q RATE --latency-correction\` at 25 % and 50 % of $GWBIG's median one-worker throughput at $C_LOW connections (per workload); latency is measured from each request's scheduled start, so queueing is not hidden. CPU µs/req: the system's CPU time (/proc) over the requests oha sent. Medians of $REPEAT runs."
    echo
    echo "| workload | rate req/s | system | achieved req/s | p50 ms | p99 ms | added p99 vs direct ms | CPU µs/req | failed |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
    for wl in $FR_WLS; do
        for pct in $FR_PCTS; do
            for s in direct "$GWBIG" bare-pingora "$NGINX_FAST"; do
                p99=$(frmed "$s" 5 "$wl" "$pct")
                echo "| $wl | ${FR_RATES[$wl,$pct]} ($pct %) | $s | $(fmt "$(frmed "$s" 3 "$wl" "$pct")") | $(fmt "$(frmed "$s" 4 "$wl" "$pct")" 3) | $(fmt "$p99" 3) | $( [[ $s == direct ]] && echo – || fmt "$(awk -v a="$p99" -v b="$(frmed direct 5 "$wl" "$pct")" 'BEGIN { if (a == "nan" || b == "nan") print "nan"; else print a - b }')" 3) | $(fmt "$(frmed "$s" 11 "$wl" "$pct")" 1) | $(awk -F'\t' -v s="$s" -v wl="$wl" -v p="$pct" '$2 == s && $8 == wl && $9 == p { n += $6 + $7 } END { print n + 0 }' "$FR") |"
            done
        done
    done
    echo
fi

if [[ $PHASES == 1 && -s "$PH" ]]; then
    echo "## Where each microsecond goes (phase-timing build)"
    echo
    echo "\`$GWPH\`: the same gateway built with \`--features phase-timing\`, one worker, $C_LOW connections, $REPEAT × ${DURATION} s per workload. Each cell is the thread CPU time (\`CLOCK_THREAD_CPUTIME_ID\`, user + system) spent in that phase per request (\`dcr_gateway_phase_cpu_seconds_total\` delta over the requests wrk counted), exclusive of the phases nested in it. **Process CPU** is the whole process's CPU per request in the same runs; **outside the phases** is what no phase covers: Pingora's parsing and I/O, the upstream connection, the kernel's side of both sockets, the runtime. Each measurement costs two clock reads of ${PH_OVERHEAD:-?} µs each (system calls: thread clocks have no vDSO path), partly inside the phases; compare **process CPU** with $GWBIG's row above for the build's total overhead."
    echo
    hdr="| phase"; sep="|---"
    for wl in $WORKLOADS; do supports "$GWPH" "$wl" && { hdr+=" | $wl µs/req"; sep+="|---:"; }; done
    echo "$hdr |"; echo "$sep|"
    for ph in $PHASE_ORDER; do
        row="| $ph"
        for wl in $WORKLOADS; do
            supports "$GWPH" "$wl" || continue
            row+=" | $(fmt "$(phmed "$wl" "$ph" 4)" 2)"
        done
        echo "$row |"
    done
    for what in sum process outside reads; do
        case $what in
            sum) row="| **sum of the phases**" ;;
            process) row="| **process CPU**" ;;
            outside) row="| **outside the phases**" ;;
            reads) row="| clock reads per request" ;;
        esac
        for wl in $WORKLOADS; do
            supports "$GWPH" "$wl" || continue
            sum=0; calls=0
            for ph in $PHASE_ORDER; do
                sum=$(awk -v a="$sum" -v b="$(phmed "$wl" "$ph" 4)" 'BEGIN { print a + (b == "nan" ? 0 : b) }')
                calls=$(awk -v a="$calls" -v b="$(phmed "$wl" "$ph" 5)" 'BEGIN { print a + (b == "nan" ? 0 : b) }')
            done
            proc=$(med phases "$GWPH" "$wl" "$C_LOW" 12)
            case $what in
                sum) row+=" | $(fmt "$sum" 2)" ;;
                process) row+=" | $(fmt "$proc" 2)" ;;
                outside) row+=" | $(fmt "$(awk -v p="$proc" -v s="$sum" 'BEGIN { if (p == "nan") print "nan"; else print p - s }')" 2)" ;;
                reads) row+=" | $(fmt "$(awk -v c="$calls" 'BEGIN { print 2 * c }')" 1)" ;;
            esac
        done
        echo "$row |"
    done
    echo
fi

if ((${#TUNE[@]})); then
    echo "## Engine settings ([server] in gateway.toml)"
    echo
    echo "$GWBIG, POST, medians of $REPEAT runs, all variants alternated. Same pinning: every variant is confined to CPU ${CPU_SUT:-–}, so \`threads = 2\` shows the cost of a second worker on one core, not the gain of a second core. With \`threads = 1\` (the rows without \`threads=2\`) \`work_stealing\` is ignored: one worker runs on a single-threaded runtime. The allocator is not in the table: mimalloc is linked into the gateway and into bare Pingora (\`#[global_allocator]\`)."
    echo
    echo "| setting | conns | req/s | vs default | p50 ms | p99 ms | SUT µs/req | failed |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for c in $CONNS; do
        base=$(med tuning "$GWBIG" post "$c" 6)
        for s in "${TUNE[@]}"; do
            r=$(med tuning "$s" post "$c" 6)
            name=${s#"$GWBIG"}; name=${name#,}; [[ -z $name ]] && name="default (threads=1, work_stealing=true, keepalive_pool=128)"
            echo "| $name | $c | $(fmt "$r") | $(pct "$(ratio "$r" "$base")") | $(fmt "$(med tuning "$s" post "$c" 7)" 2) | $(fmt "$(med tuning "$s" post "$c" 8)" 2) | $(fmt "$(med tuning "$s" post "$c" 12)" 1) | $(errsum tuning "$s" post "$c") |"
        done
    done
    echo
fi

echo "## Profile"
echo
if [[ $PROFILE != 1 ]]; then
    echo "Not run (BENCH_PROFILE=0)."
elif [[ -n "$PROF_NOTE" ]]; then
    echo "$PROF_NOTE"
else
    echo "Hardware counters: $HWCOUNTERS. Sampling uses the software \`cpu-clock\` event: \`perf record -e cpu-clock -F 499 --call-graph dwarf\` on the process for 5 s of POST load at $C_HIGH connections (perf itself slows the process; shares are what matter). Self time is \`perf report --no-children --sort symbol\`, inclusive time \`--children\`."
    for s in "$GWBIG" bare-pingora; do
        echo
        echo "### $s"
        echo
        echo "Where the time goes (self time by binary):"
        echo
        echo '```'
        echo "${PROF_DSO[$s]}"
        echo '```'
        echo
        echo "Top self time (≥ 0.7 %):"
        echo
        echo '```'
        echo "${PROF_SELF[$s]}"
        echo '```'
        echo
        echo "Top inclusive time (≥ 4 %, inlined frames omitted):"
        echo
        echo '```'
        echo "${PROF_CHILD[$s]}"
        echo '```'
        if [[ $s == "$GWBIG" ]]; then
            echo
            echo "The gateway's own code and its libraries, inclusive (≥ 0.4 %, inlined frames kept):"
            echo
            echo '```'
            echo "${PROF_OWN[$s]}"
            echo '```'
        fi
    done
fi
if [[ $PROFILE == 1 ]] && ((${#SYSC[@]})); then
    echo
    echo "### System calls per POST request"
    echo
    echo "\`strace -c -f\` on the process (nginx: its worker) for 3 s of POST load at $C_LOW connections, divided by the requests the upstream served meanwhile (calls ≥ 0.05 per request; timer sleeps of idle threads left out). On loopback every send runs the receiver's TCP stack and wakes it, so sends dominate the kernel share above."
    echo
    echo "| system | requests counted | calls per request |"
    echo "|---|---:|---|"
    for s in "$GWBIG" bare-pingora "$NGINX_FAST" "$HAP"; do
        [[ -n "${SYSN[$s]:-}" ]] && echo "| $s | ${SYSN[$s]} | ${SYSC[$s]} |"
    done
fi
echo
if [[ -f "$ROOT/bench/notes.md" ]]; then
    cat "$ROOT/bench/notes.md"
fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
[[ $KEEP == 1 ]] && cp "$RESULTS" "$W/results-final.tsv"
log "done: $OUT"
