//! The admin API's HTTP surface: which method and path is which endpoint, the body read,
//! and how answers and errors are written. The service (`super`: authorization, validation,
//! writes, reload, audit) never sees HTTP framing beyond the parsed head.

use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::Value;

use super::error::{ApiError, FieldError};
use super::AdminApi;

/// Largest request body the admin API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time allowed for the whole request body to arrive.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Is `path` an admin API path (the admin listener hands these to [`AdminApi`])?
pub fn is_api_path(path: &str) -> bool {
    path == "/api/v2" || path.starts_with("/api/v2/")
}

/// The parts of a request the API looks at; the body is read on demand through [`ApiBody`].
pub struct RequestHead {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub client_ip: String,
}

/// The request body, read only by endpoints that take one, after authorization.
#[async_trait]
pub trait ApiBody: Send {
    /// The whole body, at most `limit` bytes (413 above) within `timeout` (408).
    async fn read(&mut self, limit: usize, timeout: Duration) -> Result<Vec<u8>, ApiError>;
}

#[async_trait]
impl ApiBody for Vec<u8> {
    async fn read(&mut self, limit: usize, _timeout: Duration) -> Result<Vec<u8>, ApiError> {
        if self.len() > limit {
            return Err(too_large(limit));
        }
        Ok(std::mem::take(self))
    }
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request body exceeds {limit} bytes"))
}

pub fn body_timeout() -> ApiError {
    ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "request body not received in time")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    ListClients,
    GetClient,
    DeleteClient,
    GetSettings,
    PatchSettings,
    ListAcls,
    CreateAcl,
    GetAcl,
    PatchAcl,
    PutAcl,
    DeleteAcl,
}

impl Endpoint {
    pub(super) fn scope(self) -> &'static str {
        match self {
            Endpoint::ListClients | Endpoint::GetClient => "read:clients",
            Endpoint::DeleteClient => "delete:clients",
            Endpoint::GetSettings => "read:tenant_settings",
            Endpoint::PatchSettings => "update:tenant_settings",
            Endpoint::ListAcls | Endpoint::GetAcl => "read:network_acls",
            Endpoint::CreateAcl => "create:network_acls",
            Endpoint::PatchAcl | Endpoint::PutAcl => "update:network_acls",
            Endpoint::DeleteAcl => "delete:network_acls",
        }
    }

    pub(super) fn has_body(self) -> bool {
        matches!(self, Endpoint::PatchSettings | Endpoint::CreateAcl | Endpoint::PatchAcl | Endpoint::PutAcl)
    }
}

/// Path and method → endpoint (and the `{id}` of a rule).
pub(super) fn route(method: &Method, path: &str) -> Result<(Endpoint, Option<String>), ApiError> {
    let rest = path.strip_prefix("/api/v2").unwrap_or("");
    let unknown = || ApiError::not_found("unknown admin API endpoint");
    if rest == "/clients" {
        return match *method {
            Method::GET => Ok((Endpoint::ListClients, None)),
            _ => Err(ApiError::method_not_allowed("GET")),
        };
    }
    if let Some(raw) = rest.strip_prefix("/clients/") {
        let id = percent_encoding::percent_decode_str(raw).decode_utf8().map_err(|_| unknown())?.into_owned();
        if raw.is_empty() || raw.contains('/') {
            return Err(unknown());
        }
        return match *method {
            Method::GET => Ok((Endpoint::GetClient, Some(id))),
            Method::DELETE => Ok((Endpoint::DeleteClient, Some(id))),
            _ => Err(ApiError::method_not_allowed("GET, DELETE")),
        };
    }
    match rest {
        "/tenants/settings" => match *method {
            Method::GET => Ok((Endpoint::GetSettings, None)),
            Method::PATCH => Ok((Endpoint::PatchSettings, None)),
            _ => Err(ApiError::method_not_allowed("GET, PATCH")),
        },
        "/network-acls" => match *method {
            Method::GET => Ok((Endpoint::ListAcls, None)),
            Method::POST => Ok((Endpoint::CreateAcl, None)),
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        _ => {
            let raw = rest.strip_prefix("/network-acls/").ok_or_else(unknown)?;
            let id = percent_encoding::percent_decode_str(raw).decode_utf8().map_err(|_| unknown())?.into_owned();
            if raw.is_empty() || raw.contains('/') {
                return Err(unknown());
            }
            match *method {
                Method::GET => Ok((Endpoint::GetAcl, Some(id))),
                Method::PATCH => Ok((Endpoint::PatchAcl, Some(id))),
                Method::PUT => Ok((Endpoint::PutAcl, Some(id))),
                Method::DELETE => Ok((Endpoint::DeleteAcl, Some(id))),
                _ => Err(ApiError::method_not_allowed("GET, PATCH, PUT, DELETE")),
            }
        }
    }
}

pub(super) fn request_id(headers: &HeaderMap) -> String {
    crate::core::request_id::accept_or_generate(headers.get("x-request-id").and_then(|v| v.to_str().ok()))
}

pub(super) fn json_response(status: StatusCode, body: Option<&Value>, request_id: &str) -> Response<Vec<u8>> {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
    let mut resp = Response::new(bytes);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if body.is_some() {
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json; charset=utf-8"));
    }
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    let len = resp.body().len();
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

/// The error response for `e`.
pub fn error_response(e: &ApiError, request_id: &str) -> Response<Vec<u8>> {
    let mut resp = json_response(e.status, Some(&e.body(request_id)), request_id);
    for (name, value) in &e.headers {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            resp.headers_mut().insert(name.clone(), v);
        }
    }
    resp
}

pub(super) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_body(vec![FieldError::new("", format!("invalid JSON: {e}"))]))
}

pub(super) fn is_json(headers: &HeaderMap) -> bool {
    crate::core::gate::is_json(headers.get(http::header::CONTENT_TYPE).map(|v| v.as_bytes()))
}

/// `Content-Type: application/x-www-form-urlencoded`, which Auth0's Management API also takes.
pub(super) fn is_form(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

fn form_decode(s: &str) -> Result<String, ApiError> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).decode_utf8().map(|c| c.into_owned()).map_err(|_| {
        ApiError::invalid_body(vec![FieldError::new("", "form body: a value is not UTF-8 after percent-decoding")])
    })
}

/// A form value as JSON: `true`/`false`/`null`, numbers, and JSON objects or arrays are read
/// as JSON (the way Auth0 coerces form fields to its schema's types); anything else is a string.
fn form_value(raw: String) -> Value {
    let t = raw.trim_start();
    let jsonish = matches!(raw.as_str(), "true" | "false" | "null")
        || t.starts_with(['{', '['])
        || (raw.parse::<f64>().is_ok() && raw.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)));
    if jsonish {
        if let Ok(v) = serde_json::from_str(&raw) {
            return v;
        }
    }
    Value::String(raw)
}

/// An `application/x-www-form-urlencoded` body as the JSON document it stands for. Member
/// paths nest with brackets or dots (`rule[action][log]=true`, `flags.enable_sso=false`); a
/// name ending in `[]`, or given twice, is an array.
pub(super) fn parse_form(bytes: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::invalid_body(vec![FieldError::new("", "form body is not UTF-8")]))?;
    let mut root = serde_json::Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(k)?;
        let value = form_value(form_decode(v)?);
        let (key, force_array) = match key.strip_suffix("[]") {
            Some(k) => (k.to_string(), true),
            None => (key, false),
        };
        let path: Vec<String> = key.replace(']', "").split(['[', '.']).map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(ApiError::invalid_body(vec![FieldError::new(key.clone(), "form body: malformed member name")]));
        }
        let (last, parents) = path.split_last().expect("split yields one item at least");
        let mut node = &mut root;
        for p in parents {
            let entry = node.entry(p.clone()).or_insert_with(|| Value::Object(serde_json::Map::new()));
            node = match entry {
                Value::Object(m) => m,
                _ => {
                    return Err(ApiError::invalid_body(vec![FieldError::new(
                        key.clone(),
                        "form body: a member is given both as a value and as an object",
                    )]))
                }
            };
        }
        match node.get_mut(last) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                node.insert(last.clone(), if force_array { Value::Array(vec![value]) } else { value });
            }
        }
    }
    Ok(Value::Object(root))
}

impl AdminApi {
    /// Answer one `/api/v2/...` request.
    pub async fn handle(&self, head: &RequestHead, body: &mut dyn ApiBody) -> Response<Vec<u8>> {
        let rid = request_id(&head.headers);
        let snap = self.snapshot();
        if !snap.config.admin.api_enabled {
            return error_response(&ApiError::not_found("unknown admin endpoint"), &rid);
        }
        let result = async {
            let (endpoint, id) = route(&head.method, &head.path)?;
            let actor = self.authorize(&snap, &head.headers, endpoint.scope())?;
            let body = if endpoint.has_body() {
                let form = is_form(&head.headers);
                if !form && !is_json(&head.headers) {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        "Content-Type must be application/json or application/x-www-form-urlencoded",
                    ));
                }
                let bytes = body.read(MAX_BODY_BYTES, BODY_READ_TIMEOUT).await?;
                Some(if form { parse_form(&bytes)? } else { parse_json(&bytes)? })
            } else {
                None
            };
            self.dispatch(&snap, head, endpoint, id, body, &actor, &rid).await
        }
        .await;
        match result {
            Ok(r) => {
                let mut resp = json_response(r.status, r.body.as_ref(), &rid);
                if let Some(tag) = r.etag.and_then(|t| http::HeaderValue::from_str(&format!("\"{t}\"")).ok()) {
                    resp.headers_mut().insert(http::header::ETAG, tag);
                }
                if let Some(loc) = r.location.and_then(|l| http::HeaderValue::from_str(&l).ok()) {
                    resp.headers_mut().insert(http::header::LOCATION, loc);
                }
                resp
            }
            Err(e) => error_response(&e, &rid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/api/v2/tenants/settings").unwrap().0, Endpoint::GetSettings);
        assert_eq!(route(&Method::POST, "/api/v2/network-acls").unwrap().0, Endpoint::CreateAcl);
        let (e, id) = route(&Method::DELETE, "/api/v2/network-acls/a%20b").unwrap();
        assert_eq!((e, id.as_deref()), (Endpoint::DeleteAcl, Some("a b")));
        assert_eq!(route(&Method::PUT, "/api/v2/network-acls").unwrap_err().status, 405);
        assert_eq!(route(&Method::GET, "/api/v2/users").unwrap_err().status, 404);
        assert_eq!(route(&Method::GET, "/api/v2/network-acls/a/b").unwrap_err().status, 404);
        assert_eq!(route(&Method::GET, "/api/v2/network-acls/").unwrap_err().status, 404);
        assert!(is_api_path("/api/v2/x") && !is_api_path("/api/v2x"));
    }

    #[test]
    fn form_bodies_become_json() {
        let v = parse_form(
            b"description=block+a%20net&active=true&priority=2&rule[action][block]=true&rule.scope=tenant\
              &rule[match][ipv4_cidrs][]=10.0.0.0%2F8&rule[match][ipv4_cidrs][]=192.0.2.0/24&rule[match][asns][]=64500",
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"description": "block a net", "active": true, "priority": 2,
                "rule": {"action": {"block": true}, "scope": "tenant",
                         "match": {"ipv4_cidrs": ["10.0.0.0/8", "192.0.2.0/24"], "asns": [64500]}}})
        );
        let v = parse_form(b"flags[enable_dynamic_client_registration]=false&friendly_name=Acme&x=1&x=2").unwrap();
        assert_eq!(v["flags"]["enable_dynamic_client_registration"], false);
        assert_eq!(v["friendly_name"], "Acme");
        assert_eq!(v["x"], serde_json::json!([1, 2]));
        assert!(parse_form(b"a=1&a[b]=2").is_err());
        assert!(parse_form(b"a[]]=1&[x]=2").is_err());
    }
}
