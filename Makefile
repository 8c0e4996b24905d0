# dcr-gateway — the two commands a new user needs:
#   make run    the gateway in front of the demo IdP (127.0.0.1:8080 → 127.0.0.1:3000)
#   make test   every test of the project
SHELL := /bin/bash
CARGO ?= cargo
NPM ?= npm
DEMO_IDP := deploy/demo-idp
# Free country database (NRO data via ip-location-db, CC BY 4.0), fetched once by `make run`.
GEOIP_PKG := @ip-location-db/geo-whois-asn-country-mmdb@2.3.2026061719
GEOIP_DB := geoip/geo-whois-asn-country.mmdb
# Where cargo puts the release binary (CARGO_TARGET_DIR when the environment sets one).
RELEASE_BIN := $(or $(CARGO_TARGET_DIR),target)/release/dcr-gateway

.PHONY: run test prereqs build release dist demo-idp-deps console-test-deps geoip check bench bench-bundle bench-micro bench-connections fuzz fuzz-check clean

run: prereqs release demo-idp-deps $(GEOIP_DB)
	@DCR_GATEWAY_BIN=$(RELEASE_BIN) $(DEMO_IDP)/run-demo.sh

# Every test, the doc tests too even when a test failed (the exit status is the first failure's),
# and last the per-phase CPU accounting of the benchmark build (feature phase-timing; it rebuilds
# the gateway with the feature, so it runs after everything that uses the default binary).
test: prereqs demo-idp-deps console-test-deps
	@status=0; \
	$(CARGO) test --all-targets --no-fail-fast || status=$$?; \
	$(CARGO) test --doc || { rc=$$?; [ $$status -ne 0 ] || status=$$rc; }; \
	$(CARGO) test --features phase-timing --test phases || { rc=$$?; [ $$status -ne 0 ] || status=$$rc; }; \
	exit $$status

# System packages a fresh Debian machine lacks (cmake, pkg-config, libssl-dev, Node.js >= 20.18,
# redis-server); quick when they are there. .ci/run calls the same script.
prereqs:
	@./scripts/prereqs.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release --bin dcr-gateway

# Release artefacts in dist/: the binary stripped the way Debian strips packages
# (--strip-unneeded), its debug info and symbols split off into dcr-gateway.debug (found by gdb,
# perf and addr2line through the .gnu_debuglink section), and SHA256SUMS. build.rs records the
# commit for dcr_gateway_build_info (git rev-parse, or DCR_GATEWAY_COMMIT when set).
DIST := dist
dist: prereqs release
	@mkdir -p $(DIST)
	@rm -f $(DIST)/dcr-gateway $(DIST)/dcr-gateway.debug $(DIST)/SHA256SUMS
	objcopy --only-keep-debug $(RELEASE_BIN) $(DIST)/dcr-gateway.debug
	chmod 0644 $(DIST)/dcr-gateway.debug
	objcopy --strip-unneeded --add-gnu-debuglink=$(DIST)/dcr-gateway.debug $(RELEASE_BIN) $(DIST)/dcr-gateway
	cd $(DIST) && sha256sum dcr-gateway dcr-gateway.debug > SHA256SUMS
	@cd $(DIST) && ls -l dcr-gateway dcr-gateway.debug && ./dcr-gateway --version

demo-idp-deps: $(DEMO_IDP)/node_modules/.package-lock.json

# puppeteer-core for the admin console's browser test (tests/console.rs drives Debian's chromium).
console-test-deps: tests/console/node_modules/.package-lock.json

tests/console/node_modules/.package-lock.json: tests/console/package.json tests/console/package-lock.json
	cd tests/console && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

$(DEMO_IDP)/node_modules/.package-lock.json: $(DEMO_IDP)/package.json $(DEMO_IDP)/package-lock.json
	cd $(DEMO_IDP) && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

geoip: $(GEOIP_DB)

$(GEOIP_DB):
	@mkdir -p geoip/.download
	cd geoip/.download && $(NPM) pack --silent $(GEOIP_PKG) >/dev/null
	tar -xzf geoip/.download/ip-location-db-geo-whois-asn-country-mmdb-*.tgz -C geoip/.download
	cp geoip/.download/package/geo-whois-asn-country.mmdb $(GEOIP_DB)
	cp geoip/.download/package/NRO_LICENSE geoip/NRO_LICENSE.txt
	@rm -rf geoip/.download
	@echo "GeoIP country database: $(GEOIP_DB) (ip-location-db, NRO data, CC BY 4.0)"

check: release $(GEOIP_DB)
	$(RELEASE_BIN) check -c conf/gateway.toml
	$(RELEASE_BIN) test-rules -c conf/gateway.toml conf/rules.tests.json

bench-micro:
	$(CARGO) bench --bench acl --bench dcr --bench request

# Memory held per idle / half-open client connection, and what is given back after they close.
bench-connections:
	./bench/idle_connections.sh $${CONNECTIONS:-2000}

# Coverage-guided fuzzing of the registration check (needs a nightly toolchain and cargo-fuzz).
# New inputs go to fuzz/work (git-ignored); the committed seed corpus is read only.
fuzz:
	mkdir -p fuzz/work/dcr_check fuzz/work/request_head
	cd fuzz && cargo +nightly fuzz run dcr_check work/dcr_check corpus/dcr_check -- -max_total_time=$${FUZZ_SECONDS:-60} -max_len=4096
	cd fuzz && cargo +nightly fuzz run request_head work/request_head corpus/request_head -- -max_total_time=$${FUZZ_SECONDS:-60} -max_len=2048

# The fuzz targets compile (CI runs this; fuzzing itself needs nightly and cargo-fuzz).
fuzz-check:
	cd fuzz && $(CARGO) check --bins

clean:
	$(CARGO) clean
	rm -rf $(DEMO_IDP)/node_modules $(GEOIP_DB) $(DIST)

# End-to-end benchmark against nginx, HAProxy and bare Pingora; writes docs/benchmarks.md (bench/README.md).
bench:
	./bench/run.sh

# The same benchmark packed (binaries, peers, their libraries, fixtures, a Python runner) for an
# offline many-core machine: bench/README.md, "Running on another machine".
bench-bundle:
	./bench/bundle.sh
