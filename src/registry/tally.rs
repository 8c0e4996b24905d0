//! Caps' counts kept in memory for a store only this process writes to (the embedded SQLite
//! file): live clients in all, live clients per software key, and registrations per registrant
//! prefix within the window. Pure data, no I/O: the registry seeds it from the store (rows
//! written plus rows still queued, at one instant), adds a row when it is queued, and takes it
//! out when it is deleted or lost — so a cap check costs a hash lookup instead of three
//! `COUNT(*)` queries, of which the total scans every live row.
//!
//! The counts mean what the store's queries mean ([`super::store::Store::counts`]): deleted
//! clients leave the live counts but still count for their prefix while their creation is in
//! the window (a registration made and deleted is still a registration from that network).

use std::collections::{HashMap, VecDeque};

use super::policy::Counts;

/// What the store holds at one instant (plus the rows queued at that instant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seed {
    pub live_total: u64,
    /// Live clients per software key.
    pub live_software: Vec<(String, u64)>,
    /// `(prefix, created_at)` of every client created at or after the window's start.
    pub recent: Vec<(String, i64)>,
}

/// The kept counts.
#[derive(Debug)]
pub struct Tally {
    live_total: u64,
    live_software: HashMap<String, u64>,
    /// Creation times per prefix, ascending; those before `now - window_secs` are dropped as
    /// the clock moves (a count never looks further back than the window it was seeded for).
    recent: HashMap<String, VecDeque<i64>>,
    window_secs: i64,
}

impl Tally {
    /// Counts from a seed taken for a prefix window of `window_secs`.
    pub fn seeded(seed: Seed, window_secs: i64) -> Tally {
        let mut recent: HashMap<String, VecDeque<i64>> = HashMap::new();
        for (prefix, t) in seed.recent {
            insert_sorted(recent.entry(prefix).or_default(), t);
        }
        Tally {
            live_total: seed.live_total,
            live_software: seed.live_software.into_iter().filter(|(_, n)| *n > 0).collect(),
            recent,
            window_secs,
        }
    }

    /// Whether the prefix times kept reach back `window_secs` (a reload can widen the window:
    /// the tally is then seeded again).
    pub fn covers(&self, window_secs: i64) -> bool {
        window_secs <= self.window_secs
    }

    /// The prefix window it was seeded for.
    pub fn window_secs(&self) -> i64 {
        self.window_secs
    }

    /// A registration queued for writing (it is counted from now on).
    pub fn add(&mut self, software_key: &str, prefix: &str, created_at: i64) {
        self.live_total += 1;
        match self.live_software.get_mut(software_key) {
            Some(n) => *n += 1,
            None => {
                self.live_software.insert(software_key.to_string(), 1);
            }
        }
        match self.recent.get_mut(prefix) {
            Some(times) => insert_sorted(times, created_at),
            None => {
                self.recent.insert(prefix.to_string(), VecDeque::from([created_at]));
            }
        }
    }

    /// A live client deleted: it leaves the live counts (its registration still counts for its
    /// prefix while in the window).
    pub fn deleted(&mut self, software_key: &str) {
        self.live_total = self.live_total.saturating_sub(1);
        if let Some(n) = self.live_software.get_mut(software_key) {
            *n -= 1;
            if *n == 0 {
                self.live_software.remove(software_key);
            }
        }
    }

    /// A queued registration never written (queue full, write failed): as if never added.
    pub fn lost(&mut self, software_key: &str, prefix: &str, created_at: i64) {
        self.deleted(software_key);
        if let Some(times) = self.recent.get_mut(prefix) {
            if let Some(i) = times.iter().rposition(|t| *t == created_at) {
                times.remove(i);
            }
            if times.is_empty() {
                self.recent.remove(prefix);
            }
        }
    }

    /// The counts a registration of `software_key` from `prefix` is judged against: prefix
    /// registrations created at or after `since`. Times older than the kept window at `now` are
    /// dropped first.
    pub fn counts(&mut self, software_key: &str, prefix: &str, since: i64, now: i64) -> Counts {
        let floor = now.saturating_sub(self.window_secs);
        let prefix_recent = match self.recent.get_mut(prefix) {
            Some(times) => {
                while times.front().is_some_and(|t| *t < floor) {
                    times.pop_front();
                }
                (times.len() - times.partition_point(|t| *t < since)) as u64
            }
            None => 0,
        };
        Counts {
            live_total: self.live_total,
            live_software: self.live_software.get(software_key).copied().unwrap_or(0),
            prefix_recent,
        }
    }

    /// Drop every prefix time older than the window at `now`, and prefixes left with none (the
    /// registry calls this periodically so quiet prefixes do not stay in memory).
    pub fn prune(&mut self, now: i64) {
        let floor = now.saturating_sub(self.window_secs);
        self.recent.retain(|_, times| {
            while times.front().is_some_and(|t| *t < floor) {
                times.pop_front();
            }
            !times.is_empty()
        });
    }

    /// Prefixes with a registration in the kept window (for tests and the docs' memory bound).
    pub fn prefixes(&self) -> usize {
        self.recent.len()
    }
}

/// Insert keeping the times ascending: a registration's time comes from the clock when it is
/// queued, so it is almost always the newest and the search from the back is one step.
fn insert_sorted(times: &mut VecDeque<i64>, t: i64) {
    let at = times.iter().rposition(|x| *x <= t).map_or(0, |i| i + 1);
    times.insert(at, t);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    fn seed() -> Seed {
        Seed {
            live_total: 3,
            live_software: vec![("name:a".into(), 2), ("id:b".into(), 1)],
            // Unordered on purpose: the store answers in any order.
            recent: vec![("10.0.0.0/24".into(), T0 + 20), ("10.0.0.0/24".into(), T0), ("10.9.0.0/24".into(), T0 + 5)],
        }
    }

    #[test]
    fn seeded_counts_are_the_stores() {
        let mut t = Tally::seeded(seed(), 100);
        assert_eq!(
            t.counts("name:a", "10.0.0.0/24", T0, T0 + 30),
            Counts { live_total: 3, live_software: 2, prefix_recent: 2 }
        );
        assert_eq!(t.counts("name:a", "10.0.0.0/24", T0 + 1, T0 + 30).prefix_recent, 1, "since is inclusive");
        assert_eq!(t.counts("none", "192.0.2.0/24", T0, T0 + 30), Counts { live_total: 3, ..Default::default() });
    }

    #[test]
    fn the_prefix_window_slides_with_the_clock() {
        let mut t = Tally::seeded(seed(), 100);
        t.add("name:a", "10.0.0.0/24", T0 + 50);
        let at = |t: &mut Tally, now: i64| t.counts("name:a", "10.0.0.0/24", now - 100, now).prefix_recent;
        assert_eq!(at(&mut t, T0 + 60), 3);
        assert_eq!(at(&mut t, T0 + 100), 3, "a time exactly at the window's start still counts");
        assert_eq!(at(&mut t, T0 + 101), 2);
        assert_eq!(at(&mut t, T0 + 120), 2);
        assert_eq!(at(&mut t, T0 + 121), 1);
        assert_eq!(at(&mut t, T0 + 150), 1);
        assert_eq!(at(&mut t, T0 + 151), 0);
        // Pruning forgets quiet prefixes altogether.
        assert_eq!(t.prefixes(), 2);
        t.prune(T0 + 151);
        assert_eq!(t.prefixes(), 0);
        // A clock that goes back does not resurrect what was dropped, and counts new ones.
        t.add("name:a", "10.0.0.0/24", T0 + 10);
        assert_eq!(at(&mut t, T0 + 60), 1);
    }

    #[test]
    fn deleted_clients_leave_the_live_counts_but_not_the_prefix_window() {
        let mut t = Tally::seeded(seed(), 100);
        t.deleted("name:a");
        let c = t.counts("name:a", "10.0.0.0/24", T0, T0 + 30);
        assert_eq!(c, Counts { live_total: 2, live_software: 1, prefix_recent: 2 });
        t.deleted("name:a");
        t.deleted("id:b");
        assert_eq!(t.counts("name:a", "10.0.0.0/24", T0, T0 + 30).live_total, 0);
        t.deleted("id:b");
        assert_eq!(t.counts("id:b", "x", T0, T0).live_total, 0, "never below zero");
    }

    #[test]
    fn a_lost_record_is_as_if_never_added() {
        let mut t = Tally::seeded(seed(), 100);
        let before = t.counts("name:new", "10.5.0.0/24", T0, T0 + 30);
        t.add("name:new", "10.5.0.0/24", T0 + 30);
        t.add("name:new", "10.5.0.0/24", T0 + 30);
        assert_eq!(t.counts("name:new", "10.5.0.0/24", T0, T0 + 30).prefix_recent, 2);
        t.lost("name:new", "10.5.0.0/24", T0 + 30);
        t.lost("name:new", "10.5.0.0/24", T0 + 30);
        assert_eq!(t.counts("name:new", "10.5.0.0/24", T0, T0 + 30), before);
        assert_eq!(t.prefixes(), 2);
    }

    #[test]
    fn out_of_order_adds_stay_sorted() {
        let mut t = Tally::seeded(Seed::default(), 1000);
        for x in [5, 3, 9, 3, 1, 7] {
            t.add("k", "p", T0 + x);
        }
        let counts: Vec<u64> = (0..=10).map(|s| t.counts("k", "p", T0 + s, T0 + 10).prefix_recent).collect();
        assert_eq!(counts, vec![6, 6, 5, 5, 3, 3, 2, 2, 1, 1, 0]);
        assert!(t.covers(1000) && !t.covers(1001));
    }
}
