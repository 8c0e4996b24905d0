//! State that fails closed (issue 13): reloads judged against the last good snapshot while a
//! client keeps registering, and `max_uses` spent only when the IdP accepted.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::upstream::Upstream;
use support::*;

const BODY: &str = r#"{"client_name":"Torture","redirect_uris":["https://t.example/cb"]}"#;

fn mint(dir: &Path, args: &[&str]) -> String {
    let out =
        Command::new(BIN).args(["token", "new", "--file"]).arg(dir.join("tokens.toml")).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn register(gw_url: &str, token: Option<&str>) -> u16 {
    let mut req = agent().post(gw_url).set("content-type", "application/json");
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    match req.send_string(BODY) {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(_) => 0,
    }
}

fn registrations(up: &Upstream) -> usize {
    up.recorded().iter().filter(|r| r.method == "POST" && r.url.starts_with("/oidc/register")).count()
}

/// Overwrite in place (truncate, then write), as many editors and config tools do, with a
/// pause in the middle so the watcher can see the half-written file.
fn write_in_place(path: &Path, bytes: &[u8], cut: usize, pause: Duration) {
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path).unwrap();
    f.write_all(&bytes[..cut]).unwrap();
    f.flush().unwrap();
    std::thread::sleep(pause);
    f.write_all(&bytes[cut..]).unwrap();
    f.flush().unwrap();
}

/// A small deterministic generator (no dependency): the same torture on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn reload_torture_never_decides_a_request_with_an_open_default() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let token = mint(dir.path(), &["--label", "partner"]);
    mint(dir.path(), &["--label", "other"]);
    let gw = GatewayBuilder::new(&up.origin())
        .file("tokens.toml", std::fs::read(dir.path().join("tokens.toml")).unwrap())
        .dcr("registration = \"token\"\ntoken_file = \"tokens.toml\"")
        .extra("[rate_limit]\nenabled = false")
        .start();
    let config_path = gw.config_path();
    let tokens_path = gw.path("tokens.toml");
    let config = std::fs::read(&config_path).unwrap();
    let tokens = std::fs::read(&tokens_path).unwrap();
    let text = String::from_utf8(config.clone()).unwrap();
    // The configuration without its [dcr] section: valid, complete-looking, and open.
    let dcr_at = text.find("[dcr]").unwrap();
    let dcr_end = dcr_at + text[dcr_at..].find("[reload]").unwrap();
    let without_dcr = format!("{}{}", &text[..dcr_at], &text[dcr_end..]);
    // ... and with [dcr] kept but its registration line gone.
    let without_mode = text.replace("registration = \"token\"\n", "");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, sent, url) = (stop.clone(), sent.clone(), gw.url("/oidc/register"));
        std::thread::spawn(move || {
            let mut statuses = std::collections::BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                *statuses.entry(register(&url, None)).or_insert(0u32) += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            statuses
        })
    };

    let mut rng = Lcg(13);
    let ms = |rng: &mut Lcg, max: u64| Duration::from_millis(rng.next(max) + 1);
    for _ in 0..150 {
        let hold = ms(&mut rng, 150);
        match rng.next(8) {
            0 => std::fs::write(&config_path, b"").unwrap(),
            1 => {
                let cut = rng.next(config.len() as u64 - 1) as usize + 1;
                std::fs::write(&config_path, &config[..cut]).unwrap();
            }
            2 => std::fs::remove_file(&config_path).unwrap(),
            3 => std::fs::write(&config_path, &without_dcr).unwrap(),
            4 => std::fs::write(&config_path, &without_mode).unwrap(),
            5 => {
                let cut = rng.next(config.len() as u64) as usize;
                write_in_place(&config_path, &config, cut, hold);
            }
            6 => std::fs::write(&tokens_path, b"").unwrap(),
            _ => {
                let cut = rng.next(tokens.len() as u64) as usize;
                write_in_place(&tokens_path, &tokens, cut, hold);
            }
        }
        std::thread::sleep(hold);
        std::fs::write(&config_path, &config).unwrap();
        std::fs::write(&tokens_path, &tokens).unwrap();
        std::thread::sleep(ms(&mut rng, 40));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let statuses = client.join().unwrap();

    assert_eq!(registrations(&up), 0, "no registration without a token reached the IdP: {statuses:?}");
    assert!(sent.load(Ordering::Relaxed) > 100, "the client kept sending: {statuses:?}");
    assert!(statuses.keys().all(|s| *s == 401), "every request was refused for its missing token: {statuses:?}");
    assert!(gw.metric("dcr_gateway_reloads_total{result=\"failure\"}") >= 10.0, "{}", gw.metrics());
    assert!(gw.stderr_text().contains("keeping the last good configuration"));
    // Still alive, still in token mode, and the restored files reload fine.
    assert_eq!(register(&gw.url("/oidc/register"), Some(&token)), 201);
    assert_eq!(register(&gw.url("/oidc/register"), None), 401);
    assert_eq!(registrations(&up), 1);
}

#[test]
fn a_sighup_with_the_force_marker_loads_what_the_judge_refused() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    mint(dir.path(), &["--label", "partner"]);
    let gw = GatewayBuilder::new(&up.origin())
        .file("tokens.toml", std::fs::read(dir.path().join("tokens.toml")).unwrap())
        .dcr("registration = \"token\"\ntoken_file = \"tokens.toml\"")
        .extra("[rate_limit]\nenabled = false")
        .start();
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    // The operator really means to open registration (removes the line on purpose).
    std::fs::write(gw.config_path(), text.replace("registration = \"token\"\n", "")).unwrap();
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || gw.stderr_text().contains("key dcr.registration is gone")));
    assert_eq!(register(&gw.url("/oidc/register"), None), 401, "refused reload: still token mode");
    let marker = gw.path("gateway.toml.force-reload");
    std::fs::write(&marker, b"").unwrap();
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || !marker.exists()), "the marker is removed once used");
    assert_eq!(register(&gw.url("/oidc/register"), None), 201);
}

#[test]
fn a_token_use_is_spent_only_when_the_idp_accepted() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let token = mint(dir.path(), &["--label", "once", "--max-uses", "1"]);
    let gw = GatewayBuilder::new(&format!("http://127.0.0.1:{port}"))
        .file("tokens.toml", std::fs::read(dir.path().join("tokens.toml")).unwrap())
        .dcr("registration = \"token\"\ntoken_file = \"tokens.toml\"")
        .start();
    let url = gw.url("/oidc/register");
    // The IdP is down: 502/503/504, and the use is given back each time.
    for _ in 0..3 {
        let s = register(&url, Some(&token));
        assert!((500..600).contains(&s), "{s}");
    }
    let up = Upstream::start_on(port);
    let mut last = 0;
    assert!(
        wait_until(Duration::from_secs(15), || {
            last = register(&url, Some(&token));
            assert!(last == 201 || (500..600).contains(&last), "{last}");
            last == 201
        }),
        "the IdP came back: {last}"
    );
    // The one use is now spent.
    assert_eq!(register(&url, Some(&token)), 401);
    assert_eq!(registrations(&up), 1);
}

#[test]
fn configuration_errors_never_quote_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    // An unterminated string on the redis_url line: the TOML error quotes that line.
    std::fs::write(
        &cfg,
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://admin:hunter2@cache:6379/0\nkey_prefix = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "-c"]).arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("redis://***@cache"), "the message still locates the problem: {stderr}");
    assert!(!stderr.contains("hunter2") && !stderr.contains("admin:"), "{stderr}");
    std::fs::write(&cfg, "[dcr]\nenabled = true\nclient_secret = \"s3cr3t-value\n").unwrap();
    let out = Command::new(BIN).args(["check", "-c"]).arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !stderr.contains("s3cr3t"), "{stderr}");
}

#[test]
fn a_rejected_reload_logs_no_secret() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).start();
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    let broken = format!("{text}[rate_limit]\nredis_url = \"redis://admin:hunter2@cache:6379/0\n");
    write_file(&gw.config_path(), &broken);
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || gw.stderr_text().contains("reload rejected")));
    let log = gw.stderr_text();
    assert!(log.contains("redis://***@cache") && !log.contains("hunter2"), "{log}");
}
