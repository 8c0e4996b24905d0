//! `cargo bench --bench registry`: what the client registry adds.
//!
//! - `usage/*`: the pass-through cost of usage tracking per request (the budget is 1 µs): a
//!   request on a path the tracker ignores, an `/authorize` with its client_id in the query, a
//!   token request with HTTP Basic, and a form body's client_id — each one map write at most.
//! - `registration/*`: what a registration pays on the embedded SQLite store — `admit` (caps
//!   and de-duplication: the counts, kept in memory, and the duplicate lookup), the caps' counts
//!   alone kept (`counts_kept`) and asked of the store in one query (`counts_store`, what
//!   PostgreSQL does), and `record` (queued; the write happens on the registry's thread).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dcr_gateway::registry::crypto::KeyRing;
use dcr_gateway::registry::usage::{Usage, UsagePaths};
use dcr_gateway::registry::{Accepted, Limits, Registry, Store, SystemClock};

fn paths() -> UsagePaths {
    UsagePaths {
        authorize: vec!["/auth".into(), "/authorize".into()],
        form: vec!["/token".into(), "/token/revocation".into(), "/request".into()],
    }
}

fn usage(c: &mut Criterion) {
    let u = Usage::new(paths());
    u.clock_tick(1_800_000_000);
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("client-basic:secret-value"));
    let authorize = "/authorize?response_type=code&client_id=Xy7pQ2mW9rT4&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb&scope=openid%20profile&state=xyz&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";
    c.bench_function("usage/untracked_path", |b| b.iter(|| u.observe_head(black_box("/userinfo"), None)));
    c.bench_function("usage/authorize_query", |b| b.iter(|| u.observe_head(black_box(authorize), None)));
    c.bench_function("usage/token_basic", |b| b.iter(|| u.observe_head(black_box("/token"), Some(basic.as_bytes()))));
    let form = b"grant_type=authorization_code&code=SplxlOBeZQQYbYS6WxSbIA&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb&client_id=form-client-1";
    c.bench_function("usage/token_form_body", |b| b.iter(|| u.observe_form(black_box(form))));
    // Keep the map from growing into something the gateway would have flushed.
    let _ = u.drain();
}

fn registration(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let backend = dcr_gateway::registry::sqlite::Sqlite::open(&dir.path().join("registry.db")).unwrap();
    let store = Store::new(Arc::new(backend));
    store.migrate().unwrap();
    let keys = KeyRing::parse(&format!("k1:{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]))).unwrap();
    let reg = Registry::with_store(store, keys, Arc::new(SystemClock), paths(), 100_000, Duration::from_millis(100));
    let limits = Limits {
        max_clients: 1_000_000,
        max_per_software: 1_000_000,
        max_per_prefix: 1_000_000,
        prefix_window_secs: 3600,
        prefix_v4: 24,
        prefix_v6: 48,
        dedupe_window_secs: 3600,
        unused_grace_secs: 0,
        idle_after_secs: 0,
    };
    // A populated store: 5,000 clients from 50 prefixes.
    for i in 0..5000u32 {
        let ip: std::net::IpAddr = format!("10.0.{}.{}", i % 50, i % 200 + 1).parse().unwrap();
        let sent = format!(
            r#"{{"client_name":"app {i}","redirect_uris":["https://a{i}.example/cb"],"token_endpoint_auth_method":"none"}}"#
        );
        let answer: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&format!(
            r#"{{"client_id":"c{i}","registration_access_token":"rat-{i}","registration_client_uri":"http://idp/reg/c{i}"}}"#
        ))
        .unwrap();
        let a = Accepted {
            client_ip: ip,
            country: None,
            asn: None,
            user_agent: None,
            sent: sent.as_bytes(),
            client_name: None,
            redirect_hosts: &[],
            admitted_by: None,
            answer: &answer,
            public_client_uri: None,
            identity: None,
        };
        reg.record(&a, &limits);
    }
    reg.sync();
    let sent =
        br#"{"client_name":"new app","redirect_uris":["https://new.example/cb"],"token_endpoint_auth_method":"none"}"#;
    let ip: std::net::IpAddr = "10.0.7.9".parse().unwrap();
    c.bench_function("registration/admit_sqlite_5000_clients", |b| {
        b.iter(|| reg.admit(black_box(sent), ip, &limits).unwrap())
    });
    c.bench_function("registration/counts_kept_5000_clients", |b| {
        b.iter(|| reg.counts(black_box("name:new app"), "10.0.7.0/24", &limits).unwrap())
    });
    let all = dcr_gateway::registry::policy::Counts {
        live_total: u64::MAX,
        live_software: u64::MAX,
        prefix_recent: u64::MAX,
    };
    c.bench_function("registration/counts_store_5000_clients", |b| {
        b.iter(|| reg.store().counts_up_to(black_box("name:new app"), "10.0.7.0/24", 0, all).unwrap())
    });
    let answer: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        r#"{"client_id":"bench","registration_access_token":"rat","registration_client_uri":"http://idp/reg/bench"}"#,
    )
    .unwrap();
    c.bench_function("registration/row_and_seal", |b| {
        b.iter(|| {
            let a = Accepted {
                client_ip: ip,
                country: Some("NL"),
                asn: Some(64500),
                user_agent: Some("bench/1"),
                sent,
                client_name: Some("new app"),
                redirect_hosts: &[],
                admitted_by: None,
                answer: &answer,
                public_client_uri: None,
                identity: None,
            };
            reg.row(black_box(&a), &limits)
        })
    });
    reg.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = usage, registration
}
criterion_main!(benches);
