//! `cargo bench --bench dcr`: `check` on a typical registration (target: < 20 µs).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dcr_gateway::dcr::{check, Policy, SecurityMode};

const MCP: &[u8] = br#"{"client_name":"Claude Code (my-server)","redirect_uris":["http://127.0.0.1:53682/callback"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"]}"#;

const WEB: &[u8] = br#"{"client_name":"My Dynamic Application","redirect_uris":["https://application.example.com/callback","https://application.example.com/callback2"],"logo_uri":"https://application.example.com/logo.png","client_uri":"https://www.example.com/","contacts":["ops@example.com"],"scope":"openid profile email offline_access","x_vendor_extension":{"a":[1,2,3]}}"#;

fn bench(c: &mut Criterion) {
    let strict = Policy::default();
    let permissive = Policy { security_mode: SecurityMode::Permissive, ..Policy::default() };
    assert!(check(MCP, &strict).is_ok() && check(WEB, &strict).is_ok());
    c.bench_function("check/mcp_strict", |b| b.iter(|| check(black_box(MCP), black_box(&strict))));
    c.bench_function("check/web_strict", |b| b.iter(|| check(black_box(WEB), black_box(&strict))));
    c.bench_function("check/web_permissive", |b| b.iter(|| check(black_box(WEB), black_box(&permissive))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
