//! The registration corpus (`tests/corpus/`, see docs/dcr-validation.md "The corpus"):
//!
//! - `mcp-clients/*.json`: one registration per real MCP client shape. Each must be accepted
//!   in strict AND permissive mode, keep its redirect URIs byte for byte, and normalize
//!   idempotently.
//! - `hostile/*.json`: registrations that strict mode must refuse with `_expect.error` and a
//!   description starting with `_expect.description`.
//!
//! Members starting with `_` are the corpus's own, stripped before checking: `_source` (where
//! the shape comes from; required), `_expect` (hostile only), `_policy` (`[dcr]` keys laid
//! over the defaults, e.g. `reserved_names`).

use std::fs;
use std::path::{Path, PathBuf};

use dcr_gateway::dcr::{check, Policy, SecurityMode};
use serde_json::{Map, Value};

struct Case {
    path: PathBuf,
    body: Map<String, Value>,
    expect: Option<(String, String)>,
    policy: Policy,
}

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(name)
}

fn load(name: &str) -> Vec<Case> {
    let dir = corpus_dir(name);
    let mut paths: Vec<PathBuf> =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
    paths.sort();
    assert!(!paths.is_empty(), "{} is empty", dir.display());
    paths
        .into_iter()
        .map(|path| {
            assert_eq!(path.extension().and_then(|e| e.to_str()), Some("json"), "{}: only .json files", path.display());
            let text = fs::read_to_string(&path).unwrap();
            let mut body: Map<String, Value> =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let source = body.shift_remove("_source");
            assert!(
                source.as_ref().and_then(Value::as_str).is_some_and(|s| !s.trim().is_empty()),
                "{}: needs a `_source` string saying where the shape comes from",
                path.display()
            );
            let expect = body.shift_remove("_expect").map(|e| {
                let field = |k: &str| {
                    e.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_else(|| panic!("{}: _expect.{k}", path.display()))
                        .to_string()
                };
                (field("error"), field("description"))
            });
            let mut policy = serde_json::to_value(Policy::default()).unwrap();
            if let Some(Value::Object(overlay)) = body.shift_remove("_policy") {
                policy.as_object_mut().unwrap().extend(overlay);
            }
            let policy: Policy =
                serde_json::from_value(policy).unwrap_or_else(|e| panic!("{}: _policy: {e}", path.display()));
            policy.validate().unwrap_or_else(|e| panic!("{}: _policy: {e:?}", path.display()));
            assert!(
                !body.keys().any(|k| k.starts_with('_') && k != "__proto__"),
                "{}: unknown corpus member",
                path.display()
            );
            Case { path, body, expect, policy }
        })
        .collect()
}

#[test]
fn every_mcp_client_registers_in_strict_and_permissive_mode() {
    let cases = load("mcp-clients");
    let mut failures = Vec::new();
    for case in &cases {
        assert!(case.expect.is_none(), "{}: _expect belongs in hostile/", case.path.display());
        let raw = serde_json::to_vec(&case.body).unwrap();
        for mode in [SecurityMode::Strict, SecurityMode::Permissive] {
            let policy = Policy { security_mode: mode, ..case.policy.clone() };
            let n = match check(&raw, &policy) {
                Ok(n) => n,
                Err(e) => {
                    failures.push(format!("{} ({mode:?}): {e}", case.path.display()));
                    continue;
                }
            };
            // Redirect URIs are forwarded exactly as the client sent them.
            assert_eq!(n.document.get("redirect_uris"), case.body.get("redirect_uris"), "{}", case.path.display());
            let again = check(&n.body, &policy)
                .unwrap_or_else(|e| panic!("{} ({mode:?}): output refused: {e}", case.path.display()));
            assert_eq!(again.body, n.body, "{} ({mode:?}): not idempotent", case.path.display());
        }
    }
    assert!(failures.is_empty(), "real MCP clients refused:\n{}", failures.join("\n"));
}

#[test]
fn every_hostile_registration_is_refused_in_strict_mode() {
    let cases = load("hostile");
    let mut failures = Vec::new();
    for case in &cases {
        let (error, description) =
            case.expect.as_ref().unwrap_or_else(|| panic!("{}: hostile cases need `_expect`", case.path.display()));
        let policy = Policy { security_mode: SecurityMode::Strict, ..case.policy.clone() };
        match check(&serde_json::to_vec(&case.body).unwrap(), &policy) {
            Ok(n) => {
                failures.push(format!("{}: accepted as {}", case.path.display(), String::from_utf8_lossy(&n.body)))
            }
            Err(e) if e.code.as_str() != error || !e.description.starts_with(description.as_str()) => {
                failures.push(format!(
                    "{}: got {} {:?}, want {error} {description:?}",
                    case.path.display(),
                    e.code.as_str(),
                    e.description
                ))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "hostile registrations not refused as expected:\n{}", failures.join("\n"));
}
