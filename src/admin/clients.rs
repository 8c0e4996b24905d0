//! `GET /api/v2/clients`, `GET /api/v2/clients/{id}`, `DELETE /api/v2/clients/{id}`: the
//! client registry (`crate::registry`) on the admin API. Listing pages like network-acls
//! (`page`, `per_page`, `include_totals`) and filters by `state` (`active`, `unused`, `idle`,
//! `deleted`), `idle_since` (RFC 3339 or Unix seconds) and `software` (a `software_id`, or a
//! software key such as `name:claude desktop`). A deletion is the IdP's RFC 7592 DELETE with
//! the stored registration_access_token, then the row is marked deleted. No answer carries a
//! token: rows are shown through `ClientRow::view`.
//!
//! These run on a blocking thread (the store calls block).

use http::StatusCode;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::registry::{policy, ClientState, ListQuery, Registry};

fn store_error(e: crate::registry::StoreError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable", e.to_string())
}

/// Parse the list query.
pub fn query(q: Option<&str>) -> Result<(ListQuery, bool), ApiError> {
    let mut out = ListQuery { limit: 50, ..Default::default() };
    let mut page: u64 = 0;
    let mut totals = false;
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
        let bad = |what: String| ApiError::bad_request("invalid_query_string", format!("{k}: {what}"));
        let num = |max: u64| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| bad(format!("expected an integer 0..={max}, got {v:?}")))
        };
        match k {
            "page" => page = num(1_000_000)?,
            "per_page" => out.limit = num(100)?.max(1),
            "include_totals" => {
                totals = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(format!("expected true or false, got {v:?}"))),
                }
            }
            "state" => {
                out.state =
                    Some(ClientState::parse(&v).ok_or_else(|| bad("expected active, unused, idle or deleted".into()))?)
            }
            "idle_since" => {
                out.idle_since =
                    Some(crate::registry::parse_time(&v).ok_or_else(|| bad("expected RFC 3339 or Unix seconds".into()))?)
            }
            "software" => out.software = Some(v.clone()),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query_string",
                    format!(
                        "unknown query parameter {k:?} (supported: page, per_page, include_totals, state, idle_since, software)"
                    ),
                ))
            }
        }
    }
    out.offset = page.saturating_mul(out.limit);
    Ok((out, totals))
}

/// `GET /api/v2/clients`.
pub fn list(reg: &Registry, limits: &policy::Limits, q: Option<&str>) -> Result<Value, ApiError> {
    let (query, totals) = self::query(q)?;
    let now = reg.now();
    let (rows, total) = reg.store().list(&query, limits, now).map_err(store_error)?;
    let items: Vec<Value> =
        rows.iter().map(|r| r.view(policy::state(limits, now, r.created_at, r.last_used_at, r.deleted_at))).collect();
    Ok(if totals {
        json!({"clients": items, "start": query.offset, "limit": query.limit, "total": total})
    } else {
        Value::Array(items)
    })
}

/// `GET /api/v2/clients/{id}`.
pub fn get(reg: &Registry, limits: &policy::Limits, id: &str) -> Result<Value, ApiError> {
    let row = reg
        .store()
        .get(id)
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("no registered client with id {id:?}")))?;
    let now = reg.now();
    Ok(row.view(policy::state(limits, now, row.created_at, row.last_used_at, row.deleted_at)))
}

/// `DELETE /api/v2/clients/{id}`: at the IdP first, then marked. Already deleted → 404.
pub fn delete(reg: &Registry, upstream: &crate::config::Upstream, id: &str) -> Result<(), ApiError> {
    let row = reg
        .store()
        .get(id)
        .map_err(store_error)?
        .filter(|r| r.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found(format!("no live registered client with id {id:?}")))?;
    crate::registry::reap::delete_client(reg, upstream, &row, "admin")
        .map(|_| ())
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "idp_delete_failed", format!("client {id:?}: {e}")))
}

impl super::AdminApi {
    /// The `/api/v2/clients` endpoints (the scope was checked by the caller).
    pub(super) async fn clients(
        &self,
        snap: &std::sync::Arc<crate::snapshot::Snapshot>,
        head: &super::RequestHead,
        endpoint: super::wire::Endpoint,
        id: String,
        actor: &str,
        rid: &str,
    ) -> Result<super::Reply, ApiError> {
        use super::wire::Endpoint;
        let reg =
            self.registry.get().cloned().ok_or_else(|| {
                ApiError::not_found("the client registry is not enabled ([registry] enabled = false)")
            })?;
        let limits = crate::registry::limits(&snap.config.registry);
        let upstream = snap.config.upstream.clone();
        let query = head.query.clone();
        let target = id.clone();
        let done = tokio::task::spawn_blocking(move || match endpoint {
            Endpoint::ListClients => list(&reg, &limits, query.as_deref()).map(Some),
            Endpoint::GetClient => get(&reg, &limits, &target).map(Some),
            _ => delete(&reg, &upstream, &target).map(|()| None),
        })
        .await
        .map_err(|e| ApiError::internal(format!("registry task failed: {e}")))??;
        if endpoint == Endpoint::DeleteClient {
            tracing::info!(request_id = rid, actor, client_id = %id, "admin: registered client deleted");
            if self.audit.is_enabled() && snap.config.audit_enabled {
                let line = json!({
                    "timestamp": crate::telemetry::audit::now_rfc3339(),
                    "request_id": rid,
                    "scope": "admin",
                    "method": head.method.as_str(),
                    "path": head.path,
                    "client_ip": head.client_ip,
                    "actor": actor,
                    "action": "clients.delete",
                    "target": id,
                    "status": 204,
                });
                if let Err(e) = self.audit.write(&line) {
                    tracing::error!(request_id = rid, "cannot write the admin audit line: {e}");
                }
            }
        }
        Ok(super::Reply {
            status: if done.is_some() { StatusCode::OK } else { StatusCode::NO_CONTENT },
            body: done,
            etag: None,
            location: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pages_and_filters() {
        let (q, totals) =
            query(Some("page=2&per_page=10&include_totals=true&state=idle&software=name%3Aclaude+desktop")).unwrap();
        assert!(totals);
        assert_eq!((q.offset, q.limit), (20, 10));
        assert_eq!(q.state, Some(ClientState::Idle));
        assert_eq!(q.software.as_deref(), Some("name:claude desktop"));
        let (q, _) = query(Some("idle_since=2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(q.idle_since, Some(1_767_225_600));
        assert_eq!(query(None).unwrap().0.limit, 50);
        assert!(query(Some("state=gone")).is_err());
        assert!(query(Some("per_page=101")).is_err());
        assert!(query(Some("secret=1")).is_err());
    }
}
