//! `[upstream] serialize_registrations` (the `lemonldap-ng` profile's `[registration] serialize`):
//! an IdP that names clients by the current second keeps only one of parallel registrations, so
//! the gateway lets one registration at a time reach it. The upstream here holds each
//! registration until the test releases it, so "how many are at the IdP at once" is observed,
//! not timed.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use support::*;

#[derive(Default)]
struct Held {
    arrived: usize,
    released: usize,
}

/// Registrations wait at the IdP until released, one release per registration.
struct GateIdp {
    origin: String,
    state: Arc<(Mutex<Held>, Condvar)>,
}

impl GateIdp {
    fn start() -> GateIdp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new((Mutex::new(Held::default()), Condvar::new()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { return };
                let st = st.clone();
                std::thread::spawn(move || loop {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut buf = Vec::new();
                    let mut b = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let (status, body) = if head.starts_with("post /oidc/register") {
                        let (lock, cv) = &*st;
                        let mut h = lock.lock().unwrap();
                        h.arrived += 1;
                        let me = h.arrived;
                        cv.notify_all();
                        while h.released < me {
                            h = cv.wait(h).unwrap();
                        }
                        (201, format!(r#"{{"client_id":"c{me}","client_name":"x"}}"#))
                    } else {
                        (404, r#"{"error":"not_found"}"#.to_string())
                    };
                    let reason = if status == 201 { "Created" } else { "Not Found" };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        GateIdp { origin, state }
    }

    fn arrived(&self) -> usize {
        self.state.0.lock().unwrap().arrived
    }

    /// Wait (bounded) until `n` registrations have arrived; false if they did not.
    fn wait_arrived(&self, n: usize, within: Duration) -> bool {
        let (lock, cv) = &*self.state;
        let h = lock.lock().unwrap();
        let (h, _) = cv.wait_timeout_while(h, within, |h| h.arrived < n).unwrap();
        h.arrived >= n
    }

    fn release_one(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().released += 1;
        cv.notify_all();
    }
}

const BODY: &str =
    r#"{"client_name":"Parallel","redirect_uris":["https://app.example.com/cb"],"token_endpoint_auth_method":"none"}"#;

fn register_in_background(gw: &Gateway) -> std::thread::JoinHandle<u16> {
    let url = gw.url("/oidc/register");
    std::thread::spawn(move || {
        response_parts(agent().post(&url).set("content-type", "application/json").send_string(BODY)).0
    })
}

fn gateway(idp: &GateIdp, serialize: bool) -> Gateway {
    gateway_spaced(idp, serialize, 0)
}

fn gateway_spaced(idp: &GateIdp, serialize: bool, spacing_ms: u64) -> Gateway {
    GatewayBuilder::new(&idp.origin)
        .upstream_keys(&format!(
            "health_check = \"none\"\nserialize_registrations = {serialize}\nserialize_spacing_ms = {spacing_ms}"
        ))
        .read_timeout_ms(20_000)
        .start()
}

#[test]
fn registrations_reach_the_idp_one_at_a_time_when_serialized() {
    let idp = GateIdp::start();
    let gw = gateway(&idp, true);
    let clients: Vec<_> = (0..3).map(|_| register_in_background(&gw)).collect();
    for n in 1..=3 {
        assert!(idp.wait_arrived(n, Duration::from_secs(10)), "registration {n} reached the IdP");
        // While it is held, no other registration is let through.
        assert!(!idp.wait_arrived(n + 1, Duration::from_millis(300)), "{} at the IdP at once", idp.arrived());
        idp.release_one();
    }
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(statuses, [201, 201, 201]);
}

#[test]
fn without_serialization_registrations_run_in_parallel() {
    // The control: the same upstream sees all three at once.
    let idp = GateIdp::start();
    let gw = gateway(&idp, false);
    let clients: Vec<_> = (0..3).map(|_| register_in_background(&gw)).collect();
    assert!(idp.wait_arrived(3, Duration::from_secs(10)), "only {} arrived", idp.arrived());
    for _ in 0..3 {
        idp.release_one();
    }
    for c in clients {
        assert_eq!(c.join().unwrap(), 201);
    }
}

#[test]
fn with_spacing_the_next_registration_waits_after_the_answer() {
    // An IdP that names clients by the second: the next registration reaches it only
    // `serialize_spacing_ms` after the previous answer. (A lower bound: a loaded machine can only
    // make the gap longer.)
    let idp = GateIdp::start();
    let gw = gateway_spaced(&idp, true, 400);
    let first = register_in_background(&gw);
    assert!(idp.wait_arrived(1, Duration::from_secs(10)));
    let second = register_in_background(&gw);
    idp.release_one();
    assert_eq!(first.join().unwrap(), 201);
    let answered = std::time::Instant::now();
    assert!(idp.wait_arrived(2, Duration::from_secs(10)), "the second registration arrived");
    assert!(
        answered.elapsed() >= Duration::from_millis(350),
        "arrived {:?} after the first answer",
        answered.elapsed()
    );
    idp.release_one();
    assert_eq!(second.join().unwrap(), 201);
}
