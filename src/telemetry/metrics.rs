//! Prometheus metrics. No label carries an unbounded value (IP, client name, path): labels
//! are scopes, outcomes, RFC 7591 error codes, status classes and rule ids (bounded by the
//! rules file).

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use super::Outcome;
use crate::scope::Scope;

pub struct Metrics {
    registry: Registry,
    hot: Hot,
    pub requests: IntCounterVec,
    pub acl_matches: IntCounterVec,
    pub registrations: IntCounterVec,
    pub request_duration: HistogramVec,
    pub check_duration: HistogramVec,
    pub upstream_responses: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub reloads: IntCounterVec,
    pub rules_loaded: IntGauge,
    pub config_info: IntGaugeVec,
    pub geoip_misses: IntCounterVec,
    pub upstream_healthy: IntGauge,
    pub last_reload_success: IntGauge,
    /// 1 while the configuration file differs from the running one in a key that only a
    /// restart applies (`reload::restart`), 0 when it matches.
    pub restart_required: IntGauge,
    pub body_read_duration: Histogram,
    pub audit_write_errors: IntCounter,
    pub rate_limited: IntCounterVec,
    pub rate_limit_decisions: IntCounterVec,
    /// Open client connections (public listeners).
    pub connections_open: IntGauge,
    /// Client connections closed at once because `[server] max_connections` were open.
    pub connections_refused: IntCounter,
    /// Request heads the gateway answered itself before Pingora parsed them, by kind
    /// (timeout, too_large, malformed).
    pub head_errors: IntCounterVec,
    /// IdP answers rewritten to keep clients on the gateway, by kind (discovery, registration).
    pub answers_rewritten: IntCounterVec,
    /// Registration members the IdP answered differently from what the gateway sent.
    pub registration_differences: IntCounterVec,
}

/// Series every request touches, resolved on first use: `with_label_values` hashes the label
/// values and takes a lock on each call. Lazily, so /metrics shows the same series as before.
struct Hot {
    /// `requests_total` by scope × outcome.
    requests: [OnceLock<IntCounter>; 3 * Outcome::COUNT],
    request_duration: [OnceLock<Histogram>; 3],
    check_duration: [OnceLock<Histogram>; 3],
    /// `upstream_responses_total` by status class 2xx..5xx.
    upstream_class: [OnceLock<IntCounter>; 4],
}

fn scope_index(scope: Scope) -> usize {
    match scope {
        Scope::Dcr => 0,
        Scope::Management => 1,
        Scope::Authentication => 2,
    }
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    reg.register(Box::new(c.clone())).expect("unique metric name");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let requests = counter(
            r,
            "dcr_gateway_requests_total",
            "Requests by scope and outcome (allowed, blocked, redirected, invalid, upstream_error, ...).",
            &["scope", "outcome"],
        );
        let acl_matches = counter(
            r,
            "dcr_gateway_acl_matches_total",
            "ACL rule matches by rule id and action, log rules included (Auth0's acls_summary).",
            &["rule", "action"],
        );
        let registrations = counter(
            r,
            "dcr_gateway_registrations_total",
            "Registration requests by result (forwarded, created, rejected_by_idp, invalid, blocked, disabled, ...) and RFC 7591 error code.",
            &["result", "error"],
        );
        let buckets = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "dcr_gateway_request_duration_seconds",
                "Request duration from first byte to logging, by scope.",
            )
            .buckets(buckets),
            &["scope"],
        )
        .expect("static metric definition");
        r.register(Box::new(request_duration.clone())).expect("unique metric name");
        let check_duration = HistogramVec::new(
            HistogramOpts::new(
                "dcr_gateway_check_duration_seconds",
                "Time spent in the gateway's own checks (signals, ACL, payload validation), by scope.",
            )
            .buckets(vec![0.000_001, 0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005]),
            &["scope"],
        )
        .expect("static metric definition");
        r.register(Box::new(check_duration.clone())).expect("unique metric name");
        let body_read_duration = Histogram::with_opts(
            HistogramOpts::new(
                "dcr_gateway_registration_body_read_seconds",
                "Time to receive a registration body from the client.",
            )
            .buckets(vec![0.0001, 0.001, 0.01, 0.1, 0.5, 1.0, 5.0]),
        )
        .expect("static metric definition");
        r.register(Box::new(body_read_duration.clone())).expect("unique metric name");
        let upstream_responses = counter(
            r,
            "dcr_gateway_upstream_responses_total",
            "Upstream responses by status class (2xx, 3xx, 4xx, 5xx).",
            &["class"],
        );
        let upstream_errors = counter(
            r,
            "dcr_gateway_upstream_errors_total",
            "Upstream failures by kind (connect_failure, timeout, no_healthy_upstream, other).",
            &["kind"],
        );
        let reloads =
            counter(r, "dcr_gateway_reloads_total", "Snapshot reloads by result (success, failure).", &["result"]);
        let rules_loaded = IntGauge::new("dcr_gateway_rules_loaded", "ACL rules in the active snapshot.")
            .expect("static metric definition");
        r.register(Box::new(rules_loaded.clone())).expect("unique metric name");
        let last_reload_success = IntGauge::new(
            "dcr_gateway_last_reload_success",
            "1 when the most recent reload attempt succeeded, 0 when it failed and an older snapshot is serving.",
        )
        .expect("static metric definition");
        r.register(Box::new(last_reload_success.clone())).expect("unique metric name");
        let restart_required = IntGauge::new(
            "dcr_gateway_restart_required",
            "1 while the configuration file changes a key that only a restart or graceful upgrade applies (the reload log names them), 0 otherwise.",
        )
        .expect("static metric definition");
        r.register(Box::new(restart_required.clone())).expect("unique metric name");
        let config_info = IntGaugeVec::new(
            Opts::new(
                "dcr_gateway_config_info",
                "Active configuration: SHA-256 of the config and rules files (value is always 1).",
            ),
            &["config_sha256", "rules_sha256"],
        )
        .expect("static metric definition");
        r.register(Box::new(config_info.clone())).expect("unique metric name");
        let geoip_misses = counter(
            r,
            "dcr_gateway_geoip_lookups_without_record_total",
            "GeoIP lookups that found no record, by database (country, asn).",
            &["database"],
        );
        let upstream_healthy =
            IntGauge::new("dcr_gateway_upstream_healthy_origins", "Upstream origins currently passing health checks.")
                .expect("static metric definition");
        r.register(Box::new(upstream_healthy.clone())).expect("unique metric name");
        let audit_write_errors =
            IntCounter::new("dcr_gateway_audit_write_errors_total", "Audit lines that could not be written.")
                .expect("static metric definition");
        r.register(Box::new(audit_write_errors.clone())).expect("unique metric name");
        let rate_limited = counter(
            r,
            "dcr_gateway_rate_limited_total",
            "Requests refused with 429, by the limit exceeded (ip, prefix, global).",
            &["limit"],
        );
        let rate_limit_decisions = counter(
            r,
            "dcr_gateway_rate_limit_decisions_total",
            "Rate-limit checks by the backend that answered (local, redis, local_fallback, fail_open, fail_closed) and result.",
            &["backend", "result"],
        );
        let connections_open =
            IntGauge::new("dcr_gateway_connections_open", "Open client connections on the public listeners.")
                .expect("static metric definition");
        r.register(Box::new(connections_open.clone())).expect("unique metric name");
        let connections_refused = IntCounter::new(
            "dcr_gateway_connections_refused_total",
            "Client connections closed at once because [server] max_connections were open.",
        )
        .expect("static metric definition");
        r.register(Box::new(connections_refused.clone())).expect("unique metric name");
        let head_errors = counter(
            r,
            "dcr_gateway_request_head_errors_total",
            "Request heads answered by the gateway before parsing: timeout (408), too_large (431), malformed (400).",
            &["kind"],
        );
        for kind in ["timeout", "too_large", "malformed"] {
            head_errors.with_label_values(&[kind]);
        }
        let answers_rewritten = counter(
            r,
            "dcr_gateway_answers_rewritten_total",
            "IdP answers rewritten to point at the gateway, by kind (discovery, registration).",
            &["kind"],
        );
        for kind in ["discovery", "registration"] {
            answers_rewritten.with_label_values(&[kind]);
        }
        let registration_differences = counter(
            r,
            "dcr_gateway_registration_differences_total",
            "Registrations whose IdP answer differs from what the gateway sent, by member.",
            &["member"],
        );
        for member in crate::core::verify::VERIFIED_MEMBERS {
            registration_differences.with_label_values(&[member]);
        }
        let hot = Hot {
            requests: std::array::from_fn(|_| OnceLock::new()),
            request_duration: std::array::from_fn(|_| OnceLock::new()),
            check_duration: std::array::from_fn(|_| OnceLock::new()),
            upstream_class: std::array::from_fn(|_| OnceLock::new()),
        };
        Metrics {
            answers_rewritten,
            registration_differences,
            connections_open,
            connections_refused,
            head_errors,
            hot,
            rate_limited,
            rate_limit_decisions,
            registry,
            requests,
            acl_matches,
            registrations,
            request_duration,
            check_duration,
            upstream_responses,
            upstream_errors,
            reloads,
            rules_loaded,
            config_info,
            geoip_misses,
            upstream_healthy,
            last_reload_success,
            restart_required,
            body_read_duration,
            audit_write_errors,
        }
    }

    /// One finished request: `requests_total{scope, outcome}`.
    pub fn count_request(&self, scope: Scope, outcome: Outcome) {
        self.hot.requests[scope_index(scope) * Outcome::COUNT + outcome as usize]
            .get_or_init(|| self.requests.with_label_values(&[scope.as_str(), outcome.as_str()]))
            .inc();
    }

    /// `request_duration_seconds` and `check_duration_seconds` of one request.
    pub fn observe_durations(&self, scope: Scope, total_secs: f64, check_secs: f64) {
        let i = scope_index(scope);
        self.hot.request_duration[i]
            .get_or_init(|| self.request_duration.with_label_values(&[scope.as_str()]))
            .observe(total_secs);
        self.hot.check_duration[i]
            .get_or_init(|| self.check_duration.with_label_values(&[scope.as_str()]))
            .observe(check_secs);
    }

    /// `upstream_responses_total{class}` for a final (non-1xx) upstream status.
    pub fn count_upstream_response(&self, status: u16) {
        let (i, class) = match status {
            200..=299 => (0, "2xx"),
            300..=399 => (1, "3xx"),
            400..=499 => (2, "4xx"),
            _ => (3, "5xx"),
        };
        self.hot.upstream_class[i].get_or_init(|| self.upstream_responses.with_label_values(&[class])).inc();
    }

    /// Publish the identity of a newly active snapshot.
    pub fn set_active(&self, config_sha256: &str, rules_sha256: &str, rules: usize) {
        self.config_info.reset();
        self.config_info.with_label_values(&[config_sha256, rules_sha256]).set(1);
        self.rules_loaded.set(rules as i64);
    }

    /// Text exposition format.
    /// Add a collector computed at scrape time (e.g. the rate-limit sketch estimate).
    pub fn register_collector(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::warn!("metrics: collector not registered: {e}");
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            buf.clear();
        }
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
