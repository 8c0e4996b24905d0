//! Naive reference evaluator (tests only): a straight loop over the rules as written, one
//! `contains` per entry, no indexes. The compiled engine must agree with it.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};

use super::schema::{Conditions, Rule};
use super::{Decision, DefaultAction, Verdict};
use crate::scope::{RuleScope, Scope};
use crate::signals::{canonical_ip, Signals};

fn entry_net(s: &str) -> Option<IpNet> {
    let net = if s.contains('/') { IpNet::from_str(s).ok()? } else { IpNet::from(IpAddr::from_str(s).ok()?) };
    Some(match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, n.prefix_len() - 96).ok()?),
            None => net,
        },
        _ => net,
    })
}

fn glob(p: &[u8], t: &[u8]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => (0..=t.len()).any(|i| glob(rest, &t[i..])),
        Some((c, rest)) => t.first() == Some(c) && glob(rest, &t[1..]),
    }
}

fn ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// `Some(equal)` for each signal the conditions give (non-empty list), in any order.
fn signal_results(c: &Conditions, s: &Signals) -> Vec<bool> {
    let mut out = Vec::new();
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    let ip_group = |a: Vec<String>, b: Vec<String>, ip: IpAddr| -> Option<bool> {
        if a.is_empty() && b.is_empty() {
            return None;
        }
        let ip = canonical_ip(ip);
        Some(a.iter().chain(b.iter()).any(|e| entry_net(e).is_some_and(|n| n.contains(&ip))))
    };
    out.extend(ip_group(list(&c.ipv4_cidrs), list(&c.ipv6_cidrs), s.client_ip));
    out.extend(ip_group(list(&c.connecting_ipv4_cidrs), list(&c.connecting_ipv6_cidrs), s.connecting_ip));
    let text = |vals: Vec<String>, got: Option<&String>| -> Option<bool> {
        if vals.is_empty() {
            return None;
        }
        Some(got.is_some_and(|g| vals.iter().any(|v| ci(v, g))))
    };
    out.extend(text(list(&c.geo_country_codes), s.country.as_ref()));
    let subs = list(&c.geo_subdivision_codes);
    if !subs.is_empty() {
        out.push(s.subdivisions.iter().any(|g| subs.iter().any(|v| ci(v, g))));
    }
    let asns = c.asns.clone().unwrap_or_default();
    if !asns.is_empty() {
        out.push(s.asn.is_some_and(|a| asns.contains(&a)));
    }
    let uas = list(&c.user_agents);
    if !uas.is_empty() {
        out.push(s.user_agent.as_ref().is_some_and(|ua| {
            let ua = ua.to_ascii_lowercase();
            uas.iter().any(|p| glob(p.to_ascii_lowercase().as_bytes(), ua.as_bytes()))
        }));
    }
    out.extend(text(list(&c.ja3_fingerprints), s.ja3.as_ref()));
    out.extend(text(list(&c.ja4_fingerprints), s.ja4.as_ref()));
    out.extend(text(list(&c.hostnames), s.hostname.as_ref()));
    out
}

fn rule_matches(r: &Rule, s: &Signals) -> bool {
    let m = r.rule.match_.as_ref().is_none_or(|c| signal_results(c, s).into_iter().all(|eq| eq));
    let n = r.rule.not_match.as_ref().is_none_or(|c| signal_results(c, s).into_iter().all(|eq| !eq));
    m && n
}

pub(crate) fn evaluate(rules: &[Rule], default: DefaultAction, scope: Scope, s: &Signals) -> Verdict {
    let mut order: Vec<usize> = (0..rules.len()).collect();
    // Stable sort: ties keep file order.
    order.sort_by(|&a, &b| rules[a].priority.partial_cmp(&rules[b].priority).unwrap_or(std::cmp::Ordering::Equal));
    let mut logged = Vec::new();
    for i in order {
        let r = &rules[i];
        let covers = RuleScope::parse(&r.rule.scope).is_some_and(|rs| rs.covers(scope));
        if !r.active || !covers || !rule_matches(r, s) {
            continue;
        }
        let id: Arc<str> = Arc::from(r.id.clone().unwrap_or_else(|| format!("rule-{i}")));
        let a = &r.rule.action;
        let decision = if a.log == Some(true) {
            logged.push(id);
            continue;
        } else if a.allow == Some(true) {
            Decision::Allow
        } else if a.block == Some(true) {
            Decision::Block
        } else {
            Decision::Redirect(Arc::from(a.redirect_uri.clone().unwrap_or_default()))
        };
        return Verdict { decision, rule: Some(id), logged };
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
