//! Prometheus metrics. No label carries an unbounded value (IP, client name, path): labels
//! are scopes, outcomes, RFC 7591 error codes, status classes and rule ids (bounded by the
//! rules file). No label value is empty (`error="none"`, `rules_sha256="none"`), and every
//! series a dashboard or an alert reads exists at zero from the start ([`Metrics::new`]), so
//! `rate()` and `absent()` work before the first event. A redirect is `redirected` in every
//! outcome/result label (`requests_total`, `registrations_total`); `acl_matches_total{action}`
//! keeps the rule file's action words (`block`, `allow`, `redirect`, `log`).

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
    /// `dcr_gateway_known_client_registrations_total{known_client, result}`: registrations
    /// proven to be a catalogued client's (conf/known-clients.toml).
    pub known_client_registrations: IntCounterVec,
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
    /// HTTP/2 connections shut (GOAWAY) because the client abandoned too many accepted streams.
    pub h2_connections_closed: IntCounter,
    /// 1 when the IdP's own discovery document advertises registration off the gateway.
    pub idp_discovery_off_gateway: IntGauge,
    /// Request heads the gateway answered itself before Pingora parsed them, by kind
    /// (timeout, too_large, malformed).
    pub head_errors: IntCounterVec,
    /// IdP answers rewritten to keep clients on the gateway, by kind (discovery, registration).
    pub answers_rewritten: IntCounterVec,
    /// Registration members the IdP answered differently from what the gateway sent.
    pub registration_differences: IntCounterVec,
    /// Registrations the IdP changed that the gateway refused and deleted at the IdP
    /// (`[upstream] refuse_changed_registrations`), by result (deleted, failed).
    pub registrations_undone: IntCounterVec,
    /// `dcr_gateway_build_info{version, commit}`, always 1.
    pub build_info: IntGaugeVec,
}

/// Every [`Outcome`], in `as usize` order (a test checks it against `Outcome::COUNT`).
pub const OUTCOMES: [Outcome; 8] = [
    Outcome::Allowed,
    Outcome::Blocked,
    Outcome::Redirected,
    Outcome::Invalid,
    Outcome::Disabled,
    Outcome::UpstreamError,
    Outcome::RateLimited,
    Outcome::Unauthorized,
];

/// Every scope, in `scope_index` order.
pub const SCOPES: [Scope; 3] = [Scope::Dcr, Scope::Management, Scope::Authentication];

/// `registrations_total{result}` values without an error code (`error="none"`).
pub const REGISTRATION_RESULTS: [&str; 10] = [
    "created",
    "accepted",
    "rejected_by_idp",
    "aborted",
    "blocked",
    "redirected",
    "disabled",
    "rate_limited",
    "unauthorized",
    "upstream_error",
];

/// `registrations_total{result="invalid", error}`: the RFC 7591 codes and `invalid_request`.
pub const INVALID_REGISTRATION_ERRORS: [&str; 5] = [
    "invalid_redirect_uri",
    "invalid_client_metadata",
    "invalid_software_statement",
    "unapproved_software_statement",
    "invalid_request",
];

/// The label value that stands for "no value" (Prometheus treats an empty value as an absent
/// label, which breaks `by (error)` aggregations).
pub const NONE: &str = "none";

/// The commit the binary was built from (build.rs: `DCR_GATEWAY_COMMIT` or `git rev-parse`),
/// `unknown` outside a git checkout (or when built without build.rs).
pub const BUILD_COMMIT: &str = match option_env!("DCR_GATEWAY_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

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
        let known_client_registrations = counter(
            r,
            "dcr_gateway_known_client_registrations_total",
            "Registration requests proven to be a catalogued MCP client's (conf/known-clients.toml), by client id and result.",
            &["known_client", "result"],
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
        let h2_connections_closed = IntCounter::new(
            "dcr_gateway_h2_abandoned_stream_closes_total",
            "HTTP/2 connections shut with GOAWAY because the client reset or abandoned too many accepted streams.",
        )
        .expect("static metric definition");
        r.register(Box::new(h2_connections_closed.clone())).expect("unique metric name");
        let idp_discovery_off_gateway = IntGauge::new(
            "dcr_gateway_idp_discovery_off_gateway",
            "1 when the IdP's own discovery document advertises a registration endpoint that is not on the gateway \
             (at start and after reloads that change the upstream or routes).",
        )
        .expect("static metric definition");
        r.register(Box::new(idp_discovery_off_gateway.clone())).expect("unique metric name");
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
        let registrations_undone = counter(
            r,
            "dcr_gateway_registrations_undone_total",
            "Registrations the IdP changed, refused and deleted at the IdP (refuse_changed_registrations), by result (deleted, failed: the client is left at the IdP).",
            &["result"],
        );
        for result in ["deleted", "failed"] {
            registrations_undone.with_label_values(&[result]);
        }
        let build_info = IntGaugeVec::new(
            Opts::new("dcr_gateway_build_info", "The running binary: version and git commit (value is always 1)."),
            &["version", "commit"],
        )
        .expect("static metric definition");
        r.register(Box::new(build_info.clone())).expect("unique metric name");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), BUILD_COMMIT]).set(1);
        register_process_collector(r);

        // Every series a dashboard panel or an alert reads, at zero from the start.
        for scope in SCOPES {
            for outcome in OUTCOMES {
                requests.with_label_values(&[scope.as_str(), outcome.as_str()]);
            }
            request_duration.with_label_values(&[scope.as_str()]);
            check_duration.with_label_values(&[scope.as_str()]);
        }
        for result in REGISTRATION_RESULTS {
            registrations.with_label_values(&[result, NONE]);
        }
        for error in INVALID_REGISTRATION_ERRORS {
            registrations.with_label_values(&["invalid", error]);
        }
        for class in ["2xx", "3xx", "4xx", "5xx"] {
            upstream_responses.with_label_values(&[class]);
        }
        for kind in ["connect_failure", "timeout", "no_healthy_upstream", "other"] {
            upstream_errors.with_label_values(&[kind]);
        }
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        for database in ["country", "asn"] {
            geoip_misses.with_label_values(&[database]);
        }
        for limit in ["ip", "prefix", "global", "hosted_client"] {
            rate_limited.with_label_values(&[limit]);
        }
        for backend in ["local", "redis", "local_fallback", "fail_open", "fail_closed"] {
            for result in ["allowed", "limited", "unavailable"] {
                rate_limit_decisions.with_label_values(&[backend, result]);
            }
        }
        let hot = Hot {
            requests: std::array::from_fn(|_| OnceLock::new()),
            request_duration: std::array::from_fn(|_| OnceLock::new()),
            check_duration: std::array::from_fn(|_| OnceLock::new()),
            upstream_class: std::array::from_fn(|_| OnceLock::new()),
        };
        Metrics {
            build_info,
            answers_rewritten,
            registration_differences,
            registrations_undone,
            connections_open,
            connections_refused,
            h2_connections_closed,
            idp_discovery_off_gateway,
            head_errors,
            hot,
            rate_limited,
            rate_limit_decisions,
            registry,
            requests,
            acl_matches,
            registrations,
            known_client_registrations,
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

    /// Publish the identity of a newly active snapshot (an empty hash, no rules file, is
    /// `none`).
    pub fn set_active(&self, config_sha256: &str, rules_sha256: &str, rules: usize) {
        let or_none = |s: &str| if s.is_empty() { NONE.to_string() } else { s.to_string() };
        self.config_info.reset();
        self.config_info.with_label_values(&[&or_none(config_sha256), &or_none(rules_sha256)]).set(1);
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

/// `process_*` (CPU seconds, resident and virtual memory, open and max file descriptors,
/// start time, threads) from /proc on Linux; nothing elsewhere.
fn register_process_collector(r: &Registry) {
    #[cfg(target_os = "linux")]
    {
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(e) = r.register(Box::new(pc)) {
            tracing::warn!("metrics: process collector not registered: {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = r;
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_list_is_complete_and_ordered() {
        assert_eq!(OUTCOMES.len(), Outcome::COUNT);
        for (i, o) in OUTCOMES.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
        for (i, s) in SCOPES.iter().enumerate() {
            assert_eq!(scope_index(*s), i);
        }
    }

    #[test]
    fn registration_labels_cover_what_the_proxy_counts() {
        use crate::core::record::registration_result;
        for o in OUTCOMES {
            for status in [None, Some(200), Some(201), Some(400)] {
                let (result, error) = registration_result(o, None, status);
                assert!(!error.is_empty(), "{result}: empty error label");
                if result == "invalid" {
                    assert!(INVALID_REGISTRATION_ERRORS.contains(&error), "{error}");
                } else {
                    assert!(REGISTRATION_RESULTS.contains(&result), "{result} is not zero-initialised");
                    assert_eq!(error, NONE);
                }
            }
        }
        for code in [
            crate::dcr::ErrorCode::InvalidRedirectUri,
            crate::dcr::ErrorCode::InvalidClientMetadata,
            crate::dcr::ErrorCode::InvalidSoftwareStatement,
            crate::dcr::ErrorCode::UnapprovedSoftwareStatement,
        ] {
            assert!(INVALID_REGISTRATION_ERRORS.contains(&code.as_str()), "{code}");
        }
    }

    #[test]
    fn no_label_value_is_empty_and_build_info_is_set() {
        let m = Metrics::new();
        m.set_active("abc", "", 0);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("=\"\""), "an empty label value:\n{text}");
        assert!(text.contains("rules_sha256=\"none\""), "{text}");
        assert!(text.contains(&format!("dcr_gateway_build_info{{commit=\"{BUILD_COMMIT}\",version=")), "{text}");
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
