//! Operations: metrics move with outcomes, audit lines are complete and secret-free,
//! readiness follows upstream health, graceful upgrade hands sockets over, a single worker
//! (single-threaded runtime) does all of it too.

mod support;

use std::time::Duration;

use support::upstream::Upstream;
use support::*;

const RULES: &str = r#"[{"id":"block-testnet","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"ipv4_cidrs":["192.0.2.0/24"]}}}]"#;

fn register(gw: &Gateway, ip: &str, body: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = agent()
        .post(&gw.url("/oidc/register"))
        .set("x-forwarded-for", ip)
        .set("user-agent", "ops-test/1.0")
        .set("content-type", "application/json");
    if let Some(a) = auth {
        req = req.set("authorization", a);
    }
    response_parts(req.send_string(body))
}

const CONFIDENTIAL: &str = r#"{"client_name":"Ops Confidential","redirect_uris":["https://ops.example.com/cb","https://login.ops.example.com/cb"],"token_endpoint_auth_method":"client_secret_post","client_secret":"client-chosen-secret-123"}"#;

#[test]
fn metrics_follow_outcomes() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).rules(RULES).start();
    assert_eq!(register(&gw, "203.0.113.1", CONFIDENTIAL, None).0, 201);
    assert_eq!(register(&gw, "192.0.2.1", CONFIDENTIAL, None).0, 403);
    assert_eq!(register(&gw, "203.0.113.1", r#"{"redirect_uris":["http://evil.example/cb"]}"#, None).0, 400);
    assert_eq!(http_get(&gw.url("/authorize")).0, 200);
    // Every request has been through its logging phase once the last one is counted.
    gw.wait_metric("dcr_gateway_requests_total{outcome=\"allowed\",scope=\"authentication\"}", 1.0);
    gw.wait_metric("dcr_gateway_request_duration_seconds_count{scope=\"dcr\"}", 3.0);
    // The logging phase counts the registration result after the duration: wait for it too.
    gw.wait_metric("dcr_gateway_registrations_total{error=\"none\",result=\"created\"}", 1.0);
    gw.wait_metric("dcr_gateway_registrations_total{error=\"none\",result=\"blocked\"}", 1.0);
    gw.wait_metric("dcr_gateway_registrations_total{error=\"invalid_redirect_uri\",result=\"invalid\"}", 1.0);
    let text = gw.metrics();
    let v = |s: &str| metric_value(&text, s);
    assert_eq!(v("dcr_gateway_requests_total{outcome=\"allowed\",scope=\"dcr\"}"), 1.0, "{text}");
    assert_eq!(v("dcr_gateway_requests_total{outcome=\"blocked\",scope=\"dcr\"}"), 1.0);
    assert_eq!(v("dcr_gateway_requests_total{outcome=\"invalid\",scope=\"dcr\"}"), 1.0);
    assert_eq!(v("dcr_gateway_requests_total{outcome=\"allowed\",scope=\"authentication\"}"), 1.0);
    assert_eq!(v("dcr_gateway_registrations_total{error=\"none\",result=\"created\"}"), 1.0);
    // Each registration is counted once, by how it ended: the results sum to the POSTs.
    assert!(!text.contains("result=\"forwarded\""), "{text}");
    let sum: f64 = text
        .lines()
        .filter(|l| l.starts_with("dcr_gateway_registrations_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(sum, 3.0, "{text}");
    assert_eq!(v("dcr_gateway_registrations_total{error=\"none\",result=\"blocked\"}"), 1.0);
    assert_eq!(v("dcr_gateway_registrations_total{error=\"invalid_redirect_uri\",result=\"invalid\"}"), 1.0);
    assert_eq!(v("dcr_gateway_acl_matches_total{action=\"block\",rule=\"block-testnet\"}"), 1.0);
    assert_eq!(v("dcr_gateway_upstream_responses_total{class=\"2xx\"}"), 2.0);
    assert_eq!(v("dcr_gateway_rules_loaded"), 1.0);
    assert!(v("dcr_gateway_request_duration_seconds_count{scope=\"dcr\"}") >= 3.0);
    assert!(v("dcr_gateway_check_duration_seconds_count{scope=\"dcr\"}") >= 3.0);
    assert!(text.contains("dcr_gateway_config_info{config_sha256=\""), "{text}");
    // No unbounded label values.
    assert!(!text.contains("203.0.113.1") && !text.contains("Ops Confidential") && !text.contains("/oidc/register"));
}

// ---------------------------------------------------------------------------------------------
// /metrics read by a real exposition parser (prometheus-parse), not by string matching.

fn scrape(gw: &Gateway) -> prometheus_parse::Scrape {
    let text = gw.metrics();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition format")
}

/// The scalar value of a counter, gauge or untyped sample; a histogram's count.
fn number(s: &prometheus_parse::Sample) -> f64 {
    match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
        prometheus_parse::Value::Summary(_) => f64::NAN,
    }
}

/// The samples of `metric` whose labels include every `(name, value)` of `labels`.
fn series<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a prometheus_parse::Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

fn one(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = series(scrape, metric, labels);
    assert_eq!(found.len(), 1, "{metric}{labels:?}: expected one series, found {found:?}");
    number(found[0])
}

fn sum(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    series(scrape, metric, labels).iter().map(|s| number(s)).sum()
}

const SCOPES: [&str; 3] = ["dcr", "management", "authentication"];
const OUTCOMES: [&str; 8] =
    ["allowed", "blocked", "redirected", "invalid", "disabled", "upstream_error", "rate_limited", "unauthorized"];

/// Metric names a Grafana expression reads (`dcr_gateway_…`), without histogram suffixes.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dcr-gateway-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                    out.push(e.to_string());
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&d, &mut exprs);
    let mut names = std::collections::BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("dcr_gateway_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.insert(base.to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn every_series_a_dashboard_or_alert_reads_exists_at_zero_from_the_start() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).rules(RULES).start();
    // The first scrape, before any request.
    let m = scrape(&gw);
    for scope in SCOPES {
        for outcome in OUTCOMES {
            assert_eq!(one(&m, "dcr_gateway_requests_total", &[("scope", scope), ("outcome", outcome)]), 0.0);
        }
        assert_eq!(one(&m, "dcr_gateway_request_duration_seconds", &[("scope", scope)]), 0.0);
        assert_eq!(one(&m, "dcr_gateway_check_duration_seconds", &[("scope", scope)]), 0.0);
    }
    for result in [
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
    ] {
        assert_eq!(one(&m, "dcr_gateway_registrations_total", &[("result", result), ("error", "none")]), 0.0);
    }
    for error in ["invalid_redirect_uri", "invalid_client_metadata", "invalid_software_statement", "invalid_request"] {
        assert_eq!(one(&m, "dcr_gateway_registrations_total", &[("result", "invalid"), ("error", error)]), 0.0);
    }
    for class in ["2xx", "3xx", "4xx", "5xx"] {
        assert_eq!(one(&m, "dcr_gateway_upstream_responses_total", &[("class", class)]), 0.0);
    }
    for kind in ["connect_failure", "timeout", "no_healthy_upstream", "other"] {
        assert_eq!(one(&m, "dcr_gateway_upstream_errors_total", &[("kind", kind)]), 0.0);
    }
    for limit in ["ip", "prefix", "global", "hosted_client"] {
        assert_eq!(one(&m, "dcr_gateway_rate_limited_total", &[("limit", limit)]), 0.0);
    }
    for result in ["ok", "forbidden_address", "dns_error", "timeout"] {
        assert_eq!(one(&m, "dcr_gateway_metadata_host_checks_total", &[("result", result)]), 0.0);
    }
    assert_eq!(one(&m, "dcr_gateway_rate_limit_decisions_total", &[("backend", "local"), ("result", "limited")]), 0.0);
    assert_eq!(one(&m, "dcr_gateway_reloads_total", &[("result", "failure")]), 0.0);
    assert_eq!(one(&m, "dcr_gateway_geoip_lookups_without_record_total", &[("database", "country")]), 0.0);
    assert_eq!(one(&m, "dcr_gateway_last_reload_success", &[]), 1.0);
    assert_eq!(one(&m, "dcr_gateway_rules_loaded", &[]), 1.0);

    // Build identity and the standard process metrics.
    let build = series(&m, "dcr_gateway_build_info", &[("version", env!("CARGO_PKG_VERSION"))]);
    assert_eq!(build.len(), 1, "{:?}", series(&m, "dcr_gateway_build_info", &[]));
    assert_eq!(number(build[0]), 1.0);
    let commit = build[0].labels.get("commit").unwrap_or_default();
    assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()), "commit label {commit:?}");
    for p in
        ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"]
    {
        assert!(!series(&m, p, &[]).is_empty(), "{p} missing");
    }
    assert!(one(&m, "process_resident_memory_bytes", &[]) > 0.0);

    // No empty label value anywhere (Prometheus reads it as an absent label).
    for s in &m.samples {
        for (k, v) in s.labels.iter() {
            assert!(!v.is_empty(), "{}{{{k}=\"\"}}", s.metric);
        }
    }
    // Every metric the shipped dashboard queries is in the first scrape — but the per-rule ACL
    // counter, whose series are born with a rule's first match, and the client registry's,
    // registered only with `[registry] enabled` (off here).
    let names: std::collections::BTreeSet<&str> = m.samples.iter().map(|s| s.metric.as_str()).collect();
    for d in dashboard_metrics() {
        if d == "dcr_gateway_acl_matches_total" || d.starts_with("dcr_gateway_registry_") {
            continue;
        }
        assert!(names.contains(d.as_str()), "the dashboard reads {d}, absent from the first scrape");
    }
}

#[test]
fn each_registration_is_counted_once_and_a_redirect_has_one_name() {
    let rules = r#"[
      {"id":"block-testnet","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"ipv4_cidrs":["192.0.2.0/24"]}}},
      {"id":"send-away","active":true,"priority":2,"rule":{"action":{"redirect":true,"redirect_uri":"https://elsewhere.example/"},"scope":"tenant","match":{"ipv4_cidrs":["198.51.100.0/24"]}}}
    ]"#;
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).rules(rules).start();
    let ok = r#"{"client_name":"Once","redirect_uris":["https://once.example.com/cb"]}"#;
    assert_eq!(register(&gw, "203.0.113.1", ok, None).0, 201);
    assert_eq!(register(&gw, "203.0.113.2", ok, None).0, 201);
    assert_eq!(register(&gw, "192.0.2.1", ok, None).0, 403);
    assert_eq!(register(&gw, "198.51.100.1", ok, None).0, 302);
    assert_eq!(register(&gw, "203.0.113.3", r#"{"redirect_uris":["http://evil.example/cb"]}"#, None).0, 400);
    let posts = 5.0;
    gw.wait_metric("dcr_gateway_request_duration_seconds_count{scope=\"dcr\"}", posts);
    let mut m = scrape(&gw);
    // The logging phase counts the registration after the duration: wait for the last one.
    for _ in 0..100 {
        if sum(&m, "dcr_gateway_registrations_total", &[]) >= posts {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        m = scrape(&gw);
    }
    // sum() over results is the number of registration requests: nothing counted twice.
    assert_eq!(sum(&m, "dcr_gateway_registrations_total", &[]), posts, "{:#?}", m.samples);
    assert_eq!(sum(&m, "dcr_gateway_requests_total", &[("scope", "dcr")]), posts);
    assert_eq!(one(&m, "dcr_gateway_registrations_total", &[("result", "created")]), 2.0);
    assert_eq!(one(&m, "dcr_gateway_registrations_total", &[("result", "blocked")]), 1.0);
    assert_eq!(
        one(&m, "dcr_gateway_registrations_total", &[("result", "invalid"), ("error", "invalid_redirect_uri")]),
        1.0
    );
    // The redirect: `redirected` as an outcome and as a result, never `blocked`; the rule's
    // action keeps the rule file's word.
    assert_eq!(one(&m, "dcr_gateway_registrations_total", &[("result", "redirected")]), 1.0);
    assert_eq!(one(&m, "dcr_gateway_requests_total", &[("scope", "dcr"), ("outcome", "redirected")]), 1.0);
    assert_eq!(one(&m, "dcr_gateway_requests_total", &[("scope", "dcr"), ("outcome", "blocked")]), 1.0);
    assert_eq!(one(&m, "dcr_gateway_acl_matches_total", &[("rule", "send-away"), ("action", "redirect")]), 1.0);
    assert_eq!(one(&m, "dcr_gateway_upstream_responses_total", &[("class", "2xx")]), 2.0);
    // The IdP saw the two admitted registrations only (the start-up discovery probe aside).
    let at_idp = up.recorded().into_iter().filter(|r| !r.url.starts_with("/.well-known")).count();
    assert_eq!(at_idp, 2);
}

#[test]
fn audit_lines_are_complete_and_never_carry_secrets() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).rules(RULES).start();
    let iat = "Bearer initial-access-token-XYZ987";
    for _ in 0..3 {
        assert_eq!(register(&gw, "203.0.113.7", CONFIDENTIAL, Some(iat)).0, 201);
    }
    assert_eq!(register(&gw, "192.0.2.9", CONFIDENTIAL, Some(iat)).0, 403);
    assert_eq!(
        register(
            &gw,
            "203.0.113.7",
            r#"{"client_name":"x","redirect_uris":["javascript:x"],"client_secret":"leak-me-not"}"#,
            Some(iat)
        )
        .0,
        400
    );
    let lines = gw.wait_audit(5);
    assert_eq!(lines.len(), 5, "one line per dcr request");
    // Lines are written in each request's logging phase, so their order is not guaranteed.
    let find = |decision: &str| {
        lines.iter().find(|l| l["decision"] == decision).unwrap_or_else(|| panic!("no {decision} line"))
    };
    let created = lines.iter().find(|l| l["client_id"] == "client-1").expect("line for the first created client");
    for key in [
        "timestamp",
        "request_id",
        "client_ip",
        "connecting_ip",
        "user_agent",
        "decision",
        "client_name",
        "upstream_status",
        "upstream_latency_ms",
        "client_id",
    ] {
        assert!(!created[key].is_null(), "{key} missing in {created}");
    }
    assert_eq!(created["client_ip"], "203.0.113.7");
    assert_eq!(created["connecting_ip"], "127.0.0.1");
    assert_eq!(created["client_name"], "Ops Confidential");
    assert_eq!(created["redirect_uri_hosts"], serde_json::json!(["ops.example.com", "login.ops.example.com"]));
    assert_eq!(created["upstream_status"], 201);
    assert_eq!(created["decision"], "allow");
    assert_eq!(find("block")["rule"], "block-testnet");
    assert_eq!(find("invalid")["error"], "invalid_redirect_uri");
    assert_eq!(lines.iter().filter(|l| l["decision"] == "allow").count(), 3);

    let everything = format!("{}{}{}", gw.stdout_text(), gw.stderr_text(), gw.metrics());
    for secret in [
        "SECRET-1-s3cr3t",
        "SECRET-2",
        "RAT-1-t0k3n",
        "RAT-3",
        "initial-access-token-XYZ987",
        "client-chosen-secret-123",
        "leak-me-not",
    ] {
        assert!(!everything.contains(secret), "{secret} leaked into logs or metrics");
    }
    // Open registration forwards the client's Authorization header to the IdP untouched.
    // (The start-up probe of the IdP's discovery document is not a registration.)
    let recorded: Vec<_> = up.recorded().into_iter().filter(|r| !r.url.starts_with("/.well-known")).collect();
    assert_eq!(recorded.len(), 3);
    assert!(recorded.iter().all(|r| r.header("authorization").as_deref() == Some(iat)));
}

/// A gateway whose public port another process holds does not start: before, Pingora retried
/// the bind for 30 s while the admin listener answered /readyz "ready", and whoever probed the
/// port talked to the other process.
#[test]
fn a_busy_listen_address_stops_the_start_and_names_the_key() {
    let up = Upstream::start();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let err = match GatewayBuilder::new(&up.origin()).http_port(port).try_start() {
        Ok(_) => panic!("the gateway started on a port another process holds"),
        Err(e) => e,
    };
    assert!(err.contains("exited early with exit status: 1"), "{err}");
    assert!(err.contains(&format!("listen.http: 127.0.0.1:{port}: address already in use")), "{err}");
    assert!(err.contains("not started"), "{err}");
    // Refused at once, not after Pingora's 30 bind attempts (one per second).
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    // The holder was left alone: it still accepts.
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the holder still listens");
    assert!(held.accept().is_ok());
}

#[test]
fn readiness_follows_upstream_health() {
    let up = Upstream::start();
    let port = up.addr.port();
    let gw = GatewayBuilder::new(&up.origin()).start();
    assert!(wait_until(Duration::from_secs(5), || http_get(&gw.admin_url("/readyz")).0 == 200));
    assert_eq!(http_get(&gw.admin_url("/healthz")).0, 200);
    drop(up);
    assert!(
        wait_until(Duration::from_secs(10), || http_get(&gw.admin_url("/readyz")).0 == 503),
        "unready when every upstream is down"
    );
    assert_eq!(http_get(&gw.admin_url("/healthz")).0, 200, "still alive");
    let (status, body) = http_get(&gw.url("/authorize"));
    assert_eq!(status, 502, "{body}");
    let _up = Upstream::start_on(port);
    assert!(wait_until(Duration::from_secs(10), || http_get(&gw.admin_url("/readyz")).0 == 200), "ready again");
    assert_eq!(http_get(&gw.url("/authorize")).0, 200);
}

#[test]
fn graceful_upgrade_hands_over_the_sockets() {
    let up = Upstream::start();
    let mut old = GatewayBuilder::new(&up.origin()).start();
    assert_eq!(http_get(&old.url("/authorize")).0, 200);
    let pid_file = old.path("gw.pid");
    let read_pid = || std::fs::read_to_string(&pid_file).unwrap_or_default().trim().to_string();
    // The new process reads the same configuration and waits for the sockets.
    let (mut new, new_stderr) = old.spawn_upgrade();
    // Until the sockets are handed over the pid file still names the old process: the recipe's
    // `kill -QUIT "$(cat pid_file)"` reaches it, not the new one.
    assert_eq!(read_pid(), old.pid().to_string(), "pid file before the handover");
    old.signal("QUIT");
    let status = old.wait_exit(Duration::from_secs(20)).expect("old process exits after handing over");
    assert!(status.success(), "{status}");
    // The listening address keeps answering, now served by the new process.
    assert!(wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(old.http).is_ok()));
    assert_eq!(http_get(&old.url("/authorize")).0, 200);
    assert!(
        new.try_wait().unwrap().is_none(),
        "new process is serving: {}",
        std::fs::read_to_string(&new_stderr).unwrap_or_default()
    );
    // Now the pid file names the process that serves.
    assert!(wait_until(Duration::from_secs(10), || read_pid() == new.id().to_string()), "pid file: {}", read_pid());
    let _ = new.kill();
    let _ = new.wait();
}

#[test]
fn foreground_run_writes_its_pid_file_and_plain_quiet_logs() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).start();
    // Pingora writes pid_file only when it daemonizes; the gateway runs in the foreground.
    let pid = std::fs::read_to_string(gw.path("gw.pid")).expect("pid file written in the foreground");
    assert_eq!(pid.trim(), gw.pid().to_string());
    assert_eq!(http_get(&gw.url("/authorize")).0, 200);
    let log = gw.stderr_text();
    // stderr is a file here, not a terminal: no ANSI colour codes.
    assert!(!log.contains('\u{1b}'), "escape codes in a non-terminal log:\n{log}");
    // The gateway's own info lines are there; Pingora's start-up chatter (info) is not.
    assert!(log.contains("configuration loaded"), "{log}");
    for chatter in ["Bootstrap starting", "Starting service", "Server starting"] {
        assert!(!log.contains(chatter), "Pingora's {chatter:?} reached the info log:\n{log}");
    }
}

#[test]
fn single_worker_serves_reloads_and_drains() {
    // threads = 1 runs on a single-threaded runtime (work stealing is off with one worker):
    // concurrent clients, the reload's blocking task and the SIGTERM drain must all work there.
    let up = Upstream::start();
    let mut gw = GatewayBuilder::new(&up.origin()).threads(1).rules(RULES).start();
    let body = r#"{"client_name":"Single Worker","redirect_uris":["https://one.example.com/cb"]}"#;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let url = gw.url("/oidc/register");
            std::thread::spawn(move || {
                let r = agent()
                    .post(&url)
                    .set("x-forwarded-for", &format!("203.0.113.{}", i + 1))
                    .set("content-type", "application/json")
                    .send_string(body);
                response_parts(r)
            })
        })
        .collect();
    for c in clients {
        let (status, text) = c.join().unwrap();
        assert_eq!(status, 201, "{text}");
    }
    assert_eq!(http_get(&gw.url("/authorize")).0, 200);
    let blocked = RULES.replace("192.0.2.0/24", "203.0.113.0/24");
    write_file(&gw.path("rules.json"), &blocked);
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || register(&gw, "203.0.113.9", body, None).0 == 403),
        "the reload did not take effect: {}",
        gw.stderr_text()
    );
    assert_eq!(register(&gw, "198.51.100.7", body, None).0, 201);
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(15)).expect("the gateway did not exit on SIGTERM");
    assert!(status.success(), "exit status {status:?}: {}", gw.stderr_text());
}

#[test]
fn check_reports_every_problem_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    // Two typos, a type error, a URL without its scheme, a rules file with a bad rule and a pid
    // file in a missing directory: one run names them all.
    std::fs::write(
        &cfg,
        "[server]\nthreadz = 3\npid_file = \"/nonexistent-dir/gw.pid\"\n[upstream]\norigins = [\"127.0.0.1:3000\"]\n\
         conect_timeout_ms = 5\n[log]\nlevel = 7\n[acl]\nrules = \"rules.json\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.json"),
        r#"[{"id":"bad-cidr","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"ipv4_cidrs":["300.0.0.0/8"]}}}]"#,
    )
    .unwrap();
    let out = std::process::Command::new(support::BIN).arg("check").arg("-c").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        "gateway.toml:2: server.threadz: unknown field `threadz`",
        "did you mean `threads`?",
        "gateway.toml:6: upstream.conect_timeout_ms",
        "gateway.toml:8: log.level",
        "gateway.toml:5: upstream.origins[0]: \"127.0.0.1:3000\" has no scheme: add http:// or https://",
        "300.0.0.0/8",
        "server.pid_file: directory /nonexistent-dir does not exist",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("configuration check failed (6 problem(s))"), "{err}");
}
