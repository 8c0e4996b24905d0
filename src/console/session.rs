//! Console sessions, kept server-side. The browser holds only a random session id (an
//! `HttpOnly`, `SameSite=Strict` cookie); the server keeps, under the SHA-256 of that id, the
//! SHA-256 of the admin token that signed in (never the token), the token's label, the
//! session's CSRF token and a one-shot notice for the next page.
//!
//! Pure: the caller passes the time, so expiry is tested with an injected clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A session unused this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session is gone this long after sign-in, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most; signing in past it drops the least recently used one.
pub const MAX_SESSIONS: usize = 1000;

/// A message for the next page, shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub ok: bool,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Session {
    /// Lower-case hex SHA-256 of the admin token (as in the token file).
    pub token_sha256: String,
    /// Sent back in every form as `csrf`; compared in constant time.
    pub csrf: String,
    pub notice: Option<Notice>,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    /// Does `presented` equal this session's CSRF token?
    pub fn csrf_matches(&self, presented: &str) -> bool {
        presented.len() == self.csrf.len() && bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

#[derive(Default)]
pub struct SessionStore {
    by_id: HashMap<[u8; 32], Session>,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl SessionStore {
    pub fn new() -> SessionStore {
        SessionStore::default()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// A new session; returns its id (the cookie's value).
    pub fn create(&mut self, token_sha256: &str, now: Instant) -> String {
        self.expire(now);
        if self.by_id.len() >= MAX_SESSIONS {
            if let Some(oldest) = self.by_id.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                self.by_id.remove(&oldest);
            }
        }
        let id = random_token();
        self.by_id.insert(
            key(&id),
            Session {
                token_sha256: token_sha256.to_string(),
                csrf: random_token(),
                notice: None,
                created: now,
                last_seen: now,
            },
        );
        id
    }

    /// The live session with this id (its idle timer restarts), or `None`.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<&mut Session> {
        let k = key(id);
        let alive = self.by_id.get(&k).is_some_and(|s| is_alive(s, now));
        if !alive {
            self.by_id.remove(&k);
            return None;
        }
        let s = self.by_id.get_mut(&k)?;
        s.last_seen = now;
        Some(s)
    }

    pub fn remove(&mut self, id: &str) {
        self.by_id.remove(&key(id));
    }

    /// Drop every session of a token (its digest): when it is no longer valid.
    pub fn remove_token(&mut self, token_sha256: &str) {
        self.by_id.retain(|_, s| s.token_sha256 != token_sha256);
    }

    fn expire(&mut self, now: Instant) {
        self.by_id.retain(|_, s| is_alive(s, now));
    }
}

fn is_alive(s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.last_seen) < IDLE_TIMEOUT && now.saturating_duration_since(s.created) < MAX_AGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_at_max_age() {
        let t0 = Instant::now();
        let mut store = SessionStore::new();
        let id = store.create("ab", t0);
        assert_eq!(id.len(), 64);
        assert!(store.get(&id, t0 + IDLE_TIMEOUT / 2).is_some());
        // Used at half the idle timeout: still alive just before the next idle timeout.
        assert!(store.get(&id, t0 + IDLE_TIMEOUT + IDLE_TIMEOUT / 4).is_some());
        assert!(store.get(&id, t0 + 3 * IDLE_TIMEOUT).is_none(), "idle too long");
        assert!(store.is_empty());

        let id = store.create("ab", t0);
        let mut t = t0;
        while t < t0 + MAX_AGE - IDLE_TIMEOUT {
            t += IDLE_TIMEOUT / 2;
            assert!(store.get(&id, t).is_some());
        }
        assert!(store.get(&id, t0 + MAX_AGE).is_none(), "max age");
    }

    #[test]
    fn ids_and_csrf_tokens_are_random_and_checked_whole() {
        let t0 = Instant::now();
        let mut store = SessionStore::new();
        let a = store.create("ab", t0);
        let b = store.create("ab", t0);
        assert_ne!(a, b);
        let csrf = store.get(&a, t0).unwrap().csrf.clone();
        let s = store.get(&a, t0).unwrap();
        assert!(s.csrf_matches(&csrf));
        assert!(!s.csrf_matches(&csrf[..63]));
        assert!(!s.csrf_matches(""));
        assert_ne!(csrf, store.get(&b, t0).unwrap().csrf);
        assert!(store.get("not-a-session", t0).is_none());
        store.remove_token("ab");
        assert!(store.get(&a, t0).is_none() && store.get(&b, t0).is_none());
    }

    #[test]
    fn the_store_is_bounded() {
        let t0 = Instant::now();
        let mut store = SessionStore::new();
        let first = store.create("ab", t0);
        for i in 1..=MAX_SESSIONS as u64 {
            store.create("ab", t0 + Duration::from_millis(i));
        }
        assert_eq!(store.len(), MAX_SESSIONS);
        assert!(store.get(&first, t0 + Duration::from_secs(1)).is_none(), "least recently used dropped");
    }
}
