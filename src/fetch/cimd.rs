//! Client ID Metadata Documents, fetched: [`Documents`] joins the pure rules of `crate::cimd`
//! (URL rules, document validation, cache lifetime) with the SSRF-safe [`Fetcher`] and a
//! cache, and decides an authorization request ([`Documents::authorize`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::{FetchConfig, Fetcher, Resolver};
use crate::cimd::{self, AuthorizeParams, CimdError, Document, DocumentCache, Settings};
use crate::dcr::Policy;

/// The clock the cache runs on (injected by tests to expire documents without waiting).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The fetcher limits `[cimd]` sets; `ca_pem` is the `ca_file`'s content.
pub fn fetch_config(s: &Settings, ca_pem: Option<Vec<u8>>) -> Result<FetchConfig, String> {
    let mut allow = Vec::with_capacity(s.allow_cidrs.len());
    for c in &s.allow_cidrs {
        allow.push(c.parse().map_err(|_| format!("cimd.allow_cidrs: {c:?} is not a CIDR"))?);
    }
    Ok(FetchConfig {
        max_bytes: s.max_document_bytes,
        connect_timeout: Duration::from_millis(s.connect_timeout_ms),
        total_timeout: Duration::from_millis(s.total_timeout_ms),
        allow_http_loopback: s.allow_http_loopback,
        allow_cidrs: allow,
        per_host_concurrency: s.per_host_concurrency,
        per_host_per_minute: s.per_host_per_minute,
        extra_ca_pem: ca_pem,
        ..FetchConfig::default()
    })
}

/// What the gateway does with an authorization request.
#[derive(Debug)]
pub enum AuthorizeDecision {
    /// The `client_id` is not a URL (or there is none): CIMD has nothing to say.
    NotCimd,
    /// A valid document lists the `redirect_uri` and registers the `response_type`.
    Allow(Arc<Document>),
    /// Refused, with the redirect URI proven by a valid document: answer `302` to this
    /// location (RFC 6749 §4.1.2.1).
    RedirectError { location: String, error: CimdError },
    /// Refused without a proven redirect URI: answer an error page, never a redirect.
    ErrorPage(CimdError),
}

/// Documents by URL: fetched through the fetcher, judged, cached while fresh.
pub struct Documents {
    fetcher: Arc<Fetcher>,
    cache: Mutex<DocumentCache>,
    clock: Clock,
}

impl Documents {
    pub fn new(fetcher: Arc<Fetcher>, capacity: usize) -> Documents {
        Documents::with_clock(fetcher, capacity, Arc::new(Instant::now))
    }

    pub fn with_clock(fetcher: Arc<Fetcher>, capacity: usize, clock: Clock) -> Documents {
        Documents { fetcher, cache: Mutex::new(DocumentCache::new(capacity)), clock }
    }

    /// From `[cimd]`: a fetcher with its limits over `resolver`.
    pub fn from_settings(
        s: &Settings,
        ca_pem: Option<Vec<u8>>,
        resolver: Arc<dyn Resolver>,
    ) -> Result<Documents, String> {
        let fetcher = Fetcher::new(fetch_config(s, ca_pem)?, resolver)?;
        Ok(Documents::new(Arc::new(fetcher), s.cache_entries))
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The valid document for `client_id`: from the cache while fresh, else fetched and
    /// judged (and cached only when valid).
    pub async fn resolve(
        &self,
        client_id: &str,
        settings: &Settings,
        policy: &Policy,
    ) -> Result<Arc<Document>, CimdError> {
        let host = cimd::check_client_id_url(client_id, settings)?;
        if let Some(doc) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(client_id, (self.clock)()) {
            return Ok(doc);
        }
        let fetched =
            self.fetcher.fetch(client_id).await.map_err(|e| {
                CimdError::unreachable(format!("the client's metadata document could not be fetched: {e}"))
            })?;
        let doc = Arc::new(cimd::validate_document(client_id, &host, &fetched.body, policy)?);
        let ttl = cimd::cache_ttl(
            fetched.cache_control.as_deref(),
            fetched.expires.as_deref(),
            fetched.date.as_deref(),
            fetched.age.as_deref(),
            SystemTime::now(),
            settings,
        );
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(doc.clone(), ttl, (self.clock)());
        Ok(doc)
    }

    /// Decides an authorization request (its query string, with a POST's form body) or a
    /// pushed authorization request (RFC 9126: its form body) in `enforce` or `bridge` mode.
    pub async fn authorize(&self, query: &str, settings: &Settings, policy: &Policy) -> AuthorizeDecision {
        self.decide(query, settings, policy, false).await
    }

    /// [`Documents::authorize`] of a pushed authorization request's body (RFC 9126 §2.1): the
    /// same rules; a `request_uri` has no place in it.
    pub async fn pushed(&self, body: &str, settings: &Settings, policy: &Policy) -> AuthorizeDecision {
        self.decide(body, settings, policy, true).await
    }

    async fn decide(&self, query: &str, settings: &Settings, policy: &Policy, par: bool) -> AuthorizeDecision {
        let params: AuthorizeParams = match cimd::authorize_params(query) {
            Ok(p) => p,
            // Ambiguous parameters: only a URL client_id makes it CIMD's business.
            Err(e) => {
                let any_url = url::form_urlencoded::parse(query.as_bytes())
                    .any(|(k, v)| k == "client_id" && cimd::is_url_client_id(&v));
                return if any_url {
                    AuthorizeDecision::ErrorPage(CimdError::unreachable(format!("authorization request: {e}")))
                } else {
                    AuthorizeDecision::NotCimd
                };
            }
        };
        let Some(client_id) = params.client_id.as_deref().filter(|c| cimd::is_url_client_id(c)) else {
            return AuthorizeDecision::NotCimd;
        };
        if params.request_object || (par && params.pushed) {
            // The redirect_uri judged here would not be the one the IdP takes from the object.
            return AuthorizeDecision::ErrorPage(CimdError::unjudgeable(
                "authorization request: request objects (request, request_uri) are not accepted with a URL client_id",
            ));
        }
        let doc = match self.resolve(client_id, settings, policy).await {
            Ok(d) => d,
            Err(e) => return AuthorizeDecision::ErrorPage(e),
        };
        if params.pushed {
            // RFC 9126 §4: the pushed request holds the redirect_uri and response_type, judged
            // when it was pushed through the gateway; the IdP ignores them here.
            return AuthorizeDecision::Allow(doc);
        }
        if let Err(e) = cimd::check_redirect_uri(&doc, params.redirect_uri.as_deref()) {
            return AuthorizeDecision::ErrorPage(e);
        }
        let redirect_uri = params.redirect_uri.as_deref().unwrap_or_default();
        if let Err(e) = cimd::check_response_type(&doc, params.response_type.as_deref()) {
            let location = cimd::error_redirect(redirect_uri, &e, params.state.as_deref());
            return AuthorizeDecision::RedirectError { location, error: e };
        }
        AuthorizeDecision::Allow(doc)
    }
}
