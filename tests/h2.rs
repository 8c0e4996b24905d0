//! HTTP/2 on the TLS listener: streams work, and a client that resets the streams the gateway
//! has accepted (rapid reset, CVE-2023-44487) is cut off after a bounded number of upstream
//! requests instead of hundreds per connection.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::upstream::Upstream;
use support::*;

/// The cap in `src/proxy/h2.rs` (`MAX_ABANDONED_STREAMS`).
const CAP: usize = 32;

fn h2_gateway(up: &Upstream) -> (Gateway, SocketAddr) {
    let (cert, key) = support::certs::self_signed("idp.example.com");
    let tls_port = free_port();
    let gw = GatewayBuilder::new(&up.origin())
        .network("trusted_proxies = []")
        .file("cert.pem", cert)
        .file("key.pem", key)
        .listen_extra(&format!(
            "https = [{{ address = \"127.0.0.1:{tls_port}\", cert = \"cert.pem\", key = \"key.pem\", h2 = true }}]"
        ))
        .start();
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()));
    (gw, addr)
}

type Conn = tokio::task::JoinHandle<Result<(), h2::Error>>;

/// An HTTP/2 client connection (ALPN h2, certificate not checked: the test's own).
async fn connect(addr: SocketAddr) -> (h2::client::SendRequest<bytes::Bytes>, Conn) {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x02h2").unwrap();
    let mut cfg = b.build().configure().unwrap();
    cfg.set_verify_hostname(false);
    let ssl = cfg.into_ssl("idp.example.com").unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut tls).connect().await.unwrap();
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]), "the listener offers h2");
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    (send, tokio::spawn(conn))
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://idp.example.com{path}")).body(()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn h2_streams_are_proxied_and_a_well_behaved_connection_stays_open() {
    let up = Upstream::start();
    let (_gw, addr) = h2_gateway(&up);
    runtime().block_on(async {
        let (mut send, conn) = connect(addr).await;
        // More requests than the abandon cap: completed streams do not count against it.
        for i in 0..(CAP + 20) {
            send = send.ready().await.unwrap_or_else(|e| panic!("stream {i}: {e}"));
            let (resp, _) = send.send_request(get("/authorize?x=1"), true).unwrap();
            let resp = resp.await.unwrap_or_else(|e| panic!("stream {i}: {e}"));
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            while let Some(chunk) = body.data().await {
                chunk.unwrap();
            }
        }
        drop(send);
        let _ = conn.await;
    });
    assert_eq!(up.count(), CAP + 20);
    assert_eq!(up.last().url, "/authorize?x=1");
}

#[test]
fn h2_client_resetting_accepted_streams_is_cut_off() {
    let up = Upstream::start();
    let (gw, addr) = h2_gateway(&up);
    let (sent, goaway) = runtime().block_on(async {
        let (mut send, conn) = connect(addr).await;
        let mut sent = 0usize;
        // Each stream is accepted and proxied (the upstream sees it), then reset by the client.
        for _ in 0..(CAP * 10) {
            send = match send.ready().await {
                Ok(s) => s,
                Err(_) => break,
            };
            let before = up.count();
            let Ok((resp, mut stream)) = send.send_request(get("/slow/200"), true) else { break };
            sent += 1;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while up.count() == before && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if up.count() == before {
                // Not proxied: the connection was shut before this stream was accepted.
                break;
            }
            stream.send_reset(h2::Reason::CANCEL);
            drop(resp);
        }
        let goaway = tokio::time::timeout(Duration::from_secs(10), conn).await;
        (sent, goaway)
    });
    let ended = goaway.expect("the gateway closed the connection").expect("connection task");
    let err = ended.expect_err("closed with GOAWAY, not cleanly");
    assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err}");
    assert!(sent <= CAP + 2, "{sent} streams accepted before the cut-off");
    assert!(up.count() <= CAP + 2, "{} upstream requests from one connection", up.count());
    assert!(up.count() >= CAP, "the streams were proxied before they were reset ({})", up.count());
    assert_eq!(gw.wait_metric("dcr_gateway_h2_abandoned_stream_closes_total", 1.0), 1.0);
}
