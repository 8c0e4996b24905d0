//! `[cimd] mode = "bridge"` against the demo IdP (node-oidc-provider, which does not support
//! Client ID Metadata Documents): a client whose client_id is the URL of a document served by a
//! local HTTPS server (test CA in `[cimd] ca_file`) runs a full authorization-code + PKCE flow
//! through the gateway with a real client library (openid-client, `tests/e2e/cimd_flow.mjs`),
//! plain and pushed (PAR), and ends holding tokens; the IdP saw one registration for both flows.
//! A document whose redirect_uri differs is refused. In process, with an injected clock: a
//! changed document is picked up after its cache lifetime and updates the IdP client through
//! RFC 7592; concurrent first requests register once.

#[path = "fetch_support/doc_server.rs"]
mod doc_server;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use doc_server::{Answer, DocServer};
use serde_json::{json, Value};
use support::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn document(url: &str, redirect: &str, name: &str) -> String {
    json!({
        "client_id": url, "client_name": name, "redirect_uris": [redirect],
        "token_endpoint_auth_method": "none", "response_types": ["code"], "grant_types": ["authorization_code"]
    })
    .to_string()
}

/// The requests the IdP received on its registration route.
fn idp_received(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn registrations(record: &Path) -> Vec<Value> {
    idp_received(record).into_iter().filter(|r| r["method"] == "POST" && r["path"] == "/reg").collect()
}

fn flow(gw: &Gateway, client_id: &str, redirect: &str, mode: &str) -> Value {
    let out = Command::new("node")
        .arg(root().join("tests/e2e/cimd_flow.mjs"))
        .arg(format!("http://{}", gw.http))
        .arg(client_id)
        .arg(redirect)
        .arg(mode)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!("cimd_flow.mjs printed no JSON ({e}): {stdout} {}", String::from_utf8_lossy(&out.stderr))
    })
}

fn registry_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// A gateway in bridge mode over `origin`, trusting the document server's `cert`, with the
/// registry (SQLite) the bridge keeps its IdP clients in.
fn bridge_gateway(origin: &str, cert: &[u8]) -> GatewayBuilder {
    GatewayBuilder::new(origin)
        .file("ca.pem", cert.to_vec())
        .file("registry.keys", format!("k1:{}\n", registry_key()).into_bytes())
        .extra("[routes]\nupstream_registration_path = \"/reg\"")
        .extra("[registry]\nenabled = true\npath = \"registry.db\"\nkey_file = \"registry.keys\"")
        .extra("[cimd]\nmode = \"bridge\"\nca_file = \"ca.pem\"\nallow_cidrs = [\"127.0.0.1/32\", \"::1/128\"]\n")
}

#[test]
fn a_url_client_id_runs_a_full_flow_through_the_bridge_and_is_registered_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = support::certs::self_signed("localhost");
    let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let url = format!("https://localhost:{}/oauth/client.json", docs.addr.port());
    let other = format!("https://localhost:{}/oauth/other.json", docs.addr.port());
    let cb = "http://127.0.0.1:45123/callback";
    docs.set("/oauth/client.json", Answer::json(&document(&url, cb, "Bridge Test Client")));
    docs.set("/oauth/other.json", Answer::json(&document(&other, "http://127.0.0.1:45124/elsewhere", "Other Client")));

    let gw_port = free_port();
    let idp = support::demo_idp::DemoIdp::start(dir.path(), gw_port);
    let gw = GatewayBuilder::new(&idp.origin())
        .read_timeout_ms(20_000)
        .http_port(gw_port)
        .file("ca.pem", cert.clone())
        .file("registry.keys", format!("k1:{}\n", registry_key()).into_bytes())
        .extra("[routes]\nregistration_path = \"/oidc/register\"\nupstream_registration_path = \"/reg\"")
        .extra("[registry]\nenabled = true\npath = \"registry.db\"\nkey_file = \"registry.keys\"")
        .extra(
            "[cimd]\nmode = \"bridge\"\nca_file = \"ca.pem\"\nallow_cidrs = [\"127.0.0.1/32\", \"::1/128\"]\n\
             authorize_paths = [\"/auth\"]\n",
        )
        .start();

    // Discovery through the gateway says so (the IdP's own document does not).
    let disc: Value = agent().get(&gw.url("/.well-known/openid-configuration")).call().unwrap().into_json().unwrap();
    assert_eq!(disc["client_id_metadata_document_supported"], true, "{disc}");

    // Plain authorization-code + PKCE: tokens, and the revocation mapped too.
    let first = flow(&gw, &url, cb, "plain");
    assert_eq!(first["ok"], true, "{first}\n{}", gw.stderr_text());
    assert_eq!(first["cimd_supported"], true);
    assert_eq!(first["access_token"], true);
    assert_eq!(first["authorize_client_id"], url.as_str(), "the client only ever uses its URL");
    let regs = registrations(&idp.record);
    assert_eq!(regs.len(), 1, "{regs:?}");
    // What the IdP was sent: the document's metadata, never its URL as client_id, public.
    let sent: Value = serde_json::from_str(regs[0]["body"].as_str().unwrap()).unwrap();
    assert!(sent.get("client_id").is_none(), "{sent}");
    assert_eq!(sent["redirect_uris"], json!([cb]));
    assert_eq!(sent["token_endpoint_auth_method"], "none");
    assert_eq!(sent["client_name"], "Bridge Test Client");

    // The same document, pushed (RFC 9126): no second registration.
    let second = flow(&gw, &url, cb, "par");
    assert_eq!(second["ok"], true, "{second}\n{}", gw.stderr_text());
    assert_eq!(registrations(&idp.record).len(), 1, "one IdP client per document");

    // The mapping is in the registry's store, its token sealed.
    let db = rusqlite::Connection::open(gw.path("registry.db")).unwrap();
    let (idp_id, fp, sealed): (String, String, Option<String>) = db
        .query_row("SELECT client_id, fingerprint, token_sealed FROM cimd_clients WHERE url = ?1", [&url], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert!(!idp_id.is_empty() && idp_id != url);
    assert_eq!(fp.len(), 64);
    assert!(sealed.as_deref().is_some_and(|s| s.starts_with("v1.k1.")), "{sealed:?}");

    // A document that does not list the redirect URI the client uses: refused before the IdP
    // (plain: the gateway's error page; pushed: the PAR answer), never registered.
    let refused = flow(&gw, &other, cb, "plain");
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!((refused["stage"].as_str(), refused["status"].as_u64()), (Some("authorize"), Some(400)), "{refused}");
    assert_eq!(refused["error"], "invalid_request");
    let refused = flow(&gw, &other, cb, "par");
    assert_eq!((refused["stage"].as_str(), refused["status"].as_u64()), (Some("par"), Some(400)), "{refused}");
    assert_eq!(registrations(&idp.record).len(), 1);

    // HTTP Basic with a URL client_id: refused with a clear OAuth error; the IdP sees nothing.
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:secret", url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()));
    let r = agent()
        .post(&gw.url("/token"))
        .set("authorization", &format!("Basic {basic}"))
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string("grant_type=authorization_code&code=x&redirect_uri=http%3A%2F%2F127.0.0.1%3A45123%2Fcallback");
    let (status, text) = response_parts(r);
    assert_eq!(status, 401, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert!(v["error_description"].as_str().unwrap().contains("public"), "{text}");

    // A token request for an invalid document is the gateway's invalid_client, not the IdP's.
    let bad = format!("https://localhost:{}/oauth/missing.json", docs.addr.port());
    let form = format!(
        "grant_type=authorization_code&code=x&client_id={}",
        url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
    );
    let r = agent().post(&gw.url("/token")).set("content-type", "application/x-www-form-urlencoded").send_string(&form);
    let (status, text) = response_parts(r);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_client"), "{text}");

    // Every mapping counted; one registration.
    let metrics = agent().get(&gw.admin_url("/metrics")).call().unwrap().into_string().unwrap();
    assert!(metrics.contains("dcr_gateway_cimd_bridge_total{result=\"registered\"} 1"), "{metrics}");
    assert!(metrics.contains("dcr_gateway_cimd_bridge_total{result=\"refused\"} 0"));
    assert!(
        !metrics.contains("dcr_gateway_cimd_bridge_total{result=\"stored\"} 0"),
        "later requests used the stored client"
    );

    // No registration_access_token in the gateway's output.
    let logs = format!("{}{}", gw.stderr_text(), std::fs::read_to_string(gw.path("stdout.log")).unwrap_or_default());
    assert!(!logs.contains(sealed.as_deref().unwrap()), "the sealed token is not logged");
    assert!(logs.contains("cimd bridge: client registered at the IdP"), "{logs}");
}

/// A store, keys and the bridge in this process, the IdP a real demo IdP, the documents fetched
/// through the real fetcher over a cache whose clock the test moves.
struct InProcess {
    _dir: tempfile::TempDir,
    idp: support::demo_idp::DemoIdp,
    docs: DocServer,
    documents: dcr_gateway::fetch::cimd::Documents,
    bridge: Arc<dcr_gateway::registry::bridge::Bridge>,
    registry: Arc<dcr_gateway::registry::Registry>,
    target: dcr_gateway::registry::bridge::IdpTarget,
    settings: dcr_gateway::cimd::Settings,
    cfg: dcr_gateway::config::Config,
    /// Seconds the injected clock is ahead.
    ahead: Arc<AtomicU64>,
}

impl InProcess {
    fn start() -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = support::certs::self_signed("localhost");
        let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
        let idp = support::demo_idp::DemoIdp::start(dir.path(), free_port());
        std::fs::write(dir.path().join("registry.keys"), format!("k1:{}\n", registry_key())).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &cert).unwrap();
        let toml = format!(
            "[upstream]\norigins = [\"{}\"]\nread_timeout_ms = 20000\n\
             [routes]\nupstream_registration_path = \"/reg\"\n\
             [registry]\nenabled = true\npath = \"registry.db\"\nkey_file = \"registry.keys\"\n\
             [cimd]\nmode = \"bridge\"\nca_file = \"ca.pem\"\nallow_cidrs = [\"127.0.0.1/32\", \"::1/128\"]\n",
            idp.origin()
        );
        let cfg = dcr_gateway::config::parse(&toml, &dir.path().join("gateway.toml")).unwrap();
        let registry = dcr_gateway::registry::Registry::start(
            &cfg.registry,
            Arc::new(dcr_gateway::registry::SystemClock),
            dcr_gateway::registry::usage::UsagePaths { authorize: vec![], form: vec![] },
        )
        .unwrap();
        let fetcher = dcr_gateway::fetch::Fetcher::new(
            dcr_gateway::fetch::cimd::fetch_config(&cfg.cimd, Some(cert.clone())).unwrap(),
            Arc::new(dcr_gateway::fetch::SystemResolver),
        )
        .unwrap();
        let ahead = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let a = ahead.clone();
        let clock: dcr_gateway::fetch::cimd::Clock =
            Arc::new(move || base + Duration::from_secs(a.load(Ordering::SeqCst)));
        let documents = dcr_gateway::fetch::cimd::Documents::with_clock(Arc::new(fetcher), 100, clock);
        let origin = cfg.upstream.origins[0].clone();
        let target = dcr_gateway::registry::bridge::IdpTarget {
            upstream: cfg.upstream.clone(),
            host: origin.authority(),
            origin,
            registration_path: "/reg".into(),
            authorization: None,
            headers: vec![],
            derive: vec![],
        };
        let bridge = Arc::new(dcr_gateway::registry::bridge::Bridge::new(registry.clone()));
        InProcess { _dir: dir, idp, docs, documents, bridge, registry, target, settings: cfg.cimd.clone(), cfg, ahead }
    }

    fn client_for(&self, url: &str) -> (String, dcr_gateway::registry::bridge::BridgeOutcome) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let doc = rt.block_on(self.documents.resolve(url, &self.settings, &self.cfg.dcr)).unwrap();
        self.bridge.client_for(&doc, &self.target).unwrap()
    }
}

#[test]
fn a_changed_document_updates_the_idp_client_after_its_cache_lifetime() {
    use dcr_gateway::registry::bridge::BridgeOutcome;
    let s = InProcess::start();
    let url = format!("https://localhost:{}/c.json", s.docs.addr.port());
    let (cb1, cb2) = ("http://127.0.0.1:45200/cb", "http://127.0.0.1:45201/cb");
    s.docs.set("/c.json", Answer::json(&document(&url, cb1, "Changing Client")));

    let (id, outcome) = s.client_for(&url);
    assert_eq!(outcome, BridgeOutcome::Registered);
    assert_eq!(s.client_for(&url), (id.clone(), BridgeOutcome::Stored));

    // The document changes; within its cache lifetime (300 s minimum) nothing moves.
    s.docs.set("/c.json", Answer::json(&document(&url, cb2, "Changing Client")));
    s.ahead.store(299, Ordering::SeqCst);
    assert_eq!(s.client_for(&url), (id.clone(), BridgeOutcome::Stored));
    assert_eq!(s.docs.requests_for("/c.json"), 1, "served from the cache");

    // Past it: fetched again, a new fingerprint, the IdP client updated in place (RFC 7592).
    s.ahead.store(301, Ordering::SeqCst);
    assert_eq!(s.client_for(&url), (id.clone(), BridgeOutcome::Updated));
    assert_eq!(s.docs.requests_for("/c.json"), 2);
    let seen = idp_received(&s.idp.record);
    let puts: Vec<&Value> = seen.iter().filter(|r| r["method"] == "PUT").collect();
    assert_eq!(puts.len(), 1, "{seen:?}");
    assert_eq!(puts[0]["path"], format!("/reg/{id}"));
    let body: Value = serde_json::from_str(puts[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!((body["client_id"].as_str(), body["redirect_uris"].clone()), (Some(id.as_str()), json!([cb2])));
    assert_eq!(registrations(&s.idp.record).len(), 1);
    // The IdP has the new redirect URI (its own RFC 7592 read, with the stored token).
    let row = s.registry.store().bridge_get(&url).unwrap().unwrap();
    let token = s.registry.keys().open(&id, row.token_sealed.as_deref().unwrap()).unwrap();
    let read: Value = agent()
        .get(&format!("{}/reg/{id}", s.idp.origin()))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(read["redirect_uris"], json!([cb2]));
    assert_eq!(s.client_for(&url), (id.clone(), BridgeOutcome::Stored));

    // A stored token that no longer opens: the update cannot be made, the document is
    // registered again and the row points at the new client.
    s.docs.set("/c.json", Answer::json(&document(&url, cb1, "Changing Client")));
    s.ahead.store(700, Ordering::SeqCst);
    let db = rusqlite::Connection::open(s._dir.path().join("registry.db")).unwrap();
    db.execute("UPDATE cimd_clients SET token_sealed = 'v1.k1.AAAA' WHERE url = ?1", [&url]).unwrap();
    let (new_id, outcome) = s.client_for(&url);
    assert_eq!(outcome, BridgeOutcome::Reregistered);
    assert_ne!(new_id, id);
    assert_eq!(registrations(&s.idp.record).len(), 2);
    assert_eq!(s.registry.store().bridge_get(&url).unwrap().unwrap().client_id, new_id);
}

#[test]
fn concurrent_first_requests_for_one_document_register_once() {
    use dcr_gateway::registry::bridge::BridgeOutcome;
    let s = Arc::new(InProcess::start());
    let url = format!("https://localhost:{}/many.json", s.docs.addr.port());
    s.docs.set("/many.json", Answer::json(&document(&url, "http://127.0.0.1:45300/cb", "Busy Client")));
    // The document judged once (the cache is not what is tested), then eight callers at once.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let doc = rt.block_on(s.documents.resolve(&url, &s.settings, &s.cfg.dcr)).unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (s, doc, barrier) = (s.clone(), doc.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                s.bridge.client_for(&doc, &s.target).unwrap()
            })
        })
        .collect();
    let results: Vec<(String, BridgeOutcome)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.iter().all(|(id, _)| *id == results[0].0), "{results:?}");
    assert_eq!(results.iter().filter(|(_, o)| *o == BridgeOutcome::Registered).count(), 1, "{results:?}");
    assert_eq!(registrations(&s.idp.record).len(), 1);
}

/// The bridge's rows on both registry backends (one SQL text): the first insert for a URL wins,
/// a replacement only applies over the client it replaces.
fn bridge_rows(a: &dcr_gateway::registry::Store, b: &dcr_gateway::registry::Store) {
    use dcr_gateway::registry::store::BridgeRow;
    a.migrate().unwrap();
    b.migrate().unwrap();
    let row = |id: &str, fp: &str| BridgeRow {
        url: "https://app.example/c.json".into(),
        client_id: id.into(),
        fingerprint: fp.into(),
        idp_client_uri: Some(format!("http://idp/reg/{id}")),
        token_sealed: Some("v1.k1.sealed".into()),
        created_at: 100,
        updated_at: 100,
    };
    assert!(a.bridge_get("https://app.example/c.json").unwrap().is_none());
    assert!(a.bridge_insert(&row("c1", "f1")).unwrap());
    assert!(!b.bridge_insert(&row("c2", "f1")).unwrap(), "a second replica's insert loses");
    assert_eq!(b.bridge_get("https://app.example/c.json").unwrap().unwrap().client_id, "c1");
    let mut updated = row("c1", "f2");
    updated.updated_at = 200;
    assert!(b.bridge_update(&updated, "c1").unwrap());
    let got = a.bridge_get("https://app.example/c.json").unwrap().unwrap();
    assert_eq!(
        (got.client_id.as_str(), got.fingerprint.as_str(), got.created_at, got.updated_at),
        ("c1", "f2", 100, 200)
    );
    // Replacing a client another replica already replaced: no change.
    assert!(!a.bridge_update(&row("c3", "f3"), "c0").unwrap());
    assert!(a.bridge_update(&row("c3", "f3"), "c1").unwrap());
    assert_eq!(b.bridge_get("https://app.example/c.json").unwrap().unwrap().client_id, "c3");
}

#[test]
fn bridge_rows_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let s = dcr_gateway::registry::sqlite::Sqlite::open(&dir.path().join("r.db")).unwrap();
        dcr_gateway::registry::Store::new(Arc::new(s))
    };
    bridge_rows(&open(), &open());
}

#[test]
fn bridge_rows_on_postgres() {
    let pg = support::postgres::Postgres::start();
    let url = pg.database("cimd_bridge");
    let open = || {
        let s = dcr_gateway::registry::postgres::Postgres::connect(&url, None).unwrap();
        dcr_gateway::registry::Store::new(Arc::new(s))
    };
    bridge_rows(&open(), &open());
}

/// What the IdP receives, byte for byte (the recording upstream): the URL client_id replaced by
/// the IdP's in the query and in form bodies, every other byte kept, the length set again; the
/// gateway's own registration carries the IdP's initial access token; an IdP that cannot be
/// reached is a 503 OAuth error.
#[test]
fn the_forwarded_requests_carry_the_idps_client_id_and_nothing_else_changes() {
    let (cert, key) = support::certs::self_signed("localhost");
    let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let url = format!("https://localhost:{}/c.json", docs.addr.port());
    let cb = "http://127.0.0.1:45400/cb";
    docs.set("/c.json", Answer::json(&document(&url, cb, "Recorded Client")));
    let up = support::upstream::Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .file("ca.pem", cert.clone())
        .file("iat", b"IAT-for-the-idp\n".to_vec())
        .file("registry.keys", format!("k1:{}\n", registry_key()).into_bytes())
        .upstream_keys("registration_token_file = \"iat\"")
        .extra("[routes]\nregistration_path = \"/oidc/register\"\nupstream_registration_path = \"/reg\"")
        .extra("[registry]\nenabled = true\npath = \"registry.db\"\nkey_file = \"registry.keys\"")
        .extra("[cimd]\nmode = \"bridge\"\nca_file = \"ca.pem\"\nallow_cidrs = [\"127.0.0.1/32\", \"::1/128\"]\n")
        .start();
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let (u, c) = (enc(&url), enc(cb));

    // The authorization request: the query's client_id only.
    let q = |id: &str| {
        format!("response_type=code&client_id={id}&redirect_uri={c}&state=s%201&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256")
    };
    let (status, text) = response_parts(agent().get(&gw.url(&format!("/authorize?{}", q(&u)))).call());
    assert_eq!(status, 200, "{text}\n{}", gw.stderr_text());
    let seen = up.recorded();
    assert_eq!(
        seen.len(),
        2,
        "the registration, then the request: {:?}",
        seen.iter().map(|r| &r.url).collect::<Vec<_>>()
    );
    let reg = &seen[0];
    assert_eq!((reg.method.as_str(), reg.url.as_str()), ("POST", "/reg"));
    assert_eq!(reg.header("authorization").as_deref(), Some("Bearer IAT-for-the-idp"));
    let sent = reg.json();
    assert!(sent.get("client_id").is_none() && sent["redirect_uris"] == json!([cb]), "{sent}");
    assert_eq!(seen[1].url, format!("/authorize?{}", q("client-1")));

    // Token, revocation, introspection, PAR: the form's client_id only; Content-Length is the new
    // body's; Content-Type as sent.
    for (path, form) in [
        ("/token", format!("grant_type=authorization_code&code=a%2Bb&redirect_uri={c}&client_id={u}&code_verifier=v")),
        ("/revoke", format!("token=t1&token_type_hint=access_token&client_id={u}")),
        ("/introspect", format!("client_id={u}&token=t2")),
        ("/par", q(&u)),
    ] {
        let r = agent()
            .post(&gw.url(path))
            .set("content-type", "application/x-www-form-urlencoded;charset=UTF-8")
            .send_string(&form);
        let (status, text) = response_parts(r);
        assert_eq!(status, 200, "{path}: {text}");
        let last = up.last();
        let want = form.replace(&u, "client-1");
        assert_eq!((last.url.as_str(), String::from_utf8_lossy(&last.body)), (path, want.clone().into()));
        assert_eq!(last.header("content-length"), Some(want.len().to_string()), "{path}");
        assert_eq!(last.header("content-type").as_deref(), Some("application/x-www-form-urlencoded;charset=UTF-8"));
    }
    // A client_id that is not a URL, or none: untouched.
    let r = agent()
        .post(&gw.url("/token"))
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string("grant_type=client_credentials&client_id=plain");
    assert_eq!(response_parts(r).0, 200);
    assert_eq!(up.last().body, b"grant_type=client_credentials&client_id=plain");
    let regs = up.recorded().iter().filter(|r| r.url == "/reg").count();
    assert_eq!(regs, 1, "one registration for all of them");
    // The client_id twice (query and body): ambiguous, refused, not forwarded.
    let before = up.count();
    let r = agent()
        .post(&gw.url(&format!("/token?client_id={u}")))
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string(&format!("grant_type=x&client_id={u}"));
    assert_eq!(response_parts(r).0, 400);
    assert_eq!(up.count(), before);
}

#[test]
fn an_idp_that_cannot_be_reached_is_a_503_oauth_error() {
    let (cert, key) = support::certs::self_signed("localhost");
    let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let url = format!("https://localhost:{}/c.json", docs.addr.port());
    let cb = "http://127.0.0.1:45401/cb";
    docs.set("/c.json", Answer::json(&document(&url, cb, "Lonely Client")));
    // An origin nothing listens on.
    let gw = bridge_gateway(&format!("http://127.0.0.1:{}", free_port()), &cert).start();
    let form = format!(
        "grant_type=authorization_code&code=x&client_id={}",
        url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    );
    let r = agent().post(&gw.url("/token")).set("content-type", "application/x-www-form-urlencoded").send_string(&form);
    let (status, text) = response_parts(r);
    assert_eq!(status, 503, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "temporarily_unavailable", "{text}");
    assert!(v["error_description"].as_str().unwrap().contains("could not be reached"), "{text}");
    // Where the gateway reaches the IdP is not the client's business (the log has it).
    let desc = v["error_description"].as_str().unwrap();
    assert!(!desc.contains("127.0.0.1") && !desc.contains("connect"), "{text}");
    // The gateway is still serving.
    assert!(gw.stderr_text().contains("cimd bridge: no IdP client for the document"));
    let r = agent().post(&gw.url("/token")).set("content-type", "application/x-www-form-urlencoded").send_string(&form);
    assert_eq!(response_parts(r).0, 503);
}

#[test]
fn concurrent_first_requests_through_the_gateway_register_once() {
    let (cert, key) = support::certs::self_signed("localhost");
    let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let url = format!("https://localhost:{}/busy.json", docs.addr.port());
    let cb = "http://127.0.0.1:45402/cb";
    docs.set("/busy.json", Answer::json(&document(&url, cb, "Busy Client")));
    let up = support::upstream::Upstream::start();
    let gw = GatewayBuilder::new(&up.origin())
        .threads(4)
        .file("ca.pem", cert.clone())
        .file("registry.keys", format!("k1:{}\n", registry_key()).into_bytes())
        .extra("[routes]\nupstream_registration_path = \"/reg\"")
        .extra("[registry]\nenabled = true\npath = \"registry.db\"\nkey_file = \"registry.keys\"")
        .extra(
            "[cimd]\nmode = \"bridge\"\nca_file = \"ca.pem\"\nallow_cidrs = [\"127.0.0.1/32\", \"::1/128\"]\n\
             per_host_concurrency = 16\n",
        )
        .start();
    let path = format!(
        "/authorize?response_type=code&client_id={}&redirect_uri={}&state=s",
        url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(cb.as_bytes()).collect::<String>()
    );
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (target, barrier) = (gw.url(&path), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                response_parts(agent().get(&target).call()).0
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}\n{}", gw.stderr_text());
    let seen = up.recorded();
    assert_eq!(seen.iter().filter(|r| r.url == "/reg").count(), 1, "one IdP client for eight first requests");
    let authorize: Vec<&String> = seen.iter().filter(|r| r.url.starts_with("/authorize")).map(|r| &r.url).collect();
    assert_eq!(authorize.len(), 8);
    assert!(authorize.iter().all(|u| u.contains("client_id=client-1&")), "{authorize:?}");
}

/// Every registration the bridge sends the IdP is one the gateway's `[rate_limit]` counts for
/// the requesting address, as a registration through the registration endpoint is: a flood of
/// distinct document URLs (one host serves any number of them) cannot create IdP clients
/// without bound. Requests mapped to a stored client are not counted.
#[test]
fn bridge_registrations_are_counted_by_the_rate_limiter() {
    let (cert, key) = support::certs::self_signed("localhost");
    let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let cb = "http://127.0.0.1:45403/cb";
    let url = |n: u32| format!("https://localhost:{}/flood/{n}.json", docs.addr.port());
    for n in 0..3 {
        docs.set(&format!("/flood/{n}.json"), Answer::json(&document(&url(n), cb, &format!("Flood {n}"))));
    }
    let up = support::upstream::Upstream::start();
    let gw = bridge_gateway(&up.origin(), &cert)
        .extra("[rate_limit]\nper_ip = { requests = 2, window_seconds = 3600 }\n")
        .start();
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let authorize = |n: u32| {
        let target = gw.url(&format!(
            "/authorize?response_type=code&client_id={}&redirect_uri={}&state=s",
            enc(&url(n)),
            enc(cb)
        ));
        response_parts(agent().get(&target).call())
    };
    let regs = || up.recorded().iter().filter(|r| r.url == "/reg").count();
    assert_eq!(authorize(0).0, 200, "{}", gw.stderr_text());
    for _ in 0..3 {
        assert_eq!(authorize(0).0, 200, "a stored client costs nothing");
    }
    assert_eq!(authorize(1).0, 200);
    assert_eq!(regs(), 2);
    let (status, text) = authorize(2);
    assert_eq!(status, 429, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "rate_limit_exceeded", "{text}");
    // The token endpoint is no way around it.
    let form = format!("grant_type=authorization_code&code=x&client_id={}", enc(&url(2)));
    let r = agent().post(&gw.url("/token")).set("content-type", "application/x-www-form-urlencoded").send_string(&form);
    assert_eq!(response_parts(r).0, 429);
    assert_eq!(regs(), 2, "no registration past the limit");
    assert!(
        !up.recorded().iter().any(|r| r.url.contains(&enc(&url(2))) || r.url.starts_with("/token")),
        "nothing for the third document reached the IdP"
    );
    // Clients already registered keep working.
    assert_eq!(authorize(1).0, 200);
}

/// A document proven to be a catalogued hosted client's (claude.ai's callbacks) is counted per
/// client and network (`per_hosted_client`), not per address, as its registrations through the
/// registration endpoint are; the IdP clients the bridge makes for it carry its `known_client`.
#[test]
fn hosted_client_documents_get_the_hosted_bucket_and_the_known_client_label() {
    let (cert, key) = support::certs::self_signed("localhost");
    let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let cb = "https://claude.ai/api/mcp/auth_callback";
    let url = |n: u32| format!("https://localhost:{}/hosted/{n}.json", docs.addr.port());
    for n in 0..3 {
        docs.set(&format!("/hosted/{n}.json"), Answer::json(&document(&url(n), cb, "Claude")));
    }
    let up = support::upstream::Upstream::start();
    let gw = bridge_gateway(&up.origin(), &cert)
        .extra(
            "[rate_limit]\nper_ip = { requests = 1, window_seconds = 3600 }\n\
             per_hosted_client = { requests = 10, window_seconds = 3600 }\n",
        )
        .start();
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    for n in 0..3 {
        let target = gw.url(&format!(
            "/authorize?response_type=code&client_id={}&redirect_uri={}&state=s",
            enc(&url(n)),
            enc(cb)
        ));
        let (status, text) = response_parts(agent().get(&target).call());
        assert_eq!(status, 200, "document {n}, past per_ip = 1: {text} {}", gw.stderr_text());
    }
    assert_eq!(up.recorded().iter().filter(|r| r.url == "/reg").count(), 3);
    assert_eq!(
        gw.wait_metric("dcr_gateway_known_client_registrations_total{known_client=\"claude\",result=\"bridged\"}", 3.0),
        3.0
    );
}

/// `[dcr] resolve_metadata_uris` applies to what the bridge registers as to what a client
/// registers itself: a document whose URIs the IdP would fetch from a special-use address is
/// never registered at the IdP (permissive mode, so that strict mode's literal screening does
/// not answer first: the refusal here is the resolution's).
#[test]
fn bridge_registrations_get_the_metadata_uri_resolution() {
    let (cert, key) = support::certs::self_signed("localhost");
    let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let cb = "http://127.0.0.1:45404/cb";
    let url = |name: &str| format!("https://localhost:{}/{name}.json", docs.addr.port());
    let mut ssrf: Value = serde_json::from_str(&document(&url("ssrf"), cb, "Metadata Fetcher")).unwrap();
    ssrf["jwks_uri"] = json!("https://169.254.169.254/latest/meta-data/");
    docs.set("/ssrf.json", Answer::json(&ssrf.to_string()));
    docs.set("/fine.json", Answer::json(&document(&url("fine"), cb, "Fine")));
    let up = support::upstream::Upstream::start();
    let gw =
        bridge_gateway(&up.origin(), &cert).dcr("security_mode = \"permissive\"\nresolve_metadata_uris = true").start();
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let authorize = |u: &str| {
        let target = gw.url(&format!("/authorize?response_type=code&client_id={}&redirect_uri={}", enc(u), enc(cb)));
        response_parts(agent().get(&target).call())
    };
    let (status, text) = authorize(&url("ssrf"));
    assert_eq!(status, 400, "{text}\n{}", gw.stderr_text());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "invalid_client", "{text}");
    assert!(v["error_description"].as_str().unwrap().contains("169.254.169.254, a special-use address"), "{text}");
    assert_eq!(up.count(), 0, "neither registered nor forwarded");
    assert_eq!(authorize(&url("fine")).0, 200);
    assert_eq!(up.recorded().iter().filter(|r| r.url == "/reg").count(), 1);
}

/// What closes the registration endpoint closes the bridge's registrations too: a `dcr`-scope
/// ACL rule blocking the client's address, `[dcr] enabled = false`, closed (token) registration.
/// No IdP client is created; a document already registered keeps working under the rule.
#[test]
fn bridge_registrations_obey_the_dcr_acl_and_closed_registration() {
    let (cert, key) = support::certs::self_signed("localhost");
    let docs = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    let cb = "http://127.0.0.1:45405/cb";
    let url = |n: u32| format!("https://localhost:{}/closed/{n}.json", docs.addr.port());
    for n in 0..2 {
        docs.set(&format!("/closed/{n}.json"), Answer::json(&document(&url(n), cb, &format!("Closed {n}"))));
    }
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let up = support::upstream::Upstream::start();
    let start = |dcr: &str, rules: Option<&str>| {
        let mut b = bridge_gateway(&up.origin(), &cert).file("tokens.toml", Vec::new());
        if !dcr.is_empty() {
            b = b.dcr(dcr);
        }
        if let Some(r) = rules {
            b = b.rules(r);
        }
        b.start()
    };
    let authorize = |gw: &Gateway, n: u32| {
        let target = gw.url(&format!(
            "/authorize?response_type=code&client_id={}&redirect_uri={}&state=s",
            enc(&url(n)),
            enc(cb)
        ));
        response_parts(agent().get(&target).call())
    };
    let regs = || up.recorded().iter().filter(|r| r.url == "/reg").count();

    // A dcr-scope rule blocking the loopback client: no registration, 403 access_denied.
    let block = r#"[{"description":"no registrations from here","active":true,"priority":1,
        "rule":{"action":{"block":true},"scope":"dcr","match":{"ipv4_cidrs":["127.0.0.0/8"]}}}]"#;
    let gw = start("", Some(block));
    let (status, text) = authorize(&gw, 0);
    assert_eq!(status, 403, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"], "access_denied", "{text}");
    assert_eq!(regs(), 0, "a blocked client registered nothing");
    assert!(up.recorded().is_empty(), "nothing reached the IdP");
    drop(gw);

    // Registration disabled, then closed to token holders: refused the same way.
    for closed in ["enabled = false", "registration = \"token\"\ntoken_file = \"tokens.toml\""] {
        let gw = start(closed, None);
        let (status, text) = authorize(&gw, 1);
        assert_eq!(status, 403, "{closed}: {text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"], "access_denied", "{text}");
        assert_eq!(regs(), 0, "{closed}: nothing registered");
    }

    // Open again: the document registers (the rule and the closed modes were what refused it).
    let gw = start("", None);
    assert_eq!(authorize(&gw, 0).0, 200, "{}", gw.stderr_text());
    assert_eq!(regs(), 1);
}
