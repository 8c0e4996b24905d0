//! Registration rate limits on the `dcr` scope: per client IP, per client network prefix,
//! and global; fixed windows aligned to the Unix epoch, so every replica and Redis agree on
//! where a window starts. In-process counters by default; a shared Redis when configured,
//! with a local fallback when Redis cannot be reached.

mod local;
mod policy;
mod redis_backend;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

pub use local::LocalLimiter;
pub use policy::{Backend, Limit, LimitKind, OnBackendError, RateLimitPolicy};
pub use redis_backend::RedisLimiter;

/// One counter a request increments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub kind: LimitKind,
    /// Stable key without the window: `ip:203.0.113.7`, `net:203.0.113.0/24`, `all`.
    pub key: String,
    pub limit: Limit,
    /// Index of the current window since the epoch.
    pub window: u64,
    /// Seconds until the current window ends.
    pub remaining_secs: u64,
}

/// The buckets a request from `ip` counts against at `now_secs` (pure).
pub fn buckets(policy: &RateLimitPolicy, ip: IpAddr, now_secs: u64) -> Vec<Bucket> {
    policy
        .limits()
        .map(|(kind, limit)| {
            let key = match kind {
                LimitKind::Ip => format!("ip:{ip}"),
                LimitKind::Prefix => {
                    let len = match ip {
                        IpAddr::V4(_) => policy.ipv4_prefix,
                        IpAddr::V6(_) => policy.ipv6_prefix,
                    };
                    let net = IpNet::new(ip, len).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(ip));
                    format!("net:{net}")
                }
                LimitKind::Global => "all".to_string(),
            };
            let w = limit.window_seconds.max(1);
            let window = now_secs / w;
            let remaining_secs = (window + 1) * w - now_secs;
            Bucket { kind, key, limit, window, remaining_secs }
        })
        .collect()
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allow,
    Limited { kind: LimitKind, retry_after_secs: u64 },
    /// Redis unreachable and `on_backend_error = "fail_closed"`.
    BackendUnavailable,
}

/// Given the count each bucket reached (after this request) and its seconds to reset,
/// the first exceeded limit, if any.
pub fn decide(buckets: &[Bucket], counts: &[(u64, u64)]) -> RateDecision {
    for (b, (count, reset)) in buckets.iter().zip(counts) {
        if *count > b.limit.requests {
            return RateDecision::Limited { kind: b.kind, retry_after_secs: (*reset).max(1) };
        }
    }
    RateDecision::Allow
}

/// Which backend answered, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Local,
    Redis,
    LocalFallback,
    FailOpen,
    FailClosed,
}

impl Answered {
    pub fn as_str(self) -> &'static str {
        match self {
            Answered::Local => "local",
            Answered::Redis => "redis",
            Answered::LocalFallback => "local_fallback",
            Answered::FailOpen => "fail_open",
            Answered::FailClosed => "fail_closed",
        }
    }
}

/// Counters that live across reloads; limits come from the snapshot on every call.
pub struct RateLimiter {
    local: LocalLimiter,
    redis: RedisLimiter,
    redis_down: AtomicBool,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new()
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl RateLimiter {
    pub fn new() -> RateLimiter {
        RateLimiter { local: LocalLimiter::new(), redis: RedisLimiter::new(), redis_down: AtomicBool::new(false) }
    }

    /// Count one request from `ip` and decide. Never fails: backend trouble is mapped to the
    /// configured fallback.
    pub async fn check(&self, policy: &RateLimitPolicy, ip: IpAddr) -> (RateDecision, Answered) {
        if !policy.enabled {
            return (RateDecision::Allow, Answered::Local);
        }
        let bs = buckets(policy, ip, now_secs());
        if bs.is_empty() {
            return (RateDecision::Allow, Answered::Local);
        }
        if policy.backend == Backend::Local {
            return (decide(&bs, &self.local.incr(&bs)), Answered::Local);
        }
        let timeout = Duration::from_millis(policy.redis_timeout_ms);
        match self.redis.incr(&policy.redis_url, &policy.key_prefix, &bs, timeout).await {
            Ok(counts) => {
                if self.redis_down.swap(false, Ordering::AcqRel) {
                    tracing::warn!("rate limit: Redis reachable again; shared counters back in use");
                }
                (decide(&bs, &counts), Answered::Redis)
            }
            Err(e) => {
                if !self.redis_down.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        fallback = ?policy.on_backend_error,
                        "rate limit: Redis unreachable ({e}); falling back until it returns"
                    );
                }
                match policy.on_backend_error {
                    OnBackendError::Local => (decide(&bs, &self.local.incr(&bs)), Answered::LocalFallback),
                    OnBackendError::FailOpen => (RateDecision::Allow, Answered::FailOpen),
                    OnBackendError::FailClosed => (RateDecision::BackendUnavailable, Answered::FailClosed),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RateLimitPolicy {
        RateLimitPolicy {
            per_ip: Some(Limit { requests: 2, window_seconds: 60 }),
            per_prefix: Some(Limit { requests: 3, window_seconds: 60 }),
            global: Some(Limit { requests: 100, window_seconds: 10 }),
            ..Default::default()
        }
    }

    #[test]
    fn buckets_are_keyed_and_windowed() {
        let bs = buckets(&policy(), "203.0.113.77".parse().unwrap(), 125);
        assert_eq!(bs[0].key, "ip:203.0.113.77");
        assert_eq!(bs[1].key, "net:203.0.113.0/24");
        assert_eq!(bs[2].key, "all");
        assert_eq!((bs[0].window, bs[0].remaining_secs), (2, 55));
        assert_eq!((bs[2].window, bs[2].remaining_secs), (12, 5));
        let v6 = buckets(&policy(), "2001:db8:1:2:3::1".parse().unwrap(), 0);
        assert_eq!(v6[1].key, "net:2001:db8:1::/56");
    }

    #[test]
    fn first_exceeded_limit_decides_with_its_reset() {
        let bs = buckets(&policy(), "198.51.100.1".parse().unwrap(), 0);
        assert_eq!(decide(&bs, &[(2, 60), (2, 60), (1, 10)]), RateDecision::Allow);
        assert_eq!(
            decide(&bs, &[(2, 60), (4, 33), (1, 10)]),
            RateDecision::Limited { kind: LimitKind::Prefix, retry_after_secs: 33 }
        );
    }

    #[tokio::test]
    async fn local_limits_per_ip_and_per_prefix() {
        let rl = RateLimiter::new();
        let p = policy();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(rl.check(&p, ip("203.0.113.1")).await.0, RateDecision::Allow);
        assert_eq!(rl.check(&p, ip("203.0.113.1")).await.0, RateDecision::Allow);
        assert!(matches!(rl.check(&p, ip("203.0.113.1")).await.0, RateDecision::Limited { kind: LimitKind::Ip, .. }));
        // Rotating inside the /24 does not escape the prefix limit (3 per window, 3 used).
        assert!(matches!(rl.check(&p, ip("203.0.113.2")).await.0, RateDecision::Limited { kind: LimitKind::Prefix, .. }));
        // Another network is unaffected.
        assert_eq!(rl.check(&p, ip("198.51.100.9")).await.0, RateDecision::Allow);
    }

    #[tokio::test]
    async fn unreachable_redis_falls_back_as_configured() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut p = policy();
        p.backend = Backend::Redis;
        p.redis_url = format!("redis://127.0.0.1:{port}/0");
        let rl = RateLimiter::new();
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(rl.check(&p, ip).await, (RateDecision::Allow, Answered::LocalFallback));
        p.on_backend_error = OnBackendError::FailOpen;
        assert_eq!(rl.check(&p, ip).await, (RateDecision::Allow, Answered::FailOpen));
        p.on_backend_error = OnBackendError::FailClosed;
        assert_eq!(rl.check(&p, ip).await, (RateDecision::BackendUnavailable, Answered::FailClosed));
    }

    #[test]
    fn validation_names_keys() {
        let mut p = policy();
        p.per_ip = Some(Limit { requests: 0, window_seconds: 0 });
        p.backend = Backend::Redis;
        p.redis_url = "http://x".into();
        let keys: Vec<String> = p.validate().into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&"rate_limit.per_ip.requests".to_string()));
        assert!(keys.contains(&"rate_limit.per_ip.window_seconds".to_string()));
        assert!(keys.contains(&"rate_limit.redis_url".to_string()));
    }
}
