//! In-process counters with memory bounded whatever the number of clients: count-min
//! sketches (pingora-limits' `Estimator`), one pair per limit kind, alternating by window
//! parity so a new window starts from zero without stopping the old one mid-count.
//! Count-min never under-counts; collisions can only make a limit trip early.
//!
//! Only admitted requests stay in a sketch: a request is added to its buckets narrow to
//! wide, and when one of them is over its limit every increment made for it is taken back.
//! The mass of a sketch (the sum of what it counted this window) is therefore bounded by
//! the admitted requests, which bounds the false-positive rate a flood can cause; the
//! estimate is exported as `dcr_gateway_rate_limit_sketch_false_positive_ratio`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pingora_limits::estimator::Estimator;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};

use super::{Admission, Bucket, LimitKind};

pub(crate) const HASHES: usize = 4;
pub(crate) const SLOTS: usize = 8192;

struct Windowed {
    sketches: [Estimator; 2],
    /// Window index each sketch currently counts (u64::MAX: none yet).
    windows: [AtomicU64; 2],
    /// Admitted increments in each sketch's current window.
    mass: [AtomicU64; 2],
    /// The limit last checked against this kind (for the false-positive estimate).
    last_limit: AtomicU64,
    /// The window last counted in (to pick the current sketch when estimating).
    last_window: AtomicU64,
}

impl Windowed {
    fn new() -> Windowed {
        Windowed {
            sketches: [Estimator::new(HASHES, SLOTS), Estimator::new(HASHES, SLOTS)],
            windows: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
            mass: [AtomicU64::new(0), AtomicU64::new(0)],
            last_limit: AtomicU64::new(0),
            last_window: AtomicU64::new(u64::MAX),
        }
    }

    /// Add one to `key` in `window`; the count after the increment.
    fn incr(&self, key: &str, window: u64) -> u64 {
        let i = (window % 2) as usize;
        let seen = self.windows[i].load(Ordering::Acquire);
        if seen != window
            && self.windows[i]
                .compare_exchange(seen, window, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // We moved this sketch to a new window: forget the window two steps back.
            self.sketches[i].reset();
            self.mass[i].store(0, Ordering::Release);
        }
        self.mass[i].fetch_add(1, Ordering::AcqRel);
        self.last_window.store(window, Ordering::Relaxed);
        self.sketches[i].incr((window, key), 1).max(0) as u64
    }

    /// Take back one increment of `key` in `window` (unless the sketch moved on meanwhile).
    fn undo(&self, key: &str, window: u64) {
        let i = (window % 2) as usize;
        if self.windows[i].load(Ordering::Acquire) == window {
            self.sketches[i].decr((window, key), 1);
            let _ = self.mass[i].fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
                Some(m.saturating_sub(1))
            });
        }
    }

    /// Estimated probability that a key never seen this window is refused on its first
    /// request: every one of its `HASHES` slots already at the limit. Markov per row, rows
    /// independent: `min(1, mass / (SLOTS * limit)) ^ HASHES` (an upper bound).
    fn false_positive_ratio(&self) -> f64 {
        let limit = self.last_limit.load(Ordering::Relaxed);
        let window = self.last_window.load(Ordering::Relaxed);
        if limit == 0 || window == u64::MAX {
            return 0.0;
        }
        let i = (window % 2) as usize;
        if self.windows[i].load(Ordering::Acquire) != window {
            return 0.0;
        }
        false_positive_bound(self.mass[i].load(Ordering::Acquire), limit)
    }
}

/// `min(1, mass / (SLOTS * limit)) ^ HASHES`: the estimated share of fresh keys refused on
/// their first request when `mass` admitted requests share a sketch whose limit is `limit`.
pub fn false_positive_bound(mass: u64, limit: u64) -> f64 {
    if limit == 0 {
        return 0.0;
    }
    let per_row = (mass as f64 / (SLOTS as f64 * limit as f64)).min(1.0);
    per_row.powi(HASHES as i32)
}

pub struct LocalLimiter {
    ip: Windowed,
    prefix: Windowed,
    global: Windowed,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter::new()
    }
}

impl LocalLimiter {
    pub fn new() -> LocalLimiter {
        LocalLimiter {
            ip: Windowed::new(),
            prefix: Windowed::new(),
            global: Windowed::new(),
        }
    }

    fn kind(&self, kind: LimitKind) -> &Windowed {
        match kind {
            LimitKind::Ip => &self.ip,
            LimitKind::Prefix => &self.prefix,
            LimitKind::Global => &self.global,
        }
    }

    /// Count one request in every bucket, narrow to wide; when a bucket is over its limit
    /// the increments made so far are undone and the request is refused by that bucket.
    pub fn admit(&self, buckets: &[Bucket]) -> Admission {
        for (i, b) in buckets.iter().enumerate() {
            let w = self.kind(b.kind);
            w.last_limit.store(b.limit.requests, Ordering::Relaxed);
            if w.incr(&b.key, b.window) > b.limit.requests {
                for done in buckets[..=i].iter() {
                    self.kind(done.kind).undo(&done.key, done.window);
                }
                return Admission::Refused {
                    index: i,
                    reset_secs: b.remaining_secs,
                };
            }
        }
        Admission::Admitted
    }

    /// Estimated false-positive ratio per limit kind (see [`false_positive_bound`]).
    pub fn false_positive_ratios(&self) -> [(LimitKind, f64); 3] {
        [LimitKind::Ip, LimitKind::Prefix, LimitKind::Global]
            .map(|k| (k, self.kind(k).false_positive_ratio()))
    }
}

/// Exports [`LocalLimiter::false_positive_ratios`] at scrape time (no per-request cost).
pub struct SketchCollector {
    local: Arc<LocalLimiter>,
    gauge: GaugeVec,
}

impl SketchCollector {
    pub(super) fn new(local: Arc<LocalLimiter>) -> SketchCollector {
        let gauge = GaugeVec::new(
            Opts::new(
                "dcr_gateway_rate_limit_sketch_false_positive_ratio",
                "Estimated share of fresh keys the local rate-limit sketch would refuse on their first request (count-min collisions), by limit (ip, prefix, global); an upper bound.",
            ),
            &["limit"],
        )
        .expect("static metric definition");
        SketchCollector { local, gauge }
    }
}

impl Collector for SketchCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for (kind, ratio) in self.local.false_positive_ratios() {
            self.gauge.with_label_values(&[kind.as_str()]).set(ratio);
        }
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{buckets, Limit, RateClass, RateLimitPolicy};
    use std::net::IpAddr;

    #[test]
    fn a_new_window_starts_from_zero() {
        let w = Windowed::new();
        assert_eq!(w.incr("k", 10), 1);
        assert_eq!(w.incr("k", 10), 2);
        assert_eq!(w.incr("k", 11), 1);
        assert_eq!(w.incr("k", 12), 1, "window 10's counts are gone");
        assert_eq!(w.incr("k", 11), 2, "window 11 still counts");
    }

    #[test]
    fn memory_is_bounded_by_construction() {
        let w = Windowed::new();
        for i in 0..100_000u32 {
            w.incr(&i.to_string(), 1);
        }
        // Distinct keys never lower anyone's count (count-min over-estimates only).
        assert!(w.incr("fresh", 1) >= 1);
    }

    fn policy(ip: u64, prefix: u64, global: u64) -> RateLimitPolicy {
        RateLimitPolicy {
            per_ip: Some(Limit {
                requests: ip,
                window_seconds: 3600,
            }),
            per_prefix: Some(Limit {
                requests: prefix,
                window_seconds: 3600,
            }),
            global: Some(Limit {
                requests: global,
                window_seconds: 3600,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn refused_requests_leave_no_mass() {
        let l = LocalLimiter::new();
        let p = policy(2, 100, 100);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let bs = buckets(&p, ip, RateClass::Main, 0);
        for _ in 0..2 {
            assert_eq!(l.admit(&bs), Admission::Admitted);
        }
        for _ in 0..1000 {
            assert!(matches!(l.admit(&bs), Admission::Refused { index: 0, .. }));
        }
        // Only the two admitted requests are in any sketch.
        for w in [&l.ip, &l.prefix, &l.global] {
            assert_eq!(w.mass[0].load(Ordering::Relaxed), 2);
        }
        assert_eq!(l.prefix.sketches[0].get((0u64, "net:203.0.113.0/24")), 2);
        assert_eq!(l.global.sketches[0].get((0u64, "all")), 2);
    }

    #[test]
    fn a_rotating_flood_does_not_refuse_fresh_addresses() {
        // 6,000 addresses in one /24 each try 10 times; the prefix limit refuses all but
        // 120. The ip sketch holds only those 120, so fresh addresses elsewhere pass.
        let l = LocalLimiter::new();
        let p = policy(30, 120, 1_000_000);
        for i in 0..6000u32 {
            let ip = IpAddr::from([10, (i >> 16) as u8, 0, (i % 250) as u8 + 1]);
            let bs = buckets(&p, ip, RateClass::Main, 0);
            for _ in 0..10 {
                l.admit(&bs);
            }
        }
        let mut refused = 0;
        for i in 0..2000u32 {
            let ip = IpAddr::from([198, 18 + (i >> 8) as u8, i as u8, 1]);
            let bs = buckets(&p, ip, RateClass::Main, 0);
            if l.admit(&bs) != Admission::Admitted {
                refused += 1;
            }
        }
        assert_eq!(refused, 0);
        let ratios = l.false_positive_ratios();
        assert!(ratios.iter().all(|(_, r)| *r < 1e-6), "{ratios:?}");
    }

    #[test]
    fn the_bound_grows_with_mass() {
        assert_eq!(false_positive_bound(0, 30), 0.0);
        assert!(false_positive_bound(60_000, 30) < 0.01);
        assert!(false_positive_bound(1_000_000, 30) > 0.5);
        assert_eq!(false_positive_bound(10, 0), 0.0);
    }
}
