//! The admin API: an Auth0-style Management API (`/api/v2/...`) on the admin listener,
//! never on the public one (where `/api/v2/` is `management` traffic proxied to the IdP).
//!
//! | endpoint                              | scope                   |
//! |---------------------------------------|-------------------------|
//! | `GET /api/v2/tenants/settings`        | `read:tenant_settings`  |
//! | `PATCH /api/v2/tenants/settings`      | `update:tenant_settings`|
//! | `GET /api/v2/network-acls`            | `read:network_acls`     |
//! | `POST /api/v2/network-acls`           | `create:network_acls`   |
//! | `GET /api/v2/network-acls/{id}`       | `read:network_acls`     |
//! | `PATCH`/`PUT /api/v2/network-acls/{id}` | `update:network_acls` |
//! | `DELETE /api/v2/network-acls/{id}`    | `delete:network_acls`   |
//!
//! Bearer tokens come from the admin token file (`[admin] tokens_file`, SHA-256 hashes),
//! loaded into the snapshot so they reload with everything else.
//!
//! Reads answer from the active snapshot. A write is serialized with every other write (one
//! async mutex), checked against `If-Match` (the file's SHA-256, which every GET returns as
//! `ETag`), validated exactly like a file load, written atomically, and then the snapshot is
//! reloaded synchronously: the response leaves only once the change is enforced — or, when
//! the reload refuses the files for another reason, after the previous file is put back.
//! See `docs/admin-api.md`.

pub mod audit;
pub mod error;
pub mod listener;
pub mod network_acls;
/// The tenant settings file and atomic file writes live in the state layer.
pub use crate::state::{settings, store};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::Value;

use self::audit::{AdminAuditLine, Change};
use self::error::{ApiError, FieldError};
use self::network_acls::Op;
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use crate::state::settings::Overrides;
use crate::telemetry::audit::now_rfc3339;
use crate::telemetry::AuditLog;

/// Characters escaped in an id put in a path segment: all but RFC 3986 unreserved ones.
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

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
enum Endpoint {
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
    fn scope(self) -> &'static str {
        match self {
            Endpoint::GetSettings => "read:tenant_settings",
            Endpoint::PatchSettings => "update:tenant_settings",
            Endpoint::ListAcls | Endpoint::GetAcl => "read:network_acls",
            Endpoint::CreateAcl => "create:network_acls",
            Endpoint::PatchAcl | Endpoint::PutAcl => "update:network_acls",
            Endpoint::DeleteAcl => "delete:network_acls",
        }
    }

    fn has_body(self) -> bool {
        matches!(self, Endpoint::PatchSettings | Endpoint::CreateAcl | Endpoint::PatchAcl | Endpoint::PutAcl)
    }
}

/// Path and method → endpoint (and the `{id}` of a rule).
fn route(method: &Method, path: &str) -> Result<(Endpoint, Option<String>), ApiError> {
    let rest = path.strip_prefix("/api/v2").unwrap_or("");
    let unknown = || ApiError::not_found("unknown admin API endpoint");
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

/// A successful answer: status, JSON body (none for 204), the file's new ETag.
struct Reply {
    status: StatusCode,
    body: Option<Value>,
    etag: Option<String>,
    location: Option<String>,
}

impl Reply {
    fn ok(body: Value, etag: &str) -> Reply {
        Reply { status: StatusCode::OK, body: Some(body), etag: Some(etag.to_string()), location: None }
    }
}

/// What a write did, for the audit line.
struct Written {
    file: PathBuf,
    before: String,
    after: String,
    target: Option<String>,
    changes: Vec<Change>,
}

pub struct AdminApi {
    reloader: Arc<Reloader>,
    audit: Arc<AuditLog>,
    /// Serializes writes: each one reads, checks, writes and reloads alone.
    writes: tokio::sync::Mutex<()>,
    /// `max_uses` accounting of admin tokens (per process).
    uses: crate::tokens::UseCounter,
}

fn request_id(headers: &HeaderMap) -> String {
    crate::core::request_id::accept_or_generate(headers.get("x-request-id").and_then(|v| v.to_str().ok()))
}

fn json_response(status: StatusCode, body: Option<&Value>, request_id: &str) -> Response<Vec<u8>> {
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

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_body(vec![FieldError::new("", format!("invalid JSON: {e}"))]))
}

fn is_json(headers: &HeaderMap) -> bool {
    crate::core::gate::is_json(headers.get(http::header::CONTENT_TYPE).map(|v| v.as_bytes()))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("cannot {what} {}: {e}", path.display()))
}

impl AdminApi {
    pub fn new(reloader: Arc<Reloader>, audit: Arc<AuditLog>) -> AdminApi {
        AdminApi { reloader, audit, writes: tokio::sync::Mutex::new(()), uses: crate::tokens::UseCounter::new() }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.reloader.store.load_full()
    }

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
                if !is_json(&head.headers) {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        "Content-Type must be application/json",
                    ));
                }
                Some(parse_json(&body.read(MAX_BODY_BYTES, BODY_READ_TIMEOUT).await?)?)
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

    /// The token's label when it verifies and carries `scope`.
    fn authorize(&self, snap: &Snapshot, headers: &HeaderMap, scope: &str) -> Result<String, ApiError> {
        let header = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let unauthorized = |e: crate::tokens::TokenError| {
            ApiError::unauthorized(e.oauth_error().unwrap_or("missing_token"), e.as_str(), e.www_authenticate())
        };
        let presented = crate::tokens::bearer(header).map_err(unauthorized)?;
        let entry = snap.admin_tokens.verify(presented, std::time::SystemTime::now()).map_err(unauthorized)?;
        if !entry.has_scope(scope) {
            return Err(ApiError::insufficient_scope(scope));
        }
        if !self.uses.try_use(entry) {
            return Err(unauthorized(crate::tokens::TokenError::Exhausted));
        }
        Ok(entry.label.clone())
    }

    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        snap: &Arc<Snapshot>,
        head: &RequestHead,
        endpoint: Endpoint,
        id: Option<String>,
        body: Option<Value>,
        actor: &str,
        rid: &str,
    ) -> Result<Reply, ApiError> {
        let if_match = head.headers.get(http::header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);
        let id = id.unwrap_or_default();
        let body = body.unwrap_or(Value::Null);
        let (reply, written, action) = match endpoint {
            Endpoint::GetSettings => return Ok(Reply::ok(settings::view(&snap.config.dcr), &snap.settings_sha256)),
            Endpoint::ListAcls => {
                rules_file(snap)?;
                let ids: Vec<&str> = snap.acl.rule_ids().collect();
                let list = network_acls::list(snap.acl.rules(), &ids, head.query.as_deref())?;
                return Ok(Reply::ok(list, &snap.rules_sha256));
            }
            Endpoint::GetAcl => {
                rules_file(snap)?;
                let (rule, rid_) = snap
                    .acl
                    .rules()
                    .iter()
                    .zip(snap.acl.rule_ids())
                    .find(|(_, rid_)| *rid_ == id)
                    .ok_or_else(|| ApiError::not_found(format!("no network ACL with id {id:?}")))?;
                return Ok(Reply::ok(network_acls::view(rule, rid_), &snap.rules_sha256));
            }
            Endpoint::PatchSettings => {
                let (reply, written) = self.patch_settings(if_match.as_deref(), body).await?;
                (reply, written, "tenant_settings.update")
            }
            Endpoint::CreateAcl | Endpoint::PatchAcl | Endpoint::PutAcl | Endpoint::DeleteAcl => {
                let op = match endpoint {
                    Endpoint::CreateAcl => Op::Create(body),
                    Endpoint::PatchAcl => Op::Patch(id, body),
                    Endpoint::PutAcl => Op::Put(id, body),
                    _ => Op::Delete(id),
                };
                let action = op.action();
                let (reply, written) = self.write_rules(if_match.as_deref(), op).await?;
                (reply, written, action)
            }
        };
        if let Some(w) = written {
            self.audit_change(head, rid, actor, action, w, reply.status);
        }
        Ok(reply)
    }

    fn audit_change(
        &self,
        head: &RequestHead,
        rid: &str,
        actor: &str,
        action: &'static str,
        w: Written,
        status: StatusCode,
    ) {
        let fields: Vec<&str> = w.changes.iter().map(|c| c.field.as_str()).collect();
        tracing::info!(
            request_id = rid,
            actor,
            action,
            target = w.target.as_deref().unwrap_or(""),
            changes = %fields.join(","),
            file = %w.file.display(),
            "admin change"
        );
        let snap = self.snapshot();
        if !self.audit.is_enabled() || !snap.config.audit_enabled {
            return;
        }
        let line = AdminAuditLine {
            timestamp: now_rfc3339(),
            request_id: rid.to_string(),
            scope: "admin",
            method: head.method.to_string(),
            path: head.path.clone(),
            client_ip: head.client_ip.clone(),
            actor: actor.to_string(),
            action,
            target: w.target,
            file: w.file.display().to_string(),
            sha256_before: w.before,
            sha256_after: w.after,
            changes: w.changes,
            status: status.as_u16(),
        };
        if let Err(e) = self.audit.write(&line) {
            tracing::error!(request_id = rid, "cannot write the admin audit line: {e}");
        }
    }

    /// `PATCH /api/v2/tenants/settings`.
    async fn patch_settings(&self, if_match: Option<&str>, body: Value) -> Result<(Reply, Option<Written>), ApiError> {
        let patch = Overrides::from_value(&body).map_err(ApiError::invalid_body)?;
        let _guard = self.writes.lock().await;
        let snap = self.snapshot();
        let path = snap.config.admin.settings_file.clone();
        let current = store::read(&path).map_err(|e| io_error("read", &path, e))?;
        check_if_match(if_match, &current.sha256)?;
        let on_disk = Overrides::from_file_bytes(current.bytes.as_deref().unwrap_or_default()).map_err(|errs| {
            ApiError::conflict(
                "settings_file_invalid",
                format!(
                    "{} does not load, fix it first: {}",
                    path.display(),
                    errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                ),
            )
        })?;
        let merged = on_disk.merge(&patch);
        // Validate against the [dcr] section the reload will read.
        let base = self.base_policy()?;
        merged.overlay(&base).map_err(ApiError::invalid_body)?;
        if merged == on_disk {
            // Nothing changes: no write, no reload, no audit line.
            return Ok((Reply::ok(settings::view(&snap.config.dcr), &current.sha256), None));
        }
        let bytes = merged.to_file_bytes();
        let before_policy = snap.config.dcr.clone();
        let after = self.commit(&path, current.bytes, bytes, "admin API: tenant settings").await?;
        let now = self.snapshot();
        let changes = settings::changes(&on_disk, &merged, &before_policy, &now.config.dcr)
            .into_iter()
            .map(|(f, from, to)| Change::new(f, Some(&from), Some(&to)))
            .collect();
        let written = Written { file: path, before: current.sha256, after: after.clone(), target: None, changes };
        Ok((Reply::ok(settings::view(&now.config.dcr), &after), Some(written)))
    }

    /// The `[dcr]` section the running snapshot was built from, before the settings overlay
    /// (`state::policy::effective` lays the settings over it; no re-parse of gateway.toml).
    fn base_policy(&self) -> Result<crate::dcr::Policy, ApiError> {
        Ok(self.snapshot().dcr_base.clone())
    }

    /// Create, update, replace or delete a rule.
    async fn write_rules(&self, if_match: Option<&str>, op: Op) -> Result<(Reply, Option<Written>), ApiError> {
        let _guard = self.writes.lock().await;
        let snap = self.snapshot();
        let path = rules_file(&snap)?.to_path_buf();
        let current = store::read(&path).map_err(|e| io_error("read", &path, e))?;
        check_if_match(if_match, &current.sha256)?;
        let default_action = snap.config.default_action;
        let rules =
            network_acls::current(current.bytes.as_deref().unwrap_or_default(), default_action).map_err(|e| {
                ApiError::conflict(
                    "rules_file_invalid",
                    format!("{} does not load, fix it first: {}", path.display(), e.to_string().replace('\n', "; ")),
                )
            })?;
        let is_create = matches!(op, Op::Create(_));
        let is_delete = matches!(op, Op::Delete(_));
        let outcome = network_acls::apply(rules, op, &now_rfc3339(), default_action, network_acls::generate_id)?;
        check_databases(&outcome.ruleset, &snap)?;
        let after = self.commit(&path, current.bytes, outcome.bytes, "admin API: network ACLs").await?;
        let body = outcome.rule.as_ref().map(|r| network_acls::view(r, &outcome.id));
        let reply = Reply {
            status: if is_create {
                StatusCode::CREATED
            } else if is_delete {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::OK
            },
            body,
            etag: Some(after.clone()),
            location: is_create.then(|| {
                format!("/api/v2/network-acls/{}", percent_encoding::utf8_percent_encode(&outcome.id, PATH_SEGMENT))
            }),
        };
        let written =
            Written { file: path, before: current.sha256, after, target: Some(outcome.id), changes: outcome.changes };
        Ok((reply, Some(written)))
    }

    /// Write the file atomically, reload, and restore the previous contents if the reload
    /// refuses it. Returns the new SHA-256.
    async fn commit(
        &self,
        path: &Path,
        previous: Option<Vec<u8>>,
        bytes: Vec<u8>,
        why: &'static str,
    ) -> Result<String, ApiError> {
        let reloader = self.reloader.clone();
        let path = path.to_path_buf();
        let sha = store::sha256_hex(&bytes);
        tokio::task::spawn_blocking(move || {
            store::write_atomic(&path, &bytes).map_err(|e| io_error("write", &path, e))?;
            match reloader.reload_written(why, &path) {
                Ok(()) => Ok(()),
                Err(errs) => {
                    let reasons = errs.0.join("; ");
                    match store::restore(&path, &previous) {
                        Ok(()) => Err(ApiError::conflict(
                            "reload_failed",
                            format!("the gateway refused the change; {} was restored: {reasons}", path.display()),
                        )),
                        Err(e) => Err(ApiError::internal(format!(
                            "the gateway refused the change and {} could not be restored ({e}): {reasons}",
                            path.display()
                        ))),
                    }
                }
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("write task failed: {e}")))??;
        Ok(sha)
    }
}

fn check_if_match(if_match: Option<&str>, current: &str) -> Result<(), ApiError> {
    match if_match {
        Some(h) if !store::if_match_accepts(h, current) => Err(ApiError::precondition_failed(current)),
        _ => Ok(()),
    }
}

fn rules_file(snap: &Snapshot) -> Result<&Path, ApiError> {
    snap.config.rules_file.as_deref().ok_or_else(|| {
        ApiError::conflict(
            "no_rules_file",
            "network ACLs are managed in the rules file, and none is configured: set [acl] rules in gateway.toml",
        )
    })
}

/// The checks a snapshot load makes between rules and databases, so that the API answers
/// 400 naming the signal rather than failing the reload.
fn check_databases(set: &crate::acl::RuleSet, snap: &Snapshot) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if set.uses_geo_country() && snap.geo.is_none() {
        errors.push(FieldError::new(
            "rule.match.geo_country_codes",
            "needs a GeoIP country database: set geoip.country_db in gateway.toml",
        ));
    }
    if set.uses_geo_subdivision() {
        match &snap.geo {
            None => errors.push(FieldError::new(
                "rule.match.geo_subdivision_codes",
                "needs a GeoIP City database: set geoip.country_db in gateway.toml",
            )),
            Some(g) if !g.has_subdivisions() => errors.push(FieldError::new(
                "rule.match.geo_subdivision_codes",
                format!("the GeoIP database ({}) has no subdivisions; use a City database", g.database_type()),
            )),
            _ => {}
        }
    }
    if set.uses_asn() && snap.asn.is_none() {
        errors.push(FieldError::new("rule.match.asns", "needs an ASN database: set geoip.asn_db in gateway.toml"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_body(errors))
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
        assert_eq!(route(&Method::GET, "/api/v2/clients").unwrap_err().status, 404);
        assert_eq!(route(&Method::GET, "/api/v2/network-acls/a/b").unwrap_err().status, 404);
        assert_eq!(route(&Method::GET, "/api/v2/network-acls/").unwrap_err().status, 404);
        assert!(is_api_path("/api/v2/x") && !is_api_path("/api/v2x"));
    }
}
