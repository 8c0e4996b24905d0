//! A small MaxMind DB (MMDB format v2.0) writer for test fixtures. std only, no deps.
//!
//! Tests build their own GeoIP/ASN databases with it instead of shipping binary files.
//! A dev-only crate of the dcr-gateway workspace: the gateway takes it as a
//! dev-dependency (`mmdb-writer = { path = "crates/mmdb-writer" }`), so unit tests,
//! integration tests and examples use it as `mmdb_writer::...`; it is never part of the
//! gateway binary.
//!
//! ```
//! use mmdb_writer::{city_record, country_record, MmdbWriter};
//!
//! let mut w = MmdbWriter::new("GeoIP2-City", 6);
//! w.insert("81.2.69.0/24", city_record("GB", &["ENG"]));
//! w.insert("2001:218::/32", country_record("JP"));
//! let bytes = w.to_bytes();
//! ```
//!
//! Semantics:
//! * `insert` assigns `record` to every address of the network; a later insert overrides
//!   earlier ones where they overlap and leaves the rest of the earlier network alone.
//! * IPv6 databases (`ip_version` 6): IPv4 networks are stored under `::/96` (where
//!   readers, including the `maxminddb` crate, look IPv4 addresses up), and `::ffff:0:0/96`
//!   is aliased to that subtree like MaxMind's databases do, so IPv4-mapped IPv6 lookups
//!   find the same records. Networks given in IPv4-mapped form (`::ffff:1.2.3.0/120`) are
//!   inserted as the IPv4 network.
//! * IPv4 databases (`ip_version` 4) accept only IPv4 networks.
//! * Host bits below the prefix length are ignored (`81.2.69.142/24` is `81.2.69.0/24`);
//!   a bare address is a /32 (IPv4) or /128 (IPv6) network.
//! * Invalid input (bad network string, IPv6 network in an IPv4 database, ...) panics with a
//!   clear message: this is a test helper.
//! * Output is deterministic (fixed `build_epoch`, records in first-use order, identical
//!   records stored once). The record size (24/28/32 bits) is the smallest that fits unless
//!   forced with `record_size`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// A value of the MMDB data section.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
    Str(String),
    Bytes(Vec<u8>),
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    I32(i32),
    F64(f64),
    F32(f32),
    Bool(bool),
}

impl Value {
    /// `Value::map([("iso_code", Value::str("GB"))])`
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn str(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

/// `{"en": name}`
fn names(name: &str) -> Value {
    Value::map([("en", Value::str(name))])
}

fn country_object(iso: &str) -> Value {
    Value::map([("iso_code", Value::str(iso)), ("names", names(&format!("Country {iso}")))])
}

/// A GeoIP2/GeoLite2-Country shaped record: `country` and `registered_country` both `iso`.
pub fn country_record(iso: &str) -> Value {
    Value::map([
        ("continent", Value::map([("code", Value::str("XX")), ("names", names("Continent"))])),
        ("country", country_object(iso)),
        ("registered_country", country_object(iso)),
    ])
}

/// A GeoIP2/GeoLite2-City shaped record. `subdivisions` are ISO 3166-2 subdivision codes
/// most general first, MaxMind style without the country prefix (`"ENG"`); a prefixed code
/// (`"GB-ENG"`) is accepted and stored without its prefix, as MaxMind does.
pub fn city_record(iso: &str, subdivisions: &[&str]) -> Value {
    let prefix = format!("{iso}-");
    let subs = subdivisions
        .iter()
        .map(|s| {
            let code = s.strip_prefix(prefix.as_str()).unwrap_or(s);
            Value::map([("iso_code", Value::str(code)), ("names", names(&format!("Subdivision {code}")))])
        })
        .collect();
    let mut fields = match country_record(iso) {
        Value::Map(fields) => fields,
        _ => unreachable!(),
    };
    fields.insert(0, ("city".to_string(), Value::map([("names", names("Test City"))])));
    fields.push((
        "location".to_string(),
        Value::map([
            ("accuracy_radius", Value::U16(100)),
            ("latitude", Value::F64(51.5)),
            ("longitude", Value::F64(-0.1)),
        ]),
    ));
    fields.push(("subdivisions".to_string(), Value::Array(subs)));
    Value::Map(fields)
}

/// A GeoLite2-ASN shaped record (also the ip-location-db asn mmdb shape).
pub fn asn_record(asn: u32, org: &str) -> Value {
    Value::map([("autonomous_system_number", Value::U32(asn)), ("autonomous_system_organization", Value::str(org))])
}

/// The flat record of the ip-location-db country mmdb: `{"country_code": iso}`.
pub fn flat_country_record(iso: &str) -> Value {
    Value::map([("country_code", Value::str(iso))])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

/// Builds one MMDB file in memory.
#[derive(Debug, Clone)]
pub struct MmdbWriter {
    database_type: String,
    ip_version: u16,
    record_size: Option<u16>,
    description: Vec<(String, String)>,
    languages: Vec<String>,
    build_epoch: u64,
    /// Arena of search-tree nodes; index 0 is the root. Addresses are left-aligned in a u128
    /// (bit 127 is the first bit of the address).
    nodes: Vec<[Child; 2]>,
    records: Vec<Value>,
}

/// `::ffff:0:0`, left-aligned (it is a full 128-bit address already).
const IPV4_MAPPED_PREFIX: u128 = 0xffff_u128 << 32;

impl MmdbWriter {
    /// `ip_version` is 4 or 6, as in the metadata of the produced database.
    pub fn new(database_type: &str, ip_version: u16) -> Self {
        assert!(ip_version == 4 || ip_version == 6, "ip_version must be 4 or 6, got {ip_version}");
        MmdbWriter {
            database_type: database_type.to_string(),
            ip_version,
            record_size: None,
            description: vec![("en".to_string(), format!("{database_type} test fixture"))],
            languages: vec!["en".to_string()],
            build_epoch: 1_700_000_000,
            nodes: vec![[Child::Empty, Child::Empty]],
            records: Vec::new(),
        }
    }

    /// Forces the search tree record size (24, 28 or 32 bits); panics in `to_bytes` if the
    /// database does not fit.
    pub fn record_size(&mut self, bits: u16) -> &mut Self {
        assert!(matches!(bits, 24 | 28 | 32), "record size must be 24, 28 or 32, got {bits}");
        self.record_size = Some(bits);
        self
    }

    pub fn description(&mut self, language: &str, text: &str) -> &mut Self {
        self.description.retain(|(l, _)| l != language);
        self.description.push((language.to_string(), text.to_string()));
        self
    }

    /// Assigns `record` to every address of `network` (`"81.2.69.0/24"`, `"2001:218::/32"`,
    /// or a bare address). Later inserts override earlier ones where they overlap.
    pub fn insert(&mut self, network: &str, record: Value) -> &mut Self {
        let (key, len) = self.parse_network(network);
        self.records.push(record);
        let data = Child::Data(self.records.len() - 1);
        set_prefix(&mut self.nodes, key, len, data);
        self
    }

    /// Parses `network` into a left-aligned key and a prefix length in this database's
    /// address space (IPv4 networks in an IPv6 database live under `::/96`).
    fn parse_network(&self, network: &str) -> (u128, u32) {
        let (addr, len) = match network.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (network, None),
        };
        let ip: IpAddr = addr.trim().parse().unwrap_or_else(|e| panic!("mmdb_writer: bad network {network:?}: {e}"));
        let len: Option<u32> = len
            .map(|l| l.trim().parse().unwrap_or_else(|e| panic!("mmdb_writer: bad prefix length in {network:?}: {e}")));
        // IPv4-mapped IPv6 networks are IPv4 networks.
        let (ip, len) = match ip {
            IpAddr::V6(v6) if !matches!(len, Some(l) if l < 96) && (u128::from(v6) >> 32) == 0xffff => {
                let v4 = Ipv4Addr::from(u128::from(v6) as u32);
                (IpAddr::V4(v4), len.map(|l| l - 96))
            }
            other => (other, len),
        };
        match ip {
            IpAddr::V4(v4) => {
                let len = len.unwrap_or(32);
                assert!(len <= 32, "mmdb_writer: prefix length {len} > 32 in {network:?}");
                let bits = u128::from(u32::from(v4));
                if self.ip_version == 4 {
                    (mask(bits << 96, len), len)
                } else {
                    (mask(bits, 96 + len), 96 + len)
                }
            }
            IpAddr::V6(v6) => {
                assert!(
                    self.ip_version == 6,
                    "mmdb_writer: IPv6 network {network:?} in an IPv4 (ip_version 4) database"
                );
                let len = len.unwrap_or(128);
                assert!(len <= 128, "mmdb_writer: prefix length {len} > 128 in {network:?}");
                (mask(u128::from(v6), len), len)
            }
        }
    }

    /// The database file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut nodes = self.nodes.clone();
        if self.ip_version == 6 {
            // Alias ::ffff:0:0/96 to whatever ::/96 holds (the IPv4 space).
            let ipv4 = child_at(&nodes, 0, 96);
            if ipv4 != Child::Empty {
                set_prefix(&mut nodes, IPV4_MAPPED_PREFIX, 96, ipv4);
            }
        }

        // Number the nodes reachable from the root, breadth first (root = 0). The alias
        // makes the tree a DAG: a shared node gets one number.
        let mut number: Vec<Option<usize>> = vec![None; nodes.len()];
        let mut order = vec![0usize];
        number[0] = Some(0);
        let mut i = 0;
        while i < order.len() {
            for child in nodes[order[i]] {
                if let Child::Node(n) = child {
                    if number[n].is_none() {
                        number[n] = Some(order.len());
                        order.push(n);
                    }
                }
            }
            i += 1;
        }
        let node_count = order.len();

        // Data section: records in first-use order, identical encodings stored once.
        let mut data = Vec::new();
        let mut offset_of_record: Vec<Option<usize>> = vec![None; self.records.len()];
        let mut offset_of_encoding: HashMap<Vec<u8>, usize> = HashMap::new();
        for &n in &order {
            for child in nodes[n] {
                if let Child::Data(r) = child {
                    if offset_of_record[r].is_none() {
                        let mut enc = Vec::new();
                        encode(&self.records[r], &mut enc);
                        let off = *offset_of_encoding.entry(enc).or_insert_with_key(|enc| {
                            data.extend_from_slice(enc);
                            data.len() - enc.len()
                        });
                        offset_of_record[r] = Some(off);
                    }
                }
            }
        }

        let max_value = node_count + 16 + data.len();
        let record_size = match self.record_size {
            Some(bits) => {
                assert!(
                    (max_value as u64) < (1u64 << bits),
                    "mmdb_writer: database needs more than {bits}-bit records"
                );
                bits
            }
            None if max_value < 1 << 24 => 24,
            None if max_value < 1 << 28 => 28,
            None if (max_value as u64) < 1u64 << 32 => 32,
            None => panic!("mmdb_writer: database too large"),
        };

        let value_of = |c: Child| -> u32 {
            (match c {
                Child::Empty => node_count,
                Child::Node(n) => number[n].expect("numbered"),
                Child::Data(r) => node_count + 16 + offset_of_record[r].expect("encoded"),
            }) as u32
        };

        let mut out = Vec::with_capacity(node_count * record_size as usize / 4 + 16 + data.len() + 256);
        for &n in &order {
            let [l, r] = nodes[n];
            let (l, r) = (value_of(l), value_of(r));
            match record_size {
                24 => {
                    out.extend_from_slice(&l.to_be_bytes()[1..]);
                    out.extend_from_slice(&r.to_be_bytes()[1..]);
                }
                28 => {
                    out.extend_from_slice(&l.to_be_bytes()[1..]);
                    out.push((((l >> 24) & 0x0f) << 4) as u8 | ((r >> 24) & 0x0f) as u8);
                    out.extend_from_slice(&r.to_be_bytes()[1..]);
                }
                _ => {
                    out.extend_from_slice(&l.to_be_bytes());
                    out.extend_from_slice(&r.to_be_bytes());
                }
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        let metadata = Value::map([
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(self.build_epoch)),
            ("database_type", Value::str(&self.database_type)),
            ("description", Value::Map(self.description.iter().map(|(l, t)| (l.clone(), Value::str(t))).collect())),
            ("ip_version", Value::U16(self.ip_version)),
            ("languages", Value::Array(self.languages.iter().map(|l| Value::str(l)).collect())),
            ("node_count", Value::U32(node_count as u32)),
            ("record_size", Value::U16(record_size)),
        ]);
        encode(&metadata, &mut out);
        out
    }
}

/// Clears the bits of `key` after the first `len`.
fn mask(key: u128, len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        key & (u128::MAX << (128 - len))
    }
}

fn bit(key: u128, depth: u32) -> usize {
    ((key >> (127 - depth)) & 1) as usize
}

/// Makes `child` the value of the whole prefix `key/len`, splitting leaves on the way.
fn set_prefix(nodes: &mut Vec<[Child; 2]>, key: u128, len: u32, child: Child) {
    if len == 0 {
        nodes[0] = [child, child];
        return;
    }
    let mut cur = 0;
    for depth in 0..len - 1 {
        let b = bit(key, depth);
        cur = match nodes[cur][b] {
            Child::Node(n) => n,
            leaf => {
                nodes.push([leaf, leaf]);
                let n = nodes.len() - 1;
                nodes[cur][b] = Child::Node(n);
                n
            }
        };
    }
    nodes[cur][bit(key, len - 1)] = child;
}

/// What the prefix `key/len` points at: a node at that depth, or the leaf covering it.
fn child_at(nodes: &[[Child; 2]], key: u128, len: u32) -> Child {
    let mut c = Child::Node(0);
    for depth in 0..len {
        match c {
            Child::Node(n) => c = nodes[n][bit(key, depth)],
            leaf => return leaf,
        }
    }
    c
}

// ---- data section encoding (MaxMind DB spec, "Output Data Section") ----

fn control(out: &mut Vec<u8>, type_num: u8, size: usize) {
    let (size_bits, ext): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 29 + 256 {
        (29, vec![(size - 29) as u8])
    } else if size < 285 + 65_536 {
        (30, ((size - 285) as u16).to_be_bytes().to_vec())
    } else if size < 65_821 + (1 << 24) {
        (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec())
    } else {
        panic!("mmdb_writer: value of size {size} too large");
    };
    if type_num <= 7 {
        out.push(type_num << 5 | size_bits);
    } else {
        out.push(size_bits);
        out.push(type_num - 7);
    }
    out.extend_from_slice(&ext);
}

/// Big-endian bytes without leading zeros (zero is encoded with no bytes).
fn minimal_be(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn encode_uint(out: &mut Vec<u8>, type_num: u8, be: &[u8]) {
    let b = minimal_be(be);
    control(out, type_num, b.len());
    out.extend_from_slice(b);
}

/// Appends the encoding of `v` to `out`.
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::F64(f) => {
            control(out, 3, 8);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Bytes(b) => {
            control(out, 4, b.len());
            out.extend_from_slice(b);
        }
        Value::U16(n) => encode_uint(out, 5, &n.to_be_bytes()),
        Value::U32(n) => encode_uint(out, 6, &n.to_be_bytes()),
        Value::Map(entries) => {
            control(out, 7, entries.len());
            for (k, v) in entries {
                control(out, 2, k.len());
                out.extend_from_slice(k.as_bytes());
                encode(v, out);
            }
        }
        Value::I32(n) => {
            if *n >= 0 {
                encode_uint(out, 8, &n.to_be_bytes());
            } else {
                control(out, 8, 4);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Value::U64(n) => encode_uint(out, 9, &n.to_be_bytes()),
        Value::U128(n) => encode_uint(out, 10, &n.to_be_bytes()),
        Value::Array(items) => {
            control(out, 11, items.len());
            for item in items {
                encode(item, out);
            }
        }
        Value::Bool(b) => control(out, 14, *b as usize),
        Value::F32(f) => {
            control(out, 15, 4);
            out.extend_from_slice(&f.to_be_bytes());
        }
    }
}

/// `"1.2.3.4"` → IpAddr; panics on bad input (test helper).
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("mmdb_writer: bad address {s:?}: {e}"))
}
