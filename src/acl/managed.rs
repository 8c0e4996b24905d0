//! Managed lists: the `auth0_managed` signal. Auth0 curates the lists it names
//! (`auth0.low_reputation`, `auth0.icloud_relay_proxy`); the gateway maps each name to a local
//! file of CIDRs (`[acl.managed_lists]`), read with the rules and reloaded with them.
//!
//! A list file holds one address or CIDR per line (IPv4 or IPv6); `#` starts a comment, blank
//! lines are skipped. Every list is compiled once into one address index whose postings are
//! list numbers, shared by every rule set built while the files are unchanged: a request does
//! one probe per prefix length in use and learns every list its client IP is in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::compile::{parse_net, Net};
use super::net::NetIndex;

/// The list names Auth0 documents (Terraform `auth0_network_acl`, `rule.match.auth0_managed`;
/// Auth0's Management API answers 400 `Invalid curated list name(s)` for any other).
pub const AUTH0_LIST_NAMES: &[&str] = &["auth0.low_reputation", "auth0.icloud_relay_proxy"];

/// `[acl] unknown_managed_lists`: what a rule naming a list that is not configured does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownManagedLists {
    /// The rule file does not load (`check` fails naming the rule and the list).
    #[default]
    Fail,
    /// The file loads with a warning; the list contains no address (under `match` it never
    /// matches; under `not_match` it always holds).
    NeverMatch,
}

/// The parsed entries of one list file.
#[derive(Debug, Clone, Default)]
pub struct ListEntries {
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

impl ListEntries {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// At most this many line errors are listed for one file (then a count of the rest).
const MAX_LINE_ERRORS: usize = 20;

/// Parses a list file: one address or CIDR per line, `#` comments, blank lines skipped.
/// Errors are `line N: …`, every one (up to 20, then how many more).
pub fn parse_list(text: &str) -> Result<ListEntries, Vec<String>> {
    let mut out = ListEntries::default();
    let mut errors = Vec::new();
    let mut more = 0usize;
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        match parse_net(entry) {
            Ok(Net::V4(net)) => out.v4.push(net),
            Ok(Net::V6(net)) => out.v6.push(net),
            Err(e) if errors.len() < MAX_LINE_ERRORS => errors.push(format!("line {}: {e}", n + 1)),
            Err(_) => more += 1,
        }
    }
    if more > 0 {
        errors.push(format!("… and {more} more malformed lines"));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Every configured list, compiled. Cheap to share (`Arc`).
#[derive(Default)]
pub struct ManagedLists {
    /// Name → list number.
    names: HashMap<String, u32>,
    /// Entry count per list number.
    sizes: Vec<usize>,
    v4: NetIndex<u32>,
    v6: NetIndex<u128>,
}

impl std::fmt::Debug for ManagedLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<(&String, &u32)> = self.names.iter().collect();
        names.sort();
        f.debug_map().entries(names.into_iter().map(|(n, i)| (n, self.sizes.get(*i as usize)))).finish()
    }
}

impl ManagedLists {
    /// Compiles named lists (at most 2^31 of them).
    pub fn build(lists: Vec<(String, ListEntries)>) -> ManagedLists {
        let mut out = ManagedLists::default();
        for (i, (name, entries)) in lists.into_iter().enumerate() {
            let id = i as u32;
            for net in &entries.v4 {
                out.v4.insert(u32::from(net.network()), net.prefix_len(), id);
            }
            for net in &entries.v6 {
                out.v6.insert(u128::from(net.network()), net.prefix_len(), id);
            }
            out.sizes.push(entries.len());
            out.names.insert(name, id);
        }
        out
    }

    /// The list number of `name`, when configured.
    pub fn index(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// Configured list names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.names.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Entries over all lists.
    pub fn entry_count(&self) -> usize {
        self.sizes.iter().sum()
    }

    /// Calls `f` with the numbers of lists containing `ip` (a list may come more than once).
    #[inline]
    pub(crate) fn containing(&self, ip: IpAddr, f: &mut dyn FnMut(&[u32])) {
        match ip {
            IpAddr::V4(a) => self.v4.covering(u32::from(a), f),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a) => self.v4.covering(u32::from(a), f),
                None => self.v6.covering(u128::from(a), f),
            },
        }
    }

    /// Names of the lists containing `ip`, sorted (for `explain`).
    pub fn lists_of(&self, ip: IpAddr) -> Vec<String> {
        let mut ids = Vec::new();
        self.containing(ip, &mut |l| ids.extend_from_slice(l));
        ids.sort_unstable();
        ids.dedup();
        let mut names: Vec<String> =
            self.names.iter().filter(|(_, i)| ids.binary_search(i).is_ok()).map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    }
}

/// What a rule file is compiled against besides its own text: the managed lists, what an
/// unknown list name does, and the signature keys.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub managed: Arc<ManagedLists>,
    pub unknown_managed: UnknownManagedLists,
    pub signature_keys: Arc<super::signature::KeySet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_blanks_and_families() {
        let l = parse_list("# header\n10.0.0.0/8\n\n  192.0.2.7  # one host\n2001:db8::/32\n::ffff:198.51.100.0/120\n")
            .unwrap();
        assert_eq!(l.v4.len(), 3);
        assert_eq!(l.v6.len(), 1);
        assert_eq!(l.v4[2].to_string(), "198.51.100.0/24");
    }

    #[test]
    fn every_bad_line_is_named() {
        let e = parse_list("10.0.0.0/8\nnot-an-ip\n10.0.0.0/33\n").unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e[0].starts_with("line 2: malformed CIDR"), "{e:?}");
        assert!(e[1].starts_with("line 3:"), "{e:?}");
        let many: String = (0..30).map(|i| format!("bad{i}\n")).collect();
        let e = parse_list(&many).unwrap_err();
        assert_eq!(e.len(), 21);
        assert_eq!(e[20], "… and 10 more malformed lines");
    }

    #[test]
    fn lookup_names_the_lists() {
        let a = parse_list("10.0.0.0/8\n2001:db8::/32\n").unwrap();
        let b = parse_list("10.1.0.0/16\n").unwrap();
        let m = ManagedLists::build(vec![("auth0.low_reputation".into(), a), ("auth0.icloud_relay_proxy".into(), b)]);
        assert_eq!(m.lists_of("10.1.2.3".parse().unwrap()), ["auth0.icloud_relay_proxy", "auth0.low_reputation"]);
        assert_eq!(m.lists_of("10.2.0.1".parse().unwrap()), ["auth0.low_reputation"]);
        assert_eq!(m.lists_of("2001:db8::1".parse().unwrap()), ["auth0.low_reputation"]);
        assert!(m.lists_of("192.0.2.1".parse().unwrap()).is_empty());
        assert_eq!(m.entry_count(), 3);
        assert_eq!(m.index("auth0.low_reputation"), Some(0));
        assert_eq!(m.index("auth0.nope"), None);
    }
}
