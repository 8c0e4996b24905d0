//! Admin writes with `[admin] store = "registry"`: the document is read from the registry store
//! with its version, and committed only while the store still holds that version (another
//! replica's write in between makes the caller read again and redo its change). After the
//! commit this replica reloads at once (the answer leaves once the change is enforced here),
//! then the other replicas are notified; a document the reload refuses is put back.

use std::sync::Arc;

use http::StatusCode;

use super::error::ApiError;
use crate::registry::StoreError;
use crate::state::remote::{source_path, AdminStore};
use crate::state::store::{self, Current};

/// Tries of one admin write against concurrent writes from other replicas.
pub const ATTEMPTS: usize = 5;

/// Every try lost to another replica's write.
pub fn busy() -> ApiError {
    ApiError::conflict(
        "store_write_conflict",
        "other replicas kept changing the document in the registry store during this write; try again",
    )
}

fn unavailable(e: StoreError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The document `name` as stored now: its name as a path (for messages and the audit line),
/// its bytes with their SHA-256 (the ETag), and its version.
pub async fn read(
    remote: &Arc<AdminStore>,
    name: &'static str,
) -> Result<(std::path::PathBuf, Current, Option<i64>), ApiError> {
    let r = remote.clone();
    let docs = tokio::task::spawn_blocking(move || r.store().admin_docs())
        .await
        .map_err(|e| ApiError::internal(format!("read task failed: {e}")))?
        .map_err(unavailable)?;
    let doc = docs.get(name);
    let current = Current { bytes: doc.body.as_ref().map(|b| b.as_bytes().to_vec()), sha256: doc.sha256.clone() };
    Ok((source_path(name), current, Some(doc.version)))
}

/// One change to commit.
pub struct Write {
    pub name: &'static str,
    /// What the document held when read (`None`: never written).
    pub previous: Option<Vec<u8>>,
    pub bytes: Vec<u8>,
    /// The version read.
    pub version: i64,
    pub why: &'static str,
}

/// Commit, reload, notify. The new SHA-256, or `None` when the document is no longer at the
/// version read.
pub async fn commit(
    remote: Arc<AdminStore>,
    reloader: Arc<crate::reload::Reloader>,
    w: Write,
) -> Result<Option<String>, ApiError> {
    tokio::task::spawn_blocking(move || commit_blocking(&remote, &reloader, w))
        .await
        .map_err(|e| ApiError::internal(format!("write task failed: {e}")))?
}

fn notify(remote: &AdminStore, name: &str, version: i64) {
    if let Err(e) = remote.store().notify_admin_change(name, version) {
        // The other replicas' periodic check still picks the change up.
        tracing::warn!(error = %e, document = name, "registry store: cannot notify the other replicas");
    }
}

fn commit_blocking(
    remote: &AdminStore,
    reloader: &crate::reload::Reloader,
    w: Write,
) -> Result<Option<String>, ApiError> {
    // The API serializes JSON: always UTF-8.
    let body = String::from_utf8(w.bytes).map_err(|_| ApiError::internal("the new document is not UTF-8"))?;
    let sha = store::sha256_hex(body.as_bytes());
    let s = remote.store();
    let Some(version) = s.put_admin_doc(w.name, Some(&body), w.version, now(), w.why).map_err(unavailable)? else {
        return Ok(None);
    };
    let path = source_path(w.name);
    match reloader.reload_written(w.why, &path) {
        Ok(()) => {
            notify(remote, w.name, version);
            Ok(Some(sha))
        }
        Err(errs) => {
            let reasons = errs.0.join("; ");
            let previous = w.previous.as_deref().map(String::from_utf8_lossy);
            let restored = s
                .put_admin_doc(w.name, previous.as_deref(), version, now(), "admin API: restored")
                .map(|v| v.map(|v| notify(remote, w.name, v)).is_some());
            match restored {
                Ok(true) => Err(ApiError::conflict(
                    "reload_failed",
                    format!("the gateway refused the change; {} was restored: {reasons}", path.display()),
                )),
                Ok(false) => Err(ApiError::conflict(
                    "reload_failed",
                    format!(
                        "the gateway refused the change; {} changed again meanwhile and was left as it is: {reasons}",
                        path.display()
                    ),
                )),
                Err(e) => Err(ApiError::internal(format!(
                    "the gateway refused the change and {} could not be restored ({e}): {reasons}",
                    path.display()
                ))),
            }
        }
    }
}
