//! SIGTERM drain. Pingora cancels every task when its runtimes shut down, so in-flight
//! requests survive SIGTERM only if we wait for them first: on SIGTERM we stop keeping
//! connections alive, wait until no request is in flight (bounded), and only then let
//! Pingora close the listeners and exit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Default)]
pub struct Drain {
    inflight: AtomicUsize,
    draining: AtomicBool,
}

/// Held by each request's context; counts it in flight until dropped.
pub struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drain {
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
}

pub struct DrainingSignalWatch {
    pub drain: Arc<Drain>,
    pub timeout: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingSignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::quit()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = term.recv() => {
                self.drain.draining.store(true, Ordering::Release);
                let start = Instant::now();
                tracing::info!(inflight = self.drain.inflight(), "SIGTERM: draining in-flight requests");
                while self.drain.inflight() > 0 && start.elapsed() < self.timeout {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = int.recv() => return ShutdownSignal::FastShutdown,
                    }
                }
                let left = self.drain.inflight();
                if left > 0 {
                    tracing::warn!(inflight = left, "drain timeout reached; remaining requests will be cut");
                } else {
                    tracing::info!(elapsed_ms = start.elapsed().as_millis() as u64, "drained");
                }
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}
