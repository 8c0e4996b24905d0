//! Shared counters in Redis: one round trip per request (a Lua script increments every
//! bucket and reads its TTL atomically). The connection is created lazily and re-created
//! when it fails; attempts are throttled so a dead Redis costs one fast failure per second,
//! not one timeout per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Bucket;

const SCRIPT: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, tonumber(ARGV[i])) end
  local ttl = redis.call('TTL', key)
  if ttl < 0 then redis.call('EXPIRE', key, tonumber(ARGV[i])); ttl = tonumber(ARGV[i]) end
  out[#out + 1] = n
  out[#out + 1] = ttl
end
return out
"#;

const RECONNECT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct BackendError(pub String);

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct RedisLimiter {
    conn: RwLock<Option<(String, ConnectionManager)>>,
    script: redis::Script,
    started: Instant,
    /// Milliseconds since `started` of the last connection attempt.
    last_attempt_ms: AtomicU64,
}

impl Default for RedisLimiter {
    fn default() -> Self {
        RedisLimiter::new()
    }
}

impl RedisLimiter {
    pub fn new() -> RedisLimiter {
        RedisLimiter {
            conn: RwLock::new(None),
            script: redis::Script::new(SCRIPT),
            started: Instant::now(),
            last_attempt_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn current(&self, url: &str) -> Option<ConnectionManager> {
        let g = self.conn.read().unwrap_or_else(|p| p.into_inner());
        g.as_ref().filter(|(u, _)| u == url).map(|(_, c)| c.clone())
    }

    async fn connection(&self, url: &str, timeout: Duration) -> Result<ConnectionManager, BackendError> {
        if let Some(c) = self.current(url) {
            return Ok(c);
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_attempt_ms.load(Ordering::Acquire);
        if last != u64::MAX && now.saturating_sub(last) < RECONNECT_EVERY.as_millis() as u64 {
            return Err(BackendError("not connected (next attempt within 1s)".into()));
        }
        self.last_attempt_ms.store(now, Ordering::Release);
        let client = redis::Client::open(url).map_err(|e| BackendError(format!("bad redis_url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mgr = tokio::time::timeout(timeout.max(Duration::from_millis(200)) * 2, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| BackendError("connect timed out".into()))?
            .map_err(|e| BackendError(format!("connect failed: {e}")))?;
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some((url.to_string(), mgr.clone()));
        Ok(mgr)
    }

    /// Increment every bucket; (count, seconds to reset) per bucket.
    pub async fn incr(
        &self,
        url: &str,
        prefix: &str,
        buckets: &[Bucket],
        timeout: Duration,
    ) -> Result<Vec<(u64, u64)>, BackendError> {
        let mut conn = self.connection(url, timeout).await?;
        let mut inv = self.script.prepare_invoke();
        for b in buckets {
            inv.key(format!("{prefix}:rl:{}:{}:{}", b.kind.as_str(), b.key, b.window));
            inv.arg(b.remaining_secs.max(1));
        }
        let res: Vec<i64> = match tokio::time::timeout(timeout, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(BackendError(format!("script failed: {e}"))),
            Err(_) => return Err(BackendError(format!("no answer within {}ms", timeout.as_millis()))),
        };
        if res.len() != buckets.len() * 2 {
            return Err(BackendError("unexpected script reply".into()));
        }
        Ok(res.chunks(2).map(|c| (c[0].max(0) as u64, c[1].max(0) as u64)).collect())
    }
}
