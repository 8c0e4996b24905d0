use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::set::parse_rfc3339;
use super::*;
use crate::dcr::{Policy, SecurityMode};

const TOKEN_A: &str = "dcrgw_iat_alpha-token-value";
const TOKEN_B: &str = "dcrgw_adm_bravo-token-value";

fn file() -> String {
    format!(
        r#"
# partners
[[token]]
label = "partner-x"
sha256 = "{}"
created_at = "2026-11-28T13:00:00Z"
expires_at = "2026-12-28T13:00:00Z"
max_uses = 100
security_mode = "permissive"
redirect_host_allow = ["*.partner-x.example"]

[[token]]
label = "ops.admin_1"
sha256 = "{}"
created_at = 2026-11-28T13:00:00Z
scopes = ["read:network_acls", "update:tenant_settings"]
"#,
        hash_token(TOKEN_A),
        hash_token(TOKEN_B).to_uppercase()
    )
}

fn at(s: &str) -> SystemTime {
    parse_rfc3339(s).unwrap()
}

#[test]
fn parse_a_valid_file() {
    let set = TokenSet::parse(&file()).unwrap();
    assert_eq!(set.len(), 2);
    assert!(!set.is_empty());
    let a = set.get("partner-x").unwrap();
    assert_eq!(a.sha256_hex, hash_token(TOKEN_A));
    assert_eq!(a.created_at.as_deref(), Some("2026-11-28T13:00:00Z"));
    assert_eq!(a.expires_at, Some(at("2026-12-28T13:00:00Z")));
    assert_eq!(a.max_uses, Some(100));
    assert_eq!(a.overrides.security_mode, Some(SecurityMode::Permissive));
    let b = &set.entries()[1];
    assert_eq!(b.sha256_hex, hash_token(TOKEN_B), "stored lower case");
    assert_eq!(b.created_at.as_deref(), Some("2026-11-28T13:00:00Z"), "TOML datetimes accepted");
    assert!(b.has_scope("read:network_acls") && !b.has_scope("delete:network_acls"));
    assert!(b.overrides.is_empty());
    assert_eq!(TokenSet::parse("").unwrap().len(), 0);
    assert_eq!(TokenSet::parse("# nothing yet\n").unwrap().len(), 0);
    assert!(TokenSet::empty().is_empty());
}

#[test]
fn parse_errors_name_entry_label_and_key() {
    let h = hash_token("x");
    let text = format!(
        r#"
version = 1
[[token]]
label = "ok"
sha256 = "{h}"

[[token]]
sha256 = "abc"
max_uses = 0

[[token]]
label = "x"
sha256 = "{h}"
expires_at = "tomorrow"
created_at = 5
scopes = ["read:everything", "read:network_acls", "read:network_acls"]
colour = "blue"

[[token]]
label = "ok"
sha256 = "{}"
security_mode = "lax"
redirect_host_allow = ["*.*"]
allowed_scopes = ["a b"]

[[token]]
label = "bad label!"
sha256 = "{}"
"#,
        hash_token("y"),
        hash_token("z")
    );
    let errs = TokenSet::parse(&text).unwrap_err();
    let want = [
        "version: unknown key",
        "token[1]: label: required",
        "token[1]: sha256: must be 64 hex digits",
        "token[1]: max_uses: must be a positive integer",
        "token[2] (label \"x\"): expires_at: not RFC 3339",
        "token[2] (label \"x\"): created_at: not RFC 3339",
        "token[2] (label \"x\"): scopes[0]: unknown scope",
        "token[2] (label \"x\"): scopes[2]: duplicate",
        "token[2] (label \"x\"): colour: unknown key",
        "token[2] (label \"x\"): sha256: duplicate of token[0]",
        "token[3] (label \"ok\"): security_mode: must be \"strict\" or \"permissive\"",
        "token[3] (label \"ok\"): redirect_host_allow[0]: invalid host pattern",
        "token[3] (label \"ok\"): allowed_scopes[0]: \"a b\" is not a single scope token",
        "token[3] (label \"ok\"): label: duplicate of token[0]",
        "token[4]: label: must be 1 to 64 characters",
    ];
    for w in want {
        assert!(errs.iter().any(|e| e.starts_with(w)), "missing {w:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");

    let errs = TokenSet::parse("[[token]]\nlabel = \"a\"\nsha256 = ").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("line 3, column 10: "), "{errs:?}");
    assert!(TokenSet::parse("token = 1").unwrap_err()[0].starts_with("token: must be an array"));
    assert!(TokenSet::parse("token = [1]").unwrap_err()[0].starts_with("token[0]: must be a table"));
}

#[test]
fn rfc3339() {
    assert_eq!(at("2026-12-28T13:00:00Z"), at("2026-12-28t13:00:00z"));
    assert_eq!(at("2026-12-28T15:00:00+02:00"), at("2026-12-28T13:00:00Z"));
    assert_eq!(at("2026-12-28T10:30:00-02:30"), at("2026-12-28T13:00:00Z"));
    assert_eq!(at("2026-12-28T13:00:00.500Z"), at("2026-12-28T13:00:00Z") + Duration::from_millis(500));
    for bad in [
        "2026-12-28",
        "2026-12-28T13:00:00",
        "2026-12-28 13:00:00Z",
        "2026-12-28T13:00:00+2:00",
        "2026-12-28T25:00:00Z",
        "2026-12-28T13:00:00+24:00",
        "2026-12-28T13:00:00Ω",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

#[test]
fn verify_ok_unknown_expired() {
    let set = TokenSet::parse(&file()).unwrap();
    let before = at("2026-12-01T00:00:00Z");
    assert_eq!(set.verify(TOKEN_A, before).unwrap().label, "partner-x");
    assert_eq!(set.verify(TOKEN_B, before).unwrap().label, "ops.admin_1");
    assert_eq!(set.verify("dcrgw_iat_other", before).unwrap_err(), TokenError::Unknown);
    assert_eq!(set.verify("", before).unwrap_err(), TokenError::Unknown);
    assert_eq!(set.verify(&hash_token(TOKEN_A), before).unwrap_err(), TokenError::Unknown, "the hash is not the token");
    assert_eq!(set.verify(TOKEN_A, at("2026-12-28T13:00:00Z")).unwrap_err(), TokenError::Expired);
    assert_eq!(set.verify(TOKEN_A, at("2027-01-01T00:00:00Z")).unwrap_err(), TokenError::Expired);
    assert!(set.verify(TOKEN_B, at("2099-01-01T00:00:00Z")).is_ok(), "no expiry");
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TokenSet>();
    send_sync::<UseCounter>();
}

#[test]
fn bearer_parsing() {
    fn ok(h: &str) -> Result<&str, TokenError> {
        bearer(Some(h))
    }
    assert_eq!(ok("Bearer abc"), Ok("abc"));
    assert_eq!(ok("bearer abc"), Ok("abc"));
    assert_eq!(ok("BEARER abc"), Ok("abc"));
    assert_eq!(ok("Bearer    abc  "), Ok("abc"));
    assert_eq!(ok("  Bearer\tabc"), Ok("abc"));
    assert_eq!(ok("Bearer a-b.c_d~e+f/g=="), Ok("a-b.c_d~e+f/g=="));
    assert_eq!(ok(&format!("Bearer {TOKEN_A}")), Ok(TOKEN_A));
    assert_eq!(bearer(None), Err(TokenError::Missing));
    assert_eq!(ok(""), Err(TokenError::Missing));
    assert_eq!(ok("Basic dXNlcjpwYXNz"), Err(TokenError::Missing));
    assert_eq!(ok("Bearerabc"), Err(TokenError::Missing));
    assert_eq!(ok("Bearer"), Err(TokenError::Malformed));
    assert_eq!(ok("Bearer   "), Err(TokenError::Malformed));
    assert_eq!(ok("Bearer a b"), Err(TokenError::Malformed));
    assert_eq!(ok("Bearer a,b"), Err(TokenError::Malformed));
    assert_eq!(ok("Bearer ==="), Err(TokenError::Malformed));
    assert_eq!(ok("Bearer a=b"), Err(TokenError::Malformed));
    assert_eq!(ok("Bearer tök"), Err(TokenError::Malformed));
    assert_eq!(ok(&format!("Bearer {}", "a".repeat(513))), Err(TokenError::Malformed));
}

#[test]
fn errors_and_entries_never_show_the_token() {
    let set = TokenSet::parse(&file()).unwrap();
    let e = set.get("partner-x").unwrap();
    let shown = format!("{e:?} {e} {set:?}");
    assert!(shown.contains(&hash_token(TOKEN_A)[..8]));
    assert!(!shown.contains(&hash_token(TOKEN_A)[..9]), "only an 8-digit hash prefix: {shown}");
    assert!(!shown.contains(TOKEN_A) && !shown.contains("alpha"), "{shown}");
    assert_eq!(e.to_string(), format!("token \"partner-x\" (sha256 {}…)", &e.sha256_hex[..8]));
    for err in
        [TokenError::Missing, TokenError::Malformed, TokenError::Unknown, TokenError::Expired, TokenError::Exhausted]
    {
        let shown = format!("{err} {err:?} {}", err.www_authenticate());
        assert!(!shown.contains("alpha"));
    }
    assert_eq!(TokenError::Missing.www_authenticate(), "Bearer");
    assert_eq!(TokenError::Malformed.oauth_error(), Some("invalid_request"));
    assert_eq!(
        TokenError::Expired.www_authenticate(),
        "Bearer error=\"invalid_token\", error_description=\"token expired\""
    );
}

#[test]
fn hash_and_generate() {
    assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let t = generate_token(false);
    assert!(t.starts_with("dcrgw_iat_"));
    assert_eq!(t.len(), "dcrgw_iat_".len() + 43);
    assert_eq!(bearer(Some(&format!("Bearer {t}"))), Ok(t.as_str()));
    let a = generate_token(true);
    assert!(a.starts_with("dcrgw_adm_"));
    assert!(a[10..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_ne!(generate_token(false), generate_token(false));
    assert!(
        is_valid_label("partner-x.v2_1")
            && !is_valid_label("")
            && !is_valid_label("a b")
            && !is_valid_label(&"a".repeat(65))
    );
}

#[test]
fn overrides_apply() {
    let base = Policy { redirect_host_deny: vec!["evil.example".into()], ..Policy::default() };
    let none = PolicyOverrides::default();
    assert!(none.is_empty());
    assert_eq!(none.apply(&base), base);
    let o = PolicyOverrides {
        security_mode: Some(SecurityMode::Permissive),
        redirect_host_allow: Some(vec!["*.partner-x.example".into()]),
        allowed_scopes: Some(vec!["openid".into()]),
    };
    assert!(!o.is_empty());
    let p = o.apply(&base);
    assert_eq!(p.security_mode, SecurityMode::Permissive);
    assert_eq!(p.redirect_host_allow, ["*.partner-x.example"]);
    assert_eq!(p.allowed_scopes, Some(vec!["openid".to_string()]));
    assert_eq!(p.redirect_host_deny, ["evil.example"], "other keys kept");

    // The overridden policy is what registrations are checked with.
    let body = br#"{"redirect_uris":["https://app.partner-x.example/cb"],"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_post","response_types":[]}"#;
    assert!(crate::dcr::check(body, &base).is_err());
    assert!(crate::dcr::check(body, &p).is_ok());
    let elsewhere = br#"{"redirect_uris":["https://other.example/cb"]}"#;
    assert_eq!(crate::dcr::check(elsewhere, &p).unwrap_err().code, crate::dcr::ErrorCode::InvalidRedirectUri);

    // validate_against: strict override over a base whose defaults need permissive.
    let set = TokenSet::parse(&format!(
        "[[token]]\nlabel = \"s\"\nsha256 = \"{}\"\nsecurity_mode = \"strict\"\n",
        hash_token("s")
    ))
    .unwrap();
    let permissive_base = Policy {
        security_mode: SecurityMode::Permissive,
        default_grant_types: vec!["implicit".into()],
        default_response_types: vec!["id_token".into()],
        ..Policy::default()
    };
    assert_eq!(permissive_base.validate(), Ok(()));
    let errs = set.validate_against(&permissive_base).unwrap_err();
    assert!(errs[0].starts_with("token[0] (label \"s\"): with its overrides, dcr.default_grant_types[0]:"), "{errs:?}");
    assert_eq!(set.validate_against(&Policy::default()), Ok(()));
}

#[test]
fn use_counter_limit() {
    let set = TokenSet::parse(&file()).unwrap();
    let limited = set.get("partner-x").unwrap();
    let unlimited = set.get("ops.admin_1").unwrap();
    let c = UseCounter::new();
    let small = TokenEntry { max_uses: Some(2), ..limited.clone() };
    assert!(c.try_use(&small) && c.try_use(&small));
    assert!(!c.try_use(&small));
    assert_eq!(c.uses(&small), 2);
    for _ in 0..1000 {
        assert!(c.try_use(unlimited));
    }
    assert_eq!(c.len(), 2);
    // A token dropped from the file is forgotten.
    let only_b = TokenSet::parse(&format!("[[token]]\nlabel = \"b\"\nsha256 = \"{}\"\n", hash_token(TOKEN_B))).unwrap();
    c.retain(&only_b);
    assert_eq!((c.len(), c.uses(&small), c.uses(unlimited)), (1, 0, 1000));
    // An entry that did not come from a parsed set: limited ones fail closed.
    let forged = TokenEntry { sha256_hex: "zz".into(), ..small.clone() };
    assert!(!c.try_use(&forged));
}

#[test]
fn use_counter_is_atomic_under_concurrency() {
    let set = TokenSet::parse(&file()).unwrap();
    let entry = Arc::new(TokenEntry { max_uses: Some(250), ..set.get("partner-x").unwrap().clone() });
    let counter = Arc::new(UseCounter::new());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (entry, counter) = (entry.clone(), counter.clone());
            std::thread::spawn(move || (0..100).filter(|_| counter.try_use(&entry)).count())
        })
        .collect();
    let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(granted, 250);
    assert_eq!(counter.uses(&entry), 250);
}

#[test]
fn a_lease_is_given_back_unless_committed() {
    let set = TokenSet::parse(&file()).unwrap();
    let small = TokenEntry { max_uses: Some(2), ..set.get("partner-x").unwrap().clone() };
    let c = Arc::new(UseCounter::new());
    // The IdP failed (502, 504, refused, aborted): the lease is dropped, the use comes back.
    let lease = c.lease(&small).expect("a use is left");
    assert_eq!(c.uses(&small), 1, "counted while in flight");
    drop(lease);
    assert_eq!(c.uses(&small), 0);
    // Two in flight take both uses; a third is refused while they are.
    let (a, b) = (c.lease(&small).unwrap(), c.lease(&small).unwrap());
    assert!(c.lease(&small).is_none());
    a.commit();
    drop(b);
    assert_eq!(c.uses(&small), 1, "one committed, one given back");
    c.lease(&small).unwrap().commit();
    assert!(c.lease(&small).is_none(), "both uses spent");
    assert_eq!(c.uses(&small), 2);
}
