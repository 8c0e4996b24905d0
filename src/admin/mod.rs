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
//! With `[admin] store = "registry"` the rules and settings are documents in the registry
//! store instead of files (`doc_store`): the same validation, a commit at the version read
//! (redone when another replica wrote first), the same reload, then the other replicas are
//! notified. See `docs/admin-api.md`.
//!
//! This file is the service (authorize, validate, write, commit, audit); `wire` is the HTTP
//! surface (routes, body read, answers); `listener` the Pingora adapter on the admin port.

pub mod audit;
pub mod clients;
mod doc_store;
pub mod error;
pub mod listener;
pub mod network_acls;
mod wire;
use self::wire::Endpoint;
pub use self::wire::{
    body_timeout, error_response, is_api_path, too_large, ApiBody, RequestHead, BODY_READ_TIMEOUT, MAX_BODY_BYTES,
};
/// The tenant settings file and atomic file writes live in the state layer.
pub use crate::state::{settings, store};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use self::audit::{AdminAuditLine, Change};
use self::error::{ApiError, FieldError};
use self::network_acls::Op;
use crate::registry::admin_store;
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use crate::state::settings::Overrides;
use crate::telemetry::audit::now_rfc3339;
use crate::telemetry::AuditLog;

/// Characters escaped in an id put in a path segment: all but RFC 3986 unreserved ones.
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

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
    /// The web console (`/console/`, `crate::console`), whose writes go through this service.
    pub console: crate::console::Console,
    /// The client registry (`/api/v2/clients`), when `[registry] enabled`.
    pub registry: std::sync::OnceLock<Arc<crate::registry::Registry>>,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("cannot {what} {}: {e}", path.display()))
}

impl AdminApi {
    pub fn new(reloader: Arc<Reloader>, audit: Arc<AuditLog>) -> AdminApi {
        let console = crate::console::Console::new(reloader.store.clone(), reloader.metrics.clone(), audit.clone());
        AdminApi {
            reloader,
            audit,
            writes: tokio::sync::Mutex::new(()),
            uses: crate::tokens::UseCounter::new(),
            console,
            registry: std::sync::OnceLock::new(),
        }
    }

    /// Sign-in to the web console with an admin token, checked as a bearer token is (known, not
    /// expired, one of its `max_uses`). Returns the entry's label and SHA-256 — what the
    /// console's session keeps instead of the token. The error never contains the token.
    pub fn console_sign_in(&self, presented: &str) -> Result<(String, String), crate::tokens::TokenError> {
        use crate::tokens::TokenError;
        if presented.is_empty() {
            return Err(TokenError::Missing);
        }
        if presented.len() > 512 || presented.chars().any(char::is_whitespace) {
            return Err(TokenError::Malformed);
        }
        let snap = self.snapshot();
        let entry = snap.admin_tokens.verify(presented, std::time::SystemTime::now())?;
        if !self.uses.try_use(entry) {
            return Err(TokenError::Exhausted);
        }
        Ok((entry.label.clone(), entry.sha256_hex.clone()))
    }

    /// One admin API call made by the web console for a signed-in session: the routing, scope
    /// check, validation, `If-Match`, write, reload and audit line of [`AdminApi::handle`], as
    /// the admin token whose SHA-256 the session holds — looked up in the current snapshot, so a
    /// token removed or expired since sign-in is refused; each call is one of its `max_uses`.
    /// Returns the status, the JSON body and the ETag the API would answer.
    pub async fn handle_for_console(
        &self,
        token_sha256: &str,
        head: &RequestHead,
        body: Option<Value>,
    ) -> Result<(StatusCode, Option<Value>, Option<String>), ApiError> {
        use crate::tokens::TokenError;
        let rid = wire::request_id(&head.headers);
        let snap = self.snapshot();
        if !snap.config.admin.api_enabled {
            return Err(ApiError::not_found("unknown admin endpoint"));
        }
        let (endpoint, id) = wire::route(&head.method, &head.path)?;
        let refused = |e: TokenError| {
            ApiError::unauthorized(e.oauth_error().unwrap_or("invalid_token"), e.as_str(), e.www_authenticate())
        };
        let entry = snap
            .admin_tokens
            .entries()
            .iter()
            .find(|e| e.sha256_hex == token_sha256)
            .ok_or_else(|| refused(TokenError::Unknown))?;
        if entry.is_expired(std::time::SystemTime::now()) {
            return Err(refused(TokenError::Expired));
        }
        if !entry.has_scope(endpoint.scope()) {
            return Err(ApiError::insufficient_scope(endpoint.scope()));
        }
        if !self.uses.try_use(entry) {
            return Err(refused(TokenError::Exhausted));
        }
        let actor = entry.label.clone();
        let r = self.dispatch(&snap, head, endpoint, id, body, &actor, &rid).await?;
        Ok((r.status, r.body, r.etag))
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.reloader.store.load_full()
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
            Endpoint::ListClients | Endpoint::GetClient | Endpoint::DeleteClient => {
                return self.clients(snap, head, endpoint, id, actor, rid).await;
            }
            Endpoint::GetSettings => {
                return Ok(Reply::ok(settings::view(&snap.config.dcr, &kept_settings(snap)), &snap.settings_sha256))
            }
            Endpoint::ListAcls => {
                self.rules_source(snap)?;
                let ids: Vec<&str> = snap.acl.rule_ids().collect();
                let list = network_acls::list(snap.acl.rules(), &ids, head.query.as_deref())?;
                return Ok(Reply::ok(list, &snap.rules_sha256));
            }
            Endpoint::GetAcl => {
                self.rules_source(snap)?;
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
        // In the registry store another replica may write between our read and our commit:
        // the commit then fails on the version and the change is made again on what it wrote.
        for _ in 0..doc_store::ATTEMPTS {
            if let Some(done) = self.patch_settings_once(if_match, &patch).await? {
                return Ok(done);
            }
        }
        Err(doc_store::busy())
    }

    /// One try of [`AdminApi::patch_settings`]; `None` when another replica's write came first.
    async fn patch_settings_once(
        &self,
        if_match: Option<&str>,
        patch: &Overrides,
    ) -> Result<Option<(Reply, Option<Written>)>, ApiError> {
        let snap = self.snapshot();
        let (path, current, version) = match self.reloader.remote() {
            Some(r) => doc_store::read(r, admin_store::SETTINGS).await?,
            None => {
                let path = snap.config.admin.settings_file.clone();
                let current = store::read(&path).map_err(|e| io_error("read", &path, e))?;
                (path, current, None)
            }
        };
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
        let merged = on_disk.merge(patch);
        // Validate against the [dcr] section the reload will read.
        let base = self.base_policy()?;
        merged.overlay(&base).map_err(ApiError::invalid_body)?;
        if merged == on_disk {
            // Nothing changes: no write, no reload, no audit line.
            return Ok(Some((Reply::ok(settings::view(&snap.config.dcr, &merged.extra), &current.sha256), None)));
        }
        let bytes = merged.to_file_bytes();
        let before_policy = snap.config.dcr.clone();
        let Some(after) = self.commit(&path, current.bytes, bytes, version, "admin API: tenant settings").await? else {
            return Ok(None);
        };
        let now = self.snapshot();
        let changes = settings::changes(&on_disk, &merged, &before_policy, &now.config.dcr)
            .into_iter()
            .map(|(f, from, to)| Change::new(f, Some(&from), Some(&to)))
            .collect();
        let written = Written { file: path, before: current.sha256, after: after.clone(), target: None, changes };
        Ok(Some((Reply::ok(settings::view(&now.config.dcr, &merged.extra), &after), Some(written))))
    }

    /// The `[dcr]` section the running snapshot was built from, before the settings overlay
    /// (`state::policy::effective` lays the settings over it; no re-parse of gateway.toml).
    fn base_policy(&self) -> Result<crate::dcr::Policy, ApiError> {
        Ok(self.snapshot().dcr_base.clone())
    }

    /// Create, update, replace or delete a rule.
    async fn write_rules(&self, if_match: Option<&str>, op: Op) -> Result<(Reply, Option<Written>), ApiError> {
        let _guard = self.writes.lock().await;
        // As for the settings: a write that lost to another replica's is made again.
        for _ in 0..doc_store::ATTEMPTS {
            if let Some(done) = self.write_rules_once(if_match, op.clone()).await? {
                return Ok(done);
            }
        }
        Err(doc_store::busy())
    }

    /// One try of [`AdminApi::write_rules`]; `None` when another replica's write came first.
    async fn write_rules_once(
        &self,
        if_match: Option<&str>,
        op: Op,
    ) -> Result<Option<(Reply, Option<Written>)>, ApiError> {
        let snap = self.snapshot();
        let (path, current, version) = match self.reloader.remote() {
            Some(r) => doc_store::read(r, admin_store::RULES).await?,
            None => {
                let path = rules_file(&snap)?.to_path_buf();
                let current = store::read(&path).map_err(|e| io_error("read", &path, e))?;
                (path, current, None)
            }
        };
        check_if_match(if_match, &current.sha256)?;
        let default_action = snap.config.default_action;
        // A store's document never written holds no rules yet.
        let never_written: &[u8] = if version.is_some() { b"[]" } else { b"" };
        let rules =
            network_acls::current(current.bytes.as_deref().unwrap_or(never_written), default_action, &snap.acl_env)
                .map_err(|e| {
                    ApiError::conflict(
                        "rules_file_invalid",
                        format!(
                            "{} does not load, fix it first: {}",
                            path.display(),
                            e.to_string().replace('\n', "; ")
                        ),
                    )
                })?;
        let is_create = matches!(op, Op::Create(_));
        let is_delete = matches!(op, Op::Delete(_));
        let outcome =
            network_acls::apply(rules, op, &now_rfc3339(), default_action, &snap.acl_env, network_acls::generate_id)?;
        check_databases(&outcome.ruleset, &snap)?;
        let Some(after) = self.commit(&path, current.bytes, outcome.bytes, version, "admin API: network ACLs").await?
        else {
            return Ok(None);
        };
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
        Ok(Some((reply, Some(written))))
    }

    /// Write the file atomically (or the store's document, when `version` is the one read
    /// from it), reload, and restore the previous contents if the reload refuses it. Returns
    /// the new SHA-256; `None` when the store's document is no longer at `version`.
    async fn commit(
        &self,
        path: &Path,
        previous: Option<Vec<u8>>,
        bytes: Vec<u8>,
        version: Option<i64>,
        why: &'static str,
    ) -> Result<Option<String>, ApiError> {
        if let (Some(remote), Some(version)) = (self.reloader.remote(), version) {
            let name = if path == crate::state::remote::source_path(admin_store::RULES) {
                admin_store::RULES
            } else {
                admin_store::SETTINGS
            };
            let write = doc_store::Write { name, previous, bytes, version, why };
            return doc_store::commit(remote.clone(), self.reloader.clone(), write).await;
        }
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
        Ok(Some(sha))
    }

    /// Where the rules are kept: the rules file (409 when none is configured), or the
    /// registry store's document.
    fn rules_source(&self, snap: &Snapshot) -> Result<PathBuf, ApiError> {
        match self.reloader.remote() {
            Some(_) => Ok(crate::state::remote::source_path(admin_store::RULES)),
            None => rules_file(snap).map(Path::to_path_buf),
        }
    }
}

/// The settings members the gateway keeps but does not use, as the snapshot loaded them.
fn kept_settings(snap: &Snapshot) -> serde_json::Map<String, Value> {
    snap.sources
        .iter()
        .find(|s| s.kind == crate::snapshot::SourceKind::Settings)
        .and_then(|s| s.bytes.as_deref())
        .and_then(|b| Overrides::from_file_bytes(b).ok())
        .map(|o| o.extra)
        .unwrap_or_default()
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
    use crate::acl::{CountryDatabase, MissingDatabase};
    let country = match &snap.geo {
        None => CountryDatabase::Absent,
        Some(g) => CountryDatabase::Loaded { database_type: g.database_type(), subdivisions: g.has_subdivisions() },
    };
    let mut errors = Vec::new();
    for missing in set.missing_databases(country, snap.asn.is_some()) {
        match missing {
            MissingDatabase::Country { country, subdivision } => {
                if !country.is_empty() {
                    errors.push(FieldError::new(
                        "rule.match.geo_country_codes",
                        "needs a GeoIP country database: set geoip.country_db in gateway.toml",
                    ));
                }
                if !subdivision.is_empty() {
                    errors.push(FieldError::new(
                        "rule.match.geo_subdivision_codes",
                        "needs a GeoIP City database: set geoip.country_db in gateway.toml",
                    ));
                }
            }
            MissingDatabase::Subdivisions { database_type, .. } => errors.push(FieldError::new(
                "rule.match.geo_subdivision_codes",
                format!("the GeoIP database ({database_type}) has no subdivisions; use a City database"),
            )),
            MissingDatabase::Asn { .. } => errors
                .push(FieldError::new("rule.match.asns", "needs an ASN database: set geoip.asn_db in gateway.toml")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_body(errors))
    }
}
