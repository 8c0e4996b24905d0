//! `[admin] store = "registry"`: network ACLs and tenant settings kept in the registry store.
//!
//! - the store's document functions on SQLite and on a real PostgreSQL (versions, optimistic
//!   writes, one-transaction import, the notification);
//! - two gateway processes on one real PostgreSQL in front of the recording upstream: a rule
//!   created through replica A's admin API blocks the next registration on replica B, through
//!   the notification (the periodic check is an hour away in that test), and the upstream never
//!   sees the refused registration; a stale `If-Match` from B is refused after A's write;
//! - with no notification (a change written straight into the table), the periodic check picks
//!   the change up; a stored rule set that does not compile keeps the running one;
//! - `registry import` / `registry export` round trip, and an import that does not validate
//!   writes nothing.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dcr_gateway::registry::admin_store::{self, CHANNEL};
use dcr_gateway::registry::Store;
use support::upstream::Upstream;
use support::*;

const BLOCK: &str = r#"{"description":"block a bad network","active":true,"priority":1,
    "rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["203.0.113.0/24"]}}}"#;
const REG: &str =
    r#"{"client_name":"Fleet","redirect_uris":["https://fleet.example/cb"],"token_endpoint_auth_method":"none"}"#;
const SCOPES: &str =
    "read:network_acls,create:network_acls,update:network_acls,read:tenant_settings,update:tenant_settings";

fn admin_token(dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["token", "new", "--admin", "--scopes", SCOPES, "--label", "ops", "--file"])
        .arg(dir.join("admin-tokens.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// (status, body, ETag) of an admin API call.
fn admin(method: &str, url: &str, token: &str, if_match: Option<&str>, body: Option<&str>) -> (u16, String, String) {
    let mut req = agent().request(method, url).set("authorization", &format!("Bearer {token}"));
    if let Some(m) = if_match {
        req = req.set("if-match", m);
    }
    let r = match body {
        Some(b) => req.set("content-type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let etag = resp.header("etag").unwrap_or_default().to_string();
    (resp.status(), resp.into_string().unwrap_or_default(), etag)
}

fn register(gw: &Gateway, ip: &str) -> (u16, String) {
    register_from(gw, ip, REG)
}

/// A gateway keeping its rules and settings in the store `registry` describes.
fn replica(up: &Upstream, tokens: &[u8], registry: &str, check_ms: u64) -> Gateway {
    replica_with(GatewayBuilder::new(&up.origin()), tokens, registry, check_ms)
}

fn replica_with(builder: GatewayBuilder, tokens: &[u8], registry: &str, check_ms: u64) -> Gateway {
    builder
        .file("admin-tokens.toml", tokens.to_vec())
        .extra(&format!(
            "[admin]\ntokens_file = \"admin-tokens.toml\"\nstore = \"registry\"\nstore_check_interval_ms = {check_ms}\n\
             [registry]\n{registry}\n"
        ))
        .start()
}

// ---------------------------------------------------------------------------------------------
// The store functions, on both backends.

fn exercise(store: &Store) {
    let empty = store.admin_docs().unwrap();
    assert_eq!(empty.versions(), (0, 0));
    assert_eq!(empty.rules.body, None);
    assert_eq!(empty.rules.sha256, dcr_gateway::state::store::sha256_hex(b""));
    // First write from version 0; a second writer that read version 0 too loses.
    assert_eq!(store.put_admin_doc(admin_store::RULES, Some("[]"), 0, 10, "t").unwrap(), Some(1));
    assert_eq!(store.put_admin_doc(admin_store::RULES, Some("[1]"), 0, 11, "t").unwrap(), None);
    assert_eq!(store.put_admin_doc(admin_store::RULES, Some("[2]"), 1, 12, "t").unwrap(), Some(2));
    assert_eq!(store.put_admin_doc(admin_store::RULES, Some("[3]"), 1, 13, "t").unwrap(), None, "stale");
    let d = store.admin_docs().unwrap();
    assert_eq!(d.rules.body.as_deref(), Some("[2]"));
    assert_eq!(d.rules.sha256, dcr_gateway::state::store::sha256_hex(b"[2]"));
    assert_eq!(store.admin_versions().unwrap(), (2, 0));
    // Import: both documents in one transaction, versions moved on whatever they were.
    store.import_admin_docs(&[(admin_store::RULES, "[4]"), (admin_store::SETTINGS, "{}")], 20, "import").unwrap();
    let d = store.admin_docs().unwrap();
    assert_eq!(d.versions(), (3, 1));
    assert_eq!((d.rules.body.as_deref(), d.settings.body.as_deref()), (Some("[4]"), Some("{}")));
    // Put back to never written: the body goes, the version still moves on (never repeats).
    assert_eq!(store.put_admin_doc(admin_store::SETTINGS, None, 1, 21, "t").unwrap(), Some(2));
    let d = store.admin_docs().unwrap();
    assert_eq!((d.settings.body.as_deref(), d.settings.version), (None, 2));
    assert_eq!(d.settings.sha256, dcr_gateway::state::store::sha256_hex(b""));
    assert!(!format!("{d:?}").contains("[4]"), "bodies never in Debug: {d:?}");
}

#[test]
fn admin_documents_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let backend = dcr_gateway::registry::sqlite::Sqlite::open(&dir.path().join("r.db")).unwrap();
    let store = Store::new(Arc::new(backend));
    store.migrate().unwrap();
    exercise(&store);
    // No notifications on SQLite: nothing to do, no error.
    store.notify_admin_change(admin_store::RULES, 3).unwrap();
}

#[test]
fn admin_documents_on_postgres_and_their_notification() {
    let pg = support::postgres::Postgres::start();
    let url = pg.database("admin_docs_unit");
    let store = Store::new(Arc::new(dcr_gateway::registry::postgres::Postgres::connect(&url, None).unwrap()));
    store.migrate().unwrap();
    let mut listener = admin_store::listen(&url, None).unwrap();
    exercise(&store);
    store.notify_admin_change(admin_store::RULES, 3).unwrap();
    use ::postgres::fallible_iterator::FallibleIterator;
    let n = listener.notifications().timeout_iter(Duration::from_secs(10)).next().unwrap().expect("a notification");
    assert_eq!((n.channel(), n.payload()), (CHANNEL, "network-acls:3"));
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let names: i64 = c
        .query_one("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1", &[&admin_store::LISTENER_NAME])
        .unwrap()
        .get(0);
    assert_eq!(names, 1, "the listening connection is named");
}

// ---------------------------------------------------------------------------------------------
// Two replicas on one PostgreSQL.

#[test]
fn a_rule_created_on_one_replica_blocks_the_next_registration_on_the_other_through_notify() {
    let pg = support::postgres::Postgres::start();
    let url = pg.database("admin_store_notify");
    let dir = tempfile::tempdir().unwrap();
    let token = admin_token(dir.path());
    let tokens = std::fs::read(dir.path().join("admin-tokens.toml")).unwrap();
    let up = Upstream::start();
    // The periodic check is an hour away: only the notification can carry the change.
    let registry = format!("backend = \"postgres\"\nurl = \"{url}\"");
    let a = replica(&up, &tokens, &registry, 3_600_000);
    // B reads its connection string from a file (a mounted secret, newline and all): the store
    // and the notification listener both connect with it.
    let b = replica_with(
        GatewayBuilder::new(&up.origin()).file("pg-url", format!("{url}\n").into_bytes()),
        &tokens,
        "backend = \"postgres\"\nurl_file = \"pg-url\"",
        3_600_000,
    );
    assert_eq!(b.wait_metric("dcr_gateway_admin_store_listening", 1.0), 1.0, "{}", b.stderr_text());

    assert_eq!(register(&b, "203.0.113.7").0, 201);
    let before = up.count();
    let (_, _, stale) = admin("GET", &b.admin_url("/api/v2/network-acls"), &token, None, None);

    let acls = a.admin_url("/api/v2/network-acls");
    let (status, body, etag) = admin("POST", &acls, &token, None, Some(BLOCK));
    assert_eq!(status, 201, "{body}");
    let created = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || b.metric("dcr_gateway_admin_store_version{document=\"network-acls\"}")
            >= 1.0),
        "B never loaded the rule: {}",
        b.stderr_text()
    );
    let took = created.elapsed();
    assert!(took < Duration::from_secs(2), "the notification path took {took:?}");
    let (status, body) = register(&b, "203.0.113.7");
    assert_eq!(status, 403, "B enforces A's rule: {body}");
    assert_eq!(up.count(), before, "the refused registration never reached the IdP");
    assert_eq!(register(&b, "198.51.100.1").0, 201, "other networks still register");

    // Both replicas answer with one version of the rules, and a stale If-Match on B (read
    // before A's write) is refused: the ETag holds across the fleet.
    let (_, list, etag_b) = admin("GET", &b.admin_url("/api/v2/network-acls"), &token, None, None);
    assert_eq!(etag_b, etag, "{list}");
    let id = serde_json::from_str::<serde_json::Value>(&list).unwrap()[0]["id"].as_str().unwrap().to_string();
    let rule_b = b.admin_url(&format!("/api/v2/network-acls/{id}"));
    let (status, body, _) = admin("PATCH", &rule_b, &token, Some(&stale), Some(r#"{"active":false}"#));
    assert_eq!(status, 412, "{body}");
    // A rule that does not validate is refused once, by the replica it was sent to; nothing is
    // written to the store.
    let (status, body, _) = admin("POST", &acls, &token, None, Some(r#"{"rule":{"action":{"block":true}}}"#));
    assert_eq!(status, 400, "{body}");
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let v: i64 = c.query_one("SELECT version FROM admin_documents WHERE name = 'network-acls'", &[]).unwrap().get(0);
    assert_eq!(v, 1);

    // Settings too: disabling registration on B closes it on A.
    let (status, body, _) = admin(
        "PATCH",
        &b.admin_url("/api/v2/tenants/settings"),
        &token,
        None,
        Some(r#"{"flags":{"enable_dynamic_client_registration":false}}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(Duration::from_secs(5), || register(&a, "198.51.100.2").0 != 201), "A follows B's settings");

    // The listening connections dropped (a PostgreSQL restart, a proxy timeout): each replica
    // reconnects, and the next change still arrives by notification, the check an hour away.
    let listeners = |c: &mut ::postgres::Client| -> Vec<i32> {
        c.query("SELECT pid FROM pg_stat_activity WHERE application_name = $1", &[&admin_store::LISTENER_NAME])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let old = listeners(&mut c);
    assert_eq!(old.len(), 2, "one listener per replica");
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&admin_store::LISTENER_NAME],
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = listeners(&mut c);
            now.len() == 2 && now.iter().all(|p| !old.contains(p))
        }),
        "the replicas listen again"
    );
    let (status, body, _) = admin(
        "PATCH",
        &a.admin_url("/api/v2/tenants/settings"),
        &token,
        None,
        Some(r#"{"flags":{"enable_dynamic_client_registration":true}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let patched = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || register(&b, "198.51.100.3").0 == 201), "B follows A again");
    assert!(patched.elapsed() < Duration::from_secs(3), "after a reconnect: {:?}", patched.elapsed());

    // Concurrent creates on both replicas, no If-Match: each lands (a write that lost the race
    // for a version is redone on what the other wrote), none is lost.
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let url = [&a, &b][i % 2].admin_url("/api/v2/network-acls");
            let token = token.clone();
            std::thread::spawn(move || {
                let rule = BLOCK.replace(r#""priority":1"#, &format!(r#""priority":{}"#, 10 + i));
                admin("POST", &url, &token, None, Some(&rule))
            })
        })
        .collect();
    for w in writers {
        let (status, body, _) = w.join().unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let stored: String =
        c.query_one("SELECT body FROM admin_documents WHERE name = 'network-acls'", &[]).unwrap().get(0);
    let n = serde_json::from_str::<serde_json::Value>(&stored).unwrap().as_array().unwrap().len();
    assert_eq!(n, 5, "the first rule and the four concurrent ones");

    // The audit line names the store's document, never a token.
    let create = |l: &serde_json::Value| l["action"] == "network_acls.create";
    assert!(wait_until(Duration::from_secs(5), || a.audit_lines().iter().any(create)), "{}", a.stdout_text());
    let audit = a.audit_lines();
    let line = audit.iter().find(|l| create(l)).unwrap();
    assert_eq!(line["file"], "registry:network-acls");
    for text in [a.stderr_text(), a.stdout_text(), b.stderr_text(), b.stdout_text()] {
        assert!(!text.contains(&token), "the admin token is never logged");
    }
}

#[test]
fn without_a_notification_the_periodic_check_picks_the_change_up_and_a_bad_rule_set_is_kept_out() {
    let pg = support::postgres::Postgres::start();
    let url = pg.database("admin_store_periodic");
    let dir = tempfile::tempdir().unwrap();
    admin_token(dir.path());
    let tokens = std::fs::read(dir.path().join("admin-tokens.toml")).unwrap();
    let up = Upstream::start();
    let registry = format!("backend = \"postgres\"\nurl = \"{url}\"");
    // Files not watched: only the store's check reloads this replica (below, a broken
    // gateway.toml must not be picked up, nor its repair, by anything else).
    let b = replica_with(GatewayBuilder::new(&up.origin()).reload_keys("watch = false"), &tokens, &registry, 500);
    assert_eq!(register(&b, "203.0.113.7").0, 201);

    // Written straight into the table (a restore from backup, another tool): no notification.
    let rules = format!("[{BLOCK}]");
    let sha = dcr_gateway::state::store::sha256_hex(rules.as_bytes());
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    c.execute(
        "INSERT INTO admin_documents (name, body, sha256, version, updated_at, updated_by) \
         VALUES ('network-acls', $1, $2, 1, 0, 'restore')",
        &[&rules, &sha],
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || b.metric("dcr_gateway_admin_store_version{document=\"network-acls\"}")
            >= 1.0),
        "the periodic check never picked the change up: {}",
        b.stderr_text()
    );
    let before = up.count();
    assert_eq!(register(&b, "203.0.113.7").0, 403);
    assert_eq!(up.count(), before);
    assert!(b.stderr_text().contains("registry store (periodic check)"), "{}", b.stderr_text());

    // A stored rule set that does not compile: reported as a failed reload, the running rules
    // stay (and it is reported once, not at every check).
    let failures = b.metric("dcr_gateway_reloads_total{result=\"failure\"}");
    c.execute(
        "UPDATE admin_documents SET body = '[{\"rule\":{}}]', sha256 = 'x', version = 2 WHERE name = 'network-acls'",
        &[],
    )
    .unwrap();
    assert_eq!(b.wait_metric("dcr_gateway_reloads_total{result=\"failure\"}", failures + 1.0), failures + 1.0);
    assert_eq!(b.metric("dcr_gateway_last_reload_success"), 0.0);
    assert_eq!(register(&b, "203.0.113.7").0, 403, "the last good rules still apply");
    // Three check intervals later the bad version has not been tried again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(b.metric("dcr_gateway_reloads_total{result=\"failure\"}"), failures + 1.0, "reported once");

    // A reload that fails for another reason (gateway.toml broken for a while) is tried again
    // at the next check: once the file is back as it was, the replica catches up with the
    // store even though nothing else changes.
    let config = b.path("gateway.toml");
    let kept = std::fs::read(&config).unwrap();
    std::fs::write(&config, b"[upstream\n").unwrap();
    let open = "[]";
    let sha = dcr_gateway::state::store::sha256_hex(open.as_bytes());
    c.execute(
        "UPDATE admin_documents SET body = $1, sha256 = $2, version = 3 WHERE name = 'network-acls'",
        &[&open, &sha],
    )
    .unwrap();
    // The check's reload fails on the configuration (the bad rule set above was failure + 1),
    // and is tried again at the next check.
    let failed = b.wait_metric("dcr_gateway_reloads_total{result=\"failure\"}", failures + 3.0);
    assert!(failed >= failures + 3.0, "tried again: {}", b.stderr_text());
    std::fs::write(&config, kept).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || b.metric("dcr_gateway_admin_store_version{document=\"network-acls\"}")
            >= 3.0),
        "the replica never caught up: {}",
        b.stderr_text()
    );
    assert_eq!(register(&b, "203.0.113.7").0, 201, "the stored rules now apply");
}

// ---------------------------------------------------------------------------------------------
// registry import / export.

fn cli(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("registry").args(args).arg("-c").arg(config).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn import_and_export_round_trip_and_a_bad_import_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rules = format!("[{BLOCK}]\n");
    let settings = "{\"flags\": {\"enable_dynamic_client_registration\": true}, \"kept\": 1}\n";
    std::fs::write(d.join("rules.json"), &rules).unwrap();
    std::fs::write(d.join("tenant-settings.json"), settings).unwrap();
    std::fs::write(
        d.join("gateway.toml"),
        "[upstream]\norigins = [\"http://127.0.0.1:9\"]\n[acl]\nrules = \"rules.json\"\n\
         [admin]\nstore = \"registry\"\n[registry]\npath = \"registry.db\"\n",
    )
    .unwrap();
    let config = d.join("gateway.toml");

    let (code, out, err) = cli(&config, &["import"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("network-acls: imported as version 1"), "{out}");
    assert!(out.contains("tenant-settings: imported as version 1"), "{out}");

    // A rule set that does not compile: refused, nothing written, exit 1.
    std::fs::write(d.join("bad.json"), "[{\"rule\":{}}]").unwrap();
    let (code, out, err) = cli(&config, &["import", "--rules", d.join("bad.json").to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("refused, nothing imported"), "{err}");
    let store = Store::new(Arc::new(dcr_gateway::registry::sqlite::Sqlite::open(&d.join("registry.db")).unwrap()));
    assert_eq!(store.admin_versions().unwrap(), (1, 1), "the refused import wrote nothing");

    // Export to other files: byte for byte what was imported.
    let (code, out, err) = cli(
        &config,
        &[
            "export",
            "--rules",
            d.join("out-rules.json").to_str().unwrap(),
            "--settings",
            d.join("out-settings.json").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(d.join("out-rules.json")).unwrap(), rules);
    assert_eq!(std::fs::read_to_string(d.join("out-settings.json")).unwrap(), settings);

    // Importing again moves the versions on (replicas reload) even with the same content.
    let (code, out, err) = cli(&config, &["import"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(store.admin_versions().unwrap(), (2, 2));

    // A store that cannot be opened: a clear error, exit 1.
    std::fs::write(
        d.join("broken.toml"),
        "[upstream]\norigins = [\"http://127.0.0.1:9\"]\n[admin]\nstore = \"registry\"\n[registry]\npath = \"no/such/dir/r.db\"\n",
    )
    .unwrap();
    let (code, _, err) = cli(&d.join("broken.toml"), &["export", "--rules", d.join("x.json").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
}

/// `check` judges what `run` would start with: in registry mode the stored documents, not the
/// files (which may be gone once imported).
#[test]
fn check_in_registry_mode_reads_the_stored_rules_not_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("rules.json"), format!("[{BLOCK}]\n")).unwrap();
    std::fs::write(
        d.join("gateway.toml"),
        "[upstream]\norigins = [\"http://127.0.0.1:9\"]\n[acl]\nrules = \"rules.json\"\n\
         [admin]\nstore = \"registry\"\n[registry]\npath = \"registry.db\"\n",
    )
    .unwrap();
    let config = d.join("gateway.toml");
    let check = || {
        let out = Command::new(BIN).arg("check").arg("-c").arg(&config).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, out, err) = cli(&config, &["import"]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_file(d.join("rules.json")).unwrap();
    let (code, text) = check();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("configuration OK (1 rules"), "{text}");
    // A stored rule set that no longer compiles is a check failure naming its source.
    let store = Store::new(Arc::new(dcr_gateway::registry::sqlite::Sqlite::open(&d.join("registry.db")).unwrap()));
    store.import_admin_docs(&[(admin_store::RULES, "[{\"rule\":{}}]")], 30, "test").unwrap();
    let (code, text) = check();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("registry:network-acls"), "{text}");
}
