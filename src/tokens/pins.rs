//! Partner pins across RFC 7592: which `[dcr]` overrides admitted each client the gateway
//! saw registered with an initial access token, so that the client's later updates are
//! checked against the same pin (a partner pinned to `*.partner-x.example` and `openid` must
//! not move its redirect to `attacker.example` or add `offline_access` with a PUT).
//!
//! In memory, per process, bounded: the client registry will persist this. Until then a
//! restart forgets the pins, and an update of a client registered before the restart is
//! checked against the base policy (docs/tokens-and-statements.md says so).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::PolicyOverrides;

/// Oldest pins are forgotten first beyond this many clients.
pub const MAX_PINS: usize = 100_000;

#[derive(Default)]
pub struct ClientPins {
    inner: Mutex<Pins>,
}

#[derive(Default)]
struct Pins {
    by_client: HashMap<String, PolicyOverrides>,
    order: VecDeque<String>,
}

impl ClientPins {
    pub fn new() -> ClientPins {
        ClientPins::default()
    }

    /// Remember the overrides that admitted `client_id` (nothing to remember when empty).
    pub fn pin(&self, client_id: &str, overrides: &PolicyOverrides) {
        if overrides.is_empty() || client_id.is_empty() {
            return;
        }
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if p.by_client.insert(client_id.to_string(), overrides.clone()).is_none() {
            p.order.push_back(client_id.to_string());
        }
        while p.order.len() > MAX_PINS {
            if let Some(old) = p.order.pop_front() {
                p.by_client.remove(&old);
            }
        }
    }

    pub fn get(&self, client_id: &str) -> Option<PolicyOverrides> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).by_client.get(client_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_kept_and_bounded() {
        let pins = ClientPins::new();
        let o = PolicyOverrides { allowed_scopes: Some(vec!["openid".into()]), ..PolicyOverrides::default() };
        pins.pin("a", &o);
        pins.pin("b", &PolicyOverrides::default());
        assert_eq!(pins.get("a"), Some(o.clone()));
        assert_eq!(pins.get("b"), None, "no overrides, nothing pinned");
        for i in 0..MAX_PINS + 5 {
            pins.pin(&format!("c{i}"), &o);
        }
        assert_eq!(pins.len(), MAX_PINS);
        assert_eq!(pins.get("a"), None, "oldest forgotten first");
    }
}
