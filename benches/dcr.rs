//! `cargo bench --bench dcr`: `check` on a typical registration (target: < 20 µs).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dcr_gateway::dcr::{check, Policy, SecurityMode};

const MCP: &[u8] = br#"{"client_name":"Claude Code (my-server)","redirect_uris":["http://127.0.0.1:53682/callback"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"]}"#;

const WEB: &[u8] = br#"{"client_name":"My Dynamic Application","redirect_uris":["https://application.example.com/callback","https://application.example.com/callback2"],"logo_uri":"https://application.example.com/logo.png","client_uri":"https://www.example.com/","contacts":["ops@example.com"],"scope":"openid profile email offline_access","x_vendor_extension":{"a":[1,2,3]}}"#;

/// The gateway's load-benchmark body (bench/ab.sh and the whole-gateway profile).
const BENCH_BODY: &[u8] = br#"{"client_name":"Sample Desktop MCP Connector (bench)","redirect_uris":["http://127.0.0.1:33418/oauth/callback","https://agent.example.com/mcp/oauth/callback"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"none","scope":"openid profile email offline_access","client_uri":"https://agent.example.com","logo_uri":"https://agent.example.com/static/logo-256.png","contacts":["security@agent.example.com","ops@agent.example.com"],"software_id":"4f9c1e2a-7b3d-4c8e-9a1f-2d6e8b0c5a71","software_version":"1.4.2"}"#;

fn bench(c: &mut Criterion) {
    let strict = Policy::default();
    let permissive = Policy { security_mode: SecurityMode::Permissive, ..Policy::default() };
    assert!(check(MCP, &strict).is_ok() && check(WEB, &strict).is_ok() && check(BENCH_BODY, &strict).is_ok());
    c.bench_function("check/mcp_strict", |b| b.iter(|| check(black_box(MCP), black_box(&strict))));
    c.bench_function("check/web_strict", |b| b.iter(|| check(black_box(WEB), black_box(&strict))));
    c.bench_function("check/web_permissive", |b| b.iter(|| check(black_box(WEB), black_box(&permissive))));
    c.bench_function("check/bench_body_strict", |b| b.iter(|| check(black_box(BENCH_BODY), black_box(&strict))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
