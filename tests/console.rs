//! The admin web console (`/console/` on the admin listener) through the real binary: it never
//! answers on the public listener; writes need the session and its CSRF token; the admin token
//! never appears in a page, a URL, a cookie or a log; a bad edit is refused at its field; a
//! read-only token gets no write control; monitoring mode records a matching request without
//! blocking it, and the request reaches the IdP. `browser_console_end_to_end` drives the same
//! console in Debian's Chromium (tests/console/console.test.mjs, puppeteer-core).

mod support;

use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::upstream::Upstream;
use support::*;

const RULES: &str = r#"[
  {"id": "block-bots", "description": "Known bad registration bots", "active": true, "priority": 10,
   "rule": {"action": {"block": true}, "scope": "dcr", "match": {"user_agents": ["BadBot/1.0"]}}},
  {"id": "allow-office", "active": true, "priority": 20,
   "rule": {"action": {"allow": true}, "scope": "tenant", "match": {"ipv4_cidrs": ["198.51.100.0/24"]}}}
]"#;

const REG: &str = r#"{"client_name":"Console Test","redirect_uris":["https://app.example.com/cb"]}"#;

struct Token {
    label: &'static str,
    secret: String,
    scopes: Vec<&'static str>,
}

impl Token {
    fn new(label: &'static str, scopes: &[&'static str]) -> Token {
        Token {
            label,
            secret: format!("dcrgw_adm_{}", hex::encode(rand::random::<[u8; 24]>())),
            scopes: scopes.to_vec(),
        }
    }
}

fn tokens_file(tokens: &[&Token]) -> String {
    tokens
        .iter()
        .map(|t| {
            let scopes: Vec<String> = t.scopes.iter().map(|s| format!("{s:?}")).collect();
            format!(
                "[[token]]\nlabel = {:?}\nsha256 = {:?}\nscopes = [{}]\n\n",
                t.label,
                hex::encode(Sha256::digest(t.secret.as_bytes())),
                scopes.join(", ")
            )
        })
        .collect()
}

fn builder(up: &Upstream, tokens: &[&Token]) -> GatewayBuilder {
    GatewayBuilder::new(&up.origin())
        .rules(RULES)
        .file("admin-tokens.toml", tokens_file(tokens).into_bytes())
        .extra("[admin]\ntokens_file = \"admin-tokens.toml\"\n")
}

fn start(up: &Upstream, tokens: &[&Token]) -> Gateway {
    builder(up, tokens).start()
}

fn writer() -> Token {
    Token::new("sec-team", &dcr_gateway::tokens::ADMIN_SCOPES)
}

fn reader() -> Token {
    Token::new("auditor", &["read:network_acls", "read:tenant_settings", "read:clients"])
}

/// One HTTP exchange, redirects not followed.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// Everything a browser would show or keep: body, headers (Location, Set-Cookie).
    fn everything(&self) -> String {
        let mut s = self.body.clone();
        for (n, v) in &self.headers {
            s.push_str(&format!("\n{n}: {v}"));
        }
        s
    }
}

fn no_redirects() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(10)).build()
}

fn send(method: &str, url: &str, cookie: Option<&str>, extra: &[(&str, &str)], form: Option<&str>) -> Resp {
    let mut req = no_redirects().request(method, url);
    if let Some(c) = cookie {
        req = req.set("cookie", &format!("dcrgw_console={c}"));
    }
    for (k, v) in extra {
        req = req.set(k, v);
    }
    let r = match form {
        Some(f) => req.set("content-type", "application/x-www-form-urlencoded").send_string(f),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error on {method} {url}: {e}"),
    };
    let mut headers = Vec::new();
    for n in resp.headers_names() {
        for v in resp.all(&n) {
            headers.push((n.clone(), v.to_string()));
        }
    }
    Resp { status: resp.status(), headers, body: resp.into_string().unwrap_or_default() }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Sign in; returns the session id (the cookie's value) and the answer.
fn sign_in(gw: &Gateway, token: &str) -> (String, Resp) {
    let r = send("POST", &gw.admin_url("/console/login"), None, &[], Some(&format!("token={}", enc(token))));
    assert_eq!(r.status, 303, "sign-in: {}", r.body);
    assert_eq!(r.header("location"), Some("/console/rules"));
    let cookie = r.header("set-cookie").expect("a session cookie").to_string();
    let id = cookie.split(';').next().unwrap().strip_prefix("dcrgw_console=").unwrap().to_string();
    (id, r)
}

/// The value of the first `<input name="{name}" value="…">` in a page.
fn input(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name} input in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn sha256_file(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn rules_on_disk(gw: &Gateway) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(gw.path("rules.json")).unwrap()).unwrap()
}

fn register(gw: &Gateway, ua: &str) -> (u16, String) {
    response_parts(
        agent()
            .post(&gw.url("/oidc/register"))
            .set("content-type", "application/json")
            .set("user-agent", ua)
            .send_string(REG),
    )
}

#[test]
fn no_console_route_answers_on_the_public_listener() {
    let up = Upstream::start();
    let admin = writer();
    let gw = start(&up, &[&admin]);
    // The admin listener serves the console …
    let r = send("GET", &gw.admin_url("/console/login"), None, &[], None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("dcr-gateway") && r.body.contains("name=\"token\""), "{}", r.body);
    // … the public one never does: every console path is plain traffic for the IdP.
    let before = up.count();
    let paths = ["/console", "/console/", "/console/login", "/console/rules", "/console/assets/console.js"];
    for p in paths {
        let r = send("GET", &gw.url(p), None, &[], None);
        assert!(r.header("set-cookie").is_none_or(|c| !c.contains("dcrgw_console")), "{p}: {:?}", r.headers);
        assert!(!r.body.contains("name=\"token\"") && !r.body.contains("dcr-gateway console"), "{p}: {}", r.body);
        assert!(r.header("content-security-policy").is_none(), "{p}: the console's headers on the public listener");
    }
    let r = send("POST", &gw.url("/console/login"), None, &[], Some("token=not-a-real-token"));
    assert!(r.header("set-cookie").is_none_or(|c| !c.contains("dcrgw_console")), "{:?}", r.headers);
    assert_eq!(r.header("location"), None);
    // They reached the IdP like any other path: the gateway did not answer them itself.
    let seen: Vec<String> = up.recorded().iter().skip(before).map(|r| r.url.clone()).collect();
    for p in paths {
        assert!(seen.iter().any(|s| s == p), "{p} not proxied: {seen:?}");
    }
    // An admin API path is not the console either.
    let r = send("GET", &gw.admin_url("/consoles"), None, &[], None);
    assert_eq!(r.status, 404);
}

#[test]
fn writes_need_the_session_and_its_csrf_token() {
    let up = Upstream::start();
    let admin = writer();
    let gw = start(&up, &[&admin]);
    let (sid, signed_in) = sign_in(&gw, &admin.secret);
    let cookie = signed_in.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain-HTTP admin listener: {cookie}");
    let (other_sid, _) = sign_in(&gw, &admin.secret);

    let page = send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None);
    assert_eq!(page.status, 200, "{}", page.body);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(page.body.contains("block-bots") && page.body.contains("allow-office"));
    let csrf = input(&page.body, "csrf");
    let etag = input(&page.body, "etag");
    let other_csrf = input(&send("GET", &gw.admin_url("/console/rules"), Some(&other_sid), &[], None).body, "csrf");
    assert_ne!(csrf, other_csrf);
    let file = gw.path("rules.json");
    let before = sha256_file(&file);
    let url = gw.admin_url("/console/rules/block-bots/mode");
    let form = |csrf: &str| format!("mode=log&etag={etag}&csrf={csrf}");

    for (why, cookie, headers, body) in [
        ("no CSRF token", Some(sid.as_str()), vec![], format!("mode=log&etag={etag}")),
        ("another session's CSRF token", Some(sid.as_str()), vec![], form(&other_csrf)),
        ("an empty CSRF token", Some(sid.as_str()), vec![], form("")),
        ("a cross-site Origin", Some(sid.as_str()), vec![("origin", "https://evil.example")], form(&csrf)),
        ("a cross-site fetch", Some(sid.as_str()), vec![("sec-fetch-site", "cross-site")], form(&csrf)),
    ] {
        let r = send("POST", &url, cookie, &headers, Some(&body));
        assert_eq!(r.status, 403, "{why}: {}", r.body);
        assert_eq!(sha256_file(&file), before, "{why}: the rules file changed");
    }
    // No session at all: back to sign-in, nothing written.
    let r = send("POST", &url, None, &[], Some(&form(&csrf)));
    assert_eq!((r.status, r.header("location")), (303, Some("/console/login")));
    assert_eq!(sha256_file(&file), before);
    // A JSON body is not a console form.
    let r = send("POST", &url, Some(&sid), &[("content-type", "application/json")], None);
    assert!(r.status == 415 || r.status == 403, "{}", r.status);

    // With the token: monitoring mode, written through the API's service.
    let r = send("POST", &url, Some(&sid), &[], Some(&form(&csrf)));
    assert_eq!(r.status, 303, "{}", r.body);
    assert_ne!(sha256_file(&file), before);
    assert_eq!(rules_on_disk(&gw)[0]["rule"]["action"], serde_json::json!({"block": true, "log": true}));
    let page = send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None);
    assert!(page.body.contains("is in monitoring mode"), "notice shown once: {}", page.body);
    // The admin audit line names the token's label as the actor.
    let audit = gw.wait_audit(1);
    let change = audit.iter().find(|l| l["scope"] == "admin").expect("an admin audit line");
    assert_eq!(change["actor"], "sec-team");
    assert_eq!(change["action"], "network_acls.update");

    // The next matching registration is recorded, not blocked, and reaches the IdP.
    let (status, body) = register(&gw, "BadBot/1.0");
    assert_eq!(status, 201, "{body}");
    assert_eq!(up.last().url, "/oidc/register");
    let lines = gw.wait_audit(2);
    let line = lines.iter().rev().find(|l| l["scope"] == "dcr").expect("the registration's audit line");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["logged_rules"], serde_json::json!(["block-bots"]));
    let d = send("GET", &gw.admin_url("/console/decisions?rule=block-bots&decision=allow"), Some(&sid), &[], None);
    assert_eq!(d.status, 200);
    assert!(d.body.contains("data-logged=\"block-bots\""), "{}", d.body);
    assert!(d.body.contains("1 of "), "{}", d.body);
    let page = send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None);
    assert!(page.body.contains("data-testid=\"count-log\"><span title=\"last 5 minutes\">1</span>"), "{}", page.body);

    // Enforced again: `log` removed, the action kept; the next matching request is blocked.
    let etag = input(&page.body, "etag");
    let r = send("POST", &url, Some(&sid), &[], Some(&format!("mode=enforce&etag={etag}&csrf={csrf}")));
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(rules_on_disk(&gw)[0]["rule"]["action"], serde_json::json!({"block": true}));
    assert_eq!(register(&gw, "BadBot/1.0").0, 403);

    // Signed out: the session is gone for good.
    let r = send("POST", &gw.admin_url("/console/logout"), Some(&sid), &[], Some(&format!("csrf={csrf}")));
    assert_eq!((r.status, r.header("location")), (303, Some("/console/login")));
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None);
    assert_eq!((r.status, r.header("location")), (303, Some("/console/login")));
}

#[test]
fn edits_are_validated_like_the_api_and_conflicts_explained() {
    let up = Upstream::start();
    let admin = writer();
    let gw = start(&up, &[&admin]);
    let (sid, _) = sign_in(&gw, &admin.secret);
    let edit = send("GET", &gw.admin_url("/console/rules/block-bots/edit"), Some(&sid), &[], None);
    assert_eq!(edit.status, 200, "{}", edit.body);
    assert!(edit.body.contains("BadBot/1.0"));
    let csrf = input(&edit.body, "csrf");
    let etag = input(&edit.body, "etag");
    let file = gw.path("rules.json");
    let before = sha256_file(&file);
    let post = |etag: &str, cidr: &str| {
        let body = format!(
            "csrf={csrf}&etag={etag}&description=bots&active=on&priority=10&action=block&scope=dcr\
             &match.user_agents=BadBot%2F1.0&match.ipv4_cidrs={}",
            enc(cidr)
        );
        send("POST", &gw.admin_url("/console/rules/block-bots"), Some(&sid), &[], Some(&body))
    };
    // A malformed CIDR: 400, the message at the field, the file untouched.
    let r = post(&etag, "10.0.0.300/8");
    assert_eq!(r.status, 400, "{}", r.body);
    let at = r.body.find("id=\"e-match.ipv4_cidrs\"").expect("the error at the IPv4 field");
    assert!(r.body[at..].contains("10.0.0.300/8"), "{}", &r.body[at..]);
    assert!(r.body.contains("aria-describedby=\"e-match.ipv4_cidrs\""));
    assert!(r.body.contains(">10.0.0.300/8</textarea>"), "the value typed is kept");
    assert_eq!(sha256_file(&file), before);
    // A stale version: 412, explained, with the current version to save over deliberately.
    let r = post(&"0".repeat(64), "192.0.2.0/24");
    assert_eq!(r.status, 412, "{}", r.body);
    assert!(r.body.contains("the rules file changed after you opened this form"), "{}", r.body);
    assert_eq!(sha256_file(&file), before);
    // A good edit is written, and enforced.
    let r = post(&etag, "192.0.2.0/24");
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(rules_on_disk(&gw)[0]["rule"]["match"]["ipv4_cidrs"], serde_json::json!(["192.0.2.0/24"]));
    // The priority Auth0 forbids twice is placed at the priority field.
    let etag = input(&send("GET", &gw.admin_url("/console/rules/new"), Some(&sid), &[], None).body, "etag");
    let body = format!("csrf={csrf}&etag={etag}&id=dup&active=on&priority=20&action=block&scope=dcr&match_all=on");
    let r = send("POST", &gw.admin_url("/console/rules"), Some(&sid), &[], Some(&body));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("id=\"e-priority\""), "{}", r.body);
}

#[test]
fn a_read_only_token_gets_no_write_control_and_cannot_write() {
    let up = Upstream::start();
    let admin = writer();
    let auditor = reader();
    let gw = start(&up, &[&admin, &auditor]);
    let (sid, _) = sign_in(&gw, &auditor.secret);
    for page in ["/console/rules", "/console/tenant", "/console/decisions", "/console/explain"] {
        let r = send("GET", &gw.admin_url(page), Some(&sid), &[], None);
        assert_eq!(r.status, 200, "{page}: {}", r.body);
        assert!(!r.body.contains("data-write"), "{page} shows a write control to a read-only token");
        assert!(!r.body.contains("method=\"post\" action=\"/console/rules"), "{page}");
    }
    for page in ["/console/rules/new", "/console/rules/block-bots/edit"] {
        assert_eq!(send("GET", &gw.admin_url(page), Some(&sid), &[], None).status, 403, "{page}");
    }
    // A hand-made form with the session's own CSRF token: the API's scope check refuses it.
    let page = send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None);
    let csrf = input(&page.body, "csrf");
    let before = sha256_file(&gw.path("rules.json"));
    let r = send(
        "POST",
        &gw.admin_url("/console/rules/block-bots/active"),
        Some(&sid),
        &[],
        Some(&format!("csrf={csrf}&active=false")),
    );
    assert_eq!(r.status, 303);
    assert_eq!(sha256_file(&gw.path("rules.json")), before);
    let page = send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None);
    assert!(page.body.contains("lacks the scope") && page.body.contains("update:network_acls"), "{}", page.body);
}

#[test]
fn the_token_never_appears_in_html_urls_cookies_or_logs() {
    let up = Upstream::start();
    let admin = writer();
    let gw = start(&up, &[&admin]);
    let mut seen = Vec::new();
    let wrong = format!("dcrgw_adm_{}", hex::encode(rand::random::<[u8; 24]>()));
    let r = send("POST", &gw.admin_url("/console/login"), None, &[], Some(&format!("token={wrong}")));
    assert_eq!(r.status, 401);
    assert!(r.body.contains("unknown token"), "{}", r.body);
    seen.push(r);
    let (sid, r) = sign_in(&gw, &admin.secret);
    seen.push(r);
    assert!(!sid.contains(&admin.secret));
    let pages = [
        "/console/",
        "/console/login",
        "/console/rules",
        "/console/rules/new",
        "/console/rules/block-bots/edit",
        "/console/decisions",
        "/console/explain?ip=192.0.2.1&ua=BadBot%2F1.0&scope=dcr",
        "/console/tenant",
        "/console/clients",
    ];
    for p in pages {
        let r = send("GET", &gw.admin_url(p), Some(&sid), &[], None);
        assert!(r.status == 200 || r.status == 303, "{p}: {}", r.status);
        if p == "/console/clients" {
            assert!(r.body.contains("Registry not configured"), "{}", r.body);
        }
        seen.push(r);
    }
    let csrf = input(&seen.last().unwrap().body, "csrf");
    let etag = input(&send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None).body, "etag");
    seen.push(send(
        "POST",
        &gw.admin_url("/console/rules/allow-office/active"),
        Some(&sid),
        &[],
        Some(&format!("csrf={csrf}&etag={etag}&active=false")),
    ));
    seen.push(send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None));
    let (status, _) = register(&gw, "BadBot/1.0");
    assert_eq!(status, 403);
    seen.push(send("GET", &gw.admin_url("/console/decisions"), Some(&sid), &[], None));
    seen.push(send("POST", &gw.admin_url("/console/logout"), Some(&sid), &[], Some(&format!("csrf={csrf}"))));
    for r in &seen {
        let all = r.everything();
        assert!(!all.contains(&admin.secret), "the admin token in an answer: {all}");
        assert!(!all.contains(&wrong), "a presented token echoed: {all}");
    }
    gw.wait_audit(2);
    std::thread::sleep(Duration::from_millis(100)); // let the logger flush its last line
    let logs = format!("{}\n{}", gw.stdout_text(), gw.stderr_text());
    assert!(logs.contains("console sign-in"), "sign-in is logged (by label): {logs}");
    assert!(!logs.contains(&admin.secret), "the admin token in the logs");
    assert!(!logs.contains(&wrong), "a refused token in the logs");
    assert!(!logs.contains(&sid), "the session id in the logs");

    // Removing the token from the token file ends its sessions.
    let (sid, _) = sign_in(&gw, &admin.secret);
    assert_eq!(send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None).status, 200);
    write_file(&gw.path("admin-tokens.toml"), &tokens_file(&[&reader()]));
    let ended = wait_until(Duration::from_secs(10), || {
        send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None).status == 303
    });
    assert!(ended, "the session outlived its token: {}", gw.stderr_text());
}

#[test]
fn explain_runs_on_the_live_snapshot() {
    let up = Upstream::start();
    let admin = writer();
    let gw = start(&up, &[&admin]);
    let (sid, _) = sign_in(&gw, &admin.secret);
    let r =
        send("GET", &gw.admin_url("/console/explain?ip=192.0.2.1&ua=BadBot%2F1.0&scope=dcr"), Some(&sid), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("data-testid=\"explain-decision\">block<"), "{}", r.body);
    assert!(r.body.contains("Decided by rule <strong>block-bots</strong>"), "{}", r.body);
    let r = send("GET", &gw.admin_url("/console/explain?ip=198.51.100.7&scope=management"), Some(&sid), &[], None);
    assert!(r.body.contains("Decided by rule <strong>allow-office</strong>"), "{}", r.body);
    let r = send("GET", &gw.admin_url("/console/explain?ip=not-an-ip"), Some(&sid), &[], None);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("is not an IP address"), "{}", r.body);
}

/// The console in a real browser: Debian's Chromium driven by puppeteer-core
/// (tests/console/console.test.mjs). `make test` installs tests/console/node_modules (npm ci);
/// this test runs it itself when they are missing. Screenshots go to `CONSOLE_SCREENSHOTS`
/// (docs/console/ when regenerating them for the README), else target/console-screenshots.
#[test]
fn browser_console_end_to_end() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/console");
    if !dir.join("node_modules/puppeteer-core").exists() {
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm is installed (scripts/prereqs.sh)");
        assert!(ok.success(), "npm ci in tests/console failed");
    }
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian's chromium is installed (scripts/prereqs.sh installs it)");
    let up = Upstream::start();
    let admin = writer();
    let auditor = reader();
    // With the client registry on (SQLite), so the Clients page lists the client registered below.
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rand::random::<[u8; 32]>());
    let gw = builder(&up, &[&admin, &auditor])
        .file("registry.keys", format!("k1:{key}\n").into_bytes())
        .extra("[registry]\nenabled = true\npath = \"registry.db\"\nkey_file = \"registry.keys\"\nflush_interval_ms = 50\n")
        .start();
    let shots = std::env::var("CONSOLE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target/console-screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let before = up.count();
    let out = Command::new("node")
        .arg(dir.join("console.test.mjs"))
        .env("CHROMIUM", chromium)
        .env("CONSOLE_URL", gw.admin_url("/console/"))
        .env("PUBLIC_URL", gw.url("/"))
        .env("ADMIN_TOKEN", &admin.secret)
        .env("READER_TOKEN", &auditor.secret)
        .env("SCREENSHOTS", &shots)
        .output()
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{stderr}\ngateway:\n{}", gw.stderr_text());
    assert!(stdout.contains("console browser test: ok"), "{stdout}");
    // What reached the IdP: the registration blocked before monitoring mode did not, the one
    // after it did, with the gateway's bytes.
    let regs: Vec<_> = up.recorded().into_iter().skip(before).filter(|r| r.url == "/oidc/register").collect();
    assert_eq!(regs.len(), 1, "exactly the registration made in monitoring mode reached the IdP");
    assert_eq!(regs[0].json()["client_name"], "Console Test");
    assert_eq!(regs[0].header("user-agent").as_deref(), Some("BadBot/1.0"));
    // The browser's edit that the gateway refused left the file as it was; the toggle did not.
    let rules = rules_on_disk(&gw);
    assert_eq!(rules[0]["rule"]["action"], serde_json::json!({"block": true, "log": true}));
    assert_eq!(rules[1]["rule"]["match"]["ipv4_cidrs"], serde_json::json!(["198.51.100.0/24"]));
    for name in ["login", "rules", "rule-edit-error", "decisions", "explain", "tenant", "clients", "rules-read-only"] {
        assert!(shots.join(format!("{name}.png")).exists(), "screenshot {name}.png");
    }
    let logs = format!("{}\n{}", gw.stdout_text(), gw.stderr_text());
    assert!(!logs.contains(&admin.secret) && !logs.contains(&auditor.secret), "a token in the logs");
}

#[test]
fn tenant_settings_are_changed_through_the_api_service() {
    let up = Upstream::start();
    let admin = writer();
    let gw = start(&up, &[&admin]);
    let (sid, _) = sign_in(&gw, &admin.secret);
    let page = send("GET", &gw.admin_url("/console/tenant"), Some(&sid), &[], None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("data-testid=\"dcr-enabled\"><span class=\"badge decision-allow\">on"), "{}", page.body);
    let csrf = input(&page.body, "csrf");
    let etag = input(&page.body, "etag");
    assert_eq!(register(&gw, "curl/8").0, 201);
    // Registration off (the checkbox left out), the rest as it was: only the flag is written.
    let r = send(
        "POST",
        &gw.admin_url("/console/tenant"),
        Some(&sid),
        &[],
        Some(&format!("csrf={csrf}&etag={etag}&security_mode=strict&allowed_any=on")),
    );
    assert_eq!((r.status, r.header("location")), (303, Some("/console/tenant")), "{}", r.body);
    let (status, body) = register(&gw, "curl/8");
    assert_eq!(status, 403, "{body}");
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gw.path("tenant-settings.json")).unwrap()).unwrap();
    assert_eq!(on_disk, serde_json::json!({"flags": {"enable_dynamic_client_registration": false}}));
    // A default scope outside the allowed ones: refused at its field by the API's validation.
    let page = send("GET", &gw.admin_url("/console/tenant"), Some(&sid), &[], None);
    let etag = input(&page.body, "etag");
    let before = sha256_file(&gw.path("tenant-settings.json"));
    let r = send(
        "POST",
        &gw.admin_url("/console/tenant"),
        Some(&sid),
        &[],
        Some(&format!("csrf={csrf}&etag={etag}&security_mode=strict&allowed_scopes=openid&default_scope=email")),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let at = r.body.find("id=\"e-default\"").expect("the error at the default scope field");
    assert!(r.body[at..].contains("email"), "{}", &r.body[at..]);
    assert_eq!(sha256_file(&gw.path("tenant-settings.json")), before);
}

/// A rule deleted from the console is gone from the file and from enforcement; a token without
/// a page's read scope gets "not allowed" for that page and the pages it can read; with the admin
/// API off there is no console either.
#[test]
fn rules_are_deleted_and_each_page_needs_its_read_scope() {
    let up = Upstream::start();
    let admin = writer();
    let desk = Token::new("tenant-desk", &["read:tenant_settings"]);
    let gw = start(&up, &[&admin, &desk]);
    assert_eq!(register(&gw, "BadBot/1.0").0, 403, "the rule blocks before it is deleted");
    let (sid, _) = sign_in(&gw, &admin.secret);
    let page = send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None);
    let (csrf, etag) = (input(&page.body, "csrf"), input(&page.body, "etag"));
    let r = send(
        "POST",
        &gw.admin_url("/console/rules/block-bots/delete"),
        Some(&sid),
        &[],
        Some(&format!("csrf={csrf}&etag={}", enc(&etag))),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let ids: Vec<String> =
        rules_on_disk(&gw).as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["allow-office"]);
    let page = send("GET", &gw.admin_url("/console/rules"), Some(&sid), &[], None);
    assert!(page.body.contains("Rule block-bots deleted."), "{}", page.body);
    assert!(
        wait_until(Duration::from_secs(10), || register(&gw, "BadBot/1.0").0 == 201),
        "the deleted rule still blocks"
    );

    let (desk_sid, _) = sign_in(&gw, &desk.secret);
    for page in ["/console/rules", "/console/decisions", "/console/explain", "/console/clients"] {
        let r = send("GET", &gw.admin_url(page), Some(&desk_sid), &[], None);
        assert_eq!(r.status, 403, "{page}: {}", r.body);
        assert!(r.body.contains("does not carry the read:"), "{page}: {}", r.body);
    }
    assert_eq!(send("GET", &gw.admin_url("/console/tenant"), Some(&desk_sid), &[], None).status, 200);

    let off = GatewayBuilder::new(&up.origin())
        .rules(RULES)
        .file("admin-tokens.toml", tokens_file(&[&admin]).into_bytes())
        .extra("[admin]\ntokens_file = \"admin-tokens.toml\"\napi_enabled = false\n")
        .start();
    for page in ["/console/login", "/console/rules"] {
        assert_eq!(send("GET", &off.admin_url(page), None, &[], None).status, 404, "{page}");
    }
}

/// Behind a TLS-terminating proxy the gateway trusts (`X-Forwarded-Proto: https` from a
/// `[network] trusted_proxies` peer) the session cookie is `Secure`; the same header from a peer
/// that is not trusted changes nothing.
#[test]
fn the_cookie_is_secure_behind_a_trusted_tls_proxy() {
    let up = Upstream::start();
    let admin = writer();
    let login = |gw: &Gateway| {
        let form = format!("token={}", enc(&admin.secret));
        let r = send("POST", &gw.admin_url("/console/login"), None, &[("x-forwarded-proto", "https")], Some(&form));
        assert_eq!(r.status, 303, "{}", r.body);
        r.header("set-cookie").unwrap().to_string()
    };
    let trusted = builder(&up, &[&admin]).network("trusted_proxies = [\"127.0.0.1/32\"]").start();
    assert!(login(&trusted).ends_with("; Secure"), "{}", login(&trusted));
    let untrusted = builder(&up, &[&admin]).network("trusted_proxies = []").start();
    assert!(!login(&untrusted).contains("Secure"), "{}", login(&untrusted));
}
