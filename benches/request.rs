//! `cargo bench --bench request`: the cost of the one view of a request — parsing the target
//! and host (`core::target::parse`) and classifying it, the rebuilt-target check included
//! (`routes::Router::classify`) — for the targets the gateway sees most, and for a hostile one.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dcr_gateway::core::target::{parse, Head};
use dcr_gateway::routes::Router;

fn view_and_route(router: &Router, target: &[u8]) -> usize {
    let head = Head { method_is_options: false, target, hosts: &[b"auth.example.com"], host_required: true };
    let view = parse(&head).expect("parses");
    router.classify(&view).map(|r| r.upstream_target.len()).unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let router = Router::new("/oidc/register", "/reg", &["/api/v2/".into(), "/scim/".into()]);
    let cases: [(&str, &[u8]); 4] = [
        ("registration", b"/oidc/register"),
        ("authorize", b"/authorize?response_type=code&client_id=abc&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb&scope=openid%20profile&state=xyz&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"),
        ("absolute_form", b"http://auth.example.com/oidc/register/AbC123?x=1"),
        ("hostile", b"//oidc/./x/..%2f../%252e%252e/register;jsessionid=1/%2572egister"),
    ];
    for (name, target) in cases {
        c.bench_function(&format!("view_and_route/{name}"), |b| b.iter(|| view_and_route(&router, black_box(target))));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
