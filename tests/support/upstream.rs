//! An in-process upstream that records every request and answers like a tiny IdP:
//! registrations get 201 with a client_id and secrets, `/slow` sleeps, everything else 200.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub url: String,
    pub headers: HashMap<String, Vec<String>>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(&name.to_ascii_lowercase()).map(|v| v.join(", "))
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream got a JSON body")
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    server: Arc<tiny_http::Server>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        Upstream::start_on(0)
    }

    /// Listen on a given port (to bring an upstream back where it was).
    pub fn start_on(port: u16) -> Upstream {
        let server = Arc::new(tiny_http::Server::http(("127.0.0.1", port)).unwrap());
        let addr = server.server_addr().to_ip().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(Mutex::new(0u64));
        let mut threads = Vec::new();
        for _ in 0..8 {
            let server = server.clone();
            let requests = requests.clone();
            let counter = counter.clone();
            threads.push(std::thread::spawn(move || {
                for mut rq in server.incoming_requests() {
                    let mut body = Vec::new();
                    let _ = rq.as_reader().read_to_end(&mut body);
                    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
                    for h in rq.headers() {
                        headers
                            .entry(h.field.as_str().as_str().to_ascii_lowercase())
                            .or_default()
                            .push(h.value.as_str().to_string());
                    }
                    let rec =
                        Recorded { method: rq.method().as_str().to_string(), url: rq.url().to_string(), headers, body };
                    // The gateway's start-up probe of the discovery document is not traffic a
                    // test sends: not recorded.
                    if !(rec.method == "GET" && rec.url.starts_with("/.well-known/")) {
                        requests.lock().unwrap().push(rec.clone());
                    }
                    let path = rec.url.split('?').next().unwrap_or("").to_string();
                    if path.starts_with("/slow") {
                        std::thread::sleep(Duration::from_millis(
                            path.trim_start_matches("/slow/").parse().unwrap_or(3000),
                        ));
                    }
                    let (status, body) = if rec.method == "POST" && (path == "/reg" || path == "/oidc/register") {
                        let n = {
                            let mut c = counter.lock().unwrap();
                            *c += 1;
                            *c
                        };
                        let mut doc: serde_json::Value =
                            serde_json::from_slice(&rec.body).unwrap_or(serde_json::json!({}));
                        doc["client_id"] = format!("client-{n}").into();
                        doc["client_secret"] = format!("SECRET-{n}-s3cr3t").into();
                        doc["registration_access_token"] = format!("RAT-{n}-t0k3n").into();
                        (201, doc.to_string())
                    } else {
                        (200, serde_json::json!({"ok": true, "path": path}).to_string())
                    };
                    let resp = tiny_http::Response::from_string(body)
                        .with_status_code(status)
                        .with_header("Content-Type: application/json".parse::<tiny_http::Header>().unwrap())
                        .with_header("X-Upstream: yes".parse::<tiny_http::Header>().unwrap());
                    let _ = rq.respond(resp);
                }
            }));
        }
        Upstream { addr, requests, server, threads }
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.recorded().last().cloned().expect("upstream received a request")
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.unblock();
        for _ in 0..self.threads.len() {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
