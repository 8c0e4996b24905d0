//! At start (and in `check`), ask the IdP where it serves registration: its discovery
//! document's `registration_endpoint`. When the configured `[routes]
//! upstream_registration_path` disagrees, the IdP's real registration path would be proxied as
//! ordinary `authentication` traffic — unvalidated (a `javascript:` redirect and a
//! client-chosen secret went through this way). So a disagreement refuses to start.
//!
//! Plain-HTTP origins only, one short blocking GET per origin before any listener exists; an
//! IdP that cannot be reached, answers no discovery document, or advertises no
//! `registration_endpoint` is reported and skipped (the gateway must start when the IdP is
//! down). HTTPS origins are not probed (said in the log).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The IdP advertises the configured path (or one the router classifies as `dcr`).
    Agrees,
    /// The IdP advertises another registration path: refuse.
    Disagrees { advertised: String },
    /// Nothing to compare (unreachable, no document, no member, HTTPS origin): why.
    Skipped(String),
}

const DISCOVERY: [&str; 2] = ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"];

/// The path of `registration_endpoint` in a discovery document, if it has one.
pub fn advertised_registration_path(doc: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(doc).ok()?;
    let url = url::Url::parse(v.get("registration_endpoint")?.as_str()?).ok()?;
    Some(url.path().to_string())
}

/// Compare an advertised path with the configuration: it must be classified `dcr` (the
/// upstream registration path, or the public one) by the gateway's own router.
pub fn judge(config: &Config, advertised: &str) -> Probe {
    match config.router.classify_target(advertised) {
        Ok(r) if r.scope == crate::scope::Scope::Dcr && r.is_registration => Probe::Agrees,
        _ => Probe::Disagrees { advertised: advertised.to_string() },
    }
}

fn get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n").ok()?;
    // Read the head, then Content-Length bytes (or to the end): an IdP may keep the
    // connection open whatever `Connection: close` said.
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut want: Option<usize> = None;
    loop {
        if let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
            if !(head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200")) {
                return None;
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            want = len.map(|l| split + 4 + l);
            if want.is_some_and(|w| out.len() >= w) {
                return Some(out[split + 4..want.unwrap_or(out.len())].to_vec());
            }
        }
        if out.len() > 256 * 1024 {
            return None;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let end = want.unwrap_or(out.len()).min(out.len());
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    (head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200")).then(|| out[split + 4..end].to_vec())
}

/// Probe the first plain-HTTP origin.
pub fn probe(config: &Config) -> Probe {
    let Some(origin) = config.upstream.origins.first() else { return Probe::Skipped("no origin".into()) };
    if origin.tls {
        return Probe::Skipped("HTTPS origins are not probed".into());
    }
    let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(&origin.authority()) else {
        return Probe::Skipped(format!("cannot resolve {}", origin.host));
    };
    let Some(addr) = addrs.next() else { return Probe::Skipped(format!("{} resolves to no address", origin.host)) };
    let timeout = config.upstream.connect_timeout.max(Duration::from_millis(200)).min(Duration::from_secs(3));
    for path in DISCOVERY {
        if let Some(body) = get(addr, &origin.authority(), path, timeout) {
            return match advertised_registration_path(&body) {
                Some(p) => judge(config, &p),
                None => Probe::Skipped(format!("{path} advertises no registration_endpoint")),
            };
        }
    }
    Probe::Skipped("no discovery document answered".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(up: &str) -> Config {
        let text = format!("[routes]\nregistration_path = \"/oidc/register\"\nupstream_registration_path = \"{up}\"\n");
        crate::config::parse(&text, std::path::Path::new("/tmp/g.toml")).unwrap()
    }

    #[test]
    fn the_advertised_path_must_be_the_configured_one() {
        let doc = br#"{"registration_endpoint":"http://idp:3000/reg?x=1"}"#;
        assert_eq!(advertised_registration_path(doc).as_deref(), Some("/reg"));
        assert_eq!(judge(&config("/reg"), "/reg"), Probe::Agrees);
        assert_eq!(judge(&config("/reg"), "/REG/"), Probe::Agrees);
        assert_eq!(judge(&config("/oidc/register"), "/reg"), Probe::Disagrees { advertised: "/reg".into() });
        assert_eq!(advertised_registration_path(br#"{"issuer":"x"}"#), None);
    }
}
