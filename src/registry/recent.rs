//! Which public registrations exist within the de-duplication window, kept in memory where this
//! process is the store's only writer (SQLite; the same condition as the caps' kept counts in
//! [`super::tally`]).
//!
//! Why: every public registration must be checked for a duplicate before it is forwarded, and
//! nearly all have none. Asking the store for each one cost a hop to the blocking pool and a
//! query — together more than the rest of the registration (`bench/ab.sh` with
//! `AB_WORKLOAD=registry`). This set answers "certainly none" in memory.
//!
//! It is a filter, not a copy: it holds a 64-bit hash of each (fingerprint, prefix) with its
//! newest creation time, a superset of the store's live duplicates. A key that is absent means
//! no duplicate; a key that is present sends the registration to the store, which decides
//! (a deleted client, a hash collision or an answer without the stored document are all found
//! there). So deletions need not be tracked here, and a collision costs one store query.
//!
//! Seeding never holds the lock across the store query: the set is marked as seeding, rows
//! added meanwhile are buffered, and the seed is merged with them at the end.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most keys kept (about 40 MB at most). A window holding more public registrations than
/// this is answered by the store alone until [`RETRY_AFTER`] has passed.
pub const MAX_KEYS: usize = 1_000_000;

/// How long the set stays off after it overflowed, before it is seeded again.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);

/// How often, at most, keys that left the window are dropped (registry clock, seconds).
pub const PRUNE_EVERY_SECS: i64 = 60;

/// How long past the window a key is kept before it is dropped.
pub const PRUNE_SLACK_SECS: i64 = 600;

enum State {
    /// Not seeded (or given up after another process wrote, or the window grew).
    Off,
    /// A seed is being read from the store; rows recorded meanwhile wait here.
    Seeding { generation: u64, added: Vec<(u64, i64)> },
    /// Seeded at the store's `version` for `window_secs`.
    Ready { keys: HashMap<u64, i64>, window_secs: i64, version: i64 },
    /// More than [`MAX_KEYS`]: the store answers until `until`.
    Overflowed { until: Instant },
}

pub struct Recent {
    state: Mutex<State>,
    hasher: std::collections::hash_map::RandomState,
    /// The window the proxy last asked for (0: never): the worker seeds for it.
    wanted: AtomicI64,
    generation: std::sync::atomic::AtomicU64,
    /// The registry time of the last prune.
    pruned_at: AtomicI64,
}

/// What the set says of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No public registration with this fingerprint from this prefix in the window.
    None,
    /// Maybe one: ask the store.
    Maybe,
    /// The set cannot tell (not seeded for this window, or busy): ask the store.
    Unknown,
}

/// What the worker should do at its tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Seed for this window.
    Seed(i64),
    /// Seeded at this store version: compare it with the store's, prune.
    Check(i64),
    Nothing,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new()
    }
}

impl Recent {
    pub fn new() -> Recent {
        Recent {
            state: Mutex::new(State::Off),
            hasher: std::collections::hash_map::RandomState::new(),
            wanted: AtomicI64::new(0),
            generation: std::sync::atomic::AtomicU64::new(0),
            pruned_at: AtomicI64::new(i64::MIN),
        }
    }

    pub fn key(&self, fingerprint: &str, prefix: &str) -> u64 {
        self.hasher.hash_one((fingerprint, prefix))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a public registration with this key was created at or after `since`, for a
    /// window of `window_secs`. Never waits: a busy set is [`Seen::Unknown`].
    pub fn seen(&self, key: u64, since: i64, window_secs: i64) -> Seen {
        self.wanted.store(window_secs, Ordering::Relaxed);
        let Ok(state) = self.state.try_lock() else { return Seen::Unknown };
        match &*state {
            State::Ready { keys, window_secs: w, .. } if *w >= window_secs => match keys.get(&key) {
                Some(t) if *t >= since => Seen::Maybe,
                _ => Seen::None,
            },
            _ => Seen::Unknown,
        }
    }

    /// A public registration recorded (queued for the store) by this process.
    pub fn add(&self, key: u64, created_at: i64) {
        let mut state = self.lock();
        match &mut *state {
            State::Ready { keys, .. } => {
                if !remember(keys, key, created_at) {
                    tracing::warn!(max = MAX_KEYS, "registry: too many recent public registrations to keep in memory; de-duplication asks the store");
                    *state = State::Overflowed { until: Instant::now() + RETRY_AFTER };
                }
            }
            State::Seeding { added, .. } => added.push((key, created_at)),
            State::Off | State::Overflowed { .. } => {}
        }
    }

    /// What the worker does now, at `now`.
    pub fn tick(&self) -> Tick {
        let wanted = self.wanted.load(Ordering::Relaxed);
        let mut state = self.lock();
        match &*state {
            _ if wanted <= 0 => Tick::Nothing,
            State::Off => Tick::Seed(wanted),
            State::Overflowed { until } if Instant::now() >= *until => {
                *state = State::Off;
                Tick::Seed(wanted)
            }
            State::Ready { window_secs, .. } if *window_secs < wanted => Tick::Seed(wanted),
            State::Ready { version, .. } => Tick::Check(*version),
            State::Overflowed { .. } | State::Seeding { .. } => Tick::Nothing,
        }
    }

    /// Start a seed: from now on rows added are buffered. Returns its generation for
    /// [`Recent::finish_seed`].
    pub fn begin_seed(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.lock() = State::Seeding { generation, added: Vec::new() };
        generation
    }

    /// End a seed with what the store and the write queue held (`rows`, read after
    /// [`Recent::begin_seed`]) at store `version`. A seed overtaken by another is dropped; one
    /// that failed (`rows` is `None`) leaves the set off. The rows are gathered before the
    /// lock is taken: only those buffered meanwhile are merged under it.
    pub fn finish_seed(
        &self,
        generation: u64,
        rows: Option<impl IntoIterator<Item = (u64, i64)>>,
        version: i64,
        window_secs: i64,
    ) {
        let failed = rows.is_none();
        let mut keys = HashMap::new();
        let mut overflowed = false;
        for (k, t) in rows.into_iter().flatten() {
            if !remember(&mut keys, k, t) {
                overflowed = true;
                break;
            }
        }
        let mut state = self.lock();
        let State::Seeding { generation: g, added } = &mut *state else { return };
        if *g != generation {
            return;
        }
        let added = std::mem::take(added);
        if failed {
            *state = State::Off;
            return;
        }
        overflowed = overflowed || !added.into_iter().all(|(k, t)| remember(&mut keys, k, t));
        *state = match overflowed {
            true => {
                tracing::warn!(
                    max = MAX_KEYS,
                    "registry: too many recent public registrations to keep in memory; de-duplication asks the store"
                );
                State::Overflowed { until: Instant::now() + RETRY_AFTER }
            }
            false => State::Ready { keys, window_secs, version },
        };
    }

    /// End a seed that found more rows than [`MAX_KEYS`]: the store answers until
    /// [`RETRY_AFTER`] has passed.
    pub fn overflowed(&self, generation: u64) {
        let mut state = self.lock();
        if matches!(&*state, State::Seeding { generation: g, .. } if *g == generation) {
            tracing::warn!(
                max = MAX_KEYS,
                "registry: too many recent public registrations to keep in memory; de-duplication asks the store"
            );
            *state = State::Overflowed { until: Instant::now() + RETRY_AFTER };
        }
    }

    /// Forget the set (another process wrote to the store): the next tick seeds it again.
    pub fn reset(&self) {
        *self.lock() = State::Off;
    }

    /// Drop keys whose newest registration left the window more than [`PRUNE_SLACK_SECS`] ago,
    /// at most once per [`PRUNE_EVERY_SECS`]. A stale key costs only memory (`seen` compares
    /// times), so the lock is not taken for a walk over every key at every tick; the slack keeps
    /// the set a superset if the clock steps back a little.
    pub fn prune(&self, now: i64) {
        let last = self.pruned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PRUNE_EVERY_SECS && now >= last {
            return;
        }
        self.pruned_at.store(now, Ordering::Relaxed);
        if let State::Ready { keys, window_secs, .. } = &mut *self.lock() {
            let since = now - *window_secs - PRUNE_SLACK_SECS;
            keys.retain(|_, t| *t >= since);
        }
    }

    /// How many keys are kept (tests, metrics).
    pub fn len(&self) -> usize {
        match &*self.lock() {
            State::Ready { keys, .. } => keys.len(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keep `k` at its newest time; false when that would pass [`MAX_KEYS`].
fn remember(keys: &mut HashMap<u64, i64>, k: u64, t: i64) -> bool {
    if keys.len() >= MAX_KEYS && !keys.contains_key(&k) {
        return false;
    }
    let e = keys.entry(k).or_insert(t);
    *e = (*e).max(t);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(r: &Recent, rows: Vec<(u64, i64)>, window: i64) {
        let g = r.begin_seed();
        r.finish_seed(g, Some(rows), 1, window);
    }

    #[test]
    fn unseeded_is_unknown_and_asks_for_a_seed() {
        let r = Recent::new();
        assert_eq!(r.tick(), Tick::Nothing, "nobody asked yet");
        assert_eq!(r.seen(r.key("fp", "p"), 0, 3600), Seen::Unknown);
        assert_eq!(r.tick(), Tick::Seed(3600));
    }

    #[test]
    fn seeded_keys_answer_none_or_maybe_within_the_window() {
        let r = Recent::new();
        let (a, b) = (r.key("fp-a", "203.0.113.0/24"), r.key("fp-b", "203.0.113.0/24"));
        ready(&r, vec![(a, 1000)], 3600);
        assert_eq!(r.seen(a, 900, 3600), Seen::Maybe);
        assert_eq!(r.seen(a, 1001, 3600), Seen::None, "older than the window");
        assert_eq!(r.seen(b, 0, 3600), Seen::None);
        assert_eq!(r.seen(r.key("fp-a", "198.51.100.0/24"), 0, 3600), Seen::None, "another prefix");
        assert_eq!(r.seen(a, 0, 7200), Seen::Unknown, "seeded for a shorter window");
        assert_eq!(r.tick(), Tick::Seed(7200));
        r.add(b, 1200);
        assert_eq!(r.seen(b, 1100, 3600), Seen::Maybe);
        assert_eq!(r.tick(), Tick::Check(1));
    }

    #[test]
    fn rows_added_during_a_seed_are_kept() {
        let r = Recent::new();
        let (a, b) = (r.key("a", "p"), r.key("b", "p"));
        let g = r.begin_seed();
        r.add(b, 50);
        assert_eq!(r.seen(a, 0, 60), Seen::Unknown, "seeding");
        r.finish_seed(g, Some(vec![(a, 40)]), 7, 60);
        assert_eq!(r.seen(a, 0, 60), Seen::Maybe);
        assert_eq!(r.seen(b, 0, 60), Seen::Maybe);
        assert_eq!(r.tick(), Tick::Check(7), "seeded at version 7, for the window wanted");
    }

    #[test]
    fn an_overtaken_or_failed_seed_changes_nothing_or_turns_it_off() {
        let r = Recent::new();
        let a = r.key("a", "p");
        let old = r.begin_seed();
        let new = r.begin_seed();
        r.finish_seed(old, Some(vec![(a, 1)]), 1, 60);
        assert_eq!(r.seen(a, 0, 60), Seen::Unknown, "the older seed is dropped");
        r.finish_seed(new, None::<Vec<(u64, i64)>>, 1, 60);
        assert_eq!(r.tick(), Tick::Seed(60), "a failed seed leaves it off");
    }

    #[test]
    fn prune_forgets_what_left_the_window_and_reset_turns_it_off() {
        let r = Recent::new();
        let (a, b) = (r.key("a", "p"), r.key("b", "p"));
        ready(&r, vec![(a, 100), (b, 500)], 300);
        r.prune(700);
        assert_eq!(r.len(), 2, "within the slack past the window");
        assert_eq!(r.seen(a, 400, 300), Seen::None, "outside the window all the same");
        r.prune(100 + 300 + PRUNE_SLACK_SECS + 1);
        assert_eq!(r.len(), 1, "a left the window and its slack");
        assert_eq!(r.seen(b, 0, 300), Seen::Maybe);
        let c = r.key("c", "p");
        r.add(c, 120);
        r.prune(1050);
        assert_eq!(r.len(), 2, "not again within PRUNE_EVERY_SECS");
        r.prune(1001 + PRUNE_EVERY_SECS);
        assert_eq!(r.len(), 1);
        r.reset();
        assert_eq!(r.seen(b, 0, 300), Seen::Unknown);
    }

    #[test]
    fn a_seed_that_found_too_many_rows_turns_it_off_for_a_while() {
        let r = Recent::new();
        assert_eq!(r.seen(1, 0, 60), Seen::Unknown);
        let g = r.begin_seed();
        r.overflowed(g);
        assert_eq!(r.seen(1, 0, 60), Seen::Unknown);
        assert_eq!(r.tick(), Tick::Nothing, "not before RETRY_AFTER");
    }

    #[test]
    fn too_many_keys_turn_it_off_for_a_while() {
        let r = Recent::new();
        let g = r.begin_seed();
        r.finish_seed(g, Some((0..MAX_KEYS as u64 + 1).map(|k| (k, 1))), 1, 60);
        assert_eq!(r.seen(0, 0, 60), Seen::Unknown);
        assert_eq!(r.tick(), Tick::Nothing, "not before RETRY_AFTER");
    }
}
