# Sourced by bench/run.sh and bench/ab.sh: the gateway configuration every benchmark measures.
#
# gateway_toml DIR PORT ADMIN_PORT UPSTREAM_PORT THREADS WORK_STEALING POOL AUDIT(0|1) [LIMITED(0|1)]
# prints the gateway.toml for a gateway whose rules.json and country.mmdb are in DIR: ACL of
# the rules file + GeoIP, strict validation, rate limits on (local backend) with limits one
# benchmark client cannot reach (their cost is measured, not their 429s), file watch on.
# LIMITED=1 (the rate-limited flood workload): the same, but one registration per client IP
# per hour, so every registration after the first is refused with 429.
gateway_toml() {
    local d=$1 port=$2 admin=$3 up_port=$4 threads=$5 ws=$6 pool=$7 audit=$8 limited=${9:-0}
    local audit_toml='enabled = false' per_ip='{ requests = 1000000000000, window_seconds = 1 }'
    [[ $limited == 1 ]] && per_ip='{ requests = 1, window_seconds = 3600 }'
    [[ $audit == 1 ]] && audit_toml=$'enabled = true\noutput = "/dev/null"'
    cat <<TOML
[server]
threads = $threads
work_stealing = $ws
drain_timeout_seconds = 1
graceful_shutdown_timeout_seconds = 1
pid_file = "$d/gateway.pid"
upgrade_sock = "$d/upgrade.sock"
upstream_keepalive_pool_size = $pool

[listen]
http = ["127.0.0.1:$port"]
https = []
admin = "127.0.0.1:$admin"

[upstream]
origins = ["http://127.0.0.1:$up_port"]

[routes]
registration_path = "/oidc/register"
upstream_registration_path = "/oidc/register"

[network]
trusted_proxies = []

[acl]
rules = "rules.json"
default_action = "allow"

[geoip]
country_db = "country.mmdb"

[dcr]
security_mode = "strict"

[rate_limit]
enabled = true
backend = "local"
per_ip = $per_ip
per_prefix = { requests = 1000000000000, window_seconds = 1 }
global = { requests = 1000000000000, window_seconds = 1 }

[audit]
$audit_toml

[reload]
watch = true
TOML
}
