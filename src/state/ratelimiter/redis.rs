//! Shared counters in Redis: one round trip per request. A Lua script checks every bucket
//! narrow to wide and, only when all admit the request, increments them (setting the
//! window's TTL on a new key); a refused request creates and changes no key. Keys therefore
//! exist only for admitted requests and expire with their window: Redis memory is bounded by
//! the admitted requests per window (at most three keys each).
//!
//! `redis_timeout_ms` bounds the whole call, connection (re)establishment included. A
//! connection is established in a background task, so a call that gives up does not abandon
//! the attempt: the next call finds the connection ready. Attempts are throttled so a dead
//! Redis costs one attempt per second, not one per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::ratelimit::{Admission, Bucket};

/// KEYS: the buckets, narrowest first. ARGV: limit and TTL (seconds) of each, in turn.
/// Returns `{0, 0}` when admitted (and counted), `{i, ttl}` when bucket `i` (1-based) refused.
const SCRIPT: &str = r#"
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[2 * i - 1]) then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then ttl = tonumber(ARGV[2 * i]) end
    return {i, ttl}
  end
end
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 or redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, tonumber(ARGV[2 * i])) end
end
return {0, 0}
"#;

const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Longest a background connection attempt may take, whatever the per-call budget.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct BackendError(pub String);

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Shared {
    conn: RwLock<Option<(String, ConnectionManager)>>,
    connecting: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` of the last connection attempt.
    last_attempt_ms: AtomicU64,
    /// Notified when an attempt ends (either way).
    attempt_done: tokio::sync::Notify,
}

pub struct RedisLimiter {
    shared: Arc<Shared>,
    script: redis::Script,
}

impl Default for RedisLimiter {
    fn default() -> Self {
        RedisLimiter::new()
    }
}

impl RedisLimiter {
    pub fn new() -> RedisLimiter {
        RedisLimiter {
            shared: Arc::new(Shared {
                conn: RwLock::new(None),
                connecting: AtomicBool::new(false),
                started: Instant::now(),
                last_attempt_ms: AtomicU64::new(u64::MAX),
                attempt_done: tokio::sync::Notify::new(),
            }),
            script: redis::Script::new(SCRIPT),
        }
    }

    fn current(&self, url: &str) -> Option<ConnectionManager> {
        let g = self.shared.conn.read().unwrap_or_else(|p| p.into_inner());
        g.as_ref().filter(|(u, _)| u == url).map(|(_, c)| c.clone())
    }

    /// The connection for `url`, starting a (throttled) background attempt when there is
    /// none and waiting for it. Callers bound the wait.
    async fn connection(&self, url: &str) -> Result<ConnectionManager, BackendError> {
        if let Some(c) = self.current(url) {
            return Ok(c);
        }
        let s = &self.shared;
        let notified = s.attempt_done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(c) = self.current(url) {
            // An attempt finished between the first look and `enable`.
            return Ok(c);
        }
        if !s.connecting.load(Ordering::Acquire) {
            let now = s.started.elapsed().as_millis() as u64;
            let last = s.last_attempt_ms.load(Ordering::Acquire);
            if last != u64::MAX && now.saturating_sub(last) < RECONNECT_EVERY.as_millis() as u64 {
                return Err(BackendError("not connected (next attempt within 1s)".into()));
            }
            if s.connecting.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                s.last_attempt_ms.store(now, Ordering::Release);
                let client = match redis::Client::open(url) {
                    Ok(c) => c,
                    Err(e) => {
                        s.connecting.store(false, Ordering::Release);
                        return Err(BackendError(format!("bad redis_url: {}", crate::redact::redact(&e.to_string()))));
                    }
                };
                let shared = s.clone();
                let url = url.to_string();
                tokio::spawn(async move {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(CONNECT_TIMEOUT))
                        .set_number_of_retries(1)
                        .set_max_delay(Duration::from_millis(500));
                    let made =
                        tokio::time::timeout(CONNECT_TIMEOUT, ConnectionManager::new_with_config(client, config)).await;
                    match made {
                        Ok(Ok(mgr)) => {
                            *shared.conn.write().unwrap_or_else(|p| p.into_inner()) = Some((url, mgr));
                        }
                        Ok(Err(e)) => tracing::debug!(
                            "rate limit: Redis connection failed: {}",
                            crate::redact::redact(&e.to_string())
                        ),
                        Err(_) => tracing::debug!("rate limit: Redis connection timed out"),
                    }
                    shared.connecting.store(false, Ordering::Release);
                    shared.attempt_done.notify_waiters();
                });
            }
        }
        notified.await;
        self.current(url).ok_or_else(|| BackendError("connect failed".into()))
    }

    /// Check and count one request (see the module doc). `timeout` bounds the whole call.
    pub async fn admit(
        &self,
        url: &str,
        prefix: &str,
        buckets: &[Bucket],
        timeout: Duration,
    ) -> Result<Admission, BackendError> {
        match tokio::time::timeout(timeout, self.admit_unbounded(url, prefix, buckets)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError(format!("no answer within {}ms", timeout.as_millis()))),
        }
    }

    async fn admit_unbounded(&self, url: &str, prefix: &str, buckets: &[Bucket]) -> Result<Admission, BackendError> {
        let mut conn = self.connection(url).await?;
        let mut inv = self.script.prepare_invoke();
        for b in buckets {
            inv.key(format!("{prefix}:rl:{}:{}:{}", b.kind.as_str(), b.key, b.window));
            inv.arg(b.limit.requests);
            inv.arg(b.remaining_secs.max(1));
        }
        let res: Vec<i64> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BackendError(format!("script failed: {}", crate::redact::redact(&e.to_string()))))?;
        match res.as_slice() {
            [0, _] => Ok(Admission::Admitted),
            [i, ttl] if *i >= 1 && (*i as usize) <= buckets.len() => {
                Ok(Admission::Refused { index: *i as usize - 1, reset_secs: (*ttl).max(0) as u64 })
            }
            _ => Err(BackendError("unexpected script reply".into())),
        }
    }
}
