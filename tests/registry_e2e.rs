//! The client registry end to end, against the demo IdP (node-oidc-provider, a real OpenID
//! Provider) behind the gateway, on the embedded SQLite store: register → the registry has it
//! → `/auth` with its client_id moves its last-used time → judged later (`clients reap --at`,
//! the injected clock) it is idle → the reaper deletes it through RFC 7592 → the IdP's own
//! RFC 7592 GET for it fails. An identical public registration from the same prefix gets the
//! same client_id and the IdP sees one registration; a software cap refuses the N+1th. The
//! stored token is unreadable without the key; no token reaches logs, metrics or the admin API.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use support::*;

struct Stack {
    _idp: support::demo_idp::DemoIdp,
    idp_port: u16,
    gw: Gateway,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

const ADMIN_SECRET: &str = "dcrgw_adm_registrytest0123456789abcdef0123456789";

fn start(registry_keys: &str) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let gw_port = free_port();
    let idp = support::demo_idp::DemoIdp::start(dir.path(), gw_port);
    let (idp_port, record) = (idp.port, idp.record.clone());
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let tokens = format!(
        "[[token]]\nlabel = \"ops\"\nsha256 = \"{}\"\nscopes = [\"read:clients\", \"delete:clients\"]\n",
        hex::encode(Sha256::digest(ADMIN_SECRET.as_bytes()))
    );
    let gw = GatewayBuilder::new(&format!("http://127.0.0.1:{idp_port}"))
        .read_timeout_ms(20_000)
        .http_port(gw_port)
        .file("registry.keys", format!("# test key\nk1:{key}\n").into_bytes())
        .file("admin-tokens.toml", tokens.into_bytes())
        .extra("[routes]\nregistration_path = \"/oidc/register\"\nupstream_registration_path = \"/reg\"")
        .extra("[admin]\ntokens_file = \"admin-tokens.toml\"")
        .extra(&format!(
            "[registry]\nenabled = true\npath = \"registry.db\"\nkey_file = \"registry.keys\"\nflush_interval_ms = 50\n\
             unused_grace = \"1h\"\nidle_after = \"1d\"\ndedupe_window = \"1h\"\n{registry_keys}"
        ))
        .start();
    Stack { _idp: idp, idp_port, gw, record, _dir: dir }
}

impl Stack {
    fn register(&self, body: &str) -> (u16, serde_json::Value, bool) {
        let r = agent().post(&self.gw.url("/oidc/register")).set("content-type", "application/json").send_string(body);
        let dedup = matches!(&r, Ok(resp) if resp.header("x-dcr-gateway-deduplicated") == Some("true"));
        let (status, text) = response_parts(r);
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} {text}")), dedup)
    }

    /// Registrations the IdP received (POSTs to its registration route).
    fn idp_registrations(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["method"] == "POST")
            .collect()
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN).args(args).arg("-c").arg(self.gw.config_path()).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn show(&self, id: &str) -> Option<serde_json::Value> {
        let (code, out, _) = self.cli(&["clients", "show", id]);
        (code == 0).then(|| serde_json::from_str(&out).unwrap_or_else(|e| panic!("clients show {id}: {e}: {out:?}")))
    }

    /// The IdP's own RFC 7592 read of a client, with its registration_access_token.
    fn idp_read(&self, id: &str, token: &str) -> u16 {
        response_parts(
            agent()
                .get(&format!("http://127.0.0.1:{}/reg/{id}", self.idp_port))
                .set("authorization", &format!("Bearer {token}"))
                .call(),
        )
        .0
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn registered_used_idle_reaped_at_the_real_idp() {
    let s = start("");
    // Every series a dashboard reads is there at zero before the first event.
    let first = s.gw.metrics();
    for series in [
        "dcr_gateway_registry_cap_refusals_total{cap=\"total\"} 0",
        "dcr_gateway_registry_records_lost_total{reason=\"queue_full\"} 0",
        "dcr_gateway_registry_store_errors_total{op=\"record\"} 0",
        "dcr_gateway_registry_reaped_total{mode=\"delete\",reason=\"idle\",result=\"deleted\"} 0",
    ] {
        assert!(first.contains(series), "{series} missing from the first scrape");
    }
    let body = r#"{"client_name":"Registry E2E","redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"none"}"#;
    let (status, answer, dedup) = s.register(body);
    assert_eq!(status, 201, "{answer}");
    assert!(!dedup);
    let id = answer["client_id"].as_str().unwrap().to_string();
    let token = answer["registration_access_token"].as_str().expect("the demo IdP issues one").to_string();
    assert_eq!(s.idp_read(&id, &token), 200, "the IdP knows the client");

    // The registry has it, with what the gateway knew.
    assert!(wait_until(Duration::from_secs(10), || s.show(&id).is_some()), "{}", s.gw.stderr_text());
    let row = s.show(&id).unwrap();
    assert_eq!(row["client_name"], "Registry E2E");
    assert_eq!(row["prefix"], "127.0.0.0/24");
    assert_eq!(row["public"], true);
    assert_eq!(row["redirect_hosts"], serde_json::json!(["app.example"]));
    assert_eq!(row["has_registration_access_token"], true);
    assert_eq!(row["last_used_at"], serde_json::Value::Null);
    assert_eq!(row["state"], "active");

    // The raw row: ciphertext only; the key file's key opens it, another key does not.
    let conn = rusqlite::Connection::open(s.gw.path("registry.db")).unwrap();
    let raw: String =
        conn.query_row("SELECT token_sealed FROM clients WHERE client_id = ?1", [&id], |r| r.get(0)).unwrap();
    assert!(!raw.contains(&token));
    let ring = dcr_gateway::registry::crypto::KeyRing::load(&s.gw.path("registry.keys")).unwrap();
    assert_eq!(ring.open(&id, &raw).unwrap(), token);
    let other = dcr_gateway::registry::crypto::KeyRing::parse(&format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([3u8; 32])
    ))
    .unwrap();
    assert!(other.open(&id, &raw).is_err());
    let whole_row: String = conn
        .query_row(
            "SELECT COALESCE(answer, '') || registration_client_uri FROM clients WHERE client_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!whole_row.contains(&token), "the stored answer has no token");

    // /auth with its client_id moves its last-used time.
    let before = now();
    let (st, _) = http_get(&s.gw.url(&format!(
        "/auth?client_id={id}&response_type=code&scope=openid&redirect_uri=https%3A%2F%2Fapp.example%2Fcb"
    )));
    assert!(st < 500, "{st}");
    assert!(
        wait_until(Duration::from_secs(10), || s.show(&id).is_some_and(|r| !r["last_used_at"].is_null())),
        "last use not recorded: {}",
        s.gw.stderr_text()
    );
    let used = dcr_gateway::registry::parse_time(s.show(&id).unwrap()["last_used_at"].as_str().unwrap()).unwrap();
    assert!(used >= before - 1 && used <= now() + 1);

    // The token endpoint: the form body's client_id (read from a bounded copy) and HTTP Basic.
    let (st, form_client, _) = s.register(
        r#"{"client_name":"Form Client","redirect_uris":["https://form.example/cb"],"token_endpoint_auth_method":"none"}"#,
    );
    assert_eq!(st, 201, "{form_client}");
    let form_id = form_client["client_id"].as_str().unwrap().to_string();
    let (st, basic_client, _) = s.register(
        r#"{"client_name":"Basic Client","redirect_uris":["https://basic.example/cb"],"token_endpoint_auth_method":"client_secret_post"}"#,
    );
    assert_eq!(st, 201, "{basic_client}");
    let basic_id = basic_client["client_id"].as_str().unwrap().to_string();
    let secret = basic_client["client_secret"].as_str().unwrap_or("x").to_string();
    assert!(
        wait_until(Duration::from_secs(10), || s.show(&form_id).is_some() && s.show(&basic_id).is_some()),
        "form: {:?}\nbasic: {:?}\n{}",
        s.cli(&["clients", "show", &form_id]),
        s.cli(&["clients", "show", &basic_id]),
        s.gw.stderr_text()
    );
    let (st, _) = response_parts(
        agent()
            .post(&s.gw.url("/token"))
            .set("content-type", "application/x-www-form-urlencoded")
            .send_string(&format!("grant_type=authorization_code&code=nope&client_id={form_id}")),
    );
    assert!(st < 500, "{st}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{basic_id}:{secret}"));
    let (st, _) = response_parts(
        agent()
            .post(&s.gw.url("/token"))
            .set("content-type", "application/x-www-form-urlencoded")
            .set("authorization", &format!("Basic {basic}"))
            .send_string("grant_type=client_credentials"),
    );
    assert!(st < 500, "{st}");
    for id in [&form_id, &basic_id] {
        assert!(
            wait_until(Duration::from_secs(10), || s.show(id).is_some_and(|r| !r["last_used_at"].is_null())),
            "token endpoint use of {id} not recorded"
        );
    }
    assert!(!s.gw.stderr_text().contains(&secret) && !s.gw.stdout_text().contains(&secret));

    // Nothing to reap now.
    let (code, out, err) = s.cli(&["clients", "reap", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(&id), "{out}");
    // Two days later (the injected clock): idle → reported by a dry run, then deleted.
    let later = (now() + 2 * 86_400).to_string();
    let (code, out, err) = s.cli(&["clients", "reap", "--dry-run", "--at", &later]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.contains(&id) && l.contains("\"idle\"") && l.contains("\"report\"")), "{out}");
    assert_eq!(s.idp_read(&id, &token), 200, "a dry run deletes nothing");
    let (code, out, err) = s.cli(&["clients", "reap", "--at", &later]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.lines().any(|l| l.contains(&id) && l.contains("\"deleted\"")), "{out}");
    assert!(!out.contains(&token) && !err.contains(&token));
    // The IdP no longer has it; the registry marks it.
    assert_ne!(s.idp_read(&id, &token), 200, "RFC 7592 GET of a reaped client must fail");
    let row = s.show(&id).unwrap();
    assert_eq!(row["state"], "deleted");
    assert_eq!(row["deleted_reason"], "reaped:idle");
    assert_eq!(row["has_registration_access_token"], false);

    // No token in the gateway's logs or metrics.
    let logs = format!("{}{}", s.gw.stdout_text(), s.gw.stderr_text());
    assert!(!logs.contains(&token));
    assert!(!s.gw.metrics().contains(&token));
}

#[test]
fn identical_public_registrations_are_deduplicated_and_caps_refuse_the_next() {
    let s = start("max_per_software = 2\n");
    let body = r#"{"client_name":"Dedupe App","redirect_uris":["https://dedupe.example/cb"],"token_endpoint_auth_method":"none"}"#;
    let (st1, first, d1) = s.register(body);
    assert_eq!(st1, 201, "{first}");
    assert!(!d1);
    let token = first["registration_access_token"].as_str().unwrap().to_string();
    // Same document, members in another order, same prefix: the same client, no token, and
    // the IdP is not called.
    let reordered = r#"{"token_endpoint_auth_method":"none","redirect_uris":["https://dedupe.example/cb"],"client_name":"Dedupe App"}"#;
    let (st2, second, d2) = s.register(reordered);
    assert_eq!(st2, 201, "{second}");
    assert!(d2, "answered by the registry");
    assert_eq!(second["client_id"], first["client_id"]);
    assert!(second.get("registration_access_token").is_none(), "{second}");
    let dedupe_posts =
        s.idp_registrations().iter().filter(|r| r["body"].as_str().unwrap_or("").contains("Dedupe App")).count();
    assert_eq!(dedupe_posts, 1, "the IdP saw one registration");

    // A software cap of 2 (the client name, folded): the dedupe client is one, one more fits,
    // the next is refused before the IdP sees it.
    let conf = |host: &str| {
        format!(
            r#"{{"client_name":"DEDUPE  app","redirect_uris":["https://{host}/cb"],"token_endpoint_auth_method":"client_secret_post"}}"#
        )
    };
    let (st, ok, _) = s.register(&conf("one.example"));
    assert_eq!(st, 201, "{ok}");
    let secret = ok["client_secret"].as_str().unwrap_or_default().to_string();
    let before = s.idp_registrations().len();
    let (st, refused, _) = s.register(&conf("two.example"));
    assert_eq!(st, 403, "{refused}");
    assert_eq!(refused["error"], "client_limit_reached");
    assert_eq!(s.idp_registrations().len(), before, "a capped registration never reaches the IdP");

    // Metrics count them; the admin API lists the clients without any token or secret.
    assert!(s.gw.wait_metric("dcr_gateway_registry_dedupes_total", 1.0) >= 1.0);
    assert_eq!(s.gw.metric("dcr_gateway_registry_cap_refusals_total{cap=\"software\"}"), 1.0);
    // Records are written off the response path (within the worker's linger): the listing
    // shows both once written.
    let list = || {
        let listed = agent()
            .get(&s.gw.admin_url("/api/v2/clients?include_totals=true&software=name%3Adedupe%20app"))
            .set("authorization", &format!("Bearer {ADMIN_SECRET}"))
            .call();
        let (st, text) = response_parts(listed);
        assert_eq!(st, 200, "{text}");
        text
    };
    assert!(
        wait_until(std::time::Duration::from_secs(10), || serde_json::from_str::<serde_json::Value>(&list())
            .is_ok_and(|v| v["total"] == 2 && v["clients"].as_array().is_some_and(|c| c.len() == 2))),
        "{}",
        list()
    );
    let text = list();
    assert!(!text.contains(&token) && (secret.is_empty() || !text.contains(&secret)));
    let one = first["client_id"].as_str().unwrap();
    let (st, text) = response_parts(
        agent()
            .get(&s.gw.admin_url(&format!("/api/v2/clients/{one}")))
            .set("authorization", &format!("Bearer {ADMIN_SECRET}"))
            .call(),
    );
    assert_eq!(st, 200, "{text}");
    assert!(!text.contains(&token));
    // DELETE through the admin API: at the IdP, then marked.
    let (st, text) = response_parts(
        agent()
            .delete(&s.gw.admin_url(&format!("/api/v2/clients/{one}")))
            .set("authorization", &format!("Bearer {ADMIN_SECRET}"))
            .call(),
    );
    assert_eq!(st, 204, "{text}");
    assert_ne!(s.idp_read(one, &token), 200);
    // A deleted client is no longer a duplicate: the next identical registration reaches the IdP.
    let (st, third, d3) = s.register(body);
    assert_eq!(st, 201, "{third}");
    assert!(!d3);
    assert_ne!(third["client_id"], first["client_id"]);
    let logs = format!("{}{}", s.gw.stdout_text(), s.gw.stderr_text());
    assert!(!logs.contains(&token));

    // The registrant's own RFC 7592 DELETE through the gateway: the client is marked deleted
    // and is never handed out again as a duplicate (review finding: a dead client_id was).
    let own = r#"{"client_name":"Own Delete","redirect_uris":["https://own.example/cb"],"token_endpoint_auth_method":"none"}"#;
    let (st, mine, _) = s.register(own);
    assert_eq!(st, 201, "{mine}");
    let id = mine["client_id"].as_str().unwrap().to_string();
    let rat = mine["registration_access_token"].as_str().unwrap().to_string();
    let (st, text) = response_parts(
        agent()
            .delete(&s.gw.url(&format!("/oidc/register/{id}")))
            .set("authorization", &format!("Bearer {rat}"))
            .call(),
    );
    assert_eq!(st, 204, "{text}");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || s.show(&id).is_some_and(|c| !c["deleted_at"].is_null())),
        "marked deleted: {:?}",
        s.show(&id)
    );
    let (st, again, d) = s.register(own);
    assert_eq!(st, 201, "{again}");
    assert!(!d, "a deleted client is not a duplicate");
    assert_ne!(again["client_id"], mine["client_id"]);

    // An RFC 7592 update changes the client: its old fingerprint no longer answers.
    let upd = r#"{"client_name":"Own Update","redirect_uris":["https://upd.example/cb"],"token_endpoint_auth_method":"none"}"#;
    let (st, c, _) = s.register(upd);
    assert_eq!(st, 201, "{c}");
    let id = c["client_id"].as_str().unwrap().to_string();
    let rat = c["registration_access_token"].as_str().unwrap().to_string();
    let put = serde_json::json!({"client_id": id, "client_name": "Own Update", "redirect_uris": ["https://upd.example/other"], "token_endpoint_auth_method": "none"});
    let (st, text) = response_parts(
        agent()
            .put(&s.gw.url(&format!("/oidc/register/{id}")))
            .set("authorization", &format!("Bearer {rat}"))
            .send_json(put),
    );
    assert_eq!(st, 200, "{text}");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || s.show(&id).is_some_and(|c| c["fingerprint"] == "")),
        "fingerprint forgotten: {:?}",
        s.show(&id)
    );
    let (st, fresh, d) = s.register(upd);
    assert_eq!(st, 201, "{fresh}");
    assert!(!d, "an updated client is not a duplicate of its first registration");
    assert_ne!(fresh["client_id"], c["client_id"]);
}

/// node-oidc-provider's client ids are random base64url: one in 32 starts with `-`. `clients
/// show -hX…` printed the help with status 0 and `-fX…` was an unknown option.
#[test]
fn clients_show_takes_an_id_that_starts_with_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    std::fs::write(dir.path().join("registry.keys"), format!("k1:{key}\n")).unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[upstream]\norigins = [\"http://127.0.0.1:9\"]\n\
         [registry]\nenabled = true\npath = \"registry.db\"\nkey_file = \"registry.keys\"\n",
    )
    .unwrap();
    for id in ["-hX9fQ", "-fKq2", "--Kq2x"] {
        let out = Command::new(BIN).args(["clients", "show", id, "-c"]).arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{id}: {stderr}");
        assert!(out.stdout.is_empty(), "{id}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.contains(&format!("no registered client {id:?}")), "{id}: {stderr}");
    }
}
