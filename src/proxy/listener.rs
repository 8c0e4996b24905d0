//! The public listeners' connection handling, in front of Pingora's HTTP/1 session loop:
//! a cap on open connections and a whole-head deadline, and JSON answers for heads the
//! gateway refuses before Pingora parses them.
//!
//! Why: Pingora bounds each *read* of a request head (60 s), not the head as a whole, and
//! keeps reused keep-alive connections open without a deadline; 2,000 connections each
//! holding a partial header held ~87 KB apiece, and a header trickled one line every 25 s was
//! still accepted after 75 s. Pingora also answers unparsable heads itself with an empty 400.
//! So for HTTP/1 this wrapper reads each request head first — with an idle deadline before the
//! first byte and `[server] header_timeout_ms` from the first byte (from the accept for the
//! first request) — parses it with the same parser Pingora uses (httparse), answers 408 / 431 /
//! 400 JSON itself, and hands a complete head to Pingora as already-read bytes. HTTP/2 (ALPN
//! `h2`) goes to `h2.rs`: Pingora's session per stream, bounded by the h2 options in `server.rs`
//! and a per-connection cap on streams the client abandons after acceptance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::errors::GatewayError;
use crate::telemetry::Metrics;

/// Pingora's limit on header lines (`MAX_HEADERS`); more is a 431 here.
const MAX_HEADERS: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From the first byte of a head (from the accept, for the first request) to its end.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for the next request's first byte.
    pub idle_timeout: Duration,
    /// Largest request head accepted (431 beyond).
    pub max_head_bytes: usize,
    /// Open connections; 0 = no cap.
    pub max_connections: usize,
}

pub struct GatewayApp<A> {
    pub inner: Arc<A>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    open: AtomicUsize,
}

impl<A> GatewayApp<A> {
    pub fn new(inner: A, limits: Limits, metrics: Arc<Metrics>) -> Self {
        GatewayApp { inner: Arc::new(inner), limits, metrics, open: AtomicUsize::new(0) }
    }
}

/// One open connection, counted while it lives.
struct Open<'a>(&'a AtomicUsize, &'a Metrics);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.connections_open.dec();
    }
}

/// Why no complete head was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadError {
    /// Closed, idle past the deadline before any byte, or shutting down: close quietly.
    Quiet,
    Timeout,
    TooLarge,
    Malformed,
}

/// What httparse makes of the bytes so far.
fn parse_state(buf: &[u8]) -> Result<bool, HeadError> {
    // Uninitialized slots: zeroing 256 headers (8 KiB) cost more than parsing a typical head.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(_)) if framing_refused(&req) => Err(HeadError::Malformed),
        Ok(httparse::Status::Complete(_)) => Ok(true),
        Ok(httparse::Status::Partial) => Ok(false),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        // Pingora retries these with the target percent-escaped (non-ASCII request targets):
        // leave them to it, the gateway's own target rules judge the result — but only once the
        // whole head is here, so the deadline and the size cap still bound it.
        Err(httparse::Error::Token | httparse::Error::Version) => Ok(buf.windows(4).any(|w| w == b"\r\n\r\n")),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// A complete head the gateway refuses before Pingora sees it (Pingora would answer these with
/// an empty 400 or 405): `CONNECT` (authority-form; the gateway is no tunnel, RFC 9112 §3.2.3),
/// a `Content-Length` that is not one number (several differing values, or not digits), and
/// `Content-Length` beside `Transfer-Encoding` (RFC 9112 §6.1: the framing a smuggler relies on).
fn framing_refused(req: &httparse::Request<'_, '_>) -> bool {
    if req.method.is_some_and(|m| m.eq_ignore_ascii_case("CONNECT")) {
        return true;
    }
    let mut length: Option<&[u8]> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 §8.6: a list of identical values is one value.
            for v in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || length.is_some_and(|l| l != v) {
                    return true;
                }
                length = Some(v);
            }
        }
    }
    chunked && length.is_some()
}

/// Read until `buf` holds a complete request head.
async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    limits: &Limits,
    first_deadline: Instant,
    shutdown: &mut ShutdownWatch,
) -> Result<(), HeadError> {
    let mut deadline = first_deadline;
    loop {
        if !buf.is_empty() {
            if parse_state(buf)? {
                return Ok(());
            }
            if buf.len() >= limits.max_head_bytes {
                return Err(HeadError::TooLarge);
            }
        }
        let was_empty = buf.is_empty();
        let read = tokio::select! {
            // The read first: when the bytes are already there the shutdown watch is never
            // polled, so no waiter is registered on it and removed again (once per request).
            biased;
            r = tokio::time::timeout_at(deadline, stream.read_buf(buf)) => r,
            _ = shutdown.changed(), if was_empty => return Err(HeadError::Quiet),
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadError::Quiet),
            Ok(Ok(_)) => {
                if was_empty {
                    // The head's clock runs from its first byte.
                    deadline = deadline.min(Instant::now() + limits.header_timeout);
                }
            }
            Err(_) if buf.is_empty() => return Err(HeadError::Quiet),
            Err(_) => return Err(HeadError::Timeout),
        }
    }
}

/// The JSON answer for a refused head, written straight to the connection.
async fn answer(stream: &mut Stream, err: GatewayError) {
    let request_id = crate::core::request_id::generate();
    let body = err.body(&request_id);
    let reason = match err.status() {
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        err.status(),
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await
    };
    // A peer that does not read does not hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// A persistent session that already carries pipelined bytes: Pingora parses them itself (they
/// are in hand, so no deadline is needed for what has arrived). The settings expose no getter,
/// so their `Debug` form is read; `tests/request_view.rs` pipelining tests guard this.
fn has_pipelined_prefix(settings: &HttpPersistentSettings) -> bool {
    // Read once per request (profiled): the probe stops the formatting at the field, so neither
    // a string of the whole settings nor the Debug form of the carried bytes is built.
    let mut probe = FieldProbe::default();
    let _ = std::fmt::write(&mut probe, format_args!("{settings:?}"));
    match probe.found {
        Some(found) => found,
        // The Debug form did not read as expected: look at the whole of it.
        None => format!("{settings:?}").contains("pipelined_prefix: Some"),
    }
}

/// A `fmt::Write` that reads `pipelined_prefix: Some` / `: None` off a `Debug` form and stops.
#[derive(Default)]
struct FieldProbe {
    seen_name: bool,
    after: [u8; 6],
    len: usize,
    found: Option<bool>,
}

impl std::fmt::Write for FieldProbe {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        const NAME: &str = "pipelined_prefix";
        let mut rest = s;
        if !self.seen_name {
            // `DebugStruct` writes a field's name as one piece; most pieces are short (`: `,
            // `None`), so a plain window scan is cheaper here than a substring searcher's set-up.
            let at = if s.len() < NAME.len() {
                None
            } else {
                s.as_bytes().windows(NAME.len()).position(|w| w == NAME.as_bytes())
            };
            let Some(at) = at else { return Ok(()) };
            self.seen_name = true;
            rest = &s[at + NAME.len()..];
        }
        for &b in rest.as_bytes() {
            self.after[self.len] = b;
            self.len += 1;
            if self.len == self.after.len() {
                self.found = match &self.after {
                    b": Some" => Some(true),
                    b": None" => Some(false),
                    _ => None,
                };
                return Err(std::fmt::Error);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<A> ServerApp for GatewayApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let accepted = Instant::now();
        let n = self.open.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections_open.inc();
        let _open = Open(&self.open, &self.metrics);
        if self.limits.max_connections > 0 && n >= self.limits.max_connections {
            self.metrics.connections_refused.inc();
            if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                answer(&mut stream, GatewayError::TooManyConnections).await;
            }
            return None;
        }
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            super::h2::serve(self.inner.clone(), stream, shutdown).await;
            return None;
        }
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        // One receiver for the connection: it ends the connection the first time it sees the
        // shutdown, so it never has to see a change twice.
        let mut watch = shutdown.clone();
        loop {
            let carried = settings.as_ref().is_some_and(has_pipelined_prefix);
            let mut prefix = None;
            if !carried {
                let mut buf = BytesMut::with_capacity(1024);
                let deadline = if first {
                    accepted + self.limits.header_timeout
                } else {
                    Instant::now() + self.limits.idle_timeout
                };
                match read_head(&mut stream, &mut buf, &self.limits, deadline, &mut watch).await {
                    Ok(()) => prefix = Some(buf),
                    Err(HeadError::Quiet) => return None,
                    Err(e) => {
                        let (kind, err) = match e {
                            HeadError::Timeout => ("timeout", GatewayError::HeaderTimeout),
                            HeadError::TooLarge => ("too_large", GatewayError::MalformedRequest { status: 431 }),
                            _ => ("malformed", GatewayError::MalformedRequest { status: 400 }),
                        };
                        self.metrics.head_errors.with_label_values(&[kind]).inc();
                        answer(&mut stream, err).await;
                        return None;
                    }
                }
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => {
                    session.set_keepalive(if *shutdown.borrow() {
                        None
                    } else {
                        Some(self.limits.idle_timeout.as_secs().max(1))
                    });
                }
            }
            if let Some(p) = prefix {
                session.set_pipelined_prefix(p);
            }
            first = false;
            let reused = self.inner.process_new_http(session, shutdown).await?;
            let (s, next) = reused.consume();
            stream = s;
            settings = next;
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_states() {
        assert_eq!(parse_state(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(true));
        assert_eq!(parse_state(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(false));
        assert_eq!(parse_state(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), Err(HeadError::Malformed));
        // A target Pingora escapes itself: handed over only when the head is complete.
        assert_eq!(parse_state(b"GET /a b HTTP/1.1\r\nX: y\r\n"), Ok(false));
        assert_eq!(parse_state(b"GET /a b HTTP/1.1\r\nX: y\r\n\r\n"), Ok(true));
        let many: String = (0..300).map(|i| format!("x{i}: y\r\n")).collect();
        assert_eq!(parse_state(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()), Err(HeadError::TooLarge));
    }

    #[test]
    fn framing_a_smuggler_relies_on_is_refused_here() {
        let refused = [
            &b"CONNECT idp:443 HTTP/1.1\r\nHost: idp:443\r\n\r\n"[..],
            b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for head in refused {
            assert_eq!(parse_state(head), Err(HeadError::Malformed), "{}", String::from_utf8_lossy(head));
        }
        let kept = [
            &b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"[..],
            b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST /r HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for head in kept {
            assert_eq!(parse_state(head), Ok(true), "{}", String::from_utf8_lossy(head));
        }
    }

    #[tokio::test]
    async fn pipelined_prefix_is_read_off_the_settings() {
        let session = ServerSession::new_http1(Box::new(tokio_test::io::Builder::new().build()));
        let mut settings = HttpPersistentSettings::for_session(&session);
        assert!(!has_pipelined_prefix(&settings));
        // Bytes that spell the other answer do not confuse it: the field is read, not searched.
        settings.set_pipelined_prefix(BytesMut::from(&b"GET /pipelined_prefix: None HTTP/1.1\r\n"[..]));
        assert!(has_pipelined_prefix(&settings));
        let mut probe = FieldProbe::default();
        let _ = std::fmt::write(&mut probe, format_args!("{settings:?}"));
        assert_eq!(probe.found, Some(true), "the fast path decided: {settings:?}");
        let settings = HttpPersistentSettings::for_session(&session);
        let mut probe = FieldProbe::default();
        let _ = std::fmt::write(&mut probe, format_args!("{settings:?}"));
        assert_eq!(probe.found, Some(false), "the fast path decided: {settings:?}");
    }
}
