//! HTML forms ↔ the admin API's JSON. Pure: a rule form becomes the body of the same
//! `POST`/`PUT /api/v2/network-acls` call an API client would make, and the API's field
//! errors (`rule.match.ipv4_cidrs[0]`) are placed back at the form's fields.
//!
//! Values are passed on as typed, not pre-validated: the API's validation (the very function a
//! rules-file load runs) is the only judge, so the console accepts and refuses exactly what the
//! API does.

use serde_json::{Map, Value};

use crate::acl::schema::{Conditions, Rule, SIGNAL_NAMES};

/// `application/x-www-form-urlencoded` pairs, in order.
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(bytes: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The value, trimmed, or "".
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_string()
    }
}

pub const ACTIONS: [&str; 4] = ["block", "allow", "redirect", "log"];
pub const SCOPES: [&str; 4] = ["tenant", "authentication", "management", "dcr"];

/// A rule as the edit form shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleForm {
    /// The rule's id; empty in a new rule's form (the gateway makes one).
    pub id: String,
    pub description: String,
    pub active: bool,
    /// As typed; empty → the default (50).
    pub priority: String,
    pub action: String,
    /// `log` with the action: monitoring mode.
    pub monitoring: bool,
    pub redirect_uri: String,
    pub scope: String,
    /// Auth0's `match_all`: every request of the scope.
    pub match_all: bool,
    /// One text per signal in [`SIGNAL_NAMES`] order: values separated by newlines or commas.
    pub match_: Vec<String>,
    pub not_match: Vec<String>,
}

fn condition_texts(c: Option<&Conditions>) -> Vec<String> {
    let doc = c.and_then(|c| serde_json::to_value(c).ok()).unwrap_or(Value::Null);
    SIGNAL_NAMES
        .iter()
        .map(|name| {
            let items = match doc.get(*name) {
                // `{"keys": [{"id": "k1"}]}`: the key ids.
                Some(Value::Object(o)) => o.get("keys").and_then(Value::as_array).cloned().unwrap_or_default(),
                Some(Value::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => o.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The action word of a rule (`block`, `allow`, `redirect`; `log` for a rule that only logs).
pub fn action_of(rule: &Rule) -> &'static str {
    let a = &rule.rule.action;
    if a.redirect == Some(true) {
        "redirect"
    } else if a.allow == Some(true) {
        "allow"
    } else if a.block == Some(true) {
        "block"
    } else {
        "log"
    }
}

/// Is the rule in monitoring mode (`log`, alone or with its action: recorded, not executed)?
pub fn is_monitoring(rule: &Rule) -> bool {
    rule.rule.action.log == Some(true)
}

fn priority_text(p: f64) -> String {
    if p.fract() == 0.0 && p.abs() < 9.0e15 {
        format!("{}", p as i64)
    } else {
        p.to_string()
    }
}

impl RuleForm {
    /// A new rule's form: active, blocking, on the registration endpoint.
    pub fn blank() -> RuleForm {
        RuleForm {
            active: true,
            action: "block".into(),
            scope: "dcr".into(),
            match_: vec![String::new(); SIGNAL_NAMES.len()],
            not_match: vec![String::new(); SIGNAL_NAMES.len()],
            ..RuleForm::default()
        }
    }

    pub fn from_rule(rule: &Rule, id: &str) -> RuleForm {
        RuleForm {
            id: id.to_string(),
            description: rule.description.clone().unwrap_or_default(),
            active: rule.active,
            priority: priority_text(rule.priority),
            action: action_of(rule).to_string(),
            monitoring: is_monitoring(rule) && action_of(rule) != "log",
            redirect_uri: rule.rule.action.redirect_uri.clone().unwrap_or_default(),
            scope: rule.rule.scope.clone(),
            match_all: rule.rule.match_all == Some(true),
            match_: condition_texts(rule.rule.match_.as_ref()),
            not_match: condition_texts(rule.rule.not_match.as_ref()),
        }
    }

    /// The form as posted (`id` is the path's for an edit).
    pub fn from_form(f: &Form) -> RuleForm {
        RuleForm {
            id: f.text("id"),
            description: f.text("description"),
            active: f.get("active").is_some(),
            priority: f.text("priority"),
            action: f.text("action"),
            monitoring: f.get("monitoring").is_some(),
            redirect_uri: f.text("redirect_uri"),
            scope: f.text("scope"),
            match_all: f.get("match_all").is_some(),
            match_: SIGNAL_NAMES.iter().map(|s| f.get(&format!("match.{s}")).unwrap_or("").to_string()).collect(),
            not_match: SIGNAL_NAMES
                .iter()
                .map(|s| f.get(&format!("not_match.{s}")).unwrap_or("").to_string())
                .collect(),
        }
    }

    /// The body of the API call: a whole rule (`PUT` replaces, `POST` creates).
    pub fn to_json(&self, with_id: bool) -> Value {
        let mut doc = Map::new();
        if with_id && !self.id.is_empty() {
            doc.insert("id".into(), Value::String(self.id.clone()));
        }
        if !self.description.is_empty() {
            doc.insert("description".into(), Value::String(self.description.clone()));
        }
        doc.insert("active".into(), Value::Bool(self.active));
        if !self.priority.is_empty() {
            let p = self
                .priority
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(|n| {
                    // Whole numbers as integers, as the API writes them.
                    if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                        Value::from(n.as_f64().unwrap_or_default() as i64)
                    } else {
                        Value::Number(n)
                    }
                })
                .unwrap_or_else(|| Value::String(self.priority.clone()));
            doc.insert("priority".into(), p);
        }
        let mut action = Map::new();
        if !self.action.is_empty() {
            action.insert(self.action.clone(), Value::Bool(true));
        }
        if self.monitoring && self.action != "log" {
            action.insert("log".into(), Value::Bool(true));
        }
        if !self.redirect_uri.is_empty() {
            action.insert("redirect_uri".into(), Value::String(self.redirect_uri.clone()));
        }
        let mut body = Map::new();
        body.insert("action".into(), Value::Object(action));
        body.insert("scope".into(), Value::String(self.scope.clone()));
        if let Some(m) = conditions(&self.match_) {
            body.insert("match".into(), m);
        }
        if let Some(m) = conditions(&self.not_match) {
            body.insert("not_match".into(), m);
        }
        if self.match_all {
            body.insert("match_all".into(), Value::Bool(true));
        }
        doc.insert("rule".into(), Value::Object(body));
        Value::Object(doc)
    }
}

/// Values of one textarea: split on newlines and commas, trimmed, empty ones dropped.
pub fn values(text: &str) -> Vec<&str> {
    text.split(['\n', ',']).map(str::trim).filter(|v| !v.is_empty()).collect()
}

fn conditions(texts: &[String]) -> Option<Value> {
    let mut m = Map::new();
    for (name, text) in SIGNAL_NAMES.iter().zip(texts) {
        let vals = values(text);
        if vals.is_empty() {
            continue;
        }
        let items: Vec<Value> = vals
            .iter()
            .map(|v| match (*name, v.parse::<u64>()) {
                ("asns", Ok(n)) => Value::from(n),
                ("http_message_signature", _) => serde_json::json!({ "id": v }),
                _ => Value::String((*v).to_string()),
            })
            .collect();
        let value =
            if *name == "http_message_signature" { serde_json::json!({ "keys": items }) } else { Value::Array(items) };
        m.insert((*name).to_string(), value);
    }
    (!m.is_empty()).then_some(Value::Object(m))
}

/// The form field an API error's member path belongs to: `rule.match.ipv4_cidrs[0]` →
/// `match.ipv4_cidrs`, `rule.action.redirect_uri` → `redirect_uri`, `priority` → `priority`;
/// "" for a problem with no field of its own (shown at the top of the form).
pub fn form_field(api_field: &str) -> String {
    let path = api_field.strip_prefix("rule.").unwrap_or(api_field);
    let path = path.split('[').next().unwrap_or(path);
    match path {
        "action.redirect_uri" => "redirect_uri".into(),
        p if p == "action" || p.starts_with("action.") => "action".into(),
        "id" | "description" | "active" | "priority" | "scope" | "match_all" => path.into(),
        p if p.starts_with("match.") || p.starts_with("not_match.") => {
            let (side, signal) = p.split_once('.').unwrap_or((p, ""));
            let signal = signal.split('.').next().unwrap_or("");
            if SIGNAL_NAMES.contains(&signal) {
                format!("{side}.{signal}")
            } else {
                side.into()
            }
        }
        "match" | "not_match" => path.into(),
        _ => String::new(),
    }
}

/// Tenant settings form → the `PATCH /api/v2/tenants/settings` body, holding only the members
/// that differ from `current` (the same shape, the values in force): a value left as it was is
/// not written into the settings file, so `[dcr]` in gateway.toml keeps deciding it.
pub fn settings_patch(f: &Form, current: &Value) -> Value {
    let Value::Object(mut doc) = settings_doc(f) else { return Value::Object(Map::new()) };
    for top in ["flags", "dynamic_client_registration_security_mode"] {
        if doc.get(top) == current.get(top) {
            doc.shift_remove(top);
        }
    }
    if let Some(Value::Object(scopes)) = doc.get_mut("default_dcr_scopes") {
        for k in ["allowed", "default"] {
            if scopes.get(k) == current["default_dcr_scopes"].get(k) {
                scopes.shift_remove(k);
            }
        }
        if scopes.is_empty() {
            doc.shift_remove("default_dcr_scopes");
        }
    }
    Value::Object(doc)
}

/// The whole settings document the form stands for.
fn settings_doc(f: &Form) -> Value {
    let mut doc = Map::new();
    doc.insert(
        "flags".into(),
        serde_json::json!({"enable_dynamic_client_registration": f.get("enable_dynamic_client_registration").is_some()}),
    );
    doc.insert("dynamic_client_registration_security_mode".into(), Value::String(f.text("security_mode")));
    let allowed = if f.get("allowed_any").is_some() {
        Value::Null
    } else {
        Value::Array(
            values(&f.text("allowed_scopes")).into_iter().flat_map(str::split_whitespace).map(Value::from).collect(),
        )
    };
    let default = match f.text("default_scope") {
        d if d.is_empty() => Value::Null,
        d => Value::String(d),
    };
    doc.insert("default_dcr_scopes".into(), serde_json::json!({"allowed": allowed, "default": default}));
    Value::Object(doc)
}

/// The settings form field of a `PATCH` error's member path.
pub fn settings_field(api_field: &str) -> String {
    let path = api_field.split('[').next().unwrap_or(api_field);
    match path {
        "flags.enable_dynamic_client_registration" | "enable_dynamic_client_registration" => {
            "enable_dynamic_client_registration".into()
        }
        "dynamic_client_registration_security_mode" => "security_mode".into(),
        "default_dcr_scopes.allowed" => "allowed_scopes".into(),
        "default_dcr_scopes.default" => "default_scope".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(json: Value) -> Rule {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_rule_round_trips_through_the_form() {
        let r = rule(json!({"id": "b", "description": "bots", "active": true, "priority": 3,
            "rule": {"action": {"block": true}, "scope": "dcr",
                     "match": {"user_agents": ["BadBot", "Evil"], "asns": [64500]},
                     "not_match": {"ipv4_cidrs": ["10.0.0.0/8"],
                                   "http_message_signature": {"keys": [{"id": "k1"}]}}}}));
        let f = RuleForm::from_rule(&r, "b");
        assert_eq!(f.action, "block");
        assert!(!f.monitoring);
        assert_eq!(f.priority, "3");
        let v = f.to_json(true);
        assert_eq!(
            v,
            json!({"id": "b", "description": "bots", "active": true, "priority": 3,
                "rule": {"action": {"block": true}, "scope": "dcr",
                         "match": {"asns": [64500], "user_agents": ["BadBot", "Evil"]},
                         "not_match": {"ipv4_cidrs": ["10.0.0.0/8"],
                                       "http_message_signature": {"keys": [{"id": "k1"}]}}}})
        );
        let back: Rule = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn monitoring_mode_is_log_beside_the_action() {
        let r = rule(
            json!({"active": true, "rule": {"action": {"block": true, "log": true}, "scope": "dcr", "match_all": true}}),
        );
        let f = RuleForm::from_rule(&r, "m");
        assert_eq!((f.action.as_str(), f.monitoring, f.match_all), ("block", true, true));
        assert!(is_monitoring(&r));
        assert_eq!(f.to_json(false)["rule"]["action"], json!({"block": true, "log": true}));
        assert_eq!(f.to_json(false)["rule"]["match_all"], true);
        let r = rule(json!({"active": true, "rule": {"action": {"log": true}, "scope": "dcr"}}));
        let f = RuleForm::from_rule(&r, "l");
        assert_eq!((f.action.as_str(), f.monitoring), ("log", false));
        assert_eq!(f.to_json(false)["rule"]["action"], json!({"log": true}));
    }

    #[test]
    fn posted_values_are_passed_on_as_typed() {
        let f = Form::parse(
            b"description=x&priority=abc&action=redirect&redirect_uri=https%3A%2F%2Fa.example&scope=dcr\
              &match.ipv4_cidrs=10.0.0.300%2F8%0D%0A%2C+192.0.2.0%2F24&match.asns=AS1&active=on",
        );
        let v = RuleForm::from_form(&f).to_json(false);
        assert_eq!(v["priority"], "abc");
        assert_eq!(v["active"], true);
        assert_eq!(v["rule"]["action"], json!({"redirect": true, "redirect_uri": "https://a.example"}));
        assert_eq!(v["rule"]["match"]["ipv4_cidrs"], json!(["10.0.0.300/8", "192.0.2.0/24"]));
        assert_eq!(v["rule"]["match"]["asns"], json!(["AS1"]));
        assert!(v["rule"].get("not_match").is_none());
        let v = RuleForm::from_form(&Form::parse(b"action=block&scope=dcr")).to_json(false);
        assert_eq!(v["active"], false);
        assert!(v.get("priority").is_none() && v.get("id").is_none());
    }

    #[test]
    fn api_errors_land_on_their_field() {
        assert_eq!(form_field("rule.match.ipv4_cidrs[0]"), "match.ipv4_cidrs");
        assert_eq!(form_field("rule.not_match.user_agents"), "not_match.user_agents");
        assert_eq!(form_field("rule.action.redirect_uri"), "redirect_uri");
        assert_eq!(form_field("rule.action"), "action");
        assert_eq!(form_field("priority"), "priority");
        assert_eq!(form_field("rule.scope"), "scope");
        assert_eq!(form_field("rule.match"), "match");
        assert_eq!(form_field("rule.match.nope"), "match");
        assert_eq!(form_field(""), "");
        assert_eq!(settings_field("default_dcr_scopes.allowed[2]"), "allowed_scopes");
    }

    #[test]
    fn the_settings_form_is_a_patch() {
        let f = Form::parse(
            b"enable_dynamic_client_registration=on&security_mode=strict&allowed_scopes=openid+email%0Aprofile&default_scope=openid",
        );
        let nothing = json!({});
        assert_eq!(
            settings_patch(&f, &nothing),
            json!({"flags": {"enable_dynamic_client_registration": true},
                "dynamic_client_registration_security_mode": "strict",
                "default_dcr_scopes": {"allowed": ["openid", "email", "profile"], "default": "openid"}})
        );
        let f = Form::parse(b"security_mode=permissive&allowed_any=on");
        let v = settings_patch(&f, &nothing);
        assert_eq!(v["flags"]["enable_dynamic_client_registration"], false);
        assert_eq!(v["default_dcr_scopes"], json!({"allowed": null, "default": null}));
        // Only what changed is sent.
        let current = json!({"flags": {"enable_dynamic_client_registration": true},
            "dynamic_client_registration_security_mode": "strict",
            "default_dcr_scopes": {"allowed": null, "default": null}});
        let f = Form::parse(b"enable_dynamic_client_registration=on&security_mode=permissive&allowed_any=on");
        assert_eq!(settings_patch(&f, &current), json!({"dynamic_client_registration_security_mode": "permissive"}));
    }
}
