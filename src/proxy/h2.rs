//! HTTP/2 connections: Pingora's accept loop, plus a cap on streams the client abandons after
//! they were accepted.
//!
//! Why: h2 bounds streams reset *before* the server accepts them
//! (`max_pending_accept_reset_streams`), but a stream the gateway has accepted is proxied — an
//! upstream request is made — and a client that resets each one right after (the rapid-reset
//! pattern, CVE-2023-44487) made 700–1,000 upstream requests per TCP connection before h2's own
//! limits closed it. Here every accepted stream runs with its connection's [`Streams`] in a
//! task-local; the proxy's last hook reports a stream that ended with an error on the client's
//! side ([`stream_ended`]); past [`MAX_ABANDONED_STREAMS`] the connection is shut with GOAWAY
//! `ENHANCE_YOUR_CALM` and no further stream is dispatched.
//!
//! The loop otherwise does what Pingora's own does (`accept_downstream_sessions`, which is not
//! public): graceful GOAWAY on shutdown while the accepted streams finish, and a budget for
//! streams rejected at acceptance (Pingora's per-connection malformed budget, which its public
//! accept function does not carry across calls).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pingora::apps::HttpServerApp;
use pingora::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource};
use tokio::sync::Notify;

use crate::telemetry::Metrics;

/// Streams a client may abandon (reset, or fail on its side) per connection. A browser cancels a
/// few requests on navigation; a registration client needs a handful of streams in all.
pub const MAX_ABANDONED_STREAMS: usize = 32;
/// Streams rejected at acceptance (forbidden bytes in `:path`, conflicting lengths, bad
/// authority) per connection, as Pingora's own loop allows.
const MAX_REJECTED_STREAMS: usize = 32;

/// One HTTP/2 connection's count of abandoned streams.
pub struct Streams {
    abandoned: AtomicUsize,
    over: AtomicBool,
    limit: usize,
    wake: Notify,
}

impl Streams {
    fn new(limit: usize) -> Self {
        Streams { abandoned: AtomicUsize::new(0), over: AtomicBool::new(false), limit, wake: Notify::new() }
    }

    /// Count one abandoned stream; true when this one crossed the limit.
    fn abandon(&self) -> bool {
        let n = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.limit && !self.over.swap(true, Ordering::Relaxed) {
            self.wake.notify_one();
            return true;
        }
        false
    }
}

tokio::task_local! {
    static CONNECTION: Arc<Streams>;
}

/// The proxy's last hook, for every request: a stream that ended with an error on the client's
/// side counts against its HTTP/2 connection. Outside an HTTP/2 stream this does nothing.
pub fn stream_ended(error: Option<&Error>, metrics: &Metrics) {
    let Some(e) = error else { return };
    if e.esource() != &ErrorSource::Downstream {
        return;
    }
    let _ = CONNECTION.try_with(|c| {
        if c.abandon() {
            metrics.h2_connections_closed.inc();
        }
    });
}

/// Serve one HTTP/2 connection (ALPN `h2`) until it closes.
pub async fn serve<A>(app: Arc<A>, stream: Stream, shutdown: &ShutdownWatch)
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let Ok(mut conn) = handshake(stream, app.h2_options()).await else {
        return;
    };
    let streams = Arc::new(Streams::new(MAX_ABANDONED_STREAMS));
    let mut watch = shutdown.clone();
    let mut draining = false;
    let mut closing = false;
    let mut rejected = 0usize;
    loop {
        let accepted = tokio::select! {
            // Shutdown and the abandon limit first, so either is seen before the next stream.
            biased;
            _ = watch.changed(), if !draining && !closing => {
                // GOAWAY with the highest stream id: streams in flight finish, the codec is
                // driven below until the final GOAWAY is flushed.
                conn.graceful_shutdown();
                draining = true;
                continue;
            }
            _ = streams.wake.notified(), if !closing => {
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                closing = true;
                continue;
            }
            a = HttpSession::from_h2_conn(&mut conn, digest.clone()) => a,
        };
        match accepted {
            Err(_) | Ok(None) => return,
            Ok(Some(H2Accept::Rejected)) => {
                rejected += 1;
                if rejected > MAX_REJECTED_STREAMS {
                    return;
                }
            }
            // After GOAWAY for abuse no stream is served; dropping it resets it.
            Ok(Some(H2Accept::Session(_))) if closing => {}
            Ok(Some(H2Accept::Session(session))) => {
                let app = app.clone();
                let shutdown = shutdown.clone();
                let streams = streams.clone();
                tokio::spawn(CONNECTION.scope(streams, async move {
                    app.process_new_http(ServerSession::new_http2(session), &shutdown).await;
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_crossed_once() {
        let s = Streams::new(3);
        assert!(!s.abandon());
        assert!(!s.abandon());
        assert!(s.abandon());
        assert!(!s.abandon(), "the connection is closed once");
    }
}
