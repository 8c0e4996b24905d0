//! Tenant settings: the registration switches an Auth0 tenant exposes at
//! `/api/v2/tenants/settings`, stored in the settings file and laid over `[dcr]`.
//!
//! | member (Auth0 shape)                                  | `[dcr]` key        |
//! |-------------------------------------------------------|--------------------|
//! | `flags.enable_dynamic_client_registration` (bool)     | `enabled`          |
//! | `enable_dynamic_client_registration` (bool, alias)    | `enabled`          |
//! | `dynamic_client_registration_security_mode` (string)  | `security_mode`    |
//! | `default_dcr_scopes.allowed` (array of strings, null) | `allowed_scopes`   |
//! | `default_dcr_scopes.default` (string, null)           | `default_scope`    |
//!
//! The settings file holds a document of this shape with only the members an administrator
//! set; each member present replaces its `[dcr]` key, absent members leave `gateway.toml` in
//! charge. A PATCH body has the same shape and is merged into the file. Pure: no I/O.
//!
//! Members the gateway does not use (the rest of Auth0's tenant settings, which Terraform's
//! `auth0_tenant` sends whole: `friendly_name`, `flags.enable_sso`, `session_lifetime`, …)
//! are accepted, kept in the file (merged as a JSON merge patch: `null` removes) and returned
//! by GET, but not enforced.

use serde_json::{json, Map, Value};

use crate::config::FieldError;
use crate::dcr::{Policy, SecurityMode};

/// What the settings file overrides. `allowed_scopes: Some(None)` is an explicit `null`
/// (any scope), distinct from `None` (not overridden).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub enabled: Option<bool>,
    pub security_mode: Option<SecurityMode>,
    pub allowed_scopes: Option<Option<Vec<String>>>,
    pub default_scope: Option<Option<String>>,
    /// Members the gateway does not use, as given (top level, and inside `flags` and
    /// `default_dcr_scopes`); in a PATCH, `null` removes one from the file.
    pub extra: Map<String, Value>,
}

const TOP_MEMBERS: &[&str] =
    &["flags", "enable_dynamic_client_registration", "dynamic_client_registration_security_mode", "default_dcr_scopes"];
const FLAG_MEMBERS: &[&str] = &["enable_dynamic_client_registration"];
const SCOPE_MEMBERS: &[&str] = &["allowed", "default"];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The object at `field`; members other than `allowed` go to `extra` (under `field` when it
/// is not the top level).
fn object<'a>(
    field: &str,
    v: &'a Value,
    allowed: &[&str],
    errors: &mut Vec<FieldError>,
    extra: &mut Map<String, Value>,
) -> Option<&'a Map<String, Value>> {
    let Value::Object(map) = v else {
        errors.push(FieldError::new(field, format!("expected an object, found {}", kind(v))));
        return None;
    };
    let unused: Map<String, Value> =
        map.iter().filter(|(k, _)| !allowed.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    if !unused.is_empty() {
        if field.is_empty() {
            extra.extend(unused);
        } else {
            extra.insert(field.to_string(), Value::Object(unused));
        }
    }
    Some(map)
}

/// RFC 7396 JSON merge patch (`null` removes a member).
fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.shift_remove(k);
            }
            Value::Object(p) => {
                let entry = target.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                    if t.is_empty() {
                        target.shift_remove(k);
                    }
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

fn boolean(field: &str, v: &Value, errors: &mut Vec<FieldError>) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        other => {
            errors.push(FieldError::new(field, format!("expected a boolean, found {}", kind(other))));
            None
        }
    }
}

impl Overrides {
    /// Reads a settings document (the file, or a PATCH body), reporting every problem with
    /// its member path.
    pub fn from_value(doc: &Value) -> Result<Overrides, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut out = Overrides::default();
        let Some(top) = object("", doc, TOP_MEMBERS, &mut errors, &mut out.extra) else {
            return Err(errors);
        };
        let mut flag = None;
        if let Some(flags) = top.get("flags").filter(|v| !v.is_null()) {
            if let Some(map) = object("flags", flags, FLAG_MEMBERS, &mut errors, &mut out.extra) {
                if let Some(v) = map.get("enable_dynamic_client_registration") {
                    flag = boolean("flags.enable_dynamic_client_registration", v, &mut errors);
                }
            }
        }
        let alias = top
            .get("enable_dynamic_client_registration")
            .and_then(|v| boolean("enable_dynamic_client_registration", v, &mut errors));
        out.enabled = match (flag, alias) {
            (Some(a), Some(b)) if a != b => {
                errors.push(FieldError::new(
                    "enable_dynamic_client_registration",
                    "contradicts flags.enable_dynamic_client_registration",
                ));
                None
            }
            (a, b) => a.or(b),
        };
        if let Some(v) = top.get("dynamic_client_registration_security_mode") {
            match v.as_str() {
                Some("strict") => out.security_mode = Some(SecurityMode::Strict),
                Some("permissive") => out.security_mode = Some(SecurityMode::Permissive),
                Some(s) => errors.push(FieldError::new(
                    "dynamic_client_registration_security_mode",
                    format!("{s:?} is not one of \"strict\", \"permissive\""),
                )),
                None => errors.push(FieldError::new(
                    "dynamic_client_registration_security_mode",
                    format!("expected a string, found {}", kind(v)),
                )),
            }
        }
        if let Some(scopes) = top.get("default_dcr_scopes") {
            if let Some(map) = object("default_dcr_scopes", scopes, SCOPE_MEMBERS, &mut errors, &mut out.extra) {
                if let Some(v) = map.get("allowed") {
                    match v {
                        Value::Null => out.allowed_scopes = Some(None),
                        Value::Array(items) => {
                            let mut list = Vec::new();
                            for (i, item) in items.iter().enumerate() {
                                match item.as_str() {
                                    Some(s) => list.push(s.to_string()),
                                    None => errors.push(FieldError::new(
                                        format!("default_dcr_scopes.allowed[{i}]"),
                                        format!("expected a string, found {}", kind(item)),
                                    )),
                                }
                            }
                            out.allowed_scopes = Some(Some(list));
                        }
                        other => errors.push(FieldError::new(
                            "default_dcr_scopes.allowed",
                            format!("expected an array of scope strings or null, found {}", kind(other)),
                        )),
                    }
                }
                if let Some(v) = map.get("default") {
                    match v {
                        Value::Null => out.default_scope = Some(None),
                        Value::String(s) => out.default_scope = Some(Some(s.clone())),
                        other => errors.push(FieldError::new(
                            "default_dcr_scopes.default",
                            format!("expected a space-separated scope string or null, found {}", kind(other)),
                        )),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Reads the settings file; empty (or whitespace only) means no overrides.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Overrides, Vec<FieldError>> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Overrides::default());
        }
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| vec![FieldError::new("", format!("invalid JSON: {e}"))])?;
        Overrides::from_value(&doc)
    }

    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }

    /// `self` with every member `patch` sets replaced.
    pub fn merge(&self, patch: &Overrides) -> Overrides {
        let mut extra = self.extra.clone();
        merge_patch(&mut extra, &patch.extra);
        Overrides {
            enabled: patch.enabled.or(self.enabled),
            security_mode: patch.security_mode.or(self.security_mode),
            allowed_scopes: patch.allowed_scopes.clone().or_else(|| self.allowed_scopes.clone()),
            default_scope: patch.default_scope.clone().or_else(|| self.default_scope.clone()),
            extra,
        }
    }

    /// Lay the overrides over a `[dcr]` policy.
    pub fn apply(&self, policy: &mut Policy) {
        if let Some(e) = self.enabled {
            policy.enabled = e;
        }
        if let Some(m) = self.security_mode {
            policy.security_mode = m;
        }
        if let Some(a) = &self.allowed_scopes {
            policy.allowed_scopes = a.clone();
        }
        if let Some(d) = &self.default_scope {
            policy.default_scope = d.clone();
        }
    }

    /// `base` with the overrides laid over it, validated like `[dcr]` itself. Problems name
    /// the settings member that caused them.
    pub fn overlay(&self, base: &Policy) -> Result<Policy, Vec<FieldError>> {
        let mut p = base.clone();
        self.apply(&mut p);
        match p.check() {
            Ok(()) => Ok(p),
            Err(errs) => Err(errs.iter().map(settings_field).collect()),
        }
    }

    /// The canonical settings file: only the members set, pretty-printed, newline-terminated.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut doc = Map::new();
        if let Some(e) = self.enabled {
            doc.insert("flags".into(), json!({"enable_dynamic_client_registration": e}));
        }
        if let Some(m) = self.security_mode {
            doc.insert("dynamic_client_registration_security_mode".into(), mode_value(m));
        }
        if self.allowed_scopes.is_some() || self.default_scope.is_some() {
            let mut s = Map::new();
            if let Some(a) = &self.allowed_scopes {
                s.insert("allowed".into(), json!(a));
            }
            if let Some(d) = &self.default_scope {
                s.insert("default".into(), json!(d));
            }
            doc.insert("default_dcr_scopes".into(), Value::Object(s));
        }
        // The members the gateway does not use, under (or beside) the ones it does (an explicit
        // `null`, `allowed: null`, is a value here, not a removal).
        let doc = overlay(self.extra.clone(), doc);
        let mut out = serde_json::to_vec_pretty(&Value::Object(doc)).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

fn mode_value(m: SecurityMode) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// The settings member a policy problem comes from (typed: no text to parse).
fn settings_field(e: &crate::dcr::PolicyError) -> FieldError {
    if let Some(rest) = e.key.strip_prefix("allowed_scopes") {
        FieldError::new(format!("default_dcr_scopes.allowed{rest}"), e.message.clone())
    } else if e.key == "default_scope" {
        FieldError::new("default_dcr_scopes.default", e.message.clone())
    } else {
        // Only the security mode can invalidate other keys (grant and response type
        // defaults must be allowed in the mode).
        FieldError::new("dynamic_client_registration_security_mode", format!("conflicts with gateway.toml: {e}"))
    }
}

/// The settings as the gateway applies them: `GET /api/v2/tenants/settings`. `extra` (the
/// members the gateway keeps but does not use) comes back too.
pub fn view(policy: &Policy, extra: &Map<String, Value>) -> Value {
    let dcr = json!({
        "flags": {"enable_dynamic_client_registration": policy.enabled},
        "enable_dynamic_client_registration": policy.enabled,
        "dynamic_client_registration_security_mode": mode_value(policy.security_mode),
        "default_dcr_scopes": {
            "allowed": policy.allowed_scopes,
            "default": policy.default_scope,
        },
    });
    match dcr {
        Value::Object(d) => Value::Object(overlay(extra.clone(), d)),
        other => other,
    }
}

/// `mine` laid over `base` one level deep (objects' members added or replaced, `null` kept).
fn overlay(mut base: Map<String, Value>, mine: Map<String, Value>) -> Map<String, Value> {
    for (k, v) in mine {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(have)), Value::Object(m)) => have.extend(m),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    base
}

/// Members a write changed, for the audit line: `(member, effective before, effective after)`.
/// A member counts when its effective value changed or when the write set (or replaced) its
/// override, even to the value `gateway.toml` already had.
pub fn changes(
    file_before: &Overrides,
    file_after: &Overrides,
    before: &Policy,
    after: &Policy,
) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    if file_before.enabled != file_after.enabled || before.enabled != after.enabled {
        out.push(("flags.enable_dynamic_client_registration".into(), json!(before.enabled), json!(after.enabled)));
    }
    if file_before.security_mode != file_after.security_mode || before.security_mode != after.security_mode {
        out.push((
            "dynamic_client_registration_security_mode".into(),
            mode_value(before.security_mode),
            mode_value(after.security_mode),
        ));
    }
    if file_before.allowed_scopes != file_after.allowed_scopes || before.allowed_scopes != after.allowed_scopes {
        out.push(("default_dcr_scopes.allowed".into(), json!(before.allowed_scopes), json!(after.allowed_scopes)));
    }
    if file_before.default_scope != file_after.default_scope || before.default_scope != after.default_scope {
        out.push(("default_dcr_scopes.default".into(), json!(before.default_scope), json!(after.default_scope)));
    }
    // Kept members: named by their top-level key.
    let keys: std::collections::BTreeSet<&String> = file_before.extra.keys().chain(file_after.extra.keys()).collect();
    for k in keys {
        let (b, a) = (file_before.extra.get(k), file_after.extra.get(k));
        if b != a {
            out.push((k.clone(), b.cloned().unwrap_or(Value::Null), a.cloned().unwrap_or(Value::Null)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Overrides, Vec<FieldError>> {
        Overrides::from_value(&serde_json::from_str(s).unwrap())
    }

    fn fields(r: Result<Overrides, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn auth0_shape_and_alias() {
        let o = parse(r#"{"flags":{"enable_dynamic_client_registration":false}}"#).unwrap();
        assert_eq!(o.enabled, Some(false));
        let o = parse(
            r#"{"enable_dynamic_client_registration":true,"dynamic_client_registration_security_mode":"permissive"}"#,
        )
        .unwrap();
        assert_eq!((o.enabled, o.security_mode), (Some(true), Some(SecurityMode::Permissive)));
        let o = parse(r#"{"default_dcr_scopes":{"allowed":null}}"#).unwrap();
        assert_eq!((o.allowed_scopes.clone(), o.default_scope.clone()), (Some(None), None));
        // An explicit null (any scope) survives the file round trip.
        assert_eq!(Overrides::from_file_bytes(&o.to_file_bytes()).unwrap(), o);
    }

    #[test]
    fn problems_name_members() {
        let f = fields(parse(
            r#"{"flags":{"enable_sso":true,"enable_dynamic_client_registration":"yes"},"friendly_name":"x",
                "dynamic_client_registration_security_mode":"lax","default_dcr_scopes":{"allowed":["a",1],"default":2,"x":0}}"#,
        ));
        assert_eq!(
            f,
            [
                "flags.enable_dynamic_client_registration",
                "dynamic_client_registration_security_mode",
                "default_dcr_scopes.allowed[1]",
                "default_dcr_scopes.default",
            ]
        );
        assert_eq!(
            fields(parse(
                r#"{"flags":{"enable_dynamic_client_registration":true},"enable_dynamic_client_registration":false}"#
            )),
            ["enable_dynamic_client_registration"]
        );
        assert_eq!(fields(parse("[]")), [""]);
    }

    #[test]
    fn merge_apply_and_round_trip() {
        let file = parse(r#"{"flags":{"enable_dynamic_client_registration":false},"default_dcr_scopes":{"allowed":["openid","profile"]}}"#).unwrap();
        let patch = parse(
            r#"{"dynamic_client_registration_security_mode":"permissive","default_dcr_scopes":{"default":"openid"}}"#,
        )
        .unwrap();
        let merged = file.merge(&patch);
        let p = merged.overlay(&Policy::default()).unwrap();
        assert!(!p.enabled);
        assert_eq!(p.security_mode, SecurityMode::Permissive);
        assert_eq!(p.allowed_scopes, Some(vec!["openid".to_string(), "profile".to_string()]));
        assert_eq!(p.default_scope.as_deref(), Some("openid"));
        let back = Overrides::from_file_bytes(&merged.to_file_bytes()).unwrap();
        assert_eq!(back, merged);
        assert_eq!(Overrides::from_file_bytes(b"  \n").unwrap(), Overrides::default());
        let v = view(&p, &Map::new());
        assert_eq!(v["flags"]["enable_dynamic_client_registration"], false);
        assert_eq!(v["dynamic_client_registration_security_mode"], "permissive");
        assert_eq!(v["default_dcr_scopes"]["default"], "openid");
        let c = changes(&Overrides::default(), &merged, &Policy::default(), &p);
        assert_eq!(c.len(), 4);
        // Pinning a value gateway.toml already has is a change of the file.
        let pin = parse(r#"{"flags":{"enable_dynamic_client_registration":true}}"#).unwrap();
        let c = changes(&Overrides::default(), &pin, &Policy::default(), &Policy::default());
        assert_eq!(c, [("flags.enable_dynamic_client_registration".to_string(), json!(true), json!(true))]);
    }

    #[test]
    fn members_the_gateway_does_not_use_are_kept() {
        // What Terraform's auth0_tenant sends: the whole settings object.
        let tf = parse(
            r#"{"friendly_name":"Acme","session_lifetime":168,"flags":{"enable_sso":true,"enable_dynamic_client_registration":false},
                "default_dcr_scopes":{"allowed":["openid"],"note":"x"}}"#,
        )
        .unwrap();
        assert_eq!(tf.enabled, Some(false));
        assert_eq!(tf.extra["friendly_name"], "Acme");
        assert_eq!(tf.extra["flags"], json!({"enable_sso": true}));
        let file = Overrides::default().merge(&tf);
        let back = Overrides::from_file_bytes(&file.to_file_bytes()).unwrap();
        assert_eq!(back, file);
        let on_disk: Value = serde_json::from_slice(&file.to_file_bytes()).unwrap();
        assert_eq!(on_disk["flags"], json!({"enable_sso": true, "enable_dynamic_client_registration": false}));
        // GET returns them with the applied DCR members.
        let p = file.overlay(&Policy::default()).unwrap();
        let v = view(&p, &file.extra);
        assert_eq!(v["friendly_name"], "Acme");
        assert_eq!(v["flags"], json!({"enable_sso": true, "enable_dynamic_client_registration": false}));
        // A later PATCH merges: null removes a kept member, others stay.
        let patch = parse(r#"{"session_lifetime":null,"friendly_name":"Acme Inc"}"#).unwrap();
        let merged = file.merge(&patch);
        assert!(!merged.extra.contains_key("session_lifetime"));
        assert_eq!(merged.extra["friendly_name"], "Acme Inc");
        assert_eq!(merged.enabled, Some(false));
        let c = changes(&file, &merged, &p, &p);
        let names: Vec<&str> = c.iter().map(|(f, _, _)| f.as_str()).collect();
        assert_eq!(names, ["friendly_name", "session_lifetime"]);
    }

    #[test]
    fn overlay_errors_name_the_setting() {
        let o = parse(r#"{"default_dcr_scopes":{"allowed":["openid"],"default":"openid email"}}"#).unwrap();
        let e = o.overlay(&Policy::default()).unwrap_err();
        assert_eq!(e[0].field, "default_dcr_scopes.default");
        let base = Policy {
            security_mode: SecurityMode::Permissive,
            default_grant_types: vec!["client_credentials".into()],
            default_response_types: vec![],
            ..Policy::default()
        };
        let o = parse(r#"{"dynamic_client_registration_security_mode":"strict"}"#).unwrap();
        let e = o.overlay(&base).unwrap_err();
        assert_eq!(e[0].field, "dynamic_client_registration_security_mode");
        assert!(e[0].message.contains("dcr.default_grant_types[0]"), "{e:?}");
    }
}
