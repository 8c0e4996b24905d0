//! The registration rate limiter the proxy holds across reloads: in-process counters, or a
//! shared Redis with the configured fallback when it cannot be reached. The buckets, decisions
//! and counters themselves are pure (`crate::ratelimit`); this is the part with I/O, so it
//! lives in the state layer.

mod redis;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ratelimit::{
    buckets, decide, Answered, Backend, LocalLimiter, OnBackendError, RateClass, RateDecision, RateLimitPolicy,
    SketchCollector,
};
pub use redis::{BackendError, RedisLimiter};

/// Counters that live across reloads; limits come from the snapshot on every call.
pub struct RateLimiter {
    local: std::sync::Arc<LocalLimiter>,
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
        RateLimiter {
            local: std::sync::Arc::new(LocalLimiter::new()),
            redis: RedisLimiter::new(),
            redis_down: AtomicBool::new(false),
        }
    }

    /// A Prometheus collector of the local sketches' estimated false-positive ratio
    /// (`dcr_gateway_rate_limit_sketch_false_positive_ratio{limit}`), computed at scrape time.
    pub fn sketch_collector(&self) -> SketchCollector {
        SketchCollector::new(self.local.clone())
    }

    /// Check one request from `ip` and count it when admitted. Never fails: backend trouble
    /// is mapped to the configured fallback. `hosted`: the catalogued hosted client a
    /// registration is proven to come from (`crate::ratelimit::buckets`).
    pub async fn check(
        &self,
        policy: &RateLimitPolicy,
        ip: IpAddr,
        class: RateClass,
        hosted: Option<&str>,
    ) -> (RateDecision, Answered) {
        if !policy.enabled {
            return (RateDecision::Allow, Answered::Local);
        }
        let bs = buckets(policy, ip, class, hosted, now_secs());
        if bs.is_empty() {
            return (RateDecision::Allow, Answered::Local);
        }
        if policy.backend == Backend::Local {
            return (decide(&bs, self.local.admit(&bs)), Answered::Local);
        }
        let timeout = Duration::from_millis(policy.redis_timeout_ms);
        match self.redis.admit(&policy.redis_url, &policy.key_prefix, &bs, timeout).await {
            Ok(admission) => {
                if self.redis_down.swap(false, Ordering::AcqRel) {
                    tracing::warn!("rate limit: Redis reachable again; shared counters back in use");
                }
                (decide(&bs, admission), Answered::Redis)
            }
            Err(e) => {
                if !self.redis_down.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        fallback = ?policy.on_backend_error,
                        "rate limit: Redis unreachable ({e}); falling back until it returns"
                    );
                }
                match policy.on_backend_error {
                    OnBackendError::Local => (decide(&bs, self.local.admit(&bs)), Answered::LocalFallback),
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
    use crate::ratelimit::tests::{ip, policy};
    use crate::ratelimit::{Limit, LimitKind};

    #[tokio::test]
    async fn local_limits_per_ip_and_per_prefix() {
        let rl = RateLimiter::new();
        let p = policy();
        let m = RateClass::Main;
        assert_eq!(rl.check(&p, ip("203.0.113.1"), m, None).await.0, RateDecision::Allow);
        assert_eq!(rl.check(&p, ip("203.0.113.1"), m, None).await.0, RateDecision::Allow);
        assert!(matches!(
            rl.check(&p, ip("203.0.113.1"), m, None).await.0,
            RateDecision::Limited { kind: LimitKind::Ip, .. }
        ));
        // Refused requests did not count against the prefix: one more address fits (3 per window).
        assert_eq!(rl.check(&p, ip("203.0.113.2"), m, None).await.0, RateDecision::Allow);
        // Rotating inside the /24 does not escape the prefix limit (3 per window, 3 used).
        assert!(matches!(
            rl.check(&p, ip("203.0.113.3"), m, None).await.0,
            RateDecision::Limited { kind: LimitKind::Prefix, .. }
        ));
        // Another network is unaffected.
        assert_eq!(rl.check(&p, ip("198.51.100.9"), m, None).await.0, RateDecision::Allow);
    }

    #[tokio::test]
    async fn one_source_cannot_exhaust_the_global_bucket() {
        let rl = RateLimiter::new();
        let p = RateLimitPolicy {
            per_ip: Some(Limit { requests: 5, window_seconds: 3600 }),
            per_prefix: None,
            global: Some(Limit { requests: 20, window_seconds: 3600 }),
            ..Default::default()
        };
        for _ in 0..1000 {
            rl.check(&p, ip("203.0.113.66"), RateClass::Main, None).await;
        }
        // 5 admitted from the flooder; 15 left for everyone else.
        for i in 0..15u8 {
            assert_eq!(
                rl.check(&p, IpAddr::from([198, 51, 100, i]), RateClass::Main, None).await.0,
                RateDecision::Allow
            );
        }
        assert!(matches!(
            rl.check(&p, ip("192.0.2.1"), RateClass::Main, None).await.0,
            RateDecision::Limited { kind: LimitKind::Global, .. }
        ));
    }

    #[tokio::test]
    async fn unauthenticated_requests_have_their_own_buckets() {
        let rl = RateLimiter::new();
        let p = RateLimitPolicy {
            per_ip: None,
            per_prefix: None,
            global: Some(Limit { requests: 3, window_seconds: 3600 }),
            ..Default::default()
        };
        for i in 0..50u8 {
            rl.check(&p, IpAddr::from([203, 0, 113, i]), RateClass::Unauthenticated, None).await;
        }
        assert!(matches!(
            rl.check(&p, ip("203.0.113.1"), RateClass::Unauthenticated, None).await.0,
            RateDecision::Limited { .. }
        ));
        for _ in 0..3 {
            assert_eq!(rl.check(&p, ip("198.51.100.1"), RateClass::Main, None).await.0, RateDecision::Allow);
        }
    }

    #[tokio::test]
    async fn unreachable_redis_falls_back_as_configured() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut p = policy();
        p.backend = Backend::Redis;
        p.redis_url = format!("redis://127.0.0.1:{port}/0");
        p.redis_timeout_ms = 500;
        let rl = RateLimiter::new();
        let a = ip("203.0.113.5");
        assert_eq!(rl.check(&p, a, RateClass::Main, None).await, (RateDecision::Allow, Answered::LocalFallback));
        p.on_backend_error = OnBackendError::FailOpen;
        assert_eq!(rl.check(&p, a, RateClass::Main, None).await, (RateDecision::Allow, Answered::FailOpen));
        p.on_backend_error = OnBackendError::FailClosed;
        assert_eq!(
            rl.check(&p, a, RateClass::Main, None).await,
            (RateDecision::BackendUnavailable, Answered::FailClosed)
        );
    }
}
