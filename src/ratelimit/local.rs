//! In-process counters with memory bounded whatever the number of clients: count-min
//! sketches (pingora-limits' `Estimator`), one pair per limit kind, alternating by window
//! parity so a new window starts from zero without stopping the old one mid-count.
//! Count-min never under-counts; collisions can only make a limit trip early.

use std::sync::atomic::{AtomicU64, Ordering};

use pingora_limits::estimator::Estimator;

use super::{Bucket, LimitKind};

const HASHES: usize = 4;
const SLOTS: usize = 8192;

struct Windowed {
    sketches: [Estimator; 2],
    /// Window index each sketch currently counts (u64::MAX: none yet).
    windows: [AtomicU64; 2],
}

impl Windowed {
    fn new() -> Windowed {
        Windowed {
            sketches: [Estimator::new(HASHES, SLOTS), Estimator::new(HASHES, SLOTS)],
            windows: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
        }
    }

    fn incr(&self, key: &str, window: u64) -> u64 {
        let i = (window % 2) as usize;
        let seen = self.windows[i].load(Ordering::Acquire);
        if seen != window
            && self.windows[i].compare_exchange(seen, window, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            // We moved this sketch to a new window: forget the window two steps back.
            self.sketches[i].reset();
        }
        self.sketches[i].incr((window, key), 1).max(0) as u64
    }
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
        LocalLimiter { ip: Windowed::new(), prefix: Windowed::new(), global: Windowed::new() }
    }

    /// Count one request in every bucket; (count after increment, seconds to reset).
    pub fn incr(&self, buckets: &[Bucket]) -> Vec<(u64, u64)> {
        buckets
            .iter()
            .map(|b| {
                let w = match b.kind {
                    LimitKind::Ip => &self.ip,
                    LimitKind::Prefix => &self.prefix,
                    LimitKind::Global => &self.global,
                };
                (w.incr(&b.key, b.window), b.remaining_secs)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
