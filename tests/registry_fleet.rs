//! Two gateways on one real PostgreSQL registry, in front of one demo IdP (node-oidc-provider):
//! an initial access token's `max_uses` and the registry's total cap hold across both
//! replicas (each counting alone would let twice as many through), and two reapers started
//! together delete each idle client once — the store's lease lets one pass run at a time.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use support::*;

fn mint(dir: &std::path::Path, label: &str, max_uses: Option<u64>) -> String {
    let mut c = Command::new(BIN);
    c.args(["token", "new", "--file"]).arg(dir.join("tokens.toml")).args(["--label", label]);
    if let Some(m) = max_uses {
        c.args(["--max-uses", &m.to_string()]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn register(gw: &Gateway, token: &str, n: usize) -> (u16, String) {
    let body = format!(
        r#"{{"client_name":"Fleet {n}","redirect_uris":["https://fleet{n}.example/cb"],"token_endpoint_auth_method":"none"}}"#
    );
    response_parts(
        agent()
            .post(&gw.url("/oidc/register"))
            .set("content-type", "application/json")
            .set("authorization", &format!("Bearer {token}"))
            .send_string(&body),
    )
}

#[test]
fn two_gateways_on_one_postgres_share_max_uses_caps_and_reaping() {
    let pg = support::postgres::Postgres::start();
    let url = pg.database("registry_fleet_e2e");
    let dir = tempfile::tempdir().unwrap();
    let limited = mint(dir.path(), "limited", Some(3));
    let open = mint(dir.path(), "open", None);
    let tokens = std::fs::read(dir.path().join("tokens.toml")).unwrap();
    let key = format!("k1:{}\n", base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()));

    let gw_port = free_port();
    let idp = support::demo_idp::DemoIdp::start(dir.path(), gw_port);
    let idp_port = idp.port;
    let gateway = |port: Option<u16>| {
        let mut b = GatewayBuilder::new(&format!("http://127.0.0.1:{idp_port}"))
            .read_timeout_ms(20_000)
            .file("tokens.toml", tokens.clone())
            .file("registry.keys", key.clone().into_bytes())
            .dcr("registration = \"token\"\ntoken_file = \"tokens.toml\"")
            .extra("[routes]\nregistration_path = \"/oidc/register\"\nupstream_registration_path = \"/reg\"")
            .extra(&format!(
                "[registry]\nenabled = true\nbackend = \"postgres\"\nurl = \"{url}\"\nkey_file = \"registry.keys\"\n\
                 max_clients = 4\nflush_interval_ms = 50\nunused_grace = \"1h\"\n"
            ));
        if let Some(p) = port {
            b = b.http_port(p);
        }
        b.start()
    };
    let g1 = gateway(Some(gw_port));
    let g2 = gateway(None);

    // max_uses = 3, alternating replicas: three registrations, the fourth refused.
    let mut ids = Vec::new();
    for (i, gw) in [&g1, &g2, &g1].into_iter().enumerate() {
        let (st, text) = register(gw, &limited, i);
        assert_eq!(st, 201, "{text}");
        ids.push(serde_json::from_str::<serde_json::Value>(&text).unwrap()["client_id"].as_str().unwrap().to_string());
    }
    let (st, text) = register(&g2, &limited, 3);
    assert_eq!(st, 401, "max_uses holds across replicas: {text}");

    // The total cap (4): one more fits, through either replica; the next is refused on both.
    let (st, text) = register(&g2, &open, 4);
    assert_eq!(st, 201, "{text}");
    ids.push(serde_json::from_str::<serde_json::Value>(&text).unwrap()["client_id"].as_str().unwrap().to_string());
    // The record of the fourth is written off the response path: wait for it in the store.
    let mut pgc = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        pgc.query_one("SELECT COUNT(*) FROM clients", &[]).unwrap().get::<_, i64>(0) == 4
    }));
    for (n, gw) in [(5, &g1), (6, &g2)] {
        let (st, text) = register(gw, &open, n);
        assert_eq!(st, 403, "{text}");
        assert!(text.contains("client_limit_reached"), "{text}");
    }

    // Two reapers at once (the injected clock: a day later, all four unused): each client is
    // deleted once, at the IdP, with no failure.
    let later =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 86_400).to_string();
    let spawn = |gw: &Gateway| {
        Command::new(BIN)
            .args(["clients", "reap", "--at", &later, "-c"])
            .arg(gw.config_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&g1), spawn(&g2));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let text: String = outs.iter().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).collect();
    let deleted: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["result"] == "deleted")
        .collect();
    let mut got: Vec<String> = deleted.iter().map(|v| v["client_id"].as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "each client deleted exactly once: {text}");
    assert!(!text.contains("\"failed\""), "{text}");
    let live: i64 = pgc.query_one("SELECT COUNT(*) FROM clients WHERE deleted_at IS NULL", &[]).unwrap().get(0);
    assert_eq!(live, 0);
    drop(idp);
}
