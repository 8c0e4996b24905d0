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
//!
//! Sizing ([`slots_for`]): each kind's sketch is as wide as its configured limits require
//! for a false-refusal rate of at most [`TARGET_FALSE_REFUSAL`] at its capacity — the most
//! admitted requests that can land in one of its windows: twice (token mode counts
//! unauthenticated requests apart) the `global` limit times the global windows one window
//! of the kind overlaps, or [`UNBOUNDED_CAPACITY`] without a `global` limit — within
//! [`MIN_SLOTS`]..=[`MAX_SLOTS`]. A reload that changes the limits resizes the sketches; the
//! replaced sketch is still read until its windows end, so a resize forgets no request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use pingora_limits::estimator::Estimator;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};

use super::{Admission, Bucket, Limit, LimitKind};

/// Hash rows per sketch.
pub const HASHES: usize = 4;
/// The false-refusal rate of a fresh key a sketch is sized for, at its capacity.
pub const TARGET_FALSE_REFUSAL: f64 = 1e-3;
/// Admitted requests per window assumed when no `global` limit bounds them.
pub const UNBOUNDED_CAPACITY: u64 = 1_000_000;
/// Narrowest sketch (keeps `all` and `anon:all` apart in the global sketch).
pub const MIN_SLOTS: usize = 1 << 10;
/// Widest sketch: 4 rows of 8-byte counters, 8 MiB, two per limit kind.
pub const MAX_SLOTS: usize = 1 << 18;

/// `TARGET_FALSE_REFUSAL ^ (-1 / HASHES)`: slots per (capacity / limit) for the target.
fn slots_per_load() -> f64 {
    TARGET_FALSE_REFUSAL.powf(-1.0 / HASHES as f64)
}

/// The most admitted requests one window of `window_seconds` can hold when `global` admits
/// at most `global.requests` per `global.window_seconds` (epoch-aligned windows), for both
/// request classes together.
pub fn capacity(window_seconds: u64, global: Option<Limit>) -> u64 {
    let Some(g) = global.filter(|g| g.requests > 0) else {
        return UNBOUNDED_CAPACITY;
    };
    let (w, gw) = (window_seconds.max(1), g.window_seconds.max(1));
    let overlapped = if w % gw == 0 {
        w / gw
    } else if gw % w == 0 {
        1
    } else {
        w / gw + 2
    };
    g.requests.saturating_mul(overlapped).saturating_mul(2)
}

/// Sketch width for a bucket with `limit` under `global`: `capacity / (limit * TARGET^(1/HASHES))`
/// rounded up to a power of two, within `MIN_SLOTS..=MAX_SLOTS`.
pub fn slots_for(limit: Limit, global: Option<Limit>) -> usize {
    if limit.requests == 0 {
        return MIN_SLOTS;
    }
    let need = capacity(limit.window_seconds, global) as f64 / limit.requests as f64 * slots_per_load();
    let need = need.ceil().min(MAX_SLOTS as f64) as usize;
    need.next_power_of_two().clamp(MIN_SLOTS, MAX_SLOTS)
}

struct Windowed {
    slots: usize,
    sketches: [Estimator; 2],
    /// Window index each sketch currently counts (u64::MAX: none yet).
    windows: [AtomicU64; 2],
    /// Admitted increments in each sketch's current window.
    mass: [AtomicU64; 2],
}

impl Windowed {
    fn new(slots: usize) -> Windowed {
        Windowed {
            slots,
            sketches: [Estimator::new(HASHES, slots), Estimator::new(HASHES, slots)],
            windows: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
            mass: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Add one to `key` in `window`; the count after the increment.
    fn incr(&self, key: &str, window: u64) -> u64 {
        let i = (window % 2) as usize;
        let seen = self.windows[i].load(Ordering::Acquire);
        if seen != window && self.windows[i].compare_exchange(seen, window, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            // We moved this sketch to a new window: forget the window two steps back.
            self.sketches[i].reset();
            self.mass[i].store(0, Ordering::Release);
        }
        self.mass[i].fetch_add(1, Ordering::AcqRel);
        self.sketches[i].incr((window, key), 1).max(0) as u64
    }

    /// The count of `key` in `window` (0 when this sketch does not count that window).
    fn get(&self, key: &str, window: u64) -> u64 {
        let i = (window % 2) as usize;
        if self.windows[i].load(Ordering::Acquire) == window {
            self.sketches[i].get((window, key)).max(0) as u64
        } else {
            0
        }
    }

    /// Counts nothing of `window` or the one before it (its counts can no longer matter).
    fn stale(&self, window: u64) -> bool {
        self.windows.iter().all(|w| {
            let w = w.load(Ordering::Acquire);
            w == u64::MAX || w.saturating_add(1) < window
        })
    }

    /// Take back one increment of `key` in `window` (unless the sketch moved on meanwhile).
    fn undo(&self, key: &str, window: u64) {
        let i = (window % 2) as usize;
        if self.windows[i].load(Ordering::Acquire) == window {
            self.sketches[i].decr((window, key), 1);
            let _ = self.mass[i].fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| Some(m.saturating_sub(1)));
        }
    }

    fn mass_in(&self, window: u64) -> u64 {
        let i = (window % 2) as usize;
        if self.windows[i].load(Ordering::Acquire) == window {
            self.mass[i].load(Ordering::Acquire)
        } else {
            0
        }
    }
}

/// The sketches of one limit kind.
struct Kind {
    current: ArcSwap<Windowed>,
    /// The sketch the last resize replaced: read (never counted in) until its windows end.
    previous: ArcSwapOption<Windowed>,
    resizing: Mutex<()>,
    /// The limit last checked against this kind (for the false-positive estimate).
    last_limit: AtomicU64,
    /// The window last counted in (to pick the current sketch when estimating).
    last_window: AtomicU64,
}

impl Kind {
    fn new() -> Kind {
        Kind {
            current: ArcSwap::from_pointee(Windowed::new(MIN_SLOTS)),
            previous: ArcSwapOption::empty(),
            resizing: Mutex::new(()),
            last_limit: AtomicU64::new(0),
            last_window: AtomicU64::new(u64::MAX),
        }
    }

    /// The sketch to count in, `slots` wide (resized when the limits changed).
    fn sketch(&self, slots: usize) -> Arc<Windowed> {
        let cur = self.current.load_full();
        if cur.slots == slots {
            return cur;
        }
        let _one = self.resizing.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.current.load_full();
        if cur.slots == slots {
            return cur;
        }
        let new = Arc::new(Windowed::new(slots));
        // A never-used sketch has nothing to remember.
        if cur.windows.iter().any(|w| w.load(Ordering::Acquire) != u64::MAX) {
            self.previous.store(Some(cur));
        }
        self.current.store(new.clone());
        new
    }

    /// What the replaced sketch counted for `key` in `window` (dropped once stale).
    fn carried(&self, key: &str, window: u64) -> u64 {
        let guard = self.previous.load();
        let Some(prev) = guard.as_ref() else {
            return 0;
        };
        if prev.stale(window) {
            self.previous.store(None);
            return 0;
        }
        prev.get(key, window)
    }

    /// Estimated probability that a key never seen this window is refused on its first
    /// request (see [`false_positive_bound`]).
    fn false_positive_ratio(&self) -> f64 {
        let limit = self.last_limit.load(Ordering::Relaxed);
        let window = self.last_window.load(Ordering::Relaxed);
        if limit == 0 || window == u64::MAX {
            return 0.0;
        }
        let cur = self.current.load();
        let carried = self.previous.load().as_ref().map_or(0, |p| p.mass_in(window));
        false_positive_bound(cur.mass_in(window) + carried, limit, cur.slots)
    }
}

/// `min(1, mass / (slots * limit)) ^ HASHES`: the estimated share of fresh keys refused on
/// their first request when `mass` admitted requests share a sketch `slots` wide whose limit
/// is `limit` (Markov per row, rows independent: an upper bound).
pub fn false_positive_bound(mass: u64, limit: u64, slots: usize) -> f64 {
    if limit == 0 || slots == 0 {
        return 0.0;
    }
    let per_row = (mass as f64 / (slots as f64 * limit as f64)).min(1.0);
    per_row.powi(HASHES as i32)
}

const KINDS: [LimitKind; 4] = [LimitKind::Ip, LimitKind::Prefix, LimitKind::Global, LimitKind::HostedClient];

pub struct LocalLimiter {
    ip: Kind,
    prefix: Kind,
    global: Kind,
    hosted: Kind,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter::new()
    }
}

impl LocalLimiter {
    pub fn new() -> LocalLimiter {
        LocalLimiter { ip: Kind::new(), prefix: Kind::new(), global: Kind::new(), hosted: Kind::new() }
    }

    fn kind(&self, kind: LimitKind) -> &Kind {
        match kind {
            LimitKind::Ip => &self.ip,
            LimitKind::Prefix => &self.prefix,
            LimitKind::Global => &self.global,
            LimitKind::HostedClient => &self.hosted,
        }
    }

    /// Count one request in every bucket, narrow to wide; when a bucket is over its limit
    /// the increments made so far are undone and the request is refused by that bucket.
    pub fn admit(&self, buckets: &[Bucket]) -> Admission {
        let global = buckets.iter().find(|b| b.kind == LimitKind::Global).map(|b| b.limit);
        let mut counted: [Option<Arc<Windowed>>; 3] = [None, None, None];
        // (`buckets` makes at most three: ip, prefix, global or hosted_client, global.)
        for (i, b) in buckets.iter().enumerate() {
            let kind = self.kind(b.kind);
            kind.last_limit.store(b.limit.requests, Ordering::Relaxed);
            kind.last_window.store(b.window, Ordering::Relaxed);
            let sketch = kind.sketch(slots_for(b.limit, global));
            let count = sketch.incr(&b.key, b.window) + kind.carried(&b.key, b.window);
            if let Some(slot) = counted.get_mut(i) {
                *slot = Some(sketch.clone());
            }
            if count > b.limit.requests {
                for (j, done) in buckets[..=i].iter().enumerate() {
                    match counted.get(j).and_then(Option::as_ref) {
                        Some(s) => s.undo(&done.key, done.window),
                        // More buckets than kinds (not built by `buckets`): the current sketch.
                        None => self.kind(done.kind).current.load().undo(&done.key, done.window),
                    }
                }
                return Admission::Refused { index: i, reset_secs: b.remaining_secs };
            }
        }
        Admission::Admitted
    }

    /// Estimated false-positive ratio per limit kind (see [`false_positive_bound`]).
    pub fn false_positive_ratios(&self) -> [(LimitKind, f64); 4] {
        KINDS.map(|k| (k, self.kind(k).false_positive_ratio()))
    }

    /// Current sketch width per limit kind.
    pub fn slots(&self) -> [(LimitKind, usize); 4] {
        KINDS.map(|k| (k, self.kind(k).current.load().slots))
    }
}

/// Exports [`LocalLimiter::false_positive_ratios`] at scrape time (no per-request cost).
pub struct SketchCollector {
    local: Arc<LocalLimiter>,
    gauge: GaugeVec,
}

impl SketchCollector {
    pub fn new(local: Arc<LocalLimiter>) -> SketchCollector {
        let gauge = GaugeVec::new(
            Opts::new(
                "dcr_gateway_rate_limit_sketch_false_positive_ratio",
                "Estimated share of fresh keys the local rate-limit sketch would refuse on their first request (count-min collisions), by limit (ip, prefix, global, hosted_client); an upper bound.",
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
        let w = Windowed::new(MIN_SLOTS);
        assert_eq!(w.incr("k", 10), 1);
        assert_eq!(w.incr("k", 10), 2);
        assert_eq!(w.incr("k", 11), 1);
        assert_eq!(w.incr("k", 12), 1, "window 10's counts are gone");
        assert_eq!(w.incr("k", 11), 2, "window 11 still counts");
    }

    #[test]
    fn memory_is_bounded_by_construction() {
        // A fixed sketch: 100,000 distinct keys (a rotating flood) are counted in the same
        // MIN_SLOTS cells per row as ten would be — nothing is allocated per key — so the price
        // is over-counting, never forgetting: every key still reads at least what it was given.
        let w = Windowed::new(MIN_SLOTS);
        assert_eq!(w.slots, MIN_SLOTS);
        for i in 0..100_000u32 {
            let times = if i % 1000 == 0 { 3 } else { 1 };
            for _ in 0..times {
                w.incr(&i.to_string(), 1);
            }
        }
        assert_eq!(w.slots, MIN_SLOTS, "the sketch did not grow");
        for i in (0..100_000u32).step_by(1000) {
            assert!(w.get(&i.to_string(), 1) >= 3, "key {i} under-counted: {}", w.get(&i.to_string(), 1));
        }
        for i in (1..100_000u32).step_by(997) {
            assert!(w.get(&i.to_string(), 1) >= 1, "key {i} forgotten");
        }
        assert_eq!(w.mass[1].load(Ordering::Relaxed), 100_000 + 2 * 100, "every increment counted once");
    }

    fn policy(ip: u64, prefix: u64, global: u64) -> RateLimitPolicy {
        RateLimitPolicy {
            per_ip: Some(Limit { requests: ip, window_seconds: 3600 }),
            per_prefix: Some(Limit { requests: prefix, window_seconds: 3600 }),
            global: Some(Limit { requests: global, window_seconds: 3600 }),
            ..Default::default()
        }
    }

    #[test]
    fn refused_requests_leave_no_mass() {
        let l = LocalLimiter::new();
        let p = policy(2, 100, 100);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let bs = buckets(&p, ip, RateClass::Main, None, 0);
        for _ in 0..2 {
            assert_eq!(l.admit(&bs), Admission::Admitted);
        }
        for _ in 0..1000 {
            assert!(matches!(l.admit(&bs), Admission::Refused { index: 0, .. }));
        }
        // Only the two admitted requests are in any sketch.
        for k in [&l.ip, &l.prefix, &l.global] {
            assert_eq!(k.current.load().mass[0].load(Ordering::Relaxed), 2);
        }
        assert_eq!(l.prefix.current.load().get("net:203.0.113.0/24", 0), 2);
        assert_eq!(l.global.current.load().get("all", 0), 2);
    }

    #[test]
    fn a_rotating_flood_does_not_refuse_fresh_addresses() {
        // 6,000 addresses in one /24 each try 10 times; the prefix limit refuses all but
        // 120. The ip sketch holds only those 120, so fresh addresses elsewhere pass.
        let l = LocalLimiter::new();
        let p = policy(30, 120, 1_000_000);
        for i in 0..6000u32 {
            let ip = IpAddr::from([10, (i >> 16) as u8, 0, (i % 250) as u8 + 1]);
            let bs = buckets(&p, ip, RateClass::Main, None, 0);
            for _ in 0..10 {
                l.admit(&bs);
            }
        }
        let mut refused = 0;
        for i in 0..2000u32 {
            let ip = IpAddr::from([198, 18 + (i >> 8) as u8, i as u8, 1]);
            let bs = buckets(&p, ip, RateClass::Main, None, 0);
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
        assert_eq!(false_positive_bound(0, 30, 8192), 0.0);
        assert!(false_positive_bound(60_000, 30, 8192) < 0.01);
        assert!(false_positive_bound(1_000_000, 30, 8192) > 0.5);
        assert_eq!(false_positive_bound(10, 0, 8192), 0.0);
    }

    #[test]
    fn sketches_are_sized_from_the_limits() {
        let l = |requests, window_seconds| Limit { requests, window_seconds };
        // The built-in limits: 1000/min global = 120,000 admitted (both classes) per hour of
        // the per-IP window; 30 per IP -> 4,000 loads of the limit -> 22,494 slots -> 2^15.
        assert_eq!(capacity(3600, Some(l(1000, 60))), 120_000);
        assert_eq!(slots_for(l(30, 3600), Some(l(1000, 60))), 1 << 15);
        assert_eq!(slots_for(l(120, 3600), Some(l(1000, 60))), 1 << 13);
        assert_eq!(slots_for(l(1000, 60), Some(l(1000, 60))), MIN_SLOTS);
        // Windows that do not divide: a window can overlap one more global window each side.
        assert_eq!(capacity(90, Some(l(10, 60))), 60);
        assert_eq!(capacity(30, Some(l(10, 60))), 20);
        // No global limit: the design capacity, within the widest sketch.
        assert_eq!(capacity(60, None), UNBOUNDED_CAPACITY);
        assert_eq!(slots_for(l(30, 60), None), MAX_SLOTS);
        assert_eq!(slots_for(l(1, 60), None), MAX_SLOTS);
        // At capacity, the bound is the target whenever the width is not capped.
        for (limit, global) in [(l(30, 3600), l(1000, 60)), (l(5, 3600), l(100_000, 3600)), (l(120, 60), l(500, 60))] {
            let fp = false_positive_bound(
                capacity(limit.window_seconds, Some(global)),
                limit.requests,
                slots_for(limit, Some(global)),
            );
            assert!(fp <= TARGET_FALSE_REFUSAL, "{limit:?} {global:?}: {fp}");
        }
    }

    #[test]
    fn an_admitted_rotating_flood_keeps_fresh_addresses_under_the_bound() {
        // An attacker with 10,000 addresses in 1,000 /24s sends exactly the per-IP limit from
        // each: 100,000 requests, all admitted (every prefix at its limit too), all sketch
        // mass. With the former fixed 4 x 8192 sketch 70 % of the per-IP slots of each row
        // held an attacker's 10 and about a quarter of fresh addresses were refused on their
        // first request; sized from the limits, at most TARGET_FALSE_REFUSAL are.
        let l = LocalLimiter::new();
        let p = RateLimitPolicy {
            per_ip: Some(Limit { requests: 10, window_seconds: 3600 }),
            per_prefix: Some(Limit { requests: 100, window_seconds: 3600 }),
            global: Some(Limit { requests: 150_000, window_seconds: 3600 }),
            ..Default::default()
        };
        let mut admitted = 0u64;
        for i in 0..10_000u32 {
            let ip = IpAddr::from([10, (i / 2500) as u8, ((i / 10) % 250) as u8, (i % 10) as u8 + 1]);
            let bs = buckets(&p, ip, RateClass::Main, None, 0);
            for _ in 0..10 {
                if l.admit(&bs) == Admission::Admitted {
                    admitted += 1;
                }
            }
        }
        let fresh = 20_000u32;
        let mut refused = 0;
        for i in 0..fresh {
            // One fresh address per /24: only collisions can refuse it.
            let ip = IpAddr::from([100 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 1]);
            let bs = buckets(&p, ip, RateClass::Main, None, 0);
            if l.admit(&bs) != Admission::Admitted {
                refused += 1;
            }
        }
        let rate = refused as f64 / fresh as f64;
        assert!(rate <= TARGET_FALSE_REFUSAL, "{refused} of {fresh} fresh addresses refused ({rate})");
        assert!(admitted >= 99_000, "the flood was admitted ({admitted}), so it is all sketch mass");
        let ip_ratio = l.false_positive_ratios()[0].1;
        assert!(ip_ratio <= TARGET_FALSE_REFUSAL, "reported bound {ip_ratio}");
        assert_eq!(l.slots()[0], (LimitKind::Ip, slots_for(p.per_ip.unwrap(), p.global)));
    }

    #[test]
    fn a_resize_forgets_no_admitted_request() {
        let l = LocalLimiter::new();
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let before = policy(3, 100, 100);
        for _ in 0..3 {
            assert_eq!(l.admit(&buckets(&before, ip, RateClass::Main, None, 0)), Admission::Admitted);
        }
        // A reload raises the global limit: the sketches are resized...
        let after = policy(3, 100, 10_000_000);
        let slots = l.slots();
        let bs = buckets(&after, ip, RateClass::Main, None, 0);
        assert!(matches!(l.admit(&bs), Admission::Refused { index: 0, .. }), "the three admitted still count");
        assert_ne!(l.slots(), slots);
        // ...and the old sketch is dropped once its windows are over.
        assert_eq!(l.admit(&buckets(&after, ip, RateClass::Main, None, 3600 * 2)), Admission::Admitted);
        assert!(l.ip.previous.load().is_none());
    }
}
