//! The compiled rule set and its evaluation.
//!
//! Active rules are numbered by *position* (ascending priority, ties in file order). Every
//! value of every rule sits in one index per signal (per address signal and family, one
//! hash map per prefix length in use — see `net`; a hash map per other signal) whose
//! entries are *postings*
//! `position << 1 | side` (side 1 = `not_match`). A request does one lookup per signal it
//! has, and turns the postings found into two bitsets over positions:
//!
//! * `fail`: rules that cannot match — a `not_match` value was equal, or the rule has the
//!   signal under `match` and no value was equal (`need[k] & !hit`);
//! * `hit`: scratch for the `match` hits of the signal being processed.
//!
//! Candidates are then `scope_mask[scope] & !fail`, walked in position order a word at a
//! time. The only per-rule work left is for user-agent wildcards, which cannot be hashed:
//! rules having one are checked when they come up as candidates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::managed::ManagedLists;
use super::net::NetIndex;
use super::text::{lookup, Fold, FxBuild, Glob, TextMap};
use super::{Decision, DefaultAction, Request, Verdict};
use crate::scope::Scope;
use crate::signals::Signals;

/// The signals as the engine counts them: the ipv4/ipv6 list pairs are one signal each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ClientIp = 0,
    ConnectingIp = 1,
    Country = 2,
    Subdivision = 3,
    Asn = 4,
    UserAgent = 5,
    Ja3 = 6,
    Ja4 = 7,
    Hostname = 8,
    /// `auth0_managed`: the client IP is in a managed list.
    Managed = 9,
    /// `http_message_signature`: the request is signed with one of the keys.
    Signature = 10,
    /// `client_id_hosts` (extension): the host of a URL `client_id` in the query.
    ClientIdHost = 11,
}

pub(crate) const KINDS: usize = 12;

impl Kind {
    pub(crate) const ALL: [Kind; KINDS] = [
        Kind::ClientIp,
        Kind::ConnectingIp,
        Kind::Country,
        Kind::Subdivision,
        Kind::Asn,
        Kind::UserAgent,
        Kind::Ja3,
        Kind::Ja4,
        Kind::Hostname,
        Kind::Managed,
        Kind::Signature,
        Kind::ClientIdHost,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Act {
    Allow,
    Block,
    Redirect(Arc<str>),
    Log,
}

/// User-agent lists of a rule that has a wildcard in either of them.
pub(crate) struct UaCheck {
    pub(crate) when: Vec<Glob>,
    pub(crate) unless: Vec<Glob>,
}

pub(crate) struct CRule {
    pub(crate) id: Arc<str>,
    pub(crate) act: Act,
    /// Monitoring mode: recorded in `logged`, not executed; evaluation goes on.
    pub(crate) monitor: bool,
    pub(crate) ua: Option<Box<UaCheck>>,
}

pub(crate) struct Engine {
    /// Active rules by position.
    pub(crate) rules: Vec<CRule>,
    /// `u64` words per bitset.
    pub(crate) words: usize,
    /// Per request scope (dcr, management, authentication): rules whose scope covers it.
    pub(crate) scope_mask: [Box<[u64]>; 3],
    /// Per signal: rules having it under `match` (None when no rule has).
    pub(crate) need: [Option<Box<[u64]>>; KINDS],
    /// Per signal: some rule has it (under `match` or `not_match`) in an index.
    pub(crate) present: [bool; KINDS],
    pub(crate) client_v4: NetIndex<u32>,
    pub(crate) client_v6: NetIndex<u128>,
    pub(crate) conn_v4: NetIndex<u32>,
    pub(crate) conn_v6: NetIndex<u128>,
    /// Upper case keys.
    pub(crate) country: TextMap,
    /// Upper case keys.
    pub(crate) subdivision: TextMap,
    pub(crate) asn: HashMap<u32, Vec<u32>, FxBuild>,
    /// Lower case keys; exact user agents of rules without wildcards.
    pub(crate) user_agent: TextMap,
    /// Lower case keys.
    pub(crate) ja3: TextMap,
    /// Lower case keys.
    pub(crate) ja4: TextMap,
    /// Lower case keys.
    pub(crate) hostname: TextMap,
    /// The managed lists the rules were compiled against.
    pub(crate) managed: Arc<ManagedLists>,
    /// Per managed list number: the postings of the rules naming it.
    pub(crate) managed_postings: Vec<Vec<u32>>,
    /// Signature key ids, exact.
    pub(crate) signature: TextMap,
    /// `client_id_hosts` exact hosts (lower case).
    pub(crate) client_id_exact: TextMap,
    /// `client_id_hosts` `*.suffix` patterns, keyed by `suffix` (lower case).
    pub(crate) client_id_subdomains: TextMap,
}

/// Bitsets up to this many words (64 × 32 = 2048 active rules) live on the stack.
const INLINE_WORDS: usize = 32;

#[inline]
fn mark(postings: &[u32], hit: &mut [u64], fail: &mut [u64]) {
    for &p in postings {
        let pos = (p >> 1) as usize;
        let (w, bit) = (pos / 64, 1u64 << (pos % 64));
        let set = if p & 1 == 0 { &mut *hit } else { &mut *fail };
        if let Some(word) = set.get_mut(w) {
            *word |= bit;
        }
    }
}

/// Index of a request scope in `Engine::scope_mask`.
pub(crate) fn scope_index(s: Scope) -> usize {
    match s {
        Scope::Dcr => 0,
        Scope::Management => 1,
        Scope::Authentication => 2,
    }
}

impl Engine {
    pub(crate) fn evaluate(&self, scope: Scope, s: &Signals, r: &Request<'_>, default: DefaultAction) -> Verdict {
        let w = self.words;
        // Zeroing the scratch bitsets is part of the cost: size them to the rule count.
        if w <= 2 {
            self.evaluate_inline::<2>(scope, s, r, default)
        } else if w <= 16 {
            self.evaluate_inline::<16>(scope, s, r, default)
        } else if w <= INLINE_WORDS {
            self.evaluate_inline::<INLINE_WORDS>(scope, s, r, default)
        } else {
            let mut hit = vec![0u64; w];
            let mut fail = vec![0u64; w];
            self.evaluate_in(&mut hit, &mut fail, scope, s, r, default)
        }
    }

    #[inline]
    fn evaluate_inline<const N: usize>(
        &self,
        scope: Scope,
        s: &Signals,
        r: &Request<'_>,
        default: DefaultAction,
    ) -> Verdict {
        let w = self.words.min(N);
        let mut hit = [0u64; N];
        let mut fail = [0u64; N];
        self.evaluate_in(&mut hit[..w], &mut fail[..w], scope, s, r, default)
    }

    /// Runs one signal: `each` feeds the postings of every request value found in its
    /// index to `mark`.
    #[inline]
    fn signal(&self, k: Kind, hit: &mut [u64], fail: &mut [u64], each: impl FnOnce(&mut dyn FnMut(&[u32]))) {
        if !self.present[k as usize] {
            return;
        }
        let need = self.need[k as usize].as_deref();
        if need.is_some() {
            hit.fill(0);
        }
        each(&mut |postings| mark(postings, hit, fail));
        if let Some(need) = need {
            for ((f, &n), &h) in fail.iter_mut().zip(need).zip(hit.iter()) {
                *f |= n & !h;
            }
        }
    }

    fn evaluate_in(
        &self,
        hit: &mut [u64],
        fail: &mut [u64],
        scope: Scope,
        s: &Signals,
        r: &Request<'_>,
        default: DefaultAction,
    ) -> Verdict {
        self.signal(Kind::ClientIp, hit, fail, |f| addr_lookup(&self.client_v4, &self.client_v6, s.client_ip, f));
        self.signal(Kind::ConnectingIp, hit, fail, |f| addr_lookup(&self.conn_v4, &self.conn_v6, s.connecting_ip, f));
        self.signal(Kind::Country, hit, fail, |f| {
            if let Some(p) = s.country.as_deref().and_then(|v| lookup(&self.country, v, Fold::Upper)) {
                f(p)
            }
        });
        self.signal(Kind::Subdivision, hit, fail, |f| {
            for v in &s.subdivisions {
                if let Some(p) = lookup(&self.subdivision, v, Fold::Upper) {
                    f(p)
                }
            }
        });
        self.signal(Kind::Asn, hit, fail, |f| {
            if let Some(p) = s.asn.and_then(|a| self.asn.get(&a)) {
                f(p)
            }
        });
        self.signal(Kind::UserAgent, hit, fail, |f| {
            if let Some(p) = text(&self.user_agent, &s.user_agent) {
                f(p)
            }
        });
        self.signal(Kind::Ja3, hit, fail, |f| {
            if let Some(p) = text(&self.ja3, &s.ja3) {
                f(p)
            }
        });
        self.signal(Kind::Ja4, hit, fail, |f| {
            if let Some(p) = text(&self.ja4, &s.ja4) {
                f(p)
            }
        });
        self.signal(Kind::Hostname, hit, fail, |f| {
            if let Some(p) = text(&self.hostname, &s.hostname) {
                f(p)
            }
        });
        self.signal(Kind::Managed, hit, fail, |f| {
            self.managed.containing(s.client_ip, &mut |lists| {
                for &l in lists {
                    if let Some(p) = self.managed_postings.get(l as usize) {
                        f(p)
                    }
                }
            })
        });
        self.signal(Kind::Signature, hit, fail, |f| {
            if let Some(p) = r.signature_key.and_then(|k| self.signature.get(k)) {
                f(p)
            }
        });
        self.signal(Kind::ClientIdHost, hit, fail, |f| {
            for host in r.client_id_hosts {
                client_id_lookup(&self.client_id_exact, &self.client_id_subdomains, host, f);
            }
        });

        let mask = &self.scope_mask[scope_index(scope)];
        let mut logged = Vec::new();
        let mut ua_lower: Option<Option<String>> = None;
        for (wi, (&m, &f)) in mask.iter().zip(fail.iter()).enumerate() {
            let mut cand = m & !f;
            while cand != 0 {
                let pos = wi * 64 + cand.trailing_zeros() as usize;
                cand &= cand - 1;
                let Some(rule) = self.rules.get(pos) else {
                    continue;
                };
                if let Some(ua) = &rule.ua {
                    let lower = ua_lower.get_or_insert_with(|| s.user_agent.as_deref().map(str::to_ascii_lowercase));
                    if !ua_holds(ua, lower.as_deref()) {
                        continue;
                    }
                }
                if rule.monitor {
                    logged.push(rule.id.clone());
                    continue;
                }
                let decision = match &rule.act {
                    Act::Log => {
                        logged.push(rule.id.clone());
                        continue;
                    }
                    Act::Allow => Decision::Allow,
                    Act::Block => Decision::Block,
                    Act::Redirect(uri) => Decision::Redirect(uri.clone()),
                };
                return Verdict { decision, rule: Some(rule.id.clone()), logged };
            }
        }
        Verdict {
            decision: match default {
                DefaultAction::Allow => Decision::Allow,
                DefaultAction::Block => Decision::Block,
            },
            rule: None,
            logged,
        }
    }
}

/// IPv4-mapped IPv6 is looked up as IPv4 (Signals already folds it; this is for
/// hand-built Signals).
#[inline]
fn addr_lookup(v4: &NetIndex<u32>, v6: &NetIndex<u128>, ip: IpAddr, f: &mut dyn FnMut(&[u32])) {
    match ip {
        IpAddr::V4(a) => v4.covering(u32::from(a), f),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => v4.covering(u32::from(a), f),
            None => v6.covering(u128::from(a), f),
        },
    }
}

/// The postings of the `client_id_hosts` patterns `host` (ASCII lower case) matches: the exact
/// host, and `*.suffix` for every proper suffix after a dot (`a.b.example` looks up
/// `b.example` and `example`), so the cost is one lookup per label, not per pattern.
#[inline]
fn client_id_lookup(exact: &TextMap, subdomains: &TextMap, host: &str, f: &mut dyn FnMut(&[u32])) {
    if let Some(p) = exact.get(host) {
        f(p)
    }
    if subdomains.is_empty() {
        return;
    }
    for (i, b) in host.bytes().enumerate() {
        if b == b'.' {
            if let Some(p) = subdomains.get(&host[i + 1..]) {
                f(p)
            }
        }
    }
}

fn text<'m>(map: &'m TextMap, v: &Option<String>) -> Option<&'m Vec<u32>> {
    v.as_deref().and_then(|v| lookup(map, v, Fold::Lower))
}

/// The user-agent part of a rule with wildcards: `match` needs one pattern to match a
/// present user agent; `not_match` needs none to.
fn ua_holds(ua: &UaCheck, lower: Option<&str>) -> bool {
    let any = |list: &[Glob]| lower.is_some_and(|l| list.iter().any(|g| g.matches_lower(l)));
    (ua.when.is_empty() || any(&ua.when)) && !any(&ua.unless)
}
