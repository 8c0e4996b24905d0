//! `[cimd] mode = "bridge"`: the IdP client behind each client ID metadata document. The
//! first request for a document registers it at the IdP (RFC 7591, the gateway's own request
//! to the upstream origin, the registration policy already applied by `cimd::validate_document`);
//! the IdP's client_id, its sealed registration_access_token and the document's fingerprint
//! are stored (`cimd_clients`, both backends). A document whose fingerprint changed updates the
//! IdP client (RFC 7592 `PUT` with the stored token), or registers it again when that fails.
//!
//! One registration per document: callers for one URL take turns (single flight per URL in
//! this process), and a second replica that registered at the same time finds the first's row
//! on insert, deletes its own IdP client (RFC 7592) and uses the stored one.
//!
//! Blocking (store and IdP calls): the proxy calls [`Bridge::client_for`] through
//! `spawn_blocking`. Errors never carry a token or a document's content.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::http::{self, Request};
use super::store::BridgeRow;
use super::Registry;
use crate::cimd::{bridge as rules, Document};
use crate::config::{Origin, Upstream};

/// Where and how the gateway registers at the IdP: the proxy's upstream configuration.
#[derive(Clone)]
pub struct IdpTarget {
    pub upstream: Upstream,
    pub origin: Origin,
    /// `Host` of the gateway's own requests (`[upstream] host_header`, else the origin's).
    pub host: String,
    /// The IdP's registration path (`[routes] upstream_registration_path`).
    pub registration_path: String,
    /// `[upstream] registration_token_file` as `Bearer …`, when the IdP wants one.
    pub authorization: Option<String>,
    /// `[upstream] headers` (secret values: only ever written to the socket).
    pub headers: Vec<(String, String)>,
    /// The IdP profile's derived members.
    pub derive: Vec<crate::core::verify::Derive>,
}

/// Why the IdP client for a document is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// The IdP could not be reached (connect, timeout, unreadable answer).
    #[error("the IdP could not be reached to register the client: {0}")]
    Unreachable(String),
    /// The IdP refused the registration (4xx), with its error code when it gave one.
    #[error("the IdP refused the client's registration ({status}{})", .error.as_deref().map(|e| format!(" {e}")).unwrap_or_default())]
    Refused { status: u16, error: Option<String> },
    /// The IdP failed (5xx) or answered without a client_id.
    #[error("the IdP failed to register the client ({0})")]
    Failed(String),
    /// The registry's store failed.
    #[error("the client registry is unavailable")]
    Store,
}

impl BridgeError {
    /// The `error_description` the client gets: what failed, never where (the IdP's address,
    /// the CA file, a socket error are for the log).
    pub fn public_description(&self) -> String {
        match self {
            BridgeError::Unreachable(_) => "the IdP could not be reached to register the client".into(),
            BridgeError::Failed(_) => "the IdP failed to register the client".into(),
            BridgeError::Refused { .. } | BridgeError::Store => self.to_string(),
        }
    }

    /// The HTTP status and OAuth error code the client gets.
    pub fn answer(&self) -> (u16, &'static str) {
        match self {
            BridgeError::Unreachable(_) | BridgeError::Store => (503, "temporarily_unavailable"),
            BridgeError::Refused { .. } => (400, "invalid_client"),
            BridgeError::Failed(_) => (502, "server_error"),
        }
    }
}

/// What the IdP's registration answer holds for the bridge.
struct Registered {
    client_id: String,
    token: Option<String>,
    uri: Option<String>,
}

/// What a call did, for the metric `dcr_gateway_cimd_bridge_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeOutcome {
    /// The stored client matched the document.
    Stored,
    Registered,
    Updated,
    Reregistered,
}

impl BridgeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BridgeOutcome::Stored => "stored",
            BridgeOutcome::Registered => "registered",
            BridgeOutcome::Updated => "updated",
            BridgeOutcome::Reregistered => "reregistered",
        }
    }
}

impl BridgeError {
    fn as_str(&self) -> &'static str {
        match self {
            BridgeError::Unreachable(_) => "unreachable",
            BridgeError::Refused { .. } => "refused",
            BridgeError::Failed(_) => "failed",
            BridgeError::Store => "store_error",
        }
    }
}

pub struct Bridge {
    registry: Arc<Registry>,
    /// One turn per URL: concurrent first requests for a document register it once.
    flights: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// `dcr_gateway_cimd_bridge_total{result}`: every mapping asked for, by what it took.
    pub results: prometheus::IntCounterVec,
}

impl Bridge {
    pub fn new(registry: Arc<Registry>) -> Bridge {
        let results = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "dcr_gateway_cimd_bridge_total",
                "URL client_ids mapped to the IdP's client (cimd bridge), by result: stored, registered, updated, \
                 reregistered, unreachable, refused, failed, store_error",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in ["stored", "registered", "updated", "reregistered", "unreachable", "refused", "failed", "store_error"]
        {
            results.with_label_values(&[r]);
        }
        Bridge { registry, flights: Mutex::new(HashMap::new()), results }
    }

    /// The stored IdP client_id when the document is unchanged (no IdP call); `None` when
    /// [`Bridge::client_for`] would register or update it — a request the proxy first counts
    /// against `[rate_limit]`, so that distinct URLs cannot create IdP clients without bound.
    pub fn stored(&self, doc: &Document) -> Result<Option<String>, BridgeError> {
        match self.registry.store().bridge_get(&doc.client_id) {
            Ok(Some(r)) if r.fingerprint == doc.fingerprint => {
                self.results.with_label_values(&[BridgeOutcome::Stored.as_str()]).inc();
                Ok(Some(r.client_id))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                let e = self.store_error(e);
                self.results.with_label_values(&[e.as_str()]).inc();
                Err(e)
            }
        }
    }

    /// The IdP's client_id for a valid document: the stored one when the document is
    /// unchanged, else registered (first time) or updated (changed document) now.
    pub fn client_for(&self, doc: &Document, idp: &IdpTarget) -> Result<(String, BridgeOutcome), BridgeError> {
        let turn = {
            let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            f.entry(doc.client_id.clone()).or_default().clone()
        };
        let result = {
            let _held = turn.lock().unwrap_or_else(|e| e.into_inner());
            self.decide(doc, idp)
        };
        {
            let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            // The map's and ours: nobody else waits for this URL.
            if Arc::strong_count(&turn) == 2 {
                f.remove(&doc.client_id);
            }
        }
        let label = match &result {
            Ok((_, o)) => o.as_str(),
            Err(e) => e.as_str(),
        };
        self.results.with_label_values(&[label]).inc();
        result
    }

    fn decide(&self, doc: &Document, idp: &IdpTarget) -> Result<(String, BridgeOutcome), BridgeError> {
        let store = self.registry.store();
        let row = store.bridge_get(&doc.client_id).map_err(|e| self.store_error(e))?;
        let now = self.registry.now();
        match row {
            Some(r) if r.fingerprint == doc.fingerprint => Ok((r.client_id, BridgeOutcome::Stored)),
            Some(r) => self.refresh(doc, idp, r, now),
            None => {
                let reg = self.register(doc, idp)?;
                let row = self.row(doc, &reg, now, now);
                if store.bridge_insert(&row).map_err(|e| self.store_error(e))? {
                    tracing::info!(url = %doc.client_id, client_id = %reg.client_id, "cimd bridge: client registered at the IdP");
                    return Ok((reg.client_id, BridgeOutcome::Registered));
                }
                // Another replica registered the document at the same time: keep one client.
                self.delete(idp, &reg);
                let theirs =
                    store.bridge_get(&doc.client_id).map_err(|e| self.store_error(e))?.ok_or(BridgeError::Store)?;
                Ok((theirs.client_id, BridgeOutcome::Stored))
            }
        }
    }

    /// A changed document: RFC 7592 update of the stored client, else a new registration.
    fn refresh(
        &self,
        doc: &Document,
        idp: &IdpTarget,
        old: BridgeRow,
        now: i64,
    ) -> Result<(String, BridgeOutcome), BridgeError> {
        let store = self.registry.store();
        let token = old.token_sealed.as_deref().and_then(|s| self.registry.keys().open(&old.client_id, s).ok());
        if let (Some(token), Some(uri)) = (token.as_deref(), old.idp_client_uri.as_deref()) {
            match self.update(doc, idp, &old.client_id, token, uri) {
                Ok(reg) => {
                    let row = self.row(doc, &reg, old.created_at, now);
                    store.bridge_update(&row, &old.client_id).map_err(|e| self.store_error(e))?;
                    tracing::info!(url = %doc.client_id, client_id = %reg.client_id, "cimd bridge: changed document, IdP client updated (RFC 7592)");
                    return Ok((reg.client_id, BridgeOutcome::Updated));
                }
                Err(e) => {
                    tracing::warn!(url = %doc.client_id, client_id = %old.client_id, error = %e, "cimd bridge: RFC 7592 update failed; registering the document again");
                }
            }
        }
        let reg = self.register(doc, idp)?;
        let row = self.row(doc, &reg, now, now);
        if !store.bridge_update(&row, &old.client_id).map_err(|e| self.store_error(e))? {
            // Another replica replaced it first: theirs is the one.
            self.delete(idp, &reg);
            let theirs =
                store.bridge_get(&doc.client_id).map_err(|e| self.store_error(e))?.ok_or(BridgeError::Store)?;
            return Ok((theirs.client_id, BridgeOutcome::Stored));
        }
        if let Some(token) = token.as_deref() {
            // The replaced client is no one's any more.
            let gone = Registered {
                client_id: old.client_id.clone(),
                token: Some(token.to_string()),
                uri: old.idp_client_uri,
            };
            self.delete(idp, &gone);
        }
        tracing::info!(url = %doc.client_id, client_id = %reg.client_id, "cimd bridge: changed document registered again");
        Ok((reg.client_id, BridgeOutcome::Reregistered))
    }

    fn row(&self, doc: &Document, reg: &Registered, created_at: i64, now: i64) -> BridgeRow {
        BridgeRow {
            url: doc.client_id.clone(),
            client_id: reg.client_id.clone(),
            fingerprint: doc.fingerprint.clone(),
            idp_client_uri: reg.uri.clone(),
            token_sealed: reg.token.as_deref().and_then(|t| self.registry.keys().seal(&reg.client_id, t).ok()),
            created_at,
            updated_at: now,
        }
    }

    fn store_error(&self, e: super::StoreError) -> BridgeError {
        self.registry.metrics.store_errors.with_label_values(&["bridge"]).inc();
        tracing::error!("cimd bridge: {e}");
        BridgeError::Store
    }

    fn register(&self, doc: &Document, idp: &IdpTarget) -> Result<Registered, BridgeError> {
        let body = rules::registration_body(doc, &idp.derive);
        let answer = http::send(
            &idp.upstream,
            &idp.origin,
            &Request {
                method: "POST",
                host: &idp.host,
                target: &idp.registration_path,
                authorization: idp.authorization.as_deref(),
                headers: &idp.headers,
                json: Some(&body),
            },
        )
        .map_err(BridgeError::Unreachable)?;
        read_answer(answer.status, &answer.body)
    }

    fn update(
        &self,
        doc: &Document,
        idp: &IdpTarget,
        id: &str,
        token: &str,
        uri: &str,
    ) -> Result<Registered, BridgeError> {
        let body = rules::update_body(doc, id, &idp.derive);
        let target = target_of(uri).ok_or_else(|| BridgeError::Failed("unreadable registration_client_uri".into()))?;
        let auth = format!("Bearer {token}");
        let answer = http::send(
            &idp.upstream,
            &idp.origin,
            &Request {
                method: "PUT",
                host: &idp.host,
                target: &target,
                authorization: Some(&auth),
                headers: &idp.headers,
                json: Some(&body),
            },
        )
        .map_err(BridgeError::Unreachable)?;
        let mut reg = read_answer(answer.status, &answer.body)?;
        // RFC 7592 §2.2: the token may be rotated; without a new one the old stays good.
        reg.token = reg.token.or_else(|| Some(token.to_string()));
        reg.uri = reg.uri.or_else(|| Some(uri.to_string()));
        Ok(reg)
    }

    /// RFC 7592 `DELETE` of a client no document maps to (best effort: logged, not retried).
    fn delete(&self, idp: &IdpTarget, reg: &Registered) {
        let (Some(token), Some(target)) = (reg.token.as_deref(), reg.uri.as_deref().and_then(target_of)) else {
            tracing::warn!(client_id = %reg.client_id, "cimd bridge: a surplus IdP client cannot be deleted (no RFC 7592 token or URI)");
            return;
        };
        let auth = format!("Bearer {token}");
        let r = Request {
            method: "DELETE",
            host: &idp.host,
            target: &target,
            authorization: Some(&auth),
            headers: &idp.headers,
            json: None,
        };
        match http::send(&idp.upstream, &idp.origin, &r) {
            Ok(a) if (200..300).contains(&a.status) => {}
            Ok(a) => {
                tracing::warn!(client_id = %reg.client_id, status = a.status, "cimd bridge: surplus IdP client not deleted")
            }
            Err(e) => {
                tracing::warn!(client_id = %reg.client_id, error = %e, "cimd bridge: surplus IdP client not deleted")
            }
        }
    }
}

/// The path and query of an absolute URI (sent to the configured origin, whatever host the IdP
/// wrote into it).
fn target_of(uri: &str) -> Option<String> {
    let u = url::Url::parse(uri).ok()?;
    Some(match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    })
}

fn read_answer(status: u16, body: &[u8]) -> Result<Registered, BridgeError> {
    let v: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    let text = |k: &str| v.as_ref().and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_string);
    if (400..500).contains(&status) {
        let error = text("error").and_then(|e| crate::core::record::idp_error_code(&e));
        return Err(BridgeError::Refused { status, error });
    }
    if !(200..300).contains(&status) {
        return Err(BridgeError::Failed(format!("status {status}")));
    }
    let client_id =
        text("client_id").filter(|c| !c.is_empty()).ok_or_else(|| BridgeError::Failed("no client_id".into()))?;
    Ok(Registered { client_id, token: text("registration_access_token"), uri: text("registration_client_uri") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_without_keeping_what_is_not_needed() {
        let ok = read_answer(201, br#"{"client_id":"c1","registration_access_token":"t","registration_client_uri":"http://i/reg/c1","client_secret":"s"}"#).unwrap();
        assert_eq!(
            (ok.client_id.as_str(), ok.token.as_deref(), ok.uri.as_deref()),
            ("c1", Some("t"), Some("http://i/reg/c1"))
        );
        assert_eq!(
            read_answer(400, br#"{"error":"invalid_redirect_uri","error_description":"x"}"#).err(),
            Some(BridgeError::Refused { status: 400, error: Some("invalid_redirect_uri".into()) })
        );
        assert!(matches!(read_answer(500, b""), Err(BridgeError::Failed(_))));
        assert!(matches!(read_answer(201, b"{}"), Err(BridgeError::Failed(_))));
        assert_eq!(BridgeError::Unreachable("x".into()).answer(), (503, "temporarily_unavailable"));
        let where_ = BridgeError::Unreachable("connect 10.0.0.7:4000: refused".into());
        assert!(where_.to_string().contains("10.0.0.7"), "the log keeps it");
        assert!(!where_.public_description().contains("10.0.0.7"), "the client does not get it");
        assert!(!BridgeError::Failed("status 500".into()).public_description().contains("500"));
    }

    #[test]
    fn update_targets_keep_path_and_query() {
        assert_eq!(target_of("http://idp:1/reg/a%2Fb?x=1").as_deref(), Some("/reg/a%2Fb?x=1"));
        assert_eq!(target_of("not a url"), None);
    }
}
