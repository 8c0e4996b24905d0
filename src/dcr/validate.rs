//! Member-by-member validation and normalization of a registration (RFC 7591 §2, OIDC DCR 1.0
//! §2, RFC 8252, RFC 9700), then the rules that tie members together.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::error::{display_name, is_invisible, ErrorCode, RegistrationError};
use super::normalize::{fold_confusable, human_text_cow, is_email, is_language_tag, parse_scope_tokens};
use super::policy::Policy;
use super::screen;
use super::uri::{check_https, check_redirect, same_site, RedirectCtx, UriInfo, UriKind};
use super::vocab::{AuthMethod, GrantType, Kind, Normalized, ResponseType, SecurityMode};

type Result<T> = std::result::Result<T, RegistrationError>;

/// Grant types recognized only to be refused by name (the password grant: RFC 9700 §2.4).
const REFUSED_GRANTS: [&str; 5] = [
    "password",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "urn:ietf:params:oauth:grant-type:saml2-bearer",
    "urn:ietf:params:oauth:grant-type:token-exchange",
    "urn:openid:params:grant-type:ciba",
];

/// The registered members this module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    RedirectUris,
    TokenEndpointAuthMethod,
    GrantTypes,
    ResponseTypes,
    ClientName,
    /// `client_uri`, `logo_uri`, `policy_uri`, `tos_uri`: https, same site (strict), #lang.
    SiteUri,
    /// `jwks_uri`, `sector_identifier_uri`, `initiate_login_uri`: https.
    HttpsUri,
    Scope,
    Contacts,
    Jwks,
    /// `software_id`, `software_version`.
    Identifier,
    SoftwareStatement,
    ApplicationType,
    SubjectType,
    /// A JWS/JWE algorithm name; `true` when `none` is forbidden.
    Alg(bool),
    /// A JWE `enc` name, requiring the named `alg` member.
    Enc(&'static str),
    DefaultMaxAge,
    RequireAuthTime,
    DefaultAcrValues,
    RequestUris,
    PostLogoutRedirectUris,
}

const MEMBERS: [(&str, Member); 32] = [
    ("redirect_uris", Member::RedirectUris),
    ("token_endpoint_auth_method", Member::TokenEndpointAuthMethod),
    ("grant_types", Member::GrantTypes),
    ("response_types", Member::ResponseTypes),
    ("client_name", Member::ClientName),
    ("client_uri", Member::SiteUri),
    ("logo_uri", Member::SiteUri),
    ("policy_uri", Member::SiteUri),
    ("tos_uri", Member::SiteUri),
    ("jwks_uri", Member::HttpsUri),
    ("sector_identifier_uri", Member::HttpsUri),
    ("initiate_login_uri", Member::HttpsUri),
    ("scope", Member::Scope),
    ("contacts", Member::Contacts),
    ("jwks", Member::Jwks),
    ("software_id", Member::Identifier),
    ("software_version", Member::Identifier),
    ("software_statement", Member::SoftwareStatement),
    ("application_type", Member::ApplicationType),
    ("subject_type", Member::SubjectType),
    ("id_token_signed_response_alg", Member::Alg(false)),
    ("id_token_encrypted_response_alg", Member::Alg(false)),
    ("id_token_encrypted_response_enc", Member::Enc("id_token_encrypted_response_alg")),
    ("userinfo_signed_response_alg", Member::Alg(false)),
    ("userinfo_encrypted_response_alg", Member::Alg(false)),
    ("userinfo_encrypted_response_enc", Member::Enc("userinfo_encrypted_response_alg")),
    ("request_object_signing_alg", Member::Alg(false)),
    ("request_object_encryption_alg", Member::Alg(false)),
    ("request_object_encryption_enc", Member::Enc("request_object_encryption_alg")),
    ("token_endpoint_auth_signing_alg", Member::Alg(true)),
    ("default_max_age", Member::DefaultMaxAge),
    ("require_auth_time", Member::RequireAuthTime),
];

/// Also known; kept out of `MEMBERS` only to keep its length readable.
const MORE_MEMBERS: [(&str, Member); 3] = [
    ("default_acr_values", Member::DefaultAcrValues),
    ("request_uris", Member::RequestUris),
    ("post_logout_redirect_uris", Member::PostLogoutRedirectUris),
];

/// Members only the authorization server sets (RFC 7591 §3.2.1, RFC 7592). A client's values
/// are dropped (and listed in `dropped_members`) in both modes.
const CLIENT_FORBIDDEN: [&str; 6] = [
    "client_id",
    "client_secret",
    "client_id_issued_at",
    "client_secret_expires_at",
    "registration_access_token",
    "registration_client_uri",
];

/// The member and its name (as a `'static` string).
fn lookup(name: &str) -> Option<(&'static str, Member)> {
    MEMBERS.iter().chain(MORE_MEMBERS.iter()).find(|(n, _)| *n == name).copied()
}

pub(crate) fn is_known_member(name: &str) -> bool {
    matches!(classify(name), Class::Known(..) | Class::BadLanguageTag)
}

pub(crate) fn is_client_forbidden(name: &str) -> bool {
    CLIENT_FORBIDDEN.contains(&name)
}

enum Class<'a> {
    /// A known member, with the base name and the language tag of a `#lang` variant.
    Known(Member, &'static str, Option<&'a str>),
    Forbidden,
    BadLanguageTag,
    Unknown,
}

fn classify(name: &str) -> Class<'_> {
    if let Some((base, m)) = lookup(name) {
        return Class::Known(m, base, None);
    }
    if is_client_forbidden(name) {
        return Class::Forbidden;
    }
    // RFC 7591 §2.2: human-readable values may carry a language tag.
    if let Some((base, tag)) = name.split_once('#') {
        if let Some((base, m @ (Member::ClientName | Member::SiteUri))) = lookup(base) {
            return if is_language_tag(tag) { Class::Known(m, base, Some(tag)) } else { Class::BadLanguageTag };
        }
    }
    Class::Unknown
}

/// What the first pass learned, for the rules between members.
#[derive(Default)]
struct Facts {
    /// Present (and then, in the output, forwarded exactly as sent): `redirect_uris` and
    /// `post_logout_redirect_uris`, checked once the other members are known.
    redirect_uris: bool,
    post_logout_redirect_uris: bool,
    grant_types: Option<Vec<GrantType>>,
    response_types: Option<Vec<ResponseType>>,
    auth_method: Option<AuthMethod>,
    native: bool,
    has_jwks: bool,
    has_jwks_uri: bool,
    has_scope: bool,
    /// `(member name, info)` of client_uri / logo_uri / policy_uri / tos_uri and variants.
    site_uris: Vec<(Cow<'static, str>, UriInfo)>,
    client_name: Option<String>,
    first_localized_name: Option<String>,
    /// Lower-cased language tags seen, per base member.
    language_tags: Vec<(&'static str, String)>,
    /// Names of present `*_alg` members and `(enc member, required alg member)` pairs.
    algs: Vec<Cow<'static, str>>,
    encs: Vec<(Cow<'static, str>, &'static str)>,
    removed_scopes: Vec<String>,
}

/// Validates and normalizes a registration read by [`super::json::read_object`] (with a
/// verified software statement's claims already merged in, see `pipeline.rs`).
/// The output document is `input` itself, normalized in place: members keep their order,
/// removed members are taken out, defaults are appended. `body_len` (the size of the request
/// body) sizes the output buffer.
pub(crate) fn check_object(
    input: Map<String, Value>,
    policy: &Policy,
    body_len: usize,
    kind: Kind,
) -> Result<Normalized> {
    let mode = policy.security_mode;
    let mut facts = Facts::default();
    let mut out = input;
    let mut dropped_members = Vec::new();
    // Positions of the members to remove, in increasing order.
    let mut removed: Vec<usize> = Vec::new();

    for (i, (name, slot)) in out.iter_mut().enumerate() {
        let keep = match classify(name) {
            Class::Forbidden => {
                dropped_members.push(name.clone());
                false
            }
            Class::Unknown => {
                if mode == SecurityMode::Strict && !policy.keep_extension_members.contains(name) {
                    dropped_members.push(name.clone());
                    false
                } else {
                    true
                }
            }
            Class::BadLanguageTag => {
                return Err(RegistrationError::metadata(&display_name(name), "invalid language tag"));
            }
            // A known member set to null is treated as absent (and removed).
            Class::Known(..) if slot.is_null() => false,
            Class::Known(member, base, tag) => {
                if let Some(tag) = tag {
                    let lower = tag.to_ascii_lowercase();
                    if facts.language_tags.iter().any(|(b, t)| *b == base && *t == lower) {
                        return Err(RegistrationError::metadata(name, "duplicate language tag"));
                    }
                    facts.language_tags.push((base, lower));
                }
                // Without a tag, `base` is the name itself.
                let static_name = if tag.is_none() { Cow::Borrowed(base) } else { Cow::Owned(name.clone()) };
                match member_value(member, static_name, tag, std::mem::take(slot), policy, &mut facts)? {
                    Some(v) => {
                        *slot = v;
                        true
                    }
                    None => false,
                }
            }
        };
        if !keep {
            removed.push(i);
        }
    }
    if !removed.is_empty() {
        let mut i = 0;
        let mut next = removed.iter().peekable();
        // `retain` visits the members in order.
        out.retain(|_, _| {
            let drop = next.next_if_eq(&&i).is_some();
            i += 1;
            !drop
        });
    }

    cross_check(policy, &mut facts, &mut out, kind)?;
    let (redirect_hosts, off_site) = check_redirect_uris(policy, &facts, &out)?;
    {
        let redirects: Vec<&str> = out
            .get("redirect_uris")
            .and_then(Value::as_array)
            .map_or(Vec::new(), |a| a.iter().filter_map(Value::as_str).collect());
        screen::screen_fetched(&out, policy)?;
        let loopback = |u: &str| {
            url::Url::parse(u)
                .ok()
                .and_then(|x| x.host_str().map(|h| policy.loopback_hosts.iter().any(|l| l.eq_ignore_ascii_case(h))))
                == Some(true)
        };
        screen::check_application_type(&out, policy, &redirects, loopback)?;
        let name = facts.client_name.as_deref().or(facts.first_localized_name.as_deref());
        screen::check_impersonation(policy, name, &redirects)?;
    }
    for name in off_site {
        out.shift_remove(&name);
        dropped_members.push(name);
    }

    let mut body = Vec::with_capacity(body_len + 128);
    serde_json::to_writer(&mut body, &out)
        .map_err(|_| RegistrationError::new(ErrorCode::InvalidClientMetadata, "body: cannot be serialized".into()))?;
    Ok(Normalized {
        document: out,
        body,
        client_name: facts.client_name.or(facts.first_localized_name),
        redirect_hosts,
        dropped_members,
        removed_scopes: facts.removed_scopes,
        software_statement_issuer: None,
    })
}

fn redirect_err(member: &str, reason: impl std::fmt::Display) -> RegistrationError {
    RegistrationError::new(ErrorCode::InvalidRedirectUri, format!("{member}: {reason}"))
}

fn meta(member: &str, reason: impl std::fmt::Display) -> RegistrationError {
    RegistrationError::metadata(member, reason)
}

fn as_str<'v>(name: &str, v: &'v Value) -> Result<&'v str> {
    v.as_str().ok_or_else(|| meta(name, "must be a string"))
}

/// `name[i]`, the name of an array element in an error (built only on the error path).
fn elem(name: &str, i: usize) -> String {
    format!("{name}[{i}]")
}

/// An array of strings, element errors naming `name[i]`: the strings, borrowed.
fn string_array<'v>(name: &str, v: &'v Value, code: ErrorCode) -> Result<Vec<&'v str>> {
    let err = |member: &str, reason: &str| RegistrationError::new(code, format!("{member}: {reason}"));
    let arr = v.as_array().ok_or_else(|| err(name, "must be an array of strings"))?;
    arr.iter().enumerate().map(|(i, e)| e.as_str().ok_or_else(|| err(&elem(name, i), "must be a string"))).collect()
}

fn dedupe<'s>(items: &[&'s str]) -> Vec<&'s str> {
    let mut out: Vec<&str> = Vec::with_capacity(items.len());
    for s in items {
        if !out.contains(s) {
            out.push(s);
        }
    }
    out
}

fn strings_value<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::Array(items.into_iter().map(|s| Value::String(s.into())).collect())
}

/// A new array of `items`, or `None` when `value` already is that array (to be kept).
fn changed_strings(value: &Value, items: &[&str]) -> Option<Value> {
    let same = value
        .as_array()
        .is_some_and(|a| a.len() == items.len() && a.iter().zip(items).all(|(v, s)| v.as_str() == Some(s)));
    (!same).then(|| strings_value(items.iter().copied()))
}

/// Validates one known, non-null member; returns its normalized value, or `None` when the
/// member is to be left out of the output. Unchanged values are forwarded as they are.
fn member_value(
    member: Member,
    name_cow: Cow<'static, str>,
    tag: Option<&str>,
    value: Value,
    policy: &Policy,
    facts: &mut Facts,
) -> Result<Option<Value>> {
    let mode = policy.security_mode;
    let name: &str = &name_cow;
    let v = match member {
        Member::RedirectUris | Member::PostLogoutRedirectUris => {
            let code = if member == Member::RedirectUris {
                ErrorCode::InvalidRedirectUri
            } else {
                ErrorCode::InvalidClientMetadata
            };
            let uris = string_array(name, &value, code)?;
            if uris.len() > policy.max_redirect_uris {
                return Err(RegistrationError::new(
                    code,
                    format!("{name}: more than {} URIs", policy.max_redirect_uris),
                ));
            }
            for (j, u) in uris.iter().enumerate() {
                if let Some(i) = uris[..j].iter().position(|p| p == u) {
                    return Err(RegistrationError::new(code, format!("{name}[{j}]: duplicate of {name}[{i}]")));
                }
            }
            if member == Member::RedirectUris {
                facts.redirect_uris = true;
            } else {
                facts.post_logout_redirect_uris = true;
            }
            // Forwarded exactly as sent; checked (in the output) once the other members are known.
            value
        }
        Member::TokenEndpointAuthMethod => {
            let s = as_str(name, &value)?;
            facts.auth_method = Some(auth_method(name, s, policy)?);
            value
        }
        Member::GrantTypes => {
            let raw = string_array(name, &value, ErrorCode::InvalidClientMetadata)?;
            if raw.is_empty() {
                return Err(meta(name, "must not be empty"));
            }
            let mut grants = Vec::with_capacity(raw.len());
            for (i, g) in raw.iter().enumerate() {
                let gt = grant_type(g, mode).map_err(|e| meta(&elem(name, i), e))?;
                if !grants.contains(&gt) {
                    grants.push(gt);
                }
            }
            // A grant type is only recognized as spelled by `as_str`: without duplicates, the
            // normalized array is the one sent.
            let v = if grants.len() == raw.len() { value } else { strings_value(grants.iter().map(|g| g.as_str())) };
            facts.grant_types = Some(grants);
            v
        }
        Member::ResponseTypes => {
            let raw = string_array(name, &value, ErrorCode::InvalidClientMetadata)?;
            let mut types = Vec::with_capacity(raw.len());
            for (i, r) in raw.iter().enumerate() {
                let rt = response_type(r, mode).map_err(|e| meta(&elem(name, i), e))?;
                if !types.contains(&rt) {
                    types.push(rt);
                }
            }
            let canonical: Vec<&str> = types.iter().map(|r| r.canonical_str()).collect();
            let v = changed_strings(&value, &canonical).unwrap_or(value);
            facts.response_types = Some(types);
            v
        }
        Member::ClientName => {
            let s = as_str(name, &value)?;
            let text = human_text_cow(s, policy.max_client_name_chars, mode, policy.allow_apostrophe)
                .map_err(|e| meta(name, e))?;
            if !policy.reserved_names.is_empty() {
                let folded = fold_confusable(&text);
                if policy.reserved_names.iter().any(|r| folded.contains(&fold_confusable(r.trim()))) {
                    return Err(meta(name, "contains a reserved name"));
                }
            }
            let unchanged = matches!(text, Cow::Borrowed(t) if t.len() == s.len());
            let text = text.into_owned();
            let v = if unchanged { value } else { Value::String(text.clone()) };
            if tag.is_none() {
                facts.client_name = Some(text);
            } else if facts.first_localized_name.is_none() {
                facts.first_localized_name = Some(text);
            }
            v
        }
        Member::SiteUri => {
            let info = check_https(as_str(name, &value)?, policy).map_err(|e| meta(name, e))?;
            facts.site_uris.push((name_cow, info));
            value
        }
        Member::HttpsUri => {
            check_https(as_str(name, &value)?, policy).map_err(|e| meta(name, e))?;
            facts.has_jwks_uri |= name == "jwks_uri";
            value
        }
        Member::Scope => {
            let s = as_str(name, &value)?;
            // An empty (or blank) scope is an empty list of scopes: as if none had been sent
            // (removed; `default_scope` applies). The MCP Inspector sends `"scope": ""`.
            if s.bytes().all(|b| b.is_ascii_whitespace()) {
                return Ok(None);
            }
            let tokens = parse_scope_tokens(s).map_err(|e| meta(name, e))?;
            let kept = filter_scopes(name, tokens, policy, &mut facts.removed_scopes)?;
            if kept.is_empty() {
                // Every token was removed (permissive): as if no scope had been sent.
                return Ok(None);
            }
            facts.has_scope = true;
            if is_joined(s, &kept) {
                value
            } else {
                Value::String(kept.join(" "))
            }
        }
        Member::Contacts => {
            let raw = string_array(name, &value, ErrorCode::InvalidClientMetadata)?;
            let mut out = Vec::with_capacity(raw.len());
            for (i, c) in raw.iter().enumerate() {
                let c = c.trim();
                if !is_email(c) {
                    return Err(meta(&elem(name, i), "not an email address"));
                }
                out.push(c);
            }
            let v = changed_strings(&value, &dedupe(&out));
            v.unwrap_or(value)
        }
        Member::Jwks => {
            check_jwks(name, &value)?;
            facts.has_jwks = true;
            value
        }
        Member::Identifier => {
            let s = as_str(name, &value)?;
            if s.is_empty() || (s.len() > 255 && s.chars().count() > 255) {
                return Err(meta(name, "must be 1 to 255 characters"));
            }
            if s.chars().any(|c| c.is_control() || is_invisible(c)) {
                return Err(meta(name, "must not contain control or invisible formatting characters"));
            }
            // Some consent and admin pages show these beside the name: strict mode refuses what
            // breaks out of HTML text and attribute contexts here too (an identifier has no
            // use for them, so no apostrophe option).
            if mode == SecurityMode::Strict && s.contains(['<', '>', '"', '`', '\'']) {
                return Err(meta(name, "must not contain <, >, \", ` or ' in strict mode"));
            }
            value
        }
        Member::SoftwareStatement => {
            let s = value.as_str().ok_or_else(|| {
                RegistrationError::new(ErrorCode::InvalidSoftwareStatement, format!("{name}: must be a string"))
            })?;
            if !is_compact_jws(s) {
                return Err(RegistrationError::new(
                    ErrorCode::InvalidSoftwareStatement,
                    format!("{name}: not a compact JWS (three non-empty base64url parts)"),
                ));
            }
            value
        }
        Member::ApplicationType => {
            match as_str(name, &value)? {
                "web" => {}
                "native" => facts.native = true,
                _ => return Err(meta(name, "must be \"web\" or \"native\"")),
            }
            value
        }
        Member::SubjectType => {
            if !matches!(as_str(name, &value)?, "public" | "pairwise") {
                return Err(meta(name, "must be \"public\" or \"pairwise\""));
            }
            value
        }
        Member::Alg(none_forbidden) => {
            let s = as_str(name, &value)?;
            if !is_algorithm_name(s) {
                return Err(meta(name, "not an algorithm name"));
            }
            if none_forbidden && s == "none" {
                return Err(meta(name, "\"none\" is not allowed"));
            }
            facts.algs.push(name_cow);
            value
        }
        Member::Enc(alg) => {
            if !is_algorithm_name(as_str(name, &value)?) {
                return Err(meta(name, "not an algorithm name"));
            }
            facts.encs.push((name_cow, alg));
            value
        }
        Member::DefaultMaxAge => {
            if value.as_u64().is_none() {
                return Err(meta(name, "must be a non-negative integer"));
            }
            value
        }
        Member::RequireAuthTime => {
            if !value.is_boolean() {
                return Err(meta(name, "must be a boolean"));
            }
            value
        }
        Member::DefaultAcrValues => {
            let raw = string_array(name, &value, ErrorCode::InvalidClientMetadata)?;
            for (i, a) in raw.iter().enumerate() {
                if a.is_empty() || a.chars().count() > 255 || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(meta(&elem(name, i), "must be 1 to 255 characters without whitespace"));
                }
            }
            let v = changed_strings(&value, &dedupe(&raw));
            v.unwrap_or(value)
        }
        Member::RequestUris => {
            let raw = string_array(name, &value, ErrorCode::InvalidClientMetadata)?;
            for (i, u) in raw.iter().enumerate() {
                check_https(u, policy).map_err(|e| meta(&elem(name, i), e))?;
            }
            let v = changed_strings(&value, &dedupe(&raw));
            v.unwrap_or(value)
        }
    };
    Ok(Some(v))
}

/// `s` is exactly `parts` joined with single spaces.
fn is_joined(s: &str, parts: &[&str]) -> bool {
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            let Some(r) = rest.strip_prefix(' ') else { return false };
            rest = r;
        }
        let Some(r) = rest.strip_prefix(p) else { return false };
        rest = r;
    }
    rest.is_empty()
}

fn auth_method(name: &str, s: &str, policy: &Policy) -> Result<AuthMethod> {
    let Some(m) = AuthMethod::parse(s) else {
        return Err(meta(name, "unsupported authentication method"));
    };
    if !policy.token_endpoint_auth_methods.iter().any(|a| a == s) {
        return Err(meta(name, format!("{s:?} is not allowed by policy")));
    }
    Ok(m)
}

/// A grant type allowed in `mode`, else the reason (to be prefixed by the member name).
fn grant_type(s: &str, mode: SecurityMode) -> std::result::Result<GrantType, Cow<'static, str>> {
    match GrantType::parse(s) {
        Some(g) if g.allowed_in(mode) => Ok(g),
        Some(g) => Err(format!("grant type {:?} is not allowed in strict mode", g.as_str()).into()),
        None if REFUSED_GRANTS.contains(&s) => Err(format!("grant type {s:?} is not allowed").into()),
        None => Err("unsupported grant type".into()),
    }
}

/// A response type allowed in `mode`, else the reason (to be prefixed by the member name).
fn response_type(s: &str, mode: SecurityMode) -> std::result::Result<ResponseType, Cow<'static, str>> {
    match ResponseType::parse(s) {
        Some(r) if r.allowed_in(mode) => Ok(r),
        Some(r) => {
            let m = if mode == SecurityMode::Strict { " in strict mode" } else { "" };
            Err(format!("response type {:?} is not allowed{m}", r.canonical()).into())
        }
        None => Err("unsupported response type".into()),
    }
}

/// Applies `allowed_scopes`: strict refuses a scope outside it, permissive removes it.
fn filter_scopes<'s>(
    name: &str,
    tokens: Vec<&'s str>,
    policy: &Policy,
    removed: &mut Vec<String>,
) -> Result<Vec<&'s str>> {
    let Some(allowed) = &policy.allowed_scopes else {
        return Ok(tokens);
    };
    let mut kept = Vec::with_capacity(tokens.len());
    for t in tokens {
        if allowed.iter().any(|a| a == t) {
            kept.push(t);
        } else if policy.security_mode == SecurityMode::Strict {
            let shown: String = t.chars().take(64).collect();
            return Err(meta(name, format!("scope {shown:?} is not allowed")));
        } else {
            removed.push(t.to_string());
        }
    }
    Ok(kept)
}

/// `{"keys": [ {"kty": ..., ...}, ... ]}` with at least one key and no private key material.
fn check_jwks(name: &str, v: &Value) -> Result<()> {
    let obj = v.as_object().ok_or_else(|| meta(name, "must be a JSON object"))?;
    let keys = obj.get("keys").and_then(Value::as_array).ok_or_else(|| meta(name, "must have a \"keys\" array"))?;
    if keys.is_empty() {
        return Err(meta(name, "\"keys\" must not be empty"));
    }
    for (i, k) in keys.iter().enumerate() {
        let member = || format!("{name}.keys[{i}]");
        let key = k.as_object().ok_or_else(|| meta(&member(), "must be a JSON object"))?;
        if !key.get("kty").is_some_and(Value::is_string) {
            return Err(meta(&member(), "must have a string \"kty\""));
        }
        if let Some(private) = private_member(k) {
            return Err(meta(&member(), format!("must not contain private or symmetric key material ({private:?})")));
        }
    }
    Ok(())
}

/// A private or symmetric JWK member name anywhere inside `v` (nested objects and arrays
/// included: a key hidden one level down is still a key).
fn private_member(v: &Value) -> Option<&'static str> {
    const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    match v {
        Value::Object(o) => {
            PRIVATE.iter().copied().find(|m| o.contains_key(*m)).or_else(|| o.values().find_map(private_member))
        }
        Value::Array(a) => a.iter().find_map(private_member),
        _ => None,
    }
}

/// `header.payload.signature`, each part non-empty base64url (an unsecured JWS, with an empty
/// signature, is refused: RFC 7591 §2.3 requires a signed or MACed statement).
fn is_compact_jws(s: &str) -> bool {
    let mut n = 0;
    for part in s.split('.') {
        n += 1;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return false;
        }
    }
    n == 3
}

fn is_algorithm_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(&b))
}

/// Rules between members, and the defaults for absent members (inserted for registrations
/// only; an update is checked as if they applied, and forwarded as sent).
fn cross_check(policy: &Policy, facts: &mut Facts, out: &mut Map<String, Value>, kind: Kind) -> Result<()> {
    let mode = policy.security_mode;
    let fill = kind == Kind::Registration;

    // grant_types (default from policy)
    let grants = match facts.grant_types.take() {
        Some(g) => g,
        None => {
            let mut g = Vec::new();
            for s in &policy.default_grant_types {
                let gt = grant_type(s, mode).map_err(|e| meta("grant_types", e))?;
                if !g.contains(&gt) {
                    g.push(gt);
                }
            }
            if g.is_empty() {
                return Err(meta("grant_types", "required (the policy has no default)"));
            }
            if fill {
                out.insert("grant_types".into(), strings_value(g.iter().map(|x| x.as_str())));
            }
            g
        }
    };
    GrantType::check_refresh(&grants, mode).map_err(|e| meta("grant_types", e))?;

    // response_types (default: the policy's defaults that fit the grant types)
    let defaulted;
    let responses: &[ResponseType] = match &facts.response_types {
        Some(r) => {
            for (i, rt) in r.iter().enumerate() {
                if let Some(g) = rt.missing_grant(&grants) {
                    return Err(meta(
                        &elem("response_types", i),
                        format!("{:?} requires grant type {g:?}", rt.canonical()),
                    ));
                }
            }
            r
        }
        None => {
            let mut r = Vec::new();
            for s in &policy.default_response_types {
                let rt = response_type(s, mode).map_err(|e| meta("response_types", e))?;
                if rt.missing_grant(&grants).is_none() && !r.contains(&rt) {
                    r.push(rt);
                }
            }
            if fill {
                out.insert("response_types".into(), strings_value(r.iter().map(|x| x.canonical_str())));
            }
            defaulted = r;
            &defaulted
        }
    };
    if grants.contains(&GrantType::AuthorizationCode) && !responses.iter().any(|r| r.has_code()) {
        return Err(meta("grant_types", "\"authorization_code\" requires response type \"code\""));
    }
    if grants.contains(&GrantType::Implicit) && !responses.iter().any(|r| r.is_implicit()) {
        return Err(meta("grant_types", "\"implicit\" requires response type \"token\" or \"id_token\""));
    }

    // token_endpoint_auth_method (default from policy)
    let method = match facts.auth_method {
        Some(m) => m,
        None => {
            let name = "token_endpoint_auth_method";
            let m = auth_method(name, &policy.default_token_endpoint_auth_method, policy)?;
            if fill {
                out.insert(name.into(), Value::String(policy.default_token_endpoint_auth_method.clone()));
            }
            m
        }
    };
    // The redirect URI rules need the effective method (a public client may use any
    // private-use scheme).
    facts.auth_method = Some(method);
    if method.needs_keys() && !facts.has_jwks && !facts.has_jwks_uri {
        return Err(meta("token_endpoint_auth_method", "this method requires jwks or jwks_uri"));
    }
    if method == AuthMethod::None && grants.contains(&GrantType::ClientCredentials) {
        return Err(meta("grant_types", "\"client_credentials\" requires a client that authenticates (not \"none\")"));
    }
    if facts.has_jwks && facts.has_jwks_uri {
        return Err(meta("jwks", "must not be used together with jwks_uri"));
    }
    for (enc, alg) in &facts.encs {
        if !facts.algs.iter().any(|a| a == alg) {
            return Err(meta(enc, format!("requires {alg}")));
        }
    }

    // scope (default from policy)
    if !facts.has_scope && fill {
        if let Some(def) = &policy.default_scope {
            let tokens = parse_scope_tokens(def).map_err(|e| meta("scope", format!("policy default: {e}")))?;
            let tokens: Vec<&str> = match &policy.allowed_scopes {
                Some(allowed) => tokens.into_iter().filter(|t| allowed.iter().any(|a| a == t)).collect(),
                None => tokens,
            };
            if !tokens.is_empty() {
                out.insert("scope".into(), Value::String(tokens.join(" ")));
            }
        }
    }
    facts.grant_types = Some(grants);
    Ok(())
}

/// Checks `redirect_uris` and `post_logout_redirect_uris` with the context now known, then
/// the strict same-site rule; returns the redirect hosts for the audit log and the site URI
/// members to remove (strict: not on the site of an https redirect URI).
fn check_redirect_uris(policy: &Policy, facts: &Facts, out: &Map<String, Value>) -> Result<(Vec<String>, Vec<String>)> {
    // Present members were forwarded exactly as sent: arrays of strings.
    let uris = |present: bool, name: &str| -> Option<Vec<&str>> {
        present.then(|| {
            out.get(name).and_then(Value::as_array).map_or(Vec::new(), |a| a.iter().filter_map(Value::as_str).collect())
        })
    };
    let grants = facts.grant_types.as_deref().unwrap_or(&[]);
    let required = grants.iter().any(|g| g.is_redirect_based());
    let ctx = RedirectCtx {
        policy,
        native: facts.native,
        public: facts.auth_method == Some(AuthMethod::None),
        implicit: grants.contains(&GrantType::Implicit),
    };
    let mut hosts: Vec<String> = Vec::new();
    let mut web: Vec<UriInfo> = Vec::new();
    match &uris(facts.redirect_uris, "redirect_uris") {
        None if required => {
            return Err(redirect_err("redirect_uris", "required for the authorization_code and implicit grants"))
        }
        Some(u) if u.is_empty() && required => return Err(redirect_err("redirect_uris", "must not be empty")),
        None => {}
        Some(uris) => {
            for (i, u) in uris.iter().enumerate() {
                let info = check_redirect(u, &ctx).map_err(|e| redirect_err(&elem("redirect_uris", i), e))?;
                if let Some(h) = &info.host {
                    if !hosts.contains(h) {
                        hosts.push(h.clone());
                    }
                }
                if info.kind == UriKind::Https {
                    web.push(info);
                }
            }
        }
    }
    if let Some(uris) = uris(facts.post_logout_redirect_uris, "post_logout_redirect_uris") {
        let ctx = RedirectCtx { implicit: false, ..ctx };
        for (i, u) in uris.iter().enumerate() {
            check_redirect(u, &ctx).map_err(|e| meta(&elem("post_logout_redirect_uris", i), e))?;
        }
    }
    // Strict: a client's home page, logo, policy and terms live on the site it redirects to.
    // Without any https redirect URI (loopback or native clients) there is no site to hold
    // them to, and the rule does not apply.
    // A URI off that site is removed (and listed in `dropped_members`), not refused: VS Code
    // registers `client_uri` https://code.visualstudio.com with redirect URIs on vscode.dev,
    // and a consent screen then shows no link at all rather than one to another site.
    let mut off_site = Vec::new();
    if policy.security_mode == SecurityMode::Strict && !web.is_empty() {
        for (name, info) in &facts.site_uris {
            if !web.iter().any(|w| same_site(info, w)) {
                off_site.push(name.to_string());
            }
        }
    }
    Ok((hosts, off_site))
}
