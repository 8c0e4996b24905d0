//! The token file: `[[token]]` entries with a label, the SHA-256 of the token, optional
//! expiry, use limit, admin scopes and per-partner `[dcr]` overrides.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;

use super::{digest, is_valid_label, TokenError, ADMIN_SCOPES};
use crate::dcr::{Policy, SecurityMode};

/// `[dcr]` keys a token entry may override for the registrations made with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyOverrides {
    /// `security_mode`, e.g. `"permissive"` for a trusted partner.
    pub security_mode: Option<SecurityMode>,
    /// `redirect_host_allow`, e.g. `["*.partner-x.example"]` to pin a partner to its domains.
    pub redirect_host_allow: Option<Vec<String>>,
    /// `allowed_scopes`.
    pub allowed_scopes: Option<Vec<String>>,
}

impl PolicyOverrides {
    /// `base` with the overridden keys replaced (a clone: precompute it per snapshot if hot).
    pub fn apply(&self, base: &Policy) -> Policy {
        let mut p = base.clone();
        if let Some(m) = self.security_mode {
            p.security_mode = m;
        }
        if let Some(a) = &self.redirect_host_allow {
            p.redirect_host_allow = a.clone();
        }
        if let Some(s) = &self.allowed_scopes {
            p.allowed_scopes = Some(s.clone());
        }
        p
    }

    pub fn is_empty(&self) -> bool {
        self.security_mode.is_none() && self.redirect_host_allow.is_none() && self.allowed_scopes.is_none()
    }
}

/// One `[[token]]` entry. Holds the token's digest, never the token. `Debug` and `Display`
/// show the label and the first 8 hex digits of the digest.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub label: String,
    /// Lower-case hex SHA-256 of the token.
    pub sha256_hex: String,
    /// As written (RFC 3339), informational.
    pub created_at: Option<String>,
    pub expires_at: Option<SystemTime>,
    pub max_uses: Option<u64>,
    /// Admin API permissions (admin tokens), each one of [`ADMIN_SCOPES`].
    pub scopes: Vec<String>,
    pub overrides: PolicyOverrides,
}

impl TokenEntry {
    /// `sha256:` and the first 8 hex digits: enough to tell entries apart in logs.
    pub fn hash_prefix(&self) -> &str {
        self.sha256_hex.get(..8).unwrap_or(&self.sha256_hex)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("label", &self.label)
            .field("sha256", &format_args!("{}…", self.hash_prefix()))
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at.map(humantime::format_rfc3339_seconds))
            .field("max_uses", &self.max_uses)
            .field("scopes", &self.scopes)
            .field("overrides", &self.overrides)
            .finish()
    }
}

impl fmt::Display for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {:?} (sha256 {}…)", self.label, self.hash_prefix())
    }
}

/// A parsed token file, indexed by digest. `Send + Sync`; rebuilt on reload.
#[derive(Clone, Default)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
    digests: Vec<[u8; 32]>,
    by_digest: HashMap<[u8; 32], usize>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.entries).finish()
    }
}

impl TokenSet {
    pub fn empty() -> TokenSet {
        TokenSet::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in file order.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    pub fn get(&self, label: &str) -> Option<&TokenEntry> {
        self.entries.iter().find(|e| e.label == label)
    }

    pub(crate) fn contains_digest(&self, d: &[u8; 32]) -> bool {
        self.by_digest.contains_key(d)
    }

    /// The entry of `presented`, if known and not expired. The token is hashed, looked up by
    /// digest, and the digest compared in constant time. `max_uses` is [`super::UseCounter`]'s.
    pub fn verify(&self, presented: &str, now: SystemTime) -> Result<&TokenEntry, TokenError> {
        let d = digest(presented);
        let Some(&i) = self.by_digest.get(&d) else {
            return Err(TokenError::Unknown);
        };
        if !bool::from(self.digests[i].ct_eq(&d)) {
            return Err(TokenError::Unknown);
        }
        let entry = &self.entries[i];
        if entry.is_expired(now) {
            return Err(TokenError::Expired);
        }
        Ok(entry)
    }

    /// Checks each entry's overrides against the configured `[dcr]` policy (the overridden
    /// policy must itself be valid, e.g. `strict` with the base's default grant types).
    pub fn validate_against(&self, base: &Policy) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.overrides.is_empty() {
                continue;
            }
            if let Err(v) = e.overrides.apply(base).validate() {
                errs.extend(
                    v.into_iter().map(|m| format!("token[{i}] (label {:?}): with its overrides, {m}", e.label)),
                );
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Parses a token file. Every problem is reported, each naming the entry (0-based index
    /// and label) and the key: `token[2] (label "x"): expires_at: not RFC 3339 ...`.
    pub fn parse(text: &str) -> Result<TokenSet, Vec<String>> {
        let table: toml::Table = toml::from_str(text).map_err(|e| vec![toml_error(text, &e)])?;
        let mut errs = Vec::new();
        for key in table.keys().filter(|k| *k != "token") {
            errs.push(format!("{key}: unknown key (the file holds [[token]] entries)"));
        }
        let items = match table.get("token") {
            None => &[][..],
            Some(toml::Value::Array(a)) => &a[..],
            Some(_) => {
                errs.push("token: must be an array of tables ([[token]])".into());
                &[][..]
            }
        };
        let mut set = TokenSet::default();
        // File index of each label and digest seen, for duplicate reports.
        let mut labels: HashMap<String, usize> = HashMap::new();
        let mut digests: HashMap<[u8; 32], usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let Some(t) = item.as_table() else {
                errs.push(format!("token[{i}]: must be a table"));
                continue;
            };
            let before = errs.len();
            let entry = parse_entry(i, t, &mut errs);
            let loc = location(i, &entry.label);
            if !entry.label.is_empty() {
                match labels.get(&entry.label) {
                    Some(j) => errs.push(format!("{loc}: label: duplicate of token[{j}]")),
                    None => drop(labels.insert(entry.label.clone(), i)),
                }
            }
            let d = hex::decode(&entry.sha256_hex).ok().and_then(|v| <[u8; 32]>::try_from(v).ok());
            if let Some(d) = d {
                match digests.get(&d) {
                    Some(j) => errs.push(format!("{loc}: sha256: duplicate of token[{j}]")),
                    None => drop(digests.insert(d, i)),
                }
                if errs.len() == before {
                    set.by_digest.insert(d, set.entries.len());
                    set.digests.push(d);
                    set.entries.push(entry);
                }
            }
        }
        if errs.is_empty() {
            Ok(set)
        } else {
            Err(errs)
        }
    }
}

fn location(i: usize, label: &str) -> String {
    if label.is_empty() {
        format!("token[{i}]")
    } else {
        format!("token[{i}] (label {label:?})")
    }
}

/// Reads one entry; problems go to `errs`. An invalid label comes back empty.
fn parse_entry(i: usize, t: &toml::Table, errs: &mut Vec<String>) -> TokenEntry {
    let label = match t.get("label") {
        Some(toml::Value::String(l)) if is_valid_label(l) => l.clone(),
        _ => String::new(),
    };
    let loc = location(i, &label);
    let mut err = |key: &str, msg: &str| errs.push(format!("{loc}: {key}: {msg}"));
    match t.get("label") {
        None => err("label", "required"),
        Some(toml::Value::String(_)) if label.is_empty() => {
            err("label", "must be 1 to 64 characters of A-Z a-z 0-9 . _ -")
        }
        Some(toml::Value::String(_)) => {}
        Some(_) => err("label", "must be a string"),
    }
    let mut entry = TokenEntry {
        label,
        sha256_hex: String::new(),
        created_at: None,
        expires_at: None,
        max_uses: None,
        scopes: Vec::new(),
        overrides: PolicyOverrides::default(),
    };
    match t.get("sha256") {
        None => err("sha256", "required (the lower-case hex SHA-256 of the token)"),
        Some(toml::Value::String(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            entry.sha256_hex = h.to_ascii_lowercase();
        }
        Some(_) => err("sha256", "must be 64 hex digits"),
    }
    for (key, value) in t {
        match key.as_str() {
            "label" | "sha256" => {}
            "created_at" | "expires_at" => {
                let text = match value {
                    toml::Value::String(s) => Some(s.clone()),
                    toml::Value::Datetime(d) => Some(d.to_string()),
                    _ => None,
                };
                match text.as_deref().and_then(parse_rfc3339) {
                    None => err(key, "not RFC 3339 (e.g. \"2026-12-28T13:00:00Z\")"),
                    Some(at) if key == "expires_at" => entry.expires_at = Some(at),
                    Some(_) => entry.created_at = text,
                }
            }
            "max_uses" => match value.as_integer() {
                Some(n) if n >= 1 => entry.max_uses = Some(n as u64),
                _ => err(key, "must be a positive integer"),
            },
            "scopes" => match strings(value) {
                None => err(key, "must be an array of strings"),
                Some(list) => {
                    for (k, s) in list.iter().enumerate() {
                        if !ADMIN_SCOPES.contains(&s.as_str()) {
                            err(
                                &format!("scopes[{k}]"),
                                &format!("unknown scope (one of {})", ADMIN_SCOPES.join(", ")),
                            );
                        } else if list[..k].contains(s) {
                            err(&format!("scopes[{k}]"), "duplicate");
                        }
                    }
                    entry.scopes = list;
                }
            },
            "security_mode" => match value.as_str() {
                Some("strict") => entry.overrides.security_mode = Some(SecurityMode::Strict),
                Some("permissive") => entry.overrides.security_mode = Some(SecurityMode::Permissive),
                _ => err(key, "must be \"strict\" or \"permissive\""),
            },
            "redirect_host_allow" => match strings(value) {
                Some(list) => entry.overrides.redirect_host_allow = Some(list),
                None => err(key, "must be an array of strings"),
            },
            "allowed_scopes" => match strings(value) {
                Some(list) => entry.overrides.allowed_scopes = Some(list),
                None => err(key, "must be an array of strings"),
            },
            _ => err(key, "unknown key"),
        }
    }
    // Syntax of the overridden values: the default policy with the overrides applied is
    // valid unless an overridden value is not (validate_against checks the real base).
    if !entry.overrides.is_empty() {
        if let Err(v) = entry.overrides.apply(&Policy::default()).validate() {
            for m in v {
                errs.push(format!("{loc}: {}", m.strip_prefix("dcr.").unwrap_or(&m)));
            }
        }
    }
    entry
}

fn strings(v: &toml::Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
}

/// `line L, column C: message` (the toml crate's own rendering quotes the offending line).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {col}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

/// RFC 3339 date-time (`2026-12-28T13:00:00Z`, `...13:00:00.5+02:00`; `t`/`z` in any case).
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    if !s.is_ascii() || s.len() < 20 {
        return None;
    }
    let mut s = s.to_string();
    s.replace_range(10..11, &s[10..11].to_ascii_uppercase());
    if s.ends_with('z') || s.ends_with('Z') {
        s.pop();
        return humantime::parse_rfc3339(&format!("{s}Z")).ok();
    }
    let (base, off) = s.split_at(s.len() - 6);
    let o = off.as_bytes();
    let sign = match o[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let num = |a: u8, b: u8| {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| u64::from(a - b'0') * 10 + u64::from(b - b'0'))
    };
    let (hh, mm) = (num(o[1], o[2])?, num(o[4], o[5])?);
    if o[3] != b':' || hh > 23 || mm > 59 || base.len() < 19 {
        return None;
    }
    let local = humantime::parse_rfc3339(&format!("{base}Z")).ok()?;
    let offset = Duration::from_secs(hh * 3600 + mm * 60);
    if sign > 0 {
        local.checked_sub(offset)
    } else {
        local.checked_add(offset)
    }
}
