//! `[rate_limit]`: limits on the `dcr` scope. Pure configuration, reloadable.
//!
//! Without a `[rate_limit]` section the built-in limits apply ([`RateLimitPolicy::default`]).
//! In a `[rate_limit]` section a limit applies only when its line is present: a missing
//! `per_ip`, `per_prefix` or `global` line is no limit of that kind, and so is
//! `requests = 0`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Requests allowed per window.
    pub requests: u64,
    pub window_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process counters: each replica enforces its own limits.
    #[default]
    Local,
    /// Counters in a shared Redis: N replicas enforce one limit.
    Redis,
}

/// What to do when Redis cannot be reached (the gateway keeps reconnecting by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendError {
    /// Enforce the limits with this replica's in-process counters.
    #[default]
    Local,
    /// Let the request through unlimited.
    FailOpen,
    /// Refuse with 503 until Redis is back.
    FailClosed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitPolicy {
    pub enabled: bool,
    /// Per client IP (after trusted-proxy resolution). Absent from the section: no limit.
    #[serde(default)]
    pub per_ip: Option<Limit>,
    /// Per client network: the IP truncated to `ipv4_prefix` / `ipv6_prefix`, so address
    /// rotation inside one block does not escape. Absent from the section: no limit.
    #[serde(default)]
    pub per_prefix: Option<Limit>,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// All clients together. Absent from the section: no limit.
    #[serde(default)]
    pub global: Option<Limit>,
    /// Registrations proven to come from a catalogued hosted client (claude.ai, ChatGPT: every
    /// redirect URI on that client's own https callbacks, `dcr::catalogue::hosted_rate_key`)
    /// are counted per client and registrant network (`hosted:<id>` and the address truncated
    /// to `hosted_ipv4_prefix` / `hosted_ipv6_prefix`) against this limit instead of `per_ip`
    /// and `per_prefix`; `global` still counts them. Absent from the section: no such bucket,
    /// hosted clients are counted per address like everyone.
    #[serde(default)]
    pub per_hosted_client: Option<Limit>,
    /// Network of a hosted client's registrations (default /16: a vendor's egress block).
    pub hosted_ipv4_prefix: u8,
    /// Default /32.
    pub hosted_ipv6_prefix: u8,
    pub backend: Backend,
    pub redis_url: String,
    /// Budget for the whole Redis call (connecting included); beyond it the request falls back.
    pub redis_timeout_ms: u64,
    pub on_backend_error: OnBackendError,
    /// Prefix of every Redis key, so several gateways (or tenants) can share one Redis.
    pub key_prefix: String,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        RateLimitPolicy {
            enabled: true,
            per_ip: Some(Limit { requests: 30, window_seconds: 3600 }),
            per_prefix: Some(Limit { requests: 120, window_seconds: 3600 }),
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            global: Some(Limit { requests: 1000, window_seconds: 60 }),
            per_hosted_client: Some(Limit { requests: 600, window_seconds: 3600 }),
            hosted_ipv4_prefix: 16,
            hosted_ipv6_prefix: 32,
            backend: Backend::Local,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_timeout_ms: 50,
            on_backend_error: OnBackendError::Local,
            key_prefix: "dcrgw".into(),
        }
    }
}

impl RateLimitPolicy {
    /// Configuration problems, each naming its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        for (k, l) in [
            ("per_ip", self.per_ip),
            ("per_prefix", self.per_prefix),
            ("global", self.global),
            ("per_hosted_client", self.per_hosted_client),
        ] {
            // `requests = 0` turns the limit off; its window is then not read.
            if let Some(l) = l.filter(|l| l.requests > 0) {
                if l.window_seconds == 0 || l.window_seconds > 86_400 * 31 {
                    e.push((format!("rate_limit.{k}.window_seconds"), "must be between 1 and 2678400".into()));
                }
            }
        }
        if self.ipv4_prefix > 32 {
            e.push(("rate_limit.ipv4_prefix".into(), "must be 0..=32".into()));
        }
        if self.ipv6_prefix > 128 {
            e.push(("rate_limit.ipv6_prefix".into(), "must be 0..=128".into()));
        }
        if self.hosted_ipv4_prefix > 32 {
            e.push(("rate_limit.hosted_ipv4_prefix".into(), "must be 0..=32".into()));
        }
        if self.hosted_ipv6_prefix > 128 {
            e.push(("rate_limit.hosted_ipv6_prefix".into(), "must be 0..=128".into()));
        }
        if self.backend == Backend::Redis {
            match url::Url::parse(&self.redis_url) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix") => {}
                Ok(u) => e.push(("rate_limit.redis_url".into(), format!("scheme {:?} is not redis://", u.scheme()))),
                Err(err) => e.push(("rate_limit.redis_url".into(), format!("invalid URL: {err}"))),
            }
            if self.redis_timeout_ms == 0 {
                e.push(("rate_limit.redis_timeout_ms".into(), "must be at least 1".into()));
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            e.push(("rate_limit.key_prefix".into(), "must be non-empty without spaces".into()));
        }
        e
    }

    /// The limits in force for an ordinary request, narrowest first (absent ones and
    /// `requests = 0` are off).
    pub fn limits(&self) -> impl Iterator<Item = (LimitKind, Limit)> + '_ {
        [(LimitKind::Ip, self.per_ip), (LimitKind::Prefix, self.per_prefix), (LimitKind::Global, self.global)]
            .into_iter()
            .filter_map(|(k, l)| l.filter(|l| l.requests > 0).map(|l| (k, l)))
    }

    /// The `per_hosted_client` limit, when in force: registrations must then be read before
    /// they are counted (the redirect URIs decide the bucket).
    pub fn hosted_limit(&self) -> Option<Limit> {
        self.per_hosted_client.filter(|l| l.requests > 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Ip,
    Prefix,
    Global,
    /// `per_hosted_client`: one catalogued hosted client from one registrant network.
    HostedClient,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Ip => "ip",
            LimitKind::Prefix => "prefix",
            LimitKind::Global => "global",
            LimitKind::HostedClient => "hosted_client",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        rate_limit: RateLimitPolicy,
    }

    fn kinds(toml_text: &str) -> Vec<LimitKind> {
        let f: File = toml::from_str(toml_text).unwrap();
        f.rate_limit.limits().map(|(k, _)| k).collect()
    }

    #[test]
    fn no_section_means_the_built_in_limits() {
        assert_eq!(kinds(""), [LimitKind::Ip, LimitKind::Prefix, LimitKind::Global]);
    }

    #[test]
    fn a_missing_line_is_no_limit() {
        assert_eq!(kinds("[rate_limit]\nper_ip = { requests = 3, window_seconds = 60 }\n"), [LimitKind::Ip]);
        assert_eq!(kinds("[rate_limit]\nbackend = \"local\"\n"), []);
        let f: File = toml::from_str("[rate_limit]\nbackend = \"local\"\n").unwrap();
        assert_eq!(f.rate_limit.hosted_limit(), None);
        let f: File = toml::from_str("").unwrap();
        assert_eq!(f.rate_limit.hosted_limit(), Some(Limit { requests: 600, window_seconds: 3600 }));
        let f: File = toml::from_str(
            "[rate_limit]\nper_hosted_client = { requests = 9, window_seconds = 60 }\nhosted_ipv4_prefix = 40\n",
        )
        .unwrap();
        assert_eq!(f.rate_limit.hosted_limit(), Some(Limit { requests: 9, window_seconds: 60 }));
        assert_eq!(
            f.rate_limit.validate(),
            [("rate_limit.hosted_ipv4_prefix".to_string(), "must be 0..=32".to_string())]
        );
    }

    #[test]
    fn zero_requests_is_off_and_valid() {
        let text = "[rate_limit]\nper_ip = { requests = 0, window_seconds = 0 }\nglobal = { requests = 5, window_seconds = 60 }\n";
        let f: File = toml::from_str(text).unwrap();
        assert!(f.rate_limit.validate().is_empty(), "{:?}", f.rate_limit.validate());
        assert_eq!(f.rate_limit.limits().map(|(k, _)| k).collect::<Vec<_>>(), [LimitKind::Global]);
    }
}
