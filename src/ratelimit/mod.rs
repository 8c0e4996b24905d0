//! Registration rate limits on the `dcr` scope: per client IP, per client network prefix,
//! and global; fixed windows aligned to the Unix epoch, so every replica and Redis agree on
//! where a window starts. In-process counters by default; a shared Redis when configured,
//! with a local fallback when Redis cannot be reached.
//!
//! Counting is all or nothing, narrow to wide: a request is checked against the per-IP
//! bucket, then the per-prefix bucket, then the global one, and counts in all of them only
//! when every one admitted it. A refused request counts nowhere (no Redis key, no sketch
//! mass), so one address cannot fill its network's or everyone's bucket, and a flood of
//! refused requests cannot grow Redis or the sketches. In token mode requests without a
//! valid initial access token are counted in buckets of their own ([`RateClass`]), so an
//! unauthenticated flood cannot lock token holders out.

mod local;
mod policy;
mod redis_backend;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

pub use local::{LocalLimiter, SketchCollector};
pub use policy::{Backend, Limit, LimitKind, OnBackendError, RateLimitPolicy};
pub use redis_backend::{BackendError, RedisLimiter};

/// Which family of buckets a request counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateClass {
    /// Open registration, RFC 7592 requests, and registrations that presented a valid
    /// initial access token.
    #[default]
    Main,
    /// Token mode: a registration without a valid initial access token. Same limits, own
    /// counters (keys prefixed `anon:`).
    Unauthenticated,
}

/// One counter a request increments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub kind: LimitKind,
    /// Stable key without the window: `ip:203.0.113.7`, `net:203.0.113.0/24`, `all`; with
    /// `anon:` in front for [`RateClass::Unauthenticated`].
    pub key: String,
    pub limit: Limit,
    /// Index of the current window since the epoch.
    pub window: u64,
    /// Seconds until the current window ends.
    pub remaining_secs: u64,
}

/// The buckets a request from `ip` counts against at `now_secs`, narrowest first (pure).
pub fn buckets(policy: &RateLimitPolicy, ip: IpAddr, class: RateClass, now_secs: u64) -> Vec<Bucket> {
    let class_prefix = match class {
        RateClass::Main => "",
        RateClass::Unauthenticated => "anon:",
    };
    policy
        .limits()
        .map(|(kind, limit)| {
            let key = match kind {
                LimitKind::Ip => format!("{class_prefix}ip:{ip}"),
                LimitKind::Prefix => {
                    let len = match ip {
                        IpAddr::V4(_) => policy.ipv4_prefix,
                        IpAddr::V6(_) => policy.ipv6_prefix,
                    };
                    let net = IpNet::new(ip, len).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(ip));
                    format!("{class_prefix}net:{net}")
                }
                LimitKind::Global => format!("{class_prefix}all"),
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
    Limited {
        kind: LimitKind,
        retry_after_secs: u64,
    },
    /// Redis unreachable and `on_backend_error = "fail_closed"`.
    BackendUnavailable,
}

/// What a backend answers for one request: admitted (and counted everywhere), or refused by
/// the bucket at `index` (and counted nowhere), which resets in `reset_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Refused { index: usize, reset_secs: u64 },
}

/// The decision for an admission answer (pure).
pub fn decide(buckets: &[Bucket], admission: Admission) -> RateDecision {
    match admission {
        Admission::Admitted => RateDecision::Allow,
        Admission::Refused { index, reset_secs } => match buckets.get(index) {
            Some(b) => RateDecision::Limited { kind: b.kind, retry_after_secs: reset_secs.max(1) },
            // A backend naming a bucket we did not send: refuse rather than guess.
            None => RateDecision::BackendUnavailable,
        },
    }
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
    /// is mapped to the configured fallback.
    pub async fn check(&self, policy: &RateLimitPolicy, ip: IpAddr, class: RateClass) -> (RateDecision, Answered) {
        if !policy.enabled {
            return (RateDecision::Allow, Answered::Local);
        }
        let bs = buckets(policy, ip, class, now_secs());
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

    fn policy() -> RateLimitPolicy {
        RateLimitPolicy {
            per_ip: Some(Limit { requests: 2, window_seconds: 60 }),
            per_prefix: Some(Limit { requests: 3, window_seconds: 60 }),
            global: Some(Limit { requests: 100, window_seconds: 10 }),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn buckets_are_keyed_and_windowed() {
        let bs = buckets(&policy(), ip("203.0.113.77"), RateClass::Main, 125);
        assert_eq!(bs[0].key, "ip:203.0.113.77");
        assert_eq!(bs[1].key, "net:203.0.113.0/24");
        assert_eq!(bs[2].key, "all");
        assert_eq!((bs[0].window, bs[0].remaining_secs), (2, 55));
        assert_eq!((bs[2].window, bs[2].remaining_secs), (12, 5));
        let v6 = buckets(&policy(), ip("2001:db8:1:2:3::1"), RateClass::Main, 0);
        assert_eq!(v6[1].key, "net:2001:db8:1::/56");
        let anon = buckets(&policy(), ip("203.0.113.77"), RateClass::Unauthenticated, 0);
        assert_eq!(
            anon.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(),
            ["anon:ip:203.0.113.77", "anon:net:203.0.113.0/24", "anon:all"]
        );
    }

    #[test]
    fn a_refusal_names_its_bucket_and_reset() {
        let bs = buckets(&policy(), ip("198.51.100.1"), RateClass::Main, 0);
        assert_eq!(decide(&bs, Admission::Admitted), RateDecision::Allow);
        assert_eq!(
            decide(&bs, Admission::Refused { index: 1, reset_secs: 33 }),
            RateDecision::Limited { kind: LimitKind::Prefix, retry_after_secs: 33 }
        );
        assert_eq!(decide(&bs, Admission::Refused { index: 7, reset_secs: 1 }), RateDecision::BackendUnavailable);
    }

    #[tokio::test]
    async fn local_limits_per_ip_and_per_prefix() {
        let rl = RateLimiter::new();
        let p = policy();
        let m = RateClass::Main;
        assert_eq!(rl.check(&p, ip("203.0.113.1"), m).await.0, RateDecision::Allow);
        assert_eq!(rl.check(&p, ip("203.0.113.1"), m).await.0, RateDecision::Allow);
        assert!(matches!(
            rl.check(&p, ip("203.0.113.1"), m).await.0,
            RateDecision::Limited { kind: LimitKind::Ip, .. }
        ));
        // Refused requests did not count against the prefix: one more address fits (3 per window).
        assert_eq!(rl.check(&p, ip("203.0.113.2"), m).await.0, RateDecision::Allow);
        // Rotating inside the /24 does not escape the prefix limit (3 per window, 3 used).
        assert!(matches!(
            rl.check(&p, ip("203.0.113.3"), m).await.0,
            RateDecision::Limited { kind: LimitKind::Prefix, .. }
        ));
        // Another network is unaffected.
        assert_eq!(rl.check(&p, ip("198.51.100.9"), m).await.0, RateDecision::Allow);
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
            rl.check(&p, ip("203.0.113.66"), RateClass::Main).await;
        }
        // 5 admitted from the flooder; 15 left for everyone else.
        for i in 0..15u8 {
            assert_eq!(rl.check(&p, IpAddr::from([198, 51, 100, i]), RateClass::Main).await.0, RateDecision::Allow);
        }
        assert!(matches!(
            rl.check(&p, ip("192.0.2.1"), RateClass::Main).await.0,
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
            rl.check(&p, IpAddr::from([203, 0, 113, i]), RateClass::Unauthenticated).await;
        }
        assert!(matches!(
            rl.check(&p, ip("203.0.113.1"), RateClass::Unauthenticated).await.0,
            RateDecision::Limited { .. }
        ));
        for _ in 0..3 {
            assert_eq!(rl.check(&p, ip("198.51.100.1"), RateClass::Main).await.0, RateDecision::Allow);
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
        assert_eq!(rl.check(&p, a, RateClass::Main).await, (RateDecision::Allow, Answered::LocalFallback));
        p.on_backend_error = OnBackendError::FailOpen;
        assert_eq!(rl.check(&p, a, RateClass::Main).await, (RateDecision::Allow, Answered::FailOpen));
        p.on_backend_error = OnBackendError::FailClosed;
        assert_eq!(rl.check(&p, a, RateClass::Main).await, (RateDecision::BackendUnavailable, Answered::FailClosed));
    }

    #[test]
    fn validation_names_keys() {
        let mut p = policy();
        p.per_ip = Some(Limit { requests: 1, window_seconds: 0 });
        p.backend = Backend::Redis;
        p.redis_url = "http://x".into();
        let keys: Vec<String> = p.validate().into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&"rate_limit.per_ip.window_seconds".to_string()));
        assert!(keys.contains(&"rate_limit.redis_url".to_string()));
    }
}
