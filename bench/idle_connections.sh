#!/usr/bin/env bash
# Memory held by idle and half-open client connections (make bench-connections).
#
#   ./bench/idle_connections.sh [CONNECTIONS]      default 2000
#
# Starts the release gateway (one worker) in front of a port nobody serves, reads its RSS,
# opens CONNECTIONS connections that each send a partial request head and then stay silent,
# reads RSS again (per-connection cost), closes them, waits for the gateway to count them
# closed, and reads RSS a third time (what was given back). A second round with the header
# deadline shorter than the hold time shows the gateway closing them itself (408).
# Everything runs on 127.0.0.1; the run is bounded by the connection count and timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
ulimit -n $((N * 2 + 1024))
BIN=${GW:-target/release/dcr-gateway}
[[ -x $BIN ]] || cargo build --release --bin dcr-gateway
dir=$(mktemp -d)
trap 'kill $gw_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); admin=$(free_port); up=$(free_port)

run_round() {
    local header_timeout_ms=$1 hold_s=$2
    cat >"$dir/gateway.toml" <<TOML
[server]
threads = 1
pid_file = "$dir/gw.pid"
upgrade_sock = "$dir/up.sock"
header_timeout_ms = $header_timeout_ms
max_connections = $((N + 100))
[listen]
http = ["127.0.0.1:$port"]
admin = "127.0.0.1:$admin"
[upstream]
origins = ["http://127.0.0.1:$up"]
health_check = "none"
[audit]
enabled = false
[reload]
watch = false
TOML
    "$BIN" run -c "$dir/gateway.toml" >"$dir/out.log" 2>&1 &
    gw_pid=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$admin/healthz" >/dev/null && break; sleep 0.1; done
    python3 - "$gw_pid" "$port" "$admin" "$N" "$hold_s" <<'PY'
import socket, sys, time, urllib.request
pid, port, admin, n, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def open_conns():
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith("dcr_gateway_connections_open "):
            return float(line.split()[1])
    return -1
def wait_open(target, limit=30):
    end = time.time() + limit
    while time.time() < end and open_conns() != target:
        time.sleep(0.1)
    return open_conns()
base = rss_kib()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /oidc/register HTTP/1.1\r\nHost: gw\r\nX-Partial: ")
    socks.append(s)
seen = wait_open(n)
held = rss_kib()
time.sleep(hold)
answered = 0
for s in socks:
    s.settimeout(0.01)
    try:
        if s.recv(64).startswith(b"HTTP/1.1 408"):
            answered += 1
    except OSError:
        pass
    s.close()
wait_open(0)
time.sleep(1)
after = rss_kib()
print(f"connections={n} open_seen={seen:.0f} rss_base_kib={base} rss_held_kib={held} rss_after_close_kib={after} "
      f"per_connection_kib={(held - base) / n:.1f} returned_kib={held - after} answered_408={answered}")
PY
    kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
}

echo "# idle half-open connections, $(date -u +%FT%TZ), $(git rev-parse --short HEAD)"
echo "## held within the header deadline (10 s)"
run_round 10000 1
echo "## held past a 2 s header deadline"
run_round 2000 4
