//! Registration throughput with the client registry on (embedded SQLite) vs off, against the
//! in-process recording upstream: `cargo test --release --test registry_throughput -- --ignored
//! --nocapture`. Ignored by default (a measurement, not a check); it prints the three rates —
//! off, on at its defaults, on with all three caps set — as medians of interleaved rounds, and
//! their ratios to off (the target is ≥ 0.9×).

mod support;

use std::time::{Duration, Instant};

use support::upstream::Upstream;
use support::*;

const THREADS: usize = 4;
const PER_THREAD: usize = 250;
const ROUNDS: usize = 7;

/// User + system CPU ticks of a process so far (`/proc/PID/stat`, fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clk_tck() -> f64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100.0)
}

/// (registrations/s, the gateway process's CPU µs per registration — its registry worker
/// thread included).
fn rate(gw: &Gateway, tag: &str) -> (f64, f64) {
    let pid = gw.child.as_ref().unwrap().id();
    // Warm up the connection pools.
    for i in 0..20 {
        let body = format!(r#"{{"client_name":"warm {tag} {i}","redirect_uris":["https://w{i}.example/cb"]}}"#);
        let (st, _) = response_parts(
            agent().post(&gw.url("/oidc/register")).set("content-type", "application/json").send_string(&body),
        );
        assert_eq!(st, 201);
    }
    let (t, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::scope(|s| {
        for th in 0..THREADS {
            s.spawn(move || {
                let a = agent();
                for i in 0..PER_THREAD {
                    let body = format!(
                        r#"{{"client_name":"{tag} {th} {i}","redirect_uris":["https://t{th}-{i}.example/cb"]}}"#
                    );
                    let (st, text) = response_parts(
                        a.post(&gw.url("/oidc/register")).set("content-type", "application/json").send_string(&body),
                    );
                    assert_eq!(st, 201, "{text}");
                }
            });
        }
    });
    let n = (THREADS * PER_THREAD) as f64;
    let cpu_us = (cpu_ticks(pid) - c0) as f64 / clk_tck() * 1e6 / n;
    (n / t.elapsed().as_secs_f64(), cpu_us)
}

#[test]
#[ignore]
fn registration_throughput_with_the_registry_on_vs_off() {
    let up = Upstream::start();
    let key = format!("k1:{}\n", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]));
    let common = |b: GatewayBuilder| b.extra("[rate_limit]\nenabled = false\n[audit]\nenabled = false");
    let off = common(GatewayBuilder::new(&up.origin())).start();
    let on = common(GatewayBuilder::new(&up.origin()))
        .file("registry.keys", key.into_bytes())
        .extra("[registry]\nenabled = true\nkey_file = \"registry.keys\"\nmax_clients = 1000000\nmax_per_software = 1000000\nmax_per_prefix = 1000000")
        .start();
    let key2 = format!("k1:{}\n", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [8u8; 32]));
    let nocaps = common(GatewayBuilder::new(&up.origin()))
        .file("registry.keys", key2.into_bytes())
        .extra("[registry]\nenabled = true\nkey_file = \"registry.keys\"")
        .start();
    let (mut offs, mut ons, mut nocs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut off_cpu, mut on_cpu, mut noc_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for (gw, tag, rates, cpus) in [
            (&off, "off", &mut offs, &mut off_cpu),
            (&on, "on", &mut ons, &mut on_cpu),
            (&nocaps, "nocaps", &mut nocs, &mut noc_cpu),
        ] {
            let (r, c) = rate(gw, &format!("{tag}{round}"));
            rates.push(r);
            cpus.push(c);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, n, c) = (median(&mut offs), median(&mut ons), median(&mut nocs));
    let (oc, nc, cc) = (median(&mut off_cpu), median(&mut on_cpu), median(&mut noc_cpu));
    println!(
        "registrations/s, median of {ROUNDS} ({THREADS} clients × {PER_THREAD}): registry off {o:.0}; \
         on, defaults (records, de-duplication of public clients) {c:.0} ({:.2}×); on, all three caps set {n:.0} ({:.2}×)",
        c / o,
        n / o
    );
    println!(
        "gateway CPU µs per registration (user + system, its registry worker included), medians: \
         off {oc:.1}; defaults {cc:.1} ({:+.1}); all caps {nc:.1} ({:+.1})",
        cc - oc,
        nc - oc
    );
    println!("rounds off {offs:.0?}; defaults {nocs:.0?}; caps {ons:.0?}");
    // Every one recorded.
    assert!(wait_until(Duration::from_secs(20), || {
        let out = std::process::Command::new(BIN)
            .args(["clients", "list", "--limit", "1", "-c"])
            .arg(on.config_path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("{} client(s) match", ROUNDS * (THREADS * PER_THREAD + 20)))
    }));
}
