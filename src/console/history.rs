//! Matches per rule and action over time, for the Rules page: 5 min / 1 h / 24 h counts and
//! sparklines. The proxy only keeps cumulative counters (`dcr_gateway_acl_matches_total{rule,
//! action}`); this keeps what they gained, minute by minute, for the last 24 hours.
//!
//! Pure: the caller passes the time (seconds since the epoch) and the counters' totals, so the
//! arithmetic is tested with an injected clock. A sampler (`super::Console::new`) feeds it every
//! few seconds and every page view feeds it once more before reading, so counts are current to
//! the request; a window is a whole number of one-minute buckets ending with the current one.

use std::collections::HashMap;

/// Minutes kept: 24 hours.
pub const MINUTES: usize = 24 * 60;
/// Series kept at most (rule × action); the counters are bounded by the rules file, this bounds
/// the memory even when rules come and go for a long time.
pub const MAX_SERIES: usize = 1024;

struct Series {
    /// What the counter said at the last sample.
    last_total: u64,
    /// Matches gained in each minute, indexed by `minute % MINUTES`.
    buckets: Vec<u32>,
}

#[derive(Default)]
pub struct History {
    series: HashMap<(String, String), Series>,
    /// The minute (since the epoch) of the latest sample; buckets after it are zero.
    minute: u64,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// One sample: each counter's total now. A counter seen for the first time started at 0
    /// (counters are created at their first match); a total lower than the last one (a
    /// restart of the counter) counts from 0 again.
    pub fn record<'a>(&mut self, now_secs: u64, totals: impl IntoIterator<Item = (&'a str, &'a str, u64)>) {
        let m = now_secs / 60;
        if m > self.minute {
            // Clear the buckets of the minutes that passed since the last sample.
            let steps = (m - self.minute).min(MINUTES as u64);
            for s in &mut self.series.values_mut() {
                for k in 1..=steps {
                    s.buckets[((self.minute + k) % MINUTES as u64) as usize] = 0;
                }
            }
            self.minute = m;
        }
        let slot = (self.minute % MINUTES as u64) as usize;
        for (rule, action, total) in totals {
            let key = (rule.to_string(), action.to_string());
            if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
                continue;
            }
            let s = self.series.entry(key).or_insert_with(|| Series { last_total: 0, buckets: vec![0; MINUTES] });
            let gained = if total >= s.last_total { total - s.last_total } else { total };
            s.last_total = total;
            s.buckets[slot] = s.buckets[slot].saturating_add(u32::try_from(gained).unwrap_or(u32::MAX));
        }
    }

    /// Matches of `rule` with `action` in the last `minutes` minutes (the current minute
    /// included), as of the last sample.
    pub fn count(&self, rule: &str, action: &str, minutes: usize) -> u64 {
        let Some(s) = self.series.get(&(rule.to_string(), action.to_string())) else { return 0 };
        (0..minutes.min(MINUTES)).map(|back| u64::from(s.buckets[self.slot_back(back)])).sum()
    }

    /// The actions `rule` has matches for in the last 24 hours, sorted.
    pub fn actions(&self, rule: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .series
            .iter()
            .filter(|((r, _), s)| r == rule && s.buckets.iter().any(|b| *b > 0))
            .map(|((_, a), _)| a.clone())
            .collect();
        out.sort();
        out
    }

    /// Matches of `rule` (every action) in `bins` consecutive bins of `minutes_per_bin`
    /// minutes, oldest first, the last one ending with the current minute.
    pub fn bins(&self, rule: &str, bins: usize, minutes_per_bin: usize) -> Vec<u64> {
        let mut out = vec![0u64; bins];
        let span = (bins * minutes_per_bin).min(MINUTES);
        for ((r, _), s) in &self.series {
            if r != rule {
                continue;
            }
            for back in 0..span {
                let bin = bins - 1 - back / minutes_per_bin;
                out[bin] += u64::from(s.buckets[self.slot_back(back)]);
            }
        }
        out
    }

    fn slot_back(&self, back: usize) -> usize {
        ((self.minute + MINUTES as u64 - back as u64) % MINUTES as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000; // a whole minute

    #[test]
    fn windows_count_what_the_counters_gained() {
        let mut h = History::new();
        h.record(T0, [("r", "block", 2)]);
        h.record(T0 + 30, [("r", "block", 5)]);
        assert_eq!(h.count("r", "block", 5), 5);
        // Ten minutes later: 1 more; the first 5 are out of the 5-minute window.
        h.record(T0 + 600, [("r", "block", 6)]);
        assert_eq!(h.count("r", "block", 5), 1);
        assert_eq!(h.count("r", "block", 60), 6);
        assert_eq!(h.count("r", "log", 60), 0);
        assert_eq!(h.count("x", "block", 60), 0);
        // 25 hours later everything has aged out, and the new gain is counted.
        h.record(T0 + 25 * 3600, [("r", "block", 9)]);
        assert_eq!(h.count("r", "block", MINUTES), 3);
    }

    #[test]
    fn a_restarted_counter_counts_from_zero() {
        let mut h = History::new();
        h.record(T0, [("r", "log", 10)]);
        h.record(T0 + 1, [("r", "log", 3)]);
        assert_eq!(h.count("r", "log", 5), 13);
    }

    #[test]
    fn bins_are_oldest_first_and_sum_actions() {
        let mut h = History::new();
        h.record(T0, [("r", "block", 1), ("r", "log", 1)]);
        h.record(T0 + 5 * 60, [("r", "block", 3), ("r", "log", 1)]);
        let b = h.bins("r", 12, 5);
        assert_eq!(b.len(), 12);
        assert_eq!(b[11], 2, "{b:?}");
        assert_eq!(b[10], 2, "{b:?}");
        assert_eq!(b.iter().sum::<u64>(), 4);
        assert_eq!(h.actions("r"), ["block", "log"]);
    }

    #[test]
    fn series_are_bounded() {
        let mut h = History::new();
        let names: Vec<String> = (0..MAX_SERIES + 10).map(|i| format!("r{i}")).collect();
        h.record(T0, names.iter().map(|n| (n.as_str(), "block", 1)));
        assert_eq!(h.series.len(), MAX_SERIES);
    }
}
