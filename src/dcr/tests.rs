//! Table-driven tests of `check` for every rule, in both modes, and property tests.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

const IRI: ErrorCode = ErrorCode::InvalidRedirectUri;
const ICM: ErrorCode = ErrorCode::InvalidClientMetadata;
const ISS: ErrorCode = ErrorCode::InvalidSoftwareStatement;

/// Every method the validator knows (the default is Auth0's `none` and `client_secret_post`).
fn every_auth_method() -> Vec<String> {
    ["none", "client_secret_post", "client_secret_basic", "private_key_jwt"].map(String::from).to_vec()
}

fn strict() -> Policy {
    Policy { token_endpoint_auth_methods: every_auth_method(), ..Policy::default() }
}

fn permissive() -> Policy {
    Policy { security_mode: SecurityMode::Permissive, ..strict() }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Checks, asserts success, and asserts idempotence (the output checks to itself).
fn ok_with(policy: &Policy, v: &Value) -> Normalized {
    let n = check(&bytes(v), policy).unwrap_or_else(|e| panic!("rejected {v}: {e}"));
    assert_eq!(n.body, serde_json::to_vec(&n.document).unwrap());
    let again = check(&n.body, policy).unwrap_or_else(|e| panic!("output of {v} rejected: {e}"));
    assert_eq!(again.body, n.body, "not idempotent for {v}");
    n
}

fn err_with(policy: &Policy, v: &Value) -> RegistrationError {
    match check(&bytes(v), policy) {
        Ok(n) => panic!("accepted {v}: {}", String::from_utf8_lossy(&n.body)),
        Err(e) => e,
    }
}

/// A valid strict-mode web registration plus `extra` members (null removes a member).
fn web(extra: Value) -> Value {
    let mut base = json!({
        "client_name": "Example App",
        "redirect_uris": ["https://app.example.com/callback"],
    });
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

/// `(label, body, code, description prefix)`: rejected in the given mode(s).
type Bad = (&'static str, Value, ErrorCode, &'static str);

fn assert_bad(policy: &Policy, cases: &[Bad]) {
    for (label, body, code, prefix) in cases {
        let e = err_with(policy, body);
        assert_eq!(e.code, *code, "{label}: {e}");
        assert!(
            e.description.starts_with(prefix),
            "{label}: description {:?} does not start with {prefix:?}",
            e.description
        );
        assert!(
            e.description.split_once(": ").is_some_and(|(_, r)| !r.is_empty()),
            "{label}: no reason: {:?}",
            e.description
        );
    }
}

fn bad_in_both_modes() -> Vec<Bad> {
    vec![
        // redirect_uris
        ("redirect_uris missing", json!({"client_name": "x"}), IRI, "redirect_uris: required"),
        (
            "redirect_uris not an array",
            web(json!({"redirect_uris": "https://app.example.com/cb"})),
            IRI,
            "redirect_uris: ",
        ),
        ("redirect_uris empty", web(json!({"redirect_uris": []})), IRI, "redirect_uris: must not be empty"),
        (
            "redirect_uris element type",
            web(json!({"redirect_uris": ["https://a.example.com/cb", 7]})),
            IRI,
            "redirect_uris[1]: must be a string",
        ),
        (
            "redirect_uris duplicate",
            web(json!({"redirect_uris": ["https://a.example.com/cb", "https://a.example.com/cb"]})),
            IRI,
            "redirect_uris[1]: duplicate of redirect_uris[0]",
        ),
        (
            "redirect_uris too many",
            web(json!({"redirect_uris": (0..11).map(|i| format!("https://a.example.com/{i}")).collect::<Vec<_>>()})),
            IRI,
            "redirect_uris: more than 10",
        ),
        (
            "javascript",
            web(json!({"redirect_uris": ["https://a.example.com/cb", "javascript:alert(1)"]})),
            IRI,
            "redirect_uris[1]: scheme \"javascript\" is not allowed",
        ),
        (
            "javascript padded",
            web(json!({"redirect_uris": ["  JaVaScRiPt:alert(1)"]})),
            IRI,
            "redirect_uris[0]: scheme \"javascript\"",
        ),
        (
            "data",
            web(json!({"redirect_uris": ["data:text/html;base64,PHNjcmlwdD4="]})),
            IRI,
            "redirect_uris[0]: scheme \"data\"",
        ),
        ("file", web(json!({"redirect_uris": ["file:///etc/passwd"]})), IRI, "redirect_uris[0]: scheme \"file\""),
        (
            "vbscript",
            web(json!({"redirect_uris": ["vbscript:msgbox(1)"]})),
            IRI,
            "redirect_uris[0]: scheme \"vbscript\"",
        ),
        (
            "http non-loopback",
            web(json!({"redirect_uris": ["http://app.example.com/cb"]})),
            IRI,
            "redirect_uris[0]: scheme \"http\" is only allowed for loopback",
        ),
        (
            "fragment",
            web(json!({"redirect_uris": ["https://app.example.com/cb#x"]})),
            IRI,
            "redirect_uris[0]: must not contain a fragment",
        ),
        (
            "userinfo",
            web(json!({"redirect_uris": ["https://app.example.com@evil.example/cb"]})),
            IRI,
            "redirect_uris[0]: must not contain userinfo",
        ),
        (
            "wildcard",
            web(json!({"redirect_uris": ["https://*.example.com/cb"]})),
            IRI,
            "redirect_uris[0]: host must not contain a wildcard",
        ),
        ("relative", web(json!({"redirect_uris": ["/callback"]})), IRI, "redirect_uris[0]: not an absolute URI"),
        (
            "private-use, confidential, not native",
            web(json!({"redirect_uris": ["com.example.app:/cb"]})),
            IRI,
            "redirect_uris[0]: private-use scheme \"com.example.app\" needs a public client",
        ),
        (
            "private-use, confidential, not reverse-domain",
            web(json!({"redirect_uris": ["myapp:/cb"], "application_type": "native"})),
            IRI,
            "redirect_uris[0]: private-use scheme \"myapp\" of a confidential client must be a reverse domain name",
        ),
        (
            "ws, public",
            web(json!({"redirect_uris": ["ws://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"})),
            IRI,
            "redirect_uris[0]: scheme \"ws\" is not allowed",
        ),
        (
            "wss, public native",
            web(
                json!({"redirect_uris": ["wss://app.example.com/cb"], "token_endpoint_auth_method": "none", "application_type": "native"}),
            ),
            IRI,
            "redirect_uris[0]: scheme \"wss\" is not allowed",
        ),
        (
            "ftp, public",
            web(json!({"redirect_uris": ["ftp://app.example.com/cb"], "token_endpoint_auth_method": "none"})),
            IRI,
            "redirect_uris[0]: scheme \"ftp\" is not allowed",
        ),
        (
            "blob, public",
            web(json!({"redirect_uris": ["blob:https://app.example.com/0b5c"], "token_endpoint_auth_method": "none"})),
            IRI,
            "redirect_uris[0]: scheme \"blob\" is not allowed",
        ),
        (
            "about, public",
            web(json!({"redirect_uris": ["about:blank"], "token_endpoint_auth_method": "none"})),
            IRI,
            "redirect_uris[0]: scheme \"about\" is not allowed",
        ),
        (
            "view-source, public",
            web(
                json!({"redirect_uris": ["view-source:https://app.example.com/"], "token_endpoint_auth_method": "none"}),
            ),
            IRI,
            "redirect_uris[0]: scheme \"view-source\" is not allowed",
        ),
        (
            "filesystem, public",
            web(
                json!({"redirect_uris": ["filesystem:https://app.example.com/temporary/x"], "token_endpoint_auth_method": "none"}),
            ),
            IRI,
            "redirect_uris[0]: scheme \"filesystem\" is not allowed",
        ),
        (
            "drive letter, public",
            web(json!({"redirect_uris": ["c:/Users/me/cb.html"], "token_endpoint_auth_method": "none"})),
            IRI,
            "redirect_uris[0]: scheme \"c\" is not allowed",
        ),
        (
            "bare private-use scheme, public",
            web(json!({"redirect_uris": ["cursor:"], "token_endpoint_auth_method": "none"})),
            IRI,
            "redirect_uris[0]: private-use URI with scheme \"cursor\" has nothing",
        ),
        (
            "not a scheme, public",
            web(json!({"redirect_uris": ["1cursor://x/cb"], "token_endpoint_auth_method": "none"})),
            IRI,
            "redirect_uris[0]: not an absolute URI",
        ),
        (
            "private-use userinfo, public",
            web(
                json!({"redirect_uris": ["cursor://anysphere.cursor-mcp@evil/cb"], "token_endpoint_auth_method": "none"}),
            ),
            IRI,
            "redirect_uris[0]: must not contain userinfo",
        ),
        (
            "private-use fragment, public",
            web(json!({"redirect_uris": ["cursor://anysphere.cursor-mcp/cb#x"], "token_endpoint_auth_method": "none"})),
            IRI,
            "redirect_uris[0]: must not contain a fragment",
        ),
        ("invalid IDNA", web(json!({"redirect_uris": ["https://xn--a.example/cb"]})), IRI, "redirect_uris[0]: "),
        (
            "non-canonical IPv4",
            web(json!({"redirect_uris": ["http://127.1:8080/cb"]})),
            IRI,
            "redirect_uris[0]: host is not written in canonical form",
        ),
        (
            "tab inside",
            web(json!({"redirect_uris": ["https://app.example.com/c\tb"]})),
            IRI,
            "redirect_uris[0]: contains a character",
        ),
        (
            "too long",
            web(json!({"redirect_uris": [format!("https://app.example.com/{}", "a".repeat(2030))]})),
            IRI,
            "redirect_uris[0]: longer than 2048",
        ),
        // grant_types / response_types
        ("grant_types type", web(json!({"grant_types": "authorization_code"})), ICM, "grant_types: must be an array"),
        ("grant_types empty", web(json!({"grant_types": []})), ICM, "grant_types: must not be empty"),
        (
            "password grant",
            web(json!({"grant_types": ["authorization_code", "password"]})),
            ICM,
            "grant_types[1]: grant type \"password\" is not allowed",
        ),
        ("unknown grant", web(json!({"grant_types": ["magic"]})), ICM, "grant_types[0]: unsupported grant type"),
        (
            "refresh_token alone",
            web(json!({"grant_types": ["refresh_token"], "response_types": []})),
            ICM,
            "grant_types: \"refresh_token\" requires",
        ),
        (
            "response_types none",
            web(json!({"response_types": ["none"]})),
            ICM,
            "response_types[0]: response type \"none\" is not allowed",
        ),
        (
            "response_types unknown",
            web(json!({"response_types": ["code", "magic"]})),
            ICM,
            "response_types[1]: unsupported response type",
        ),
        (
            "response_types element type",
            web(json!({"response_types": [1]})),
            ICM,
            "response_types[0]: must be a string",
        ),
        (
            "authorization_code without code",
            web(json!({"response_types": []})),
            ICM,
            "grant_types: \"authorization_code\" requires response type \"code\"",
        ),
        // token endpoint authentication
        (
            "auth method type",
            web(json!({"token_endpoint_auth_method": ["none"]})),
            ICM,
            "token_endpoint_auth_method: must be a string",
        ),
        (
            "auth method unknown",
            web(json!({"token_endpoint_auth_method": "magic"})),
            ICM,
            "token_endpoint_auth_method: unsupported",
        ),
        (
            "auth method not allowed",
            web(json!({"token_endpoint_auth_method": "client_secret_jwt"})),
            ICM,
            "token_endpoint_auth_method: \"client_secret_jwt\" is not allowed by policy",
        ),
        (
            "private_key_jwt without keys",
            web(json!({"token_endpoint_auth_method": "private_key_jwt"})),
            ICM,
            "token_endpoint_auth_method: this method requires jwks or jwks_uri",
        ),
        (
            "jwks and jwks_uri",
            web(json!({"jwks": {"keys": [{"kty": "EC"}]}, "jwks_uri": "https://app.example.com/jwks"})),
            ICM,
            "jwks: must not be used together with jwks_uri",
        ),
        ("jwks not object", web(json!({"jwks": [{"kty": "EC"}]})), ICM, "jwks: must be a JSON object"),
        ("jwks without keys", web(json!({"jwks": {"kty": "EC"}})), ICM, "jwks: must have a \"keys\" array"),
        ("jwks empty keys", web(json!({"jwks": {"keys": []}})), ICM, "jwks: \"keys\" must not be empty"),
        ("jwks key not object", web(json!({"jwks": {"keys": ["k"]}})), ICM, "jwks.keys[0]: must be a JSON object"),
        (
            "jwks key without kty",
            web(json!({"jwks": {"keys": [{"kty": "EC"}, {"kid": "1"}]}})),
            ICM,
            "jwks.keys[1]: must have a string \"kty\"",
        ),
        (
            "jwks nested private key",
            web(json!({"jwks": {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "x5": {"d": "secret"}}]}})),
            ICM,
            "jwks.keys[0]: must not contain private",
        ),
        (
            "jwks private key",
            web(json!({"jwks": {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "d": "secret"}]}})),
            ICM,
            "jwks.keys[0]: must not contain private",
        ),
        (
            "jwks_uri http",
            web(json!({"jwks_uri": "http://app.example.com/jwks"})),
            ICM,
            "jwks_uri: scheme \"http\" is not allowed (https is required)",
        ),
        ("jwks_uri type", web(json!({"jwks_uri": 1})), ICM, "jwks_uri: must be a string"),
        (
            "signing alg none",
            web(json!({"token_endpoint_auth_signing_alg": "none"})),
            ICM,
            "token_endpoint_auth_signing_alg: \"none\" is not allowed",
        ),
        (
            "alg shape",
            web(json!({"id_token_signed_response_alg": "RS 256"})),
            ICM,
            "id_token_signed_response_alg: not an algorithm name",
        ),
        (
            "enc without alg",
            web(json!({"userinfo_encrypted_response_enc": "A128GCM"})),
            ICM,
            "userinfo_encrypted_response_enc: requires userinfo_encrypted_response_alg",
        ),
        // client_name
        ("client_name type", web(json!({"client_name": 5})), ICM, "client_name: must be a string"),
        ("client_name blank", web(json!({"client_name": "   "})), ICM, "client_name: must not be empty"),
        (
            "client_name too long",
            web(json!({"client_name": "x".repeat(101)})),
            ICM,
            "client_name: longer than 100 characters",
        ),
        ("client_name control", web(json!({"client_name": "a\u{7}b"})), ICM, "client_name: must not contain control"),
        (
            "client_name bidi override",
            web(json!({"client_name": "abc\u{202E}fdp.exe"})),
            ICM,
            "client_name: must not contain control",
        ),
        ("client_name#lang blank", web(json!({"client_name#en": ""})), ICM, "client_name#en: must not be empty"),
        ("client_name#lang type", web(json!({"client_name#ja-JP": ["x"]})), ICM, "client_name#ja-JP: must be a string"),
        ("client_name bad tag", web(json!({"client_name#e!": "x"})), ICM, "client_name#e!: invalid language tag"),
        ("client_name empty tag", web(json!({"client_name#": "x"})), ICM, "client_name#: invalid language tag"),
        (
            "client_name tag case duplicate",
            web(json!({"client_name#en": "a", "client_name#EN": "b"})),
            ICM,
            "client_name#EN: duplicate language tag",
        ),
        // other URIs
        (
            "logo_uri http",
            web(json!({"logo_uri": "http://app.example.com/logo.png"})),
            ICM,
            "logo_uri: scheme \"http\"",
        ),
        (
            "logo_uri javascript",
            web(json!({"logo_uri": "javascript:alert(1)"})),
            ICM,
            "logo_uri: scheme \"javascript\"",
        ),
        (
            "tos_uri#lang http",
            web(json!({"tos_uri#de": "http://app.example.com/agb"})),
            ICM,
            "tos_uri#de: scheme \"http\"",
        ),
        ("policy_uri relative", web(json!({"policy_uri": "/privacy"})), ICM, "policy_uri: not an absolute URI"),
        (
            "client_uri userinfo",
            web(json!({"client_uri": "https://u:p@app.example.com/"})),
            ICM,
            "client_uri: must not contain userinfo",
        ),
        (
            "client_uri too long",
            web(json!({"client_uri": format!("https://app.example.com/{}", "a".repeat(2048))})),
            ICM,
            "client_uri: longer than 2048",
        ),
        (
            "initiate_login_uri http",
            web(json!({"initiate_login_uri": "http://app.example.com/login"})),
            ICM,
            "initiate_login_uri: ",
        ),
        (
            "sector_identifier_uri type",
            web(json!({"sector_identifier_uri": false})),
            ICM,
            "sector_identifier_uri: must be a string",
        ),
        ("request_uris http", web(json!({"request_uris": ["http://app.example.com/r"]})), ICM, "request_uris[0]: "),
        (
            "post logout http",
            web(json!({"post_logout_redirect_uris": ["http://app.example.com/bye"]})),
            ICM,
            "post_logout_redirect_uris[0]: scheme \"http\"",
        ),
        // the rest
        ("contacts type", web(json!({"contacts": "ops@example.com"})), ICM, "contacts: must be an array"),
        (
            "contacts email",
            web(json!({"contacts": ["ops@example.com", "not-an-email"]})),
            ICM,
            "contacts[1]: not an email address",
        ),
        ("scope type", web(json!({"scope": ["openid"]})), ICM, "scope: must be a string"),
        ("scope bad char", web(json!({"scope": "openid \"x\""})), ICM, "scope: scope tokens may only contain"),
        (
            "application_type",
            web(json!({"application_type": "desktop"})),
            ICM,
            "application_type: must be \"web\" or \"native\"",
        ),
        ("subject_type", web(json!({"subject_type": "secret"})), ICM, "subject_type: must be"),
        ("software_id type", web(json!({"software_id": 42})), ICM, "software_id: must be a string"),
        (
            "software_version control",
            web(json!({"software_version": "1.0\n"})),
            ICM,
            "software_version: must not contain control",
        ),
        (
            "software_statement type",
            web(json!({"software_statement": {"alg": "none"}})),
            ISS,
            "software_statement: must be a string",
        ),
        (
            "software_statement shape",
            web(json!({"software_statement": "not-a-jws"})),
            ISS,
            "software_statement: not a compact JWS",
        ),
        (
            "software_statement unsigned",
            web(json!({"software_statement": "eyJhbGciOiJub25lIn0.eyJzIjoxfQ."})),
            ISS,
            "software_statement: not a compact JWS",
        ),
        (
            "default_max_age",
            web(json!({"default_max_age": -1})),
            ICM,
            "default_max_age: must be a non-negative integer",
        ),
        ("require_auth_time", web(json!({"require_auth_time": "yes"})), ICM, "require_auth_time: must be a boolean"),
        ("default_acr_values", web(json!({"default_acr_values": ["a b"]})), ICM, "default_acr_values[0]: "),
        // the body itself
        ("top-level array", json!([web(json!({}))]), ICM, "body: the top-level JSON value must be an object"),
    ]
}

#[test]
fn rejected_in_both_modes() {
    let cases = bad_in_both_modes();
    assert_bad(&strict(), &cases);
    assert_bad(&permissive(), &cases);
}

#[test]
fn rejected_in_strict_only() {
    let s = strict();
    let p = permissive();
    let cases: Vec<(&str, Value, ErrorCode, &str)> = vec![
        (
            "implicit grant",
            web(json!({"grant_types": ["implicit"], "response_types": ["id_token"]})),
            ICM,
            "grant_types[0]: grant type \"implicit\" is not allowed in strict mode",
        ),
        (
            "client_credentials",
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic"}),
            ICM,
            "grant_types[0]: grant type \"client_credentials\"",
        ),
        (
            "device_code",
            json!({"grant_types": ["urn:ietf:params:oauth:grant-type:device_code"], "token_endpoint_auth_method": "none"}),
            ICM,
            "grant_types[0]: grant type \"urn:ietf:params:oauth:grant-type:device_code\"",
        ),
        (
            "hybrid response type",
            web(json!({"response_types": ["code id_token"], "grant_types": ["authorization_code", "implicit"]})),
            ICM,
            "response_types[0]: response type \"code id_token\" is not allowed in strict mode",
        ),
        (
            "token response type",
            web(json!({"response_types": ["token"], "grant_types": ["implicit"]})),
            ICM,
            "response_types[0]: response type \"token\"",
        ),
        (
            "angle brackets in name",
            web(json!({"client_name": "<script>alert(1)</script>"})),
            ICM,
            "client_name: must not contain '<' or '>'",
        ),
        (
            "homograph host",
            web(json!({"redirect_uris": ["https://\u{440}aypal.com/cb"]})),
            IRI,
            "redirect_uris[0]: host mixes scripts",
        ),
        (
            "homograph punycode",
            web(json!({"redirect_uris": ["https://xn--pypal-4ve.com/cb"]})),
            IRI,
            "redirect_uris[0]: host mixes scripts",
        ),
        (
            "logo fragment",
            web(json!({"logo_uri": "https://app.example.com/logo.png#x"})),
            ICM,
            "logo_uri: must not contain a fragment",
        ),
        (
            "refresh with device_code only",
            json!({"grant_types": ["refresh_token"], "response_types": []}),
            ICM,
            "grant_types: \"refresh_token\" requires \"authorization_code\"",
        ),
    ];
    assert_bad(&s, &cases);
    // The same registrations pass in permissive mode, except refresh_token without a grant
    // that issues refresh tokens.
    for (label, body, _, _) in &cases {
        if *label != "refresh with device_code only" {
            ok_with(&p, body);
        }
    }
}

#[test]
fn auth0_documentation_example() {
    let body = br#"{"client_name":"My Dynamic Application","redirect_uris": ["https://application.example.com/callback","https://application.example.com/callback2"]}"#;
    for policy in [strict(), permissive()] {
        let n = check(body, &policy).unwrap();
        assert_eq!(
            String::from_utf8(n.body.clone()).unwrap(),
            r#"{"client_name":"My Dynamic Application","redirect_uris":["https://application.example.com/callback","https://application.example.com/callback2"],"grant_types":["authorization_code"],"response_types":["code"],"token_endpoint_auth_method":"client_secret_post"}"#
        );
        assert_eq!(n.client_name.as_deref(), Some("My Dynamic Application"));
        assert_eq!(n.redirect_hosts, ["application.example.com"]);
        assert!(n.dropped_members.is_empty() && n.removed_scopes.is_empty());
        assert_eq!(check(&n.body, &policy).unwrap().body, n.body);
    }
}

#[test]
fn typical_mcp_client_registration() {
    let v = json!({
        "client_name": "Claude Code (my-server)",
        "redirect_uris": ["http://127.0.0.1:53682/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    });
    for policy in [strict(), permissive()] {
        let n = ok_with(&policy, &v);
        assert_eq!(Value::Object(n.document.clone()), v);
        assert_eq!(n.redirect_hosts, ["127.0.0.1"]);
        // A port-less localhost and IPv6 loopback are fine too.
        let mut w = v.clone();
        w["redirect_uris"] = json!(["http://localhost/callback", "http://[::1]:3000/callback"]);
        assert_eq!(ok_with(&policy, &w).redirect_hosts, ["localhost", "[::1]"]);
    }
}

#[test]
fn accepted_in_both_modes() {
    let cases: Vec<(&str, Value)> = vec![
        ("minimal", json!({"redirect_uris": ["https://app.example.com/cb"]})),
        (
            "native private-use",
            json!({"application_type": "native", "redirect_uris": ["com.example.app:/oauth2redirect/example-provider"], "token_endpoint_auth_method": "none"}),
        ),
        (
            "public private-use without dot or application_type",
            json!({"redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback", "https://www.cursor.com/agents/mcp/oauth/callback", "http://localhost:8787/callback"], "token_endpoint_auth_method": "none"}),
        ),
        (
            "public private-use, application_type web",
            json!({"application_type": "web", "redirect_uris": ["vscode://saoudrizwan.claude-dev/mcp-auth/callback/abc123"], "token_endpoint_auth_method": "none"}),
        ),
        (
            "public private-use, upper-case scheme",
            json!({"redirect_uris": ["Cursor://anysphere.cursor-mcp/oauth/callback"], "token_endpoint_auth_method": "none"}),
        ),
        (
            "public private-use post_logout",
            json!({"redirect_uris": ["http://127.0.0.1/cb"], "post_logout_redirect_uris": ["myapp:/bye"], "token_endpoint_auth_method": "none"}),
        ),
        (
            "confidential native reverse-domain",
            json!({"application_type": "native", "redirect_uris": ["com.example.app:/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
        ),
        ("empty scope is no scope", web(json!({"scope": ""}))),
        ("blank scope is no scope", web(json!({"scope": "  "}))),
        (
            "native claimed https + loopback",
            json!({"application_type": "native", "redirect_uris": ["https://app.example.com/cb", "http://127.0.0.1/cb"]}),
        ),
        ("idn host", json!({"redirect_uris": ["https://bücher.example/cb"]})),
        ("japanese host", json!({"redirect_uris": ["https://例え.テスト/cb"]})),
        (
            "private_key_jwt with jwks",
            web(
                json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]}}),
            ),
        ),
        (
            "private_key_jwt with jwks_uri",
            web(
                json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://app.example.com/jwks.json"}),
            ),
        ),
        (
            "site uris on the redirect site",
            web(
                json!({"client_uri": "https://www.example.com/", "logo_uri": "https://cdn.example.com/l.png", "policy_uri": "https://example.com/privacy", "tos_uri": "https://example.com/tos", "tos_uri#de": "https://example.com/agb", "logo_uri#ja": "https://example.com/ja.png"}),
            ),
        ),
        (
            "co.uk site",
            json!({"redirect_uris": ["https://app.example.co.uk/cb"], "client_uri": "https://www.example.co.uk/"}),
        ),
        (
            "site uris without web redirect",
            json!({"redirect_uris": ["http://127.0.0.1:9999/cb"], "client_uri": "https://github.com/example/tool", "logo_uri": "https://avatars.example.net/l.png"}),
        ),
        ("localized names", web(json!({"client_name#ja-Jpan-JP": "アプリ", "client_name#en-US": "App"}))),
        ("contacts", web(json!({"contacts": ["ops@example.com", " sec@example.com "]}))),
        ("scope", web(json!({"scope": "openid profile offline_access"}))),
        (
            "software fields",
            web(
                json!({"software_id": "4NRB1-0XZABZI9E6-5SM3R", "software_version": "2.1", "software_statement": "eyJhbGciOiJSUzI1NiJ9.eyJzb2Z0d2FyZV9pZCI6IjEifQ.c2ln"}),
            ),
        ),
        (
            "oidc members",
            web(
                json!({"subject_type": "pairwise", "sector_identifier_uri": "https://example.com/sector.json", "id_token_signed_response_alg": "ES256", "id_token_encrypted_response_alg": "RSA-OAEP-256", "id_token_encrypted_response_enc": "A256GCM", "default_max_age": 3600, "require_auth_time": true, "default_acr_values": ["urn:mace:incommon:iap:silver"], "initiate_login_uri": "https://app.example.com/login", "request_uris": ["https://app.example.com/req.jwt"], "post_logout_redirect_uris": ["https://app.example.com/bye"]}),
            ),
        ),
        ("client_secret_basic", web(json!({"token_endpoint_auth_method": "client_secret_basic"}))),
        ("refresh_token with code", web(json!({"grant_types": ["refresh_token", "authorization_code"]}))),
        ("application_type web", web(json!({"application_type": "web"}))),
        (
            "max redirect uris",
            web(json!({"redirect_uris": (0..10).map(|i| format!("https://app.example.com/{i}")).collect::<Vec<_>>()})),
        ),
        (
            "uri exactly 2048",
            web(json!({"redirect_uris": [format!("https://app.example.com/{}", "a".repeat(2048 - 24))]})),
        ),
        ("name exactly 100", web(json!({"client_name": "é".repeat(100)}))),
    ];
    for policy in [strict(), permissive()] {
        for (label, v) in &cases {
            let n = check(&bytes(v), &policy).unwrap_or_else(|e| panic!("{label} ({:?}): {e}", policy.security_mode));
            assert_eq!(check(&n.body, &policy).unwrap().body, n.body, "{label}");
        }
    }
}

#[test]
fn accepted_in_permissive_only() {
    let p = permissive();
    let cases: Vec<(&str, Value)> = vec![
        (
            "implicit",
            json!({"grant_types": ["implicit"], "response_types": ["id_token token"], "redirect_uris": ["https://app.example.com/cb"]}),
        ),
        (
            "hybrid",
            json!({"grant_types": ["authorization_code", "implicit"], "response_types": ["code id_token", "code"], "redirect_uris": ["https://app.example.com/cb"]}),
        ),
        (
            "client_credentials without redirect_uris",
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic"}),
        ),
        (
            "device code + refresh",
            json!({"grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"], "token_endpoint_auth_method": "none"}),
        ),
        ("angle brackets", web(json!({"client_name": "<Example>"}))),
        ("mixed-script host", json!({"redirect_uris": ["https://p\u{430}ypal.com/cb"]})),
        ("fragment in tos", web(json!({"tos_uri": "https://app.example.com/legal#tos"}))),
    ];
    for (label, v) in &cases {
        let n = ok_with(&p, v);
        assert!(check(&bytes(v), &strict()).is_err(), "{label} accepted in strict mode");
        if *label == "client_credentials without redirect_uris" {
            assert_eq!(n.document["response_types"], json!([]));
            assert!(n.redirect_hosts.is_empty());
        }
    }
}

#[test]
fn permissive_only_rules() {
    let p = permissive();
    assert_bad(
        &p,
        &[
            (
                "code without authorization_code grant",
                json!({"grant_types": ["client_credentials"], "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic"}),
                ICM,
                "response_types[0]: \"code\" requires grant type \"authorization_code\"",
            ),
            (
                "refresh without code or device",
                json!({"grant_types": ["client_credentials", "refresh_token"], "token_endpoint_auth_method": "client_secret_basic"}),
                ICM,
                "grant_types: \"refresh_token\" requires \"authorization_code\" or",
            ),
            (
                "client_credentials public",
                json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
                ICM,
                "grant_types: \"client_credentials\" requires a client that authenticates",
            ),
            (
                "implicit needs implicit response type",
                json!({"grant_types": ["authorization_code", "implicit"], "response_types": ["code"], "redirect_uris": ["https://app.example.com/cb"]}),
                ICM,
                "grant_types: \"implicit\" requires response type",
            ),
            (
                "token response type needs implicit",
                web(json!({"response_types": ["code", "code token"]})),
                ICM,
                "response_types[1]: \"code token\" requires grant type \"implicit\"",
            ),
            (
                "implicit on loopback",
                json!({"grant_types": ["implicit"], "response_types": ["token"], "redirect_uris": ["http://127.0.0.1/cb"]}),
                IRI,
                "redirect_uris[0]: the implicit grant needs https",
            ),
            (
                "implicit without redirect",
                json!({"grant_types": ["implicit"], "response_types": ["token"]}),
                IRI,
                "redirect_uris: required",
            ),
        ],
    );
}

#[test]
fn defaults_are_filled_from_policy() {
    let n = ok_with(&strict(), &json!({"redirect_uris": ["https://app.example.com/cb"]}));
    assert_eq!(n.document["grant_types"], json!(["authorization_code"]));
    assert_eq!(n.document["response_types"], json!(["code"]));
    assert_eq!(n.document["token_endpoint_auth_method"], "client_secret_post");
    assert!(!n.document.contains_key("scope"));
    assert_eq!(n.client_name, None);

    let p = Policy {
        default_token_endpoint_auth_method: "client_secret_basic".into(),
        default_grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        default_scope: Some("openid  profile".into()),
        ..strict()
    };
    let n = ok_with(&p, &json!({"redirect_uris": ["https://app.example.com/cb"]}));
    assert_eq!(n.document["grant_types"], json!(["authorization_code", "refresh_token"]));
    assert_eq!(n.document["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(n.document["scope"], "openid profile");
    // A given scope is not replaced by the default.
    assert_eq!(ok_with(&p, &web(json!({"scope": "email"}))).document["scope"], "email");

    // Response types default to the policy's values that fit the grant types.
    let pp = Policy { default_response_types: vec!["code".into(), "id_token".into()], ..permissive() };
    let n =
        ok_with(&pp, &json!({"grant_types": ["authorization_code"], "redirect_uris": ["https://app.example.com/cb"]}));
    assert_eq!(n.document["response_types"], json!(["code"]));
    let n = ok_with(
        &pp,
        &json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic"}),
    );
    assert_eq!(n.document["response_types"], json!([]));
}

#[test]
fn normalization() {
    let v = json!({
        "client_name": "  Cafe\u{301} App  ",
        "client_name#fr": " Appli ",
        "redirect_uris": ["HTTPS://App.Example.com/cb?b=2&a=1", "https://app.example.com/%7Euser/cb"],
        "grant_types": ["authorization_code", "refresh_token", "authorization_code"],
        "response_types": ["code", "code"],
        "scope": "  openid\tprofile  openid ",
        "contacts": ["a@example.com", " a@example.com", "b@example.com"],
        "default_acr_values": ["x", "x"],
    });
    let n = ok_with(&strict(), &v);
    let d = &n.document;
    assert_eq!(d["client_name"], "Café App");
    assert_eq!(d["client_name#fr"], "Appli");
    // Redirect URIs are forwarded byte for byte.
    assert_eq!(d["redirect_uris"], v["redirect_uris"]);
    assert_eq!(d["grant_types"], json!(["authorization_code", "refresh_token"]));
    assert_eq!(d["response_types"], json!(["code"]));
    assert_eq!(d["scope"], "openid profile");
    assert_eq!(d["contacts"], json!(["a@example.com", "b@example.com"]));
    assert_eq!(d["default_acr_values"], json!(["x"]));
    assert_eq!(n.client_name.as_deref(), Some("Café App"));
    assert_eq!(n.redirect_hosts, ["app.example.com"]);
    // Member order is kept; defaults come last.
    let keys: Vec<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(keys.last(), Some(&"token_endpoint_auth_method"));
    assert_eq!(keys[0], "client_name");

    let n = ok_with(
        &permissive(),
        &web(
            json!({"response_types": ["code", "id_token code", "code id_token"], "grant_types": ["authorization_code", "implicit"]}),
        ),
    );
    assert_eq!(n.document["response_types"], json!(["code", "code id_token"]));
    // Only a localized name: used for the audit log.
    let n = ok_with(&strict(), &web(json!({"client_name": null, "client_name#de": "Beispiel"})));
    assert_eq!(n.client_name.as_deref(), Some("Beispiel"));
}

#[test]
fn unknown_and_forbidden_members() {
    let v = web(json!({
        "x_custom": {"a": 1},
        "tenant_hint": "acme",
        "client_id": "chosen-by-client",
        "client_secret": "s3cr3t",
        "client_secret_expires_at": 0,
        "registration_access_token": "tok",
        "registration_client_uri": "https://evil.example/",
        "client_id_issued_at": 1,
        "scope#en": "x",
    }));
    let n = ok_with(&strict(), &v);
    assert_eq!(
        n.dropped_members,
        [
            "x_custom",
            "tenant_hint",
            "client_id",
            "client_secret",
            "client_secret_expires_at",
            "registration_access_token",
            "registration_client_uri",
            "client_id_issued_at",
            "scope#en"
        ]
    );
    assert!(!String::from_utf8(n.body.clone()).unwrap().contains("s3cr3t"));
    let keep = Policy { keep_extension_members: vec!["tenant_hint".into()], ..strict() };
    let n = ok_with(&keep, &v);
    assert_eq!(n.document["tenant_hint"], "acme");
    assert!(!n.document.contains_key("x_custom"));
    let n = ok_with(&permissive(), &v);
    assert_eq!(n.document["x_custom"], json!({"a": 1}));
    assert_eq!(n.document["scope#en"], "x");
    assert_eq!(
        n.dropped_members,
        [
            "client_id",
            "client_secret",
            "client_secret_expires_at",
            "registration_access_token",
            "registration_client_uri",
            "client_id_issued_at"
        ]
    );
    for k in ["client_id", "client_secret", "registration_access_token"] {
        assert!(!n.document.contains_key(k));
    }
}

#[test]
fn null_members_are_absent() {
    let n = ok_with(&strict(), &web(json!({"logo_uri": Value::Null})));
    assert!(n.document.get("logo_uri").is_none());
    let mut v = web(json!({}));
    v["logo_uri"] = Value::Null;
    v["scope"] = Value::Null;
    v["token_endpoint_auth_method"] = Value::Null;
    let n = ok_with(&strict(), &v);
    assert!(!n.document.contains_key("logo_uri"));
    assert!(!n.document.contains_key("scope"));
    assert_eq!(n.document["token_endpoint_auth_method"], "client_secret_post");
    let mut v = web(json!({}));
    v["redirect_uris"] = Value::Null;
    assert_eq!(
        err_with(&strict(), &v).description,
        "redirect_uris: required for the authorization_code and implicit grants"
    );
}

#[test]
fn scopes_and_allowed_scopes() {
    let base = Policy { allowed_scopes: Some(vec!["openid".into(), "profile".into(), "email".into()]), ..strict() };
    let e = err_with(&base, &web(json!({"scope": "openid admin"})));
    assert_eq!((e.code, e.description.as_str()), (ICM, "scope: scope \"admin\" is not allowed"));
    assert_eq!(ok_with(&base, &web(json!({"scope": "email openid"}))).document["scope"], "email openid");

    let p = Policy { security_mode: SecurityMode::Permissive, ..base.clone() };
    let n = ok_with(&p, &web(json!({"scope": "openid admin write:all openid"})));
    assert_eq!(n.document["scope"], "openid");
    assert_eq!(n.removed_scopes, ["admin", "write:all"]);
    // Everything removed and no default: no scope member at all.
    let n = ok_with(&p, &web(json!({"scope": "admin"})));
    assert!(!n.document.contains_key("scope"));
    assert_eq!(n.removed_scopes, ["admin"]);
    // ...with a default: the default, as if no scope had been sent.
    let pd = Policy { default_scope: Some("openid profile".into()), ..p };
    let n = ok_with(&pd, &web(json!({"scope": "admin"})));
    assert_eq!(n.document["scope"], "openid profile");
    assert_eq!(ok_with(&pd, &web(json!({}))).document["scope"], "openid profile");
}

#[test]
fn reserved_names() {
    let p = Policy { reserved_names: vec!["Acme".into(), "Example Bank".into()], ..strict() };
    for name in ["Acme", "acme support", "\u{410}cme Support", "ACME", "My Example  Bank app"] {
        let e = err_with(&p, &web(json!({"client_name": name})));
        assert_eq!((e.code, e.description.as_str()), (ICM, "client_name: contains a reserved name"), "{name}");
    }
    let e = err_with(&p, &web(json!({"client_name": "Nice", "client_name#de": "\u{410}CME"})));
    assert_eq!(e.description, "client_name#de: contains a reserved name");
    ok_with(&p, &web(json!({"client_name": "Example Store"})));
}

#[test]
fn host_allow_and_deny_lists() {
    let p = Policy {
        redirect_host_allow: vec!["*.example.com".into()],
        redirect_host_deny: vec!["evil.example.com".into()],
        ..strict()
    };
    let e = err_with(&p, &web(json!({"redirect_uris": ["https://example.org/cb"]})));
    assert_eq!(e.code, IRI);
    assert_eq!(e.description, "redirect_uris[0]: host \"example.org\" is not in the allowed redirect hosts");
    let e = err_with(&p, &web(json!({"redirect_uris": ["https://app.example.com/cb", "https://evil.example.com/cb"]})));
    assert_eq!(e.description, "redirect_uris[1]: host \"evil.example.com\" is denied by policy");
    ok_with(&p, &web(json!({"redirect_uris": ["https://app.example.com/cb", "http://127.0.0.1:8/cb"]})));
    let e = err_with(&p, &web(json!({"redirect_uris": ["https://example.com/cb"]})));
    assert!(e.description.contains("not in the allowed"), "{}", e.description);
}

#[test]
fn body_errors() {
    let cases: &[(&[u8], &str)] = &[
        (
            br#"{"redirect_uris":["https://a.example.com/cb"],"redirect_uris":["https://b.example.com/cb"]}"#,
            "body: duplicate member \"redirect_uris\"",
        ),
        (br#"{"jwks":{"keys":[{"kty":"EC","kty":"RSA"}]}}"#, "body: duplicate member \"kty\""),
        (b"{\"client_name\":\"\xc3\x28\"}", "body: not valid UTF-8"),
        (br#"{"a":1} {"b":2}"#, "body: trailing data"),
        (br#"{"a":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}"#, "body: JSON nesting deeper than 16 levels"),
        (b"", "body: empty"),
        (b"null", "body: the top-level JSON value must be an object"),
    ];
    for policy in [strict(), permissive()] {
        for (body, want) in cases {
            let e = check(body, &policy).unwrap_err();
            assert_eq!(e.code, ICM);
            assert!(e.description.starts_with(want), "{:?} vs {want:?}", e.description);
        }
    }
}

#[test]
fn errors_never_echo_secret_values() {
    const MARK: &str = "S3CRETVALUE";
    let bodies = vec![
        json!({"client_secret": MARK, "redirect_uris": [format!("javascript:{MARK}")]}),
        json!({"registration_access_token": MARK, "redirect_uris": [format!("{MARK}/cb")]}),
        json!({"redirect_uris": [format!("https://app.example.com/{MARK}#{MARK}")]}),
        json!({"redirect_uris": [format!("https://{MARK}:{MARK}@app.example.com/")]}),
        json!({"redirect_uris": [format!("http://app.example.com/{MARK}")]}),
        web(json!({"token_endpoint_auth_method": MARK})),
        web(json!({"grant_types": [MARK]})),
        web(json!({"response_types": [MARK]})),
        web(json!({"client_name": format!("<{MARK}>")})),
        web(json!({"software_statement": MARK})),
        web(json!({"jwks": {"keys": [{"kty": "oct", "k": MARK}]}})),
        web(json!({"contacts": [MARK]})),
        web(json!({"application_type": MARK})),
        web(json!({"logo_uri": format!("http://app.example.com/{MARK}")})),
        web(json!({"client_name": 1, "x_token": MARK})),
    ];
    for v in bodies {
        let e = err_with(&strict(), &v);
        assert!(!e.description.contains(MARK) && !e.description.to_lowercase().contains(&MARK.to_lowercase()), "{e}");
        assert!(!e.to_json().to_string().contains(MARK));
    }
}

#[test]
fn error_code_strings() {
    assert_eq!(ErrorCode::InvalidRedirectUri.as_str(), "invalid_redirect_uri");
    assert_eq!(ErrorCode::InvalidClientMetadata.as_str(), "invalid_client_metadata");
    assert_eq!(ErrorCode::InvalidSoftwareStatement.as_str(), "invalid_software_statement");
    assert_eq!(ErrorCode::UnapprovedSoftwareStatement.as_str(), "unapproved_software_statement");
    let e = RegistrationError { code: ICM, description: "scope: x".into() };
    assert_eq!(e.to_string(), "invalid_client_metadata: scope: x");
    assert_eq!(e.to_json(), json!({"error": "invalid_client_metadata", "error_description": "scope: x"}));
}

#[test]
fn idempotent_on_numbers_and_escapes() {
    let body = br#"{"redirect_uris":["https://app.example.com/cb"],"x":[-0,1.0,1e20,18446744073709551615,-9223372036854775808,-4.031076275724837e-286,2.2250738585072011e-308,"\u00e9\u2028\"\\/"]}"#;
    let n = check(body, &permissive()).unwrap();
    assert_eq!(check(&n.body, &permissive()).unwrap().body, n.body);
}

// ---------------------------------------------------------------------------------------
// Property tests

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        arb_text().prop_map(Value::String),
    ]
}

/// Strings likely to hit interesting paths: URIs, names, scopes, raw unicode.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_]{0,12}",
        prop::sample::select(vec![
            "https://app.example.com/cb",
            "http://127.0.0.1:8080/cb",
            "com.example.app:/cb",
            "javascript:alert(1)",
            "https://bücher.example/x",
            "https://p\u{430}ypal.com/",
            "authorization_code",
            "refresh_token",
            "implicit",
            "client_credentials",
            "code",
            "code id_token",
            "none",
            "native",
            "web",
            "private_key_jwt",
            "client_secret_basic",
            "openid profile",
            "ops@example.com",
            "a.b.c",
        ])
        .prop_map(str::to_string),
        ("https://[a-zA-Z0-9.*@%:-]{0,20}/[ -~]{0,10}").prop_map(|s| s),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "redirect_uris",
            "grant_types",
            "response_types",
            "client_name",
            "client_name#en",
            "logo_uri",
            "client_uri",
            "tos_uri#de",
            "policy_uri",
            "scope",
            "contacts",
            "jwks",
            "jwks_uri",
            "token_endpoint_auth_method",
            "application_type",
            "software_statement",
            "software_id",
            "client_id",
            "client_secret",
            "default_max_age",
            "post_logout_redirect_uris",
            "request_uris",
            "x_ext",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    arb_scalar().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((arb_key(), arb_value()), 0..10).prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

/// Registrations built from valid parts with random variations: mostly accepted.
fn arb_registration() -> impl Strategy<Value = Value> {
    let uris = prop::collection::vec(
        prop::sample::select(vec![
            "https://app.example.com/cb",
            "https://app.example.com/cb2?x=1",
            "http://127.0.0.1:3000/cb",
            "http://localhost/cb",
            "http://[::1]:9/cb",
            "https://bücher.example/cb",
            "https://sub.example.com/a%20b",
        ]),
        1..5,
    );
    (
        uris,
        prop::option::of(any::<String>()),
        prop::option::of("[ a-z]{0,10}( [a-z:/.]{1,8}){0,3}"),
        prop::option::of(prop::sample::select(vec!["none", "client_secret_post", "client_secret_basic"])),
        prop::option::of(prop::sample::subsequence(
            vec!["authorization_code", "refresh_token", "authorization_code"],
            1..=3,
        )),
        prop::option::of(prop::collection::vec(" ?[a-z]{1,5}@example\\.(com|org) ?", 0..3)),
        prop::option::of((arb_key(), arb_value())),
    )
        .prop_map(|(uris, name, scope, method, grants, contacts, extra)| {
            let mut seen = Vec::new();
            let uris: Vec<&str> = uris
                .into_iter()
                .filter(|u| {
                    if seen.contains(u) {
                        false
                    } else {
                        seen.push(*u);
                        true
                    }
                })
                .collect();
            let mut m = serde_json::Map::new();
            m.insert("redirect_uris".into(), json!(uris));
            if let Some(n) = name {
                m.insert("client_name".into(), json!(n));
            }
            if let Some(s) = scope {
                m.insert("scope".into(), json!(s));
            }
            if let Some(x) = method {
                m.insert("token_endpoint_auth_method".into(), json!(x));
            }
            if let Some(g) = grants {
                m.insert("grant_types".into(), json!(g));
            }
            if let Some(c) = contacts {
                m.insert("contacts".into(), json!(c));
            }
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
}

fn policies() -> [Policy; 3] {
    [
        strict(),
        permissive(),
        Policy {
            allowed_scopes: Some(vec!["openid".into(), "profile".into()]),
            default_scope: Some("openid".into()),
            reserved_names: vec!["Acme".into()],
            keep_extension_members: vec!["x_ext".into()],
            security_mode: SecurityMode::Permissive,
            ..strict()
        },
    ]
}

/// The output is accepted again, with the same body, and the same reports where they are a
/// function of the normalized document.
fn assert_fixed_point(policy: &Policy, n: &Normalized) {
    assert_eq!(n.body, serde_json::to_vec(&n.document).unwrap());
    let again = check(&n.body, policy)
        .unwrap_or_else(|e| panic!("normalized output rejected: {e}\n{}", String::from_utf8_lossy(&n.body)));
    assert_eq!(String::from_utf8_lossy(&again.body), String::from_utf8_lossy(&n.body));
    assert_eq!(again.document, n.document);
    assert_eq!(again.client_name, n.client_name);
    assert_eq!(again.redirect_hosts, n.redirect_hosts);
    assert!(again.removed_scopes.is_empty());
    assert!(again.dropped_members.is_empty());
}

proptest! {
    // 512 cases by default; PROPTEST_CASES raises it for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        for p in policies() {
            let _ = check(&body, &p);
        }
    }

    #[test]
    fn never_panics_on_jsonish_text(body in "[{}\\[\\]\",:0-9a-z \\\\u#/.-]{0,200}") {
        for p in policies() {
            let _ = check(body.as_bytes(), &p);
        }
    }

    #[test]
    fn arbitrary_objects_are_handled(v in arb_object()) {
        for p in policies() {
            if let Ok(n) = check(&bytes(&v), &p) {
                assert_fixed_point(&p, &n);
            }
        }
    }

    #[test]
    fn registrations_normalize_idempotently(v in arb_registration()) {
        let mut accepted = 0;
        for p in policies() {
            match check(&bytes(&v), &p) {
                Ok(n) => {
                    accepted += 1;
                    assert_fixed_point(&p, &n);
                    // Redirect URIs are forwarded byte for byte.
                    prop_assert_eq!(&n.document["redirect_uris"], &v["redirect_uris"]);
                }
                Err(e) => {
                    prop_assert!(e.description.contains(": "), "{}", e.description);
                }
            }
        }
        let _ = accepted;
    }
}

#[test]
fn generated_registrations_are_mostly_accepted() {
    // Guards the property test above against only ever exercising the error path.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = arb_registration();
    let mut ok = 0;
    for _ in 0..200 {
        let v = strategy.new_tree(&mut runner).unwrap().current();
        if check(&bytes(&v), &permissive()).is_ok() {
            ok += 1;
        }
    }
    assert!(ok > 50, "only {ok} of 200 generated registrations accepted");
}

#[test]
fn updates_are_checked_whole_without_registration_defaults() {
    let policy = strict();
    let body = bytes(
        &json!({"client_id": "abc", "redirect_uris": ["https://app.example.com/cb"], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]}),
    );
    let n = check_update_with(&body, &policy, &StatementVerifier::empty()).unwrap();
    assert_eq!(n.document["token_endpoint_auth_method"], "none");
    assert!(!n.document.contains_key("response_types"), "no default filled into an update: {:?}", n.document);
    let body = bytes(&json!({"redirect_uris": ["https://app.example.com/cb"]}));
    let n = check_update_with(&body, &policy, &StatementVerifier::empty()).unwrap();
    for absent in ["token_endpoint_auth_method", "grant_types", "response_types", "scope"] {
        assert!(!n.document.contains_key(absent), "{absent} filled in: {:?}", n.document);
    }
    // The same rules still apply.
    let body = bytes(&json!({"redirect_uris": ["javascript:alert(1)"]}));
    assert_eq!(check_update_with(&body, &policy, &StatementVerifier::empty()).unwrap_err().code, IRI);
    // A registration gets them.
    let n = check(&bytes(&json!({"redirect_uris": ["https://app.example.com/cb"]})), &policy).unwrap();
    assert!(n.document.contains_key("token_endpoint_auth_method"));
}

#[test]
fn strict_names_refuse_attribute_breakouts() {
    for name in ["Acme\" autofocus onfocus=\"alert(1)", "Acme`x`", "O'Reilly"] {
        let e = err_with(&strict(), &web(json!({"client_name": name})));
        assert_eq!(e.code, ICM, "{name}");
        let e = err_with(&strict(), &web(json!({"client_name#en": name})));
        assert_eq!(e.code, ICM, "tagged {name}");
    }
    let p = Policy { allow_apostrophe: true, ..strict() };
    ok_with(&p, &web(json!({"client_name": "O'Reilly"})));
    ok_with(&permissive(), &web(json!({"client_name": "Acme \"Pro\""})));
    // The identifiers some pages show beside the name.
    for member in ["software_id", "software_version"] {
        for value in ["1.0\" onmouseover=\"x", "<b>1</b>", "1`x`", "it's"] {
            let e = err_with(&strict(), &web(json!({member: value})));
            assert_eq!(e.code, ICM, "{member} {value}");
        }
        ok_with(&strict(), &web(json!({member: "4NRB1-0XZABZI9E6-5SM3R"})));
        ok_with(&permissive(), &web(json!({member: "it's"})));
    }
}

#[test]
fn off_site_uris_are_dropped_in_strict_mode() {
    // Strict: a client_uri / logo_uri / policy_uri / tos_uri (and #lang variants) not on the
    // site of an https redirect URI is removed and listed, the registration goes through.
    let cases: Vec<(Value, &[&str])> = vec![
        (web(json!({"logo_uri": "https://cdn.evil.example/logo.png"})), &["logo_uri"]),
        (web(json!({"tos_uri#fr": "https://evil.example/cgu", "tos_uri": "https://example.com/tos"})), &["tos_uri#fr"]),
        (
            json!({"redirect_uris": ["https://alice.github.io/cb"], "client_uri": "https://bob.github.io/"}),
            &["client_uri"],
        ),
        (json!({"redirect_uris": ["https://10.0.0.1/cb"], "policy_uri": "https://10.0.0.2/p"}), &["policy_uri"]),
        (
            json!({"client_name": "Visual Studio Code", "client_uri": "https://code.visualstudio.com", "redirect_uris": ["https://vscode.dev/redirect", "http://127.0.0.1:33418/"], "token_endpoint_auth_method": "none"}),
            &["client_uri"],
        ),
    ];
    for (body, dropped) in &cases {
        let n = ok_with(&strict(), body);
        assert_eq!(n.dropped_members, *dropped, "{body}");
        for d in *dropped {
            assert!(!n.document.contains_key(*d), "{d} kept in {body}");
        }
        // Permissive mode keeps them.
        let p = ok_with(&permissive(), body);
        assert!(p.dropped_members.is_empty(), "{body}");
        for (k, v) in body.as_object().unwrap() {
            assert_eq!(p.document.get(k), Some(v), "{k} in {body}");
        }
    }
    // On-site URIs are kept.
    let n = ok_with(&strict(), &web(json!({"tos_uri": "https://example.com/tos"})));
    assert!(n.document.contains_key("tos_uri"));
}

#[test]
fn empty_scope_is_removed_and_the_default_applies() {
    let n = ok_with(&strict(), &web(json!({"scope": ""})));
    assert!(!n.document.contains_key("scope"));
    let p = Policy { default_scope: Some("openid".into()), ..strict() };
    let n = ok_with(&p, &web(json!({"scope": " "})));
    assert_eq!(n.document["scope"], "openid");
}

#[test]
fn private_use_schemes_follow_the_scheme_lists() {
    let cursor = json!({"redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback", "http://localhost:8787/callback"], "token_endpoint_auth_method": "none"});
    let cline = json!({"redirect_uris": ["vscode://saoudrizwan.claude-dev/mcp-auth/callback/abc"], "token_endpoint_auth_method": "none"});
    for mode in [SecurityMode::Strict, SecurityMode::Permissive] {
        let base = Policy { security_mode: mode, ..strict() };
        ok_with(&base, &cursor);
        ok_with(&base, &cline);

        let allow = Policy { redirect_scheme_allow: vec!["Cursor".into()], ..base.clone() };
        allow.validate().unwrap();
        ok_with(&allow, &cursor);
        let e = err_with(&allow, &cline);
        assert_eq!(
            (e.code, e.description.as_str()),
            (IRI, "redirect_uris[0]: scheme \"vscode\" is not in the allowed redirect schemes")
        );
        // http(s) URIs are not subject to the scheme allow-list.
        ok_with(&allow, &web(json!({})));

        let deny = Policy { redirect_scheme_deny: vec!["vscode".into()], ..base.clone() };
        deny.validate().unwrap();
        ok_with(&deny, &cursor);
        let e = err_with(&deny, &cline);
        assert_eq!((e.code, e.description.as_str()), (IRI, "redirect_uris[0]: scheme \"vscode\" is denied by policy"));

        // A confidential client keeps RFC 8252's shape, whatever the lists say.
        let mut confidential = cursor.clone();
        confidential["token_endpoint_auth_method"] = json!("client_secret_basic");
        let e = err_with(&base, &confidential);
        assert!(
            e.description.starts_with("redirect_uris[0]: private-use scheme \"cursor\" needs a public client"),
            "{e}"
        );
        confidential["application_type"] = json!("native");
        let e = err_with(&base, &confidential);
        assert!(e.description.contains("must be a reverse domain name"), "{e}");
        // The policy default decides when the client does not say: `none` makes it public.
        let mut defaulted = cursor.clone();
        defaulted.as_object_mut().unwrap().remove("token_endpoint_auth_method");
        err_with(&base, &defaulted);
        let public_default = Policy { default_token_endpoint_auth_method: "none".into(), ..base.clone() };
        ok_with(&public_default, &defaulted);
    }
}

/// Pieces of redirect URIs that hostile registrations use: schemes in any case, userinfo,
/// hosts that are or only look like loopback, encoded characters, whitespace.
fn arb_redirect_uri() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "https",
        "HTTPS",
        "http",
        "HtTp",
        "javascript",
        "JavaScript",
        "data",
        "file",
        "vbscript",
        "cursor",
        "com.example.app",
        "vscode",
        "ws",
        "blob",
    ]);
    let userinfo = prop::sample::select(vec!["", "user@", "user:pw@", "@", "a%40b@"]);
    let host = prop::sample::select(vec![
        "app.example.com",
        "127.0.0.1",
        "localhost",
        "[::1]",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "evil.example",
        "10.0.0.1",
        "0x7f.0.0.1",
        "2130706433",
        "",
    ]);
    let port = prop::sample::select(vec!["", ":8080", ":0", ":65536"]);
    let path = prop::sample::select(vec!["/cb", "", "/cb?x=1", "/cb#f", "/%2e%2e/cb", "alert(1)", "/a b"]);
    let slashes = prop::sample::select(vec!["//", "/", "", "///"]);
    (scheme, slashes, userinfo, host, port, path).prop_map(|(s, sl, u, h, p, pa)| format!("{s}:{sl}{u}{h}{p}{pa}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Security outcomes, whatever the input: an accepted registration carries no
    /// script/data/file scheme, no userinfo, and plain http only to a loopback host.
    #[test]
    fn accepted_registrations_have_only_safe_redirect_uris(
        uris in prop::collection::vec(arb_redirect_uri(), 1..4),
        public in any::<bool>(),
        native in any::<bool>(),
        lenient in any::<bool>(),
    ) {
        let mut doc = json!({"client_name": "P", "redirect_uris": uris});
        if public {
            doc["token_endpoint_auth_method"] = json!("none");
        }
        if native {
            doc["application_type"] = json!("native");
        }
        let policy = if lenient { permissive() } else { strict() };
        if let Ok(n) = check(&bytes(&doc), &policy) {
            for u in n.document["redirect_uris"].as_array().unwrap() {
                let u = u.as_str().unwrap();
                let lower = u.to_ascii_lowercase();
                for bad in ["javascript:", "data:", "file:", "vbscript:", "blob:"] {
                    prop_assert!(!lower.starts_with(bad), "{u} accepted");
                }
                if let Ok(parsed) = url::Url::parse(u) {
                    prop_assert!(parsed.username().is_empty() && parsed.password().is_none(), "userinfo in {u}");
                    if parsed.scheme() == "http" {
                        let host = parsed.host_str().unwrap_or("");
                        prop_assert!(matches!(host, "127.0.0.1" | "[::1]" | "localhost"), "http to {host} in {u}");
                    }
                }
            }
        }
    }
}

/// Auth0's default token endpoint auth methods (`none`, `client_secret_post`): the others are
/// refused until `[dcr] token_endpoint_auth_methods` names them.
#[test]
fn the_default_auth_methods_are_auth0s() {
    let p = Policy::default();
    for m in ["none", "client_secret_post"] {
        ok_with(&p, &web(json!({ "token_endpoint_auth_method": m })));
    }
    for m in ["client_secret_basic", "client_secret_jwt", "private_key_jwt", "tls_client_auth"] {
        let e = err_with(&p, &web(json!({ "token_endpoint_auth_method": m })));
        assert_eq!(e.code, ICM, "{m}");
    }
    ok_with(&strict(), &web(json!({ "token_endpoint_auth_method": "client_secret_basic" })));
}
