//! `[dcr] resolve_metadata_uris`: the hosts of the URIs the IdP will fetch are resolved before
//! a registration is forwarded. In-process, the resolver is injected (names answering
//! 169.254.169.254, 10.x, ::ffff:127.0.0.1, a public address, nothing, or never); through the
//! gateway binary, literal addresses and the system resolver's `localhost`, with the recording
//! upstream showing what reached the IdP.

#[path = "fetch_support/doc_server.rs"]
mod doc_server;
mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dcr_gateway::core::gate::{admit_body, Payload};
use dcr_gateway::dcr::{ErrorCode, Policy, SecurityMode, StatementVerifier};
use dcr_gateway::fetch::metadata::{MetadataResolver, CACHE_TTL};
use dcr_gateway::fetch::{FetchConfig, Fetcher, Resolver};
use doc_server::TableResolver;
use serde_json::json;
use support::upstream::Upstream;
use support::*;

fn resolver_over(r: Arc<dyn Resolver>) -> MetadataResolver {
    MetadataResolver::new(Arc::new(Fetcher::new(FetchConfig::default(), r).unwrap()))
}

/// The registration path up to the IdP: the payload check, then the resolution of its hosts.
async fn register(m: &MetadataResolver, body: serde_json::Value, policy: &Policy) -> Result<(), String> {
    let bytes = serde_json::to_vec(&body).unwrap();
    let admitted = admit_body(&bytes, Payload::Registration, policy, &StatementVerifier::empty(), None, &[])
        .map_err(|r| r.error.description())?;
    m.screen(&admitted.metadata_hosts, Duration::from_millis(policy.resolve_metadata_timeout_ms)).await.map_err(|e| {
        assert_eq!(e.code, ErrorCode::InvalidClientMetadata);
        e.description
    })
}

fn web(jwks_uri: &str) -> serde_json::Value {
    json!({"client_name": "App", "redirect_uris": ["https://app.example.com/cb"], "jwks_uri": jwks_uri})
}

fn on() -> Policy {
    Policy { resolve_metadata_uris: true, ..Policy::default() }
}

#[tokio::test]
async fn names_resolving_to_special_use_addresses_are_refused() {
    let r = TableResolver::new();
    r.set("metadata.attacker.example", &["169.254.169.254"]);
    r.set("intranet.attacker.example", &["93.184.215.14", "10.20.30.40"]);
    r.set("mapped.attacker.example", &["::ffff:127.0.0.1"]);
    r.set("keys.app.example", &["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]);
    let m = resolver_over(r.clone());
    for (host, want) in [
        ("metadata.attacker.example", "resolves to 169.254.169.254, a special-use address (link-local)"),
        ("intranet.attacker.example", "resolves to 10.20.30.40, a special-use address (private)"),
        ("mapped.attacker.example", "resolves to ::ffff:127.0.0.1, a special-use address (loopback)"),
        ("nxdomain.attacker.example", "does not resolve"),
    ] {
        let e = register(&m, web(&format!("https://{host}/jwks")), &on()).await.unwrap_err();
        assert_eq!(e, format!("jwks_uri: host {host:?} {want}; the IdP would fetch it"));
    }
    assert!(register(&m, web("https://keys.app.example/jwks"), &on()).await.is_ok());
    // Every fetched member, not only jwks_uri; the member named is the first with the host.
    let e = register(
        &m,
        json!({"redirect_uris": ["https://app.example.com/cb"], "logo_uri": "https://keys.app.example/l.png",
               "request_uris": ["https://keys.app.example/r", "https://metadata.attacker.example/r"]}),
        &Policy { security_mode: SecurityMode::Permissive, ..on() },
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("request_uris[1]: host \"metadata.attacker.example\" resolves to 169.254.169.254"), "{e}");
    // Off: nothing is resolved.
    let calls = r.calls.load(Ordering::SeqCst);
    assert!(register(&m, web("https://metadata.attacker.example/jwks"), &Policy::default()).await.is_ok());
    assert_eq!(r.calls.load(Ordering::SeqCst), calls, "no lookup when the option is off");
    let counted = |label: &str| m.results().with_label_values(&[label]).get();
    assert_eq!((counted("ok"), counted("forbidden_address"), counted("dns_error"), counted("timeout")), (2, 4, 1, 0));
}

#[tokio::test]
async fn answers_are_cached_shortly_and_the_fetchers_allow_list_applies() {
    let r = TableResolver::new();
    r.set_sequence("keys.app.example", &[&["93.184.215.14"], &["169.254.169.254"]]);
    let now = Arc::new(std::sync::Mutex::new(Instant::now()));
    let clock = {
        let now = now.clone();
        Arc::new(move || *now.lock().unwrap())
    };
    let fetcher = Fetcher::new(
        FetchConfig { allow_cidrs: vec!["10.1.0.0/16".parse().unwrap()], ..FetchConfig::default() },
        r.clone(),
    )
    .unwrap();
    let m = MetadataResolver::with_clock(Arc::new(fetcher), clock);
    assert!(register(&m, web("https://keys.app.example/jwks"), &on()).await.is_ok());
    assert!(register(&m, web("https://keys.app.example/jwks"), &on()).await.is_ok(), "cached");
    assert_eq!(r.calls.load(Ordering::SeqCst), 1);
    // Past the cache lifetime the name is asked again (and now rebinds to the metadata service).
    *now.lock().unwrap() += CACHE_TTL + Duration::from_secs(1);
    let e = register(&m, web("https://keys.app.example/jwks"), &on()).await.unwrap_err();
    assert!(e.contains("169.254.169.254"), "{e}");
    assert_eq!(r.calls.load(Ordering::SeqCst), 2);
    assert_eq!(m.cached_hosts(), 1);
    // `[cimd] allow_cidrs` admits an internal range for metadata hosts as for fetches.
    r.set("jwks.internal-ok.example", &["10.1.2.3"]);
    assert!(register(&m, web("https://jwks.internal-ok.example/jwks"), &on()).await.is_ok());
    r.set("jwks.internal-no.example", &["10.2.0.1"]);
    assert!(register(&m, web("https://jwks.internal-no.example/jwks"), &on()).await.is_err());
}

/// A resolver that never answers.
struct Silent;

#[async_trait::async_trait]
impl Resolver for Silent {
    async fn resolve(&self, _host: &str, _port: u16) -> std::io::Result<Vec<std::net::IpAddr>> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_registration_waits_for_its_lookups_at_most_its_budget() {
    let m = resolver_over(Arc::new(Silent));
    let policy = Policy { resolve_metadata_timeout_ms: 150, ..on() };
    let uris: Vec<String> = (0..8).map(|i| format!("https://h{i}.slow.example/r")).collect();
    let t = Instant::now();
    let e = register(&m, json!({"redirect_uris": ["https://app.example.com/cb"], "request_uris": uris}), &policy)
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(e, "request_uris[0]: host \"h0.slow.example\" could not be resolved in time; the IdP would fetch it");
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(m.results().with_label_values(&["timeout"]).get(), 8);
    assert_eq!(m.cached_hosts(), 0, "a lookup that did not finish is not cached");
}

fn register_through(gw: &Gateway, body: serde_json::Value) -> (u16, String) {
    response_parts(
        agent().post(&gw.url("/oidc/register")).set("content-type", "application/json").send_string(&body.to_string()),
    )
}

/// Through the gateway binary (system resolver). Permissive mode, so that the literal
/// screening of strict mode does not answer first: every refusal here is the resolution's.
#[test]
fn the_gateway_refuses_before_the_idp_and_forwards_public_hosts() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .dcr("security_mode = \"permissive\"\nresolve_metadata_uris = true\nresolve_metadata_timeout_ms = 3000")
        .start();
    for (jwks_uri, want) in [
        (
            "https://169.254.169.254/latest/meta-data/",
            "resolves to 169.254.169.254, a special-use address (link-local)",
        ),
        ("https://10.0.0.7/jwks", "resolves to 10.0.0.7, a special-use address (private)"),
        ("https://[::ffff:127.0.0.1]/jwks", "resolves to ::ffff:127.0.0.1, a special-use address (loopback)"),
        ("https://localhost:8443/jwks", "resolves to 127.0.0.1, a special-use address (loopback)"),
        // No such name: "does not resolve" (or, where the system resolver has no DNS server to
        // ask, "could not be resolved in time").
        ("https://no-such-host.invalid/jwks", "resolve"),
    ] {
        let (status, body) = register_through(&gw, web(jwks_uri));
        assert_eq!(status, 400, "{jwks_uri}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "invalid_client_metadata", "{body}");
        let d = v["error_description"].as_str().unwrap();
        assert!(d.starts_with("jwks_uri: host ") && d.contains(want), "{jwks_uri}: {d}");
    }
    assert_eq!(up.count(), 0, "the IdP saw none of them");
    // A public address is forwarded (a literal: the test has no public DNS).
    let (status, body) = register_through(&gw, web("https://93.184.215.14/jwks"));
    assert_eq!(status, 201, "{body}");
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().json()["jwks_uri"], "https://93.184.215.14/jwks");
    assert_eq!(gw.metric("dcr_gateway_metadata_host_checks_total{result=\"forbidden_address\"}"), 4.0);
    assert_eq!(
        gw.metric("dcr_gateway_metadata_host_checks_total{result=\"dns_error\"}")
            + gw.metric("dcr_gateway_metadata_host_checks_total{result=\"timeout\"}"),
        1.0
    );
    assert_eq!(gw.metric("dcr_gateway_metadata_host_checks_total{result=\"ok\"}"), 1.0);
}

#[test]
fn the_fetchers_allow_list_admits_a_host_and_the_option_off_forwards() {
    let up = Upstream::start();
    let allowed = GatewayBuilder::new(&up.origin())
        .dcr("security_mode = \"permissive\"\nresolve_metadata_uris = true")
        .extra("[cimd]\nallow_cidrs = [\"127.0.0.0/8\", \"::1/128\"]\n")
        .start();
    let (status, body) = register_through(&allowed, web("https://localhost:8443/jwks"));
    assert_eq!(status, 201, "{body}");
    assert_eq!(up.count(), 1);
    let off = GatewayBuilder::new(&up.origin()).dcr("security_mode = \"permissive\"").start();
    let (status, body) = register_through(&off, web("https://169.254.169.254/latest/meta-data/"));
    assert_eq!(status, 201, "{body}");
    assert_eq!(up.count(), 2);
    assert_eq!(up.last().json()["jwks_uri"], "https://169.254.169.254/latest/meta-data/");
}
