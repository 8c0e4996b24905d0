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
//! Validation is linear in the size of the database and runs once per load. The validator
//! is `validate.rs`; this file holds the lookups.

use std::fmt;
use std::net::IpAddr;

use maxminddb::Reader;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::canonical_ip;

#[cfg(test)]
mod tests;
mod validate;

/// Why a database was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeoError {
    /// Not a MaxMind DB, or a corrupt / unsupported one.
    #[error("invalid MaxMind DB: {0}")]
    Invalid(String),
    /// A valid MaxMind DB of the wrong kind (e.g. an ASN database given as the GeoIP one).
    #[error("MaxMind DB of type {database_type:?} is not {expected}: {reason}")]
    WrongKind { database_type: String, expected: &'static str, reason: String },
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
            u32::try_from(v).map(|n| (n != 0).then_some(n)).map_err(|_| E::custom(format!("ASN {v} out of range")))
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("ASN {v} out of range"))).and_then(|v| self.visit_u64(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("negative ASN {v}"))).and_then(|v| self.visit_u64(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let digits = v.trim();
            let digits = digits.strip_prefix("AS").or_else(|| digits.strip_prefix("as")).unwrap_or(digits);
            digits.parse::<u64>().map_err(|_| E::custom(format!("bad ASN {v:?}"))).and_then(|v| self.visit_u64(v))
        }
    }
    d.deserialize_any(AsnVisitor)
}

impl GeoRecord<'_> {
    fn country(&self) -> Option<String> {
        self.country.as_ref().and_then(|c| c.iso_code).or(self.country_code).and_then(normalize_country)
    }

    fn has_subdivisions(&self) -> bool {
        self.subdivisions.as_ref().is_some_and(|s| s.iter().any(|s| s.iso_code.is_some()))
    }

    fn into_info(self) -> GeoInfo {
        let country = self.country();
        let subdivisions = match (&country, &self.subdivisions) {
            (Some(cc), Some(subs)) => {
                subs.iter().filter_map(|s| s.iso_code).filter_map(|code| normalize_subdivision(cc, code)).collect()
            }
            _ => Vec::new(),
        };
        GeoInfo { country, subdivisions }
    }
}

/// Two ASCII letters, upper-cased; anything else is no country.
fn normalize_country(code: &str) -> Option<String> {
    let code = code.trim();
    (code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic())).then(|| code.to_ascii_uppercase())
}

/// `("GB", "eng")` → `GB-ENG`. The subdivision part of an ISO 3166-2 code is 1–3 ASCII
/// letters/digits; a code that already carries the country prefix is accepted.
fn normalize_subdivision(country: &str, code: &str) -> Option<String> {
    let code = code.trim().to_ascii_uppercase();
    let code = match code.strip_prefix(country).and_then(|rest| rest.strip_prefix('-')) {
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
        let wrong =
            |reason: String| GeoError::WrongKind { database_type: database_type.clone(), expected: EXPECTED, reason };
        if let Some(kind) = non_location_kind(&database_type) {
            return Err(wrong(format!("{kind} database; configure it as the ASN database, if at all")));
        }
        let (mut with_country, mut with_subdivisions, mut with_asn) = (0usize, 0usize, 0usize);
        for ip in &reps {
            let rec: GeoRecord = reader.lookup(*ip).map_err(|e| {
                GeoError::Invalid(format!("record for {ip} does not decode as a country/city record: {e}"))
            })?;
            with_country += usize::from(rec.country().is_some());
            with_subdivisions += usize::from(rec.has_subdivisions());
            if let Ok(AsnRecord { autonomous_system_number: Some(_) }) = reader.lookup::<AsnRecord>(*ip) {
                with_asn += 1;
            }
        }
        if !reps.is_empty() && with_country == 0 {
            let reason = if with_asn > 0 {
                "its records carry autonomous_system_number but no country: this is an ASN database".to_string()
            } else {
                "no record has a country code (country.iso_code or country_code)".to_string()
            };
            return Err(wrong(reason));
        }
        Ok(GeoDb { reader, has_subdivisions: with_subdivisions > 0 })
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
            let rec: AsnRecord = reader
                .lookup(*ip)
                .map_err(|e| GeoError::Invalid(format!("record for {ip} does not decode as an ASN record: {e}")))?;
            with_asn += usize::from(rec.autonomous_system_number.is_some());
            if let Ok(geo) = reader.lookup::<GeoRecord>(*ip) {
                with_country += usize::from(geo.country().is_some());
            }
        }
        let database_type = &reader.metadata.database_type;
        let looks_geo = has_token(database_type, &["country", "city", "enterprise"]);
        if with_asn == 0 && (!reps.is_empty() || looks_geo) {
            let reason = if with_country > 0 || looks_geo {
                "no record has autonomous_system_number: this is a country/city database".to_string()
            } else {
                "no record has autonomous_system_number".to_string()
            };
            return Err(GeoError::WrongKind { database_type: database_type.clone(), expected: EXPECTED, reason });
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
        self.reader.lookup::<AsnRecord>(ip).ok()?.autonomous_system_number
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
    database_type.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| tokens.iter().any(|t| w.eq_ignore_ascii_case(t)))
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

/// Validates `bytes` and opens it. Returns one representative address per distinct data
/// record reachable by lookups, for the callers' schema checks.
fn open(bytes: Vec<u8>) -> Result<(Reader<Vec<u8>>, Vec<IpAddr>), GeoError> {
    let reps = validate::validate(&bytes)?;
    // Safe now: the metadata decodes and the search tree lies within the buffer.
    let reader = Reader::from_source(bytes).map_err(|e| GeoError::Invalid(e.to_string()))?;
    Ok((reader, reps))
}
