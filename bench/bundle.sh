#!/usr/bin/env bash
# Packs everything the benchmark needs into one folder (and a tarball) that runs on an offline
# Linux x86-64 machine with many cores and Python 3 — no package installs, no network, no
# Rust there (issue 17). See bench/README.md, "Running on another machine".
#
#   ./bench/bundle.sh [OUT_DIR]            # default: target/bench-bundle/dcr-bench-<commit>
#   BUNDLE_SIZES="100000" BUNDLE_PHASES=1 ./bench/bundle.sh
#   BUNDLE_BUILD=0 BUNDLE_GW_PHASES=/path/to/phase-timing/dcr-gateway ./bench/bundle.sh   # no cargo
#
# Then, on the quiet machine:
#   tar xzf dcr-bench-<commit>.tar.gz && cd dcr-bench-<commit> && python3 run.py
#   python3 run.py --duration 5 --rounds 2 --workers 1,4      # the defaults
#
# What goes in:
#   bin/      dcr-gateway, dcr-gateway-phases (built with --features phase-timing), bare_proxy,
#             bench_fixtures (release builds of this tree), nginx, haproxy, wrk, oha (from this
#             machine)
#   modules/  nginx's geoip2 module (the same Debian build as bin/nginx)
#   lib/      every shared library those need (ldd), with the dynamic loader itself: run.py
#             starts each binary as `lib/ld-linux-x86-64.so.2 --library-path lib bin/X`, so the
#             target's own libc (or its absence of libluajit, libpcre2, ...) does not matter
#   fixtures/ the ACL lists, rules files and GeoIP database of bench_fixtures
#   conf/     gateway.toml templates rendered by bench/gateway-config.sh (the configuration
#             every benchmark measures), the wrk scripts and the registration body
#   run.py    the runner (Python 3 standard library only): pins each system to its own CPUs,
#             runs the workloads, writes report.md and results.tsv
#   MANIFEST  what each file is and where it came from (versions, commit)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
NAME=dcr-bench-$REV
OUT=${1:-$ROOT/target/bench-bundle/$NAME}
SIZES=${BUNDLE_SIZES:-100000}
PHASES=${BUNDLE_PHASES:-1}
BUILD=${BUNDLE_BUILD:-1}

log() { printf '[bundle %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(uname -m) == x86_64 ]] || die "only x86-64 Linux is packed (the loader name below)"
OHA=$(command -v oha || true)
[[ -z "$OHA" && -x "$HOME/.cargo/bin/oha" ]] && OHA=$HOME/.cargo/bin/oha
GEOIP2_MODULE=/usr/lib/nginx/modules/ngx_http_geoip2_module.so
for t in nginx haproxy wrk ldd; do command -v $t >/dev/null || die "$t is missing (bench/run.sh installs the peers: make bench, or apt-get install nginx libnginx-mod-http-geoip2 haproxy wrk)"; done
[[ -e $GEOIP2_MODULE ]] || die "$GEOIP2_MODULE is missing (apt-get install libnginx-mod-http-geoip2)"
[[ -n "$OHA" ]] || die "oha is missing (cargo install oha --locked)"

GW_PHASES=
if [[ $BUILD == 1 ]]; then
    log "building release binaries"
    if [[ $PHASES == 1 ]]; then
        cargo build --release --features phase-timing --bin dcr-gateway >&2
        GW_PHASES=$(mktemp /tmp/dcr-gateway-phases.XXXXXX)
        cp target/release/dcr-gateway "$GW_PHASES"
    fi
    cargo build --release --bin dcr-gateway --example bare_proxy --example bench_fixtures >&2
elif [[ $PHASES == 1 && -n ${BUNDLE_GW_PHASES:-} ]]; then
    GW_PHASES=$(mktemp /tmp/dcr-gateway-phases.XXXXXX)
    cp "$BUNDLE_GW_PHASES" "$GW_PHASES"
fi
for b in target/release/dcr-gateway target/release/examples/bare_proxy target/release/examples/bench_fixtures; do
    [[ -x $b ]] || die "$b is missing (cargo build --release --bin dcr-gateway --example bare_proxy --example bench_fixtures)"
done

rm -rf "$OUT"
mkdir -p "$OUT"/{bin,lib,modules,fixtures,conf}
cp target/release/dcr-gateway target/release/examples/bare_proxy target/release/examples/bench_fixtures "$OUT/bin/"
if [[ -n $GW_PHASES ]]; then
    mv "$GW_PHASES" "$OUT/bin/dcr-gateway-phases"
    chmod 755 "$OUT/bin/dcr-gateway-phases"
fi
cp "$(command -v nginx)" "$(command -v haproxy)" "$(command -v wrk)" "$OHA" "$OUT/bin/"
cp "$GEOIP2_MODULE" "$OUT/modules/"
# Debug info is not needed to run; it is most of the size of the Rust binaries.
for b in dcr-gateway dcr-gateway-phases bare_proxy bench_fixtures oha; do
    [[ -e "$OUT/bin/$b" ]] && { strip --strip-debug "$OUT/bin/$b" 2>/dev/null || true; }
done

log "collecting shared libraries"
LOADER=
for f in "$OUT"/bin/* "$OUT"/modules/*; do
    while read -r lib; do
        [[ -n $lib ]] || continue
        case $lib in
            */ld-linux*) LOADER=$lib ;;
            *) cp -nL "$lib" "$OUT/lib/" ;;
        esac
    done < <(ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }')
done
[[ -n $LOADER ]] || die "no dynamic loader found in ldd's output"
cp -L "$LOADER" "$OUT/lib/ld-linux-x86-64.so.2"
# Libraries that dlopen pulls in at run time (not in ldd's list): glibc's NSS and the
# libgcc_s that Rust's unwinder opens.
for extra in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2 libgcc_s.so.1; do
    p=$(ldconfig -p 2>/dev/null | awk -v n="$extra" '$1 == n && /x86-64/ { print $NF; exit }')
    [[ -n $p && ! -e "$OUT/lib/$extra" ]] && cp -L "$p" "$OUT/lib/"
done

log "generating fixtures ($SIZES entries)"
"$OUT/bin/bench_fixtures" "$OUT/fixtures" $SIZES >&2

log "rendering configuration templates"
# shellcheck source=bench/gateway-config.sh
source "$ROOT/bench/gateway-config.sh"
# Placeholders run.py fills in: @DIR@ @PORT@ @ADMIN@ @UPSTREAM@ @THREADS@.
gateway_toml @DIR@ @PORT@ @ADMIN@ @UPSTREAM@ @THREADS@ true 128 0 0 >"$OUT/conf/gateway.toml.in"
gateway_toml @DIR@ @PORT@ @ADMIN@ @UPSTREAM@ @THREADS@ true 128 0 1 >"$OUT/conf/gateway-limited.toml.in"
cp bench/post.lua bench/flood.lua bench/body.json "$OUT/conf/"
cp bench/bundle_run.py "$OUT/run.py"
chmod 755 "$OUT/run.py"

{
    echo "dcr-gateway benchmark bundle, commit $REV ($(git log -1 --format=%cI 2>/dev/null || echo ?)), packed $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "fixture sizes: $SIZES; phase-timing build: $( [[ -n $GW_PHASES ]] && echo yes || echo no ); binaries: $( [[ $BUILD == 1 ]] && echo "built from this commit$( git diff --quiet HEAD -- src Cargo.toml examples 2>/dev/null || echo " with uncommitted changes" )" || echo "target/release as found (BUNDLE_BUILD=0)" )"
    echo "$(rustc --version)"
    echo "$(nginx -v 2>&1)"
    echo "HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')"
    echo "$(wrk -v 2>&1 | head -1)"
    echo "$("$OHA" --version)"
    echo "loader: $LOADER ($(cd "$OUT" && "./lib/ld-linux-x86-64.so.2" --version 2>/dev/null | head -1 || echo ?))"
    echo
    (cd "$OUT" && find . -type f ! -name MANIFEST | sort | xargs sha256sum)
} >"$OUT/MANIFEST"

# Every binary must start through the bundled loader with only the bundled libraries.
for check in "nginx -v:nginx version" "haproxy -v:HAProxy version" "wrk -v:wrk" "oha --version:oha" \
    "dcr-gateway --version:dcr-gateway" "bare_proxy --help:" ; do
    cmd=${check%%:*}; want=${check#*:}
    set -- $cmd
    got=$(cd "$OUT" && env -i ./lib/ld-linux-x86-64.so.2 --library-path ./lib "./bin/$1" "${@:2}" 2>&1 || true)
    if [[ -n $want ]]; then
        grep -qi "$want" <<<"$got" || die "bin/$1 does not start through the bundled loader: $got"
    else
        grep -q "error while loading shared libraries" <<<"$got" && die "bin/$1: $got"
    fi
done

# ... and every library any of them loads resolves inside lib/ (none from the packing machine).
for f in "$OUT"/bin/* "$OUT"/modules/*; do
    outside=$(cd "$OUT" && ./lib/ld-linux-x86-64.so.2 --library-path ./lib --list "./${f#"$OUT"/}" 2>&1 \
        | grep -E '=>|not found' | grep -v '=> \./lib/' || true)
    [[ -z $outside ]] || die "${f#"$OUT"/} loads libraries from outside the bundle: $outside"
done

TAR=$(dirname "$OUT")/$(basename "$OUT").tar.gz
tar -C "$(dirname "$OUT")" -czf "$TAR" "$(basename "$OUT")"
log "bundle: $OUT ($(du -sh "$OUT" | cut -f1)), tarball: $TAR ($(du -h "$TAR" | cut -f1))"
echo "$OUT"
