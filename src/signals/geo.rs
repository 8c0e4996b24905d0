//! GeoIP (country / subdivisions) and ASN lookups on MaxMind DB (`.mmdb`) files.
//!
//! Pure: the caller reads the file and hands over its bytes; nothing here touches the file
//! system, so reloading is "read bytes, `from_bytes`, swap".
//!
//! Supported databases:
//! * [`GeoDb`]: MaxMind GeoIP2 / GeoLite2 Country and City (also Enterprise), and the flat
//!   `{"country_code": "US"}` schema of ip-location-db's country mmdb
//!   (npm `@ip-location-db/geo-whois-asn-country-mmdb`).
//! * [`AsnDb`]: MaxMind GeoLite2-ASN (and GeoIP2-ISP) and ip-location-db's asn mmdb, i.e.
//!   anything with a top-level `autonomous_system_number`.
//!
//! Country: `country.iso_code` (where MaxMind locates the address) and never
//! `registered_country` (where the network's owner registered it, which differs for
//! mobile, satellite and anycast networks and is not the client's location, as MaxMind
//! documents). The flat schema's `country_code` is used when there is no `country.iso_code`.
//!
//! Robustness: `from_bytes` validates the whole database before accepting it — metadata,
//! the size of the search tree, every search-tree record reachable from the root, and the
//! structure of every data record those point at (bounds, types, pointer targets, nesting)
//! — and decodes every record with the structs used for lookups. The `maxminddb` reader
//! indexes its buffer without bounds checks, so this is what makes `lookup` panic-free on
//! corrupt or hostile files: after validation a lookup can only touch checked bytes.
//! Validation is linear in the size of the database and runs once per load.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use maxminddb::Reader;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::canonical_ip;

/// Why a database was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeoError {
    /// Not a MaxMind DB, or a corrupt / unsupported one.
    #[error("invalid MaxMind DB: {0}")]
    Invalid(String),
    /// A valid MaxMind DB of the wrong kind (e.g. an ASN database given as the GeoIP one).
    #[error("MaxMind DB of type {database_type:?} is not {expected}: {reason}")]
    WrongKind {
        database_type: String,
        expected: &'static str,
        reason: String,
    },
}

/// What a GeoIP lookup found. Empty (`Default`) when the database has no record.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2, upper case (`GB`).
    pub country: Option<String>,
    /// ISO 3166-2 codes `<country>-<code>`, upper case (`GB-ENG`), most general first.
    pub subdivisions: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Record shapes (borrowed, only the fields we use; serde skips everything else).

#[derive(Deserialize)]
struct GeoRecord<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<IsoCode<'a>>>,
    /// ip-location-db flat schema.
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct AsnRecord {
    #[serde(default, deserialize_with = "deserialize_asn")]
    autonomous_system_number: Option<u32>,
}

/// An ASN as an unsigned integer of any width, or a string `"15169"` / `"AS15169"`.
/// AS0 (reserved, RFC 7607) is "no ASN".
fn deserialize_asn<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct AsnVisitor;
    impl<'de> Visitor<'de> for AsnVisitor {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an autonomous system number")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            u32::try_from(v)
                .map(|n| (n != 0).then_some(n))
                .map_err(|_| E::custom(format!("ASN {v} out of range")))
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("ASN {v} out of range")))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("negative ASN {v}")))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let digits = v.trim();
            let digits = digits
                .strip_prefix("AS")
                .or_else(|| digits.strip_prefix("as"))
                .unwrap_or(digits);
            digits
                .parse::<u64>()
                .map_err(|_| E::custom(format!("bad ASN {v:?}")))
                .and_then(|v| self.visit_u64(v))
        }
    }
    d.deserialize_any(AsnVisitor)
}

impl GeoRecord<'_> {
    fn country(&self) -> Option<String> {
        self.country
            .as_ref()
            .and_then(|c| c.iso_code)
            .or(self.country_code)
            .and_then(normalize_country)
    }

    fn has_subdivisions(&self) -> bool {
        self.subdivisions
            .as_ref()
            .is_some_and(|s| s.iter().any(|s| s.iso_code.is_some()))
    }

    fn into_info(self) -> GeoInfo {
        let country = self.country();
        let subdivisions = match (&country, &self.subdivisions) {
            (Some(cc), Some(subs)) => subs
                .iter()
                .filter_map(|s| s.iso_code)
                .filter_map(|code| normalize_subdivision(cc, code))
                .collect(),
            _ => Vec::new(),
        };
        GeoInfo {
            country,
            subdivisions,
        }
    }
}

/// Two ASCII letters, upper-cased; anything else is no country.
fn normalize_country(code: &str) -> Option<String> {
    let code = code.trim();
    (code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

/// `("GB", "eng")` → `GB-ENG`. The subdivision part of an ISO 3166-2 code is 1–3 ASCII
/// letters/digits; a code that already carries the country prefix is accepted.
fn normalize_subdivision(country: &str, code: &str) -> Option<String> {
    let code = code.trim().to_ascii_uppercase();
    let code = match code
        .strip_prefix(country)
        .and_then(|rest| rest.strip_prefix('-'))
    {
        Some(rest) => rest,
        None => code.as_str(),
    };
    (!code.is_empty() && code.len() <= 3 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| format!("{country}-{code}"))
}

// ---------------------------------------------------------------------------------------
// Public types.

/// A country or city database.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    has_subdivisions: bool,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("database_type", &self.database_type())
            .field("ip_version", &self.reader.metadata.ip_version)
            .field("build_epoch", &self.reader.metadata.build_epoch)
            .field("has_subdivisions", &self.has_subdivisions)
            .finish()
    }
}

impl GeoDb {
    /// Validates and loads a country or city database (see the module docs). Refuses
    /// anything that is not a MaxMind DB, a corrupt one, and databases without country
    /// data (ASN, ISP, ...) with [`GeoError::WrongKind`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GeoDb, GeoError> {
        const EXPECTED: &str = "a country or city database";
        let (reader, reps) = open(bytes)?;
        let database_type = reader.metadata.database_type.clone();
        let wrong = |reason: String| GeoError::WrongKind {
            database_type: database_type.clone(),
            expected: EXPECTED,
            reason,
        };
        if let Some(kind) = non_location_kind(&database_type) {
            return Err(wrong(format!(
                "{kind} database; configure it as the ASN database, if at all"
            )));
        }
        let (mut with_country, mut with_subdivisions, mut with_asn) = (0usize, 0usize, 0usize);
        for ip in &reps {
            let rec: GeoRecord = reader.lookup(*ip).map_err(|e| {
                GeoError::Invalid(format!(
                    "record for {ip} does not decode as a country/city record: {e}"
                ))
            })?;
            with_country += usize::from(rec.country().is_some());
            with_subdivisions += usize::from(rec.has_subdivisions());
            if let Ok(AsnRecord {
                autonomous_system_number: Some(_),
            }) = reader.lookup::<AsnRecord>(*ip)
            {
                with_asn += 1;
            }
        }
        if !reps.is_empty() && with_country == 0 {
            let reason = if with_asn > 0 {
                "its records carry autonomous_system_number but no country: this is an ASN database"
                    .to_string()
            } else {
                "no record has a country code (country.iso_code or country_code)".to_string()
            };
            return Err(wrong(reason));
        }
        Ok(GeoDb {
            reader,
            has_subdivisions: with_subdivisions > 0,
        })
    }

    /// The metadata's `database_type` (`GeoLite2-City`, `country ipvAll`, ...).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata.database_type
    }

    /// The metadata's `build_epoch` (seconds since the Unix epoch).
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata.build_epoch
    }

    /// Whether any record carries subdivision codes (city databases), i.e. whether
    /// `GeoInfo::subdivisions` can ever be non-empty.
    pub fn has_subdivisions(&self) -> bool {
        self.has_subdivisions
    }

    /// Country and subdivisions of `ip`; `GeoInfo::default()` when the database has no
    /// record for it (or it is IPv6 and the database IPv4-only). IPv4-mapped IPv6 is looked
    /// up as IPv4. Never panics.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let Some(ip) = lookup_address(&self.reader, ip) else {
            return GeoInfo::default();
        };
        match self.reader.lookup::<GeoRecord>(ip) {
            Ok(rec) => rec.into_info(),
            Err(_) => GeoInfo::default(),
        }
    }
}

/// An autonomous-system database.
pub struct AsnDb {
    reader: Reader<Vec<u8>>,
}

impl fmt::Debug for AsnDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsnDb")
            .field("database_type", &self.database_type())
            .field("ip_version", &self.reader.metadata.ip_version)
            .field("build_epoch", &self.reader.metadata.build_epoch)
            .finish()
    }
}

impl AsnDb {
    /// Validates and loads an ASN database: any MaxMind DB whose records carry a top-level
    /// `autonomous_system_number` (GeoLite2-ASN, GeoIP2-ISP, ip-location-db asn mmdb).
    /// Country/city databases are refused with [`GeoError::WrongKind`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<AsnDb, GeoError> {
        const EXPECTED: &str = "an ASN database";
        let (reader, reps) = open(bytes)?;
        let mut with_asn = 0usize;
        let mut with_country = 0usize;
        for ip in &reps {
            let rec: AsnRecord = reader.lookup(*ip).map_err(|e| {
                GeoError::Invalid(format!(
                    "record for {ip} does not decode as an ASN record: {e}"
                ))
            })?;
            with_asn += usize::from(rec.autonomous_system_number.is_some());
            if let Ok(geo) = reader.lookup::<GeoRecord>(*ip) {
                with_country += usize::from(geo.country().is_some());
            }
        }
        let database_type = &reader.metadata.database_type;
        let looks_geo = has_token(database_type, &["country", "city", "enterprise"]);
        if with_asn == 0 && (!reps.is_empty() || looks_geo) {
            let reason = if with_country > 0 || looks_geo {
                "no record has autonomous_system_number: this is a country/city database"
                    .to_string()
            } else {
                "no record has autonomous_system_number".to_string()
            };
            return Err(GeoError::WrongKind {
                database_type: database_type.clone(),
                expected: EXPECTED,
                reason,
            });
        }
        Ok(AsnDb { reader })
    }

    pub fn database_type(&self) -> &str {
        &self.reader.metadata.database_type
    }

    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata.build_epoch
    }

    /// The autonomous system number of `ip`, if the database has one. Never panics.
    pub fn lookup(&self, ip: IpAddr) -> Option<u32> {
        let ip = lookup_address(&self.reader, ip)?;
        self.reader
            .lookup::<AsnRecord>(ip)
            .ok()?
            .autonomous_system_number
    }
}

/// The address to look up: IPv4-mapped IPv6 folded to IPv4; `None` for IPv6 in an IPv4
/// database (the `maxminddb` crate would walk the IPv4 tree with 128 bits).
fn lookup_address(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Option<IpAddr> {
    let ip = canonical_ip(ip);
    (reader.metadata.ip_version == 6 || ip.is_ipv4()).then_some(ip)
}

/// Whether `database_type` has one of `tokens` as a word (case-insensitive):
/// `GeoLite2-ASN` has `asn`; `geo-whois-asn-country`-derived `country ipvAll` has not.
fn has_token(database_type: &str, tokens: &[&str]) -> bool {
    database_type
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| tokens.iter().any(|t| w.eq_ignore_ascii_case(t)))
}

/// MaxMind's non-location databases, by name.
fn non_location_kind(database_type: &str) -> Option<&'static str> {
    if has_token(database_type, &["asn"]) {
        Some("an ASN")
    } else if has_token(database_type, &["isp", "anonymous", "connection", "domain"]) {
        Some("a non-location (ISP / anonymous-IP / connection-type / domain)")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Validation.

const METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
/// Nesting limit (containers and pointers) for data values; GeoIP2 records nest ~4 deep.
const MAX_DEPTH: u32 = 32;
/// Values visited per record / per metadata, against crafted pointer fan-out.
const VALUE_BUDGET: u32 = 1_000_000;

fn invalid(msg: impl Into<String>) -> GeoError {
    GeoError::Invalid(msg.into())
}

/// Validates `bytes` and opens it. Returns one representative address per distinct data
/// record reachable by lookups, for the callers' schema checks.
fn open(bytes: Vec<u8>) -> Result<(Reader<Vec<u8>>, Vec<IpAddr>), GeoError> {
    let reps = validate(&bytes)?;
    // Safe now: the metadata decodes and the search tree lies within the buffer.
    let reader = Reader::from_source(bytes).map_err(|e| invalid(e.to_string()))?;
    Ok((reader, reps))
}

fn validate(bytes: &[u8]) -> Result<Vec<IpAddr>, GeoError> {
    let marker = rfind(bytes, METADATA_MARKER)
        .ok_or_else(|| invalid("no MaxMind DB metadata marker (not an .mmdb file?)"))?;
    let meta_buf = &bytes[marker + METADATA_MARKER.len()..];
    let mut budget = VALUE_BUDGET;
    let (meta, _) =
        walk(meta_buf, 0, 0, &mut budget, true).map_err(|e| invalid(format!("metadata: {e}")))?;
    let Some(Node::Map(meta)) = meta else {
        return Err(invalid("metadata is not a map"));
    };
    let field = |name: &str| meta.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let uint = |name: &str| match field(name) {
        Some(Node::Uint(n)) => Ok(*n),
        Some(_) => Err(invalid(format!(
            "metadata {name} is not an unsigned integer"
        ))),
        None => Err(invalid(format!("metadata has no {name}"))),
    };
    let major = uint("binary_format_major_version")?;
    if major != 2 {
        return Err(invalid(format!(
            "unsupported binary format major version {major}"
        )));
    }
    let ip_version = uint("ip_version")?;
    if ip_version != 4 && ip_version != 6 {
        return Err(invalid(format!("ip_version {ip_version} (must be 4 or 6)")));
    }
    let record_size = uint("record_size")?;
    if !matches!(record_size, 24 | 28 | 32) {
        return Err(invalid(format!(
            "record_size {record_size} (must be 24, 28 or 32)"
        )));
    }
    let node_count = uint("node_count")?;
    if node_count == 0 || node_count > u128::from(u32::MAX) {
        return Err(invalid(format!("node_count {node_count}")));
    }
    if !matches!(field("database_type"), Some(Node::Str)) {
        return Err(invalid("metadata database_type is missing or not a string"));
    }
    let (node_count, record_size) = (node_count as usize, record_size as usize);
    let tree_size = node_count * record_size / 4;
    if tree_size + 16 > marker {
        return Err(invalid(format!(
            "search tree of {node_count} nodes does not fit in the file ({} bytes before the metadata)",
            marker
        )));
    }
    let tree = &bytes[..tree_size];
    // The reader decodes records from here up to the end of the buffer.
    let data = &bytes[tree_size + 16..];
    walk_tree(tree, data, node_count, record_size, ip_version == 6).map_err(invalid)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn read_record(tree: &[u8], record_size: usize, node: usize, side: usize) -> usize {
    let base = node * record_size / 4;
    let be = |b: &[u8]| b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
    match record_size {
        24 => be(&tree[base + side * 3..base + side * 3 + 3]),
        28 => {
            let middle = if side == 0 {
                tree[base + 3] >> 4
            } else {
                tree[base + 3] & 0x0f
            };
            (usize::from(middle) << 24) | be(&tree[base + side * 4..base + side * 4 + 3])
        }
        _ => be(&tree[base + side * 4..base + side * 4 + 4]),
    }
}

/// Visits every node reachable from the root; checks every record value and the data
/// record it points at. Returns one address per distinct data record (the first path to
/// it), padded with zero bits.
fn walk_tree(
    tree: &[u8],
    data: &[u8],
    node_count: usize,
    record_size: usize,
    ipv6: bool,
) -> Result<Vec<IpAddr>, String> {
    let bits: u32 = if ipv6 { 128 } else { 32 };
    let mut visited = vec![false; node_count];
    visited[0] = true;
    let mut stack: Vec<(usize, u32, u128)> = vec![(0, 0, 0)];
    let mut seen: HashSet<usize> = HashSet::new();
    let mut reps = Vec::new();
    while let Some((node, depth, prefix)) = stack.pop() {
        for side in 0..2 {
            let value = read_record(tree, record_size, node, side);
            let child_prefix = if depth < 128 {
                prefix | ((side as u128) << (127 - depth))
            } else {
                prefix
            };
            let child_depth = depth + 1;
            if value < node_count {
                if !visited[value] {
                    visited[value] = true;
                    stack.push((value, child_depth, child_prefix));
                }
            } else if value > node_count {
                let offset = value
                    .checked_sub(node_count + 16)
                    .ok_or_else(|| format!("node {node} points into the data section separator"))?;
                if offset >= data.len() {
                    return Err(format!(
                        "node {node} points past the end of the data section"
                    ));
                }
                if seen.insert(offset) {
                    let mut budget = VALUE_BUDGET;
                    walk(data, offset, 0, &mut budget, false)
                        .map_err(|e| format!("data record at offset {offset}: {e}"))?;
                    if child_depth <= bits {
                        reps.push(if ipv6 {
                            IpAddr::V6(Ipv6Addr::from(child_prefix))
                        } else {
                            IpAddr::V4(Ipv4Addr::from((child_prefix >> 96) as u32))
                        });
                    }
                }
            }
        }
    }
    Ok(reps)
}

/// The parts of a decoded metadata value we look at.
enum Node {
    Uint(u128),
    Str,
    Map(Vec<(String, Node)>),
    Other,
}

fn get(buf: &[u8], pos: usize, len: usize) -> Result<&[u8], String> {
    pos.checked_add(len)
        .and_then(|end| buf.get(pos..end))
        .ok_or_else(|| format!("value at {pos} runs past the end of the buffer"))
}

fn be_usize(b: &[u8]) -> usize {
    b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
}

/// Checks the value at `pos` the way the `maxminddb` decoder will read it (control byte,
/// extended type, size bytes, pointers), with bounds, and returns the position after it.
/// With `build`, also returns the value (metadata only).
fn walk(
    buf: &[u8],
    pos: usize,
    depth: u32,
    budget: &mut u32,
    build: bool,
) -> Result<(Option<Node>, usize), String> {
    if depth > MAX_DEPTH {
        return Err("values nested too deeply (pointer loop?)".into());
    }
    *budget = budget
        .checked_sub(1)
        .ok_or("too many values (pointer loop?)")?;
    let ctrl = get(buf, pos, 1)?[0];
    let mut p = pos + 1;
    let mut type_num = ctrl >> 5;
    if type_num == 0 {
        let ext = get(buf, p, 1)?[0];
        p += 1;
        if ext == 0 || ext > 8 {
            return Err(format!("bad extended type {ext} at {pos}"));
        }
        type_num = ext + 7;
    }
    let mut size = usize::from(ctrl & 0x1f);
    if type_num == 1 {
        // Pointer: 001SSVVV. The reader would treat sizes 29..31 as size extensions,
        // which no writer produces; refuse them.
        if size >= 29 {
            return Err(format!("malformed pointer at {pos}"));
        }
        let len = ((size >> 3) & 0x3) + 1;
        let raw = get(buf, p, len)?;
        let base = if len == 4 { 0 } else { size & 0x7 };
        let target = ((base << (8 * len)) | be_usize(raw)) + [0, 0, 2048, 526_336, 0][len];
        let next = p + len;
        if get(buf, target, 1)?[0] >> 5 == 1 {
            return Err(format!("pointer at {pos} points to a pointer"));
        }
        let (v, _) = walk(buf, target, depth + 1, budget, build)?;
        return Ok((v, next));
    }
    match size {
        29 => {
            size = 29 + usize::from(get(buf, p, 1)?[0]);
            p += 1;
        }
        30 => {
            size = 285 + be_usize(get(buf, p, 2)?);
            p += 2;
        }
        31 => {
            size = 65_821 + be_usize(get(buf, p, 3)?);
            p += 3;
        }
        _ => {}
    }
    let fixed = |max: usize, exact: bool| -> Result<usize, String> {
        if size > max || (exact && size != max) {
            return Err(format!("type {type_num} of size {size} at {pos}"));
        }
        get(buf, p, size)?;
        Ok(p + size)
    };
    match type_num {
        2 => {
            // UTF-8 validity is checked by the reader (an error, not a panic).
            get(buf, p, size)?;
            Ok((build.then_some(Node::Str), p + size))
        }
        4 => {
            get(buf, p, size)?;
            Ok((build.then_some(Node::Other), p + size))
        }
        3 => Ok((build.then_some(Node::Other), fixed(8, true)?)),
        15 => Ok((build.then_some(Node::Other), fixed(4, true)?)),
        5 | 6 | 8 | 9 | 10 => {
            let max = match type_num {
                5 => 2,
                6 | 8 => 4,
                9 => 8,
                _ => 16,
            };
            let next = fixed(max, false)?;
            let v = build.then(|| {
                if type_num == 8 {
                    Node::Other
                } else {
                    Node::Uint(
                        buf[p..next]
                            .iter()
                            .fold(0u128, |acc, &x| (acc << 8) | u128::from(x)),
                    )
                }
            });
            Ok((v, next))
        }
        14 => {
            if size > 1 {
                return Err(format!("boolean of size {size} at {pos}"));
            }
            Ok((build.then_some(Node::Other), p))
        }
        7 => {
            let mut entries = Vec::new();
            for _ in 0..size {
                let key_pos = p;
                p = walk(buf, p, depth + 1, budget, false)?.1;
                let (v, next) = walk(buf, p, depth + 1, budget, build)?;
                p = next;
                if build {
                    entries.push((
                        string_at(buf, key_pos).unwrap_or_default(),
                        v.unwrap_or(Node::Other),
                    ));
                }
            }
            Ok((build.then_some(Node::Map(entries)), p))
        }
        11 => {
            for _ in 0..size {
                p = walk(buf, p, depth + 1, budget, false)?.1;
            }
            Ok((build.then_some(Node::Other), p))
        }
        t => Err(format!("unsupported data type {t} at {pos}")),
    }
}

/// The UTF-8 string at `pos` (following one pointer), for metadata keys; `None` if the
/// value there is not a string. Only called on values `walk` has checked.
fn string_at(buf: &[u8], pos: usize) -> Option<String> {
    let ctrl = *buf.get(pos)?;
    match ctrl >> 5 {
        1 => {
            let size = usize::from(ctrl & 0x1f);
            let len = ((size >> 3) & 0x3) + 1;
            let raw = buf.get(pos + 1..pos + 1 + len)?;
            let base = if len == 4 { 0 } else { size & 0x7 };
            string_at(
                buf,
                ((base << (8 * len)) | be_usize(raw)) + [0, 0, 2048, 526_336, 0][len],
            )
        }
        2 => {
            let (size, p) = match ctrl & 0x1f {
                29 => (29 + usize::from(*buf.get(pos + 1)?), pos + 2),
                30 => (285 + be_usize(buf.get(pos + 1..pos + 3)?), pos + 3),
                31 => (65_821 + be_usize(buf.get(pos + 1..pos + 4)?), pos + 4),
                s => (usize::from(s), pos + 1),
            };
            std::str::from_utf8(buf.get(p..p + size)?)
                .ok()
                .map(str::to_owned)
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "../../tests/support/mmdb_writer.rs"]
mod mmdb_writer;

#[cfg(test)]
mod tests {
    use super::mmdb_writer::{
        asn_record, city_record, country_record, encode, flat_country_record, ip, MmdbWriter, Value,
    };
    use super::*;

    fn geo(w: &MmdbWriter) -> GeoDb {
        GeoDb::from_bytes(w.to_bytes()).expect("valid geo db")
    }

    fn info(country: &str, subdivisions: &[&str]) -> GeoInfo {
        GeoInfo {
            country: Some(country.to_string()),
            subdivisions: subdivisions.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn country_db(ip_version: u16) -> MmdbWriter {
        let mut w = MmdbWriter::new("GeoLite2-Country", ip_version);
        w.insert("81.2.69.0/24", country_record("GB"));
        w.insert("216.160.83.0/24", country_record("US"));
        w.insert("89.160.20.0/24", country_record("SE"));
        if ip_version == 6 {
            w.insert("2001:218::/32", country_record("JP"));
        }
        w
    }

    // ---- the writer, checked with the maxminddb crate directly ----

    #[derive(Deserialize, Debug, PartialEq)]
    struct Tag<'a> {
        tag: &'a str,
    }

    fn tag(t: &str) -> Value {
        Value::map([("tag", Value::str(t))])
    }

    fn tag_of(r: &Reader<Vec<u8>>, a: &str) -> Option<String> {
        match r.lookup::<Tag>(ip(a)) {
            Ok(t) => Some(t.tag.to_string()),
            Err(maxminddb::MaxMindDBError::AddressNotFoundError(_)) => None,
            Err(e) => panic!("lookup {a}: {e}"),
        }
    }

    #[test]
    fn writer_ipv4_round_trip_and_metadata() {
        let mut w = MmdbWriter::new("Test-DB", 4);
        w.insert("81.2.69.0/24", tag("a"))
            .insert("1.2.3.4", tag("host"));
        let r = Reader::from_source(w.to_bytes()).unwrap();
        assert_eq!(r.metadata.ip_version, 4);
        assert_eq!(r.metadata.database_type, "Test-DB");
        assert_eq!(r.metadata.binary_format_major_version, 2);
        assert_eq!(r.metadata.record_size, 24);
        assert_eq!(r.metadata.languages, vec!["en".to_string()]);
        assert_eq!(tag_of(&r, "81.2.69.0").as_deref(), Some("a"));
        assert_eq!(tag_of(&r, "81.2.69.255").as_deref(), Some("a"));
        assert_eq!(tag_of(&r, "81.2.70.0"), None);
        assert_eq!(tag_of(&r, "81.2.68.255"), None);
        assert_eq!(tag_of(&r, "1.2.3.4").as_deref(), Some("host"));
        assert_eq!(tag_of(&r, "1.2.3.5"), None);
        let (_, prefix) = r.lookup_prefix::<Tag>(ip("81.2.69.7")).unwrap();
        assert_eq!(prefix, 24);
    }

    #[test]
    fn writer_ipv6_round_trip_with_ipv4_placement_and_alias() {
        let mut w = MmdbWriter::new("Test-DB", 6);
        w.insert("81.2.69.0/24", tag("v4"))
            .insert("2001:218::/32", tag("v6"))
            .insert("::ffff:10.0.0.0/104", tag("mapped-form"));
        let r = Reader::from_source(w.to_bytes()).unwrap();
        assert_eq!(r.metadata.ip_version, 6);
        // maxminddb looks IPv4 up under ::/96
        assert_eq!(tag_of(&r, "81.2.69.142").as_deref(), Some("v4"));
        assert_eq!(tag_of(&r, "::81.2.69.142").as_deref(), Some("v4"));
        // ::ffff:0:0/96 is an alias of the IPv4 space
        assert_eq!(tag_of(&r, "::ffff:81.2.69.142").as_deref(), Some("v4"));
        assert_eq!(tag_of(&r, "10.9.8.7").as_deref(), Some("mapped-form"));
        assert_eq!(
            tag_of(&r, "::ffff:10.9.8.7").as_deref(),
            Some("mapped-form")
        );
        assert_eq!(tag_of(&r, "2001:218:ffff::1").as_deref(), Some("v6"));
        assert_eq!(tag_of(&r, "2001:219::1"), None);
        assert_eq!(tag_of(&r, "::1"), None);
        assert_eq!(tag_of(&r, "1.1.1.1"), None);
        let (_, prefix) = r.lookup_prefix::<Tag>(ip("81.2.69.142")).unwrap();
        assert_eq!(prefix, 24); // maxminddb 0.24 counts IPv4 prefixes from the ::/96 node
                                // the alias is not reported twice by within()
        let all: Vec<String> = r
            .within::<Tag>("::/0".parse().unwrap())
            .unwrap()
            .map(|i| i.unwrap().ip_net.to_string())
            .collect();
        assert_eq!(all, vec!["10.0.0.0/8", "81.2.69.0/24", "2001:218::/32"]);
    }

    #[test]
    fn writer_later_inserts_override_within_their_range() {
        let mut w = MmdbWriter::new("Test-DB", 4);
        w.insert("10.0.0.0/8", tag("A"))
            .insert("10.1.0.0/16", tag("B"))
            .insert("10.1.2.0/24", tag("C"))
            .insert("10.0.0.0/15", tag("D")) // covers 10.0/16 and 10.1/16, incl. C
            .insert("10.0.0.5", tag("E"));
        let r = Reader::from_source(w.to_bytes()).unwrap();
        assert_eq!(tag_of(&r, "10.1.2.3").as_deref(), Some("D"));
        assert_eq!(tag_of(&r, "10.1.200.1").as_deref(), Some("D"));
        assert_eq!(tag_of(&r, "10.0.0.5").as_deref(), Some("E"));
        assert_eq!(tag_of(&r, "10.0.0.4").as_deref(), Some("D"));
        assert_eq!(tag_of(&r, "10.2.0.0").as_deref(), Some("A"));
        assert_eq!(tag_of(&r, "10.255.255.255").as_deref(), Some("A"));
        assert_eq!(tag_of(&r, "11.0.0.0"), None);

        // a smaller network inserted later wins only inside itself
        let mut w = MmdbWriter::new("Test-DB", 6);
        w.insert("::/0", tag("all"))
            .insert("2001:db8::/32", tag("doc"))
            .insert("192.0.2.0/24", tag("test-net"));
        let r = Reader::from_source(w.to_bytes()).unwrap();
        assert_eq!(tag_of(&r, "2001:db8::1").as_deref(), Some("doc"));
        assert_eq!(tag_of(&r, "2001:db9::1").as_deref(), Some("all"));
        assert_eq!(tag_of(&r, "192.0.2.1").as_deref(), Some("test-net"));
        assert_eq!(tag_of(&r, "::ffff:192.0.2.1").as_deref(), Some("test-net"));
        assert_eq!(tag_of(&r, "192.0.3.1").as_deref(), Some("all"));
    }

    #[test]
    fn writer_all_record_sizes() {
        for bits in [24, 28, 32] {
            let mut w = country_db(6);
            w.record_size(bits);
            let bytes = w.to_bytes();
            let r = Reader::from_source(bytes.clone()).unwrap();
            assert_eq!(r.metadata.record_size, bits);
            let db = GeoDb::from_bytes(bytes).unwrap();
            assert_eq!(
                db.lookup(ip("81.2.69.142")),
                info("GB", &[]),
                "record size {bits}"
            );
            assert_eq!(
                db.lookup(ip("2001:218::1")),
                info("JP", &[]),
                "record size {bits}"
            );
        }
    }

    #[test]
    fn writer_encodes_every_type_and_size_class() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct All<'a> {
            u16: u16,
            u32: u32,
            u64: u64,
            u128: u128,
            neg: i32,
            pos: i32,
            f32: f32,
            f64: f64,
            yes: bool,
            no: bool,
            bytes: &'a [u8],
            empty: String,
            s29: String,
            s300: String,
            s70k: String,
            arr: Vec<u32>,
        }
        let long = |n: usize| "x".repeat(n);
        let rec = Value::map([
            ("u16", Value::U16(65535)),
            ("u32", Value::U32(0)),
            ("u64", Value::U64(u64::MAX)),
            ("u128", Value::U128(u128::MAX - 1)),
            ("neg", Value::I32(-5)),
            ("pos", Value::I32(300)),
            ("f32", Value::F32(1.5)),
            ("f64", Value::F64(-2.25)),
            ("yes", Value::Bool(true)),
            ("no", Value::Bool(false)),
            ("bytes", Value::Bytes(vec![0, 1, 255])),
            ("empty", Value::str("")),
            ("s29", Value::str(&long(29))),
            ("s300", Value::str(&long(300))),
            ("s70k", Value::str(&long(70_000))),
            ("arr", Value::Array((0..300).map(Value::U32).collect())),
        ]);
        let mut w = MmdbWriter::new("Test-DB", 4);
        w.insert("0.0.0.0/0", rec);
        let r = Reader::from_source(w.to_bytes()).unwrap();
        let got: All = r.lookup(ip("203.0.113.9")).unwrap();
        assert_eq!(
            got,
            All {
                u16: 65535,
                u32: 0,
                u64: u64::MAX,
                u128: u128::MAX - 1,
                neg: -5,
                pos: 300,
                f32: 1.5,
                f64: -2.25,
                yes: true,
                no: false,
                bytes: &[0, 1, 255],
                empty: String::new(),
                s29: long(29),
                s300: long(300),
                s70k: long(70_000),
                arr: (0..300).collect(),
            }
        );
        // the metadata/data encoder uses the spec's control bytes
        let mut out = Vec::new();
        encode(&Value::U16(0), &mut out);
        encode(&Value::Bool(true), &mut out);
        encode(&Value::str("ab"), &mut out);
        assert_eq!(out, vec![0xa0, 0x01, 0x07, 0x42, b'a', b'b']);
    }

    #[test]
    fn writer_identical_records_are_stored_once() {
        let mut one = MmdbWriter::new("Test-DB", 4);
        one.insert("10.0.0.0/8", country_record("GB"));
        let mut two = one.clone();
        two.insert("11.0.0.0/8", country_record("GB"));
        let (a, b) = (one.to_bytes(), two.to_bytes());
        // one more node's worth of tree, same data section
        assert!(b.len() - a.len() < 100, "{} vs {}", a.len(), b.len());
        assert_eq!(
            GeoDb::from_bytes(b).unwrap().lookup(ip("11.1.1.1")),
            info("GB", &[])
        );
    }

    // ---- GeoDb ----

    #[test]
    fn country_db_ipv4_and_ipv6() {
        for v in [4, 6] {
            let db = geo(&country_db(v));
            assert_eq!(db.database_type(), "GeoLite2-Country");
            assert!(!db.has_subdivisions());
            assert_eq!(db.lookup(ip("81.2.69.142")), info("GB", &[]));
            assert_eq!(db.lookup(ip("216.160.83.56")), info("US", &[]));
            assert_eq!(db.lookup(ip("89.160.20.112")), info("SE", &[]));
            // IPv4-mapped IPv6 is looked up as IPv4
            assert_eq!(db.lookup(ip("::ffff:81.2.69.142")), info("GB", &[]));
        }
    }

    #[test]
    fn ipv6_lookups() {
        let db = geo(&country_db(6));
        assert_eq!(db.lookup(ip("2001:218::1")), info("JP", &[]));
        assert_eq!(db.lookup(ip("2001:218:ffff:ffff::")), info("JP", &[]));
        assert_eq!(db.lookup(ip("2001:219::1")), GeoInfo::default());
        // an IPv4-only database has nothing for IPv6 (and must not walk its tree with 128 bits)
        let db4 = geo(&country_db(4));
        assert_eq!(db4.lookup(ip("2001:218::1")), GeoInfo::default());
        assert_eq!(db4.lookup(ip("::5102:458e")), GeoInfo::default()); // ::81.2.69.142
    }

    #[test]
    fn no_record_is_default() {
        let db = geo(&country_db(6));
        for a in [
            "1.1.1.1",
            "0.0.0.0",
            "255.255.255.255",
            "::",
            "::1",
            "ffff::1",
        ] {
            assert_eq!(db.lookup(ip(a)), GeoInfo::default(), "{a}");
        }
        // an empty database is valid and finds nothing
        let empty = GeoDb::from_bytes(MmdbWriter::new("GeoIP2-Country", 6).to_bytes()).unwrap();
        assert_eq!(empty.lookup(ip("81.2.69.142")), GeoInfo::default());
    }

    #[test]
    fn country_only_never_registered_country() {
        let mut w = MmdbWriter::new("GeoIP2-Country", 6);
        let iso = |c: &str| Value::map([("iso_code", Value::str(c))]);
        w.insert(
            "10.0.0.0/8",
            Value::map([("country", iso("DE")), ("registered_country", iso("US"))]),
        );
        w.insert(
            "11.0.0.0/8",
            Value::map([("registered_country", iso("US"))]),
        );
        w.insert("12.0.0.0/8", country_record("FR"));
        let db = geo(&w);
        assert_eq!(db.lookup(ip("10.1.1.1")), info("DE", &[]));
        assert_eq!(db.lookup(ip("11.1.1.1")), GeoInfo::default());
    }

    #[test]
    fn city_db_with_subdivisions() {
        let mut w = MmdbWriter::new("GeoIP2-City", 6);
        w.insert("81.2.69.0/24", city_record("GB", &["ENG"]));
        w.insert("216.160.83.0/24", city_record("US", &["WA"]));
        w.insert("89.160.20.0/24", city_record("ES", &["CT", "ES-B"])); // two levels, one prefixed
        w.insert("2001:218::/32", city_record("JP", &[]));
        let lower = Value::map([
            ("country", Value::map([("iso_code", Value::str("gb"))])),
            (
                "subdivisions",
                Value::Array(vec![
                    Value::map([("iso_code", Value::str("sct"))]),
                    Value::map([("names", Value::map([("en", Value::str("no code"))]))]),
                    Value::map([("iso_code", Value::str("bad code!"))]),
                ]),
            ),
        ]);
        w.insert("81.2.70.0/24", lower);
        let db = geo(&w);
        assert_eq!(db.database_type(), "GeoIP2-City");
        assert!(db.has_subdivisions());
        assert_eq!(db.lookup(ip("81.2.69.142")), info("GB", &["GB-ENG"]));
        assert_eq!(db.lookup(ip("216.160.83.56")), info("US", &["US-WA"]));
        assert_eq!(
            db.lookup(ip("89.160.20.112")),
            info("ES", &["ES-CT", "ES-B"])
        );
        assert_eq!(db.lookup(ip("2001:218::1")), info("JP", &[]));
        assert_eq!(db.lookup(ip("81.2.70.1")), info("GB", &["GB-SCT"]));
    }

    #[test]
    fn subdivisions_without_country_are_dropped() {
        let mut w = MmdbWriter::new("GeoIP2-City", 4);
        w.insert("10.0.0.0/8", country_record("GB"));
        w.insert(
            "11.0.0.0/8",
            Value::map([(
                "subdivisions",
                Value::Array(vec![Value::map([("iso_code", Value::str("ENG"))])]),
            )]),
        );
        let db = geo(&w);
        assert_eq!(db.lookup(ip("11.0.0.1")), GeoInfo::default());
    }

    #[test]
    fn flat_country_code_schema() {
        // ip-location-db: database_type "country ipv4" / "country ipvAll", {"country_code": ".."}
        let mut w4 = MmdbWriter::new("country ipv4", 4);
        w4.insert("8.8.8.0/24", flat_country_record("US"));
        w4.insert("1.0.0.0/24", flat_country_record("au"));
        w4.insert("2.0.0.0/24", flat_country_record("ZZZ")); // not alpha-2: no country
        let db = geo(&w4);
        assert_eq!(db.database_type(), "country ipv4");
        assert!(!db.has_subdivisions());
        assert_eq!(db.lookup(ip("8.8.8.8")), info("US", &[]));
        assert_eq!(db.lookup(ip("1.0.0.1")), info("AU", &[]));
        assert_eq!(db.lookup(ip("2.0.0.1")), GeoInfo::default());
        assert_eq!(db.lookup(ip("2001:4860::8888")), GeoInfo::default());

        let mut w6 = MmdbWriter::new("country ipvAll", 6);
        w6.insert("8.8.8.0/24", flat_country_record("US"));
        w6.insert("2001:4860::/32", flat_country_record("US"));
        let db = geo(&w6);
        assert_eq!(db.lookup(ip("8.8.8.8")), info("US", &[]));
        assert_eq!(db.lookup(ip("2001:4860:4860::8888")), info("US", &[]));
    }

    // ---- AsnDb ----

    fn asn_db(database_type: &str, ip_version: u16) -> AsnDb {
        let mut w = MmdbWriter::new(database_type, ip_version);
        w.insert("1.128.0.0/11", asn_record(1221, "Telstra"));
        w.insert("12.81.92.0/22", asn_record(7018, "AT&T Services"));
        w.insert("89.160.0.0/17", asn_record(29518, "Bredband2 AB"));
        w.insert("5.5.5.0/24", asn_record(0, "reserved"));
        w.insert(
            "6.6.6.0/24",
            Value::map([("autonomous_system_number", Value::str("AS64500"))]),
        );
        w.insert(
            "7.7.7.0/24",
            Value::map([("autonomous_system_number", Value::U64(4_200_000_000))]),
        );
        if ip_version == 6 {
            w.insert("2600:6000::/20", asn_record(237, "Merit"));
        }
        AsnDb::from_bytes(w.to_bytes()).expect("valid asn db")
    }

    #[test]
    fn asn_db_lookups() {
        for (t, v) in [("GeoLite2-ASN", 6), ("asn ipv4", 4)] {
            let db = asn_db(t, v);
            assert_eq!(db.database_type(), t);
            assert_eq!(db.lookup(ip("1.128.0.1")), Some(1221));
            assert_eq!(db.lookup(ip("12.81.92.1")), Some(7018));
            assert_eq!(db.lookup(ip("89.160.20.112")), Some(29518));
            assert_eq!(db.lookup(ip("::ffff:12.81.92.1")), Some(7018));
            assert_eq!(db.lookup(ip("5.5.5.5")), None, "AS0 is no ASN");
            assert_eq!(db.lookup(ip("6.6.6.6")), Some(64500));
            assert_eq!(db.lookup(ip("7.7.7.7")), Some(4_200_000_000));
            assert_eq!(db.lookup(ip("81.2.69.142")), None);
            let v6 = db.lookup(ip("2600:6000::1"));
            assert_eq!(v6, if v == 6 { Some(237) } else { None });
        }
    }

    // ---- refusals ----

    #[test]
    fn garbage_is_invalid() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            b"not a database".to_vec(),
            vec![0u8; 4096],
            b"\xab\xcd\xefMaxMind.com".to_vec(),
            b"\xab\xcd\xefMaxMind.com\xe1\x4bip_version\xa1\x06".to_vec(),
        ];
        for bytes in cases {
            assert!(
                matches!(GeoDb::from_bytes(bytes.clone()), Err(GeoError::Invalid(_))),
                "{bytes:?}"
            );
            assert!(matches!(
                AsnDb::from_bytes(bytes),
                Err(GeoError::Invalid(_))
            ));
        }
        let good = country_db(6).to_bytes();
        // truncated anywhere before the metadata: the tree or the data no longer fit
        let marker = rfind(&good, METADATA_MARKER).unwrap();
        for cut in [0, 1, 7, marker / 2, marker - 1] {
            let mut b = good[..cut].to_vec();
            b.extend_from_slice(&good[marker..]);
            assert!(
                matches!(GeoDb::from_bytes(b), Err(GeoError::Invalid(_))),
                "cut {cut}"
            );
        }
        // truncated inside the metadata
        for cut in [marker + 14, marker + 20, good.len() - 1] {
            assert!(
                matches!(
                    GeoDb::from_bytes(good[..cut].to_vec()),
                    Err(GeoError::Invalid(_))
                ),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn corrupt_tree_and_data_are_invalid() {
        let mut w = MmdbWriter::new("GeoIP2-Country", 4);
        w.insert("0.0.0.0/1", country_record("GB"));
        let good = w.to_bytes();
        assert!(GeoDb::from_bytes(good.clone()).is_ok());
        let node_count = Reader::from_source(good.clone())
            .unwrap()
            .metadata
            .node_count as usize;
        assert_eq!(node_count, 1);
        // root's left record (24 bits) into the 16-byte separator
        let mut b = good.clone();
        b[..3].copy_from_slice(&((node_count + 5) as u32).to_be_bytes()[1..]);
        assert!(matches!(GeoDb::from_bytes(b), Err(GeoError::Invalid(_))));
        // past the end of the buffer
        let mut b = good.clone();
        b[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(GeoDb::from_bytes(b), Err(GeoError::Invalid(_))));
        // a data record that is a pointer to itself
        let mut b = good.clone();
        let data = node_count * 6 + 16;
        b[data] = 0x20; // pointer, size bits 0: 1-byte pointer with value 0
        b[data + 1] = 0x00;
        assert!(matches!(GeoDb::from_bytes(b), Err(GeoError::Invalid(_))));
        // a map claiming more entries than there are bytes
        let mut b = good.clone();
        b[data] = 0xfd; // map, size 29 + next byte
        assert!(matches!(GeoDb::from_bytes(b), Err(GeoError::Invalid(_))));
    }

    #[test]
    fn wrong_record_types_are_invalid() {
        let mut w = MmdbWriter::new("GeoIP2-Country", 4);
        w.insert("10.0.0.0/8", Value::map([("country", Value::str("GB"))]));
        assert!(matches!(
            GeoDb::from_bytes(w.to_bytes()),
            Err(GeoError::Invalid(_))
        ));
        let mut w = MmdbWriter::new("GeoLite2-ASN", 4);
        w.insert(
            "10.0.0.0/8",
            Value::map([(
                "autonomous_system_number",
                Value::map([("x", Value::U32(1))]),
            )]),
        );
        assert!(matches!(
            AsnDb::from_bytes(w.to_bytes()),
            Err(GeoError::Invalid(_))
        ));
    }

    #[test]
    fn asn_db_as_geo_db_is_refused() {
        let mut w = MmdbWriter::new("GeoLite2-ASN", 6);
        w.insert("1.128.0.0/11", asn_record(1221, "Telstra"));
        let err = GeoDb::from_bytes(w.to_bytes()).unwrap_err();
        assert!(
            matches!(&err, GeoError::WrongKind { database_type, .. } if database_type == "GeoLite2-ASN")
        );
        assert!(err.to_string().contains("ASN"), "{err}");
        // recognised by its records too (ip-location-db names its asn dbs "asn ipv4" etc.,
        // but do not rely on names)
        let mut w = MmdbWriter::new("some database", 4);
        w.insert("1.128.0.0/11", asn_record(1221, "Telstra"));
        let err = GeoDb::from_bytes(w.to_bytes()).unwrap_err();
        assert!(matches!(err, GeoError::WrongKind { .. }));
        assert!(err.to_string().contains("ASN database"), "{err}");
        // ... even when empty, by name
        let empty = MmdbWriter::new("GeoLite2-ASN", 6).to_bytes();
        assert!(matches!(
            GeoDb::from_bytes(empty),
            Err(GeoError::WrongKind { .. })
        ));
    }

    #[test]
    fn geo_db_as_asn_db_is_refused() {
        for w in [country_db(6), country_db(4)] {
            let err = AsnDb::from_bytes(w.to_bytes()).unwrap_err();
            assert!(matches!(err, GeoError::WrongKind { .. }), "{err}");
            assert!(err.to_string().contains("country/city"), "{err}");
        }
        let mut flat = MmdbWriter::new("country ipv4", 4);
        flat.insert("8.8.8.0/24", flat_country_record("US"));
        assert!(matches!(
            AsnDb::from_bytes(flat.to_bytes()),
            Err(GeoError::WrongKind { .. })
        ));
    }

    #[test]
    fn mutated_databases_never_panic() {
        // Deterministic byte-flip fuzzing: from_bytes returns Ok or Err, lookups never panic.
        let mut city = MmdbWriter::new("GeoIP2-City", 6);
        city.insert("81.2.69.0/24", city_record("GB", &["ENG"]))
            .insert("2001:218::/32", city_record("JP", &["13"]))
            .insert("1.128.0.0/11", asn_record(1221, "Telstra"));
        let bases = [city.to_bytes(), asn_db_bytes()];
        let probes: Vec<IpAddr> = [
            "81.2.69.142",
            "2001:218::1",
            "1.128.0.1",
            "::",
            "255.255.255.255",
            "ffff::",
        ]
        .iter()
        .map(|a| ip(a))
        .collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for base in &bases {
            for _ in 0..3000 {
                let mut b = base.clone();
                for _ in 0..1 + rnd() % 3 {
                    let pos = (rnd() % b.len() as u64) as usize;
                    b[pos] = rnd() as u8;
                }
                if let Ok(db) = GeoDb::from_bytes(b.clone()) {
                    for p in &probes {
                        db.lookup(*p);
                    }
                }
                if let Ok(db) = AsnDb::from_bytes(b) {
                    for p in &probes {
                        db.lookup(*p);
                    }
                }
            }
        }
    }

    fn asn_db_bytes() -> Vec<u8> {
        let mut w = MmdbWriter::new("GeoLite2-ASN", 6);
        w.insert("1.128.0.0/11", asn_record(1221, "Telstra"))
            .insert("2600:6000::/20", asn_record(237, "Merit"));
        w.to_bytes()
    }

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync>() {}
        check::<GeoDb>();
        check::<AsnDb>();
    }
}
