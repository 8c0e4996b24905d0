//! Fixtures for `bench/run.sh`: the same random IPv4 block list written for every system under
//! test, plus one GeoIP2-Country database shared by the gateway and nginx's geoip2 module.
//!
//! ```sh
//! cargo run --release --example bench_fixtures -- OUT_DIR [SIZES...]   # default sizes: 10 10000 100000
//! ```
//!
//! Writes into OUT_DIR, for each size N:
//! * `rules-N.json`     Tenant ACL: `block-kp` (geo_country_codes KP, priority 1), the N CIDRs
//!   as block rules of at most 1,000 `ipv4_cidrs` each (`blocklist-0001`, ..., priority 2) and
//!   `block-flood-ua` (user_agents `flood-bot/*`, priority 3: the blocked-flood workload);
//! * `rules-N-alt.json` the same shape with a different random list (the reload-under-load test
//!   alternates between the two);
//! * `nginx-deny-N.conf` `deny CIDR;` lines (ngx_http_access_module);
//! * `nginx-geo-N.conf`  `CIDR 1;` lines for an nginx `geo` block (radix tree);
//! * `haproxy-N.acl`    one CIDR a line, for `acl … src -f`;
//!
//! and once: `country.mmdb` (GeoIP2-Country, IPv6 tree with IPv4 under ::/96) and
//! `haproxy-country.map` (the same IPv4 networks → ISO code, for `src,map_ip()`).
//!
//! The CIDRs are random (fixed seeds: identical output on every run), pairwise
//! non-overlapping, /16 to /32, and avoid 0/8, 127/8 (the load generator's address must be
//! allowed), 224/3 and the fixture's KP range.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use mmdb_writer::{country_record, MmdbWriter};

/// The GeoIP fixture: (network, ISO country). 127.0.0.0/8 has a record so the benchmark's
/// client gets a real lookup and decode, like any public client would.
const GEO: &[(&str, &str)] = &[
    ("127.0.0.0/8", "US"),
    ("175.45.176.0/22", "KP"),
    ("81.2.69.0/24", "GB"),
    ("1.0.0.0/24", "AU"),
    ("5.255.255.0/24", "RU"),
    ("2001:218::/32", "JP"),
    ("2a0b:4d07::/32", "KP"),
];

/// Networks the block list must not touch.
const RESERVED: &[(&str, u8)] = &[("0.0.0.0", 8), ("127.0.0.0", 8), ("224.0.0.0", 3), ("175.45.176.0", 22)];

const RULE_CHUNK: usize = 1000;

/// xorshift64*: deterministic, std-only.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn range(base: u32, len: u8) -> (u32, u32) {
    let size: u64 = 1u64 << (32 - len as u32);
    let start = if len == 0 { 0 } else { base & (u32::MAX << (32 - len as u32)) };
    (start, (start as u64 + size - 1) as u32)
}

/// Is [s, e] free in the set of disjoint intervals `taken` (start → end)?
fn free(taken: &BTreeMap<u32, u32>, s: u32, e: u32) -> bool {
    match taken.range(..=e).next_back() {
        Some((_, &end)) => end < s,
        None => true,
    }
}

fn cidrs(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut taken = BTreeMap::new();
    for (a, l) in RESERVED {
        let (s, e) = range(u32::from(a.parse::<Ipv4Addr>().unwrap()), *l);
        taken.insert(s, e);
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = rng.next();
        // Shaped like public block lists: mostly single hosts and /24s.
        let len: u8 = match r % 100 {
            0..=59 => 32,
            60..=84 => 24,
            85..=94 => 20 + ((r >> 8) % 4) as u8,
            _ => 16 + ((r >> 8) % 4) as u8,
        };
        let (s, e) = range((r >> 32) as u32, len);
        if free(&taken, s, e) {
            taken.insert(s, e);
            out.push(format!("{}/{len}", Ipv4Addr::from(s)));
        }
    }
    out
}

fn rules_json(list: &[String]) -> String {
    let mut rules = vec![serde_json::json!({
        "id": "block-kp",
        "description": "No traffic from KP (GeoIP)",
        "active": true,
        "priority": 1,
        "rule": {"action": {"block": true}, "scope": "tenant", "match": {"geo_country_codes": ["KP"]}}
    })];
    for (i, chunk) in list.chunks(RULE_CHUNK).enumerate() {
        rules.push(serde_json::json!({
            "id": format!("blocklist-{:04}", i + 1),
            "description": "Bench block list",
            "active": true,
            "priority": 2,
            "rule": {"action": {"block": true}, "scope": "tenant", "match": {"ipv4_cidrs": chunk}}
        }));
    }
    // The blocked-flood workload (bench/flood.lua): the User-Agent an abusive client sends,
    // checked after the CIDR lists so a flood pays for the whole evaluation.
    rules.push(serde_json::json!({
        "id": "block-flood-ua",
        "description": "Bench flood client (bench/flood.lua)",
        "active": true,
        "priority": 3,
        "rule": {"action": {"block": true}, "scope": "tenant", "match": {"user_agents": [FLOOD_USER_AGENT]}}
    }));
    serde_json::to_string_pretty(&rules).unwrap() + "\n"
}

/// The `User-Agent` of the blocked-flood workload, blocked by every system under test (the
/// gateway's `block-flood-ua` rule, nginx `if ($http_user_agent ...)`, HAProxy `req.hdr`).
const FLOOD_USER_AGENT: &str = "flood-bot/*";

fn lines(list: &[String], f: impl Fn(&str) -> String) -> String {
    list.iter().fold(String::new(), |mut s, c| {
        s.push_str(&f(c));
        s.push('\n');
        s
    })
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| {
        eprintln!("usage: bench_fixtures OUT_DIR [SIZES...]");
        std::process::exit(2)
    }));
    let mut sizes: Vec<usize> = args.map(|a| a.parse().expect("SIZE: a number")).collect();
    if sizes.is_empty() {
        sizes = vec![10, 10_000, 100_000];
    }
    fs::create_dir_all(&dir).unwrap();

    for &n in &sizes {
        let list = cidrs(n, 0x5EED_0000 ^ n as u64);
        let alt = cidrs(n, 0xA17E_0000 ^ n as u64);
        write(&dir, &format!("rules-{n}.json"), rules_json(&list));
        write(&dir, &format!("rules-{n}-alt.json"), rules_json(&alt));
        write(&dir, &format!("nginx-deny-{n}.conf"), lines(&list, |c| format!("deny {c};")));
        write(&dir, &format!("nginx-geo-{n}.conf"), lines(&list, |c| format!("{c} 1;")));
        write(&dir, &format!("haproxy-{n}.acl"), lines(&list, str::to_string));
    }

    let mut w = MmdbWriter::new("GeoIP2-Country", 6);
    let mut map = String::new();
    for (net, iso) in GEO {
        w.insert(net, country_record(iso));
        if !net.contains(':') {
            writeln!(map, "{net} {iso}").unwrap();
        }
    }
    write(&dir, "country.mmdb", w.to_bytes());
    write(&dir, "haproxy-country.map", map);
    eprintln!("bench fixtures ({sizes:?} entries) written to {}", dir.display());
}
