//! A small HTTPS (or plain HTTP) document server for the fetcher and CIMD tests: answers each
//! path with a configured raw response, records every accepted connection and every request
//! line, serves each connection on its own thread, and stops when dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslMethod};

/// What a path answers.
#[derive(Clone)]
pub struct Answer {
    /// Status line and headers, without the final blank line.
    pub head: String,
    pub body: Vec<u8>,
    /// Wait this long after the head before sending the body.
    pub body_delay: Duration,
}

impl Answer {
    /// `200` with `content_type`, `Content-Length` and the extra header lines.
    pub fn ok(content_type: &str, body: &[u8], extra: &[&str]) -> Answer {
        let mut head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}", body.len());
        for h in extra {
            head.push_str("\r\n");
            head.push_str(h);
        }
        Answer { head, body: body.to_vec(), body_delay: Duration::ZERO }
    }

    pub fn json(body: &str) -> Answer {
        Answer::ok("application/json", body.as_bytes(), &[])
    }

    pub fn raw(head: &str, body: &[u8]) -> Answer {
        Answer { head: head.to_string(), body: body.to_vec(), body_delay: Duration::ZERO }
    }
}

pub struct DocServer {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connects: Arc<AtomicUsize>,
    /// Request lines received (`GET /path HTTP/1.1`).
    pub requests: Arc<Mutex<Vec<String>>>,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    stop: Arc<AtomicBool>,
}

impl DocServer {
    /// Listens on `bind` (`127.0.0.1:0`, or a given address); TLS with `cert`/`key` (PEM) when
    /// given.
    pub fn start(bind: &str, tls: Option<(&[u8], &[u8])>) -> DocServer {
        let listener = TcpListener::bind(bind).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.map(|(cert, key)| {
            let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
            b.set_certificate(&openssl::x509::X509::from_pem(cert).unwrap()).unwrap();
            b.set_private_key(&openssl::pkey::PKey::private_key_from_pem(key).unwrap()).unwrap();
            Arc::new(b.build())
        });
        let server = DocServer {
            addr,
            connects: Arc::default(),
            requests: Arc::default(),
            answers: Arc::default(),
            stop: Arc::default(),
        };
        let (connects, requests, answers, stop) =
            (server.connects.clone(), server.requests.clone(), server.answers.clone(), server.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        connects.fetch_add(1, Ordering::SeqCst);
                        let (requests, answers, acceptor) = (requests.clone(), answers.clone(), acceptor.clone());
                        std::thread::spawn(move || {
                            tcp.set_nonblocking(false).unwrap();
                            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                            match acceptor {
                                Some(a) => {
                                    if let Ok(s) = a.accept(tcp) {
                                        serve(s, &requests, &answers);
                                    }
                                }
                                None => serve(tcp, &requests, &answers),
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        server
    }

    pub fn set(&self, path: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(path.to_string(), answer);
    }

    pub fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }

    pub fn requests_for(&self, path: &str) -> usize {
        let line = format!("GET {path} ");
        self.requests.lock().unwrap().iter().filter(|r| r.starts_with(&line)).count()
    }
}

impl Drop for DocServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve<S: Read + Write>(mut s: S, requests: &Mutex<Vec<String>>, answers: &Mutex<HashMap<String, Answer>>) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
            if head.len() > 16384 {
                return;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let line = text.lines().next().unwrap_or("").to_string();
        requests.lock().unwrap().push(line.clone());
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        let answer = answers.lock().unwrap().get(&path).cloned().unwrap_or_else(|| {
            Answer::raw("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2", b"{}")
        });
        if s.write_all(format!("{}\r\n\r\n", answer.head).as_bytes()).is_err() {
            return;
        }
        let _ = s.flush();
        if !answer.body_delay.is_zero() {
            std::thread::sleep(answer.body_delay);
        }
        if s.write_all(&answer.body).is_err() {
            return;
        }
        let _ = s.flush();
    }
}

/// A resolver for the fetcher that answers from a table, counting calls; a name may answer
/// differently on later calls (DNS rebinding).
pub struct TableResolver {
    pub calls: AtomicUsize,
    table: Mutex<HashMap<String, Vec<Vec<std::net::IpAddr>>>>,
}

impl TableResolver {
    pub fn new() -> Arc<TableResolver> {
        Arc::new(TableResolver { calls: AtomicUsize::new(0), table: Mutex::new(HashMap::new()) })
    }

    /// `host` answers `addrs` on every call.
    pub fn set(&self, host: &str, addrs: &[&str]) {
        self.set_sequence(host, &[addrs]);
    }

    /// `host` answers the first list on the first call, the second on the second, ... and the
    /// last one from then on.
    pub fn set_sequence(&self, host: &str, answers: &[&[&str]]) {
        let parsed = answers.iter().map(|a| a.iter().map(|s| s.parse().unwrap()).collect()).collect();
        self.table.lock().unwrap().insert(host.to_string(), parsed);
    }
}

#[async_trait::async_trait]
impl dcr_gateway::fetch::Resolver for TableResolver {
    async fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<std::net::IpAddr>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let table = self.table.lock().unwrap();
        let answers = table.get(host).ok_or_else(|| std::io::Error::other("NXDOMAIN"))?;
        Ok(answers[n.min(answers.len() - 1)].clone())
    }
}
