//! Reaping: clients never used within `unused_grace` of their creation, or idle for
//! `idle_after`, are reported or deleted (`[registry] reap`). A deletion is the IdP's own
//! RFC 7592 `DELETE` with the client's stored registration_access_token; the row is then
//! marked deleted (its sealed token dropped) and an audit line written. At most
//! `reap_max_per_minute` deletions a minute, and one replica at a time: a pass runs only
//! under the store's `reaper` lease.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{policy, ClientRow, Clock, Limits, Registry, StoreError, SystemClock};
use crate::config::schema::ReapMode;
use crate::config::Upstream;

/// The lease's name in the store.
pub const LEASE: &str = "reaper";

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReapReport {
    /// Another replica holds the lease: nothing was done.
    pub lease_elsewhere: bool,
    pub reported: Vec<(String, &'static str)>,
    pub deleted: Vec<(String, &'static str)>,
    pub failed: Vec<(String, String)>,
}

/// The outcome of one RFC 7592 deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The IdP deleted it (2xx).
    Deleted,
    /// The IdP no longer knows it (404): marked deleted too.
    AlreadyGone,
}

/// Delete `row` at the IdP with its stored token, then mark it deleted with `reason`.
/// Errors name the client and the status, never the token.
pub fn delete_client(reg: &Registry, upstream: &Upstream, row: &ClientRow, reason: &str) -> Result<Deleted, String> {
    let sealed = row.token_sealed.as_deref().ok_or("no registration_access_token stored")?;
    let token = reg.keys().open(&row.client_id, sealed).map_err(|e| e.to_string())?;
    let uri = row.idp_client_uri.as_deref().ok_or("no registration_client_uri stored")?;
    let url = url::Url::parse(uri).map_err(|_| "stored registration_client_uri unreadable".to_string())?;
    let origin = upstream.origins.first().ok_or("no upstream origin")?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => origin.authority(),
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let answer = super::http::call(upstream, origin, "DELETE", &host, &target, Some(&token))?;
    let outcome = match answer.status {
        200..=299 => Deleted::Deleted,
        404 => Deleted::AlreadyGone,
        s => return Err(format!("the IdP answered {s} to the RFC 7592 DELETE")),
    };
    reg.mark_deleted(&row.client_id, reg.now(), reason).map_err(|e| e.to_string())?;
    Ok(outcome)
}

/// One reaping pass at the registry's time. `audit` receives one JSON object per client
/// reported or deleted.
pub fn reap_once(
    reg: &Registry,
    limits: &Limits,
    upstream: &Upstream,
    mode: ReapMode,
    max_per_minute: u32,
    audit: &dyn Fn(&serde_json::Value),
) -> Result<ReapReport, StoreError> {
    let mut report = ReapReport::default();
    if mode == ReapMode::Off {
        return Ok(report);
    }
    let now = reg.now();
    let unused_before = (limits.unused_grace_secs > 0).then(|| now - limits.unused_grace_secs);
    let idle_before = (limits.idle_after_secs > 0).then(|| now - limits.idle_after_secs);
    if unused_before.is_none() && idle_before.is_none() {
        return Ok(report);
    }
    let pace = Duration::from_secs_f64(60.0 / f64::from(max_per_minute.max(1)));
    const BATCH: u64 = 100;
    // The lease lives in wall time (not the injected clock): it orders real replicas.
    let wall = SystemClock.now();
    let lease_secs = (pace.as_secs() as i64 + 1) * BATCH as i64 + 60;
    if !reg.store().try_lease(LEASE, &reg.holder, wall, wall + lease_secs)? {
        report.lease_elsewhere = true;
        return Ok(report);
    }
    let candidates = reg.store().reap_candidates(unused_before, idle_before, BATCH);
    let candidates = match candidates {
        Ok(c) => c,
        Err(e) => {
            let _ = reg.store().release_lease(LEASE, &reg.holder);
            return Err(e);
        }
    };
    let mode_s = if mode == ReapMode::Delete { "delete" } else { "report" };
    let mut first = true;
    for row in candidates {
        let Some(reason) = policy::reap_reason(limits, now, row.created_at, row.last_used_at) else { continue };
        let base = json!({
            "timestamp": crate::registry::rfc3339(SystemClock.now()),
            "event": "registry_reap",
            "mode": mode_s,
            "client_id": row.client_id,
            "reason": reason,
            "created_at": crate::registry::rfc3339(row.created_at),
            "last_used_at": row.last_used_at.map(crate::registry::rfc3339),
            "software_key": row.software_key,
        });
        if mode == ReapMode::Report {
            reg.metrics.reaped.with_label_values(&[mode_s, reason, "reported"]).inc();
            audit(&base);
            report.reported.push((row.client_id, reason));
            continue;
        }
        if !first {
            std::thread::sleep(pace);
        }
        first = false;
        let mut line = base;
        match delete_client(reg, upstream, &row, &format!("reaped:{reason}")) {
            Ok(d) => {
                reg.metrics.reaped.with_label_values(&[mode_s, reason, "deleted"]).inc();
                line["result"] = json!(if d == Deleted::AlreadyGone { "already_gone" } else { "deleted" });
                audit(&line);
                tracing::info!(client_id = %row.client_id, reason, "registry: client reaped");
                report.deleted.push((row.client_id, reason));
            }
            Err(e) => {
                reg.metrics.reaped.with_label_values(&[mode_s, reason, "failed"]).inc();
                line["result"] = json!("failed");
                line["error"] = json!(e);
                audit(&line);
                tracing::warn!(client_id = %row.client_id, error = %e, "registry: reaping failed");
                report.failed.push((row.client_id, e));
            }
        }
    }
    let _ = reg.store().release_lease(LEASE, &reg.holder);
    Ok(report)
}

/// The gateway's reaper thread: every `reap_interval` of the current configuration, one pass
/// (when `reap` is not `off`), audited through the gateway's audit log.
pub fn spawn(
    reg: Arc<Registry>,
    snapshots: Arc<crate::snapshot::Store>,
    audit: Arc<crate::telemetry::AuditLog>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("dcr-registry-reaper".into())
        .spawn(move || loop {
            let snap = snapshots.load_full();
            let r = &snap.config.registry;
            let every = crate::config::schema::RegistrySection::seconds(&r.reap_interval).max(1);
            std::thread::sleep(Duration::from_secs(every as u64));
            let snap = snapshots.load_full();
            let r = &snap.config.registry;
            if r.reap == ReapMode::Off {
                continue;
            }
            let write = |line: &serde_json::Value| {
                if audit.is_enabled() && audit.write(line).is_err() {
                    tracing::warn!("registry: reap audit line not written");
                }
            };
            let limits = super::limits(r);
            match reap_once(&reg, &limits, &snap.config.upstream, r.reap, r.reap_max_per_minute, &write) {
                Ok(rep) if !rep.lease_elsewhere => tracing::info!(
                    reported = rep.reported.len(),
                    deleted = rep.deleted.len(),
                    failed = rep.failed.len(),
                    "registry: reap pass"
                ),
                Ok(_) => tracing::debug!("registry: another replica holds the reaper lease"),
                Err(e) => tracing::warn!(error = %e, "registry: reap pass failed"),
            }
        })
        .expect("spawn the reaper")
}
