//! The IdP's discovery document read at start, in `check` and on reload: over HTTPS as over
//! plain HTTP, a registration path that disagrees with the configuration refuses (start, check,
//! and a reload that changes the upstream), and an IdP whose own document sends clients to
//! itself is reported by `check`, the log, `/readyz` and a metric.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::raw_upstream::RawUpstream;
use support::*;

/// An HTTPS IdP that answers every request with one discovery document (certificate for
/// `idp.example.com`, its PEM returned for `ca_file`), counting the requests it answered.
struct TlsIdp {
    port: u16,
    cert: Vec<u8>,
    served: Arc<AtomicUsize>,
}

impl TlsIdp {
    fn start(registration_endpoint: &str) -> TlsIdp {
        let (cert, key) = support::certs::self_signed("idp.example.com");
        let mut b = openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls()).unwrap();
        b.set_certificate(&openssl::x509::X509::from_pem(&cert).unwrap()).unwrap();
        b.set_private_key(&openssl::pkey::PKey::private_key_from_pem(&key).unwrap()).unwrap();
        let acceptor = Arc::new(b.build());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let body = serde_json::json!({
            "issuer": format!("https://127.0.0.1:{port}"),
            "registration_endpoint": registration_endpoint,
        })
        .to_string();
        let count = served.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(mut s) = acceptor.accept(tcp) else { continue };
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        TlsIdp { port, cert, served }
    }

    fn upstream_keys(&self) -> String {
        format!(
            "origins = [\"https://127.0.0.1:{}\"]\nsni = \"idp.example.com\"\nca_file = \"idp-ca.pem\"\nhealth_check = \"none\"\n",
            self.port
        )
    }
}

fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN).args(["check", "-c"]).arg(config).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn write_config(dir: &std::path::Path, upstream: &str, routes: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    let http = free_port();
    std::fs::write(
        &path,
        format!(
            "[listen]\nhttp = [\"127.0.0.1:{http}\"]\n[upstream]\n{upstream}[routes]\n\
             upstream_registration_path = \"/oidc/register\"\n{routes}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_https_idp_is_probed_with_the_upstream_tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    // Disagrees: the IdP registers at /reg, the configuration guards /oidc/register.
    let idp = TlsIdp::start("https://gw.example.com/reg");
    std::fs::write(dir.path().join("idp-ca.pem"), &idp.cert).unwrap();
    let cfg = write_config(dir.path(), &idp.upstream_keys(), "");
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(out.contains("advertises registration at \"/reg\""), "{out}");
    assert!(idp.served.load(Ordering::SeqCst) >= 1, "the HTTPS IdP was asked");

    // Agrees, on the gateway's public URL: no problem, no warning.
    let idp = TlsIdp::start("https://gw.example.com/oidc/register");
    std::fs::write(dir.path().join("idp-ca.pem"), &idp.cert).unwrap();
    let cfg = write_config(dir.path(), &idp.upstream_keys(), "public_base_url = \"https://gw.example.com\"\n");
    let (ok, out) = check(&cfg);
    assert!(ok, "{out}");
    assert!(!out.contains("not on the gateway"), "{out}");

    // A certificate the configured CA does not vouch for: not probed (reported), not trusted.
    let other = TlsIdp::start("https://gw.example.com/reg");
    std::fs::write(dir.path().join("idp-ca.pem"), &idp.cert).unwrap();
    let cfg = write_config(dir.path(), &other.upstream_keys(), "");
    let (ok, out) = check(&cfg);
    assert!(ok, "an unverifiable IdP is skipped, not believed: {out}");
    assert!(out.contains("not compared"), "{out}");
}

#[test]
fn an_idp_advertising_its_own_address_is_reported_on_readyz_and_in_a_metric() {
    let up = RawUpstream::start();
    let doc =
        serde_json::json!({"issuer": up.origin(), "registration_endpoint": format!("{}/oidc/register", up.origin())});
    up.respond_with("/.well-known/openid-configuration", 200, "application/json", &doc.to_string());
    let gw = GatewayBuilder::new(&up.origin()).upstream_keys("health_check = \"none\"").start();
    assert_eq!(gw.metric("dcr_gateway_idp_discovery_off_gateway"), 1.0);
    let (status, body) = http_get(&gw.admin_url("/readyz"));
    assert_eq!(status, 200, "a warning, not unready: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["warnings"][0].as_str().unwrap().contains("off the gateway"), "{body}");
    assert!(gw.stderr_text().contains("not on the gateway") || gw.stdout_text().contains("not on the gateway"));

    // The IdP is told its public URL: fixed on the next reload that touches the routes.
    up.respond_with(
        "/.well-known/openid-configuration",
        200,
        "application/json",
        r#"{"issuer":"https://gw.example.com","registration_endpoint":"https://gw.example.com/oidc/register"}"#,
    );
    let cfg = gw.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[routes]\npublic_base_url = \"https://gw.example.com\"\n")).unwrap();
    gw.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || gw.metric("dcr_gateway_idp_discovery_off_gateway") == 0.0));
    let (_, body) = http_get(&gw.admin_url("/readyz"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["warnings"], serde_json::json!([]), "{body}");
}

#[test]
fn a_reload_onto_an_idp_that_registers_elsewhere_is_refused() {
    let up = RawUpstream::start();
    let gw = GatewayBuilder::new(&up.origin()).upstream_keys("health_check = \"none\"").start();
    let before = gw.metric("dcr_gateway_reloads_total{result=\"failure\"}");
    let idp = TlsIdp::start("https://gw.example.com/reg");
    std::fs::write(gw.path("idp-ca.pem"), &idp.cert).unwrap();
    let cfg = gw.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let origin_line = format!("origins = [\"{}\"]\n", up.origin());
    assert!(text.contains(&origin_line), "{text}");
    std::fs::write(&cfg, text.replace(&origin_line, &idp.upstream_keys().replace("health_check = \"none\"\n", "")))
        .unwrap();
    gw.signal("HUP");
    // (The file watcher and SIGHUP may each reload: every attempt fails.)
    assert!(gw.wait_metric("dcr_gateway_reloads_total{result=\"failure\"}", before + 1.0) >= before + 1.0);
    assert_eq!(gw.metric("dcr_gateway_reloads_total{result=\"success\"}"), 0.0, "no reload succeeded");
    assert!(wait_until(Duration::from_secs(5), || gw.stderr_text().contains("advertises registration at \"/reg\"")
        || gw.stdout_text().contains("advertises registration at \\\"/reg\\\"")));
    // The running configuration still forwards to the first IdP.
    let (status, _) = http_get(&gw.url("/authorize"));
    assert_eq!(status, 200);
    assert!(up.recorded().iter().any(|r| r.target_str() == "/authorize"));
}

#[test]
fn check_suggests_the_profile_the_idp_looks_like() {
    let up = RawUpstream::start();
    let doc = serde_json::json!({
        "issuer": "https://gw.example.com",
        "registration_endpoint": "https://gw.example.com/api/oidc/register",
        "authorization_endpoint": "https://gw.example.com/api/oidc/auth",
    });
    up.respond_with("/.well-known/openid-configuration", 200, "application/json", &doc.to_string());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\nhttp = [\"127.0.0.1:{}\"]\n[upstream]\norigins = [\"{}\"]\nhealth_check = \"none\"\n\
             [routes]\nupstream_registration_path = \"/api/oidc/register\"\npublic_base_url = \"https://gw.example.com\"\n",
            free_port(),
            up.origin()
        ),
    )
    .unwrap();
    let (ok, out) = check(&cfg);
    assert!(ok, "{out}");
    assert!(out.contains("looks like \"glewlwyd\""), "{out}");
    // Chosen explicitly: no suggestion.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("health_check", "profile = \"glewlwyd\"\nhealth_check");
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = check(&cfg);
    assert!(ok, "{out}");
    assert!(!out.contains("looks like"), "{out}");
}

/// `[upstream] profile = "auto"`: the profile the IdP's discovery document looks like is the one
/// enforced (here Glewlwyd's: its registration path, `client_confidential` derived); an IdP whose
/// document cannot be read fails `check` (and the start) instead of falling back to a guess.
#[test]
fn an_auto_profile_is_detected_from_discovery_and_enforced() {
    let up = RawUpstream::start();
    let doc = serde_json::json!({
        "issuer": "http://gw.example.com",
        "registration_endpoint": format!("{}/api/oidc/register", up.origin()),
        "authorization_endpoint": format!("{}/api/oidc/auth", up.origin()),
    });
    up.respond_with("/.well-known/openid-configuration", 200, "application/json", &doc.to_string());
    let gw = GatewayBuilder::new(&up.origin()).upstream_keys("profile = \"auto\"\nhealth_check = \"none\"").start();
    let body = serde_json::json!({"client_name": "auto", "redirect_uris": ["http://127.0.0.1:8976/cb"], "token_endpoint_auth_method": "none"});
    let (status, text) = register_from(&gw, "127.0.0.1", &body.to_string());
    assert_eq!(status, 201, "{text}");
    let sent = up.recorded().into_iter().find(|r| r.method == "POST").expect("a registration reached the IdP");
    assert_eq!(sent.target_str(), "/api/oidc/register", "glewlwyd's registration path");
    let sent: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["client_confidential"], false, "glewlwyd's derived member: {sent}");
    let log = gw.stderr_text();
    assert!(log.contains("profile=glewlwyd") && log.contains("profile_detected=true"), "{log}");

    // Nothing to detect from: check fails, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "origins = [\"http://127.0.0.1:9\"]\nprofile = \"auto\"\nhealth_check = \"none\"\n",
        "",
    );
    let (ok, out) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(out.contains("upstream.profile = \"auto\""), "{out}");
}
