//! The Explain page: what the live ACL decides for a request with the given signals. The same
//! steps as `dcr-gateway explain` (`cli::explain`), on the running snapshot's rules and
//! GeoIP/ASN databases instead of files read again.

use std::net::IpAddr;

use super::pages::{ExplainQuery, ExplainResult};
use crate::acl::Decision;
use crate::scope::Scope;
use crate::signals::Signals;
use crate::snapshot::Snapshot;

fn ip(what: &str, text: &str) -> Result<IpAddr, String> {
    text.trim().parse().map_err(|_| format!("{what}: {text:?} is not an IP address"))
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The signals of `q`, evaluated by `snap`'s rule set.
pub fn run(snap: &Snapshot, q: &ExplainQuery) -> Result<ExplainResult, String> {
    let client = ip("Client IP", &q.ip)?;
    let connecting = if q.connecting_ip.is_empty() { client } else { ip("Connecting IP", &q.connecting_ip)? };
    let scope = Scope::parse(&q.scope)
        .ok_or_else(|| format!("Scope: {:?} is not one of dcr, management, authentication", q.scope))?;
    let mut s = Signals::from_ip(client, connecting);
    if let Some(g) = &snap.geo {
        let info = g.lookup(s.client_ip);
        s.country = info.country;
        s.subdivisions = info.subdivisions;
    }
    if let Some(a) = &snap.asn {
        s.asn = a.lookup(s.client_ip);
    }
    if !q.country.is_empty() {
        s.country = Some(q.country.to_ascii_uppercase());
    }
    if !q.asn.is_empty() {
        let digits = q.asn.trim_start_matches(['A', 'S', 'a', 's']);
        s.asn = Some(digits.parse().map_err(|_| format!("ASN: {:?} is not a number", q.asn))?);
    }
    s.user_agent = opt(&q.ua);
    s.hostname = opt(&q.host.to_ascii_lowercase());
    s.ja3 = opt(&q.ja3);
    s.ja4 = opt(&q.ja4);
    let v = snap.acl.evaluate(scope, &s);
    let none = || "(none)".to_string();
    let signals = vec![
        ("scope", scope.as_str().to_string()),
        ("client ip", s.client_ip.to_string()),
        ("connecting ip", s.connecting_ip.to_string()),
        ("country", s.country.clone().unwrap_or_else(none)),
        ("subdivisions", if s.subdivisions.is_empty() { none() } else { s.subdivisions.join(", ") }),
        ("asn", s.asn.map(|a| a.to_string()).unwrap_or_else(none)),
        ("user agent", s.user_agent.clone().unwrap_or_else(none)),
        ("hostname", s.hostname.clone().unwrap_or_else(none)),
        ("ja3", s.ja3.clone().unwrap_or_else(none)),
        ("ja4", s.ja4.clone().unwrap_or_else(none)),
    ];
    let (decision, redirect_uri) = match &v.decision {
        Decision::Allow => ("allow", String::new()),
        Decision::Block => ("block", String::new()),
        Decision::Redirect(uri) => ("redirect", uri.to_string()),
    };
    Ok(ExplainResult {
        decision,
        rule: v.rule.as_deref().map(str::to_string),
        redirect_uri,
        logged: v.logged.iter().map(|x| x.to_string()).collect(),
        signals,
    })
}
