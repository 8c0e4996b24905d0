//! `explain` and `test-rules`: evaluate the ACL offline with the same engine the proxy runs.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use crate::acl::{Decision, DefaultAction, RuleSet, Verdict};
use crate::scope::Scope;
use crate::signals::geo::{AsnDb, GeoDb};
use crate::signals::{canonical_ip, Signals};

#[derive(Args, Debug, Clone)]
pub struct RuleSource {
    /// Take rules and GeoIP databases from this gateway configuration.
    #[arg(short = 'c', long = "config", conflicts_with_all = ["rules", "geoip_db", "asn_db"])]
    pub config: Option<PathBuf>,
    /// A rule file (Auth0 Tenant ACL JSON array).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// MaxMind/ip-location-db country or city database.
    #[arg(long = "geoip-db")]
    pub geoip_db: Option<PathBuf>,
    /// ASN database.
    #[arg(long = "asn-db")]
    pub asn_db: Option<PathBuf>,
    /// Action when no rule applies (with --rules; a config file sets its own).
    #[arg(long = "default-action", value_parser = ["allow", "block"], default_value = "allow")]
    pub default_action: String,
}

pub struct LoadedRules {
    pub acl: RuleSet,
    pub geo: Option<GeoDb>,
    pub asn: Option<AsnDb>,
}

impl RuleSource {
    pub fn load(&self) -> Result<LoadedRules, Vec<String>> {
        if let Some(c) = &self.config {
            let s = crate::snapshot::Snapshot::load(c).map_err(|e| e.0)?;
            return Ok(LoadedRules { acl: s.acl, geo: s.geo, asn: s.asn });
        }
        let Some(rules) = &self.rules else {
            return Err(vec!["give -c gateway.toml or --rules FILE".into()]);
        };
        let default = if self.default_action == "block" { DefaultAction::Block } else { DefaultAction::Allow };
        let mut errors = Vec::new();
        let acl = std::fs::read(rules).map_err(|e| vec![format!("{}: {e}", rules.display())]).and_then(|b| {
            RuleSet::load(&b, default).map_err(|e| e.0.iter().map(|x| format!("{}: {x}", rules.display())).collect())
        });
        let geo = self
            .geoip_db
            .as_ref()
            .and_then(|p| crate::snapshot::load_country_db(p, "--geoip-db").map_err(|e| errors.push(e)).ok());
        let asn = self
            .asn_db
            .as_ref()
            .and_then(|p| crate::snapshot::load_asn_db(p, "--asn-db").map_err(|e| errors.push(e)).ok());
        if let Ok(acl) = &acl {
            errors.extend(
                missing_databases(acl, geo.as_ref(), asn.as_ref())
                    .into_iter()
                    .map(|e| format!("{}: {e}", rules.display())),
            );
        }
        match acl {
            Ok(acl) if errors.is_empty() => Ok(LoadedRules { acl, geo, asn }),
            Ok(_) => Err(errors),
            Err(mut e) => {
                e.extend(errors);
                Err(e)
            }
        }
    }
}

/// What `check` refuses about a rule file and its databases, for `--rules`
/// ([`RuleSet::missing_databases`]), in the words of the command line.
pub fn missing_databases(acl: &RuleSet, geo: Option<&GeoDb>, asn: Option<&AsnDb>) -> Vec<String> {
    use crate::acl::{CountryDatabase, MissingDatabase};
    let country = match geo {
        None => CountryDatabase::Absent,
        Some(g) => CountryDatabase::Loaded { database_type: g.database_type(), subdivisions: g.has_subdivisions() },
    };
    let list = |ids: &[String]| ids.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
    acl.missing_databases(country, asn.is_some())
        .into_iter()
        .map(|missing| match missing {
            MissingDatabase::Country { country, subdivision } => format!(
                "rules {} use geo_country_codes/geo_subdivision_codes, but no GeoIP database is given: \
                 add --geoip-db FILE (or use -c gateway.toml with geoip.country_db), as check requires",
                list(&[country, subdivision].concat())
            ),
            MissingDatabase::Subdivisions { rules, database_type } => format!(
                "rules {} use geo_subdivision_codes, but the GeoIP database ({database_type}) has no subdivisions; use a City database",
                list(&rules)
            ),
            MissingDatabase::Asn { rules } => format!(
                "rules {} use asns, but no ASN database is given: add --asn-db FILE (or use -c gateway.toml with \
                 geoip.asn_db), as check requires",
                list(&rules)
            ),
        })
        .collect()
}

/// `check --auth0-compat`: every rule Auth0 would refuse, and why (`acl::compat`).
pub fn auth0_compat(config: &std::path::Path) -> i32 {
    let snap = match crate::snapshot::Snapshot::load(config) {
        Ok(s) => s,
        Err(e) => {
            for x in e.0 {
                eprintln!("error: {}", crate::redact::redact(&x));
            }
            return 1;
        }
    };
    let ids: Vec<&str> = snap.acl.rule_ids().collect();
    let problems = crate::acl::compat::auth0_compat(snap.acl.rules(), &ids);
    let rules = snap.config.rules_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    for p in &problems {
        println!("auth0: {rules}: {p}");
    }
    if problems.is_empty() {
        println!("{rules}: Auth0 would take every rule ({} rules)", snap.acl.rule_count());
        0
    } else {
        let rules_refused: std::collections::BTreeSet<usize> = problems.iter().filter_map(|p| p.index).collect();
        println!(
            "{rules}: Auth0 would refuse {} of {} rules ({} problem(s))",
            rules_refused.len(),
            snap.acl.rule_count(),
            problems.len()
        );
        1
    }
}

/// The request, as given on the command line or in a test case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub ip: String,
    #[serde(default)]
    pub connecting_ip: Option<String>,
    #[serde(default)]
    pub ua: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub ja3: Option<String>,
    #[serde(default)]
    pub ja4: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    /// Override the GeoIP lookup (cases that do not depend on a database).
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub subdivisions: Option<Vec<String>>,
    #[serde(default)]
    pub asn: Option<u32>,
    /// The request's `client_id` (an extension signal: the host of a URL client_id is matched
    /// against `client_id_hosts`).
    #[serde(default)]
    pub client_id: Option<String>,
}

impl LoadedRules {
    pub fn signals(&self, r: &RequestSpec) -> Result<(Scope, Signals), String> {
        let ip: IpAddr = r.ip.trim().parse().map_err(|_| format!("invalid IP {:?}", r.ip))?;
        let conn: IpAddr = match &r.connecting_ip {
            Some(c) => c.trim().parse().map_err(|_| format!("invalid connecting IP {c:?}"))?,
            None => ip,
        };
        let scope = match r.scope.as_deref() {
            None => Scope::Dcr,
            Some(s) => {
                Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?} (dcr, management, authentication)"))?
            }
        };
        let mut s = Signals::from_ip(canonical_ip(ip), canonical_ip(conn));
        if let Some(g) = &self.geo {
            let info = g.lookup(s.client_ip);
            s.country = info.country;
            s.subdivisions = info.subdivisions;
        }
        if let Some(a) = &self.asn {
            s.asn = a.lookup(s.client_ip);
        }
        if let Some(c) = &r.country {
            s.country = Some(c.to_ascii_uppercase());
        }
        if let Some(sd) = &r.subdivisions {
            s.subdivisions = sd.iter().map(|x| x.to_ascii_uppercase()).collect();
        }
        if r.asn.is_some() {
            s.asn = r.asn;
        }
        s.user_agent = r.ua.clone();
        s.hostname = r.host.as_ref().map(|h| h.to_ascii_lowercase());
        s.ja3 = r.ja3.clone();
        s.ja4 = r.ja4.clone();
        Ok((scope, s))
    }

    /// The `client_id_hosts` value of the request: the host of its URL `client_id`, read as the
    /// proxy reads the query's (`core::target::client_id_url_host`).
    pub fn client_id_hosts(r: &RequestSpec) -> Vec<String> {
        r.client_id.as_deref().and_then(crate::core::target::client_id_url_host).into_iter().collect()
    }
}

pub fn decision_str(d: &Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Block => "block",
        Decision::Redirect(_) => "redirect",
    }
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub source: RuleSource,
    /// Client IP (after trusted-proxy resolution).
    #[arg(long)]
    pub ip: String,
    /// TCP peer; defaults to --ip.
    #[arg(long = "connecting-ip")]
    pub connecting_ip: Option<String>,
    #[arg(long)]
    pub ua: Option<String>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub ja3: Option<String>,
    #[arg(long)]
    pub ja4: Option<String>,
    /// The request's client_id; a URL's host is the `client_id_hosts` signal (an extension
    /// beyond Auth0's schema).
    #[arg(long = "client-id")]
    pub client_id: Option<String>,
    /// dcr, management or authentication.
    #[arg(long, default_value = "dcr")]
    pub scope: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn signals_json(s: &Signals, client_id_hosts: &[String]) -> serde_json::Value {
    serde_json::json!({
        "client_ip": s.client_ip.to_string(),
        "connecting_ip": s.connecting_ip.to_string(),
        "country": s.country,
        "subdivisions": s.subdivisions,
        "asn": s.asn,
        "user_agent": s.user_agent,
        "hostname": s.hostname,
        "ja3": s.ja3,
        "ja4": s.ja4,
        "client_id_hosts": client_id_hosts,
    })
}

pub fn explain(a: &ExplainArgs) -> i32 {
    let engine = match a.source.load() {
        Ok(e) => e,
        Err(errs) => {
            for e in errs {
                eprintln!("error: {e}");
            }
            return 2;
        }
    };
    let spec = RequestSpec {
        ip: a.ip.clone(),
        connecting_ip: a.connecting_ip.clone(),
        ua: a.ua.clone(),
        host: a.host.clone(),
        ja3: a.ja3.clone(),
        ja4: a.ja4.clone(),
        scope: Some(a.scope.clone()),
        client_id: a.client_id.clone(),
        ..Default::default()
    };
    let (scope, s) = match engine.signals(&spec) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let client_id_hosts = LoadedRules::client_id_hosts(&spec);
    let request = crate::acl::Request { client_id_hosts: &client_id_hosts, ..Default::default() };
    let v: Verdict = engine.acl.evaluate_with(scope, &s, &request);
    if a.json {
        let mut out = serde_json::json!({
            "decision": decision_str(&v.decision),
            "rule": v.rule.as_deref(),
            "logged": v.logged.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            // Monitoring mode: what each logged rule would have done (recorded, not executed).
            "monitored": v.logged.iter().map(|x| serde_json::json!({
                "rule": x.to_string(),
                "action": engine.acl.action_of(x).map(|(a, _)| a),
            })).collect::<Vec<_>>(),
            "scope": scope.as_str(),
            "signals": signals_json(&s, &client_id_hosts),
        });
        if let Decision::Redirect(uri) = &v.decision {
            out["redirect_uri"] = serde_json::Value::String(uri.to_string());
        }
        println!("{out}");
    } else {
        println!("scope:         {scope}");
        println!("client ip:     {}", s.client_ip);
        println!("connecting ip: {}", s.connecting_ip);
        println!("country:       {}", s.country.as_deref().unwrap_or("(none)"));
        println!(
            "subdivisions:  {}",
            if s.subdivisions.is_empty() { "(none)".into() } else { s.subdivisions.join(", ") }
        );
        println!("asn:           {}", s.asn.map(|a| a.to_string()).unwrap_or_else(|| "(none)".into()));
        println!("user agent:    {}", s.user_agent.as_deref().unwrap_or("(none)"));
        println!("hostname:      {}", s.hostname.as_deref().unwrap_or("(none)"));
        println!(
            "client_id host: {}",
            if client_id_hosts.is_empty() { "(none)".into() } else { client_id_hosts.join(", ") }
        );
        let logged: Vec<String> = v
            .logged
            .iter()
            .map(|x| match engine.acl.action_of(x) {
                Some((a, _)) if a != "log" => format!("{x} (monitoring: would {a})"),
                _ => x.to_string(),
            })
            .collect();
        println!("logged by:     {}", if logged.is_empty() { "(none)".into() } else { logged.join(", ") });
        match (&v.decision, &v.rule) {
            (Decision::Redirect(uri), Some(r)) => println!("decision:      redirect to {uri} (rule {r})"),
            (d, Some(r)) => println!("decision:      {} (rule {r})", decision_str(d)),
            (d, None) => println!("decision:      {} (default action, no rule matched)", decision_str(d)),
        }
    }
    0
}

#[derive(Args, Debug)]
pub struct TestRulesArgs {
    #[command(flatten)]
    pub source: RuleSource,
    /// Test cases: a JSON array of {name?, ip, connecting_ip?, ua?, host?, ja3?, ja4?, scope?,
    /// country?, subdivisions?, asn?, client_id?, expect: allow|block|redirect, rule?: id|null}.
    pub cases: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(flatten)]
    request: RequestSpec,
    expect: String,
    /// Absent: not checked; `null`: no rule decided (default action).
    #[serde(default, deserialize_with = "some_nullable")]
    rule: Option<Option<String>>,
}

fn some_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

pub fn test_rules(a: &TestRulesArgs) -> i32 {
    let engine = match a.source.load() {
        Ok(e) => e,
        Err(errs) => {
            for e in errs {
                eprintln!("error: {e}");
            }
            return 2;
        }
    };
    let cases: Vec<Case> = match std::fs::read(&a.cases)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {e}", a.cases.display());
            return 2;
        }
    };
    let mut failed = 0;
    for (i, c) in cases.iter().enumerate() {
        let label = c.request.name.clone().unwrap_or_else(|| format!("case {i}"));
        if !["allow", "block", "redirect"].contains(&c.expect.as_str()) {
            println!("FAIL {label}: expect must be allow, block or redirect (got {:?})", c.expect);
            failed += 1;
            continue;
        }
        let (scope, s) = match engine.signals(&c.request) {
            Ok(x) => x,
            Err(e) => {
                println!("FAIL {label}: {e}");
                failed += 1;
                continue;
            }
        };
        let client_id_hosts = LoadedRules::client_id_hosts(&c.request);
        let v = engine.acl.evaluate_with(
            scope,
            &s,
            &crate::acl::Request { client_id_hosts: &client_id_hosts, ..Default::default() },
        );
        let got = decision_str(&v.decision);
        let mut problems = Vec::new();
        if got != c.expect {
            problems.push(format!("expected {}, got {got}", c.expect));
        }
        if let Some(want_rule) = &c.rule {
            let got_rule = v.rule.as_deref().map(str::to_string);
            if &got_rule != want_rule {
                problems.push(format!(
                    "expected rule {}, got {}",
                    want_rule.as_deref().unwrap_or("(default)"),
                    got_rule.as_deref().unwrap_or("(default)")
                ));
            }
        }
        if !problems.is_empty() {
            failed += 1;
            println!("FAIL {label}: {} (signals {})", problems.join("; "), signals_json(&s, &client_id_hosts));
        }
    }
    println!("{} case(s), {} passed, {} failed", cases.len(), cases.len() - failed, failed);
    if failed > 0 {
        1
    } else {
        0
    }
}
