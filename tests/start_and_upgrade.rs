//! No 502 at start or at a graceful upgrade (issue 13 item 10): the upstream set exists
//! before any listener opens, so every request the gateway answers after a start is decided
//! on its merits — across 20 starts on one port with a client sending all along, and across
//! a graceful upgrade (`run --upgrade` + SIGQUIT) while a client loops.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::upstream::Upstream;
use support::*;

const BODY: &str = r#"{"client_name":"Start","redirect_uris":["https://start.example.com/cb"]}"#;

/// One registration on a new connection: `Some(status)`, or `None` when nothing answered
/// (refused, reset, closed without a response).
fn register_once(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "POST /oidc/register HTTP/1.1\r\nHost: idp.example.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let status = raw_status(&String::from_utf8_lossy(&out));
    (status != 0).then_some(status)
}

/// A client registering in a loop until stopped: every answer it got, and how many requests
/// got none.
struct Client {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<u16>>>,
    unanswered: Arc<Mutex<usize>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(addr: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let unanswered = Arc::new(Mutex::new(0));
        let handle = std::thread::spawn({
            let (stop, answers, unanswered) = (stop.clone(), answers.clone(), unanswered.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match register_once(addr) {
                        Some(s) => answers.lock().unwrap().push(s),
                        None => {
                            *unanswered.lock().unwrap() += 1;
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
            }
        });
        Client { stop, answers, unanswered, handle: Some(handle) }
    }

    fn answers(&self) -> Vec<u16> {
        self.answers.lock().unwrap().clone()
    }

    fn finish(mut self) -> (Vec<u16>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        (self.answers(), *self.unanswered.lock().unwrap())
    }
}

fn builder(up: &Upstream, port: u16) -> GatewayBuilder {
    // No rate limits: hundreds of registrations from one address are the point here.
    GatewayBuilder::new(&up.origin()).http_port(port).extra("[rate_limit]\nenabled = false")
}

#[test]
fn twenty_starts_on_one_port_answer_only_2xx_while_a_client_sends() {
    let up = Upstream::start();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = Client::start(addr);
    for start in 0..20 {
        let before = client.answers().len();
        let gw = builder(&up, port).start();
        // The first request once /readyz says ready is served by the IdP, every time.
        assert!(wait_until(Duration::from_secs(10), || http_get(&gw.admin_url("/readyz")).0 == 200));
        assert_eq!(
            register_once(gw.http),
            Some(201),
            "start {start}: first request after /readyz: {}",
            gw.stderr_text()
        );
        // And the looping client got answers from this start, all 2xx.
        assert!(
            wait_until(Duration::from_secs(10), || client.answers().len() > before),
            "start {start}: the client got no answer"
        );
        let bad: Vec<u16> = client.answers().into_iter().filter(|s| !(200..300).contains(s)).collect();
        assert!(bad.is_empty(), "start {start}: non-2xx answers {bad:?}: {}", gw.stderr_text());
        drop(gw); // SIGKILL: the port closes; the client's requests go unanswered until the next start.
    }
    let (answers, unanswered) = client.finish();
    let bad: Vec<u16> = answers.iter().copied().filter(|s| !(200..300).contains(s)).collect();
    assert!(bad.is_empty(), "non-2xx answers across the starts: {bad:?}");
    assert!(answers.len() >= 20, "{} answers, {unanswered} unanswered", answers.len());
    eprintln!("20 starts: {} answers, all 2xx; {unanswered} requests sent while no gateway listened", answers.len());
}

#[test]
fn a_graceful_upgrade_answers_every_request_2xx_while_a_client_loops() {
    let up = Upstream::start();
    let port = free_port();
    // As docs/operations.md says: a grace period longer than the longest request, so the old
    // process finishes what it accepted before it exits.
    let mut old = builder(&up, port).server_keys("grace_period_seconds = 1").start();
    assert_eq!(register_once(old.http), Some(201));
    let client = Client::start(old.http);
    assert!(wait_until(Duration::from_secs(10), || client.answers().len() >= 20));

    let (mut new, new_stderr) = old.spawn_upgrade();
    let during = client.answers().len();
    old.signal("QUIT");
    let status = old.wait_exit(Duration::from_secs(20)).expect("old process exits after handing over");
    assert!(status.success(), "{status}");
    // The new process alone answers now; let the client send a while longer.
    let after_exit = client.answers().len();
    assert!(wait_until(Duration::from_secs(10), || client.answers().len() >= after_exit + 50));
    let (answers, unanswered) = client.finish();
    let new_log = std::fs::read_to_string(&new_stderr).unwrap_or_default();
    let bad: Vec<(usize, u16)> = answers.iter().copied().enumerate().filter(|(_, s)| !(200..300).contains(s)).collect();
    assert!(bad.is_empty(), "non-2xx during the upgrade (index, status): {bad:?}\nnew process: {new_log}");
    assert_eq!(unanswered, 0, "requests dropped during the upgrade\nnew process: {new_log}");
    assert!(answers.len() > during, "the client was served across the upgrade");
    assert!(new.try_wait().unwrap().is_none(), "new process is serving: {new_log}");
    eprintln!("upgrade: {} answers, all 2xx, none dropped ({} before SIGQUIT)", answers.len(), during);
    let _ = new.kill();
    let _ = new.wait();
}
