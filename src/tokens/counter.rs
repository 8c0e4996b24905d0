//! `max_uses` accounting: per-process, in memory, keyed by the token's SHA-256.
//!
//! A registration takes a [`UseLease`] before it is forwarded: the use counts at once (so
//! concurrent registrations never exceed `max_uses` together) and is given back when the
//! lease is dropped without [`UseLease::commit`]. The proxy commits only when the IdP answered
//! the registration with 2xx, so a registration the IdP refused, an unreachable IdP (502/504)
//! and an aborted request do not spend a use.
//!
//! Counts survive reloads (a reloaded file does not reset them) as long as the same
//! `UseCounter` is kept; the reloader calls [`UseCounter::retain`] after every successful
//! reload, which drops tokens no longer in the file, so memory stays bounded by the number of
//! entries (a token removed and added back starts from zero). With several gateway processes
//! each counts its own uses: `max_uses` is then a per-process limit.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{TokenEntry, TokenSet};

#[derive(Default)]
pub struct UseCounter {
    counts: Mutex<HashMap<[u8; 32], u64>>,
}

impl fmt::Debug for UseCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UseCounter({} token(s))", self.lock().len())
    }
}

fn key(entry: &TokenEntry) -> Option<[u8; 32]> {
    hex::decode(&entry.sha256_hex).ok().and_then(|v| v.try_into().ok())
}

impl UseCounter {
    pub fn new() -> UseCounter {
        UseCounter::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], u64>> {
        // A panic while holding the lock leaves a consistent map (single insert/add).
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one use of `entry`; false (and nothing counted) when its `max_uses` are already
    /// used up. Atomic: concurrent callers never exceed `max_uses` together.
    pub fn try_use(&self, entry: &TokenEntry) -> bool {
        let Some(k) = key(entry) else {
            // Not an entry of a parsed set; fail closed for limited tokens.
            return entry.max_uses.is_none();
        };
        let mut counts = self.lock();
        let n = counts.entry(k).or_insert(0);
        if entry.max_uses.is_some_and(|max| *n >= max) {
            return false;
        }
        *n += 1;
        true
    }

    /// Counts one use of `entry` provisionally; `None` (and nothing counted) when its
    /// `max_uses` are already used up. The use is given back when the lease is dropped
    /// uncommitted.
    pub fn lease(self: &Arc<Self>, entry: &TokenEntry) -> Option<UseLease> {
        if !self.try_use(entry) {
            return None;
        }
        Some(UseLease { counter: self.clone(), key: key(entry), committed: false })
    }

    /// Gives back one use of the token with digest `k`.
    fn refund(&self, k: &[u8; 32]) {
        if let Some(n) = self.lock().get_mut(k) {
            *n = n.saturating_sub(1);
        }
    }

    /// Uses counted so far for `entry`.
    pub fn uses(&self, entry: &TokenEntry) -> u64 {
        key(entry).and_then(|k| self.lock().get(&k).copied()).unwrap_or(0)
    }

    /// Forgets the tokens that are not in `set` (call after a reload).
    pub fn retain(&self, set: &TokenSet) {
        self.lock().retain(|k, _| set.contains_digest(k));
    }

    /// Number of tokens with a count.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One provisional use of a token (see [`UseCounter::lease`]): given back on drop unless
/// committed.
#[must_use = "dropping the lease gives the use back"]
pub struct UseLease {
    counter: Arc<UseCounter>,
    key: Option<[u8; 32]>,
    committed: bool,
}

impl UseLease {
    /// The use is spent (the IdP accepted the registration).
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for UseLease {
    fn drop(&mut self) {
        if !self.committed {
            if let Some(k) = &self.key {
                self.counter.refund(k);
            }
        }
    }
}

impl fmt::Debug for UseLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UseLease(committed: {})", self.committed)
    }
}
