//! The outbound fetcher (src/fetch) against a real local HTTPS server: special-use addresses in
//! every spelling, DNS rebinding through the injected resolver, redirects, size caps, slow
//! bodies, media types, TLS names, per-host limits. Every refusal is checked on the wire: the
//! server records each connection it accepts, and the fetcher counts its connection attempts.

#[path = "fetch_support/doc_server.rs"]
mod doc_server;
mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dcr_gateway::fetch::{FetchConfig, FetchError, Fetcher};
use doc_server::{Answer, DocServer, TableResolver};

const DOC: &str = r#"{"client_id":"https://docs.test/client.json","client_name":"X"}"#;

struct Setup {
    server: DocServer,
    cert: Vec<u8>,
}

fn setup() -> Setup {
    let (cert, key) = support::certs::self_signed("docs.test");
    let server = DocServer::start("127.0.0.1:0", Some((&cert, &key)));
    server.set("/client.json", Answer::json(DOC));
    Setup { server, cert }
}

/// A fetcher that may reach 127.0.0.1 (the test server) and trusts the test certificate.
fn allowed(s: &Setup, resolver: Arc<TableResolver>, tweak: impl FnOnce(&mut FetchConfig)) -> Fetcher {
    let mut cfg = FetchConfig {
        allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        extra_ca_pem: Some(s.cert.clone()),
        total_timeout: Duration::from_secs(5),
        ..FetchConfig::default()
    };
    tweak(&mut cfg);
    Fetcher::new(cfg, resolver).unwrap()
}

fn outcome(f: &Fetcher, label: &str) -> u64 {
    f.outcomes().with_label_values(&[label]).get()
}

#[tokio::test]
async fn fetches_a_json_document_from_the_checked_address() {
    let s = setup();
    let r = TableResolver::new();
    r.set("docs.test", &["127.0.0.1"]);
    let f = allowed(&s, r.clone(), |_| {});
    s.server.set(
        "/client.json",
        Answer::ok("application/json; charset=utf-8", DOC.as_bytes(), &["Cache-Control: max-age=600"]),
    );
    let url = format!("https://docs.test:{}/client.json", s.server.addr.port());
    let got = f.fetch(&url).await.unwrap();
    assert_eq!(got.body, DOC.as_bytes());
    assert_eq!(got.cache_control.as_deref(), Some("max-age=600"));
    assert_eq!(got.peer, s.server.addr);
    assert_eq!(s.server.requests_for("/client.json"), 1);
    assert_eq!(r.calls.load(Ordering::SeqCst), 1);
    assert_eq!(outcome(&f, "ok"), 1);
}

/// No special-use address is ever connected to, whatever its spelling: literal, decimal,
/// octal, hexadecimal, IPv4-mapped, NAT64, or behind a name.
#[tokio::test]
async fn special_use_addresses_are_never_connected_to() {
    let s = setup();
    let port = s.server.addr.port();
    let r = TableResolver::new();
    let f =
        Fetcher::new(FetchConfig { extra_ca_pem: Some(s.cert.clone()), ..FetchConfig::default() }, r.clone()).unwrap();
    let literals = [
        "127.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::1]",
        "[::]",
        "0.0.0.0",
        "[64:ff9b::7f00:1]",
        "[::127.0.0.1]",
        "169.254.169.254",
        "[::ffff:169.254.169.254]",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "192.0.0.1",
        "198.18.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "[fe80::1]",
        "[fc00::1]",
        "[fec0::1]",
        "[ff02::1]",
        "[2001:db8::1]",
        "[2002:7f00:1::]",
        "[2001::1]",
    ];
    for host in literals {
        let url = format!("https://{host}:{port}/client.json");
        let e = f.fetch(&url).await.unwrap_err();
        assert!(matches!(e, FetchError::ForbiddenAddress(_)), "{url}: {e:?}");
    }
    // The same addresses behind names, one at a time and hidden among public ones.
    let answers = ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.1.1", "169.254.169.254", "fd00::5", "100.100.100.200"];
    for (i, a) in answers.iter().enumerate() {
        let name = format!("n{i}.test");
        r.set(&name, &[a]);
        let e = f.fetch(&format!("https://{name}:{port}/client.json")).await.unwrap_err();
        assert!(matches!(e, FetchError::ForbiddenAddress(_)), "{name} -> {a}: {e:?}");
        let mixed = format!("m{i}.test");
        r.set(&mixed, &["93.184.215.14", a]);
        let e = f.fetch(&format!("https://{mixed}:{port}/client.json")).await.unwrap_err();
        assert!(matches!(e, FetchError::ForbiddenAddress(_)), "{mixed} -> {a}: {e:?}");
    }
    assert_eq!(f.connect_attempts(), 0);
    assert_eq!(s.server.connects(), 0, "a forbidden address was connected to");
    assert_eq!(outcome(&f, "forbidden_address"), (literals.len() + 2 * answers.len()) as u64);
}

/// The resolver is asked once per fetch and the socket goes to the address it answered: a
/// name that answers an allowed address, then a forbidden one, never reaches the second.
#[tokio::test]
async fn dns_rebinding_cannot_redirect_a_fetch() {
    let s = setup();
    let port = s.server.addr.port();
    // A second listener on 127.0.0.2, same port: the rebinding target.
    let (cert2, key2) = support::certs::self_signed("docs.test");
    let Ok(_) = std::net::TcpListener::bind(("127.0.0.2", port)).map(drop) else {
        panic!("127.0.0.2:{port} is taken");
    };
    let target = DocServer::start(&format!("127.0.0.2:{port}"), Some((&cert2, &key2)));
    target.set("/client.json", Answer::json(DOC));
    let r = TableResolver::new();
    r.set_sequence("docs.test", &[&["127.0.0.1"], &["127.0.0.2"]]);
    let f = allowed(&s, r.clone(), |_| {});
    let url = format!("https://docs.test:{port}/client.json");
    let got = f.fetch(&url).await.unwrap();
    assert_eq!(got.peer.ip().to_string(), "127.0.0.1");
    assert_eq!(r.calls.load(Ordering::SeqCst), 1, "resolved once");
    // The next fetch resolves again and is refused before connecting.
    assert!(matches!(f.fetch(&url).await, Err(FetchError::ForbiddenAddress("loopback"))));
    assert_eq!(target.connects(), 0, "the rebound address was connected to");
    assert_eq!(f.connect_attempts(), 1);
}

#[tokio::test]
async fn answers_that_are_not_a_small_json_200_are_refused() {
    let s = setup();
    let port = s.server.addr.port();
    // The redirect target: another allowed listener that must see nothing.
    let (cert2, key2) = support::certs::self_signed("docs.test");
    let elsewhere = DocServer::start("127.0.0.1:0", Some((&cert2, &key2)));
    let big = format!(r#"{{"pad":"{}"}}"#, "a".repeat(6000));
    let mut chunked = String::new();
    for _ in 0..6 {
        chunked.push_str(&format!("3e8\r\n{}\r\n", "a".repeat(1000)));
    }
    chunked.push_str("0\r\n\r\n");
    let cases: Vec<(&str, Answer, FetchError)> = vec![
        (
            "/redirect",
            Answer::raw(
                &format!(
                    "HTTP/1.1 302 Found\r\nLocation: https://docs.test:{}/client.json\r\nContent-Length: 0",
                    elsewhere.addr.port()
                ),
                b"",
            ),
            FetchError::Redirect,
        ),
        (
            "/moved",
            Answer::raw("HTTP/1.1 301 Moved Permanently\r\nLocation: /client.json\r\nContent-Length: 0", b""),
            FetchError::Redirect,
        ),
        ("/missing", Answer::raw("HTTP/1.1 404 Not Found\r\nContent-Length: 0", b""), FetchError::Status(404)),
        ("/html", Answer::ok("text/html", b"<html></html>", &[]), FetchError::MediaType),
        ("/untyped", Answer::raw("HTTP/1.1 200 OK\r\nContent-Length: 2", b"{}"), FetchError::MediaType),
        ("/big", Answer::ok("application/json", big.as_bytes(), &[]), FetchError::TooLarge),
        (
            "/big-chunked",
            Answer::raw(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked",
                chunked.as_bytes(),
            ),
            FetchError::TooLarge,
        ),
        (
            "/lying-length",
            Answer::raw("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99999999", b"{}"),
            FetchError::TooLarge,
        ),
    ];
    let r = TableResolver::new();
    r.set("docs.test", &["127.0.0.1"]);
    let f = allowed(&s, r, |_| {});
    for (path, answer, want) in cases {
        s.server.set(path, answer);
        let got = f.fetch(&format!("https://docs.test:{port}{path}")).await;
        assert_eq!(got.as_ref().map(|_| ()), Err(&want), "{path}");
    }
    assert_eq!(elsewhere.connects(), 0, "a redirect was followed");
    assert_eq!(outcome(&f, "redirect"), 2);
    assert_eq!(outcome(&f, "too_large"), 3);
    assert_eq!(outcome(&f, "media_type"), 2);
}

#[tokio::test]
async fn slow_bodies_and_dead_hosts_time_out() {
    let s = setup();
    let port = s.server.addr.port();
    let mut slow = Answer::json(DOC);
    slow.body_delay = Duration::from_secs(3);
    s.server.set("/slow", slow);
    let r = TableResolver::new();
    r.set("docs.test", &["127.0.0.1"]);
    let f = allowed(&s, r.clone(), |c| c.total_timeout = Duration::from_millis(400));
    let started = std::time::Instant::now();
    assert_eq!(f.fetch(&format!("https://docs.test:{port}/slow")).await.map(|_| ()), Err(FetchError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // Nobody listens: a connection error, not a hang.
    let dead = support::free_port();
    assert_eq!(f.fetch(&format!("https://docs.test:{dead}/client.json")).await.map(|_| ()), Err(FetchError::Connect));
}

#[tokio::test]
async fn scheme_and_tls_rules() {
    let s = setup();
    let port = s.server.addr.port();
    let r = TableResolver::new();
    r.set("docs.test", &["127.0.0.1"]);
    r.set("other.test", &["127.0.0.1"]);
    r.set("public.test", &["93.184.215.14"]);
    let f = allowed(&s, r.clone(), |_| {});
    // http: refused unless loopback development is allowed, and then only to loopback.
    assert_eq!(f.fetch(&format!("http://docs.test:{port}/client.json")).await.map(|_| ()), Err(FetchError::Scheme));
    let dev = allowed(&s, r.clone(), |c| c.allow_http_loopback = true);
    assert_eq!(dev.fetch("http://public.test/client.json").await.map(|_| ()), Err(FetchError::Scheme));
    for bad in ["ftp://docs.test/x", "file:///etc/passwd", "gopher://docs.test/"] {
        assert_eq!(f.fetch(bad).await.map(|_| ()), Err(FetchError::Scheme), "{bad}");
    }
    assert_eq!(s.server.connects(), 0);
    assert_eq!(dev.connect_attempts() + f.connect_attempts(), 0);
    // The certificate must be valid for the URL's host (the test CA is trusted).
    assert_eq!(f.fetch(&format!("https://other.test:{port}/client.json")).await.map(|_| ()), Err(FetchError::Tls));
    // Without the test CA the certificate is not trusted at all.
    let untrusting = Fetcher::new(
        FetchConfig { allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()], ..FetchConfig::default() },
        r.clone(),
    )
    .unwrap();
    assert_eq!(
        untrusting.fetch(&format!("https://docs.test:{port}/client.json")).await.map(|_| ()),
        Err(FetchError::Tls)
    );
    // An unknown name.
    assert_eq!(f.fetch("https://nxdomain.test/client.json").await.map(|_| ()), Err(FetchError::Dns));
}

#[tokio::test]
async fn per_host_rate_and_concurrency() {
    let s = setup();
    let port = s.server.addr.port();
    let r = TableResolver::new();
    r.set("docs.test", &["127.0.0.1"]);
    let f = allowed(&s, r.clone(), |c| c.per_host_per_minute = 2);
    let url = format!("https://docs.test:{port}/client.json");
    assert!(f.fetch(&url).await.is_ok());
    assert!(f.fetch(&url).await.is_ok());
    assert_eq!(f.fetch(&url).await.map(|_| ()), Err(FetchError::RateLimited));
    assert_eq!(s.server.requests_for("/client.json"), 2);

    let mut slow = Answer::json(DOC);
    slow.body_delay = Duration::from_millis(1500);
    s.server.set("/slow", slow);
    let f = Arc::new(allowed(&s, r.clone(), |c| c.per_host_concurrency = 1));
    let first = {
        let f = f.clone();
        let url = format!("https://docs.test:{port}/slow");
        tokio::spawn(async move { f.fetch(&url).await.map(|_| ()) })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.server.requests_for("/slow") == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(f.fetch(&url).await.map(|_| ()), Err(FetchError::Busy));
    assert_eq!(first.await.unwrap(), Ok(()));
    assert!(f.fetch(&url).await.is_ok(), "the slot is released");
    assert_eq!(outcome(&f, "busy"), 1);
}
