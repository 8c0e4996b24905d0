//! Tests of the lookups and the validator, on databases built by the `mmdb-writer` crate.

use mmdb_writer::{asn_record, city_record, country_record, encode, flat_country_record, ip, MmdbWriter, Value};

use super::validate::{rfind, METADATA_MARKER};
use super::*;

fn geo(w: &MmdbWriter) -> GeoDb {
    GeoDb::from_bytes(w.to_bytes()).expect("valid geo db")
}

fn info(country: &str, subdivisions: &[&str]) -> GeoInfo {
    GeoInfo { country: Some(country.to_string()), subdivisions: subdivisions.iter().map(|s| s.to_string()).collect() }
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
    w.insert("81.2.69.0/24", tag("a")).insert("1.2.3.4", tag("host"));
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
    assert_eq!(tag_of(&r, "::ffff:10.9.8.7").as_deref(), Some("mapped-form"));
    assert_eq!(tag_of(&r, "2001:218:ffff::1").as_deref(), Some("v6"));
    assert_eq!(tag_of(&r, "2001:219::1"), None);
    assert_eq!(tag_of(&r, "::1"), None);
    assert_eq!(tag_of(&r, "1.1.1.1"), None);
    let (_, prefix) = r.lookup_prefix::<Tag>(ip("81.2.69.142")).unwrap();
    assert_eq!(prefix, 24); // maxminddb 0.24 counts IPv4 prefixes from the ::/96 node
                            // the alias is not reported twice by within()
    let all: Vec<String> =
        r.within::<Tag>("::/0".parse().unwrap()).unwrap().map(|i| i.unwrap().ip_net.to_string()).collect();
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
    w.insert("::/0", tag("all")).insert("2001:db8::/32", tag("doc")).insert("192.0.2.0/24", tag("test-net"));
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
        assert_eq!(db.lookup(ip("81.2.69.142")), info("GB", &[]), "record size {bits}");
        assert_eq!(db.lookup(ip("2001:218::1")), info("JP", &[]), "record size {bits}");
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
    assert_eq!(GeoDb::from_bytes(b).unwrap().lookup(ip("11.1.1.1")), info("GB", &[]));
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
    for a in ["1.1.1.1", "0.0.0.0", "255.255.255.255", "::", "::1", "ffff::1"] {
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
    w.insert("10.0.0.0/8", Value::map([("country", iso("DE")), ("registered_country", iso("US"))]));
    w.insert("11.0.0.0/8", Value::map([("registered_country", iso("US"))]));
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
    assert_eq!(db.lookup(ip("89.160.20.112")), info("ES", &["ES-CT", "ES-B"]));
    assert_eq!(db.lookup(ip("2001:218::1")), info("JP", &[]));
    assert_eq!(db.lookup(ip("81.2.70.1")), info("GB", &["GB-SCT"]));
}

#[test]
fn subdivisions_without_country_are_dropped() {
    let mut w = MmdbWriter::new("GeoIP2-City", 4);
    w.insert("10.0.0.0/8", country_record("GB"));
    w.insert(
        "11.0.0.0/8",
        Value::map([("subdivisions", Value::Array(vec![Value::map([("iso_code", Value::str("ENG"))])]))]),
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
    w.insert("6.6.6.0/24", Value::map([("autonomous_system_number", Value::str("AS64500"))]));
    w.insert("7.7.7.0/24", Value::map([("autonomous_system_number", Value::U64(4_200_000_000))]));
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
        assert!(matches!(GeoDb::from_bytes(bytes.clone()), Err(GeoError::Invalid(_))), "{bytes:?}");
        assert!(matches!(AsnDb::from_bytes(bytes), Err(GeoError::Invalid(_))));
    }
    let good = country_db(6).to_bytes();
    // truncated anywhere before the metadata: the tree or the data no longer fit
    let marker = rfind(&good, METADATA_MARKER).unwrap();
    for cut in [0, 1, 7, marker / 2, marker - 1] {
        let mut b = good[..cut].to_vec();
        b.extend_from_slice(&good[marker..]);
        assert!(matches!(GeoDb::from_bytes(b), Err(GeoError::Invalid(_))), "cut {cut}");
    }
    // truncated inside the metadata
    for cut in [marker + 14, marker + 20, good.len() - 1] {
        assert!(matches!(GeoDb::from_bytes(good[..cut].to_vec()), Err(GeoError::Invalid(_))), "cut {cut}");
    }
}

#[test]
fn corrupt_tree_and_data_are_invalid() {
    let mut w = MmdbWriter::new("GeoIP2-Country", 4);
    w.insert("0.0.0.0/1", country_record("GB"));
    let good = w.to_bytes();
    assert!(GeoDb::from_bytes(good.clone()).is_ok());
    let node_count = Reader::from_source(good.clone()).unwrap().metadata.node_count as usize;
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
    assert!(matches!(GeoDb::from_bytes(w.to_bytes()), Err(GeoError::Invalid(_))));
    let mut w = MmdbWriter::new("GeoLite2-ASN", 4);
    w.insert("10.0.0.0/8", Value::map([("autonomous_system_number", Value::map([("x", Value::U32(1))]))]));
    assert!(matches!(AsnDb::from_bytes(w.to_bytes()), Err(GeoError::Invalid(_))));
}

#[test]
fn asn_db_as_geo_db_is_refused() {
    let mut w = MmdbWriter::new("GeoLite2-ASN", 6);
    w.insert("1.128.0.0/11", asn_record(1221, "Telstra"));
    let err = GeoDb::from_bytes(w.to_bytes()).unwrap_err();
    assert!(matches!(&err, GeoError::WrongKind { database_type, .. } if database_type == "GeoLite2-ASN"));
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
    assert!(matches!(GeoDb::from_bytes(empty), Err(GeoError::WrongKind { .. })));
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
    assert!(matches!(AsnDb::from_bytes(flat.to_bytes()), Err(GeoError::WrongKind { .. })));
}

#[test]
fn mutated_databases_never_panic() {
    // Deterministic byte-flip fuzzing: from_bytes returns Ok or Err, lookups never panic.
    let mut city = MmdbWriter::new("GeoIP2-City", 6);
    city.insert("81.2.69.0/24", city_record("GB", &["ENG"]))
        .insert("2001:218::/32", city_record("JP", &["13"]))
        .insert("1.128.0.0/11", asn_record(1221, "Telstra"));
    let bases = [city.to_bytes(), asn_db_bytes()];
    let probes: Vec<IpAddr> =
        ["81.2.69.142", "2001:218::1", "1.128.0.1", "::", "255.255.255.255", "ffff::"].iter().map(|a| ip(a)).collect();
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
    w.insert("1.128.0.0/11", asn_record(1221, "Telstra")).insert("2600:6000::/20", asn_record(237, "Merit"));
    w.to_bytes()
}

#[test]
fn send_sync() {
    fn check<T: Send + Sync>() {}
    check::<GeoDb>();
    check::<AsnDb>();
}
