//! Tenant ACL benchmarks: evaluation at 10, 10k and 100k CIDR entries (100 entries per rule,
//! random prefixes, plus a geo-country rule), loading the 100k-entry file, and compiling a
//! 1M-entry managed list (`auth0_managed`, `[acl.managed_lists]`: parse + index; the issue's
//! bound is one second) with a rule naming it, and evaluating against it.
//!
//! `cargo bench --bench acl`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dcr_gateway::acl::managed::{parse_list, ManagedLists};
use dcr_gateway::acl::{DefaultAction, Env, RuleSet};
use dcr_gateway::scope::Scope;
use dcr_gateway::signals::Signals;

/// xorshift64*: deterministic, no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Mostly blocklist-like lengths (/24, /32), some wider ranges; one in ten IPv6.
fn random_prefix(rng: &mut Rng) -> (bool, String) {
    if rng.below(10) == 0 {
        let a = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
        let len = [32, 48, 56, 64, 128][rng.below(5) as usize];
        (true, format!("{a}/{len}"))
    } else {
        let a = Ipv4Addr::from(rng.next() as u32);
        let len = [16, 20, 22, 24, 24, 24, 28, 32, 32, 32][rng.below(10) as usize];
        (false, format!("{a}/{len}"))
    }
}

/// `entries` CIDRs spread over rules of 100 entries each (one rule for fewer), actions
/// mixed, scopes mixed, plus a geo-country rule last.
fn rule_file(entries: usize, seed: u64) -> (String, Vec<IpAddr>) {
    let mut rng = Rng(seed);
    let per_rule = entries.min(100);
    let rules = entries / per_rule;
    let mut out = Vec::with_capacity(rules + 1);
    let mut inside = Vec::new();
    for r in 0..rules {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for _ in 0..per_rule {
            let (is_v6, p) = random_prefix(&mut rng);
            if inside.len() < 65536 && rng.below(8) == 0 {
                if let Some(net) = p.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) {
                    inside.push(net);
                }
            }
            if is_v6 {
                v6.push(p)
            } else {
                v4.push(p)
            }
        }
        let action = match r % 4 {
            0 | 1 => serde_json::json!({"block": true}),
            2 => serde_json::json!({"log": true}),
            _ => serde_json::json!({"allow": true}),
        };
        let scope = ["tenant", "authentication", "dcr", "management"][r % 4];
        out.push(serde_json::json!({
            "id": format!("rule-{r}"), "active": true, "priority": r % 100,
            "rule": {"action": action, "scope": scope,
                     "match": {"ipv4_cidrs": v4, "ipv6_cidrs": v6}}}));
    }
    out.push(serde_json::json!({
        "id": "geo", "active": true, "priority": 100,
        "rule": {"action": {"block": true}, "scope": "tenant",
                 "not_match": {"geo_country_codes": ["US", "CA", "GB", "DE"]}}}));
    (serde_json::Value::Array(out).to_string(), inside)
}

/// Half random addresses (mostly no entry covers them), half inside some entry.
fn requests(inside: &[IpAddr], seed: u64) -> Vec<Signals> {
    let mut rng = Rng(seed);
    let countries = ["US", "FR", "DE", "BR", "JP"];
    (0..65536)
        .map(|i| {
            let ip = if i % 2 == 0 || inside.is_empty() {
                if rng.below(10) == 0 {
                    IpAddr::V6(Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next())))
                } else {
                    IpAddr::V4(Ipv4Addr::from(rng.next() as u32))
                }
            } else {
                inside[rng.below(inside.len() as u64) as usize]
            };
            let mut s = Signals::from_ip(ip, ip);
            s.country = Some(countries[rng.below(5) as usize].to_string());
            s.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64)".into());
            s.hostname = Some("auth.example.com".into());
            s
        })
        .collect()
}

fn bench_evaluate(c: &mut Criterion) {
    let mut g = c.benchmark_group("evaluate");
    for entries in [10usize, 10_000, 100_000] {
        let (json, inside) = rule_file(entries, 0x5eed + entries as u64);
        let rs = match RuleSet::load(json.as_bytes(), DefaultAction::Allow) {
            Ok(rs) => rs,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(rs.entry_count(), entries + 4);
        let reqs = requests(&inside, 7);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(entries), &rs, |b, rs| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 65535;
                let scope = Scope::ALL[i % 3];
                black_box(rs.evaluate(scope, black_box(&reqs[i])))
            })
        });
    }
    g.finish();
}

fn bench_load(c: &mut Criterion) {
    let (json, _) = rule_file(100_000, 0x5eed + 100_000);
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("100000", |b| {
        b.iter(|| RuleSet::load(black_box(json.as_bytes()), DefaultAction::Allow).map(|r| r.rule_count()))
    });
    g.finish();
}

/// A managed list file of `n` random prefixes, one per line, as an operator would fetch it.
fn list_file(n: usize, seed: u64) -> (String, Vec<IpAddr>) {
    let mut rng = Rng(seed);
    let mut text = String::with_capacity(n * 18);
    text.push_str("# generated list\n");
    let mut inside = Vec::new();
    for i in 0..n {
        let (_, p) = random_prefix(&mut rng);
        if i % 1000 == 0 {
            inside.push(p.split('/').next().unwrap_or("").parse().unwrap());
        }
        text.push_str(&p);
        text.push('\n');
    }
    (text, inside)
}

fn bench_managed(c: &mut Criterion) {
    let (text, inside) = list_file(1_000_000, 0x1157);
    let rules = br#"[{"id":"low","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"auth0_managed":["auth0.low_reputation"]}}}]"#;
    let mut g = c.benchmark_group("managed_list");
    g.sample_size(10);
    g.bench_function("compile_1000000", |b| {
        b.iter(|| {
            let entries = parse_list(black_box(&text)).expect("list parses");
            let env = Env {
                managed: std::sync::Arc::new(ManagedLists::build(vec![("auth0.low_reputation".into(), entries)])),
                ..Default::default()
            };
            RuleSet::load_with(rules, DefaultAction::Allow, &env).map(|r| r.rule_count())
        })
    });
    let env = Env {
        managed: std::sync::Arc::new(ManagedLists::build(vec![(
            "auth0.low_reputation".into(),
            parse_list(&text).expect("list parses"),
        )])),
        ..Default::default()
    };
    let rs = RuleSet::load_with(rules, DefaultAction::Allow, &env).expect("rules load");
    let reqs = requests(&inside, 0x2157);
    let mut i = 0;
    g.bench_function("evaluate_1000000", |b| {
        b.iter(|| {
            i = (i + 1) % reqs.len();
            rs.evaluate(Scope::Dcr, black_box(&reqs[i])).decision
        })
    });
    g.finish();
}

criterion_group!(benches, bench_evaluate, bench_load, bench_managed);
criterion_main!(benches);
