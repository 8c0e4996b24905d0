//! Registration rate limits on the `dcr` scope: per client IP, per client network prefix,
//! and global; fixed windows aligned to the Unix epoch, so every replica and Redis agree on
//! where a window starts. In-process counters by default; a shared Redis when configured,
//! with a local fallback when Redis cannot be reached.
//!
//! This module is the pure part (buckets, decisions, the in-process counters); the limiter
//! that talks to Redis and falls back lives in the state layer (`state::ratelimiter`).
//!
//! Counting is all or nothing, narrow to wide: a request is checked against the per-IP
//! bucket, then the per-prefix bucket, then the global one, and counts in all of them only
//! when every one admitted it. A refused request counts nowhere (no Redis key, no sketch
//! mass), so one address cannot fill its network's or everyone's bucket, and a flood of
//! refused requests cannot grow Redis or the sketches. In token mode requests without a
//! valid initial access token are counted in buckets of their own ([`RateClass`]), so an
//! unauthenticated flood cannot lock token holders out.
//!
//! Hosted clients (claude.ai, ChatGPT) register for all their users from a few shared egress
//! addresses, so per-address limits would throttle all their users at once. A registration
//! proven to come from one (every redirect URI on that client's own https callbacks,
//! `dcr::catalogue::hosted_rate_key`) counts in `hosted:<id>:net:<network>` against
//! `per_hosted_client` and in the global bucket, not in the per-address ones. The network
//! (`/16`, `/32` by default) is the registrant's: anyone can send Claude's redirect URIs, but
//! only from their own network, so a flood of them drains the flooder's bucket and not the
//! one Claude's own egress addresses count in — and every such client can only send its codes
//! to the real client's callbacks.

mod local;
mod policy;

use std::net::IpAddr;

use ipnet::IpNet;

pub use local::{LocalLimiter, SketchCollector};
pub use policy::{Backend, Limit, LimitKind, OnBackendError, RateLimitPolicy};

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
    /// Stable key without the window: `ip:203.0.113.7`, `net:203.0.113.0/24`, `all`,
    /// `hosted:claude:net:160.79.0.0/16`; with `anon:` in front for
    /// [`RateClass::Unauthenticated`].
    pub key: String,
    pub limit: Limit,
    /// Index of the current window since the epoch.
    pub window: u64,
    /// Seconds until the current window ends.
    pub remaining_secs: u64,
}

/// `ip` truncated to `v4` / `v6` bits.
fn network(ip: IpAddr, v4: u8, v6: u8) -> IpNet {
    let len = match ip {
        IpAddr::V4(_) => v4,
        IpAddr::V6(_) => v6,
    };
    IpNet::new(ip, len).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(ip))
}

/// The buckets a request from `ip` counts against at `now_secs`, narrowest first (pure).
/// `hosted`: the catalogue id of the hosted client the registration is proven to come from;
/// with a `per_hosted_client` limit it counts in that client's bucket for the registrant's
/// network and the global one instead of the per-address ones.
pub fn buckets(
    policy: &RateLimitPolicy,
    ip: IpAddr,
    class: RateClass,
    hosted: Option<&str>,
    now_secs: u64,
) -> Vec<Bucket> {
    let class_prefix = match class {
        RateClass::Main => "",
        RateClass::Unauthenticated => "anon:",
    };
    let bucket = |kind: LimitKind, limit: Limit| {
        let key = match kind {
            LimitKind::Ip => format!("{class_prefix}ip:{ip}"),
            LimitKind::Prefix => {
                format!("{class_prefix}net:{}", network(ip, policy.ipv4_prefix, policy.ipv6_prefix))
            }
            LimitKind::Global => format!("{class_prefix}all"),
            LimitKind::HostedClient => format!(
                "{class_prefix}hosted:{}:net:{}",
                hosted.unwrap_or_default(),
                network(ip, policy.hosted_ipv4_prefix, policy.hosted_ipv6_prefix)
            ),
        };
        let w = limit.window_seconds.max(1);
        let window = now_secs / w;
        let remaining_secs = (window + 1) * w - now_secs;
        Bucket { kind, key, limit, window, remaining_secs }
    };
    match (hosted, policy.hosted_limit()) {
        (Some(_), Some(limit)) => std::iter::once(bucket(LimitKind::HostedClient, limit))
            .chain(policy.limits().filter(|(k, _)| *k == LimitKind::Global).map(|(k, l)| bucket(k, l)))
            .collect(),
        _ => policy.limits().map(|(k, l)| bucket(k, l)).collect(),
    }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Limits the unit tests here and in `state::ratelimiter` count against.
    pub(crate) fn policy() -> RateLimitPolicy {
        RateLimitPolicy {
            per_ip: Some(Limit { requests: 2, window_seconds: 60 }),
            per_prefix: Some(Limit { requests: 3, window_seconds: 60 }),
            global: Some(Limit { requests: 100, window_seconds: 10 }),
            ..Default::default()
        }
    }

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn buckets_are_keyed_and_windowed() {
        let bs = buckets(&policy(), ip("203.0.113.77"), RateClass::Main, None, 125);
        assert_eq!(bs[0].key, "ip:203.0.113.77");
        assert_eq!(bs[1].key, "net:203.0.113.0/24");
        assert_eq!(bs[2].key, "all");
        assert_eq!((bs[0].window, bs[0].remaining_secs), (2, 55));
        assert_eq!((bs[2].window, bs[2].remaining_secs), (12, 5));
        let v6 = buckets(&policy(), ip("2001:db8:1:2:3::1"), RateClass::Main, None, 0);
        assert_eq!(v6[1].key, "net:2001:db8:1::/56");
        let anon = buckets(&policy(), ip("203.0.113.77"), RateClass::Unauthenticated, None, 0);
        assert_eq!(
            anon.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(),
            ["anon:ip:203.0.113.77", "anon:net:203.0.113.0/24", "anon:all"]
        );
    }

    #[test]
    fn hosted_clients_count_per_client_and_registrant_network() {
        let mut p = policy();
        p.per_hosted_client = Some(Limit { requests: 50, window_seconds: 600 });
        let keys = |bs: Vec<Bucket>| bs.into_iter().map(|b| (b.kind, b.key)).collect::<Vec<_>>();
        assert_eq!(
            keys(buckets(&p, ip("160.79.104.10"), RateClass::Main, Some("claude"), 0)),
            [(LimitKind::HostedClient, "hosted:claude:net:160.79.0.0/16".into()), (LimitKind::Global, "all".into())]
        );
        assert_eq!(
            keys(buckets(&p, ip("2001:db8:1:2::1"), RateClass::Main, Some("chatgpt"), 0))[0].1,
            "hosted:chatgpt:net:2001:db8::/32"
        );
        // No per_hosted_client limit: counted per address like everyone.
        p.per_hosted_client = None;
        assert_eq!(
            keys(buckets(&p, ip("160.79.104.10"), RateClass::Main, Some("claude"), 0)),
            keys(buckets(&p, ip("160.79.104.10"), RateClass::Main, None, 0))
        );
    }

    #[test]
    fn a_refusal_names_its_bucket_and_reset() {
        let bs = buckets(&policy(), ip("198.51.100.1"), RateClass::Main, None, 0);
        assert_eq!(decide(&bs, Admission::Admitted), RateDecision::Allow);
        assert_eq!(
            decide(&bs, Admission::Refused { index: 1, reset_secs: 33 }),
            RateDecision::Limited { kind: LimitKind::Prefix, retry_after_secs: 33 }
        );
        assert_eq!(decide(&bs, Admission::Refused { index: 7, reset_secs: 1 }), RateDecision::BackendUnavailable);
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
