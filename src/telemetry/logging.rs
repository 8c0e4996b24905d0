//! Process logs through `tracing` (Pingora's own `log` records are bridged in).
//!
//! Text logs carry ANSI colour only when standard error is a terminal (journald, files and
//! `kubectl logs` get plain text). Pingora's own targets are held at `warn` unless the
//! configured filter is `debug`/`trace` or names a Pingora target itself: at `info` its start-up
//! and shutdown chatter (services, bootstrap, runtimes) would outnumber the gateway's lines.

use std::io::IsTerminal;

use crate::config::LogFormat;

/// The log targets of Pingora's crates.
pub const PINGORA_TARGETS: [&str; 8] = [
    "pingora",
    "pingora_core",
    "pingora_proxy",
    "pingora_load_balancing",
    "pingora_pool",
    "pingora_cache",
    "pingora_http",
    "pingora_runtime",
];

/// The filter directives for a configured `[log] level` (or `RUST_LOG`): the value itself, plus
/// `<pingora target>=warn` for each Pingora crate unless the value asks for `debug`/`trace`
/// everywhere or mentions a Pingora target.
pub fn directives(level: &str) -> String {
    let l = level.trim();
    let lower = l.to_ascii_lowercase();
    let global_verbose = lower.split(',').any(|d| {
        let d = d.trim();
        !d.contains('=') && matches!(d, "debug" | "trace")
    });
    if lower.contains("pingora") || global_verbose {
        return l.to_string();
    }
    let mut out = l.to_string();
    for t in PINGORA_TARGETS {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(t);
        out.push_str("=warn");
    }
    out
}

/// `RUST_LOG`, when set, wins over the configured level.
pub fn init(level: &str, format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(directives(&v)).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_new(directives(level)).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(directives("info")));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A log line that may repeat per request (a flood) is written at most once a second.
pub struct OncePerSecond(std::sync::atomic::AtomicU64);

impl OncePerSecond {
    pub const fn new() -> Self {
        OncePerSecond(std::sync::atomic::AtomicU64::new(0))
    }

    /// True for the first call in each second (wall clock).
    pub fn admit(&self) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.admit_at(now)
    }

    fn admit_at(&self, now_secs: u64) -> bool {
        let last = self.0.load(std::sync::atomic::Ordering::Relaxed);
        last != now_secs
            && self
                .0
                .compare_exchange(
                    last,
                    now_secs,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
    }
}

impl Default for OncePerSecond {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod once_per_second_tests {
    use super::OncePerSecond;

    #[test]
    fn one_line_per_second() {
        let o = OncePerSecond::new();
        assert!(o.admit_at(10));
        assert!(!o.admit_at(10));
        assert!(!o.admit_at(10));
        assert!(o.admit_at(11));
        assert!(!o.admit_at(11));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_is_held_at_warn_unless_asked_for() {
        let d = directives("info");
        assert!(d.starts_with("info,") && d.contains("pingora_core=warn") && d.contains("pingora_proxy=warn"), "{d}");
        assert!(tracing_subscriber::EnvFilter::try_new(&d).is_ok(), "{d}");
        assert!(directives("warn,dcr_gateway=debug").contains("pingora_core=warn"));
        assert_eq!(directives("debug"), "debug");
        assert_eq!(directives("info,pingora_proxy=debug"), "info,pingora_proxy=debug");
        assert!(directives("").starts_with("pingora=warn"));
    }
}
