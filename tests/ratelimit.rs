//! Registration rate limits through the running gateway: in-process counters, a real
//! `redis-server` shared by two gateways, and the fallback when Redis goes away.

mod support;

use std::time::Duration;

use support::redis_server::Redis;
use support::upstream::Upstream;
use support::*;

const BODY: &str = r#"{"client_name":"Rate","redirect_uris":["https://rate.example.com/cb"]}"#;

fn register(gw: &Gateway, ip: &str) -> (u16, Option<String>, String) {
    let r = agent()
        .post(&gw.url("/oidc/register"))
        .set("x-forwarded-for", ip)
        .set("content-type", "application/json")
        .send_string(BODY);
    match r {
        Ok(resp) => (resp.status(), resp.header("retry-after").map(str::to_string), resp.into_string().unwrap()),
        Err(ureq::Error::Status(code, resp)) => {
            (code, resp.header("retry-after").map(str::to_string), resp.into_string().unwrap())
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn local_limits_per_ip_and_prefix_answer_429_without_calling_the_idp() {
    let long = long_window();
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .extra(&format!(
            "[rate_limit]\nper_ip = {{ requests = 3, window_seconds = {long} }}\nper_prefix = {{ requests = 5, window_seconds = {long} }}\nglobal = {{ requests = 1000, window_seconds = 60 }}"
        ))
        .start();
    for _ in 0..3 {
        assert_eq!(register(&gw, "203.0.113.10").0, 201);
    }
    let calls = up.count();
    let (status, retry, body) = register(&gw, "203.0.113.10");
    assert_eq!(status, 429, "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=long).contains(&retry));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "rate_limit_exceeded");
    assert!(v["request_id"].is_string());
    assert_eq!(up.count(), calls, "the IdP was not called");
    // Rotating addresses inside the /24 hits the prefix limit (5; the request refused above
    // counted nowhere): two more pass, then 429.
    assert_eq!(register(&gw, "203.0.113.11").0, 201);
    assert_eq!(register(&gw, "203.0.113.12").0, 201);
    assert_eq!(register(&gw, "203.0.113.13").0, 429);
    // Another network is not affected; login traffic is never limited.
    assert_eq!(register(&gw, "198.51.100.1").0, 201);
    for _ in 0..10 {
        assert_eq!(
            response_parts(agent().get(&gw.url("/authorize")).set("x-forwarded-for", "203.0.113.10").call()).0,
            200
        );
    }
    assert_eq!(gw.metric("dcr_gateway_rate_limited_total{limit=\"ip\"}"), 1.0);
    assert_eq!(gw.metric("dcr_gateway_rate_limited_total{limit=\"prefix\"}"), 1.0);
    assert_eq!(gw.wait_metric("dcr_gateway_requests_total{outcome=\"rate_limited\",scope=\"dcr\"}", 2.0), 2.0);
    assert_eq!(gw.wait_metric("dcr_gateway_registrations_total{error=\"none\",result=\"rate_limited\"}", 2.0), 2.0);
    let audit = gw.wait_audit(9);
    assert_eq!(audit.iter().filter(|l| l["decision"] == "rate_limited").count(), 2);
}

fn redis_gateway(up: &Upstream, redis_url: &str, fallback: &str, global: u64) -> Gateway {
    let long = long_window();
    GatewayBuilder::new(&up.origin())
        .extra(&format!(
            "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{redis_url}\"\nredis_timeout_ms = 200\non_backend_error = \"{fallback}\"\nkey_prefix = \"t{}\"\nper_ip = {{ requests = 1000, window_seconds = 60 }}\nper_prefix = {{ requests = 1000, window_seconds = 60 }}\nglobal = {{ requests = {global}, window_seconds = {long} }}",
            free_port()
        ))
        .start()
}

#[test]
fn two_gateways_sharing_redis_enforce_one_global_limit() {
    let long = long_window();
    let redis = Redis::start_on(free_port());
    let up = Upstream::start();
    // Both replicas must use the same key prefix: build the second from the first's config.
    let a = redis_gateway(&up, &redis.url(), "local", 6);
    let config = std::fs::read_to_string(a.config_path()).unwrap();
    let prefix_line = config.lines().find(|l| l.starts_with("key_prefix")).unwrap().to_string();
    let b = GatewayBuilder::new(&up.origin())
        .extra(&format!(
            "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 200\n{prefix_line}\nper_ip = {{ requests = 1000, window_seconds = 60 }}\nper_prefix = {{ requests = 1000, window_seconds = 60 }}\nglobal = {{ requests = 6, window_seconds = {long} }}",
            redis.url()
        ))
        .start();
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..12 {
        let gw = if i % 2 == 0 { &a } else { &b };
        match register(gw, &format!("198.51.100.{}", i + 1)).0 {
            201 => ok += 1,
            429 => limited += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!((ok, limited), (6, 6), "one limit for both replicas, not one each");
    assert!(a.metric("dcr_gateway_rate_limit_decisions_total{backend=\"redis\",result=\"allowed\"}") >= 3.0);
    assert!(b.metric("dcr_gateway_rate_limit_decisions_total{backend=\"redis\",result=\"limited\"}") >= 1.0);
}

#[test]
fn redis_outage_falls_back_to_local_counters_and_recovers() {
    let port = free_port();
    let redis = Redis::start_on(port);
    let url = redis.url();
    let up = Upstream::start();
    let gw = redis_gateway(&up, &url, "local", 1000);
    assert_eq!(register(&gw, "192.0.2.50").0, 201);
    assert_eq!(gw.metric("dcr_gateway_rate_limit_decisions_total{backend=\"redis\",result=\"allowed\"}"), 1.0);
    drop(redis);
    // Redis is gone: the gateway keeps serving with its local counters and says so.
    for _ in 0..3 {
        assert_eq!(register(&gw, "192.0.2.50").0, 201);
    }
    assert!(gw.metric("dcr_gateway_rate_limit_decisions_total{backend=\"local_fallback\",result=\"allowed\"}") >= 1.0);
    assert!(gw.stderr_text().contains("Redis unreachable"), "logged");
    // Redis returns on the same port: the gateway reconnects by itself.
    let _redis = Redis::start_on(port);
    assert!(
        wait_until(Duration::from_secs(15), || {
            register(&gw, "192.0.2.50");
            gw.metric("dcr_gateway_rate_limit_decisions_total{backend=\"redis\",result=\"allowed\"}") >= 2.0
        }),
        "back on Redis: {}",
        gw.metrics()
    );
    assert!(gw.stderr_text().contains("Redis reachable again"));
}

#[test]
fn fail_closed_refuses_registration_while_redis_is_down() {
    let dead = format!("redis://127.0.0.1:{}/0", free_port());
    let up = Upstream::start();
    let gw = redis_gateway(&up, &dead, "fail_closed", 1000);
    let (status, retry, body) = register(&gw, "192.0.2.60");
    assert_eq!(status, 503, "{body}");
    assert!(retry.is_some());
    assert_eq!(up.count(), 0);
    let open = redis_gateway(&up, &dead, "fail_open", 1);
    assert_eq!(register(&open, "192.0.2.61").0, 201);
    assert_eq!(register(&open, "192.0.2.61").0, 201, "fail_open ignores the limit");
}
