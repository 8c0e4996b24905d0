//! What a reload cannot pretend (issue 13 item 2): TLS certificates rotate in place on a
//! running listener and a bad pair is a failed reload that keeps the old one; every changed
//! start-bound key is named and `dcr_gateway_restart_required` follows the file; a rules file
//! that is a symlink into another directory is watched there too.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::upstream::Upstream;
use support::*;

/// The CN of the certificate a new TLS handshake sees, and the status of a GET over it.
fn handshake(addr: SocketAddr) -> (String, u16) {
    let (cn, text) = support::certs::https_get(addr, "idp.example.com", "idp.example.com", "/authorize");
    (cn, raw_status(&text))
}

fn write_bytes(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn tls_certificates_reload_in_place_and_a_bad_pair_keeps_the_old_one() {
    let up = Upstream::start();
    let (cert, key) = support::certs::self_signed("one.example.com");
    let tls_port = free_port();
    let mut gw = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = []\nsni_host_mismatch = \"allow\"")
        .file("cert.pem", cert)
        .file("key.pem", key)
        .listen_extra(&format!(
            "https = [{{ address = \"127.0.0.1:{tls_port}\", cert = \"cert.pem\", key = \"key.pem\" }}]"
        ))
        .start();
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()));
    assert_eq!(handshake(addr), ("one.example.com".to_string(), 200));

    // Rotate the files (as cert-manager or an operator does) and signal: the next handshake
    // sees the new certificate, on the same listener, without a restart.
    let (cert2, key2) = support::certs::self_signed("two.example.com");
    write_bytes(&gw.path("key.pem"), &key2);
    write_bytes(&gw.path("cert.pem"), &cert2);
    gw.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || handshake(addr).0 == "two.example.com"),
        "the new certificate is not served: {}",
        gw.stderr_text()
    );
    assert_eq!(handshake(addr).1, 200);
    assert_eq!(gw.metric("dcr_gateway_last_reload_success"), 1.0);
    assert_eq!(gw.metric("dcr_gateway_restart_required"), 0.0, "a certificate needs no restart");
    let failures = gw.metric("dcr_gateway_reloads_total{result=\"failure\"}");

    // A certificate path that does not exist (what `check` rejects): a failed reload, and
    // the running certificate keeps serving.
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    write_file(&gw.config_path(), &config.replace("cert = \"cert.pem\"", "cert = \"missing.pem\""));
    gw.signal("HUP");
    assert!(
        gw.wait_metric("dcr_gateway_reloads_total{result=\"failure\"}", failures + 1.0) > failures,
        "{}",
        gw.stderr_text()
    );
    assert_eq!(gw.metric("dcr_gateway_last_reload_success"), 0.0);
    assert!(gw.stderr_text().contains("missing.pem"), "{}", gw.stderr_text());
    assert_eq!(handshake(addr), ("two.example.com".to_string(), 200));

    // A key that does not belong to the certificate: refused too.
    write_file(&gw.config_path(), &config);
    let (_, other_key) = support::certs::self_signed("three.example.com");
    let (cert3, _) = support::certs::self_signed("three.example.com");
    write_bytes(&gw.path("cert.pem"), &cert3);
    write_bytes(&gw.path("key.pem"), &other_key);
    let failures = gw.metric("dcr_gateway_reloads_total{result=\"failure\"}");
    gw.signal("HUP");
    gw.wait_metric("dcr_gateway_reloads_total{result=\"failure\"}", failures + 1.0);
    assert!(gw.stderr_text().contains("does not belong to the certificate"), "{}", gw.stderr_text());
    assert_eq!(handshake(addr).0, "two.example.com");
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(15));
}

#[test]
fn start_bound_changes_are_named_and_counted_until_the_file_matches_again() {
    let up = Upstream::start();
    let gw = GatewayBuilder::new(&up.origin()).extra("[log]\nlevel = \"info\"").start();
    assert_eq!(gw.metric("dcr_gateway_restart_required"), 0.0);
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    let changed = config
        .replace("read_timeout_ms = 2000", "read_timeout_ms = 2500")
        .replace("graceful_shutdown_timeout_seconds = 5", "graceful_shutdown_timeout_seconds = 6")
        .replace("level = \"info\"", "level = \"debug\"");
    assert_ne!(changed, config);
    let successes = gw.metric("dcr_gateway_reloads_total{result=\"success\"}");
    write_file(&gw.config_path(), &changed);
    gw.signal("HUP");
    gw.wait_metric("dcr_gateway_reloads_total{result=\"success\"}", successes + 1.0);
    assert!(
        wait_until(Duration::from_secs(5), || gw.metric("dcr_gateway_restart_required") == 1.0),
        "{}",
        gw.stderr_text()
    );
    let log = gw.stderr_text();
    let warning =
        log.lines().find(|l| l.contains("only after a restart")).unwrap_or_else(|| panic!("no warning: {log}"));
    for key in ["upstream.read_timeout_ms", "server.graceful_shutdown_timeout_seconds", "log.level"] {
        assert!(warning.contains(key), "{key} not named: {warning}");
    }
    // Back to what the process runs: nothing to restart for.
    let successes = gw.metric("dcr_gateway_reloads_total{result=\"success\"}");
    write_file(&gw.config_path(), &config);
    gw.signal("HUP");
    gw.wait_metric("dcr_gateway_reloads_total{result=\"success\"}", successes + 1.0);
    assert!(
        wait_until(Duration::from_secs(5), || gw.metric("dcr_gateway_restart_required") == 0.0),
        "{}",
        gw.stderr_text()
    );
}

const BLOCK: &str = r#"[{"id":"block","active":true,"priority":1,"rule":{"action":{"block":true},"scope":"tenant","match":{"ipv4_cidrs":["CIDR"]}}}]"#;

fn register(gw: &Gateway, ip: &str) -> u16 {
    response_parts(
        agent()
            .post(&gw.url("/oidc/register"))
            .set("x-forwarded-for", ip)
            .set("content-type", "application/json")
            .send_string(r#"{"client_name":"Link","redirect_uris":["https://link.example.com/cb"]}"#),
    )
    .0
}

#[test]
fn a_symlinked_rules_file_is_watched_in_its_targets_directory() {
    let up = Upstream::start();
    // rules.json in one directory is a symlink to a file in another (not the ConfigMap layout).
    let links = tempfile::tempdir().unwrap();
    let targets = tempfile::tempdir().unwrap();
    let target = targets.path().join("rules-live.json");
    std::fs::write(&target, BLOCK.replace("CIDR", "192.0.2.0/24")).unwrap();
    let link = links.path().join("rules.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let gw = GatewayBuilder::new(&up.origin()).acl_keys(&format!("rules = \"{}\"", link.display())).start();
    assert_eq!(register(&gw, "203.0.113.5"), 201);
    // Edit the target in place: nothing changes next to the link. No SIGHUP.
    std::fs::write(&target, BLOCK.replace("CIDR", "203.0.113.0/24")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || register(&gw, "203.0.113.5") == 403),
        "editing the symlink target did not reload: {}",
        gw.stderr_text()
    );
    // Replaced by rename in the target's directory (an editor's save): seen as well.
    write_file(&target, &BLOCK.replace("CIDR", "198.51.100.0/24"));
    assert!(wait_until(Duration::from_secs(10), || register(&gw, "203.0.113.5") == 201), "{}", gw.stderr_text());
    assert_eq!(register(&gw, "198.51.100.9"), 403);
}
