//! `[rate_limit] per_hosted_client` through the running gateway: registrations proven to come
//! from a catalogued hosted client (every redirect URI on claude.ai's callbacks) are counted
//! per client and registrant network, not per address, with the in-process counters and with
//! a real `redis-server`; the recording upstream shows what reached the IdP.

mod support;

use support::redis_server::Redis;
use support::upstream::Upstream;
use support::*;

const ORDINARY: &str = r#"{"client_name":"Rate","redirect_uris":["https://rate.example.com/cb"]}"#;
const CLAUDE: &str = r#"{"client_name":"Claude","redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"none"}"#;
/// Claude's callback beside another host: not proven hosted, counted per address.
const MIXED: &str = r#"{"client_name":"Mixed","redirect_uris":["https://claude.ai/api/mcp/auth_callback","https://mixed.example.com/cb"],"token_endpoint_auth_method":"none"}"#;

/// per_ip 3, per_prefix 100, global 1000, per_hosted_client 5.
const PER_IP: usize = 3;
const PER_HOSTED: usize = 5;

fn limits(backend: &str) -> String {
    let long = long_window();
    format!(
        "[rate_limit]\n{backend}per_ip = {{ requests = {PER_IP}, window_seconds = {long} }}\nper_prefix = {{ requests = 100, window_seconds = {long} }}\nglobal = {{ requests = 1000, window_seconds = {long} }}\nper_hosted_client = {{ requests = {PER_HOSTED}, window_seconds = {long} }}\n"
    )
}

fn register(gw: &Gateway, ip: &str, body: &str) -> u16 {
    response_parts(
        agent()
            .post(&gw.url("/oidc/register"))
            .set("x-forwarded-for", ip)
            .set("content-type", "application/json")
            .send_string(body),
    )
    .0
}

/// The same story on either backend.
fn hosted_clients_are_counted_per_client(gw: &Gateway, up: &Upstream) {
    // Ordinary registrations from one address: the per-IP limit.
    for _ in 0..PER_IP {
        assert_eq!(register(gw, "203.0.113.10", ORDINARY), 201, "{}", gw.stderr_text());
    }
    let seen = up.count();
    assert_eq!(register(gw, "203.0.113.10", ORDINARY), 429);
    assert_eq!(up.count(), seen, "refused before the IdP");

    // Abuse: anyone can send Claude's redirect URIs (the clients are useless to them: codes go
    // to claude.ai), but only from their own network. The address over its per-IP limit gets
    // the per-client allowance of its /16, and no more.
    for _ in 0..PER_HOSTED {
        assert_eq!(register(gw, "203.0.113.10", CLAUDE), 201);
    }
    let seen = up.count();
    assert_eq!(register(gw, "203.0.200.1", CLAUDE), 429, "one bucket per client and registrant /16");
    assert_eq!(up.count(), seen, "refused before the IdP");

    // Claude's own egress address, after that flood: N+1 (and more) registrations pass where
    // N+1 ordinary ones were refused, up to the per-client limit.
    const { assert!(PER_HOSTED > PER_IP) };
    for i in 0..PER_HOSTED {
        assert_eq!(register(gw, "160.79.104.10", CLAUDE), 201, "claude registration {i}");
    }
    let seen = up.count();
    assert_eq!(seen, PER_IP + 2 * PER_HOSTED);
    assert_eq!(register(gw, "160.79.104.11", CLAUDE), 429, "the per-client bucket has its own limit");
    assert_eq!(up.count(), seen, "refused before the IdP");
    // ...and they did not spend the egress address's own bucket.
    for _ in 0..PER_IP {
        assert_eq!(register(gw, "160.79.104.10", ORDINARY), 201);
    }
    // Claude's callback beside another host proves nothing: counted per address.
    assert_eq!(register(gw, "203.0.113.10", MIXED), 429);
    assert_eq!(up.count(), seen + PER_IP);

    assert_eq!(gw.metric("dcr_gateway_rate_limited_total{limit=\"hosted_client\"}"), 2.0);
    assert_eq!(gw.metric("dcr_gateway_rate_limited_total{limit=\"ip\"}"), 2.0);
}

#[test]
fn hosted_clients_are_counted_per_client_with_local_counters() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).extra(&limits("")).start();
    hosted_clients_are_counted_per_client(&gw, &up);
}

#[test]
fn hosted_clients_are_counted_per_client_in_redis() {
    let redis = Redis::start_with(&[]);
    let up = Upstream::start();
    let backend = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 500\non_backend_error = \"fail_closed\"\nkey_prefix = \"h{}\"\n",
        redis.url(),
        free_port()
    );
    let gw = GatewayBuilder::new(&up.origin()).extra(&limits(&backend)).start();
    hosted_clients_are_counted_per_client(&gw, &up);
    assert!(gw.metric("dcr_gateway_rate_limit_decisions_total{backend=\"redis\",result=\"limited\"}") >= 4.0);
    assert_eq!(
        gw.metric("dcr_gateway_rate_limit_decisions_total{backend=\"fail_closed\",result=\"unavailable\"}"),
        0.0
    );
}

#[test]
fn without_per_hosted_client_hosted_clients_count_per_address() {
    let up = Upstream::start();
    let long = long_window();
    let gw = GatewayBuilder::new(&up.origin())
        .extra(&format!("[rate_limit]\nper_ip = {{ requests = {PER_IP}, window_seconds = {long} }}\n"))
        .start();
    for _ in 0..PER_IP {
        assert_eq!(register(&gw, "160.79.104.10", CLAUDE), 201);
    }
    assert_eq!(register(&gw, "160.79.104.10", CLAUDE), 429);
    assert_eq!(up.count(), PER_IP);
}
