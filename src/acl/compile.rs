//! Validation of rule values and compilation into the evaluation indexes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};

use super::error::AclError;
use super::eval::{scope_index, Act, CRule, Engine, Kind, UaCheck, KINDS};
use super::managed::{Env, UnknownManagedLists};
use super::schema::{Conditions, Rule};
use super::text::{Fold, Glob};
use crate::scope::{RuleScope, Scope};

/// A rule whose values all parsed.
pub(crate) struct Checked {
    index: usize,
    id: Arc<str>,
    active: bool,
    priority: f64,
    scope: RuleScope,
    act: Act,
    /// Monitoring mode: the action is recorded, not executed, and evaluation goes on.
    monitor: bool,
    when: Side,
    unless: Side,
}

/// The parsed values of one `match` or `not_match` object.
#[derive(Default)]
pub(crate) struct Side {
    client_v4: Vec<Ipv4Net>,
    client_v6: Vec<Ipv6Net>,
    conn_v4: Vec<Ipv4Net>,
    conn_v6: Vec<Ipv6Net>,
    countries: Vec<String>,
    subdivisions: Vec<String>,
    asns: Vec<u32>,
    user_agents: Vec<Glob>,
    ja3: Vec<String>,
    ja4: Vec<String>,
    hostnames: Vec<String>,
    /// Managed list numbers (`auth0_managed`).
    managed: Vec<u32>,
    /// An `auth0_managed` name that is not configured (`unknown_managed_lists = "never_match"`):
    /// the signal is present and that list contains nothing.
    managed_unknown: bool,
    /// `http_message_signature` key ids.
    sig_keys: Vec<String>,
    /// `client_id_hosts` (extension): exact hosts, ASCII lower case.
    client_id_exact: Vec<String>,
    /// `client_id_hosts` (extension): `*.suffix` patterns, stored as `suffix`.
    client_id_subdomains: Vec<String>,
}

impl Side {
    fn has(&self, k: Kind) -> bool {
        match k {
            Kind::ClientIp => !self.client_v4.is_empty() || !self.client_v6.is_empty(),
            Kind::ConnectingIp => !self.conn_v4.is_empty() || !self.conn_v6.is_empty(),
            Kind::Country => !self.countries.is_empty(),
            Kind::Subdivision => !self.subdivisions.is_empty(),
            Kind::Asn => !self.asns.is_empty(),
            Kind::UserAgent => !self.user_agents.is_empty(),
            Kind::Ja3 => !self.ja3.is_empty(),
            Kind::Ja4 => !self.ja4.is_empty(),
            Kind::Hostname => !self.hostnames.is_empty(),
            Kind::Managed => !self.managed.is_empty() || self.managed_unknown,
            Kind::Signature => !self.sig_keys.is_empty(),
            Kind::ClientIdHost => !self.client_id_exact.is_empty() || !self.client_id_subdomains.is_empty(),
        }
    }
}

/// Effective id of the rule at `index`: its explicit id, else `rule-<index>`.
pub(crate) fn effective_id(explicit: Option<&str>, index: usize) -> String {
    match explicit {
        Some(id) => id.to_owned(),
        None => format!("rule-{index}"),
    }
}

/// Number of values (CIDRs, codes, …) in a rule, both sides.
pub(crate) fn entry_count(rule: &Rule) -> usize {
    fn side(c: &Option<Conditions>) -> usize {
        let Some(c) = c else { return 0 };
        fn n<T>(v: &Option<Vec<T>>) -> usize {
            v.as_ref().map_or(0, Vec::len)
        }
        n(&c.asns)
            + n(&c.geo_country_codes)
            + n(&c.geo_subdivision_codes)
            + n(&c.ipv4_cidrs)
            + n(&c.ipv6_cidrs)
            + n(&c.ja3_fingerprints)
            + n(&c.ja4_fingerprints)
            + n(&c.user_agents)
            + n(&c.hostnames)
            + n(&c.connecting_ipv4_cidrs)
            + n(&c.connecting_ipv6_cidrs)
            + n(&c.auth0_managed)
            + n(&c.client_id_hosts)
            + c.http_message_signature.as_ref().map_or(0, |h| h.keys.len())
    }
    side(&rule.rule.match_) + side(&rule.rule.not_match)
}

struct Ctx<'e> {
    index: usize,
    id: Option<String>,
    env: &'e Env,
    errors: &'e mut Vec<AclError>,
    warnings: &'e mut Vec<AclError>,
}

impl Ctx<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(AclError {
            index: Some(self.index),
            id: self.id.clone(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(AclError {
            index: Some(self.index),
            id: self.id.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Validates the values of one (well-shaped) rule against `env` (managed lists, signature
/// keys). Problems go to `errors`, what loads but deserves a word to `warnings`.
pub(crate) fn check_rule(
    index: usize,
    rule: &Rule,
    env: &Env,
    errors: &mut Vec<AclError>,
    warnings: &mut Vec<AclError>,
) -> Option<Checked> {
    let id = effective_id(rule.id.as_deref(), index);
    let before = errors.len();
    let mut cx = Ctx { index, id: Some(id.clone()), env, errors, warnings };
    if rule.id.as_deref() == Some("") {
        cx.err("id", "must not be empty (omit it to get the generated id)");
    }
    if !rule.priority.is_finite() {
        cx.err("priority", "must be a finite number");
    }
    let scope = match RuleScope::parse(&rule.rule.scope) {
        Some(s) => s,
        None => {
            cx.err(
                "rule.scope",
                format!(
                    "unknown scope {:?} (expected tenant, authentication, management, dcr or \
                     dynamic_client_registration)",
                    rule.rule.scope
                ),
            );
            RuleScope::Tenant
        }
    };
    let act = check_action(&mut cx, &rule.rule.action);
    let when = check_side(&mut cx, "rule.match", rule.rule.match_.as_ref());
    let unless = check_side(&mut cx, "rule.not_match", rule.rule.not_match.as_ref());
    let no_match = rule.rule.match_.as_ref().is_none_or(Conditions::is_empty);
    let no_not = rule.rule.not_match.as_ref().is_none_or(Conditions::is_empty);
    let match_all = rule.rule.match_all == Some(true);
    if match_all && !(no_match && no_not) {
        cx.err("rule.match_all", "cannot be combined with match or not_match (as in Auth0): remove one or the other");
    } else if no_match && no_not && !match_all {
        cx.err(
            "rule",
            "has no condition: give at least one non-empty signal list under match or not_match, or \"match_all\": true",
        );
    }
    if cx.errors.len() > before {
        return None;
    }
    Some(Checked {
        index,
        id: Arc::from(id),
        active: rule.active,
        // `+ 0.0` turns -0 into 0 so that total ordering treats them as equal.
        priority: rule.priority + 0.0,
        scope,
        monitor: act.as_ref().is_some_and(|(_, m)| *m),
        act: act?.0,
        when,
        unless,
    })
}

/// The action and whether it is in monitoring mode (`log` with another action).
fn check_action(cx: &mut Ctx<'_>, a: &super::schema::Action) -> Option<(Act, bool)> {
    let log = a.log == Some(true);
    let set: Vec<&str> = [("allow", a.allow), ("block", a.block), ("redirect", a.redirect)]
        .iter()
        .filter(|(_, v)| *v == Some(true))
        .map(|(n, _)| *n)
        .collect();
    let chosen = match set.as_slice() {
        [] if log => Some("log"),
        [] => {
            cx.err("rule.action", "no action: set exactly one of allow, block, redirect, log to true");
            None
        }
        [one] => Some(*one),
        many => {
            cx.err(
                "rule.action",
                format!(
                    "several actions ({}): set exactly one of allow, block, redirect to true (with \"log\": true \
                     for monitoring mode)",
                    many.join(", ")
                ),
            );
            None
        }
    };
    let monitor = log && chosen != Some("log");
    if chosen.is_some_and(|c| c != "redirect") && a.redirect_uri.is_some() {
        cx.err("rule.action.redirect_uri", "only allowed with \"redirect\": true");
        return None;
    }
    let act = match chosen? {
        "allow" => Some(Act::Allow),
        "block" => Some(Act::Block),
        "log" => Some(Act::Log),
        _ => match a.redirect_uri.as_deref() {
            None => {
                cx.err("rule.action.redirect_uri", "missing: redirect requires redirect_uri");
                None
            }
            Some(uri) => match check_redirect_uri(uri) {
                Ok(()) => Some(Act::Redirect(Arc::from(uri))),
                Err(why) => {
                    cx.err("rule.action.redirect_uri", format!("invalid redirect_uri {uri:?}: {why}"));
                    None
                }
            },
        },
    };
    act.map(|a| (a, monitor))
}

/// An absolute `http` or `https` URL with a non-empty host and no whitespace.
fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    let lower = uri.get(..8).unwrap_or(uri).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &uri[8..]
    } else if lower.starts_with("http://") {
        &uri[7..]
    } else {
        return Err("must be an absolute http:// or https:// URL");
    };
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    if uri.contains('\\') {
        return Err("must not contain a backslash");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, port)) => {
                if h.parse::<Ipv6Addr>().is_err() {
                    return Err("bracketed host is not an IPv6 address");
                }
                check_port(port)?;
                h
            }
            None => return Err("unclosed '[' in host"),
        }
    } else {
        match host_port.split_once(':') {
            Some((h, port)) => {
                check_port(&format!(":{port}"))?;
                h
            }
            None => host_port,
        }
    };
    if host.is_empty() {
        return Err("has no host");
    }
    Ok(())
}

fn check_port(p: &str) -> Result<(), &'static str> {
    match p.strip_prefix(':') {
        None if p.is_empty() => Ok(()),
        Some("") => Ok(()),
        Some(n) if n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<u16>().is_ok() => Ok(()),
        _ => Err("invalid port"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

pub(crate) enum Net {
    V4(Ipv4Net),
    V6(Ipv6Net),
}

/// Parses an address or CIDR. Host bits are cleared (`10.1.2.3/8` → `10.0.0.0/8`); a bare
/// address is one host; IPv4-mapped IPv6 (`::ffff:a.b.c.d[/96+n]`) becomes the IPv4
/// `a.b.c.d[/n]`.
pub(crate) fn parse_net(s: &str) -> Result<Net, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("malformed CIDR {s:?}"));
            }
            (a, Some(l.parse::<u8>().map_err(|_| format!("malformed CIDR {s:?}"))?))
        }
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("malformed CIDR {s:?}"))?;
    match ip {
        IpAddr::V4(a) => {
            let len = len.unwrap_or(32);
            Ipv4Net::new(a, len)
                .map(|n| Net::V4(n.trunc()))
                .map_err(|_| format!("malformed CIDR {s:?}: prefix length {len} exceeds 32"))
        }
        IpAddr::V6(a) => {
            let len = len.unwrap_or(128);
            let net = Ipv6Net::new(a, len)
                .map_err(|_| format!("malformed CIDR {s:?}: prefix length {len} exceeds 128"))?
                .trunc();
            match (net.network().to_ipv4_mapped(), len >= 96) {
                (Some(v4), true) => {
                    Ipv4Net::new(v4, len - 96).map(|n| Net::V4(n.trunc())).map_err(|_| format!("malformed CIDR {s:?}"))
                }
                _ => Ok(Net::V6(net)),
            }
        }
    }
}

fn is_mapped_literal(s: &str) -> bool {
    let addr = s.split('/').next().unwrap_or(s);
    addr.parse::<Ipv6Addr>().ok().and_then(|a| a.to_ipv4_mapped()).is_some()
}

fn check_cidrs(
    cx: &mut Ctx<'_>,
    path: &str,
    list: &[String],
    family: Family,
    v4: &mut Vec<Ipv4Net>,
    v6: &mut Vec<Ipv6Net>,
) {
    for (i, s) in list.iter().enumerate() {
        let field = format!("{path}[{i}]");
        match (parse_net(s), family) {
            (Err(m), _) => cx.err(field, m),
            (Ok(Net::V4(n)), Family::V4) => v4.push(n),
            (Ok(Net::V6(n)), Family::V6) => v6.push(n),
            // An IPv4-mapped IPv6 range is the IPv4 range it maps: since the ipv4/ipv6
            // lists of a pair are one signal it may sit in either list.
            (Ok(Net::V4(n)), Family::V6) if is_mapped_literal(s) => v4.push(n),
            (Ok(Net::V6(_)), Family::V4) => {
                cx.err(field, format!("{s:?} is an IPv6 range; put it under the ipv6 list"))
            }
            (Ok(Net::V4(_)), Family::V6) => {
                cx.err(field, format!("{s:?} is an IPv4 range; put it under the ipv4 list"))
            }
        }
    }
}

fn check_side(cx: &mut Ctx<'_>, path: &str, c: Option<&Conditions>) -> Side {
    let mut side = Side::default();
    let Some(c) = c else { return side };
    let cidr_lists = [
        ("ipv4_cidrs", &c.ipv4_cidrs, Family::V4, false),
        ("ipv6_cidrs", &c.ipv6_cidrs, Family::V6, false),
        ("connecting_ipv4_cidrs", &c.connecting_ipv4_cidrs, Family::V4, true),
        ("connecting_ipv6_cidrs", &c.connecting_ipv6_cidrs, Family::V6, true),
    ];
    for (name, list, family, connecting) in cidr_lists {
        let (v4, v6) = if connecting {
            (&mut side.conn_v4, &mut side.conn_v6)
        } else {
            (&mut side.client_v4, &mut side.client_v6)
        };
        let list = list.as_deref().unwrap_or(&[]);
        check_cidrs(cx, &format!("{path}.{name}"), list, family, v4, v6);
    }
    for (i, s) in c.geo_country_codes.iter().flatten().enumerate() {
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            side.countries.push(s.to_ascii_uppercase());
        } else {
            cx.err(
                format!("{path}.geo_country_codes[{i}]"),
                format!("malformed country code {s:?} (expected ISO 3166-1 alpha-2, e.g. \"US\")"),
            );
        }
    }
    for (i, s) in c.geo_subdivision_codes.iter().flatten().enumerate() {
        if is_subdivision(s) {
            side.subdivisions.push(s.to_ascii_uppercase());
        } else {
            cx.err(
                format!("{path}.geo_subdivision_codes[{i}]"),
                format!(
                    "malformed subdivision code {s:?} (expected ISO 3166-2 with the country \
                     prefix, e.g. \"US-WA\")"
                ),
            );
        }
    }
    side.asns = c.asns.clone().unwrap_or_default();
    for (i, s) in c.user_agents.iter().flatten().enumerate() {
        match text_problem(s) {
            Some(why) => cx.err(format!("{path}.user_agents[{i}]"), format!("invalid user agent {s:?}: {why}")),
            None => side.user_agents.push(Glob::new(s)),
        }
    }
    let plain = |cx: &mut Ctx<'_>, name: &str, what: &str, list: &Option<Vec<String>>, out: &mut Vec<String>| {
        for (i, s) in list.iter().flatten().enumerate() {
            let why =
                text_problem(s).or_else(|| s.chars().any(char::is_whitespace).then_some("must not contain whitespace"));
            let why = why.or_else(|| {
                (name == "hostnames" && s.contains('*'))
                    .then_some("wildcards are not supported in hostnames (exact match only)")
            });
            match why {
                Some(why) => cx.err(format!("{path}.{name}[{i}]"), format!("invalid {what} {s:?}: {why}")),
                None => out.push(Fold::Lower.string(s)),
            }
        }
    };
    plain(cx, "ja3_fingerprints", "JA3 fingerprint", &c.ja3_fingerprints, &mut side.ja3);
    plain(cx, "ja4_fingerprints", "JA4 fingerprint", &c.ja4_fingerprints, &mut side.ja4);
    plain(cx, "hostnames", "hostname", &c.hostnames, &mut side.hostnames);
    check_managed(cx, path, c.auth0_managed.as_deref().unwrap_or(&[]), &mut side);
    if let Some(sig) = &c.http_message_signature {
        for (i, k) in sig.keys.iter().enumerate() {
            let field = format!("{path}.http_message_signature.keys[{i}].id");
            if k.id.is_empty() {
                cx.err(field, "must not be empty");
            } else if !cx.env.signature_keys.contains(&k.id) {
                cx.err(
                    field,
                    format!(
                        "signature key {:?} is not configured: add it to the [acl] signature_keys file \
                         (the key objects of Auth0's /api/v2/keys/network-acls, with their base64 value)",
                        k.id
                    ),
                );
            } else {
                side.sig_keys.push(k.id.clone());
            }
        }
    }
    for (i, p) in c.client_id_hosts.iter().flatten().enumerate() {
        match crate::dcr::canonical_host_pattern(p) {
            Some(canon) => match canon.strip_prefix("*.") {
                Some(suffix) => side.client_id_subdomains.push(suffix.to_string()),
                None => side.client_id_exact.push(canon),
            },
            None => cx.err(
                format!("{path}.client_id_hosts[{i}]"),
                format!(
                    "invalid client_id host pattern {p:?}: expected a host name (\"example.com\"), subdomains of one \
                     (\"*.example.com\") or an IP literal, as in [dcr] redirect_host_allow"
                ),
            ),
        }
    }
    side
}

fn check_managed(cx: &mut Ctx<'_>, path: &str, names: &[String], side: &mut Side) {
    for (i, name) in names.iter().enumerate() {
        let field = format!("{path}.auth0_managed[{i}]");
        if let Some(why) = text_problem(name) {
            cx.err(field, format!("invalid managed list name {name:?}: {why}"));
            continue;
        }
        match cx.env.managed.index(name) {
            Some(list) => side.managed.push(list),
            None => {
                let known = super::managed::AUTH0_LIST_NAMES.contains(&name.as_str());
                let what = if known { "Auth0 list" } else { "list (not one Auth0 documents)" };
                let message = format!(
                    "managed {what} {name:?} is not configured: map it to a file of CIDRs under \
                     [acl.managed_lists] in gateway.toml, or set [acl] unknown_managed_lists = \"never_match\""
                );
                match cx.env.unknown_managed {
                    UnknownManagedLists::Fail => cx.err(field, message),
                    UnknownManagedLists::NeverMatch => {
                        cx.warn(field, format!("managed list {name:?} is not configured; it matches no address"));
                        side.managed_unknown = true;
                    }
                }
            }
        }
    }
}

fn text_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("must not be empty")
    } else if s.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    }
}

fn is_subdivision(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 4
        && b.len() <= 6
        && b[0].is_ascii_alphabetic()
        && b[1].is_ascii_alphabetic()
        && b[2] == b'-'
        && b[3..].iter().all(u8::is_ascii_alphanumeric)
}

/// Reports duplicate effective ids (`(index, id)` in file order).
pub(crate) fn check_duplicates(ids: &[(usize, Option<String>)], errors: &mut Vec<AclError>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, id) in ids {
        let Some(id) = id else { continue };
        if let Some(first) = seen.get(id.as_str()) {
            errors.push(AclError {
                index: Some(*index),
                id: Some(id.clone()),
                field: "id".into(),
                message: format!("duplicate id {id:?} (already used by rule {first})"),
            });
        } else {
            seen.insert(id, *index);
        }
    }
}

/// Active rules are numbered in postings as `position << 1 | side`, a `u32` whose top bit
/// the address index reserves.
pub(crate) const MAX_RULES: usize = (1 << 30) - 1;

/// Builds the evaluation engine from validated rules (any order; inactive ones skipped).
/// At most [`MAX_RULES`] rules (checked by the caller).
pub(crate) fn build(mut rules: Vec<Checked>, env: &Env) -> Engine {
    rules.retain(|r| r.active);
    rules.sort_by(|a, b| a.priority.total_cmp(&b.priority).then(a.index.cmp(&b.index)));
    rules.truncate(MAX_RULES);
    let n = rules.len();
    let words = n.div_ceil(64);
    let bitset = || vec![0u64; words].into_boxed_slice();
    let mut e = Engine {
        rules: Vec::with_capacity(n),
        words,
        scope_mask: [bitset(), bitset(), bitset()],
        need: Default::default(),
        present: [false; KINDS],
        client_v4: Default::default(),
        client_v6: Default::default(),
        conn_v4: Default::default(),
        conn_v6: Default::default(),
        country: Default::default(),
        subdivision: Default::default(),
        asn: Default::default(),
        user_agent: Default::default(),
        ja3: Default::default(),
        ja4: Default::default(),
        hostname: Default::default(),
        managed: env.managed.clone(),
        managed_postings: Vec::new(),
        signature: Default::default(),
        client_id_exact: Default::default(),
        client_id_subdomains: Default::default(),
    };
    let mut need: [Option<Box<[u64]>>; KINDS] = Default::default();
    for (pos, r) in rules.into_iter().enumerate() {
        let (w, bit) = (pos / 64, 1u64 << (pos % 64));
        for s in Scope::ALL {
            if r.scope.covers(s) {
                e.scope_mask[scope_index(s)][w] |= bit;
            }
        }
        // A user-agent list with a wildcard on either side is evaluated per candidate rule
        // (patterns cannot be hashed); exact user agents go through the map.
        let ua_lazy =
            r.when.user_agents.iter().any(Glob::has_wildcard) || r.unless.user_agents.iter().any(Glob::has_wildcard);
        for (side_bit, side) in [(0u32, &r.when), (1u32, &r.unless)] {
            let post = (pos as u32) << 1 | side_bit;
            for k in Kind::ALL {
                if !side.has(k) || (k == Kind::UserAgent && ua_lazy) {
                    continue;
                }
                e.present[k as usize] = true;
                if side_bit == 0 {
                    need[k as usize].get_or_insert_with(bitset)[w] |= bit;
                }
            }
            for net in &side.client_v4 {
                e.client_v4.insert(u32::from(net.network()), net.prefix_len(), post);
            }
            for net in &side.client_v6 {
                e.client_v6.insert(u128::from(net.network()), net.prefix_len(), post);
            }
            for net in &side.conn_v4 {
                e.conn_v4.insert(u32::from(net.network()), net.prefix_len(), post);
            }
            for net in &side.conn_v6 {
                e.conn_v6.insert(u128::from(net.network()), net.prefix_len(), post);
            }
            for v in &side.countries {
                e.country.entry(v.as_str().into()).or_default().push(post);
            }
            for v in &side.subdivisions {
                e.subdivision.entry(v.as_str().into()).or_default().push(post);
            }
            for v in &side.asns {
                e.asn.entry(*v).or_default().push(post);
            }
            if !ua_lazy {
                for g in &side.user_agents {
                    e.user_agent.entry(g.literal().into()).or_default().push(post);
                }
            }
            for v in &side.ja3 {
                e.ja3.entry(v.as_str().into()).or_default().push(post);
            }
            for v in &side.ja4 {
                e.ja4.entry(v.as_str().into()).or_default().push(post);
            }
            for v in &side.hostnames {
                e.hostname.entry(v.as_str().into()).or_default().push(post);
            }
            for &list in &side.managed {
                let list = list as usize;
                if e.managed_postings.len() <= list {
                    e.managed_postings.resize_with(list + 1, Vec::new);
                }
                e.managed_postings[list].push(post);
            }
            for v in &side.sig_keys {
                e.signature.entry(v.as_str().into()).or_default().push(post);
            }
            for v in &side.client_id_exact {
                e.client_id_exact.entry(v.as_str().into()).or_default().push(post);
            }
            for v in &side.client_id_subdomains {
                e.client_id_subdomains.entry(v.as_str().into()).or_default().push(post);
            }
        }
        let ua = ua_lazy.then(|| Box::new(UaCheck { when: r.when.user_agents, unless: r.unless.user_agents }));
        e.rules.push(CRule { id: r.id, act: r.act, monitor: r.monitor, ua });
    }
    e.need = need;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> String {
        match parse_net(s) {
            Ok(Net::V4(n)) => n.to_string(),
            Ok(Net::V6(n)) => format!("v6 {n}"),
            Err(e) => format!("err {e}"),
        }
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(v4("10.1.2.3/8"), "10.0.0.0/8");
        assert_eq!(v4("10.1.2.3"), "10.1.2.3/32");
        assert_eq!(v4("::ffff:10.1.2.3"), "10.1.2.3/32");
        assert_eq!(v4("::ffff:10.1.2.3/104"), "10.0.0.0/8");
        assert_eq!(v4("::ffff:0:0/95"), "v6 ::fffe:0:0/95");
        assert_eq!(v4("2001:db8::1/32"), "v6 2001:db8::/32");
        assert!(v4("10.0.0.300/8").starts_with("err"));
        assert!(v4("10.0.0.0/33").starts_with("err"));
        assert!(v4("10.0.0.0/").starts_with("err"));
        assert!(v4("10.0.0.0/+8").starts_with("err"));
        assert!(v4("10.0.0.0/08").starts_with("10.0.0.0/8"));
        assert!(v4(" 10.0.0.0/8").starts_with("err"));
        assert!(v4("2001:db8::/129").starts_with("err"));
    }

    #[test]
    fn redirect_uris() {
        assert!(check_redirect_uri("https://example.com/blocked").is_ok());
        assert!(check_redirect_uri("HTTP://example.com").is_ok());
        assert!(check_redirect_uri("https://[::1]:8443/x").is_ok());
        assert!(check_redirect_uri("https://u@example.com:443?x#y").is_ok());
        assert!(check_redirect_uri("/relative").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
        assert!(check_redirect_uri("https://").is_err());
        assert!(check_redirect_uri("https:///path").is_err());
        assert!(check_redirect_uri("https://exa mple.com").is_err());
        assert!(check_redirect_uri("https://example.com:99999").is_err());
        assert!(check_redirect_uri("ftp://example.com").is_err());
    }

    #[test]
    fn subdivisions() {
        assert!(is_subdivision("US-WA"));
        assert!(is_subdivision("gb-sct"));
        assert!(is_subdivision("FR-75C"));
        assert!(is_subdivision("CN-1"));
        assert!(!is_subdivision("US"));
        assert!(!is_subdivision("US-WASH"));
        assert!(!is_subdivision("USA-WA"));
        assert!(!is_subdivision("US_WA"));
        assert!(!is_subdivision("US-"));
    }
}
