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
    gw.wait_metric("dcr_gateway_registrations_total{error=\"\",result=\"created\"}", 1.0);
    gw.wait_metric("dcr_gateway_registrations_total{error=\"\",result=\"blocked\"}", 1.0);
    gw.wait_metric("dcr_gateway_registrations_total{error=\"invalid_redirect_uri\",result=\"invalid\"}", 1.0);
    let text = gw.metrics();
    let v = |s: &str| metric_value(&text, s);
    assert_eq!(v("dcr_gateway_requests_total{outcome=\"allowed\",scope=\"dcr\"}"), 1.0, "{text}");
    assert_eq!(v("dcr_gateway_requests_total{outcome=\"blocked\",scope=\"dcr\"}"), 1.0);
    assert_eq!(v("dcr_gateway_requests_total{outcome=\"invalid\",scope=\"dcr\"}"), 1.0);
    assert_eq!(v("dcr_gateway_requests_total{outcome=\"allowed\",scope=\"authentication\"}"), 1.0);
    assert_eq!(v("dcr_gateway_registrations_total{error=\"\",result=\"created\"}"), 1.0);
    // Each registration is counted once, by how it ended: the results sum to the POSTs.
    assert!(!text.contains("result=\"forwarded\""), "{text}");
    let sum: f64 = text
        .lines()
        .filter(|l| l.starts_with("dcr_gateway_registrations_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(sum, 3.0, "{text}");
    assert_eq!(v("dcr_gateway_registrations_total{error=\"\",result=\"blocked\"}"), 1.0);
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
    // The new process reads the same configuration and waits for the sockets.
    let (mut new, new_stderr) = old.spawn_upgrade();
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
    let _ = new.kill();
    let _ = new.wait();
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
