//! The registry store on both backends — the embedded SQLite file and a real PostgreSQL
//! server — through the one interface: migrations, records, usage, caps' counts,
//! de-duplication, reaping candidates, the reaper's lease, initial-access-token uses counted
//! across replicas, and the sealed token unreadable without its key (the raw row is read).

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use dcr_gateway::registry::crypto::KeyRing;
use dcr_gateway::registry::policy::Counts;
use dcr_gateway::registry::postgres::Postgres as PgBackend;
use dcr_gateway::registry::sqlite::Sqlite;
use dcr_gateway::registry::usage::UsagePaths;
use dcr_gateway::registry::{Admission, ClientRow, ClientState, Limits, ListQuery, ManualClock, Registry, Store};

const T0: i64 = 1_800_000_000;
/// The schema version after every migration.
const LATEST: i64 = dcr_gateway::registry::store::MIGRATIONS.len() as i64;

fn keys(b: u8) -> KeyRing {
    KeyRing::parse(&format!("k1:{}\n", base64::engine::general_purpose::STANDARD.encode([b; 32]))).unwrap()
}

fn limits() -> Limits {
    Limits {
        max_clients: 0,
        max_per_software: 0,
        max_per_prefix: 0,
        prefix_window_secs: 3600,
        prefix_v4: 24,
        prefix_v6: 48,
        dedupe_window_secs: 3600,
        unused_grace_secs: 600,
        idle_after_secs: 86_400,
    }
}

/// An accepted registration with only what a test names: no geo, user agent, hosts, token
/// label or public URI; the row's facts read from `sent`.
fn accepted<'a>(
    ip: std::net::IpAddr,
    sent: &'a [u8],
    answer: &'a serde_json::Map<String, serde_json::Value>,
) -> dcr_gateway::registry::Accepted<'a> {
    dcr_gateway::registry::Accepted {
        client_ip: ip,
        country: None,
        asn: None,
        user_agent: None,
        sent,
        client_name: None,
        redirect_hosts: &[],
        admitted_by: None,
        answer,
        public_client_uri: None,
        identity: None,
    }
}

fn row(id: &str, created: i64, prefix: &str, software: &str, public: bool) -> ClientRow {
    ClientRow {
        client_id: id.into(),
        created_at: created,
        last_used_at: None,
        deleted_at: None,
        deleted_reason: None,
        client_ip: "203.0.113.7".into(),
        prefix: prefix.into(),
        country: Some("NL".into()),
        asn: Some(64500),
        user_agent: Some("test-agent/1".into()),
        software_id: None,
        software_version: None,
        client_name: Some("Test".into()),
        software_key: software.into(),
        redirect_hosts: vec!["app.example".into()],
        auth_method: Some(if public { "none" } else { "client_secret_basic" }.into()),
        public,
        fingerprint: format!("fp-{software}"),
        admitted_by: Some("partner-a".into()),
        registration_client_uri: Some(format!("https://gw.example/reg/{id}")),
        idp_client_uri: Some(format!("http://idp.internal/reg/{id}")),
        token_sealed: None,
        answer: Some(format!("{{\"client_id\":\"{id}\"}}")),
    }
}

/// The same assertions on any backend.
fn exercise(store: &Store, second: &Store) {
    // Migrations are idempotent.
    assert_eq!(store.migrate().unwrap(), (LATEST, LATEST));
    let l = limits();
    let a = row("client-a", T0, "203.0.113.0/24", "name:test", true);
    assert!(store.insert(&a).unwrap());
    assert!(!store.insert(&a).unwrap(), "a retried insert changes nothing");
    let got = store.get("client-a").unwrap().unwrap();
    assert_eq!(got, a);
    assert_eq!(store.get("nope").unwrap(), None);

    // Usage only moves forward, and only for known live clients.
    assert_eq!(store.touch_many(&[("client-a".into(), T0 + 100), ("unknown".into(), T0)]).unwrap(), 1);
    store.touch_many(&[("client-a".into(), T0 + 50)]).unwrap();
    assert_eq!(store.get("client-a").unwrap().unwrap().last_used_at, Some(T0 + 100));

    // Counts for caps.
    store.insert(&row("client-b", T0 + 10, "203.0.113.0/24", "name:test", false)).unwrap();
    store.insert(&row("client-c", T0 + 20, "198.51.100.0/24", "id:other", false)).unwrap();
    let c = store.counts("name:test", "203.0.113.0/24", T0 + 5).unwrap();
    assert_eq!((c.live_total, c.live_software, c.prefix_recent), (3, 2, 1));
    // Each count stops at its bound (a cap's value); a bound of 0 skips it.
    let bound = Counts { live_total: 2, live_software: 0, prefix_recent: 5 };
    let c = store.counts_up_to("name:test", "203.0.113.0/24", T0 - 5, bound).unwrap();
    assert_eq!((c.live_total, c.live_software, c.prefix_recent), (2, 0, 2));

    // De-duplication: same fingerprint and prefix within the window, public only.
    assert_eq!(store.find_duplicate("fp-name:test", "203.0.113.0/24", T0 - 1).unwrap().unwrap().client_id, "client-a");
    assert!(store.find_duplicate("fp-name:test", "198.51.100.0/24", T0 - 1).unwrap().is_none());
    assert!(store.find_duplicate("fp-name:test", "203.0.113.0/24", T0 + 1).unwrap().is_none(), "outside the window");
    assert!(store.find_duplicate("fp-id:other", "198.51.100.0/24", 0).unwrap().is_none(), "confidential: never");
    // What seeds the kept set of recent public registrations: public, live, in the window.
    assert_eq!(store.recent_public(T0 - 1, 10).unwrap(), vec![("fp-name:test".into(), "203.0.113.0/24".into(), T0)]);
    assert!(store.recent_public(T0 + 1, 10).unwrap().is_empty());
    assert!(store.recent_public(T0 - 1, 0).unwrap().is_empty(), "bounded by its limit");

    // States and reaping candidates at a chosen time.
    let now = T0 + 100 + 86_400;
    let ids = |rows: Vec<ClientRow>| rows.into_iter().map(|r| r.client_id).collect::<Vec<_>>();
    let cands = store.reap_candidates(Some(now - l.unused_grace_secs), Some(now - l.idle_after_secs), 10).unwrap();
    assert_eq!(ids(cands), vec!["client-a", "client-b", "client-c"]);
    let early = store.reap_candidates(Some(T0 + 15 - 600), Some(T0 - 86_400), 10).unwrap();
    assert!(early.is_empty());
    let q = |state| ListQuery { state: Some(state), limit: 10, ..Default::default() };
    let (idle, n) = store.list(&q(ClientState::Idle), &l, now).unwrap();
    assert_eq!((ids(idle), n), (vec!["client-a".to_string()], 1));
    let (unused, _) = store.list(&q(ClientState::Unused), &l, now).unwrap();
    assert_eq!(ids(unused), vec!["client-b", "client-c"]);
    let (active, _) = store.list(&q(ClientState::Active), &l, T0 + 30).unwrap();
    assert_eq!(ids(active), vec!["client-a", "client-b", "client-c"]);
    let (page, total) = store.list(&ListQuery { offset: 1, limit: 1, ..Default::default() }, &l, now).unwrap();
    assert_eq!((ids(page), total), (vec!["client-b".to_string()], 3));
    let sw = ListQuery { software: Some("id:other".into()), limit: 10, ..Default::default() };
    assert_eq!(ids(store.list(&sw, &l, now).unwrap().0), vec!["client-c"]);
    let since = ListQuery { idle_since: Some(T0 + 15), limit: 10, ..Default::default() };
    assert_eq!(ids(store.list(&since, &l, now).unwrap().0), vec!["client-b"]);

    // Deletion marks the row and drops the token; it leaves the live counts.
    assert!(store.mark_deleted("client-b", now, "reaped:unused").unwrap());
    assert!(!store.mark_deleted("client-b", now, "again").unwrap());
    let b = store.get("client-b").unwrap().unwrap();
    assert_eq!((b.deleted_at, b.deleted_reason.as_deref(), b.token_sealed), (Some(now), Some("reaped:unused"), None));
    assert_eq!(store.totals().unwrap(), (2, 1));
    assert_eq!(ids(store.list(&q(ClientState::Deleted), &l, now).unwrap().0), vec!["client-b"]);

    // The reaper's lease: one holder at a time, across two connections (two replicas).
    assert!(store.try_lease("reaper", "replica-1", T0, T0 + 60).unwrap());
    assert!(!second.try_lease("reaper", "replica-2", T0 + 10, T0 + 70).unwrap());
    assert!(store.try_lease("reaper", "replica-1", T0 + 20, T0 + 80).unwrap(), "renewed by its holder");
    assert!(second.try_lease("reaper", "replica-2", T0 + 81, T0 + 140).unwrap(), "taken once expired");
    second.release_lease("reaper", "replica-2").unwrap();
    assert!(store.try_lease("reaper", "replica-1", T0 + 82, T0 + 90).unwrap(), "free once released");

    // Initial-access-token uses counted in the store: N replicas, one limit.
    let taken: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let st = if i % 2 == 0 { store.clone() } else { second.clone() };
                s.spawn(move || (0..3).filter(|_| st.take_token_use("tokhash", 5).unwrap()).count() as u64)
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(taken, 5, "exactly max_uses across both connections");
    assert_eq!(store.token_uses("tokhash").unwrap(), 5);
    second.return_token_use("tokhash").unwrap();
    assert!(store.take_token_use("tokhash", 5).unwrap());
    assert!(!store.take_token_use("tokhash", 5).unwrap());
}

fn sqlite_pair(dir: &std::path::Path) -> (Store, Store) {
    let path = dir.join("registry.db");
    let a = Store::new(Arc::new(Sqlite::open(&path).unwrap()));
    assert_eq!(a.migrate().unwrap(), (0, LATEST));
    let b = Store::new(Arc::new(Sqlite::open(&path).unwrap()));
    (a, b)
}

#[test]
fn sqlite_store_does_what_the_registry_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = sqlite_pair(dir.path());
    exercise(&a, &b);
    // WAL mode, on disk.
    let conn = rusqlite::Connection::open(dir.path().join("registry.db")).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn postgres_store_does_what_the_registry_needs() {
    let pg = support::postgres::Postgres::start();
    let url = pg.database("registry_store");
    let a = Store::new(Arc::new(PgBackend::connect(&url, None).unwrap()));
    // Two replicas starting together migrate once.
    let b = Store::new(Arc::new(PgBackend::connect(&url, None).unwrap()));
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.migrate().unwrap());
        let hb = s.spawn(|| b.migrate().unwrap());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let mut got = [ra, rb];
    got.sort();
    assert_eq!(got, [(0, LATEST), (LATEST, LATEST)]);
    exercise(&a, &b);
}

#[test]
fn postgres_connection_is_reopened_after_the_server_drops_it() {
    let pg = support::postgres::Postgres::start();
    let store = pg_store(&pg, "registry_reconnect");
    let mut admin = postgres::Client::connect(&pg.url("postgres"), postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'registry_reconnect' AND pid <> pg_backend_pid()",
        )
        .unwrap();
    // The first call after the drop fails (counted by the caller); the next reconnects.
    let _ = store.totals();
    assert!(support::wait_until(Duration::from_secs(10), || store.totals().is_ok()));
}

/// The registry over a store: records off the caller's thread, usage flushed in batches, caps
/// and de-duplication (pending records included), tokens sealed at rest.
fn registry_behaviour(store: Store, raw_token: impl Fn(&str) -> Option<String>) {
    let clock = ManualClock::at(T0);
    let reg = Registry::with_store(
        store,
        keys(7),
        clock.clone(),
        UsagePaths { authorize: vec!["/auth".into()], form: vec!["/token".into()] },
        16,
        Duration::from_millis(20),
    );
    let mut l = limits();
    l.max_per_software = 2;
    let sent = br#"{"client_name":"Registry Test","redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"none"}"#;
    let ip: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let id = match reg.admit(sent, ip, &l).unwrap() {
        Admission::Forward(id) => id,
        other => panic!("{other:?}"),
    };
    assert!(id.public);
    assert_eq!(id.prefix, "203.0.113.0/24");
    let answer: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        r#"{"client_id":"pub-1","registration_access_token":"rat-plaintext-123","registration_client_uri":"http://idp/reg/pub-1",
            "token_endpoint_auth_method":"none","client_name":"Registry Test","redirect_uris":["https://app.example/cb"]}"#,
    )
    .unwrap();
    let hosts = vec!["app.example".to_string()];
    let accepted = dcr_gateway::registry::Accepted {
        client_ip: ip,
        country: Some("NL"),
        asn: Some(64500),
        user_agent: Some("ua/1"),
        sent,
        client_name: Some("Registry Test"),
        redirect_hosts: &hosts,
        admitted_by: None,
        answer: &answer,
        public_client_uri: Some("http://gw/reg/pub-1".into()),
        identity: None,
    };
    // The row built from admission's identity is the row read from the document again (the
    // sealed token aside: a fresh nonce each time).
    let comparable = |r: Option<ClientRow>| ClientRow { token_sealed: None, created_at: 0, ..r.expect("a client_id") };
    let from_identity = dcr_gateway::registry::Accepted {
        identity: Some(&id),
        public_client_uri: accepted.public_client_uri.clone(),
        ..accepted
    };
    let read_again = comparable(reg.row(&accepted, &l));
    assert_eq!(comparable(reg.row(&from_identity, &l)), read_again);
    assert_eq!(read_again.fingerprint, id.fingerprint);
    assert!(read_again.public && read_again.answer.is_some());
    reg.record(&accepted, &l);
    // Identical public registration from the same prefix: the existing client, before and
    // after the write, without its token.
    for _ in 0..2 {
        match reg.admit(sent, "203.0.113.200".parse().unwrap(), &l).unwrap() {
            Admission::Duplicate { client_id, answer } => {
                assert_eq!(client_id, "pub-1");
                assert!(answer.get("registration_access_token").is_none());
                assert_eq!(answer["client_name"], "Registry Test");
            }
            other => panic!("{other:?}"),
        }
        reg.sync();
    }
    // Another prefix: forwarded.
    assert!(matches!(reg.admit(sent, "198.51.100.1".parse().unwrap(), &l).unwrap(), Admission::Forward(_)));
    let stored = reg.store().get("pub-1").unwrap().unwrap();
    assert_eq!(stored.software_key, "name:registry test");
    assert_eq!(stored.idp_client_uri.as_deref(), Some("http://idp/reg/pub-1"));
    assert_eq!(stored.registration_client_uri.as_deref(), Some("http://gw/reg/pub-1"));
    assert!(!stored.answer.as_deref().unwrap().contains("rat-plaintext-123"));
    let view = stored.view(ClientState::Active).to_string();
    assert!(!view.contains("rat-plaintext") && !view.contains("v1.k1."), "{view}");
    // The raw row holds ciphertext only; the right key opens it, another key does not.
    let raw = raw_token("pub-1").expect("a sealed token in the row");
    assert!(raw.starts_with("v1.k1.") && !raw.contains("rat-plaintext-123"));
    assert_eq!(keys(7).open("pub-1", &raw).unwrap(), "rat-plaintext-123");
    assert!(keys(8).open("pub-1", &raw).is_err());

    // Caps: a second client of the same software is allowed, the third refused.
    let sent2 = br#"{"client_name":"Registry  TEST","redirect_uris":["https://other.example/cb"],"token_endpoint_auth_method":"client_secret_basic"}"#;
    assert!(matches!(reg.admit(sent2, ip, &l).unwrap(), Admission::Forward(_)));
    let answer2: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"client_id":"conf-2","client_secret":"s3cret"}"#).unwrap();
    reg.record(&dcr_gateway::registry::Accepted { sent: sent2, answer: &answer2, ..accepted }, &l);
    match reg.admit(sent2, ip, &l).unwrap() {
        Admission::Capped(cap) => assert_eq!(cap.as_str(), "software"),
        other => panic!("{other:?}"),
    }
    assert_eq!(reg.metrics.cap_refusals.with_label_values(&["software"]).get(), 1);
    assert_eq!(reg.metrics.dedupes.get(), 2);
    reg.sync();
    assert_eq!(reg.store().get("conf-2").unwrap().unwrap().answer, None, "confidential answers are not kept");

    // Usage: aggregated, flushed by the worker at the registry's time.
    clock.set(T0 + 500);
    reg.sync();
    assert_eq!(
        reg.usage.observe_head("/auth?client_id=pub-1&response_type=code", None),
        dcr_gateway::registry::usage::Observe::Touched
    );
    reg.sync();
    assert_eq!(reg.store().get("pub-1").unwrap().unwrap().last_used_at, Some(T0 + 500));
    reg.shutdown();
}

#[test]
fn registry_records_dedupes_caps_and_tracks_usage_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite_pair(dir.path());
    let path = dir.path().join("registry.db");
    registry_behaviour(store, |id| {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row("SELECT token_sealed FROM clients WHERE client_id = ?1", [id], |r| r.get(0)).ok()
    });
}

#[test]
fn registry_records_dedupes_caps_and_tracks_usage_on_postgres() {
    let pg = support::postgres::Postgres::start();
    let url = pg.database("registry_behaviour");
    let store = Store::new(Arc::new(PgBackend::connect(&url, None).unwrap()));
    store.migrate().unwrap();
    registry_behaviour(store, |id| {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query_opt("SELECT token_sealed FROM clients WHERE client_id = $1", &[&id]).unwrap().and_then(|r| r.get(0))
    });
}

/// Of two live duplicates in the window (two identical registrations that passed before
/// either was recorded), the newest answers.
fn newest_duplicate_answers(store: &Store) {
    store.insert(&row("dup-old", T0, "192.0.2.0/24", "name:dup", true)).unwrap();
    store.insert(&row("dup-new", T0 + 30, "192.0.2.0/24", "name:dup", true)).unwrap();
    store.insert(&row("dup-mid", T0 + 10, "192.0.2.0/24", "name:dup", true)).unwrap();
    assert_eq!(store.find_duplicate("fp-name:dup", "192.0.2.0/24", T0 - 1).unwrap().unwrap().client_id, "dup-new");
    store.mark_deleted("dup-new", T0 + 40, "test").unwrap();
    assert_eq!(store.find_duplicate("fp-name:dup", "192.0.2.0/24", T0 - 1).unwrap().unwrap().client_id, "dup-mid");
    // More matches than one page of the lookup (16): still the newest.
    for i in 0..40 {
        store.insert(&row(&format!("many-{i}"), T0 + 100 + (i * 7) % 40, "192.0.2.0/24", "name:many", true)).unwrap();
    }
    store.insert(&row("many-tie", T0 + 100, "192.0.2.0/24", "name:many", true)).unwrap();
    let newest = store.find_duplicate("fp-name:many", "192.0.2.0/24", T0).unwrap().unwrap();
    assert_eq!(newest.created_at, T0 + 139, "{}", newest.client_id);
}

#[test]
fn the_newest_live_duplicate_answers_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::new(Arc::new(Sqlite::open(&dir.path().join("r.db")).unwrap()));
    sqlite.migrate().unwrap();
    newest_duplicate_answers(&sqlite);
    let pg = support::postgres::Postgres::start();
    let store = Store::new(Arc::new(PgBackend::connect(&pg.database("registry_dups"), None).unwrap()));
    store.migrate().unwrap();
    newest_duplicate_answers(&store);
}

/// The duplicate lookup reads the index of live public clients (migration 4), which holds no
/// confidential or deleted client: those cost each commit an index write for nothing.
#[test]
fn the_duplicate_lookup_uses_the_index_of_live_public_clients() {
    use dcr_gateway::registry::store::{Backend, Cell, Kind, P};
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Sqlite::open(&dir.path().join("r.db")).unwrap());
    let store = Store::new(backend.clone());
    store.migrate().unwrap();
    for later in [false, true] {
        let plan = backend
            .query(
                &format!("EXPLAIN QUERY PLAN {}", Store::duplicate_query(later)),
                &[P::T(Some("fp")), P::T(Some("203.0.113.0/24")), P::I(Some(T0))],
                &[Kind::I, Kind::I, Kind::I, Kind::T],
            )
            .unwrap();
        let details: Vec<String> = plan
            .into_iter()
            .filter_map(|r| match &r[3] {
                Cell::T(Some(d)) => Some(d.clone()),
                _ => None,
            })
            .collect();
        assert!(details.iter().any(|d| d.contains("USING INDEX clients_dedupe_live_public")), "{details:?}");
    }
    let indexes = backend
        .query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'clients'", &[], &[Kind::T])
        .unwrap();
    assert!(!indexes.iter().any(|r| r[0] == Cell::T(Some("clients_dedupe".into()))), "the old index is gone");
}

/// On the embedded store the proxy decides public registrations in memory: a registration
/// with no possible duplicate is admitted without the store; one that may have one, or any
/// while the kept set is not seeded or another process wrote to the file, goes to the store,
/// which decides.
#[test]
fn public_registrations_without_a_duplicate_are_admitted_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let s = Store::new(Arc::new(Sqlite::open(&dir.path().join("r.db")).unwrap()));
        s.migrate().unwrap();
        s
    };
    let clock = ManualClock::at(T0);
    let paths = UsagePaths::default();
    // A long tick: only sync() moves the worker, so each step below is deterministic.
    let reg = Registry::with_store(open(), keys(1), clock.clone(), paths.clone(), 16, Duration::from_secs(3600));
    let l = limits();
    let ip: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let doc = |n: &str| {
        format!(
            r#"{{"client_name":"{n}","redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none"}}"#
        )
    };
    let identity = |n: &str| Registry::admission_identity(doc(n).as_bytes(), ip, &l).expect("public: judged");
    let record = |reg: &Registry, n: &str, id: &str| {
        let answer: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!(r#"{{"client_id":"{id}","token_endpoint_auth_method":"none"}}"#)).unwrap();
        let sent = doc(n);
        let acc = accepted(ip, sent.as_bytes(), &answer);
        reg.record(&acc, &l);
    };
    // Nothing to judge for a confidential client without caps.
    let conf = br#"{"client_name":"x","token_endpoint_auth_method":"client_secret_basic"}"#;
    assert!(Registry::admission_identity(conf, ip, &l).is_none());

    // Not seeded yet: the store decides. Asking seeds it at the worker's next tick.
    assert!(reg.admit_identity_in_memory(&identity("one"), &l).is_none());
    record(&reg, "one", "c-one");
    reg.sync();
    // Seeded (the recorded one included): another registration is admitted in memory…
    assert!(matches!(reg.admit_identity_in_memory(&identity("two"), &l), Some(Admission::Forward(_))));
    // …the recorded one may have a duplicate: the store answers with it.
    assert!(reg.admit_identity_in_memory(&identity("one"), &l).is_none());
    assert!(matches!(reg.admit_identity(identity("one"), &l).unwrap(), Admission::Duplicate { .. }));
    // Recorded after the seed, still queued: kept at once.
    record(&reg, "three", "c-three");
    assert!(reg.admit_identity_in_memory(&identity("three"), &l).is_none());
    match reg.admit_identity(identity("three"), &l).unwrap() {
        Admission::Duplicate { client_id, .. } => assert_eq!(client_id, "c-three"),
        other => panic!("{other:?}"),
    }
    // Another process writes to the file (a second gateway, `clients` from the command line):
    // at the next tick the set is dropped and the store decides until it is seeded again.
    let other = Registry::with_store(open(), keys(1), clock.clone(), paths, 16, Duration::from_secs(3600));
    record(&other, "four", "c-four");
    other.sync();
    reg.sync();
    assert!(reg.admit_identity_in_memory(&identity("four"), &l).is_none());
    assert!(matches!(reg.admit_identity(identity("four"), &l).unwrap(), Admission::Duplicate { .. }));
    reg.sync();
    assert!(reg.admit_identity_in_memory(&identity("four"), &l).is_none(), "seeded again, with the other's row");
    assert!(matches!(reg.admit_identity_in_memory(&identity("five"), &l), Some(Admission::Forward(_))));
    // A deleted client stays in the set (a filter): the store finds no duplicate.
    reg.mark_deleted("c-one", T0 + 1, "test").unwrap();
    assert!(reg.admit_identity_in_memory(&identity("one"), &l).is_none());
    assert!(matches!(reg.admit_identity(identity("one"), &l).unwrap(), Admission::Forward(_)));
    // Out of the window: no longer a duplicate, dropped at the next tick.
    clock.set(T0 + l.dedupe_window_secs + 1);
    reg.sync();
    assert!(matches!(reg.admit_identity_in_memory(&identity("three"), &l), Some(Admission::Forward(_))));
    other.shutdown();
    reg.shutdown();
}

#[test]
fn two_replicas_on_one_postgres_share_caps_and_one_reaps() {
    let pg = support::postgres::Postgres::start();
    let url = pg.database("registry_fleet");
    let open = || {
        let s = Store::new(Arc::new(PgBackend::connect(&url, None).unwrap()));
        s.migrate().unwrap();
        s
    };
    let clock = ManualClock::at(T0);
    let paths = UsagePaths::default();
    let r1 = Registry::with_store(open(), keys(1), clock.clone(), paths.clone(), 16, Duration::from_millis(20));
    let r2 = Registry::with_store(open(), keys(1), clock.clone(), paths, 16, Duration::from_millis(20));
    let mut l = limits();
    l.max_clients = 2;
    let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    for (i, reg) in [&r1, &r2].into_iter().enumerate() {
        let sent = format!(r#"{{"client_name":"c{i}","redirect_uris":["https://a.example/cb"]}}"#);
        assert!(matches!(reg.admit(sent.as_bytes(), ip, &l).unwrap(), Admission::Forward(_)));
        let answer: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!(r#"{{"client_id":"fleet-{i}"}}"#)).unwrap();
        let acc = accepted(ip, sent.as_bytes(), &answer);
        reg.record(&acc, &l);
        reg.sync();
    }
    // The third registration, on either replica, meets the shared total.
    for reg in [&r1, &r2] {
        assert!(matches!(reg.admit(br#"{"client_name":"c9"}"#, ip, &l).unwrap(), Admission::Capped(_)));
    }
    // Reaping in report mode at a time when both are unused: only one replica's pass runs
    // while the other holds the lease.
    clock.set(T0 + 10_000);
    assert!(r1.store().try_lease("reaper", &r1.holder, T0, i64::MAX / 2).unwrap());
    let upstream = dcr_gateway::config::parse(
        "[upstream]\norigins = [\"http://127.0.0.1:9\"]\n",
        std::path::Path::new("/tmp/x.toml"),
    )
    .unwrap()
    .upstream;
    let report = dcr_gateway::registry::reap::reap_once(
        &r2,
        &l,
        &upstream,
        dcr_gateway::config::schema::ReapMode::Report,
        60,
        &|_| {},
    )
    .unwrap();
    assert!(report.lease_elsewhere);
    r1.store().release_lease("reaper", &r1.holder).unwrap();
    let lines = std::sync::Mutex::new(Vec::new());
    let report = dcr_gateway::registry::reap::reap_once(
        &r2,
        &l,
        &upstream,
        dcr_gateway::config::schema::ReapMode::Report,
        60,
        &|v| lines.lock().unwrap().push(v.clone()),
    )
    .unwrap();
    assert_eq!(report.reported.len(), 2);
    assert!(lines.lock().unwrap().iter().all(|v| v["event"] == "registry_reap" && v["reason"] == "unused"));
    r1.shutdown();
    r2.shutdown();
}

/// Caps count every accepted registration exactly once while the worker commits it: a row
/// committed between the store's count and the scan of rows still queued was once missed,
/// letting a registration past a full cap (seen on PostgreSQL under CI load).
fn caps_never_miss_a_registration_the_worker_is_committing(store: Store) {
    let reg = registry_on(store, ManualClock::at(T0), 1024, Duration::from_millis(20));
    let sent = br#"{"client_name":"Race","redirect_uris":["https://race.example/cb"],"token_endpoint_auth_method":"client_secret_basic"}"#;
    let ip: std::net::IpAddr = "198.51.100.4".parse().unwrap();
    let hosts = vec!["race.example".to_string()];
    let mut l = limits();
    for i in 0..400u64 {
        let answer: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!(r#"{{"client_id":"race-{i}"}}"#)).unwrap();
        let acc = dcr_gateway::registry::Accepted {
            client_name: Some("Race"),
            redirect_hosts: &hosts,
            ..accepted(ip, sent, &answer)
        };
        reg.record(&acc, &l);
        // Admit as the worker writes: all i + 1 recorded clients fill a cap of i + 1.
        l.max_clients = i + 1;
        for _ in 0..3 {
            match reg.admit(sent, ip, &l).unwrap() {
                Admission::Capped(cap) => assert_eq!(cap.as_str(), "total"),
                other => panic!("client {i}: a full cap admitted {other:?}"),
            }
            // The proxy's path without the blocking pool: refused too, or not decided there.
            match reg.admit_in_memory(sent, ip, &l) {
                Some(Admission::Capped(cap)) => assert_eq!(cap.as_str(), "total"),
                None => {}
                other => panic!("client {i}: a full cap admitted in memory {other:?}"),
            }
        }
    }
    reg.sync();
    reg.shutdown();
}

/// On SQLite the counts are kept in memory (`registry::tally`); on PostgreSQL they are asked
/// of the store under the commit gate. Both count each registration once.
#[test]
fn caps_never_miss_a_registration_the_worker_is_committing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite_pair(dir.path());
    caps_never_miss_a_registration_the_worker_is_committing(store);
}

#[test]
fn caps_never_miss_a_registration_the_worker_is_committing_on_postgres() {
    let pg = support::postgres::Postgres::start();
    caps_never_miss_a_registration_the_worker_is_committing(pg_store(&pg, "registry_commit_race"));
}

/// A registry over `store` without usage paths, its worker ticking every `tick`.
fn registry_on(store: Store, clock: Arc<ManualClock>, queue: usize, tick: Duration) -> Arc<Registry> {
    Registry::with_store(store, keys(7), clock, UsagePaths { authorize: vec![], form: vec![] }, queue, tick)
}

/// A migrated store in a new database of the test's PostgreSQL server.
fn pg_store(pg: &support::postgres::Postgres, db: &str) -> Store {
    let store = Store::new(Arc::new(PgBackend::connect(&pg.database(db), None).unwrap()));
    store.migrate().unwrap();
    store
}

/// The counts kept in memory for an SQLite store are the store's own at every step: queued
/// records, the prefix window sliding with the injected clock, clients deleted through RFC
/// 7592 or by the reaper's path, rows another process writes or deletes (seen at the worker's
/// next tick), and a reload widening the window.
#[test]
fn kept_counts_are_the_stores_counts() {
    use dcr_gateway::registry::Clock;
    let dir = tempfile::tempdir().unwrap();
    let (store, other_process) = sqlite_pair(dir.path());
    let clock = ManualClock::at(T0);
    let reg = registry_on(store.clone(), clock.clone(), 64, Duration::from_secs(3600));
    let mut l = limits();
    (l.max_clients, l.max_per_software, l.max_per_prefix, l.prefix_window_secs) = (100, 100, 100, 100);
    let (p1, p2) = ("203.0.113.0/24", "198.51.100.0/24");
    let record = |id: &str, name: &str, ip: &str| {
        let sent = format!(r#"{{"client_name":"{name}","redirect_uris":["https://{id}.example/cb"]}}"#);
        let answer: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!(r#"{{"client_id":"{id}"}}"#)).unwrap();
        let a = dcr_gateway::registry::Accepted {
            client_name: Some(name),
            ..accepted(ip.parse().unwrap(), sent.as_bytes(), &answer)
        };
        reg.record(&a, &l);
    };
    let kept = |l: &Limits, key: &str, prefix: &str| {
        let c = reg.counts(key, prefix, l).unwrap();
        (c.live_total, c.live_software, c.prefix_recent)
    };
    // After a sync nothing is queued: the kept counts must equal the store's, for every key
    // and prefix asked.
    let same_as_store = |l: &Limits, step: &str| {
        reg.sync();
        for key in ["name:a", "name:b", "name:c"] {
            for prefix in [p1, p2] {
                let s = store.counts(key, prefix, clock.now() - l.prefix_window_secs).unwrap();
                assert_eq!(
                    kept(l, key, prefix),
                    (s.live_total, s.live_software, s.prefix_recent),
                    "{step}: {key} {prefix}"
                );
            }
        }
    };
    // Seeded from an empty store at the first cap check, then counting queued records.
    assert_eq!(kept(&l, "name:a", p1), (0, 0, 0));
    record("c1", "A", "203.0.113.1");
    clock.set(T0 + 10);
    record("c2", "a", "198.51.100.1");
    clock.set(T0 + 20);
    record("c3", "B", "203.0.113.2");
    assert_eq!(kept(&l, "name:a", p1), (3, 2, 2), "queued records count");
    same_as_store(&l, "written");

    // The prefix window slides with the clock (deleted or not, a registration counts while in it).
    clock.set(T0 + 100);
    assert_eq!(kept(&l, "name:a", p1), (3, 2, 2), "c1 at the window's start still counts");
    clock.set(T0 + 101);
    assert_eq!(kept(&l, "name:a", p1), (3, 2, 1));
    same_as_store(&l, "window slid");
    clock.set(T0 + 121);
    assert_eq!(kept(&l, "name:a", p1), (3, 2, 0));
    same_as_store(&l, "window past");

    // Deleted through RFC 7592 (queued to the worker) and by the reaper's path.
    reg.changed("c2", true);
    same_as_store(&l, "rfc7592 delete");
    assert_eq!(kept(&l, "name:a", p2), (2, 1, 0));
    assert!(reg.mark_deleted("c3", clock.now(), "reaped:unused").unwrap());
    assert!(!reg.mark_deleted("c3", clock.now(), "reaped:unused").unwrap(), "counted out once");
    assert_eq!(kept(&l, "name:b", p1), (1, 0, 0));
    same_as_store(&l, "reaped");

    // Another process (the CLI's `clients reap`, a second gateway on the file) writes: seen at
    // the worker's next tick.
    assert!(other_process.mark_deleted("c1", clock.now(), "reaped:idle").unwrap());
    let mut foreign = row("c4", clock.now(), p2, "name:c", false);
    foreign.client_name = Some("C".into());
    assert!(other_process.insert(&foreign).unwrap());
    same_as_store(&l, "other process");
    assert_eq!(kept(&l, "name:c", p2), (1, 1, 1));

    // A reload widening the window counts again from the store: c1..c3 are back in it.
    clock.set(T0 + 130);
    record("c5", "C", "203.0.113.3");
    let wide = Limits { prefix_window_secs: 1000, ..l.clone() };
    assert_eq!(kept(&wide, "name:c", p1), (2, 2, 3));
    same_as_store(&wide, "window widened");
    reg.shutdown();
}

/// The proxy decides on its own thread only what memory can decide: kept counts seeded for
/// the window asked (SQLite), and no duplicate to look up in the store.
#[test]
fn admission_in_memory_only_when_the_store_is_not_needed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite_pair(dir.path());
    let reg = registry_on(store, ManualClock::at(T0), 64, Duration::from_secs(3600));
    let mut l = limits();
    l.max_per_software = 1;
    let ip: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let confidential = br#"{"client_name":"Mem","redirect_uris":["https://m.example/cb"],"token_endpoint_auth_method":"client_secret_basic"}"#;
    let public =
        br#"{"client_name":"Other","redirect_uris":["https://o.example/cb"],"token_endpoint_auth_method":"none"}"#;
    assert!(reg.admit_in_memory(confidential, ip, &l).is_none(), "not seeded yet");
    assert!(matches!(reg.admit(confidential, ip, &l).unwrap(), Admission::Forward(_)));
    assert!(matches!(reg.admit_in_memory(confidential, ip, &l), Some(Admission::Forward(_))));
    let answer: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r#"{"client_id":"mem-1"}"#).unwrap();
    let acc = dcr_gateway::registry::Accepted { client_name: Some("Mem"), ..accepted(ip, confidential, &answer) };
    reg.record(&acc, &l);
    match reg.admit_in_memory(confidential, ip, &l) {
        Some(Admission::Capped(cap)) => assert_eq!(cap.as_str(), "software"),
        other => panic!("{other:?}"),
    }
    assert_eq!(reg.metrics.cap_refusals.with_label_values(&["software"]).get(), 1);
    assert!(reg.admit_in_memory(public, ip, &l).is_none(), "a public client's duplicate is looked up in the store");
    let no_dedupe = Limits { dedupe_window_secs: 0, ..l.clone() };
    assert!(matches!(reg.admit_in_memory(public, ip, &no_dedupe), Some(Admission::Forward(_))));
    let wider = Limits { prefix_window_secs: l.prefix_window_secs + 1, ..l.clone() };
    assert!(reg.admit_in_memory(confidential, ip, &wider).is_none(), "a wider window is seeded from the store first");
    reg.shutdown();
}

/// `sslmode=require` connects over TLS verified against `[registry] ca_file`, and only then:
/// the server's own view (pg_stat_ssl) shows the registry's connection encrypted; without the
/// CA (the system's roots), with another CA, by a name the certificate does not hold, or to a
/// server without TLS it does not connect at all; `ca_file` replaces the system's roots; a `ca_file` with a URL that does not ask for TLS is refused. No error quotes the
/// password.
#[test]
fn postgres_over_tls_is_verified_against_the_ca_file() {
    use dcr_gateway::config::schema::{RegistryBackend, RegistrySection};
    let (ca, cert, key) = support::certs::ca_and_leaf_for_ip("127.0.0.1");
    let (other_ca, _, _) = support::certs::ca_and_leaf_for_ip("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, other_ca_file) = (dir.path().join("ca.pem"), dir.path().join("other-ca.pem"));
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(&other_ca_file, &other_ca).unwrap();
    let pg = support::postgres::Postgres::start_tls(&cert, &key);
    let password = "pw-never-quoted-4711";
    let url = format!("{} password={password}", pg.database("registry_tls"));
    let open = |url: &str, ca: Option<&std::path::Path>| {
        let section = RegistrySection {
            enabled: true,
            backend: RegistryBackend::Postgres,
            url: Some(url.to_string()),
            ca_file: ca.map(|p| p.display().to_string()),
            ..Default::default()
        };
        dcr_gateway::registry::open_store(&section).map(|(store, _, to)| (store, to))
    };

    let (store, version) = open(&format!("{url} sslmode=require"), Some(&ca_file)).expect("verified TLS connects");
    // The admin documents' listener (`[admin] store = "registry"`) connects the same way.
    let _listener = dcr_gateway::registry::admin_store::listen(&format!("{url} sslmode=require"), Some(&ca_file))
        .expect("the listener connects over verified TLS");
    assert_eq!(version, dcr_gateway::registry::store::MIGRATIONS.len() as i64);
    assert!(store.get("nobody").unwrap().is_none());
    let mut admin = postgres::Client::connect(&pg.url("postgres"), postgres::NoTls).unwrap();
    let encrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = 'registry_tls' AND s.ssl AND s.version IN ('TLSv1.2', 'TLSv1.3')",
            &[],
        )
        .unwrap()
        .get(0);
    let plain: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = 'registry_tls' AND NOT s.ssl",
            &[],
        )
        .unwrap()
        .get(0);
    let listener_tls: bool = admin
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&dcr_gateway::registry::admin_store::LISTENER_NAME],
        )
        .unwrap()
        .get(0);
    assert!(listener_tls, "the listener's connection is TLS");
    assert!(encrypted >= 2, "the registry's connection and the listener's are TLS");
    assert_eq!(plain, 0, "no plain connection to the registry's database");
    drop(store);

    let refused = |url: String, ca: Option<&std::path::Path>, why: &str| {
        let e = match open(&url, ca) {
            Ok(_) => panic!("connected: {why}"),
            Err(e) => e.to_string(),
        };
        assert!(!e.contains(password), "{e}");
        e
    };
    let e = refused(format!("{url} sslmode=require"), None, "the test CA is not among the system's roots");
    assert!(e.contains("certificate verify failed"), "{e}");
    let e = refused(format!("{url} sslmode=require"), Some(&other_ca_file), "another CA");
    assert!(e.contains("certificate verify failed"), "{e}");
    // The host name is checked too: the certificate names 127.0.0.1 only.
    let by_name = url.replace("host=127.0.0.1", "host=localhost");
    assert_ne!(by_name, url);
    let e = refused(format!("{by_name} sslmode=require"), Some(&ca_file), "a name the certificate does not hold");
    assert!(e.contains("certificate verify failed"), "{e}");
    // ca_file replaces the system's roots, it is not added to them: with the server's CA among
    // the "system" roots (SSL_CERT_FILE, in a child process), another ca_file still refuses —
    // and without ca_file those roots are what verifies.
    let migrate = |ca: Option<&std::path::Path>| {
        let config = dir.path().join("migrate.toml");
        let ca = ca.map(|p| format!("ca_file = \"{}\"\n", p.display())).unwrap_or_default();
        let text = format!(
            "[upstream]\norigins = [\"http://127.0.0.1:9\"]\n[registry]\nbackend = \"postgres\"\nurl = \"{url} sslmode=require\"\n{ca}"
        );
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(support::BIN)
            .args(["registry", "migrate", "-c"])
            .arg(&config)
            .env("SSL_CERT_FILE", &ca_file)
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains(password), "{text}");
        (out.status.success(), text)
    };
    let (ok, text) = migrate(None);
    assert!(ok, "the system's roots (SSL_CERT_FILE) hold the server's CA: {text}");
    let (ok, text) = migrate(Some(&other_ca_file));
    assert!(!ok && text.contains("certificate verify failed"), "ca_file must replace the roots: {text}");

    let e = refused(url.clone(), Some(&ca_file), "ca_file without sslmode=require");
    assert!(e.contains("registry.ca_file") && e.contains("sslmode=require"), "{e}");
    let e = refused(format!("{url} sslmode=prefer"), Some(&ca_file), "prefer is not require");
    assert!(e.contains("registry.ca_file"), "{e}");

    // A server without TLS: sslmode=require does not fall back to plain.
    let plain_pg = support::postgres::Postgres::start();
    let e = refused(
        format!("{} password={password} sslmode=require", plain_pg.database("registry_plain")),
        Some(&ca_file),
        "a server without TLS",
    );
    assert!(e.to_lowercase().contains("tls") || e.to_lowercase().contains("ssl"), "{e}");
}
