use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::*;
use crate::dcr::SecurityMode;

const URL: &str = "https://app.example.com/oauth/client.json";

fn doc(extra: serde_json::Value) -> Vec<u8> {
    let mut v = json!({
        "client_id": URL,
        "client_name": "Example App",
        "redirect_uris": ["https://app.example.com/cb", "http://127.0.0.1/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none"
    });
    for (k, x) in extra.as_object().unwrap() {
        if x.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn client_id_url_rules() {
    let s = Settings::default();
    for ok in [
        URL,
        "https://app.example.com/c",
        "https://app.example.com:8443/oauth/client.json",
        "https://app.example.com/client.json?v=1",
        "HTTPS://App.Example.com/x",
    ] {
        assert!(check_client_id_url(ok, &s).is_ok(), "{ok}");
    }
    assert_eq!(check_client_id_url("HTTPS://App.Example.com/x", &s).unwrap(), "app.example.com");
    for (bad, want) in [
        ("http://app.example.com/c.json", "scheme must be https"),
        ("ftp://app.example.com/c.json", "scheme must be https"),
        ("https://app.example.com", "must contain a path"),
        ("https://app.example.com/", "must contain a path"),
        ("https://app.example.com?x=1", "must contain a path"),
        ("https://app.example.com/c.json#frag", "fragment"),
        ("https://user@app.example.com/c.json", "username or password"),
        ("https://u:p@app.example.com/c.json", "username or password"),
        ("https://app.example.com/a/../c.json", ". or .. path segments"),
        ("https://app.example.com/./c.json", ". or .. path segments"),
        ("https://app.example.com/a/%2e%2E/c.json", ". or .. path segments"),
        ("https://app.example.com/a/.", ". or .. path segments"),
        ("https://app.example.com/c json", "whitespace"),
        ("https://app.example.com/c\\x", "backslash"),
        ("https:///c.json", "has no host"),
        ("https://[::1/c.json", "not a valid URL"),
    ] {
        let e = check_client_id_url(bad, &s).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadClientId, "{bad}");
        assert!(e.description.contains(want), "{bad}: {}", e.description);
    }
    let long = format!("https://app.example.com/{}", "a".repeat(2048));
    assert!(check_client_id_url(&long, &s).unwrap_err().description.contains("longer than 2048"));
    // Host lists.
    let lists = Settings {
        host_allow: vec!["*.example.com".into(), "claude.ai".into()],
        host_deny: vec!["evil.example.com".into()],
        ..Settings::default()
    };
    assert!(check_client_id_url(URL, &lists).is_ok());
    assert!(check_client_id_url("https://claude.ai/oauth/claude-code-client-metadata", &lists).is_ok());
    assert!(check_client_id_url("https://evil.example.com/c", &lists).unwrap_err().description.contains("denied"));
    assert!(check_client_id_url("https://other.org/c", &lists).unwrap_err().description.contains("not in the allowed"));
    // Development: http on loopback only when allowed (the fetcher checks the address).
    let dev = Settings { allow_http_loopback: true, ..Settings::default() };
    assert!(check_client_id_url("http://127.0.0.1:8080/c.json", &dev).is_ok());
    assert!(is_url_client_id("https://x/y") && is_url_client_id("HTTP://x/y") && !is_url_client_id("abc123"));
    // As a WHATWG URL parser reads them (an IdP may): each is an https URL, each is refused.
    let s = Settings::default();
    for spelled in [
        "https:/x.example/c",
        " https://x.example/c",
        "ht\ttps://x.example/c",
        "\nHTTPS://x.example/c",
        "https:\\\\x.example\\c",
        "\u{0}https://x.example/c",
    ] {
        assert!(is_url_client_id(spelled), "{spelled:?}");
        assert!(check_client_id_url(spelled, &s).is_err(), "{spelled:?}");
    }
    for other in ["", "https", "http", "httpsx://a", "urn:https:x", "s6BhdRkqt3", "xhttps://a"] {
        assert!(!is_url_client_id(other), "{other:?}");
    }
}

#[test]
fn documents_are_judged_like_registrations() {
    let p = Policy::default();
    let d = validate_document(URL, "app.example.com", &doc(json!({})), &p).unwrap();
    assert_eq!(d.redirect_uris, ["https://app.example.com/cb", "http://127.0.0.1/cb"]);
    assert_eq!(d.registration.document.get("client_id"), None, "client_id is not forwarded as a registration member");
    assert_eq!(d.known_client, None);
    assert_eq!(d.fingerprint.len(), 64);
    // A document without token_endpoint_auth_method is a public client, not the DCR default.
    let d2 = validate_document(URL, "app.example.com", &doc(json!({"token_endpoint_auth_method": null})), &p).unwrap();
    assert_eq!(d2.registration.document["token_endpoint_auth_method"], "none");

    for (extra, want) in [
        (json!({"client_id": "https://app.example.com/other.json"}), "client_id: not equal"),
        (json!({"client_id": null}), "client_id: required"),
        (json!({"client_id": 5}), "client_id: required"),
        (json!({"client_secret": "s3cret-value"}), "client_secret: a metadata document must not carry"),
        (json!({"token_endpoint_auth_method": "client_secret_basic"}), "needs a shared secret"),
        (json!({"redirect_uris": null}), "redirect_uris"),
        (json!({"redirect_uris": ["javascript:alert(1)"]}), "redirect_uris[0]"),
        (json!({"redirect_uris": ["http://app.example.com/cb"]}), "only allowed for loopback"),
        (json!({"client_name": "Claude", "redirect_uris": ["https://app.example.com/cb"]}), "names the known client"),
        (json!({"sector_identifier_uri": "https://169.254.169.254/s.json"}), "special-use"),
    ] {
        let e = validate_document(URL, "app.example.com", &doc(extra.clone()), &p).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidDocument, "{extra}");
        assert!(e.description.contains(want), "{extra}: {}", e.description);
        assert!(!e.description.contains("s3cret-value"), "a secret in an error");
    }
    for body in [&b"not json"[..], b"[1,2]", b"{\"client_id\": \"x\""] {
        assert_eq!(validate_document(URL, "h", body, &p).unwrap_err().kind, ErrorKind::InvalidDocument);
    }
    // Permissive mode: the same document rules, the permissive registration rules.
    let permissive = Policy { security_mode: SecurityMode::Permissive, ..Policy::default() };
    assert!(validate_document(
        URL,
        "h",
        &doc(json!({"client_name": "Claude", "redirect_uris": ["https://app.example.com/cb"]})),
        &permissive
    )
    .is_ok());
    // A catalogued client's own document.
    let vs = "https://vscode.dev/oauth/client-metadata.json";
    let body = serde_json::to_vec(&json!({
        "client_id": vs, "client_name": "Visual Studio Code", "application_type": "native",
        "redirect_uris": ["https://vscode.dev/redirect", "http://127.0.0.1:33418/"],
        "token_endpoint_auth_method": "none"
    }))
    .unwrap();
    assert_eq!(validate_document(vs, "vscode.dev", &body, &p).unwrap().known_client, Some("vscode"));
}

#[test]
fn redirect_uri_must_be_listed_exactly() {
    let d = validate_document(URL, "app.example.com", &doc(json!({})), &Policy::default()).unwrap();
    assert!(check_redirect_uri(&d, Some("https://app.example.com/cb")).is_ok());
    assert!(check_redirect_uri(&d, Some("http://127.0.0.1/cb")).is_ok());
    for bad in [
        "https://app.example.com/cb/",
        "https://APP.example.com/cb",
        "https://app.example.com/cb?x=1",
        "http://127.0.0.1:9/cb",
    ] {
        let e = check_redirect_uri(&d, Some(bad)).unwrap_err();
        assert_eq!((e.kind, e.code()), (ErrorKind::RedirectUriNotListed, "invalid_request"), "{bad}");
    }
    assert!(check_redirect_uri(&d, None).is_err());
    let e = check_redirect_uri(&d, Some("https://x/")).unwrap_err();
    let loc = error_redirect("https://app.example.com/cb", &e, Some("st&1"));
    assert!(loc.starts_with("https://app.example.com/cb?error=invalid_request&error_description="), "{loc}");
    assert!(loc.ends_with("&state=st%261"), "{loc}");
    assert!(error_redirect("https://a/cb?x=1", &e, None).starts_with("https://a/cb?x=1&error="));
}

#[test]
fn cache_lifetimes_follow_headers_within_bounds() {
    let s = Settings::default();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let ttl = |cc: Option<&str>, exp: Option<&str>, date: Option<&str>, age: Option<&str>| {
        cache_ttl(cc, exp, date, age, now, &s).as_secs()
    };
    assert_eq!(ttl(None, None, None, None), 300, "no headers: the minimum");
    assert_eq!(ttl(Some("max-age=3600"), None, None, None), 3600);
    assert_eq!(ttl(Some("public, max-age=3600"), None, None, Some("600")), 3000);
    assert_eq!(ttl(Some("max-age=3600, s-maxage=7200"), None, None, None), 7200);
    assert_eq!(ttl(Some("max-age=10"), None, None, None), 300, "clamped up");
    assert_eq!(ttl(Some("max-age=999999"), None, None, None), 86_400, "clamped down");
    assert_eq!(ttl(Some("no-store"), None, None, None), 300);
    assert_eq!(ttl(Some("no-cache, max-age=3600"), None, None, None), 300);
    assert_eq!(ttl(Some("max-age=\"1200\""), None, None, None), 1200);
    assert_eq!(ttl(Some("max-age=junk"), None, None, None), 300);
    let date = httpdate::fmt_http_date(now);
    let in_2h = httpdate::fmt_http_date(now + Duration::from_secs(7200));
    assert_eq!(ttl(None, Some(&in_2h), Some(&date), None), 7200);
    assert_eq!(ttl(None, Some(&in_2h), None, None), 7200, "Expires against now without Date");
    assert_eq!(ttl(None, Some("0"), None, None), 300, "an invalid Expires is expired: the minimum");
    assert_eq!(ttl(Some("max-age=1000"), Some(&in_2h), None, None), 1000, "max-age wins over Expires");
    let wide = Settings { cache_min_seconds: 0, cache_max_seconds: 60, ..Settings::default() };
    assert_eq!(cache_ttl(Some("max-age=3600"), None, None, None, now, &wide).as_secs(), 60);
    assert_eq!(cache_ttl(Some("no-store"), None, None, None, now, &wide).as_secs(), 0);
}

#[test]
fn the_cache_keeps_valid_documents_until_they_expire() {
    let p = Policy::default();
    let d = Arc::new(validate_document(URL, "app.example.com", &doc(json!({})), &p).unwrap());
    let mut c = DocumentCache::new(2);
    let t0 = Instant::now();
    assert!(c.get(URL, t0).is_none());
    c.insert(d.clone(), Duration::from_secs(300), t0);
    assert!(c.get(URL, t0 + Duration::from_secs(299)).is_some());
    assert!(c.get(URL, t0 + Duration::from_secs(300)).is_none(), "expired");
    assert!(c.is_empty(), "an expired entry is dropped");
    // Bounded: the oldest goes.
    let other = |n: u32| {
        let url = format!("https://app.example.com/c{n}.json");
        let body = doc(json!({"client_id": url}));
        Arc::new(validate_document(&url, "app.example.com", &body, &p).unwrap())
    };
    c.insert(other(1), Duration::from_secs(300), t0);
    c.insert(other(2), Duration::from_secs(300), t0 + Duration::from_secs(1));
    c.insert(other(3), Duration::from_secs(300), t0 + Duration::from_secs(2));
    assert_eq!(c.len(), 2);
    assert!(c.get("https://app.example.com/c1.json", t0 + Duration::from_secs(3)).is_none());
    assert!(c.get("https://app.example.com/c3.json", t0 + Duration::from_secs(3)).is_some());
}

#[test]
fn authorize_query_parameters() {
    let p = authorize_params(
        "response_type=code&client_id=https%3A%2F%2Fa.example%2Fc.json&redirect_uri=https%3A%2F%2Fa.example%2Fcb&state=s",
    )
    .unwrap();
    assert_eq!(p.client_id.as_deref(), Some("https://a.example/c.json"));
    assert_eq!(p.redirect_uri.as_deref(), Some("https://a.example/cb"));
    assert_eq!((p.response_type.as_deref(), p.state.as_deref()), (Some("code"), Some("s")));
    assert_eq!(authorize_params("client_id=a&client_id=b"), Err("a parameter is repeated"));
    assert_eq!(authorize_params(""), Ok(AuthorizeParams::default()));
    let d = validate_document(URL, "app.example.com", &doc(json!({})), &Policy::default()).unwrap();
    assert!(check_response_type(&d, Some("code")).is_ok());
    for bad in [Some("token"), Some("code id_token"), None] {
        assert_eq!(check_response_type(&d, bad).unwrap_err().code(), "unauthorized_client", "{bad:?}");
    }
}

#[test]
fn settings_problems() {
    assert!(Settings::default().problems().is_empty());
    let bad = Settings {
        host_allow: vec!["*.*".into()],
        allow_cidrs: vec!["10.0.0.0/33".into()],
        cache_min_seconds: 10,
        cache_max_seconds: 5,
        max_document_bytes: 0,
        ..Settings::default()
    };
    let keys: Vec<String> = bad.problems().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        ["cimd.host_allow[0]", "cimd.allow_cidrs[0]", "cimd.cache_min_seconds", "cimd.max_document_bytes"]
    );
    let s: Settings = toml::from_str("mode = \"enforce\"\nhost_allow = [\"*.example.com\"]").unwrap();
    assert_eq!(s.mode, Mode::Enforce);
    // Bridge needs [registry]: checked with the whole configuration (tests/cimd_gateway.rs).
    let bridge: Settings = toml::from_str("mode = \"bridge\"\ntoken_paths = [\"token\"]").unwrap();
    assert_eq!(bridge.problems()[0].0, "cimd.token_paths[0]");
    assert!(toml::from_str::<Settings>("mode = \"on\"").is_err());
    assert!(toml::from_str::<Settings>("bogus = 1").is_err());
}
