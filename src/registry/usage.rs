//! Last use of each client_id, seen on the pass-through path: the authorization endpoint's
//! query, the token / PAR / revocation endpoints' HTTP Basic or form `client_id` (read from a
//! bounded copy of the body; what is forwarded is unchanged), and RFC 7592 calls (the proxy
//! knows their client_id from the route). Updates land in a sharded in-memory map — one
//! entry per client_id, the newest time — which the registry's worker flushes to the store
//! in one transaction per interval. The request path pays a path lookup, and for a matching
//! request a query scan and one map write (benches/registry.rs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use super::policy;

/// Bytes of a form body copied to find its `client_id`.
pub const FORM_COPY_LIMIT: usize = 4096;
/// Distinct client_ids held between two flushes, at most (beyond: dropped and counted).
const MAX_ENTRIES: usize = 200_000;
const SHARDS: usize = 16;

/// The IdP-side paths whose requests name a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsagePaths {
    /// `client_id` in the query (authorization endpoint).
    pub authorize: Vec<String>,
    /// `client_id` in HTTP Basic or the form body (token, PAR, revocation).
    pub form: Vec<String>,
}

/// What to do with a request after its head was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observe {
    Nothing,
    Touched,
    /// Copy the body (bounded) and call [`Usage::observe_form`] at its end.
    ReadForm,
}

pub struct Usage {
    paths: UsagePaths,
    now: AtomicI64,
    shards: Vec<Mutex<HashMap<Box<str>, i64>>>,
    pub dropped: AtomicU64,
}

fn shard_of(id: &str) -> usize {
    // FNV-1a: a few nanoseconds for a client_id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) % SHARDS
}

impl Usage {
    pub fn new(paths: UsagePaths) -> Usage {
        Usage {
            paths,
            now: AtomicI64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn paths(&self) -> &UsagePaths {
        &self.paths
    }

    /// The time usage is stamped with (the registry's clock, ticked by its worker).
    pub fn clock_tick(&self, now: i64) {
        self.now.store(now, Ordering::Relaxed);
    }

    /// Record a use of `client_id` now.
    pub fn touch(&self, client_id: &str) {
        self.touch_at(client_id, self.now.load(Ordering::Relaxed));
    }

    pub fn touch_at(&self, client_id: &str, t: i64) {
        if client_id.is_empty() || client_id.len() > 256 {
            return;
        }
        let mut m = self.shards[shard_of(client_id)].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = m.get_mut(client_id) {
            if *v < t {
                *v = t;
            }
        } else if m.len() < MAX_ENTRIES / SHARDS {
            m.insert(client_id.into(), t);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Everything aggregated since the last drain.
    pub fn drain(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for s in &self.shards {
            let m = std::mem::take(&mut *s.lock().unwrap_or_else(|p| p.into_inner()));
            out.extend(m.into_iter().map(|(k, v)| (k.into_string(), v)));
        }
        out
    }

    /// A request head: `target` is the IdP-side request target (path and query).
    pub fn observe_head(&self, target: &str, authorization: Option<&[u8]>) -> Observe {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        if self.paths.authorize.iter().any(|p| p == path) {
            if let Some(id) = query.and_then(|q| policy::form_client_id(q.as_bytes())) {
                self.touch(&id);
                return Observe::Touched;
            }
            return Observe::Nothing;
        }
        if self.paths.form.iter().any(|p| p == path) {
            if let Some(id) = authorization.and_then(policy::basic_client_id) {
                self.touch(&id);
                return Observe::Touched;
            }
            return Observe::ReadForm;
        }
        Observe::Nothing
    }

    /// The bounded copy of a form body.
    pub fn observe_form(&self, body: &[u8]) {
        if let Some(id) = policy::form_client_id(body) {
            self.touch(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> Usage {
        let u =
            Usage::new(UsagePaths { authorize: vec!["/auth".into()], form: vec!["/token".into(), "/request".into()] });
        u.clock_tick(100);
        u
    }

    #[test]
    fn authorize_query_and_basic_and_form_are_seen() {
        let u = usage();
        assert_eq!(u.observe_head("/auth?response_type=code&client_id=abc", None), Observe::Touched);
        assert_eq!(u.observe_head("/auth?response_type=code", None), Observe::Nothing);
        assert_eq!(u.observe_head("/other?client_id=zzz", None), Observe::Nothing);
        use base64::Engine;
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("tok-client:secret"));
        assert_eq!(u.observe_head("/token", Some(basic.as_bytes())), Observe::Touched);
        assert_eq!(u.observe_head("/request", None), Observe::ReadForm);
        u.observe_form(b"grant_type=authorization_code&client_id=form-client&code=x");
        let mut seen = u.drain();
        seen.sort();
        assert_eq!(
            seen,
            vec![("abc".to_string(), 100), ("form-client".to_string(), 100), ("tok-client".to_string(), 100)]
        );
        assert!(u.drain().is_empty());
    }

    #[test]
    fn newest_time_wins_and_entries_are_bounded() {
        let u = usage();
        u.touch_at("a", 5);
        u.touch_at("a", 3);
        u.touch_at("a", 9);
        assert_eq!(u.drain(), vec![("a".to_string(), 9)]);
        for i in 0..(MAX_ENTRIES + 1000) {
            u.touch_at(&format!("c{i}"), 1);
        }
        assert!(u.dropped.load(Ordering::Relaxed) >= 1000);
        assert!(u.drain().len() <= MAX_ENTRIES);
    }
}
