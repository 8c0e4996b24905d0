//! The console's pages: askama templates (`templates/console/*.html`, compiled into the binary
//! and HTML-escaped by default) and the view models they read. Pure: built from a snapshot, the
//! match history and audit lines; no I/O.

use std::fmt::Write as _;

use askama::Template;
use serde_json::Value;

use super::form::{self, RuleForm};
use super::history::History;
use super::session::Notice;
use crate::acl::schema::{Conditions, Rule, SIGNAL_NAMES};

/// What every page's frame needs: who is signed in, the CSRF token for forms, the current page.
pub struct Chrome {
    pub signed_in: bool,
    pub label: String,
    pub csrf: String,
    pub nav: String,
    pub notice: Option<Notice>,
    /// The token has no write scope at all.
    pub read_only: bool,
}

impl Chrome {
    pub fn anonymous() -> Chrome {
        Chrome {
            signed_in: false,
            label: String::new(),
            csrf: String::new(),
            nav: String::new(),
            notice: None,
            read_only: true,
        }
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub heading: String,
    pub text: String,
    pub back: String,
}

pub struct ActionCounts {
    pub action: String,
    pub m5: u64,
    pub h1: u64,
    pub d1: u64,
}

pub struct RuleRow {
    /// 1-based position in evaluation order.
    pub order: usize,
    pub id: String,
    /// The id, percent-encoded for a path segment.
    pub path_id: String,
    /// The id made safe for an HTML `id` attribute.
    pub anchor: String,
    pub description: String,
    pub active: bool,
    pub priority: String,
    pub action: &'static str,
    pub action_label: &'static str,
    /// Monitoring mode: `log`, alone or beside the action (recorded, not executed).
    pub monitoring: bool,
    /// `log` alone: enforcing needs an action to be chosen.
    pub log_only: bool,
    pub redirect_uri: String,
    pub scope: String,
    pub signals: Vec<String>,
    pub counts: Vec<ActionCounts>,
    pub spark_hour: String,
    pub spark_day: String,
}

#[derive(Template)]
#[template(path = "console/rules.html")]
pub struct RulesPage {
    pub chrome: Chrome,
    /// Why no rule can be shown (no rules file configured).
    pub unavailable: Option<String>,
    pub default_action: &'static str,
    pub etag: String,
    pub etag_short: String,
    pub rules: Vec<RuleRow>,
    pub can_create: bool,
    pub can_update: bool,
    pub can_delete: bool,
}

pub struct SignalField {
    /// The form name: `match.ipv4_cidrs`.
    pub name: String,
    pub label: &'static str,
    pub text: String,
    pub error: Option<String>,
}

pub struct Side {
    pub legend: &'static str,
    pub help: &'static str,
    /// A problem with the whole `match`/`not_match` object.
    pub error: Option<String>,
    pub fields: Vec<SignalField>,
}

#[derive(Template)]
#[template(path = "console/rule_edit.html")]
pub struct RuleEditPage {
    pub chrome: Chrome,
    pub is_new: bool,
    pub form: RuleForm,
    /// Where the form posts.
    pub action: String,
    pub etag: String,
    /// `(form field, message)` from the API's answer.
    pub errors: Vec<(String, String)>,
    /// Problems without a field of their own.
    pub general: Vec<String>,
    /// The API answered 412: the file changed since the form was loaded.
    pub conflict: bool,
    pub reload_href: String,
    pub actions: &'static [&'static str],
    pub scopes: &'static [&'static str],
    pub sides: Vec<Side>,
}

impl RuleEditPage {
    /// The messages for one form field, joined.
    pub fn err(&self, field: &str) -> Option<String> {
        field_error(&self.errors, field)
    }
}

fn field_error(errors: &[(String, String)], field: &str) -> Option<String> {
    let msgs: Vec<&str> = errors.iter().filter(|(f, _)| f == field).map(|(_, m)| m.as_str()).collect();
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

/// Human labels of the signals, in [`SIGNAL_NAMES`] order.
pub fn signal_label(name: &str) -> &'static str {
    match name {
        "asns" => "ASNs",
        "geo_country_codes" => "Countries (ISO 3166-1)",
        "geo_subdivision_codes" => "Subdivisions (ISO 3166-2, e.g. US-NY)",
        "ipv4_cidrs" => "IPv4 addresses / CIDRs",
        "ipv6_cidrs" => "IPv6 addresses / CIDRs",
        "ja3_fingerprints" => "JA3 fingerprints",
        "ja4_fingerprints" => "JA4 fingerprints",
        "user_agents" => "User agents",
        "hostnames" => "Hostnames",
        "connecting_ipv4_cidrs" => "Connecting IPv4 / CIDRs (TCP peer)",
        "connecting_ipv6_cidrs" => "Connecting IPv6 / CIDRs (TCP peer)",
        "auth0_managed" => "Auth0-managed lists (e.g. auth0.low_reputation)",
        "http_message_signature" => "HTTP message signature key ids (RFC 9421)",
        "client_id_hosts" => "client_id URL hosts (extension, not Auth0's: example.com, *.example.com)",
        _ => "Signal",
    }
}

impl RuleEditPage {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chrome: Chrome,
        is_new: bool,
        form: RuleForm,
        action: String,
        etag: String,
        errors: Vec<(String, String)>,
        general: Vec<String>,
        conflict: bool,
        reload_href: String,
    ) -> RuleEditPage {
        let side = |key: &'static str, texts: &[String], legend, help| Side {
            legend,
            help,
            error: field_error(&errors, key),
            fields: SIGNAL_NAMES
                .iter()
                .zip(texts)
                .map(|(s, t)| {
                    let name = format!("{key}.{s}");
                    SignalField { error: field_error(&errors, &name), name, label: signal_label(s), text: t.clone() }
                })
                .collect(),
        };
        let sides = vec![
            side(
                "match",
                &form.match_,
                "Match",
                "The rule applies when every signal given here equals one of its values.",
            ),
            side(
                "not_match",
                &form.not_match,
                "Not match",
                "The rule applies when every signal given here equals none of its values.",
            ),
        ];
        RuleEditPage {
            chrome,
            is_new,
            form,
            action,
            etag,
            errors,
            general,
            conflict,
            reload_href,
            actions: &form::ACTIONS,
            scopes: &form::SCOPES,
            sides,
        }
    }
}

/// A summary line per signal: `user agents: BadBot, Evil` / `not countries: US`.
pub fn signals_summary(rule: &Rule) -> Vec<String> {
    fn lines(c: Option<&Conditions>, negated: bool, out: &mut Vec<String>) {
        let Some(c) = c else { return };
        let Ok(Value::Object(m)) = serde_json::to_value(c) else { return };
        for name in SIGNAL_NAMES {
            let items = match m.get(*name) {
                Some(Value::Array(items)) => items.clone(),
                Some(Value::Object(o)) => o.get("keys").and_then(Value::as_array).cloned().unwrap_or_default(),
                _ => continue,
            };
            if items.is_empty() {
                continue;
            }
            let vals: Vec<String> = items
                .iter()
                .take(4)
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => o.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                    other => other.to_string(),
                })
                .collect();
            let more = if items.len() > 4 { format!(" (+{} more)", items.len() - 4) } else { String::new() };
            let label = signal_label(name).split(" (").next().unwrap_or(name);
            out.push(format!("{}{label}: {}{more}", if negated { "not " } else { "" }, vals.join(", ")));
        }
    }
    let mut out = Vec::new();
    if rule.rule.match_all == Some(true) {
        out.push("every request (match_all)".to_string());
    }
    lines(rule.rule.match_.as_ref(), false, &mut out);
    lines(rule.rule.not_match.as_ref(), true, &mut out);
    out
}

/// A bar chart as inline SVG: one bar per bin, heights relative to the largest, drawn as two
/// paths (bins with matches, empty bins as a baseline mark) to keep a page of many rules small.
/// Numbers only go into it, so it is emitted unescaped (`|safe`); `aria-label` says what it
/// shows, with the counts.
pub fn sparkline(bins: &[u64], what: &str) -> String {
    let (w, h, gap) = (5u32, 28u32, 2u32);
    let width = bins.len() as u32 * (w + gap);
    let max = bins.iter().copied().max().unwrap_or(0);
    let total: u64 = bins.iter().sum();
    let (mut bars, mut zeros) = (String::new(), String::new());
    for (i, v) in bins.iter().enumerate() {
        let x = i as u32 * (w + gap);
        if *v == 0 {
            let _ = write!(zeros, "M{x} {}h{w}v1h-{w}z", h - 1);
        } else {
            let bar = ((*v as f64 / max as f64) * f64::from(h - 2)).ceil().max(1.0) as u32;
            let _ = write!(bars, "M{x} {h}v-{bar}h{w}v{bar}z");
        }
    }
    let counts: Vec<String> = bins.iter().map(u64::to_string).collect();
    format!(
        "<svg class=\"spark\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{h}\" \
         viewBox=\"0 0 {width} {h}\" role=\"img\" aria-label=\"{what}: {total} match(es) ({})\">\
         <path class=\"bar zero\" d=\"{zeros}\"/><path class=\"bar\" d=\"{bars}\"/></svg>",
        counts.join(" ")
    )
}

/// Per-action counts of a rule over 5 min / 1 h / 24 h: its own action always, and every
/// other action it matched with in the last 24 hours (e.g. `log` before a switch).
pub fn counts(history: &History, rule_id: &str, own_action: &str) -> Vec<ActionCounts> {
    let mut actions = history.actions(rule_id);
    if !actions.iter().any(|a| a == own_action) {
        actions.insert(0, own_action.to_string());
    }
    actions
        .into_iter()
        .map(|a| ActionCounts {
            m5: history.count(rule_id, &a, 5),
            h1: history.count(rule_id, &a, 60),
            d1: history.count(rule_id, &a, super::history::MINUTES),
            action: a,
        })
        .collect()
}

pub struct DecisionRow {
    pub time: String,
    pub decision: String,
    pub status: String,
    pub scope: String,
    pub request: String,
    pub client_ip: String,
    pub country: String,
    pub rule: String,
    pub logged: String,
    pub error: String,
    pub user_agent: String,
}

#[derive(Default)]
pub struct DecisionFilter {
    pub decision: String,
    pub rule: String,
    pub client_ip: String,
    pub error: String,
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

impl DecisionFilter {
    pub fn from_form(f: &form::Form) -> DecisionFilter {
        DecisionFilter {
            decision: f.text("decision"),
            rule: f.text("rule"),
            client_ip: f.text("client_ip"),
            error: f.text("error"),
        }
    }

    /// Does an audit line pass? Lines without a `decision` (admin changes) never do.
    pub fn accepts(&self, line: &Value) -> bool {
        let Some(decision) = line.get("decision").and_then(Value::as_str) else { return false };
        if !self.decision.is_empty() && decision != self.decision {
            return false;
        }
        if !self.rule.is_empty()
            && text(line, "rule") != self.rule
            && !strings(line, "logged_rules").contains(&self.rule)
        {
            return false;
        }
        if !self.client_ip.is_empty() && text(line, "client_ip") != self.client_ip {
            return false;
        }
        if !self.error.is_empty() && text(line, "error") != self.error && text(line, "idp_error") != self.error {
            return false;
        }
        true
    }
}

pub fn decision_row(line: &Value) -> DecisionRow {
    let path = text(line, "path");
    let ua = text(line, "user_agent");
    let mut error = text(line, "error");
    let idp = text(line, "idp_error");
    if !idp.is_empty() {
        error = if error.is_empty() { format!("IdP: {idp}") } else { format!("{error} (IdP: {idp})") };
    }
    DecisionRow {
        time: text(line, "timestamp").replace('T', " ").trim_end_matches('Z').to_string(),
        decision: text(line, "decision"),
        status: text(line, "status"),
        scope: text(line, "scope"),
        request: format!(
            "{} {}",
            text(line, "method"),
            if path.is_empty() { "(path not recorded)".into() } else { path }
        ),
        client_ip: text(line, "client_ip"),
        country: text(line, "country"),
        rule: text(line, "rule"),
        logged: strings(line, "logged_rules").join(", "),
        error,
        user_agent: crate::core::record::truncate_chars(&ua, 80),
    }
}

#[derive(Template)]
#[template(path = "console/decisions.html")]
pub struct DecisionsPage {
    pub chrome: Chrome,
    pub enabled: bool,
    pub kept: usize,
    pub filter: DecisionFilter,
    pub decision_choices: &'static [&'static str],
    pub rule_ids: Vec<String>,
    pub error_codes: &'static [&'static str],
    pub rows: Vec<DecisionRow>,
    pub total: usize,
    pub matching: usize,
}

#[derive(Default)]
pub struct ExplainQuery {
    pub ip: String,
    pub connecting_ip: String,
    pub scope: String,
    pub ua: String,
    pub host: String,
    pub country: String,
    pub asn: String,
    pub ja3: String,
    pub ja4: String,
}

impl ExplainQuery {
    pub fn from_form(f: &form::Form) -> ExplainQuery {
        ExplainQuery {
            ip: f.text("ip"),
            connecting_ip: f.text("connecting_ip"),
            scope: match f.text("scope") {
                s if s.is_empty() => "dcr".into(),
                s => s,
            },
            ua: f.get("ua").unwrap_or("").to_string(),
            host: f.text("host"),
            country: f.text("country"),
            asn: f.text("asn"),
            ja3: f.text("ja3"),
            ja4: f.text("ja4"),
        }
    }
}

pub struct ExplainResult {
    pub decision: &'static str,
    pub rule: Option<String>,
    pub redirect_uri: String,
    pub logged: Vec<String>,
    pub signals: Vec<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "console/explain.html")]
pub struct ExplainPage {
    pub chrome: Chrome,
    pub q: ExplainQuery,
    pub scope_choices: &'static [&'static str],
    pub error: Option<String>,
    pub result: Option<ExplainResult>,
}

#[derive(Default)]
pub struct TenantForm {
    pub enabled: bool,
    pub security_mode: String,
    pub allowed: String,
    pub allowed_any: bool,
    pub default_scope: String,
}

#[derive(Template)]
#[template(path = "console/tenant.html")]
pub struct TenantPage {
    pub chrome: Chrome,
    pub unavailable: Option<String>,
    pub etag: String,
    pub etag_short: String,
    pub enabled: bool,
    pub security_mode: String,
    pub allowed: Option<Vec<String>>,
    pub default_scope: Option<String>,
    pub can_update: bool,
    pub form: TenantForm,
    /// The ETag the form sends back (the one it was loaded with, or the current one after a
    /// conflict).
    pub form_etag: String,
    pub errors: Vec<(String, String)>,
    pub general: Vec<String>,
    pub conflict: bool,
}

impl TenantPage {
    pub fn err(&self, field: &str) -> Option<String> {
        field_error(&self.errors, field)
    }
}

pub struct ClientRow {
    pub client_id: String,
    pub path_id: String,
    pub client_name: String,
    pub state: String,
    pub deleted_reason: String,
    pub software: String,
    pub created_at: String,
    pub last_used_at: String,
    pub from: String,
    pub auth_method: String,
    pub admitted_by: String,
}

/// A client of `GET /api/v2/clients` as a table row.
pub fn client_row(v: &Value, path_id: String) -> ClientRow {
    let version = text(v, "software_version");
    let software = match (text(v, "software_id"), version.is_empty()) {
        (id, _) if id.is_empty() => String::new(),
        (id, true) => id,
        (id, false) => format!("{id} {version}"),
    };
    let mut from = text(v, "client_ip");
    let country = text(v, "country");
    if !country.is_empty() {
        from = format!("{from} {country}");
    }
    let auth = text(v, "token_endpoint_auth_method");
    let public = v.get("public").and_then(Value::as_bool) == Some(true);
    ClientRow {
        client_id: text(v, "client_id"),
        path_id,
        client_name: text(v, "client_name"),
        state: text(v, "state"),
        deleted_reason: text(v, "deleted_reason"),
        software,
        created_at: text(v, "created_at").replace('T', " "),
        last_used_at: match text(v, "last_used_at") {
            t if t.is_empty() => "never".into(),
            t => t.replace('T', " "),
        },
        from,
        auth_method: if public { format!("{auth} (public)") } else { auth },
        admitted_by: text(v, "admitted_by"),
    }
}

#[derive(Template)]
#[template(path = "console/clients.html")]
pub struct ClientsPage {
    pub chrome: Chrome,
    /// Why no client can be listed (no registry); `None` when the table is shown.
    pub status: Option<String>,
    pub counts: Vec<(&'static str, u64)>,
    pub state: String,
    pub state_choices: &'static [&'static str],
    pub rows: Vec<ClientRow>,
    pub total: usize,
    pub can_delete: bool,
}

/// Render a template, or a plain message when it fails (it cannot with these types, but a
/// failure must not become a panic).
pub fn render<T: Template>(t: &T) -> String {
    t.render()
        .unwrap_or_else(|e| format!("<!doctype html><title>console</title><p>page could not be rendered: {e}</p>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_are_numbers_only() {
        let s = sparkline(&[0, 1, 4], "last hour");
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(s.contains("aria-label=\"last hour: 5 match(es) (0 1 4)\""), "{s}");
        // One bar per bin with matches, the tallest 26 high; the empty bin a baseline mark.
        assert!(s.contains("d=\"M7 28v-7h5v7zM14 28v-26h5v26z\""), "{s}");
        assert!(s.contains("class=\"bar zero\" d=\"M0 27h5v1h-5z\""), "{s}");
        assert!(sparkline(&[0; 24], "x").len() < 700);
    }

    #[test]
    fn templates_escape_what_they_show() {
        let page = MessagePage {
            chrome: Chrome::anonymous(),
            heading: "<script>x</script>".into(),
            text: "\"quoted\" & <b>".into(),
            back: "/console/rules".into(),
        };
        let html = render(&page);
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<b>"));
    }

    #[test]
    fn decision_filters() {
        let line = serde_json::json!({"decision": "allow", "rule": null, "logged_rules": ["mon"], "client_ip": "192.0.2.7",
            "error": "invalid_redirect_uri", "status": 400, "method": "POST", "path": "/oidc/register"});
        let f = |d: &str, r: &str, ip: &str, e: &str| DecisionFilter {
            decision: d.into(),
            rule: r.into(),
            client_ip: ip.into(),
            error: e.into(),
        };
        assert!(f("", "", "", "").accepts(&line));
        assert!(f("allow", "mon", "192.0.2.7", "invalid_redirect_uri").accepts(&line));
        assert!(!f("block", "", "", "").accepts(&line));
        assert!(!f("", "other", "", "").accepts(&line));
        assert!(!f("", "", "192.0.2.8", "").accepts(&line));
        assert!(!f("", "", "", "invalid_client_metadata").accepts(&line));
        assert!(!f("", "", "", "").accepts(&serde_json::json!({"scope": "admin", "action": "x"})));
        let row = decision_row(&line);
        assert_eq!(row.request, "POST /oidc/register");
        assert_eq!(row.logged, "mon");
        assert_eq!(row.status, "400");
    }
}
