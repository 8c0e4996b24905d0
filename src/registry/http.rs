//! The registry's own HTTP calls to the IdP, blocking and bounded: RFC 7592 `DELETE` of a
//! reaped client, the discovery document for the usage paths, and the CIMD bridge's
//! registrations (`POST`, RFC 7592 `PUT`). HTTP/1.1 over a short-lived
//! connection to the configured upstream origin (TLS through OpenSSL, which Pingora links
//! already). The bearer token is written to the socket only, never into an error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::{Origin, Upstream};

/// An answer: status and (bounded) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The answer's `Content-Type`, lower-cased.
    pub content_type: Option<String>,
}

/// As much as the proxied path reads of an answer (`proxy::CLIENT_ID_CAPTURE_LIMIT`): a
/// registration answer can be several times the 64 KiB request (escaped characters).
const MAX_ANSWER: usize = 1024 * 1024;

fn exchange<S: Read + Write>(s: &mut S, request: &[u8]) -> Result<Answer, String> {
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| "unreadable status line".to_string())?;
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if (100..200).contains(&status) && status != 101 {
                // An interim answer (100 Continue, 103 Early Hints): the final one follows.
                out.drain(..split + 4);
                continue;
            }
            let no_body = status == 204 || status == 304 || status == 101;
            let want = if no_body { Some(0) } else { len };
            if let Some(w) = want {
                let end = (split + 4).checked_add(w).ok_or("unreadable content-length")?;
                if w > MAX_ANSWER {
                    return Err("answer too large".into());
                }
                if out.len() >= end {
                    let body = out[split + 4..end].to_vec();
                    return Ok(Answer { status, body, content_type: content_type(&head) });
                }
            }
        }
        if out.len() > MAX_ANSWER {
            return Err("answer too large".into());
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    // Closed without a length: the rest is the body (chunked: decoded; the request asked for
    // `Connection: close`, so the end of the stream is the end of the answer).
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").ok_or("connection closed before the head")?;
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).ok_or("unreadable status line")?;
    let chunked = head
        .lines()
        .filter_map(|l| l.strip_prefix("transfer-encoding:"))
        .any(|v| v.split(',').any(|c| c.trim() == "chunked"));
    let raw = &out[split + 4..];
    let body = if chunked { dechunk(raw).ok_or("unreadable chunked body")? } else { raw.to_vec() };
    Ok(Answer { status, body, content_type: content_type(&head) })
}

/// The `Content-Type` of a lower-cased head.
fn content_type(head: &str) -> Option<String> {
    head.lines().find_map(|l| l.strip_prefix("content-type:")).map(|v| v.trim().to_string())
}

/// A chunked body (RFC 9112 §7.1), its chunks joined; trailers ignored.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// Send `method target` to `origin` with `host` and an optional bearer token.
pub fn call(
    upstream: &Upstream,
    origin: &Origin,
    method: &str,
    host: &str,
    target: &str,
    bearer: Option<&str>,
) -> Result<Answer, String> {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    send(upstream, origin, &Request { method, host, target, authorization: auth.as_deref(), headers: &[], json: None })
}

/// A request of the gateway's own to the IdP.
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub target: &'a str,
    /// The whole `Authorization` value (a bearer token, the IdP's initial access token).
    pub authorization: Option<&'a str>,
    /// More header lines (`[upstream] headers`).
    pub headers: &'a [(String, String)],
    /// A JSON body.
    pub json: Option<&'a [u8]>,
}

/// Send `r` to `origin` over a connection of its own (closed after the answer).
pub fn send(upstream: &Upstream, origin: &Origin, r: &Request<'_>) -> Result<Answer, String> {
    let addr = origin
        .authority()
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", origin.authority()))?
        .next()
        .ok_or_else(|| format!("resolve {}: no address", origin.authority()))?;
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n",
        r.method, r.target, r.host
    );
    if let Some(a) = r.authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    for (name, value) in r.headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = r.json.unwrap_or_default();
    if r.json.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let sni = upstream.sni.clone().unwrap_or_else(|| origin.host.clone());
    send_bytes(upstream, addr, origin.tls.then_some(sni.as_str()), &bytes)
}

/// Send a whole request (head and body, already framed, `Connection: close`) to `addr`, over
/// Makes the PEM certificates in `ca` the connector's only trust anchors: not added to the
/// system's roots (a public CA's certificate for the same name must not pass). Errors name the
/// file.
pub(crate) fn trust_only(b: &mut openssl::ssl::SslConnectorBuilder, ca: &std::path::Path) -> Result<(), String> {
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", ca.display());
    let pem = std::fs::read(ca).map_err(|e| named(&e))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| named(&e))?;
    if certs.is_empty() {
        return Err(named(&"no certificate"));
    }
    let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(|e| named(&e))?;
    for c in certs {
        store.add_cert(c).map_err(|e| named(&e))?;
    }
    b.set_verify_cert_store(store.build()).map_err(|e| named(&e))
}

/// TLS with `sni` when given, with the upstream's timeouts and CA; the answer read whole.
pub fn send_bytes(upstream: &Upstream, addr: SocketAddr, sni: Option<&str>, bytes: &[u8]) -> Result<Answer, String> {
    let timeout = upstream.connect_timeout.max(Duration::from_secs(1));
    let read_timeout = upstream.read_timeout.max(Duration::from_secs(2));
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(read_timeout)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(read_timeout)).map_err(|e| e.to_string())?;
    match sni {
        Some(sni) => {
            let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
                .map_err(|e| format!("tls: {e}"))?;
            if let Some(ca) = &upstream.ca_file {
                // Only the configured CA, as the proxy's peers trust it (Pingora replaces the
                // trust store with it).
                trust_only(&mut b, ca).map_err(|e| format!("tls: {e}"))?;
            }
            if !upstream.verify_cert {
                b.set_verify(openssl::ssl::SslVerifyMode::NONE);
            }
            let mut s = b.build().connect(sni, tcp).map_err(|e| format!("tls handshake with {sni}: {e}"))?;
            exchange(&mut s, bytes)
        }
        None => {
            let mut s = tcp;
            exchange(&mut s, bytes)
        }
    }
}

/// The paths a discovery document names for the usage tracker: `(authorize, form)` where
/// form holds the token, PAR and revocation endpoints.
pub fn usage_paths(doc: &[u8]) -> (Vec<String>, Vec<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(doc) else { return (Vec::new(), Vec::new()) };
    let path =
        |k: &str| v.get(k).and_then(|u| u.as_str()).and_then(|u| url::Url::parse(u).ok()).map(|u| u.path().to_string());
    let authorize = path("authorization_endpoint").into_iter().collect();
    let form = ["token_endpoint", "pushed_authorization_request_endpoint", "revocation_endpoint"]
        .iter()
        .filter_map(|k| path(k))
        .collect();
    (authorize, form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_paths_are_read() {
        let doc = br#"{"authorization_endpoint":"https://idp.example/auth","token_endpoint":"https://idp.example/token",
            "pushed_authorization_request_endpoint":"https://idp.example/request","revocation_endpoint":"https://idp.example/token/revocation"}"#;
        let (a, f) = usage_paths(doc);
        assert_eq!(a, vec!["/auth"]);
        assert_eq!(f, vec!["/token", "/request", "/token/revocation"]);
        assert_eq!(usage_paths(b"nope"), (vec![], vec![]));
    }

    #[test]
    fn answers_are_read_with_and_without_length() {
        let mut io = std::io::Cursor::new(b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n".to_vec());
        struct Rw<'a>(&'a mut std::io::Cursor<Vec<u8>>);
        impl Read for Rw<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                self.0.read(b)
            }
        }
        impl Write for Rw<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert_eq!(exchange(&mut Rw(&mut io), b"x").unwrap(), Answer { status: 204, body: vec![], content_type: None });
        let mut io = std::io::Cursor::new(b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\":1}".to_vec());
        assert_eq!(exchange(&mut Rw(&mut io), b"x").unwrap().body, b"{\"error\":1}");
        let mut io = std::io::Cursor::new(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: Application/JSON\r\n\r\nokEXTRA".to_vec(),
        );
        let a = exchange(&mut Rw(&mut io), b"x").unwrap();
        assert_eq!((a.body.as_slice(), a.content_type.as_deref()), (&b"ok"[..], Some("application/json")));
        // Chunked (an IdP's registration answer need not carry a length).
        let mut io = std::io::Cursor::new(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\n{\"a\":\r\n4\r\n\"b\"}\r\n0\r\n\r\n"
                .to_vec(),
        );
        let a = exchange(&mut Rw(&mut io), b"x").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (201, &b"{\"a\":\"b\"}"[..]));
        let mut io = std::io::Cursor::new(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec());
        assert!(exchange(&mut Rw(&mut io), b"x").is_err());
        // Interim answers are skipped; the final one is read.
        let mut io = std::io::Cursor::new(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
                .to_vec(),
        );
        let a = exchange(&mut Rw(&mut io), b"x").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (201, &b"{}"[..]));
        // A length that would wrap, or one past the bound: an error, no panic.
        let mut io =
            std::io::Cursor::new(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n{}".to_vec());
        assert!(exchange(&mut Rw(&mut io), b"x").is_err());
    }
}
