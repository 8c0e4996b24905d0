//! A recording upstream that keeps the exact bytes it received: the request line's target,
//! every header value as bytes, the body (Content-Length or chunked). Security tests assert
//! on these — what reached the IdP — not only on what the client was told.
//! Registrations (`POST` to `/reg` or `/oidc/register`) get 201 with a client_id and secrets;
//! everything else 200. Connections are kept alive, as an IdP would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RawRecorded {
    pub method: String,
    /// The request-target exactly as it arrived.
    pub target: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawRecorded {
    pub fn target_str(&self) -> String {
        String::from_utf8_lossy(&self.target).into_owned()
    }
    /// Every value of a header, as text (lossy).
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.header_all(name);
        (!all.is_empty()).then(|| all.join(", "))
    }
    pub fn header_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

/// A canned answer: for requests whose path starts with `prefix` (`{origin}` in the body is
/// replaced by the upstream's own origin).
#[derive(Clone)]
struct Canned {
    prefix: String,
    status: u16,
    content_type: String,
    body: String,
    headers: String,
}

pub struct RawUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<RawRecorded>>>,
    canned: Arc<Mutex<Vec<Canned>>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl RawUpstream {
    pub fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicU64::new(0));
        let canned: Arc<Mutex<Vec<Canned>>> = Arc::new(Mutex::new(Vec::new()));
        let (r, s, cn) = (requests.clone(), stop.clone(), canned.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (r, c, s, cn) = (r.clone(), counter.clone(), s.clone(), cn.clone());
                        std::thread::spawn(move || serve(conn, r, c, s, cn, addr));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        RawUpstream { addr, requests, canned, stop, accept: Some(accept) }
    }

    /// Answer requests whose path starts with `prefix` with this status and body (`{origin}`
    /// in the body becomes this upstream's `http://127.0.0.1:PORT`, `{n}` a counter). Later
    /// calls win.
    pub fn respond_with(&self, prefix: &str, status: u16, content_type: &str, body: &str) {
        self.canned.lock().unwrap().insert(
            0,
            Canned {
                prefix: prefix.into(),
                status,
                content_type: content_type.into(),
                body: body.into(),
                headers: String::new(),
            },
        );
    }

    /// [`Self::respond_with`] plus extra header lines (`Name: value`, `{origin}` replaced).
    pub fn respond_with_headers(&self, prefix: &str, status: u16, headers: &[&str], body: &str) {
        let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        self.canned.lock().unwrap().insert(
            0,
            Canned {
                prefix: prefix.into(),
                status,
                content_type: "application/json".into(),
                body: body.into(),
                headers,
            },
        );
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn recorded(&self) -> Vec<RawRecorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Requests other than the gateway's health checks.
    pub fn count_except_health(&self) -> usize {
        self.recorded().iter().filter(|r| !r.target.starts_with(b"/.well-known")).count()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    requests: Arc<Mutex<Vec<RawRecorded>>>,
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    canned: Arc<Mutex<Vec<Canned>>>,
    addr: SocketAddr,
) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut out = conn.try_clone().unwrap();
    let mut rd = BufReader::new(conn);
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut line = Vec::new();
        match rd.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = trim_crlf(&line);
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, |&b| b == b' ');
        let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let target = parts.next().unwrap_or_default().to_vec();
        let mut headers = Vec::new();
        loop {
            let mut h = Vec::new();
            if rd.read_until(b'\n', &mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = trim_crlf(&h);
            if h.is_empty() {
                break;
            }
            if let Some(i) = h.iter().position(|&b| b == b':') {
                let name = String::from_utf8_lossy(&h[..i]).to_ascii_lowercase();
                let mut v = &h[i + 1..];
                while v.first() == Some(&b' ') {
                    v = &v[1..];
                }
                headers.push((name, v.to_vec()));
            }
        }
        let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| String::from_utf8_lossy(v).to_string());
        let mut body = Vec::new();
        if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            loop {
                let mut sz = Vec::new();
                if rd.read_until(b'\n', &mut sz).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(
                    String::from_utf8_lossy(trim_crlf(&sz)).split(';').next().unwrap_or("0").trim(),
                    16,
                )
                .unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                if rd.read_exact(&mut chunk).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = find("content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
            body = vec![0; n];
            if rd.read_exact(&mut body).is_err() {
                return;
            }
        }
        let path = String::from_utf8_lossy(&target).split('?').next().unwrap_or("").to_string();
        let rec = RawRecorded { method: method.clone(), target, headers, body };
        requests.lock().unwrap().push(rec.clone());
        let canned_answer = canned.lock().unwrap().iter().find(|c| path.starts_with(&c.prefix)).cloned();
        if let Some(c) = canned_answer {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let body = c.body.replace("{origin}", &format!("http://{addr}")).replace("{n}", &n.to_string());
            let resp = format!(
                "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n{body}",
                c.status,
                c.content_type,
                body.len(),
                c.headers.replace("{origin}", &format!("http://{addr}")),
            );
            if out.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let (status, body) = if method == "POST" && (path == "/reg" || path == "/oidc/register") {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let mut doc: serde_json::Value = serde_json::from_slice(&rec.body).unwrap_or(serde_json::json!({}));
            doc["client_id"] = format!("client-{n}").into();
            doc["client_secret"] = format!("SECRET-{n}-s3cr3t").into();
            doc["registration_access_token"] = format!("RAT-{n}-t0k3n").into();
            ("201 Created", doc.to_string())
        } else {
            ("200 OK", serde_json::json!({"ok": true, "path": path}).to_string())
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Upstream: raw\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn trim_crlf(b: &[u8]) -> &[u8] {
    let mut b = b;
    while matches!(b.last(), Some(b'\n' | b'\r')) {
        b = &b[..b.len() - 1];
    }
    b
}
