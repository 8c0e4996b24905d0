//! Tenant ACL: a pure rule engine over request [`Signals`], reading Auth0's Tenant ACL
//! rule shape (`GET /api/v2/network-acls` exports load unchanged).
//!
//! ```text
//! RuleSet::load(json, DefaultAction::Allow)?  // validate everything, compile indexes
//!     .evaluate(Scope::Dcr, &signals)         // -> Verdict { decision, rule, logged }
//! ```
//!
//! Semantics (Auth0's documented engine): active rules run in ascending `priority` (ties in
//! file order), only those whose scope covers the request's scope. Within a signal values
//! are ORed; different signals are ANDed, the `ipv4_cidrs`/`ipv6_cidrs` pair counting as one
//! signal (likewise the `connecting_` pair). `match` holds when every given signal equals
//! one of its values, `not_match` when every given signal equals none of them; a rule with
//! both needs both; `match_all` matches every request. A signal the request does not have
//! equals no value. The first matching rule decides, except rules in monitoring mode (`log`,
//! alone or with another action), which are recorded and evaluation goes on. No deciding
//! rule: the default action. See `docs/acl.md` for the rule author's reference.
//!
//! No I/O, no async; evaluation does not scan entries (see `eval`).

pub mod compat;
mod compile;
mod error;
mod eval;
pub mod managed;
mod net;
pub mod schema;
pub mod signature;
pub mod summary;
mod text;

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use error::{AclError, AclErrors};
pub use managed::{Env, ManagedLists, UnknownManagedLists};

use crate::scope::Scope;
use crate::signals::Signals;

/// What happens when no rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    Allow,
    Block,
}

/// The outcome for a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    Block,
    /// Redirect to this absolute http(s) URL.
    Redirect(Arc<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// Id of the deciding rule; `None` when the default action applied.
    pub rule: Option<Arc<str>>,
    /// Ids of the matching `log` rules met before the decision, in evaluation order.
    pub logged: Vec<Arc<str>>,
}

/// What a request carries besides its [`Signals`]: the id of the key whose RFC 9421
/// signature verified (`signature::verify`), if any, and the hosts of the URL `client_id`s
/// of its query (`client_id_hosts`, ASCII lower case; read only when
/// [`RuleSet::uses_client_id_hosts`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    pub signature_key: Option<&'a str>,
    pub client_id_hosts: &'a [String],
}

/// The GeoIP country (or City) database a rule set is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountryDatabase<'a> {
    /// None configured.
    Absent,
    /// Configured but not read (its own error is reported where it was read).
    Unread,
    /// Loaded: its type, and whether it has subdivisions (a City database).
    Loaded { database_type: &'a str, subdivisions: bool },
}

/// A signal active rules look at without the database that serves it
/// ([`RuleSet::missing_databases`]); rule ids in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingDatabase {
    /// No GeoIP database: the rules using geo_country_codes, and those using
    /// geo_subdivision_codes.
    Country { country: Vec<String>, subdivision: Vec<String> },
    /// The GeoIP database has no subdivisions (not a City database).
    Subdivisions { rules: Vec<String>, database_type: String },
    /// No ASN database.
    Asn { rules: Vec<String> },
}

/// A validated, compiled rule file. `Send + Sync`; share it in an `Arc` (swap a new one in
/// on reload).
pub struct RuleSet {
    default_action: DefaultAction,
    /// The rules as loaded, file order (for an admin API to serialize back).
    rules: Vec<schema::Rule>,
    /// Effective ids, file order.
    ids: Vec<Arc<str>>,
    entries: usize,
    engine: eval::Engine,
    /// What loaded but deserves a word (an unknown managed list with `never_match`).
    warnings: Vec<AclError>,
    /// `auth0_managed` names that are not configured, sorted, deduplicated.
    unknown_managed: Vec<String>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("default_action", &self.default_action)
            .field("rules", &self.rules.len())
            .field("active_rules", &self.engine.rules.len())
            .field("entries", &self.entries)
            .finish()
    }
}

/// `inner` is `outer` or a path below it (`rule.match` is within `rule`, `rule.matchx` is
/// not).
fn is_within(inner: &str, outer: &str) -> bool {
    outer.is_empty() || inner.strip_prefix(outer).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

impl RuleSet {
    /// Parses, validates and compiles a rule file: a JSON array of Auth0 Tenant ACL rule
    /// objects (or Auth0's paged `{"network_acls": [...], ...}` list response). Every
    /// problem in every rule is reported.
    pub fn load(json: &[u8], default_action: DefaultAction) -> Result<RuleSet, AclErrors> {
        Self::load_with(json, default_action, &Env::default())
    }

    /// [`RuleSet::load`] against managed lists and signature keys.
    pub fn load_with(json: &[u8], default_action: DefaultAction, env: &Env) -> Result<RuleSet, AclErrors> {
        let doc: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| AclErrors(vec![AclError::file("", format!("invalid JSON: {e}"))]))?;
        let elements = schema::rule_elements(doc).map_err(|e| AclErrors(vec![e]))?;
        let mut errors = Vec::new();
        let mut ids = Vec::with_capacity(elements.len());
        let mut rules = Vec::with_capacity(elements.len());
        for (index, v) in elements.into_iter().enumerate() {
            let id = match v.get("id") {
                None | Some(serde_json::Value::Null) => Some(compile::effective_id(None, index)),
                Some(_) => schema::raw_id(&v).map(str::to_owned),
            };
            match schema::check_rule_value(v) {
                Ok(rule) => rules.push((index, rule)),
                Err(shape) => {
                    // Also check the values that are left, leaving out problems that are
                    // consequences of the shape ones (same field, or one inside the other).
                    let mut more = Vec::new();
                    if let Some(rule) = &shape.salvaged {
                        compile::check_rule(index, rule, env, &mut more, &mut Vec::new());
                    }
                    let related = |f: &str| {
                        shape.problems.iter().any(|(p, _)| p.is_empty() || is_within(f, p) || is_within(p, f))
                    };
                    let more: Vec<(String, String)> =
                        more.into_iter().filter(|e| !related(&e.field)).map(|e| (e.field, e.message)).collect();
                    errors.extend(shape.problems.into_iter().chain(more).map(|(field, message)| AclError {
                        index: Some(index),
                        id: id.clone(),
                        field,
                        message,
                    }));
                }
            }
            ids.push((index, id));
        }
        Self::compile(rules, ids, errors, default_action, env)
    }

    /// Validates and compiles rules built in code (an admin API). Indexes in errors are
    /// positions in `rules`.
    pub fn from_rules(rules: Vec<schema::Rule>, default_action: DefaultAction) -> Result<RuleSet, AclErrors> {
        let ids = rules.iter().enumerate().map(|(i, r)| (i, Some(compile::effective_id(r.id.as_deref(), i)))).collect();
        let rules = rules.into_iter().enumerate().collect();
        Self::compile(rules, ids, Vec::new(), default_action, &Env::default())
    }

    fn compile(
        rules: Vec<(usize, schema::Rule)>,
        ids: Vec<(usize, Option<String>)>,
        mut errors: Vec<AclError>,
        default_action: DefaultAction,
        env: &Env,
    ) -> Result<RuleSet, AclErrors> {
        let mut checked = Vec::with_capacity(rules.len());
        let mut warnings = Vec::new();
        for (index, rule) in &rules {
            if let Some(c) = compile::check_rule(*index, rule, env, &mut errors, &mut warnings) {
                checked.push(c);
            }
        }
        compile::check_duplicates(&ids, &mut errors);
        if rules.len() > compile::MAX_RULES {
            errors
                .push(AclError::file("", format!("too many rules ({}, at most {})", rules.len(), compile::MAX_RULES)));
        }
        if !errors.is_empty() {
            // File order; within a rule, the order found.
            errors.sort_by_key(|e| e.index.map_or(0, |i| i + 1));
            return Err(AclErrors(errors));
        }
        let engine = compile::build(checked, env);
        let entries = rules.iter().map(|(_, r)| compile::entry_count(r)).sum();
        let ids = rules.iter().map(|(i, r)| Arc::from(compile::effective_id(r.id.as_deref(), *i))).collect();
        let mut unknown_managed: Vec<String> = rules
            .iter()
            .flat_map(|(_, r)| [&r.rule.match_, &r.rule.not_match])
            .flatten()
            .flat_map(|c| c.auth0_managed.iter().flatten())
            .filter(|n| env.managed.index(n).is_none())
            .cloned()
            .collect();
        unknown_managed.sort();
        unknown_managed.dedup();
        Ok(RuleSet {
            default_action,
            rules: rules.into_iter().map(|(_, r)| r).collect(),
            ids,
            entries,
            engine,
            warnings,
            unknown_managed,
        })
    }

    /// No rules: every request gets `default_action`.
    pub fn empty(default_action: DefaultAction) -> RuleSet {
        RuleSet {
            default_action,
            rules: Vec::new(),
            ids: Vec::new(),
            entries: 0,
            engine: compile::build(Vec::new(), &Env::default()),
            warnings: Vec::new(),
            unknown_managed: Vec::new(),
        }
    }

    /// The verdict for one request.
    pub fn evaluate(&self, scope: Scope, signals: &Signals) -> Verdict {
        self.engine.evaluate(scope, signals, &Request::default(), self.default_action)
    }

    /// The verdict for one request with what it carries besides its signals.
    pub fn evaluate_with(&self, scope: Scope, signals: &Signals, request: &Request<'_>) -> Verdict {
        self.engine.evaluate(scope, signals, request, self.default_action)
    }

    /// What loaded but deserves a word, file order (an `auth0_managed` list that is not
    /// configured, with `unknown_managed_lists = "never_match"`).
    pub fn warnings(&self) -> &[AclError] {
        &self.warnings
    }

    /// `auth0_managed` names the rules give that are not configured (sorted).
    pub fn unknown_managed_lists(&self) -> &[String] {
        &self.unknown_managed
    }

    /// Some active rule looks at `http_message_signature` (requests need verifying).
    pub fn uses_signatures(&self) -> bool {
        self.engine.present[eval::Kind::Signature as usize]
    }

    /// Some active rule looks at `client_id_hosts` (the request's URL `client_id` host is
    /// needed).
    pub fn uses_client_id_hosts(&self) -> bool {
        self.engine.present[eval::Kind::ClientIdHost as usize]
    }

    /// The rule with this effective id.
    pub fn rule(&self, id: &str) -> Option<&schema::Rule> {
        self.ids.iter().position(|i| &**i == id).and_then(|p| self.rules.get(p))
    }

    /// What a rule does, as written: `allow`, `block`, `redirect` or `log`, and whether it is
    /// in monitoring mode (`log` with another action, or `log` alone).
    pub fn action_of(&self, id: &str) -> Option<(&'static str, bool)> {
        self.rule(id).map(|r| r.rule.action.describe())
    }

    pub fn default_action(&self) -> DefaultAction {
        self.default_action
    }

    /// Rules in the file, inactive ones included.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Active rules (the ones evaluated).
    pub fn active_rule_count(&self) -> usize {
        self.engine.rules.len()
    }

    /// Values (CIDRs, codes, ASNs, user agents, …) over all rules, both `match` and
    /// `not_match`, inactive rules included.
    pub fn entry_count(&self) -> usize {
        self.entries
    }

    /// Active rules that look at a signal served by a database, by id: `(ids using
    /// geo_country_codes, … geo_subdivision_codes, … asns)`.
    pub fn rules_using_databases(&self) -> [Vec<&str>; 3] {
        let mut out: [Vec<&str>; 3] = Default::default();
        for (rule, id) in self.rules().iter().zip(self.rule_ids()) {
            if !rule.active {
                continue;
            }
            let sides = [&rule.rule.match_, &rule.rule.not_match];
            let uses = |f: fn(&schema::Conditions) -> bool| sides.iter().any(|c| c.as_ref().is_some_and(f));
            if uses(|c| c.geo_country_codes.as_ref().is_some_and(|v| !v.is_empty())) {
                out[0].push(id);
            }
            if uses(|c| c.geo_subdivision_codes.as_ref().is_some_and(|v| !v.is_empty())) {
                out[1].push(id);
            }
            if uses(|c| c.asns.as_ref().is_some_and(|v| !v.is_empty())) {
                out[2].push(id);
            }
        }
        out
    }

    /// The signals active rules look at without the database that serves them. Such a rule
    /// would silently never match (or, under `not_match`, always hold), so every loader
    /// refuses it — the snapshot (start, reload, `check`), the admin API's rule writes and
    /// `explain`/`test-rules` — each in its own words; this is the one decision they share.
    pub fn missing_databases(&self, country: CountryDatabase<'_>, asn: bool) -> Vec<MissingDatabase> {
        let [countries, subdivisions, asns] = self.rules_using_databases();
        let owned = |ids: Vec<&str>| ids.into_iter().map(str::to_string).collect::<Vec<_>>();
        let mut out = Vec::new();
        match country {
            CountryDatabase::Absent if !(countries.is_empty() && subdivisions.is_empty()) => {
                out.push(MissingDatabase::Country { country: owned(countries), subdivision: owned(subdivisions) })
            }
            CountryDatabase::Loaded { database_type, subdivisions: false } if !subdivisions.is_empty() => {
                out.push(MissingDatabase::Subdivisions {
                    rules: owned(subdivisions),
                    database_type: database_type.to_string(),
                })
            }
            _ => {}
        }
        if !asn && !asns.is_empty() {
            out.push(MissingDatabase::Asn { rules: owned(asns) });
        }
        out
    }

    /// Effective ids of all rules (explicit, or `rule-<index>`), file order, inactive
    /// included.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(|s| &**s)
    }

    /// The rules as loaded, file order.
    pub fn rules(&self) -> &[schema::Rule] {
        &self.rules
    }
}
